//! Reading Debian binary packages (.deb) without dpkg: the `ar` container, the control
//! fields and the data tree, so the image builds on hosts that have no dpkg at all.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path};

use anyhow::{Context, Result, bail};

/// The control fields the builder needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub package: String,
    pub version: String,
    pub architecture: String,
}

/// Reads the `Package`, `Version` and `Architecture` fields of a .deb.
pub fn control(deb: &Path) -> Result<Control> {
    let (name, bytes) = member(deb, "control.tar")?;
    let tar = decompress(&name, bytes).with_context(|| format!("{}: {name}", deb.display()))?;
    let mut archive = tar::Archive::new(tar.as_slice());
    for entry in archive
        .entries()
        .with_context(|| format!("{}: {name}", deb.display()))?
    {
        let mut entry = entry.with_context(|| format!("{}: {name}", deb.display()))?;
        let path = entry.path()?.into_owned();
        if path
            .components()
            .filter(|c| *c != Component::CurDir)
            .eq([Component::Normal("control".as_ref())])
        {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .with_context(|| format!("{}: reading control", deb.display()))?;
            return parse_control(&text)
                .with_context(|| format!("{}: control file", deb.display()));
        }
    }
    bail!("{}: {name} has no control file", deb.display())
}

/// Unpacks the whole data tree of a .deb into `dest` (created if missing). Entries with
/// absolute or `..` paths are refused; symlinks stay symlinks.
pub fn unpack(deb: &Path, dest: &Path) -> Result<()> {
    let (name, bytes) = member(deb, "data.tar")?;
    let tar = decompress(&name, bytes).with_context(|| format!("{}: {name}", deb.display()))?;
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut archive = tar::Archive::new(tar.as_slice());
    for entry in archive
        .entries()
        .with_context(|| format!("{}: {name}", deb.display()))?
    {
        let mut entry = entry.with_context(|| format!("{}: {name}", deb.display()))?;
        let path = entry.path()?.into_owned();
        check_relative(&path).with_context(|| format!("{}: {name}", deb.display()))?;
        if entry.header().entry_type().is_hard_link()
            && let Some(target) = entry.link_name()?
        {
            check_relative(&target)
                .with_context(|| format!("{}: hard link {}", deb.display(), path.display()))?;
        }
        // unpack_in also refuses to write through symlinks that point outside `dest`.
        entry.unpack_in(dest).with_context(|| {
            format!(
                "{}: unpacking {} into {}",
                deb.display(),
                path.display(),
                dest.display()
            )
        })?;
    }
    Ok(())
}

fn check_relative(path: &Path) -> Result<()> {
    for c in path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => bail!("refusing archive path {:?} (absolute or with ..)", path),
        }
    }
    Ok(())
}

/// Returns the name and bytes of the first `ar` member whose name starts with `prefix`.
fn member(deb: &Path, prefix: &str) -> Result<(String, Vec<u8>)> {
    let file = fs::File::open(deb).with_context(|| format!("opening {}", deb.display()))?;
    let mut archive = ar::Archive::new(io::BufReader::new(file));
    let mut first = true;
    while let Some(entry) = archive.next_entry() {
        let mut entry =
            entry.with_context(|| format!("{}: not a valid .deb (ar) archive", deb.display()))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if first && name != "debian-binary" {
            bail!(
                "{}: not a .deb: first member is {name:?}, not debian-binary",
                deb.display()
            );
        }
        first = false;
        if name.starts_with(prefix) {
            let mut bytes = Vec::with_capacity(entry.header().size().min(1 << 28) as usize);
            entry
                .read_to_end(&mut bytes)
                .with_context(|| format!("{}: reading {name}", deb.display()))?;
            return Ok((name, bytes));
        }
    }
    bail!("{}: no {prefix}.* member", deb.display())
}

/// Decompresses by file name suffix: `.xz`, `.zst`, `.gz`, or plain `.tar`/`.ko`; other
/// suffixes are refused so an unknown format is named rather than misread.
pub fn decompress(name: &str, bytes: Vec<u8>) -> Result<Vec<u8>> {
    if name.ends_with(".xz") {
        let mut out = Vec::with_capacity(bytes.len() * 4);
        lzma_rs::xz_decompress(&mut bytes.as_slice(), &mut out)
            .map_err(|e| anyhow::anyhow!("xz: {e:?}"))?;
        Ok(out)
    } else if name.ends_with(".zst") {
        zstd_decompress(&bytes)
    } else if name.ends_with(".gz") {
        let mut out = Vec::with_capacity(bytes.len() * 4);
        flate2::read::MultiGzDecoder::new(bytes.as_slice())
            .read_to_end(&mut out)
            .context("gzip")?;
        Ok(out)
    } else if name.ends_with(".tar") || name.ends_with(".ko") {
        Ok(bytes)
    } else {
        bail!("unsupported compression of {name:?} (known: .xz, .zst, .gz, none)")
    }
}

/// Decodes every zstd frame in `input` (ruzstd's decoder stops after one frame).
fn zstd_decompress(mut input: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 4);
    while !input.is_empty() {
        let mut decoder = ruzstd::decoding::StreamingDecoder::new(&mut input)
            .map_err(|e| anyhow::anyhow!("zstd: {e}"))?;
        decoder.read_to_end(&mut out).context("zstd")?;
    }
    Ok(out)
}

/// Parses deb822 control text; continuation lines are ignored (none of our fields use them).
fn parse_control(text: &str) -> Result<Control> {
    let field = |key: &str| -> Result<String> {
        text.lines()
            .filter(|l| !l.starts_with([' ', '\t']))
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(key).then(|| v.trim().to_string())
            })
            .filter(|v| !v.is_empty())
            .with_context(|| format!("missing field {key}"))
    };
    Ok(Control {
        package: field("Package")?,
        version: field("Version")?,
        architecture: field("Architecture")?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a tar from (path, contents, symlink target) triples.
    fn tar_of(entries: &[(&str, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_mtime(0);
            match link {
                Some(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, path, target).unwrap();
                }
                None if path.ends_with('/') => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, path, io::empty()).unwrap();
                }
                None => {
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, *data).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    /// Writes a .deb with the given package name and data entries; `comp` is "xz", "zst", "gz" or "".
    pub(crate) fn write_deb(
        path: &Path,
        package: &str,
        version: &str,
        comp: &str,
        data: &[(&str, &[u8], Option<&str>)],
    ) {
        let control = format!(
            "Package: {package}\nVersion: {version}\nArchitecture: arm64\nDescription: test\n multi-line\n"
        );
        let control_tar = tar_of(&[("./", b"", None), ("./control", control.as_bytes(), None)]);
        let data_tar = tar_of(data);
        let compress = |raw: Vec<u8>| -> Vec<u8> {
            match comp {
                "xz" => {
                    let mut out = Vec::new();
                    lzma_rs::xz_compress(&mut raw.as_slice(), &mut out).unwrap();
                    out
                }
                "zst" => ruzstd::encoding::compress_to_vec(
                    raw.as_slice(),
                    ruzstd::encoding::CompressionLevel::Fastest,
                ),
                "gz" => {
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    io::Write::write_all(&mut e, &raw).unwrap();
                    e.finish().unwrap()
                }
                _ => raw,
            }
        };
        let suffix = if comp.is_empty() {
            String::new()
        } else {
            format!(".{comp}")
        };
        let mut ar = ar::Builder::new(fs::File::create(path).unwrap());
        let members = [
            ("debian-binary".to_string(), b"2.0\n".to_vec()),
            (format!("control.tar{suffix}"), compress(control_tar)),
            (format!("data.tar{suffix}"), compress(data_tar)),
        ];
        for (name, bytes) in members {
            let h = ar::Header::new(name.into_bytes(), bytes.len() as u64);
            ar.append(&h, bytes.as_slice()).unwrap();
        }
    }

    fn sample_data() -> Vec<(&'static str, &'static [u8], Option<&'static str>)> {
        vec![
            ("./", b"", None),
            ("./boot/", b"", None),
            ("./boot/vmlinuz-6.1.0-1-arm64", b"kernel image", None),
            ("./usr/lib/", b"", None),
            (
                "./usr/lib/link",
                b"",
                Some("../../boot/vmlinuz-6.1.0-1-arm64"),
            ),
            ("./usr/lib/abs", b"", Some("/etc/nowhere")),
        ]
    }

    #[test]
    fn control_and_unpack_every_compression() {
        let dir = tempdir("deb-comp");
        for comp in ["xz", "zst", "gz", ""] {
            let deb = dir.join(format!("p-{comp}.deb"));
            write_deb(&deb, "linux-image-test", "1.2-3", comp, &sample_data());
            let c = control(&deb).unwrap();
            assert_eq!(
                c,
                Control {
                    package: "linux-image-test".into(),
                    version: "1.2-3".into(),
                    architecture: "arm64".into()
                }
            );
            let dest = dir.join(format!("root-{comp}"));
            unpack(&deb, &dest).unwrap();
            assert_eq!(
                fs::read(dest.join("boot/vmlinuz-6.1.0-1-arm64")).unwrap(),
                b"kernel image"
            );
            let link = dest.join("usr/lib/link");
            assert!(
                fs::symlink_metadata(&link)
                    .unwrap()
                    .file_type()
                    .is_symlink()
            );
            assert_eq!(
                fs::read_link(&link).unwrap(),
                Path::new("../../boot/vmlinuz-6.1.0-1-arm64")
            );
            assert_eq!(
                fs::read_link(dest.join("usr/lib/abs")).unwrap(),
                Path::new("/etc/nowhere")
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unpack_refuses_parent_paths() {
        let dir = tempdir("deb-evil");
        let deb = dir.join("evil.deb");
        // tar::Builder refuses ".." itself, so patch the name bytes in the header afterwards.
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut h, "./xx/evil", &b"x"[..]).unwrap();
        let mut raw = b.into_inner().unwrap();
        raw[..9].copy_from_slice(b"./../evil");
        let mut h = tar::Header::from_byte_slice(&raw[..512]).clone();
        h.set_cksum();
        raw[..512].copy_from_slice(h.as_bytes());
        let mut ar = ar::Builder::new(fs::File::create(&deb).unwrap());
        for (name, bytes) in [("debian-binary", b"2.0\n".to_vec()), ("data.tar", raw)] {
            ar.append(
                &ar::Header::new(name.into(), bytes.len() as u64),
                bytes.as_slice(),
            )
            .unwrap();
        }
        drop(ar);
        let err = format!("{:#}", unpack(&deb, &dir.join("root")).unwrap_err());
        assert!(err.contains("refusing"), "{err}");
        assert!(!dir.join("evil").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn not_a_deb_is_an_error() {
        let dir = tempdir("deb-bad");
        let p = dir.join("x.deb");
        fs::write(&p, b"hello").unwrap();
        assert!(control(&p).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn control_parsing() {
        let c = parse_control("Package: a\nSource: b\nVersion: 1:2.0\nDescription: x\n Version: no\nArchitecture: all\n")
            .unwrap();
        assert_eq!(c.version, "1:2.0");
        assert_eq!(c.architecture, "all");
        assert!(parse_control("Package: a\n").is_err());
    }

    pub(crate) fn tempdir(tag: &str) -> std::path::PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "xtask-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }
}

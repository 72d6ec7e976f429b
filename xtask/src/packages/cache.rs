//! The package cache: `debs/<sha256>.deb` as downloaded and verified, and
//! `unpacked/<sha256>/` with each one's data tree.
//!
//! An unpacked tree is only used while it is what was unpacked: its digest (every path, kind,
//! permission bits, symlink target and file content) is recorded in `unpacked/<sha256>.tree`
//! once the unpack is complete, and compared each time the tree is used. A tree that was
//! changed, damaged or left half-done is unpacked again from its .deb.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use walkdir::WalkDir;

use super::local::LocalDeb;
use super::lock::{LockEntry, write_atomic};
use crate::deb;
use crate::digest::{Fields, sha256_file};

/// `cache_dir/debs/<sha256>.deb` and `cache_dir/unpacked/<sha256>/`.
pub(super) struct Cache {
    pub(super) debs: PathBuf,
    pub(super) unpacked: PathBuf,
    /// Trees found intact in this run, so each is hashed once.
    verified: RefCell<BTreeSet<String>>,
}

impl Cache {
    pub(super) fn new(dir: &Path) -> Result<Cache> {
        let c = Cache {
            debs: dir.join("debs"),
            unpacked: dir.join("unpacked"),
            verified: RefCell::new(BTreeSet::new()),
        };
        for d in [&c.debs, &c.unpacked] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(c)
    }

    pub(super) fn deb_path(&self, sha: &str) -> PathBuf {
        self.debs.join(format!("{sha}.deb"))
    }

    /// Whether the package is here: its .deb, or an intact unpacked tree (which only exists
    /// after its .deb was verified).
    pub(super) fn has(&self, sha: &str) -> bool {
        self.deb_path(sha).is_file() || self.intact(sha)
    }

    fn tree_path(&self, sha: &str) -> PathBuf {
        self.unpacked.join(sha)
    }

    fn marker_path(&self, sha: &str) -> PathBuf {
        self.unpacked.join(format!("{sha}.tree"))
    }

    /// Whether `unpacked/<sha>/` is complete and unchanged since it was unpacked.
    fn intact(&self, sha: &str) -> bool {
        if self.verified.borrow().contains(sha) {
            return true;
        }
        let dir = self.tree_path(sha);
        let ok = dir.is_dir()
            && fs::read_to_string(self.marker_path(sha))
                .is_ok_and(|recorded| tree_digest(&dir).is_ok_and(|now| now == recorded.trim()));
        if ok {
            self.verified.borrow_mut().insert(sha.to_string());
        }
        ok
    }

    pub(super) fn partial_dir(&self) -> Result<PathBuf> {
        let d = self.debs.join(format!("partial-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }

    /// Moves a verified download into the cache.
    pub(super) fn store(&self, file: &Path, sha: &str) -> Result<PathBuf> {
        let dest = self.deb_path(sha);
        fs::rename(file, &dest)
            .with_context(|| format!("moving {} to {}", file.display(), dest.display()))?;
        Ok(dest)
    }

    /// Hashes a local .deb and copies it into the cache.
    pub(super) fn add_local(
        &self,
        local: &LocalDeb,
        requested: &str,
    ) -> Result<(LockEntry, PathBuf)> {
        let sha = sha256_file(&local.path)?;
        let dest = self.deb_path(&sha);
        if !dest.is_file() {
            let tmp = self.debs.join(format!("{sha}.tmp-{}", std::process::id()));
            fs::copy(&local.path, &tmp).with_context(|| {
                format!("copying {} to {}", local.path.display(), tmp.display())
            })?;
            fs::rename(&tmp, &dest).with_context(|| format!("renaming {}", tmp.display()))?;
        }
        let file = local
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let entry = LockEntry {
            requested: requested.to_string(),
            package: local.control.package.clone(),
            version: local.control.version.clone(),
            sha256: sha,
            file,
        };
        Ok((entry, dest))
    }

    /// The unpacked tree of a cached .deb, unpacking (after verifying the hash) on first use
    /// and whenever the tree is not intact. Unpacks into a temporary directory renamed when
    /// complete, then records the tree's digest, so an interrupted unpack is never taken for
    /// a finished one.
    pub(super) fn unpacked(
        &self,
        sha: &str,
        deb_path: &Path,
        log: &mut dyn FnMut(&str),
    ) -> Result<PathBuf> {
        let dest = self.tree_path(sha);
        if self.intact(sha) {
            return Ok(dest);
        }
        let marker = self.marker_path(sha);
        if dest.exists() {
            log(&format!(
                "{} is not what was unpacked (changed, damaged or unfinished); unpacking it again",
                dest.display()
            ));
            fs::remove_dir_all(&dest).with_context(|| format!("removing {}", dest.display()))?;
        }
        let _ = fs::remove_file(&marker);
        let actual = sha256_file(deb_path)?;
        if actual != sha {
            let _ = fs::remove_file(deb_path);
            bail!(
                "cached {} has sha256 {actual}, expected {sha}; removed it, build again to fetch it anew",
                deb_path.display()
            );
        }
        let start = Instant::now();
        let tmp = self
            .unpacked
            .join(format!("{sha}.partial-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        deb::unpack(deb_path, &tmp)?;
        let digest = tree_digest(&tmp)?;
        match fs::rename(&tmp, &dest) {
            Ok(()) => {}
            // Another build finished the same unpack first: fine if it holds the same.
            Err(_) if dest.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
                if tree_digest(&dest)? != digest {
                    bail!(
                        "{} changed while this build unpacked the same package; build again",
                        dest.display()
                    );
                }
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()));
            }
        }
        write_atomic(&marker, format!("{digest}\n").as_bytes())?;
        self.verified.borrow_mut().insert(sha.to_string());
        log(&format!(
            "unpacked {} in {:.1} s",
            deb_path.display(),
            start.elapsed().as_secs_f64()
        ));
        Ok(dest)
    }
}

/// The digest of a tree: each entry below `dir` in path order with its kind, permission bits
/// and symlink target or the sha256 of its bytes. File contents are hashed on all CPUs.
fn tree_digest(dir: &Path) -> Result<String> {
    enum Kind {
        Dir,
        File(PathBuf),
        Symlink(Vec<u8>),
        Other,
    }
    let mut entries = Vec::new();
    for entry in WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.with_context(|| format!("walking {}", dir.display()))?;
        let rel = entry
            .path()
            .strip_prefix(dir)
            .context("internal: walked outside the tree")?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let meta = entry
            .metadata()
            .with_context(|| format!("stat {}", entry.path().display()))?;
        let ft = entry.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File(entry.path().to_path_buf())
        } else if ft.is_symlink() {
            let target = fs::read_link(entry.path())
                .with_context(|| format!("reading link {}", entry.path().display()))?;
            Kind::Symlink(target.as_os_str().as_bytes().to_vec())
        } else {
            Kind::Other
        };
        let mode = meta.permissions().mode() & 0o7777;
        entries.push((rel.as_os_str().as_bytes().to_vec(), mode, kind));
    }
    let files: Vec<&Path> = entries
        .iter()
        .filter_map(|(_, _, k)| match k {
            Kind::File(p) => Some(p.as_path()),
            _ => None,
        })
        .collect();
    let mut hashes = parallel_sha256(&files)?.into_iter();
    let mut f = Fields::new("unpacked-tree");
    for (path, mode, kind) in &entries {
        f.field("path", path);
        f.u64("mode", u64::from(*mode));
        match kind {
            Kind::Dir => f.field("dir", b""),
            Kind::File(_) => {
                let sha = hashes.next().context("internal: a file hash is missing")?;
                f.field("file", sha.as_bytes())
            }
            Kind::Symlink(target) => f.field("symlink", target),
            Kind::Other => f.field("other", b""),
        };
    }
    Ok(f.finish())
}

/// sha256 of each file, in order, spread over the CPUs (the kernel tree is ~100 MB).
fn parallel_sha256(files: &[&Path]) -> Result<Vec<String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = files.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|p| sha256_file(p)).collect()))
            .collect();
        let mut out = Vec::with_capacity(files.len());
        for h in handles {
            let part: Result<Vec<String>> = h
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a hashing thread panicked")));
            out.extend(part?);
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deb::tests::{tempdir, write_deb};

    fn unpack(cache: &Cache, sha: &str, deb: &Path) -> (PathBuf, Vec<String>) {
        let mut lines = Vec::new();
        let root = cache
            .unpacked(sha, deb, &mut |l| lines.push(l.to_string()))
            .unwrap();
        (root, lines)
    }

    /// A tree changed in any way after its unpack is noticed and unpacked again; so is one
    /// whose unpack never recorded its digest. An intact tree is used as it is.
    #[test]
    fn tampered_tree_is_detected_and_rebuilt() {
        let dir = tempdir("cache-tamper");
        let cache = Cache::new(&dir.join("cache")).unwrap();
        let src = dir.join("p.deb");
        write_deb(
            &src,
            "linux-image-t",
            "1",
            "xz",
            &[
                ("./", b"", None),
                ("./boot/", b"", None),
                ("./boot/vmlinuz-t", b"kernel image", None),
                ("./boot/link", b"", Some("vmlinuz-t")),
            ],
        );
        let sha = sha256_file(&src).unwrap();
        let deb = cache.deb_path(&sha);
        fs::copy(&src, &deb).unwrap();
        let (root, lines) = unpack(&cache, &sha, &deb);
        assert!(
            lines.iter().any(|l| l.starts_with("unpacked ")),
            "{lines:?}"
        );
        assert!(cache.marker_path(&sha).is_file());
        let vmlinuz = root.join("boot/vmlinuz-t");

        // Intact: used as it is, in this run and the next.
        let (_, lines) = unpack(&Cache::new(&dir.join("cache")).unwrap(), &sha, &deb);
        assert!(lines.is_empty(), "{lines:?}");

        type Tamper = fn(&Path);
        let tampers: &[(&str, Tamper)] = &[
            ("content", |r| {
                fs::write(r.join("boot/vmlinuz-t"), b"kernel imagf").unwrap()
            }),
            ("truncated", |r| {
                fs::write(r.join("boot/vmlinuz-t"), b"").unwrap()
            }),
            ("removed", |r| {
                fs::remove_file(r.join("boot/vmlinuz-t")).unwrap()
            }),
            ("added", |r| fs::write(r.join("boot/extra"), b"x").unwrap()),
            ("mode", |r| {
                fs::set_permissions(r.join("boot/vmlinuz-t"), fs::Permissions::from_mode(0o777))
                    .unwrap()
            }),
            ("symlink", |r| {
                fs::remove_file(r.join("boot/link")).unwrap();
                std::os::unix::fs::symlink("/etc/passwd", r.join("boot/link")).unwrap();
            }),
        ];
        for (what, tamper) in tampers {
            tamper(&root);
            // A new run (a new Cache) must look again.
            let cache = Cache::new(&dir.join("cache")).unwrap();
            let (again, lines) = unpack(&cache, &sha, &deb);
            assert_eq!(again, root);
            assert!(
                lines.iter().any(|l| l.contains("unpacking it again")),
                "{what}: {lines:?}"
            );
            assert_eq!(fs::read(&vmlinuz).unwrap(), b"kernel image", "{what}");
            assert_eq!(
                fs::read_link(root.join("boot/link")).unwrap(),
                Path::new("vmlinuz-t"),
                "{what}"
            );
            assert!(!root.join("boot/extra").exists(), "{what}");
        }

        // Renamed into place but no digest recorded (interrupted): unpacked again.
        fs::remove_file(cache.marker_path(&sha)).unwrap();
        let (_, lines) = unpack(&Cache::new(&dir.join("cache")).unwrap(), &sha, &deb);
        assert!(
            lines.iter().any(|l| l.contains("unpacking it again")),
            "{lines:?}"
        );

        // Without its .deb, an intact tree still counts as cached; a changed one does not.
        fs::remove_file(&deb).unwrap();
        assert!(Cache::new(&dir.join("cache")).unwrap().has(&sha));
        fs::write(&vmlinuz, b"evil").unwrap();
        assert!(!Cache::new(&dir.join("cache")).unwrap().has(&sha));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tree_digest_sees_names_kinds_and_bytes() {
        let dir = tempdir("cache-digest");
        let (a, b) = (dir.join("a"), dir.join("b"));
        for d in [&a, &b] {
            fs::create_dir_all(d.join("x")).unwrap();
            fs::write(d.join("x/f"), b"same").unwrap();
        }
        assert_eq!(tree_digest(&a).unwrap(), tree_digest(&b).unwrap());
        fs::rename(b.join("x/f"), b.join("x/g")).unwrap();
        assert_ne!(tree_digest(&a).unwrap(), tree_digest(&b).unwrap());
        fs::remove_file(b.join("x/g")).unwrap();
        fs::create_dir(b.join("x/f")).unwrap();
        assert_ne!(tree_digest(&a).unwrap(), tree_digest(&b).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! Checks of the built `nat-t4g` image's artifacts: SHA256SUMS, the GPT, the VHD and VMDK
//! against the raw disk, the modules' vermagic against the kernel on the disk,
//! reproducibility and the up-to-date rebuild.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::kmod;
use crate::report::{Report, say};
use crate::{digest, hostdeps, image};

const SHA256SUMS: &str = "image-sha256sums-match-files";
const RAW_GPT: &str = "image-raw-is-whole-gib-gpt";
const VHD: &str = "image-vpc-check-and-roundtrip";
const VMDK: &str = "image-vmdk-check-and-roundtrip";
const VERMAGIC: &str = "image-modules-vermagic-match-kernel";
const REPRODUCIBLE: &str = "image-reproducible";
const WARM_REBUILD: &str = "image-warm-rebuild-is-up-to-date";
pub const CHECKS: &[&str] = &[
    SHA256SUMS,
    RAW_GPT,
    VHD,
    VMDK,
    VERMAGIC,
    REPRODUCIBLE,
    WARM_REBUILD,
];

pub fn run(root: &Path, report: &mut Report) -> Result<()> {
    hostdeps::ensure(hostdeps::QEMU)?;
    hostdeps::ensure(hostdeps::DISK_TOOLS)?;
    let built = image::run(
        root,
        &image::Args {
            profile: "nat-t4g".into(),
            ..Default::default()
        },
    )
    .context("building the nat-t4g image")?;
    let dir = built.dir.clone();
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let raw_sha = built.manifest["artifacts"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["file"] == "disk.raw"))
        .and_then(|x| x["sha256"].as_str())
        .unwrap_or_default()
        .to_string();

    report.check(SHA256SUMS, || {
        let sums = std::fs::read_to_string(dir.join("SHA256SUMS"))?;
        let mut n = 0;
        for line in sums.lines() {
            let (sha, file) = line.split_once("  ").context("malformed SHA256SUMS line")?;
            let actual = digest::sha256_file(&dir.join(file))?;
            if actual != sha {
                bail!("{file}: SHA256SUMS says {sha}, file hashes to {actual}");
            }
            n += 1;
        }
        if n != image::ARTIFACTS.len() {
            bail!(
                "SHA256SUMS lists {n} files, expected {}",
                image::ARTIFACTS.len()
            );
        }
        Ok(())
    });
    report.check(RAW_GPT, || {
        let len = std::fs::metadata(dir.join("disk.raw"))?.len();
        if len == 0 || len % (1 << 30) != 0 {
            bail!("disk.raw is {len} bytes, not a whole number of GiB");
        }
        let v = run_tool("sgdisk", &["-v", &p("disk.raw")])?;
        if !v.contains("No problems found") {
            bail!("sgdisk -v: {v}");
        }
        let info = run_tool("sgdisk", &["-p", &p("disk.raw")])?;
        if !info.contains("EF00") {
            bail!("no EFI System Partition (EF00) in:\n{info}");
        }
        Ok(())
    });
    // What `qemu-img info` must report besides the raw disk's size: the format, and for the
    // VMDK the stream-optimized subformat (the one EC2 imports).
    for (name, file, fmt, (pointer, want)) in [
        (VHD, "disk.vhd", "vpc", ("/format", "vpc")),
        (
            VMDK,
            "disk.vmdk",
            "vmdk",
            ("/format-specific/data/create-type", "streamOptimized"),
        ),
    ] {
        report.check(name, || {
            if fmt == "vmdk" {
                run_tool("qemu-img", &["check", "-f", fmt, &p(file)])?;
            } else {
                // qemu-img has no consistency check for VHD ("does not support checks"):
                // compare it with the raw disk instead.
                let c = run_tool(
                    "qemu-img",
                    &["compare", "-f", fmt, "-F", "raw", &p(file), &p("disk.raw")],
                )?;
                if !c.contains("Images are identical") {
                    bail!("qemu-img compare: {c}");
                }
            }
            let raw_len = std::fs::metadata(dir.join("disk.raw"))
                .context("stat disk.raw")?
                .len();
            let info = qemu_img_info(fmt, &p(file))?;
            info_says(&info, pointer, want, raw_len)?;
            let tmp = tempfile::Builder::new()
                .prefix("xtask-roundtrip-")
                .tempdir()
                .context("creating a temporary directory")?;
            let back = tmp.path().join("back.raw");
            run_tool(
                "qemu-img",
                &[
                    "convert",
                    "-f",
                    fmt,
                    "-O",
                    "raw",
                    &p(file),
                    &back.to_string_lossy(),
                ],
            )?;
            let sha = digest::sha256_file(&back)?;
            if sha != raw_sha {
                bail!("{file} converted back to raw hashes to {sha}, disk.raw is {raw_sha}");
            }
            Ok(())
        });
    }
    // What the disk boots, read back from its ESP: the kernel and the initramfs's modules.
    report.check(VERMAGIC, || {
        let booted = kmod::booted(&dir.join("disk.raw"))?;
        let listed = kmod::expected_modules(&built.manifest)?;
        if booted.modules.len() != listed {
            bail!(
                "the initramfs holds {} modules, the manifest lists {listed}",
                booted.modules.len()
            );
        }
        let (release, n) = kmod::check_vermagic(&booted.kernel, &booted.modules)?;
        if built.manifest["kernel_release"].as_str() != Some(release.as_str()) {
            bail!(
                "the kernel on the disk is {release}, the manifest says {}",
                built.manifest["kernel_release"]
            );
        }
        say(&format!("{n} modules built for kernel {release}"));
        Ok(())
    });
    report.check(REPRODUCIBLE, || {
        let tmp = tempfile::Builder::new()
            .prefix("xtask-repro-")
            .tempdir()
            .context("creating a temporary directory")?;
        let again = image::run(
            root,
            &image::Args {
                profile: "nat-t4g".into(),
                out: Some(tmp.path().join("nat-t4g")),
                ..Default::default()
            },
        )?;
        if again.up_to_date {
            bail!("the second build reused the first instead of building");
        }
        let a = std::fs::read_to_string(dir.join("SHA256SUMS"))?;
        let b = std::fs::read_to_string(again.dir.join("SHA256SUMS"))?;
        if a != b {
            bail!("two builds differ:\n--- first\n{a}--- second\n{b}");
        }
        Ok(())
    });
    report.check(WARM_REBUILD, || {
        let again = image::run(
            root,
            &image::Args {
                profile: "nat-t4g".into(),
                ..Default::default()
            },
        )?;
        if !again.up_to_date {
            bail!("an unchanged rebuild wrote the image again");
        }
        Ok(())
    });
    Ok(())
}

/// `qemu-img info --output=json` of a disk image (stdout only: stderr would spoil the JSON).
fn qemu_img_info(fmt: &str, path: &str) -> Result<Value> {
    let out = duct::cmd("qemu-img", ["info", "-f", fmt, "--output=json", path])
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .context("running qemu-img")?;
    if !out.status.success() {
        bail!(
            "qemu-img info -f {fmt} {path} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing qemu-img info --output=json")
}

/// That qemu-img's `info` has `want` at JSON pointer `pointer`, and a virtual size of exactly
/// `raw_len` bytes (the raw disk's length: a converted disk holds every byte of it).
fn info_says(info: &Value, pointer: &str, want: &str, raw_len: u64) -> Result<()> {
    let got = info.pointer(pointer).and_then(Value::as_str);
    if got != Some(want) {
        bail!("qemu-img info has {pointer} = {got:?}, want {want:?}:\n{info:#}");
    }
    // The top level's size is the disk's; nested "children" carry the container file's.
    match info["virtual-size"].as_u64() {
        Some(n) if n == raw_len => Ok(()),
        Some(n) => bail!("qemu-img info says virtual-size {n} bytes, disk.raw is {raw_len}"),
        None => bail!("qemu-img info has no virtual-size:\n{info:#}"),
    }
}

fn run_tool(program: &str, args: &[&str]) -> Result<String> {
    let out = duct::cmd(program, args)
        .stderr_to_stdout()
        .unchecked()
        .stdout_capture()
        .run()
        .with_context(|| format!("running {program}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("{program} {} failed: {text}", args.join(" "));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of qemu-img 10's `info --output=json` for a stream-optimized VMDK.
    const VMDK_INFO: &str = r#"{
        "children": [{"name": "file", "info": {"virtual-size": 65536, "format": "file"}}],
        "virtual-size": 8388608,
        "format": "vmdk",
        "format-specific": {"type": "vmdk", "data": {"create-type": "streamOptimized"}}
    }"#;

    #[test]
    fn info_must_name_the_format_and_the_raw_size_in_bytes() {
        let v: Value = serde_json::from_str(VMDK_INFO).unwrap();
        let sub = "/format-specific/data/create-type";
        info_says(&v, sub, "streamOptimized", 8 << 20).unwrap();
        info_says(&v, "/format", "vmdk", 8 << 20).unwrap();
        let e = format!(
            "{:#}",
            info_says(&v, sub, "streamOptimized", 1 << 30).unwrap_err()
        );
        assert!(
            e.contains("virtual-size 8388608 bytes, disk.raw is 1073741824"),
            "{e}"
        );
        // The nested file node's size is not the disk's.
        assert!(info_says(&v, sub, "streamOptimized", 65536).is_err());
        let e = format!(
            "{:#}",
            info_says(&v, "/format", "vpc", 8 << 20).unwrap_err()
        );
        assert!(e.contains("want \"vpc\""), "{e}");
        let no_size: Value = serde_json::from_str(r#"{"format": "vpc"}"#).unwrap();
        assert!(info_says(&no_size, "/format", "vpc", 8 << 20).is_err());
    }
}

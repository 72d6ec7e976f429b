//! Sizes: the artifacts of ours and the baseline, and the bytes an EBS snapshot import
//! uploads (non-zero blocks of the raw disk), against a typical NAT AMI's root volume.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::round3;

/// The bytes an EBS snapshot import uploads: non-zero 512 KiB blocks of the raw disk.
pub fn nonzero_blocks(path: &Path, block: usize) -> Result<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; block];
    let mut n = 0;
    loop {
        let mut got = 0;
        while got < block {
            let r = f
                .read(&mut buf[got..])
                .with_context(|| format!("reading {}", path.display()))?;
            if r == 0 {
                break;
            }
            got += r;
        }
        if got == 0 {
            return Ok(n);
        }
        if buf[..got].iter().any(|b| *b != 0) {
            n += 1;
        }
        if got < block {
            return Ok(n);
        }
    }
}

const EBS_BLOCK: usize = 512 * 1024;

fn image_sizes(dir: &Path) -> Result<Value> {
    let size = |f: &str| -> Result<u64> {
        Ok(std::fs::metadata(dir.join(f))
            .with_context(|| format!("stat {}", dir.join(f).display()))?
            .len())
    };
    let blocks = nonzero_blocks(&dir.join("disk.raw"), EBS_BLOCK)?;
    Ok(json!({
        "disk_vmdk": size("disk.vmdk")?,
        "initramfs": size("initramfs.img")?,
        "rootfs_tar": size("rootfs.tar")?,
        "disk_raw": size("disk.raw")?,
        "ebs_upload": blocks * EBS_BLOCK as u64,
        "ebs_upload_blocks": blocks,
    }))
}

pub fn sizes(ours: &Path, base: &Path) -> Result<Value> {
    let (o, b) = (image_sizes(ours)?, image_sizes(base)?);
    let mut ratio = serde_json::Map::new();
    for k in ["disk_vmdk", "initramfs", "rootfs_tar", "ebs_upload"] {
        if let (Some(x), Some(y)) = (o[k].as_f64(), b[k].as_f64())
            && y > 0.0
        {
            ratio.insert(k.into(), json!(round3(x / y)));
        }
    }
    let ami = 2u64 << 30;
    let upload = o["ebs_upload"].as_u64().unwrap_or(0);
    Ok(json!({
        "ours": o,
        "baseline": b,
        "ratio_ours_baseline": ratio,
        "ami_reference": {
            "bytes": ami,
            "what": "fck-nat AMI root volume, 2 GB: its deployment guide says \"Leave Storage at 2GB\"; the popular NAT AMIs use 2-4 GiB root volumes",
            "source": "fck-nat documentation, docs/deploying.md (\"Manual - Web Console\", step 8), github.com/AndrewGuenther/fck-nat",
            "ratio_ours_upload": round3(upload as f64 / ami as f64),
        },
        "goal": {"ebs_upload_under_bytes": 16u64 << 20, "met": upload < (16u64 << 20)},
    }))
}

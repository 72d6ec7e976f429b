//! Stage 7, formats: the fixed VHD and the stream-optimized VMDK made from `disk.raw`, while
//! another thread hashes the raw disk (a fixed VHD is the raw disk plus a footer, so its hash
//! continues from the raw's state instead of reading the whole disk again).

use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::say;
use crate::digest::{hex, sha256_continue, sha256_state};
use crate::formats;

/// The sha256 of the disk formats, as lowercase hex.
pub struct DiskHashes {
    pub raw: String,
    pub vhd: String,
}

pub fn write(work: &Path, epoch: u64, seed: [u8; 32]) -> Result<DiskHashes> {
    let raw = work.join("disk.raw");
    let hasher = {
        let raw = raw.clone();
        std::thread::spawn(move || sha256_state(&raw))
    };
    let vhd = work.join("disk.vhd");
    formats::write_vhd_fixed(&raw, &vhd, epoch, seed)?;
    let mut last_pct = 0;
    formats::write_vmdk_stream(&raw, &work.join("disk.vmdk"), &mut |done, total| {
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        if pct >= last_pct + 25 {
            last_pct = pct;
            say(&format!("disk.vmdk: {pct}%"));
        }
    })?;
    let raw_state: Sha256 = hasher
        .join()
        .map_err(|_| anyhow::anyhow!("hashing disk.raw panicked"))??;
    let raw_len = std::fs::metadata(&raw)
        .with_context(|| format!("stat {}", raw.display()))?
        .len();
    Ok(DiskHashes {
        raw: hex(&raw_state.clone().finalize()),
        vhd: sha256_continue(raw_state, &vhd, raw_len)?,
    })
}

//! Stage 5, initramfs: the rootfs tree as `rootfs.tar` (for inspection) and as the newc
//! initramfs (gzipped unless the profile says otherwise) that the kernel unpacks as its whole
//! root file system.

use std::path::Path;

use anyhow::{Context, Result};

use super::staging::create;
use crate::initramfs;
use crate::profile::InitramfsCompression;
use crate::rootfs::Tree;

/// Writes both archives into `work` and returns the initramfs bytes (they also go on the ESP).
pub fn write(
    tree: &Tree,
    epoch: u64,
    compression: InitramfsCompression,
    work: &Path,
) -> Result<Vec<u8>> {
    let f = create(&work.join("rootfs.tar"))?;
    tree.write_tar(std::io::BufWriter::new(f), epoch)?;
    let mut initrd = Vec::new();
    initramfs::write(tree, epoch, compression, &mut initrd)?;
    std::fs::write(work.join("initramfs.img"), &initrd).context("writing initramfs.img")?;
    Ok(initrd)
}

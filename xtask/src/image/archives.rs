//! Stage 5, initramfs: the rootfs tree as `rootfs.tar` (for inspection) and as the gzipped
//! newc initramfs that the kernel unpacks as its whole root file system.

use std::path::Path;

use anyhow::{Context, Result};

use super::staging::create;
use crate::initramfs;
use crate::rootfs::Tree;

/// Writes both archives into `work` and returns the initramfs bytes (they also go on the ESP).
pub fn write(tree: &Tree, epoch: u64, work: &Path) -> Result<Vec<u8>> {
    let f = create(&work.join("rootfs.tar"))?;
    tree.write_tar(std::io::BufWriter::new(f), epoch)?;
    let mut initrd = Vec::new();
    initramfs::write(tree, epoch, &mut initrd)?;
    std::fs::write(work.join("initramfs.cpio.gz"), &initrd).context("writing initramfs.cpio.gz")?;
    Ok(initrd)
}

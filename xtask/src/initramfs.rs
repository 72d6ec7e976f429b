//! The initramfs: the root tree as a newc cpio archive, gzip-compressed or not as the profile
//! says, byte-for-byte deterministic (sorted entries, uid/gid 0, one mtime, sequential inode
//! numbers, gzip header without a timestamp or file name).

use std::io::Write;

use anyhow::{Context, Result};
use cpio::newc::{Builder, ModeFileType};
use flate2::{Compression, GzBuilder};

use crate::profile::InitramfsCompression;
use crate::rootfs::{Node, Tree};

/// Writes `tree` as `initramfs.img` content.
pub fn write(
    tree: &Tree,
    mtime: u64,
    compression: InitramfsCompression,
    mut out: impl Write,
) -> Result<()> {
    if compression == InitramfsCompression::None {
        write_cpio(tree, mtime, &mut out)?.flush()?;
        return Ok(());
    }
    // Level 9: the initramfs is read once per boot, and smaller means a smaller upload.
    let gz = GzBuilder::new().mtime(0).write(out, Compression::best());
    let gz = write_cpio(tree, mtime, gz)?;
    gz.finish().context("finishing gzip stream")?.flush()?;
    Ok(())
}

/// The uncompressed newc archive.
pub fn write_cpio<W: Write>(tree: &Tree, mtime: u64, mut w: W) -> Result<W> {
    let mtime =
        u32::try_from(mtime).context("SOURCE_DATE_EPOCH does not fit cpio's 32-bit mtime")?;
    for (ino, (path, node)) in (1u32..).zip(tree.iter()) {
        let b = Builder::new(path).ino(ino).uid(0).gid(0).mtime(mtime);
        let (b, data): (Builder, &[u8]) = match node {
            Node::Dir { mode } => (
                b.mode(*mode)
                    .set_mode_file_type(ModeFileType::Directory)
                    .nlink(2),
                &[],
            ),
            Node::File { mode, data } => (
                b.mode(*mode)
                    .set_mode_file_type(ModeFileType::Regular)
                    .nlink(1),
                data,
            ),
            Node::Symlink { target } => (
                b.mode(0o777)
                    .set_mode_file_type(ModeFileType::Symlink)
                    .nlink(1),
                target.as_bytes(),
            ),
            Node::CharDev { mode, major, minor } => (
                b.mode(*mode)
                    .set_mode_file_type(ModeFileType::Char)
                    .nlink(1)
                    .rdev_major(*major)
                    .rdev_minor(*minor),
                &[],
            ),
        };
        let size = u32::try_from(data.len()).with_context(|| format!("{path} is over 4 GiB"))?;
        let mut fw = b.write(w, size);
        fw.write_all(data)
            .with_context(|| format!("writing {path} to the initramfs"))?;
        w = fw.finish()?;
    }
    Ok(cpio::newc::trailer(w)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_reads_back_with_modes_and_device() {
        let mut t = Tree::new();
        t.file("sbin/init", 0o755, b"\x7fELF".to_vec());
        t.symlink("init", "sbin/init");
        let raw = write_cpio(&t, 42, Vec::new()).unwrap();
        let mut seen = Vec::new();
        let mut r = raw.as_slice();
        loop {
            let e = cpio::NewcReader::new(r).unwrap();
            if e.entry().is_trailer() {
                break;
            }
            let en = e.entry();
            seen.push((
                en.name().to_string(),
                en.mode(),
                en.ino(),
                en.mtime(),
                en.rdev_major(),
                en.rdev_minor(),
            ));
            r = e.finish().unwrap();
        }
        let console = seen.iter().find(|s| s.0 == "dev/console").unwrap();
        assert_eq!(
            (console.1 & 0o170000, console.4, console.5),
            (0o020000, 5, 1)
        );
        let init = seen.iter().find(|s| s.0 == "sbin/init").unwrap();
        assert_eq!(init.1, 0o100755);
        assert!(seen.iter().all(|s| s.3 == 42));
        let inos: Vec<u32> = seen.iter().map(|s| s.2).collect();
        assert_eq!(inos, (1..=inos.len() as u32).collect::<Vec<_>>());
    }

    #[test]
    fn gzip_is_deterministic() {
        let mut t = Tree::new();
        t.file("etc/hostname", 0o644, b"nat\n".to_vec());
        let mut a = Vec::new();
        let mut b = Vec::new();
        write(&t, 7, InitramfsCompression::Gzip, &mut a).unwrap();
        write(&t, 7, InitramfsCompression::Gzip, &mut b).unwrap();
        assert_eq!(a, b);
        // gzip MTIME field is zero
        assert_eq!(&a[4..8], &[0, 0, 0, 0]);
    }

    #[test]
    fn uncompressed_is_the_plain_newc_archive() {
        let mut t = Tree::new();
        t.file("etc/hostname", 0o644, b"nat\n".to_vec());
        let mut plain = Vec::new();
        write(&t, 7, InitramfsCompression::None, &mut plain).unwrap();
        assert_eq!(plain, write_cpio(&t, 7, Vec::new()).unwrap());
        assert!(plain.starts_with(b"070701"), "newc magic");
        let mut gz = Vec::new();
        write(&t, 7, InitramfsCompression::Gzip, &mut gz).unwrap();
        assert_ne!(plain, gz);
    }
}

//! Block iteration over a raw disk image: the EBS direct APIs take fixed-size blocks, and a
//! snapshot block that is never written reads as zeros, so only non-zero blocks are sent.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use sha2::{Digest, Sha256};

use crate::checksum::{LinearChecksum, block_digest, hex};

/// AWS's EBS block size (512 KiB). The service states the real size in StartSnapshot's answer;
/// this one is only assumed for `--dry-run`.
pub const AWS_BLOCK_SIZE: u64 = 512 * 1024;

const GIB: u64 = 1024 * 1024 * 1024;

/// EBS volume size for an image: whole GiB, rounded up, at least 1.
pub fn volume_size_gib(image_bytes: u64) -> u64 {
    image_bytes.div_ceil(GIB).max(1)
}

/// Bytes for progress lines: `512 B`, `1.5 KiB`, `61.2 MiB`, `2.0 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// One non-zero block, padded with zeros to the block size when the image ends inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub index: u64,
    pub data: Vec<u8>,
}

/// Iterates over the non-zero blocks of a reader, in index order.
pub struct NonZeroBlocks<R> {
    reader: R,
    block_size: usize,
    next_index: u64,
    done: bool,
}

impl<R: Read> NonZeroBlocks<R> {
    pub fn new(reader: R, block_size: usize) -> Self {
        Self {
            reader,
            block_size: block_size.max(1),
            next_index: 0,
            done: false,
        }
    }

    /// Reads one whole block (zero-padded at the end); `None` at end of input.
    fn read_block(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; self.block_size];
        let mut filled = 0;
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok((filled > 0).then_some(buf))
    }
}

impl<R: Read> Iterator for NonZeroBlocks<R> {
    type Item = std::io::Result<Block>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let index = self.next_index;
            match self.read_block() {
                Ok(Some(data)) => {
                    self.next_index += 1;
                    if data.iter().any(|&b| b != 0) {
                        return Some(Ok(Block { index, data }));
                    }
                }
                Ok(None) => self.done = true,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// What a scan of the image found: every non-zero block's index and digest, in order, and the
/// LINEAR checksum CompleteSnapshot wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub block_size: u64,
    pub image_bytes: u64,
    pub total_blocks: u64,
    pub blocks: Vec<ScannedBlock>,
    pub linear_checksum: String,
    /// Hex SHA-256 of the whole file, to compare with the manifest.
    pub file_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedBlock {
    pub index: u64,
    /// Raw SHA-256 of the (padded) block.
    pub digest: [u8; 32],
}

impl Scan {
    pub fn bytes_to_send(&self) -> u64 {
        self.blocks.len() as u64 * self.block_size
    }
}

/// Reads the image once, hashing each non-zero block.
pub fn scan(path: &Path, block_size: u64) -> Result<Scan> {
    if block_size == 0 {
        bail!("block size 0");
    }
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let image_bytes = file
        .metadata()
        .with_context(|| format!("stat {}", path.display()))?
        .len();
    let size = usize::try_from(block_size).context("block size does not fit in memory")?;
    let mut linear = LinearChecksum::default();
    let mut blocks = Vec::new();
    let mut reader = HashingReader {
        inner: std::io::BufReader::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
    };
    for block in NonZeroBlocks::new(&mut reader, size) {
        let block = block.with_context(|| format!("reading {}", path.display()))?;
        let digest = block_digest(&block.data);
        linear.push(&digest);
        blocks.push(ScannedBlock {
            index: block.index,
            digest,
        });
    }
    Ok(Scan {
        file_sha256: hex(&reader.hasher.finalize()),
        block_size,
        image_bytes,
        total_blocks: image_bytes.div_ceil(block_size),
        blocks,
        linear_checksum: linear.finish_base64(),
    })
}

/// Hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads block `index` of `file` (zero-padded at the end of the file).
pub fn read_block_at(file: &File, index: u64, block_size: u64) -> std::io::Result<Vec<u8>> {
    let size = usize::try_from(block_size)
        .map_err(|_| std::io::Error::new(ErrorKind::InvalidInput, "block size too large"))?;
    let mut buf = vec![0u8; size];
    let mut filled = 0;
    let offset = index * block_size;
    while filled < size {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most 3 bytes per call, to exercise short reads.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(3).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn indices(data: &[u8], bs: usize) -> Vec<u64> {
        NonZeroBlocks::new(Trickle(data), bs)
            .map(|b| b.unwrap().index)
            .collect()
    }

    #[test]
    fn skips_zero_blocks_and_keeps_order() {
        let mut data = vec![0u8; 8 * 4];
        data[4] = 1; // block 1
        data[4 * 5 + 3] = 9; // block 5
        data[4 * 7] = 2; // block 7
        assert_eq!(indices(&data, 4), vec![1, 5, 7]);
    }

    #[test]
    fn all_zero_and_empty_inputs_give_no_blocks() {
        assert!(indices(&[0u8; 40], 8).is_empty());
        assert!(indices(&[], 8).is_empty());
    }

    #[test]
    fn last_partial_block_is_zero_padded() {
        let data = [0, 0, 0, 0, 7, 8];
        let blocks: Vec<Block> = NonZeroBlocks::new(Trickle(&data), 4)
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(
            blocks,
            vec![Block {
                index: 1,
                data: vec![7, 8, 0, 0]
            }]
        );
    }

    #[test]
    fn read_errors_surface() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let mut it = NonZeroBlocks::new(Broken, 4);
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }

    #[test]
    fn human_bytes_picks_a_unit() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(61 * 1024 * 1024 + 200 * 1024), "61.2 MiB");
        assert_eq!(human_bytes(2 * GIB), "2.0 GiB");
    }

    #[test]
    fn volume_size_rounds_up_to_whole_gib() {
        assert_eq!(volume_size_gib(0), 1);
        assert_eq!(volume_size_gib(1), 1);
        assert_eq!(volume_size_gib(GIB), 1);
        assert_eq!(volume_size_gib(GIB + 1), 2);
        assert_eq!(volume_size_gib(8 * GIB), 8);
    }

    #[test]
    fn scan_and_read_back_agree() {
        let dir = std::env::temp_dir().join(format!("xtask-ami-blocks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.raw");
        let mut data = vec![0u8; 4096 + 100];
        data[600] = 0xaa; // block 1 of 512
        data[4096 + 50] = 0xbb; // block 8, partial
        std::fs::write(&path, &data).unwrap();
        let s = scan(&path, 512).unwrap();
        assert_eq!(s.image_bytes, 4196);
        assert_eq!(s.total_blocks, 9);
        assert_eq!(
            s.blocks.iter().map(|b| b.index).collect::<Vec<_>>(),
            vec![1, 8]
        );
        assert_eq!(s.bytes_to_send(), 1024);
        assert_eq!(s.file_sha256, hex(&block_digest(&data)));
        let file = File::open(&path).unwrap();
        for b in &s.blocks {
            let got = read_block_at(&file, b.index, 512).unwrap();
            assert_eq!(got.len(), 512);
            assert_eq!(block_digest(&got), b.digest);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

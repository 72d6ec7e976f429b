//! Derives the other disk formats EC2 import-snapshot accepts from the raw image: a fixed VHD
//! (the raw bytes plus a 512-byte footer) and a stream-optimized VMDK (zlib-compressed 64 KiB
//! grains with markers, tables at the end). Both are written by hand: they are small, fixed
//! formats, and no pure-Rust crate writes them deterministically.

use crate::disk::{Guid, SECTOR, is_zero};
use anyhow::{Context, Result, ensure};
use flate2::Compression;
use flate2::write::ZlibEncoder;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// VHD timestamps count seconds from 2000-01-01 00:00:00 UTC.
const VHD_EPOCH_UNIX: u64 = 946_684_800;
/// The VHD format's own limit (2040 GiB).
const VHD_MAX_BYTES: u64 = 2040 << 30;
/// Readers size a VHD either from CHS geometry (which cannot express most sizes, 1 GiB
/// included) or from the footer's current size, choosing by creator application. "qem2" is the
/// marker QEMU writes for "the footer size is exact"; QEMU and others then read every byte.
const VHD_CREATOR_APP: &[u8; 4] = b"qem2";
const VHD_CREATOR_VERSION: u32 = 0x0001_0000;
const VHD_CREATOR_OS: &[u8; 4] = b"Wi2k";
const VHD_DISK_TYPE_FIXED: u32 = 2;

/// Copies are done in blocks of this size; all-zero ones are skipped (left as holes).
const COPY_BLOCK: usize = 64 * 1024;
const COPY_CHUNK: usize = 4 << 20;

/// Writes `raw` followed by a fixed-VHD footer to `out`, sparse where `raw` is zero.
/// `created_unix` becomes the footer timestamp (clamped to the VHD range); `seed` the disk UUID.
pub fn write_vhd_fixed(raw: &Path, out: &Path, created_unix: u64, seed: [u8; 32]) -> Result<()> {
    removed_on_error(out, vhd_fixed(raw, out, created_unix, seed))
}

/// A half-written image must not be mistaken for a good one.
fn removed_on_error(out: &Path, result: Result<()>) -> Result<()> {
    if result.is_err() {
        let _ = std::fs::remove_file(out);
    }
    result
}

/// Opens a raw disk image and checks that it is a whole number of sectors.
fn open_raw(raw: &Path) -> Result<(File, u64)> {
    let input = File::open(raw).with_context(|| format!("opening {}", raw.display()))?;
    let len = input
        .metadata()
        .with_context(|| format!("reading the size of {}", raw.display()))?
        .len();
    ensure!(
        len > 0 && len.is_multiple_of(SECTOR),
        "{} is {len} bytes, not a whole number of 512-byte sectors",
        raw.display()
    );
    Ok((input, len))
}

fn vhd_fixed(raw: &Path, out: &Path, created_unix: u64, seed: [u8; 32]) -> Result<()> {
    let (input, len) = open_raw(raw)?;
    ensure!(
        len <= VHD_MAX_BYTES,
        "{} is {len} bytes; a VHD holds at most {VHD_MAX_BYTES}",
        raw.display()
    );
    let output = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    output
        .set_len(len + SECTOR)
        .with_context(|| format!("sizing {}", out.display()))?;
    copy_sparse(&input, &output, len)
        .with_context(|| format!("copying {} into {}", raw.display(), out.display()))?;
    output
        .write_all_at(&vhd_footer(len, created_unix, seed), len)
        .with_context(|| format!("writing the VHD footer of {}", out.display()))?;
    Ok(())
}

/// Copies `len` bytes from `input` to the start of `output`, writing only non-zero blocks and
/// reading only where the filesystem says `input` has data.
fn copy_sparse(input: &File, output: &File, len: u64) -> Result<()> {
    let mut buf = vec![0u8; COPY_CHUNK];
    let block = COPY_BLOCK as u64;
    for (first, end) in block_runs(&data_ranges(input, len), block) {
        let mut done = first * block;
        let stop = (end * block).min(len);
        while done < stop {
            let n = usize::try_from(stop - done).map_or(COPY_CHUNK, |left| left.min(COPY_CHUNK));
            input
                .read_exact_at(&mut buf[..n], done)
                .with_context(|| format!("reading {n} bytes at offset {done}"))?;
            // Consecutive non-zero blocks go out as one write.
            let mut run: Option<usize> = None;
            for start in (0..n).step_by(COPY_BLOCK) {
                let end = (start + COPY_BLOCK).min(n);
                match (is_zero(&buf[start..end]), run) {
                    (false, None) => run = Some(start),
                    (true, Some(from)) => {
                        output.write_all_at(&buf[from..start], done + from as u64)?;
                        run = None;
                    }
                    _ => {}
                }
            }
            if let Some(from) = run {
                output.write_all_at(&buf[from..n], done + from as u64)?;
            }
            done += n as u64;
        }
    }
    Ok(())
}

/// Byte ranges of `file` (below `len`) that may hold data, from the filesystem's extent map.
/// Holes read as zeros anyway; skipping them saves reading, and the kernel zero-filling page
/// cache for, a gigabyte of nothing. Without SEEK_DATA support: the whole file.
fn data_ranges(file: &File, len: u64) -> Vec<(u64, u64)> {
    let whole = vec![(0, len)];
    let fd = file.as_raw_fd();
    let mut ranges = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let Ok(from) = libc::off_t::try_from(pos) else {
            return whole;
        };
        // SAFETY: lseek only moves the offset of a descriptor `file` keeps open; all reads
        // here are positioned (pread), so the moved offset does not matter.
        let data = unsafe { libc::lseek(fd, from, libc::SEEK_DATA) };
        if data < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                break; // Only a hole from `pos` on.
            }
            return whole;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let (Ok(start), Ok(end)) = (u64::try_from(data), u64::try_from(hole)) else {
            return whole;
        };
        if start >= len || end <= start {
            break;
        }
        ranges.push((start, end.min(len)));
        pos = end;
    }
    ranges
}

/// Byte ranges widened to whole blocks of `block` bytes, as [first, end) block indices, merged
/// where they touch.
fn block_runs(ranges: &[(u64, u64)], block: u64) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &(start, end) in ranges {
        let (first, stop) = (start / block, end.div_ceil(block));
        match runs.last_mut() {
            Some(last) if first <= last.1 => last.1 = last.1.max(stop),
            _ => runs.push((first, stop)),
        }
    }
    runs
}

fn vhd_footer(size: u64, created_unix: u64, seed: [u8; 32]) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(b"conectix");
    // Features: the "reserved" bit the spec requires to be set.
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    // A fixed disk has no dynamic header.
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    let stamp = created_unix
        .saturating_sub(VHD_EPOCH_UNIX)
        .min(u64::from(u32::MAX)) as u32;
    f[24..28].copy_from_slice(&stamp.to_be_bytes());
    f[28..32].copy_from_slice(VHD_CREATOR_APP);
    f[32..36].copy_from_slice(&VHD_CREATOR_VERSION.to_be_bytes());
    f[36..40].copy_from_slice(VHD_CREATOR_OS);
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    let (cylinders, heads, sectors) = vhd_geometry(size / SECTOR);
    f[56..58].copy_from_slice(&cylinders.to_be_bytes());
    f[58] = heads;
    f[59] = sectors;
    f[60..64].copy_from_slice(&VHD_DISK_TYPE_FIXED.to_be_bytes());
    f[68..84].copy_from_slice(&Guid::derive(&seed, "vhd-uuid").0);
    let checksum = vhd_checksum(&f);
    f[64..68].copy_from_slice(&checksum.to_be_bytes());
    f
}

/// One's complement of the byte sum, skipping the checksum field itself.
fn vhd_checksum(footer: &[u8; 512]) -> u32 {
    let sum = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    !sum
}

/// CHS geometry by the algorithm in the VHD specification (appendix "CHS Calculation").
fn vhd_geometry(total_sectors: u64) -> (u16, u8, u8) {
    let total = total_sectors.min(65535 * 16 * 255);
    let (sectors, heads, cyl_times_heads) = if total >= 65535 * 16 * 63 {
        (255, 16, total / 255)
    } else {
        let mut sectors = 17;
        let mut cth = total / sectors;
        let mut heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            sectors = 31;
            heads = 16;
            cth = total / sectors;
        }
        if cth >= heads * 1024 {
            sectors = 63;
            heads = 16;
            cth = total / sectors;
        }
        (sectors, heads, cth)
    };
    // Each value fits its field by construction of the algorithm.
    ((cyl_times_heads / heads) as u16, heads as u8, sectors as u8)
}

const VMDK_MAGIC: &[u8; 4] = b"KDMV";
const VMDK_VERSION: u32 = 3;
/// Valid newline-detection test (bit 0), compressed grains (bit 16), markers (bit 17).
const VMDK_FLAGS: u32 = 1 | 1 << 16 | 1 << 17;
const GRAIN_SECTORS: u64 = 128;
const GRAIN_BYTES: usize = 64 * 1024;
const GTES_PER_GT: u64 = 512;
/// In the first header: the grain directory is found through the footer.
const GD_AT_END: u64 = u64::MAX;
const COMPRESS_DEFLATE: u16 = 1;
/// Grains start here, after the header and the descriptor: one grain in, as VMware does.
const VMDK_OVERHEAD_SECTORS: u64 = 128;
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;
/// Fixed so the output depends on the input only.
const VMDK_COMPRESSION_LEVEL: u32 = 6;
/// Grains compressed per worker between writes.
const GRAINS_PER_WORKER: usize = 16;

/// Writes `raw` as a stream-optimized VMDK to `out`; `progress` gets (bytes read, total).
pub fn write_vmdk_stream(raw: &Path, out: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
    removed_on_error(out, vmdk_stream(raw, out, progress))
}

fn vmdk_stream(raw: &Path, out: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
    let (input, len) = open_raw(raw)?;
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.contains('"') && !n.contains('\n'))
        .with_context(|| {
            format!(
                "{} has no file name usable in a VMDK descriptor",
                out.display()
            )
        })?;
    let capacity = len / SECTOR;
    let grains = capacity.div_ceil(GRAIN_SECTORS);
    let tables = grains.div_ceil(GTES_PER_GT);
    let descriptor = vmdk_descriptor(capacity, name, 0);
    let descriptor_sectors = (descriptor.len() as u64).div_ceil(SECTOR);
    ensure!(
        descriptor_sectors < VMDK_OVERHEAD_SECTORS,
        "VMDK descriptor of {} bytes does not fit before the first grain",
        descriptor.len()
    );
    let header = |gd_offset| vmdk_header(capacity, descriptor_sectors, gd_offset);

    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = SectorWriter {
        out: BufWriter::with_capacity(1 << 20, file),
        sector: 0,
    };
    let werr = || format!("writing {}", out.display());
    w.put(&header(GD_AT_END)).with_context(werr)?;
    w.put(descriptor.as_bytes()).with_context(werr)?;
    w.pad_to(VMDK_OVERHEAD_SECTORS).with_context(werr)?;

    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(16));
    let batch = workers * GRAINS_PER_WORKER;
    let mut grain_table = vec![0u32; usize::try_from(tables * GTES_PER_GT)?];
    let mut fingerprint = flate2::Crc::new();
    fingerprint.update(&capacity.to_le_bytes());
    let mut buf = vec![0u8; batch * GRAIN_BYTES];
    progress(0, len);
    for (run_first, run_end) in block_runs(&data_ranges(&input, len), GRAIN_BYTES as u64) {
        let mut first_grain = run_first;
        while first_grain < run_end {
            let count = (run_end - first_grain).min(batch as u64) as usize;
            let offset = first_grain * GRAIN_BYTES as u64;
            let n = usize::try_from(len - offset)
                .map_or(count * GRAIN_BYTES, |left| left.min(count * GRAIN_BYTES));
            input
                .read_exact_at(&mut buf[..n], offset)
                .with_context(|| format!("reading {} at offset {offset}", raw.display()))?;
            // A short last grain is compressed as a full one, padded with zeros.
            buf[n..n.next_multiple_of(GRAIN_BYTES)].fill(0);
            let nonzero: Vec<(u64, &[u8])> = buf[..n.next_multiple_of(GRAIN_BYTES)]
                .chunks(GRAIN_BYTES)
                .enumerate()
                .filter(|(_, g)| !is_zero(g))
                .map(|(i, g)| (first_grain + i as u64, g))
                .collect();
            for ((index, _), data) in nonzero.iter().zip(compress_grains(&nonzero, workers)?) {
                fingerprint.update(&data);
                let slot = usize::try_from(*index)?;
                grain_table[slot] = u32::try_from(w.sector).with_context(|| {
                    format!(
                        "{} grows past the 2 TiB a VMDK grain table can address",
                        out.display()
                    )
                })?;
                w.grain(index * GRAIN_SECTORS, &data).with_context(werr)?;
            }
            first_grain += count as u64;
            progress(offset + n as u64, len);
        }
    }
    progress(len, len);

    // Every grain table is written, empty or not, so every directory entry is valid.
    let mut directory = Vec::with_capacity(usize::try_from(tables)?);
    for table in grain_table.chunks(GTES_PER_GT as usize) {
        w.marker(GTES_PER_GT * 4 / SECTOR, MARKER_GT)
            .with_context(werr)?;
        directory.push(u32::try_from(w.sector)?);
        let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
        fingerprint.update(&bytes);
        w.put(&bytes).with_context(werr)?;
    }
    let gd_bytes: Vec<u8> = directory.iter().flat_map(|e| e.to_le_bytes()).collect();
    w.marker((gd_bytes.len() as u64).div_ceil(SECTOR), MARKER_GD)
        .with_context(werr)?;
    let gd_offset = w.sector;
    w.put(&gd_bytes).with_context(werr)?;
    w.marker(1, MARKER_FOOTER).with_context(werr)?;
    w.put(&header(gd_offset)).with_context(werr)?;
    w.marker(0, MARKER_EOS).with_context(werr)?;
    let file = w
        .out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(werr)?;

    // The content id goes in last: it fingerprints everything written after the descriptor.
    let cid = match fingerprint.sum() {
        u32::MAX => u32::MAX - 1,
        sum => sum,
    };
    let patched = vmdk_descriptor(capacity, name, cid);
    debug_assert_eq!(patched.len(), descriptor.len());
    file.write_all_at(patched.as_bytes(), SECTOR)
        .with_context(werr)?;
    Ok(())
}

/// Compresses grains on up to `workers` threads, keeping their order.
fn compress_grains(grains: &[(u64, &[u8])], workers: usize) -> Result<Vec<Vec<u8>>> {
    if grains.is_empty() {
        return Ok(Vec::new());
    }
    let per_worker = grains.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = grains
            .chunks(per_worker)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(_, data)| zlib(data))
                        .collect::<std::io::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(grains.len());
        for handle in handles {
            let part = handle
                .join()
                .map_err(|_| anyhow::anyhow!("a grain compression thread panicked"))?
                .context("compressing a grain")?;
            out.extend(part);
        }
        Ok(out)
    })
}

fn zlib(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = ZlibEncoder::new(
        Vec::with_capacity(data.len() / 2),
        Compression::new(VMDK_COMPRESSION_LEVEL),
    );
    enc.write_all(data)?;
    enc.finish()
}

/// Writes whole sectors and counts them.
struct SectorWriter<W: Write> {
    out: W,
    sector: u64,
}

impl<W: Write> SectorWriter<W> {
    /// Writes `data` padded with zeros to a sector boundary.
    fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.out.write_all(data)?;
        let padded = (data.len() as u64).div_ceil(SECTOR) * SECTOR;
        self.zeros(padded - data.len() as u64)?;
        self.sector += padded / SECTOR;
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> std::io::Result<()> {
        const ZEROS: [u8; 512] = [0; 512];
        while n > 0 {
            let k = n.min(512) as usize;
            self.out.write_all(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    fn pad_to(&mut self, sector: u64) -> std::io::Result<()> {
        if sector > self.sector {
            self.zeros((sector - self.sector) * SECTOR)?;
            self.sector = sector;
        }
        Ok(())
    }

    /// A grain marker (virtual LBA, compressed size) followed by the compressed data.
    fn grain(&mut self, lba: u64, data: &[u8]) -> std::io::Result<()> {
        let size = u32::try_from(data.len()).map_err(std::io::Error::other)?;
        let mut head = [0u8; 12];
        head[..8].copy_from_slice(&lba.to_le_bytes());
        head[8..].copy_from_slice(&size.to_le_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(data)?;
        let total = 12 + data.len() as u64;
        let padded = total.div_ceil(SECTOR) * SECTOR;
        self.zeros(padded - total)?;
        self.sector += padded / SECTOR;
        Ok(())
    }

    fn marker(&mut self, sectors: u64, kind: u32) -> std::io::Result<()> {
        self.put(&vmdk_marker(sectors, kind))
    }
}

/// A metadata marker: the number of sectors that follow, size 0, and the marker type.
fn vmdk_marker(sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[..8].copy_from_slice(&sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// The sparse extent header (little-endian, packed).
fn vmdk_header(capacity: u64, descriptor_sectors: u64, gd_offset: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[0..4].copy_from_slice(VMDK_MAGIC);
    h[4..8].copy_from_slice(&VMDK_VERSION.to_le_bytes());
    h[8..12].copy_from_slice(&VMDK_FLAGS.to_le_bytes());
    h[12..20].copy_from_slice(&capacity.to_le_bytes());
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h[28..36].copy_from_slice(&1u64.to_le_bytes());
    h[36..44].copy_from_slice(&descriptor_sectors.to_le_bytes());
    h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
    // No redundant grain directory (bytes 48..56 stay zero).
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    h[64..72].copy_from_slice(&VMDK_OVERHEAD_SECTORS.to_le_bytes());
    // uncleanShutdown = 0, then the newline-detection characters.
    h[73..77].copy_from_slice(b"\n \r\n");
    h[77..79].copy_from_slice(&COMPRESS_DEFLATE.to_le_bytes());
    h
}

/// The embedded text descriptor; `cid` is printed at a fixed width so it can be patched in.
fn vmdk_descriptor(capacity: u64, extent_name: &str, cid: u32) -> String {
    // SCSI (lsilogic) geometry: 255 heads, 63 sectors, cylinders capped at 65535.
    let cylinders = (capacity / (255 * 63)).min(65535);
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         encoding=\"UTF-8\"\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity} SPARSE \"{extent_name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.adapterType = \"lsilogic\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.virtualHWVersion = \"4\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::tests::{noise, run, run_ok, same_bytes, scratch};
    use crate::disk::{DiskLayout, EspFile, write_disk};
    use std::io::Read;
    use std::path::PathBuf;

    #[test]
    fn block_runs_widen_and_merge() {
        assert_eq!(block_runs(&[], 10), []);
        assert_eq!(block_runs(&[(5, 25)], 10), [(0, 3)]);
        assert_eq!(
            block_runs(&[(0, 10), (10, 11), (35, 40)], 10),
            [(0, 2), (3, 4)]
        );
        assert_eq!(block_runs(&[(0, 15), (18, 19)], 10), [(0, 2)]);
    }

    #[test]
    fn data_ranges_cover_all_data_and_skip_holes() {
        let dir = scratch("data-ranges");
        let path = dir.join("sparse");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let len = 64u64 << 20;
        file.set_len(len).unwrap();
        let spots = [0u64, 5 << 20, (40 << 20) + 3, len - 1];
        for &at in &spots {
            file.write_all_at(&[0xAA], at).unwrap();
        }
        let ranges = data_ranges(&file, len);
        for at in spots {
            assert!(
                ranges.iter().any(|&(a, b)| a <= at && at < b),
                "{at} not covered by {ranges:?}"
            );
        }
        let covered: u64 = ranges.iter().map(|(a, b)| b - a).sum();
        assert!(covered < len / 4, "holes not skipped: {ranges:?}");
        assert!(data_ranges(&file, 0).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A 64 MiB bootable image with some incompressible files.
    fn sample_raw(dir: &Path) -> PathBuf {
        let raw = dir.join("disk.raw");
        let files = vec![
            EspFile {
                path: "EFI/BOOT/BOOTAA64.EFI".into(),
                data: noise(200_000, 5),
            },
            EspFile {
                path: "vmlinuz".into(),
                data: noise(2_500_000, 6),
            },
            EspFile {
                path: "loader/entries/nat.conf".into(),
                data: b"title NAT\n".repeat(100),
            },
        ];
        let layout = DiskLayout {
            size_bytes: 64 << 20,
            seed: [9; 32],
            volume_label: "NATBOOT".into(),
        };
        write_disk(&layout, &files, &raw).unwrap();
        raw
    }

    fn qemu_img(args: &[&str]) -> String {
        run_ok("qemu-img", args, "qemu-utils")
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    #[test]
    fn vhd_geometry_follows_the_spec() {
        assert_eq!(vhd_geometry(2_097_152), (2080, 16, 63));
        assert_eq!(vhd_geometry(131_072), (963, 8, 17));
        assert_eq!(vhd_geometry(u64::MAX), (65535, 16, 255));
        // QEMU implements the same algorithm and stores the result in images it creates.
        let dir = scratch("vhd-geometry");
        for mib in [1u64, 64, 300, 1024, 4096, 40960] {
            let path = dir.join(format!("{mib}.vhd"));
            let size = format!("{mib}M");
            qemu_img(&[
                "create",
                "-q",
                "-f",
                "vpc",
                "-o",
                "subformat=fixed",
                s(&path),
                &size,
            ]);
            let file = File::open(&path).unwrap();
            let mut f = [0u8; 512];
            file.read_exact_at(&mut f, file.metadata().unwrap().len() - 512)
                .unwrap();
            let theirs = (u16::from_be_bytes([f[56], f[57]]), f[58], f[59]);
            // QEMU grows the size until the geometry covers it; for that size they must agree.
            let grown = u64::from_be_bytes(f[48..56].try_into().unwrap());
            assert!(grown >= mib << 20);
            assert_eq!(vhd_geometry(grown / 512), theirs, "{mib} MiB");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn vhd_footer_fields_and_checksum() {
        let f = vhd_footer(1 << 30, VHD_EPOCH_UNIX + 1000, [1; 32]);
        assert_eq!(&f[0..8], b"conectix");
        assert_eq!(&f[12..16], &[0, 1, 0, 0]);
        assert_eq!(&f[16..24], &[0xFF; 8]);
        assert_eq!(u32::from_be_bytes(f[24..28].try_into().unwrap()), 1000);
        assert_eq!(&f[28..32], VHD_CREATOR_APP);
        assert_eq!(u64::from_be_bytes(f[40..48].try_into().unwrap()), 1 << 30);
        assert_eq!(u64::from_be_bytes(f[48..56].try_into().unwrap()), 1 << 30);
        assert_eq!(u32::from_be_bytes(f[60..64].try_into().unwrap()), 2);
        assert_eq!(f[68 + 6] >> 4, 4, "UUID version");
        // The checksum: one's complement of the sum of all other bytes.
        let sum: u32 = f.iter().map(|&b| u32::from(b)).sum::<u32>()
            - f[64..68].iter().map(|&b| u32::from(b)).sum::<u32>();
        assert_eq!(u32::from_be_bytes(f[64..68].try_into().unwrap()), !sum);
        let mut changed = f;
        changed[100] = 1;
        assert_ne!(vhd_checksum(&changed), vhd_checksum(&f));
        assert_ne!(f[68..84], vhd_footer(1 << 30, 0, [2; 32])[68..84]);
        // Before 2000 clamps to 0 rather than wrapping.
        assert_eq!(&vhd_footer(512, 5, [1; 32])[24..28], &[0; 4]);
    }

    #[test]
    fn vhd_round_trips_through_qemu() {
        let dir = scratch("vhd-qemu");
        let raw = sample_raw(&dir);
        let vhd = dir.join("disk.vhd");
        write_vhd_fixed(&raw, &vhd, 1_780_000_000, [3; 32]).unwrap();
        let len = std::fs::metadata(&raw).unwrap().len();
        assert_eq!(std::fs::metadata(&vhd).unwrap().len(), len + 512);
        use std::os::unix::fs::MetadataExt;
        assert!(
            std::fs::metadata(&vhd).unwrap().blocks() * 512 < 16 << 20,
            "not sparse"
        );

        let info = qemu_img(&["info", "--output=json", "-f", "vpc", s(&vhd)]);
        assert!(info.contains("\"format\": \"vpc\""), "{info}");
        assert!(info.contains(&format!("\"virtual-size\": {len}")), "{info}");
        // QEMU's vpc driver has no consistency check; it must say so and nothing worse.
        let check = run("qemu-img", &["check", "-f", "vpc", s(&vhd)], "qemu-utils");
        let said = String::from_utf8_lossy(&check.stderr);
        assert!(
            check.status.success() || said.contains("does not support checks"),
            "{said}"
        );
        let same = qemu_img(&["compare", "-f", "vpc", "-F", "raw", s(&vhd), s(&raw)]);
        assert!(same.contains("identical"), "{same}");
        let back = dir.join("back.raw");
        qemu_img(&["convert", "-f", "vpc", "-O", "raw", s(&vhd), s(&back)]);
        assert!(same_bytes(&raw, &back));

        let odd = dir.join("odd.raw");
        std::fs::write(&odd, [1u8; 700]).unwrap();
        let err = format!("{:#}", write_vhd_fixed(&odd, &vhd, 0, [0; 32]).unwrap_err());
        assert!(err.contains("700 bytes"), "{err}");
        assert!(!vhd.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn vmdk_header_and_marker_layout() {
        let h = vmdk_header(2_097_152, 1, GD_AT_END);
        assert_eq!(&h[0..4], b"KDMV");
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 3);
        assert_eq!(
            u32::from_le_bytes(h[8..12].try_into().unwrap()),
            0x0003_0001
        );
        assert_eq!(u64::from_le_bytes(h[12..20].try_into().unwrap()), 2_097_152);
        assert_eq!(u64::from_le_bytes(h[20..28].try_into().unwrap()), 128);
        assert_eq!(u64::from_le_bytes(h[28..36].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(h[44..48].try_into().unwrap()), 512);
        assert_eq!(&h[56..64], &[0xFF; 8]);
        assert_eq!(u64::from_le_bytes(h[64..72].try_into().unwrap()), 128);
        assert_eq!(&h[72..79], b"\0\n \r\n\x01\0");
        assert!(h[79..].iter().all(|&b| b == 0));
        let m = vmdk_marker(4, MARKER_GT);
        assert_eq!(&m[..16], &[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert!(m[16..].iter().all(|&b| b == 0));
        let d = vmdk_descriptor(2_097_152, "disk.vmdk", 0xabc);
        assert!(d.contains("CID=00000abc\n"), "{d}");
        assert!(d.contains("RW 2097152 SPARSE \"disk.vmdk\"\n"), "{d}");
        assert!(d.contains("createType=\"streamOptimized\""), "{d}");
        assert_eq!(
            d.len(),
            vmdk_descriptor(2_097_152, "disk.vmdk", u32::MAX - 1).len()
        );
    }

    #[test]
    fn grains_compress_in_order_on_many_threads() {
        let a = noise(GRAIN_BYTES, 1);
        let b = vec![7u8; GRAIN_BYTES];
        let grains: Vec<(u64, &[u8])> = (0..7)
            .map(|i| (i, if i % 2 == 0 { &a[..] } else { &b[..] }))
            .collect();
        let out = compress_grains(&grains, 3).unwrap();
        assert_eq!(out.len(), 7);
        for (i, data) in out.iter().enumerate() {
            let mut plain = Vec::new();
            flate2::read::ZlibDecoder::new(&data[..])
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(&plain[..], grains[i].1, "grain {i}");
        }
        assert!(out[1].len() < 1000);
    }

    #[test]
    fn vmdk_round_trips_through_qemu_and_is_deterministic() {
        let dir = scratch("vmdk-qemu");
        let raw = sample_raw(&dir);
        let len = std::fs::metadata(&raw).unwrap().len();
        let vmdk = dir.join("disk.vmdk");
        let mut calls = Vec::new();
        write_vmdk_stream(&raw, &vmdk, &mut |done, total| calls.push((done, total))).unwrap();
        assert_eq!(calls.first(), Some(&(0, len)));
        assert_eq!(calls.last(), Some(&(len, len)));
        assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0));
        // Zero grains are left out: far smaller than the disk.
        assert!(std::fs::metadata(&vmdk).unwrap().len() < 4 << 20);

        let check = qemu_img(&["check", "-f", "vmdk", s(&vmdk)]);
        assert!(check.contains("No errors were found"), "{check}");
        let info = qemu_img(&["info", "-f", "vmdk", s(&vmdk)]);
        assert!(info.contains("create type: streamOptimized"), "{info}");
        assert!(info.contains(&format!("({len} bytes)")), "{info}");
        let back = dir.join("back.raw");
        qemu_img(&["convert", "-f", "vmdk", "-O", "raw", s(&vmdk), s(&back)]);
        assert!(same_bytes(&raw, &back));

        let again_dir = dir.join("again");
        std::fs::create_dir(&again_dir).unwrap();
        let again = again_dir.join("disk.vmdk");
        write_vmdk_stream(&raw, &again, &mut |_, _| {}).unwrap();
        assert!(same_bytes(&vmdk, &again), "two writes differ");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn vmdk_handles_zero_disks_and_a_short_last_grain() {
        let dir = scratch("vmdk-edges");
        let zeros = dir.join("zeros.raw");
        File::create(&zeros).unwrap().set_len(8 << 20).unwrap();
        let out = dir.join("zeros.vmdk");
        write_vmdk_stream(&zeros, &out, &mut |_, _| {}).unwrap();
        qemu_img(&["check", "-f", "vmdk", s(&out)]);
        let back = dir.join("zeros-back.raw");
        qemu_img(&["convert", "-f", "vmdk", "-O", "raw", s(&out), s(&back)]);
        assert!(same_bytes(&zeros, &back));

        // 1 MiB plus one sector: the last grain is 512 bytes of data.
        let short = dir.join("short.raw");
        std::fs::write(&short, noise((1 << 20) + 512, 11)).unwrap();
        let out = dir.join("short.vmdk");
        write_vmdk_stream(&short, &out, &mut |_, _| {}).unwrap();
        qemu_img(&["check", "-f", "vmdk", s(&out)]);
        let back = dir.join("short-back.raw");
        qemu_img(&["convert", "-f", "vmdk", "-O", "raw", s(&out), s(&back)]);
        assert!(same_bytes(&short, &back));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

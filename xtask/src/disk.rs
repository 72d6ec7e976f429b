//! Writes a bootable UEFI disk image in pure Rust: a GPT with protective MBR and one EFI System
//! Partition formatted FAT32 that holds the given files. No root, loop devices or external tools.
//!
//! The image is sparse (only non-zero structures and data are written) and deterministic: every
//! GUID and the FAT volume id come from `DiskLayout::seed`, files are added in path order and all
//! FAT timestamps are the fixed DOS epoch.

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::rc::Rc;

/// Logical sector size of the image; EC2 and QEMU both use 512-byte sectors.
pub const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;
/// Partitions start and end on 1 MiB boundaries.
const ALIGN_LBA: u64 = MIB / SECTOR;
/// Sectors taken by one GPT copy's partition entry array (128 entries of 128 bytes).
const GPT_ENTRY_SECTORS: u64 = 128 * 128 / SECTOR;
const ESP_NAME: &str = "EFI System Partition";
/// The EFI System Partition type, C12A7328-F81F-11D2-BA4B-00A0C93EC93B.
const ESP_TYPE: Guid = Guid([
    0xC1, 0x2A, 0x73, 0x28, 0xF8, 0x1F, 0x11, 0xD2, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B,
]);
/// FAT32 is defined by its cluster count, not by a flag: fewer clusters make it FAT16.
const FAT32_MIN_CLUSTERS: u64 = 65525;
const FAT32_MAX_CLUSTERS: u64 = 0x0FFF_FFF5;

/// One file to place on the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspFile {
    /// '/'-separated path inside the ESP, e.g. "EFI/BOOT/BOOTAA64.EFI"; parents are created.
    pub path: String,
    pub data: Vec<u8>,
}

/// What the disk looks like, apart from its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLayout {
    /// Whole image size; a multiple of 1 MiB.
    pub size_bytes: u64,
    /// Hash of all build inputs; every identifier on the disk is derived from it.
    pub seed: [u8; 32],
    /// FAT volume label, 1 to 11 characters of A-Z, 0-9, '_' and '-'.
    pub volume_label: String,
}

/// Identifiers and placement of what `write_disk` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskReport {
    pub size_bytes: u64,
    /// Lower-case canonical form, as in /dev/disk/by-partuuid.
    pub disk_guid: String,
    pub esp_guid: String,
    pub volume_id: u32,
    pub esp_first_lba: u64,
    pub esp_last_lba: u64,
}

/// Writes the disk image to `out` (replacing it) and reports its identifiers.
pub fn write_disk(layout: &DiskLayout, files: &[EspFile], out: &Path) -> Result<DiskReport> {
    let label = fat_label(&layout.volume_label)?;
    let files = sorted_files(files)?;
    let plan = plan_disk(layout.size_bytes)?;
    let esp_bytes = plan.esp_bytes();
    let cluster_size = fat32_cluster_size(esp_bytes)?;
    let disk_guid = Guid::derive(&layout.seed, "disk-guid");
    let esp_guid = Guid::derive(&layout.seed, "esp-guid");
    let volume_id = derive_volume_id(&layout.seed);

    // A half-written image must not be mistaken for a good one.
    let written = (|| -> Result<()> {
        let mut image = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(out)
            .with_context(|| format!("creating disk image {}", out.display()))?;
        image
            .set_len(layout.size_bytes)
            .with_context(|| format!("sizing {} to {} bytes", out.display(), layout.size_bytes))?;

        write_gpt(&mut image, &plan, disk_guid, esp_guid)
            .with_context(|| format!("writing the partition table of {}", out.display()))?;

        let window = PartitionWindow::new(&mut image, plan.esp_first_lba * SECTOR, esp_bytes);
        let cache = ZeroBackedCache::new(window).context("opening the ESP window")?;
        let mut disk = SharedDisk::new(cache);
        let options = fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .bytes_per_cluster(cluster_size)
            .volume_id(volume_id)
            .volume_label(label);
        fatfs::format_volume(disk.clone(), options).with_context(|| {
            format!(
                "formatting the {esp_bytes}-byte ESP as FAT32 with {cluster_size}-byte clusters"
            )
        })?;
        fill_esp(&disk, &files, cluster_size, layout.size_bytes)?;
        disk.flush().context("writing the ESP into the image")?;
        drop(disk);
        image
            .flush()
            .with_context(|| format!("flushing {}", out.display()))?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(out);
    }
    written?;

    Ok(DiskReport {
        size_bytes: layout.size_bytes,
        disk_guid: disk_guid.to_string(),
        esp_guid: esp_guid.to_string(),
        volume_id,
        esp_first_lba: plan.esp_first_lba,
        esp_last_lba: plan.esp_last_lba,
    })
}

/// Where things go on a disk of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DiskPlan {
    total_lba: u64,
    last_usable_lba: u64,
    esp_first_lba: u64,
    esp_last_lba: u64,
}

impl DiskPlan {
    fn esp_bytes(&self) -> u64 {
        (self.esp_last_lba - self.esp_first_lba + 1) * SECTOR
    }
}

fn plan_disk(size_bytes: u64) -> Result<DiskPlan> {
    ensure!(
        size_bytes > 0 && size_bytes.is_multiple_of(MIB),
        "disk size {size_bytes} bytes is not a positive multiple of 1 MiB"
    );
    let total_lba = size_bytes / SECTOR;
    // Backup entries and backup header sit at the very end.
    let last_usable_lba = total_lba
        .checked_sub(GPT_ENTRY_SECTORS + 2)
        .with_context(|| format!("disk size {size_bytes} bytes cannot hold two GPT copies"))?;
    let esp_first_lba = ALIGN_LBA;
    let esp_end = (last_usable_lba + 1) / ALIGN_LBA * ALIGN_LBA;
    ensure!(
        esp_end > esp_first_lba,
        "disk size {size_bytes} bytes leaves no room for an aligned ESP"
    );
    Ok(DiskPlan {
        total_lba,
        last_usable_lba,
        esp_first_lba,
        esp_last_lba: esp_end - 1,
    })
}

/// Picks a FAT32 cluster size for a partition: 4 KiB (the page size, and what common tools use
/// up to 8 GiB), smaller when that would leave too few clusters for FAT32, larger for huge ones.
fn fat32_cluster_size(esp_bytes: u64) -> Result<u32> {
    // Conservative: 32 reserved sectors, one sector of rounding per FAT, 4 bytes per FAT entry in
    // each of the two FATs. fatfs computes the exact layout and errors if this was optimistic.
    let usable = esp_bytes.saturating_sub(34 * SECTOR + 16);
    let clusters = |size: u64| usable / (size + 8);
    if esp_bytes / SECTOR > u64::from(u32::MAX) {
        bail!("ESP of {esp_bytes} bytes has more sectors than FAT32 can count (2 TiB at most)");
    }
    if clusters(4096) > FAT32_MAX_CLUSTERS {
        for size in [8192u32, 16384, 32768] {
            if clusters(u64::from(size)) <= FAT32_MAX_CLUSTERS {
                return Ok(size);
            }
        }
        bail!("ESP of {esp_bytes} bytes is too large for FAT32 even with 32 KiB clusters");
    }
    for size in [4096u32, 2048, 1024, 512] {
        if clusters(u64::from(size)) >= FAT32_MIN_CLUSTERS + 16 {
            return Ok(size);
        }
    }
    bail!(
        "ESP of {esp_bytes} bytes is too small for FAT32: it needs at least {FAT32_MIN_CLUSTERS} \
         clusters and would have about {} with 512-byte clusters; use a disk of at least 40 MiB",
        clusters(512)
    )
}

fn write_gpt(image: &mut File, plan: &DiskPlan, disk_guid: Guid, esp_guid: Guid) -> Result<()> {
    let mut gpt = gptman::GPT::new_from(image, SECTOR, disk_guid.to_gpt_bytes())
        .context("creating the GPT")?;
    gpt.align = ALIGN_LBA;
    // Our plan and gptman must agree on where the usable area ends.
    ensure!(
        gpt.header.last_usable_lba == plan.last_usable_lba
            && gpt.header.backup_lba == plan.total_lba - 1,
        "GPT layout mismatch: gptman puts the last usable LBA at {} and the backup header at {}, \
         expected {} and {}",
        gpt.header.last_usable_lba,
        gpt.header.backup_lba,
        plan.last_usable_lba,
        plan.total_lba - 1
    );
    gpt[1] = gptman::GPTPartitionEntry {
        partition_type_guid: ESP_TYPE.to_gpt_bytes(),
        unique_partition_guid: esp_guid.to_gpt_bytes(),
        starting_lba: plan.esp_first_lba,
        ending_lba: plan.esp_last_lba,
        attribute_bits: 0,
        partition_name: ESP_NAME.into(),
    };
    gpt.write_into(image).context("writing GPT headers")?;
    gptman::GPT::write_protective_mbr_into(image, SECTOR).context("writing the protective MBR")?;
    Ok(())
}

/// Checks the space and writes all files into the freshly formatted ESP.
fn fill_esp<S: Read + Write + Seek>(
    disk: &SharedDisk<S>,
    files: &[&EspFile],
    cluster_size: u32,
    disk_size: u64,
) -> Result<()> {
    let fs = fatfs::FileSystem::new(
        disk.clone(),
        fatfs::FsOptions::new().time_provider(&FIXED_TIME),
    )
    .context("mounting the new ESP")?;
    ensure!(
        fs.fat_type() == fatfs::FatType::Fat32,
        "the ESP was formatted as {:?}, not FAT32",
        fs.fat_type()
    );

    let dirs = parent_dirs(files);
    let cluster = u64::from(cluster_size);
    let needed: u64 = files
        .iter()
        .map(|f| (f.data.len() as u64).div_ceil(cluster) * cluster)
        .sum::<u64>()
        + dirs.len() as u64 * cluster;
    let stats = fs.stats().context("reading ESP free space")?;
    let free = u64::from(stats.free_clusters()) * cluster;
    ensure!(
        needed <= free,
        "the ESP files need {needed} bytes ({} files, {} directories, {cluster_size}-byte \
         clusters) but a {disk_size}-byte disk leaves only {free} bytes free on the ESP",
        files.len(),
        dirs.len()
    );

    let root = fs.root_dir();
    let mut made = BTreeSet::new();
    for &file in files {
        for dir in ancestors(&file.path) {
            if made.insert(dir) {
                disk.last_dot.set(None);
                root.create_dir(dir)
                    .with_context(|| format!("creating directory {dir} on the ESP"))?;
                let dot = disk.last_dot.take().with_context(|| {
                    format!("fatfs wrote no '.' entry when creating directory {dir}")
                })?;
                fix_dot_entries(&mut *disk.disk.borrow_mut(), dot, !dir.contains('/'))
                    .with_context(|| format!("repairing directory {dir} on the ESP"))?;
            }
        }
        let mut handle = root
            .create_file(&file.path)
            .with_context(|| format!("creating {} on the ESP", file.path))?;
        handle
            .write_all(&file.data)
            .and_then(|()| handle.flush())
            .with_context(|| {
                format!(
                    "writing {} ({} bytes) to the ESP",
                    file.path,
                    file.data.len()
                )
            })?;
    }
    drop(root);
    fs.unmount().context("unmounting the ESP")?;
    Ok(())
}

const DOT_NAME: &[u8; 11] = b".          ";
const DOTDOT_NAME: &[u8; 11] = b"..         ";
const DIR_ENTRY: usize = 32;
const LFN_ATTR: u8 = 0x0F;

/// fatfs 0.3.6 (with `alloc`) puts a long-name entry before "." and "..", which the FAT spec and
/// fsck.vfat reject: "." must be the first entry and ".." the second. `dot` is where fatfs wrote
/// the name of the "." entry; the new directory's first four entries are rewritten as ".", ".."
/// and two free slots. A directory right under the root must name cluster 0 in "..".
fn fix_dot_entries<S: Read + Write + Seek>(
    disk: &mut S,
    dot: u64,
    parent_is_root: bool,
) -> Result<()> {
    let start = dot
        .checked_sub(DIR_ENTRY as u64)
        .context("'.' entry at the start of the partition")?;
    let saved = disk.stream_position()?;
    let mut entries = [0u8; 4 * DIR_ENTRY];
    disk.seek(SeekFrom::Start(start))?;
    disk.read_exact(&mut entries)?;
    let (lfn_dot, dot_entry) = (&entries[..32], &entries[32..64]);
    let (lfn_dotdot, dotdot_entry) = (&entries[64..96], &entries[96..]);
    ensure!(
        lfn_dot[11] == LFN_ATTR
            && dot_entry[..11] == DOT_NAME[..]
            && lfn_dotdot[11] == LFN_ATTR
            && dotdot_entry[..11] == DOTDOT_NAME[..],
        "unexpected entries at ESP offset {start}: not the long-name, '.', long-name, '..' \
         layout fatfs 0.3.6 writes"
    );
    let mut fixed = [0u8; 4 * DIR_ENTRY];
    fixed[..32].copy_from_slice(dot_entry);
    fixed[32..64].copy_from_slice(dotdot_entry);
    if parent_is_root {
        // First cluster high and low halves.
        fixed[32 + 20..32 + 22].fill(0);
        fixed[32 + 26..32 + 28].fill(0);
    }
    disk.seek(SeekFrom::Start(start))?;
    disk.write_all(&fixed)?;
    disk.seek(SeekFrom::Start(saved))?;
    Ok(())
}

/// The ESP stream, shared between fatfs (which owns one clone) and `fill_esp` (which patches
/// directories between fatfs calls). It notes where the name of a "." entry was last written.
struct SharedDisk<S> {
    disk: Rc<RefCell<S>>,
    last_dot: Rc<Cell<Option<u64>>>,
}

impl<S> SharedDisk<S> {
    fn new(disk: S) -> Self {
        SharedDisk {
            disk: Rc::new(RefCell::new(disk)),
            last_dot: Rc::new(Cell::new(None)),
        }
    }
}

impl<S> Clone for SharedDisk<S> {
    fn clone(&self) -> Self {
        SharedDisk {
            disk: Rc::clone(&self.disk),
            last_dot: Rc::clone(&self.last_dot),
        }
    }
}

impl<S: Read> Read for SharedDisk<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.disk.borrow_mut().read(buf)
    }
}

impl<S: Write + Seek> Write for SharedDisk<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut disk = self.disk.borrow_mut();
        if buf.starts_with(DOT_NAME) {
            self.last_dot.set(Some(disk.stream_position()?));
        }
        disk.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.disk.borrow_mut().flush()
    }
}

impl<S: Seek> Seek for SharedDisk<S> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.disk.borrow_mut().seek(to)
    }
}

/// Directory paths that hold the files, each once.
fn parent_dirs<'a>(files: &[&'a EspFile]) -> BTreeSet<&'a str> {
    files.iter().flat_map(|f| ancestors(&f.path)).collect()
}

/// "a/b/c" -> "a", "a/b": every directory above a path, outermost first.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Checks every path and returns the files in the order they are written.
fn sorted_files(files: &[EspFile]) -> Result<Vec<&EspFile>> {
    let mut seen = HashSet::new();
    for file in files {
        let path = &file.path;
        ensure!(
            !path.is_empty()
                && path
                    .split('/')
                    .all(|c| !c.is_empty() && c != "." && c != ".." && !c.ends_with([' ', '.'])),
            "ESP path {path:?} is not a relative '/'-separated path of non-empty names"
        );
        ensure!(
            !path
                .chars()
                .any(|c| c.is_control() || "\\:*?\"<>|".contains(c)),
            "ESP path {path:?} has a character FAT does not allow"
        );
        // FAT names are case-insensitive.
        ensure!(
            seen.insert(path.to_uppercase()),
            "ESP path {path:?} is given twice (FAT ignores case)"
        );
    }
    for file in files {
        for dir in ancestors(&file.path) {
            ensure!(
                !seen.contains(&dir.to_uppercase()),
                "ESP path {dir:?} is both a file and the directory of {:?}",
                file.path
            );
        }
    }
    let mut sorted: Vec<&EspFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(sorted)
}

fn fat_label(label: &str) -> Result<[u8; 11]> {
    ensure!(
        (1..=11).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-'),
        "FAT volume label {label:?} must be 1 to 11 characters of A-Z, 0-9, '_' and '-'"
    );
    let mut out = [b' '; 11];
    out[..label.len()].copy_from_slice(label.as_bytes());
    Ok(out)
}

fn derive_volume_id(seed: &[u8; 32]) -> u32 {
    let hash = Sha256::new()
        .chain_update(seed)
        .chain_update(b"fat-volume-id")
        .finalize();
    u32::from_le_bytes([hash[0], hash[1], hash[2], hash[3]])
}

/// A GUID in canonical (RFC 4122, big-endian) byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Guid(pub(crate) [u8; 16]);

impl Guid {
    /// A version-4-shaped GUID from sha256(seed || purpose): stable for the same inputs.
    pub(crate) fn derive(seed: &[u8; 32], purpose: &str) -> Guid {
        let hash = Sha256::new()
            .chain_update(seed)
            .chain_update(purpose.as_bytes())
            .finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hash[..16]);
        bytes[6] = (bytes[6] & 0x0F) | 0x40;
        bytes[8] = (bytes[8] & 0x3F) | 0x80;
        Guid(bytes)
    }

    /// GPT stores the first three fields little-endian.
    fn to_gpt_bytes(self) -> [u8; 16] {
        let b = self.0;
        let mut out = b;
        out[..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
        out[4..6].copy_from_slice(&[b[5], b[4]]);
        out[6..8].copy_from_slice(&[b[7], b[6]]);
        out
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// FAT timestamps fixed at the DOS epoch, so images do not depend on the build time. (Without
/// chrono fatfs would write month 0 and day 0, which is not a valid date.)
#[derive(Debug)]
struct FixedTime;

static FIXED_TIME: FixedTime = FixedTime;

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

/// True when every byte is zero; works on 64-byte chunks so the compiler vectorises it.
pub(crate) fn is_zero(buf: &[u8]) -> bool {
    let (chunks, rest) = buf.as_chunks::<64>();
    rest.iter().all(|&b| b == 0)
        && chunks
            .iter()
            .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Reads files back from the EFI System Partition of a disk image `write_disk` wrote (the
/// files the firmware and boot loader will load), each whole, in the order asked.
pub fn read_esp_files(image: &Path, paths: &[&str]) -> Result<Vec<Vec<u8>>> {
    let mut file = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let gpt = gptman::GPT::read_from(&mut file, SECTOR)
        .with_context(|| format!("reading the GPT of {}", image.display()))?;
    let esp = gpt
        .iter()
        .map(|(_, p)| p)
        .find(|p| p.partition_type_guid == ESP_TYPE.to_gpt_bytes())
        .with_context(|| format!("{} has no EFI System Partition", image.display()))?;
    let start = esp.starting_lba * SECTOR;
    let len = (esp.ending_lba + 1 - esp.starting_lba) * SECTOR;
    // fatfs wants a writable stream; nothing is written when nothing is changed, and the file
    // is open read-only, so a write would fail rather than alter the image.
    let fs = fatfs::FileSystem::new(
        PartitionWindow::new(ReadOnly(file), start, len),
        fatfs::FsOptions::new(),
    )
    .with_context(|| format!("opening the ESP of {}", image.display()))?;
    let root = fs.root_dir();
    paths
        .iter()
        .map(|path| {
            let mut data = Vec::new();
            root.open_file(path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .with_context(|| format!("reading {path} from the ESP of {}", image.display()))?;
            Ok(data)
        })
        .collect()
}

/// A file opened for reading, which refuses writes.
struct ReadOnly(File);

impl Read for ReadOnly {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for ReadOnly {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::other("the disk image is opened read-only"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for ReadOnly {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.0.seek(to)
    }
}

/// A bounded view of `len` bytes of `inner` starting at `start`, seen as a stream from 0.
struct PartitionWindow<F> {
    inner: F,
    start: u64,
    len: u64,
    pos: u64,
}

impl<F: Seek> PartitionWindow<F> {
    fn new(inner: F, start: u64, len: u64) -> Self {
        PartitionWindow {
            inner,
            start,
            len,
            pos: 0,
        }
    }

    /// How many of `want` bytes fit before the end; positions the inner stream.
    fn prepare(&mut self, want: usize) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = usize::try_from(left).map_or(want, |left| want.min(left));
        if n > 0 {
            self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        }
        Ok(n)
    }
}

impl<F: Read + Seek> Read for PartitionWindow<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.prepare(buf.len())?;
        if n == 0 {
            return Ok(0);
        }
        let got = self.inner.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<F: Write + Seek> Write for PartitionWindow<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.prepare(buf.len())?;
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::other(format!(
                "write at offset {} is past the end of the {}-byte partition",
                self.pos, self.len
            )));
        }
        let put = self.inner.write(&buf[..n])?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<F> Seek for PartitionWindow<F> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = seek_target(self.pos, self.len, to)?;
        Ok(self.pos)
    }
}

fn seek_target(pos: u64, len: u64, to: SeekFrom) -> io::Result<u64> {
    let target = match to {
        SeekFrom::Start(p) => i128::from(p),
        SeekFrom::End(d) => i128::from(len) + i128::from(d),
        SeekFrom::Current(d) => i128::from(pos) + i128::from(d),
    };
    u64::try_from(target).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("seek to {target} is outside 0..2^64"),
        )
    })
}

const CACHE_BLOCK: usize = 64 * 1024;
/// Dirty blocks kept before writing back: 64 MiB.
const CACHE_MAX_BLOCKS: usize = 1024;

/// Write-back block cache over a stream that reads as zeros wherever it was never written (a
/// freshly sized sparse file). fatfs does many small I/Os, which this turns into few
/// block-sized writes; and blocks that are still all zero and were never written are skipped,
/// so formatting (which zeroes both FATs) keeps the image sparse. fscommon::BufStream cannot
/// skip zeros, hence this small adapter.
struct ZeroBackedCache<S> {
    inner: S,
    len: u64,
    pos: u64,
    blocks: BTreeMap<u64, Box<[u8]>>,
    /// Blocks that may hold non-zero bytes in `inner`.
    on_disk: HashSet<u64>,
}

impl<S: Read + Write + Seek> ZeroBackedCache<S> {
    fn new(mut inner: S) -> io::Result<Self> {
        let len = inner.seek(SeekFrom::End(0))?;
        Ok(ZeroBackedCache {
            inner,
            len,
            pos: 0,
            blocks: BTreeMap::new(),
            on_disk: HashSet::new(),
        })
    }

    fn block_len(&self, index: u64) -> usize {
        let start = index * CACHE_BLOCK as u64;
        usize::try_from(self.len - start).map_or(CACHE_BLOCK, |left| left.min(CACHE_BLOCK))
    }

    /// The cached block, loading it (or a zero block) first.
    fn block(&mut self, index: u64) -> io::Result<&mut [u8]> {
        if !self.blocks.contains_key(&index) {
            let mut data = vec![0u8; CACHE_BLOCK].into_boxed_slice();
            if self.on_disk.contains(&index) {
                let n = self.block_len(index);
                self.inner
                    .seek(SeekFrom::Start(index * CACHE_BLOCK as u64))?;
                self.inner.read_exact(&mut data[..n])?;
            }
            self.blocks.insert(index, data);
        }
        self.blocks
            .get_mut(&index)
            .map(|b| &mut b[..])
            .ok_or_else(|| io::Error::other("cache block vanished"))
    }

    /// Bytes that can be moved at `pos` without crossing a block or the end.
    fn span(&self, want: usize) -> (u64, usize, usize) {
        let index = self.pos / CACHE_BLOCK as u64;
        let offset = (self.pos % CACHE_BLOCK as u64) as usize;
        let left = self.len.saturating_sub(self.pos);
        let n = want
            .min(CACHE_BLOCK - offset)
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        (index, offset, n)
    }

    fn write_back(&mut self) -> io::Result<()> {
        for (index, data) in std::mem::take(&mut self.blocks) {
            let data = &data[..self.block_len(index)];
            if !self.on_disk.contains(&index) && is_zero(data) {
                continue;
            }
            self.inner
                .seek(SeekFrom::Start(index * CACHE_BLOCK as u64))?;
            self.inner.write_all(data)?;
            self.on_disk.insert(index);
        }
        Ok(())
    }
}

impl<S: Read + Write + Seek> Read for ZeroBackedCache<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (index, offset, n) = self.span(buf.len());
        if n == 0 {
            return Ok(0);
        }
        if let Some(block) = self.blocks.get(&index) {
            buf[..n].copy_from_slice(&block[offset..offset + n]);
        } else if self.on_disk.contains(&index) {
            let block = self.block(index)?;
            buf[..n].copy_from_slice(&block[offset..offset + n]);
        } else {
            buf[..n].fill(0);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl<S: Read + Write + Seek> Write for ZeroBackedCache<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (index, offset, n) = self.span(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::other(format!(
                "write at offset {} is past the end of the {}-byte partition",
                self.pos, self.len
            )));
        }
        self.block(index)?[offset..offset + n].copy_from_slice(&buf[..n]);
        self.pos += n as u64;
        if self.blocks.len() > CACHE_MAX_BLOCKS {
            self.write_back()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_back()?;
        self.inner.flush()
    }
}

impl<S> Seek for ZeroBackedCache<S> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = seek_target(self.pos, self.len, to)?;
        Ok(self.pos)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Cursor;
    use std::path::PathBuf;
    use std::process::{Command, Output};

    /// A fresh directory for one test, unique per process and test name.
    pub(crate) fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Runs a tool; a missing tool fails the test with the command that installs it.
    pub(crate) fn run(tool: &str, args: &[&str], package: &str) -> Output {
        match Command::new(tool).args(args).output() {
            Ok(out) => out,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                panic!("{tool} is missing: install it with `apt-get install -y {package}`")
            }
            Err(e) => panic!("running {tool}: {e}"),
        }
    }

    pub(crate) fn run_ok(tool: &str, args: &[&str], package: &str) -> String {
        let out = run(tool, args, package);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{tool} {args:?} failed: {text}");
        text
    }

    /// Incompressible but reproducible bytes.
    pub(crate) fn noise(len: usize, mut state: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.extend_from_slice(&state.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn sample_files() -> Vec<EspFile> {
        vec![
            EspFile {
                path: "loader/entries/nat.conf".into(),
                data: b"title NAT\nlinux /vmlinuz\ninitrd /initrd.img\n".to_vec(),
            },
            EspFile {
                path: "EFI/BOOT/BOOTAA64.EFI".into(),
                data: noise(180_000, 1),
            },
            EspFile {
                path: "vmlinuz".into(),
                data: noise(3_000_001, 2),
            },
            EspFile {
                path: "loader/loader.conf".into(),
                data: b"default nat.conf\ntimeout 0\n".to_vec(),
            },
            EspFile {
                path: "empty".into(),
                data: Vec::new(),
            },
            EspFile {
                path: "EFI/systemd/Long Name With Spaces.efi".into(),
                data: noise(4096, 3),
            },
        ]
    }

    fn layout(size_mib: u64, seed: u8) -> DiskLayout {
        DiskLayout {
            size_bytes: size_mib * MIB,
            seed: [seed; 32],
            volume_label: "NATBOOT".into(),
        }
    }

    /// Copies the ESP out of an image into its own (sparse) file.
    fn extract_esp(image: &Path, report: &DiskReport, dest: &Path) {
        let mut src = File::open(image).unwrap();
        let mut dst = File::create(dest).unwrap();
        let start = report.esp_first_lba * SECTOR;
        let len = (report.esp_last_lba + 1) * SECTOR - start;
        dst.set_len(len).unwrap();
        src.seek(SeekFrom::Start(start)).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            src.read_exact(&mut buf[..n]).unwrap();
            if !is_zero(&buf[..n]) {
                dst.seek(SeekFrom::Start(done)).unwrap();
                dst.write_all(&buf[..n]).unwrap();
            }
            done += n as u64;
        }
    }

    pub(crate) fn same_bytes(a: &Path, b: &Path) -> bool {
        let (mut a, mut b) = (File::open(a).unwrap(), File::open(b).unwrap());
        if a.metadata().unwrap().len() != b.metadata().unwrap().len() {
            return false;
        }
        let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        loop {
            let n = a.read(&mut x).unwrap();
            if n == 0 {
                return true;
            }
            b.read_exact(&mut y[..n]).unwrap();
            if x[..n] != y[..n] {
                return false;
            }
        }
    }

    /// Reads every file back with fatfs and checks the volume's identity.
    fn check_with_fatfs(image: &Path, report: &DiskReport, files: &[EspFile], cluster: u32) {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(image)
            .unwrap();
        let start = report.esp_first_lba * SECTOR;
        let len = (report.esp_last_lba + 1) * SECTOR - start;
        let fs = fatfs::FileSystem::new(
            PartitionWindow::new(file, start, len),
            fatfs::FsOptions::new(),
        )
        .unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
        assert_eq!(fs.volume_id(), report.volume_id);
        assert_eq!(fs.volume_label(), "NATBOOT");
        assert_eq!(fs.cluster_size(), cluster);
        assert!(fs.stats().unwrap().total_clusters() as u64 >= FAT32_MIN_CLUSTERS);
        for f in files {
            let mut got = Vec::new();
            fs.root_dir()
                .open_file(&f.path)
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            assert!(got == f.data, "{} reads back different bytes", f.path);
        }
        let entry = fs
            .root_dir()
            .iter()
            .map(|e| e.unwrap())
            .find(|e| e.file_name() == "vmlinuz")
            .unwrap();
        assert_eq!(entry.modified().date.year, 1980);
        assert_eq!(entry.modified().date.month, 1);
        drop(fs);
        // The read-only reader finds the same bytes through the GPT.
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let got = read_esp_files(image, &paths).unwrap();
        for (f, data) in files.iter().zip(&got) {
            assert!(*data == f.data, "{} reads back different bytes", f.path);
        }
        assert!(read_esp_files(image, &["no/such/file"]).is_err());
    }

    #[test]
    fn guid_text_and_gpt_byte_order() {
        assert_eq!(ESP_TYPE.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!(
            ESP_TYPE.to_gpt_bytes(),
            [
                0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
                0xC9, 0x3B
            ]
        );
    }

    #[test]
    fn derived_guids_are_version_4_and_follow_the_seed() {
        let a = Guid::derive(&[1; 32], "disk-guid");
        assert_eq!(a, Guid::derive(&[1; 32], "disk-guid"));
        assert_ne!(a, Guid::derive(&[2; 32], "disk-guid"));
        assert_ne!(a, Guid::derive(&[1; 32], "esp-guid"));
        let text = a.to_string();
        assert_eq!(&text[14..15], "4", "{text}");
        assert!("89ab".contains(&text[19..20]), "{text}");
        assert_ne!(derive_volume_id(&[1; 32]), derive_volume_id(&[2; 32]));
    }

    #[test]
    fn plan_places_the_esp_on_mib_boundaries() {
        let plan = plan_disk(1 << 30).unwrap();
        assert_eq!(plan.total_lba, 2_097_152);
        assert_eq!(plan.last_usable_lba, 2_097_152 - 34);
        assert_eq!(plan.esp_first_lba, 2048);
        assert_eq!(plan.esp_last_lba, 2_095_103);
        assert_eq!((plan.esp_last_lba + 1) % ALIGN_LBA, 0);
        assert!(plan_disk(MIB + 512).is_err());
        assert!(plan_disk(0).is_err());
        assert!(plan_disk(MIB).is_err());
    }

    #[test]
    fn cluster_size_keeps_fat32_cluster_counts() {
        assert_eq!(fat32_cluster_size(1022 * MIB).unwrap(), 4096);
        assert_eq!(fat32_cluster_size(298 * MIB).unwrap(), 4096);
        assert_eq!(fat32_cluster_size(62 * MIB).unwrap(), 512);
        assert_eq!(fat32_cluster_size(100 * MIB).unwrap(), 1024);
        assert_eq!(fat32_cluster_size(1536 << 30).unwrap(), 8192);
        assert!(fat32_cluster_size(3 << 40).is_err());
        let err = fat32_cluster_size(30 * MIB).unwrap_err().to_string();
        assert!(err.contains("too small for FAT32"), "{err}");
    }

    #[test]
    fn labels_are_checked_and_padded() {
        assert_eq!(&fat_label("NATBOOT").unwrap(), b"NATBOOT    ");
        assert!(fat_label("").is_err());
        assert!(fat_label("natboot").is_err());
        assert!(fat_label("TWELVE_CHARS").is_err());
    }

    #[test]
    fn paths_are_checked_and_sorted() {
        let f = |p: &str| EspFile {
            path: p.into(),
            data: Vec::new(),
        };
        let files = [f("b"), f("EFI/BOOT/X.EFI"), f("a/c")];
        let order: Vec<&str> = sorted_files(&files)
            .unwrap()
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(order, ["EFI/BOOT/X.EFI", "a/c", "b"]);
        for bad in ["", "/abs", "a//b", "a/../b", "a/", "a:b", "dot."] {
            assert!(sorted_files(&[f(bad)]).is_err(), "{bad:?} accepted");
        }
        let err = sorted_files(&[f("A/b"), f("a/B")]).unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
        let err = sorted_files(&[f("a"), f("a/b")]).unwrap_err().to_string();
        assert!(err.contains("both a file and the directory"), "{err}");
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), ["a", "a/b"]);
    }

    #[test]
    fn zero_check_sees_every_byte() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 1000]));
        for at in 0..300 {
            let mut buf = vec![0u8; 300];
            buf[at] = 0x80;
            assert!(!is_zero(&buf), "missed byte {at}");
        }
    }

    #[test]
    fn window_maps_offsets_and_bounds_writes() {
        let mut backing = Cursor::new(vec![0u8; 100]);
        let mut w = PartitionWindow::new(&mut backing, 10, 20);
        w.write_all(&[1; 15]).unwrap();
        assert_eq!(w.write(&[2; 10]).unwrap(), 5);
        assert!(w.write(&[3]).is_err());
        assert_eq!(w.seek(SeekFrom::End(-2)).unwrap(), 18);
        let mut rest = Vec::new();
        w.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, [2, 2]);
        assert!(w.seek(SeekFrom::Current(-100)).is_err());
        let data = backing.into_inner();
        assert_eq!(&data[..10], &[0; 10]);
        assert_eq!(&data[10..25], &[1; 15]);
        assert_eq!(&data[25..30], &[2; 5]);
        assert_eq!(&data[30..], &[0; 70]);
    }

    /// Counts bytes written to the inner stream.
    struct Counting(Cursor<Vec<u8>>, u64);

    impl Read for Counting {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }
    impl Write for Counting {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.1 += buf.len() as u64;
            self.0.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Seek for Counting {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.0.seek(to)
        }
    }

    #[test]
    fn cache_writes_only_nonzero_blocks_and_reads_back() {
        let len = 10 * CACHE_BLOCK + 100;
        let mut inner = Counting(Cursor::new(vec![0u8; len]), 0);
        let mut cache = ZeroBackedCache::new(&mut inner).unwrap();
        cache.write_all(&vec![0u8; len]).unwrap();
        cache
            .seek(SeekFrom::Start(3 * CACHE_BLOCK as u64 - 2))
            .unwrap();
        cache.write_all(&[7, 7, 7, 7]).unwrap();
        cache.seek(SeekFrom::End(-1)).unwrap();
        cache.write_all(&[9]).unwrap();
        assert!(cache.write(&[1]).is_err());
        cache.flush().unwrap();
        // Blocks 2, 3 and the short last one.
        assert_eq!(cache.inner.1, 2 * CACHE_BLOCK as u64 + 100);
        // A block on disk that becomes zero again must be written.
        cache.seek(SeekFrom::Start(3 * CACHE_BLOCK as u64)).unwrap();
        cache.write_all(&[0, 0]).unwrap();
        let mut check = [1u8; 4];
        cache
            .seek(SeekFrom::Start(3 * CACHE_BLOCK as u64 - 2))
            .unwrap();
        cache.read_exact(&mut check).unwrap();
        assert_eq!(check, [7, 7, 0, 0]);
        cache.flush().unwrap();
        drop(cache);
        let data = inner.0.into_inner();
        assert_eq!(
            &data[3 * CACHE_BLOCK - 2..3 * CACHE_BLOCK + 2],
            &[7, 7, 0, 0]
        );
        assert_eq!(data[len - 1], 9);
        assert_eq!(data.iter().filter(|&&b| b != 0).count(), 3);
    }

    #[test]
    fn disk_passes_qemu_img_sgdisk_and_fsck() {
        let dir = scratch("disk-tools");
        let image = dir.join("disk.raw");
        let files = sample_files();
        let report = write_disk(&layout(300, 7), &files, &image).unwrap();
        assert_eq!(report.esp_first_lba, 2048);
        assert_eq!((report.esp_last_lba + 1) % ALIGN_LBA, 0);
        assert_eq!(std::fs::metadata(&image).unwrap().len(), 300 * MIB);

        // Sparse: far less allocated than the disk size.
        use std::os::unix::fs::MetadataExt;
        let allocated = std::fs::metadata(&image).unwrap().blocks() * 512;
        assert!(allocated < 8 * MIB, "{allocated} bytes allocated");

        let info = run_ok(
            "qemu-img",
            &["info", "--output=json", image.to_str().unwrap()],
            "qemu-utils",
        );
        assert!(info.contains("\"format\": \"raw\""), "{info}");
        assert!(
            info.contains(&format!("\"virtual-size\": {}", 300 * MIB)),
            "{info}"
        );

        let verify = run_ok("sgdisk", &["-v", image.to_str().unwrap()], "gdisk");
        assert!(verify.contains("No problems found"), "{verify}");
        let part = run_ok("sgdisk", &["-i", "1", image.to_str().unwrap()], "gdisk");
        assert!(
            part.contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            "{part}"
        );
        assert!(part.contains(&report.esp_guid.to_uppercase()), "{part}");
        assert!(part.contains("'EFI System Partition'"), "{part}");
        let table = run_ok("sgdisk", &["-p", image.to_str().unwrap()], "gdisk");
        assert!(table.contains(&report.disk_guid.to_uppercase()), "{table}");

        let esp = dir.join("esp.img");
        extract_esp(&image, &report, &esp);
        let fsck = run_ok(
            "fsck.vfat",
            &["-n", "-v", esp.to_str().unwrap()],
            "dosfstools",
        );
        // Only FAT32 keeps its root directory in a cluster chain.
        assert!(fsck.contains("Root directory start at cluster 2"), "{fsck}");

        check_with_fatfs(&image, &report, &files, 4096);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn small_disk_uses_small_clusters_and_passes_fsck() {
        let dir = scratch("disk-small");
        let image = dir.join("disk.raw");
        let files = sample_files();
        let report = write_disk(&layout(40, 3), &files, &image).unwrap();
        let esp = dir.join("esp.img");
        extract_esp(&image, &report, &esp);
        let fsck = run_ok(
            "fsck.vfat",
            &["-n", "-v", esp.to_str().unwrap()],
            "dosfstools",
        );
        // Only FAT32 keeps its root directory in a cluster chain.
        assert!(fsck.contains("Root directory start at cluster 2"), "{fsck}");
        let verify = run_ok("sgdisk", &["-v", image.to_str().unwrap()], "gdisk");
        assert!(verify.contains("No problems found"), "{verify}");
        check_with_fatfs(&image, &report, &files, 512);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn same_inputs_give_same_bytes_and_seed_changes_ids() {
        let dir = scratch("disk-determinism");
        let (a, b, c) = (dir.join("a.raw"), dir.join("b.raw"), dir.join("c.raw"));
        let files = sample_files();
        let mut reversed = files.clone();
        reversed.reverse();
        let ra = write_disk(&layout(64, 1), &files, &a).unwrap();
        let rb = write_disk(&layout(64, 1), &reversed, &b).unwrap();
        assert_eq!(ra, rb);
        assert!(same_bytes(&a, &b), "two writes differ");
        let rc = write_disk(&layout(64, 2), &files, &c).unwrap();
        assert_ne!(ra.disk_guid, rc.disk_guid);
        assert_ne!(ra.esp_guid, rc.esp_guid);
        assert_ne!(ra.disk_guid, ra.esp_guid);
        assert_ne!(ra.volume_id, rc.volume_id);
        assert!(!same_bytes(&a, &c));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_sizes_and_overfull_esps_are_named() {
        let dir = scratch("disk-errors");
        let image = dir.join("disk.raw");
        let err = format!("{:#}", write_disk(&layout(32, 1), &[], &image).unwrap_err());
        assert!(err.contains("too small for FAT32"), "{err}");
        let big = [EspFile {
            path: "huge.bin".into(),
            data: vec![1; 45 << 20],
        }];
        let err = format!(
            "{:#}",
            write_disk(&layout(40, 1), &big, &image).unwrap_err()
        );
        assert!(err.contains("need") && err.contains("free"), "{err}");
        let odd = DiskLayout {
            size_bytes: 40 * MIB + 512,
            ..layout(40, 1)
        };
        let err = format!("{:#}", write_disk(&odd, &[], &image).unwrap_err());
        assert!(err.contains("multiple of 1 MiB"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Booting the disk image the way EC2 does: `qemu-system-aarch64 -M virt` with AAVMF UEFI
//! firmware in pflash (a private copy of the variable store), the disk as NVMe, and virtio-net
//! NICs on PCIe (by default one behind a root port in slot 5, so that udev-style naming gives
//! `ens5` as on Nitro). Graviton's other traits are options: the `virt-4.1` machine (its ACPI
//! power button is a PL061 GPIO line, as on EC2, not the GED of newer machines), and the
//! console on a PCI 16550 (Graviton's `ttyS0`). Also the harness the boot tests use: serial
//! capture, waits, and QMP.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

pub const FIRMWARE_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
pub const FIRMWARE_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";
/// The PCI address of the 16550 console on the root bus: where Graviton has its `ttyS0`.
const PCI_SERIAL_ADDR: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Net {
    /// QEMU's user-mode network (no root needed; DHCP from QEMU itself).
    User,
    /// An existing tap device.
    Tap(String),
    None,
}

impl Net {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "user" => Ok(Self::User),
            "none" => Ok(Self::None),
            _ => match s.strip_prefix("tap:") {
                Some(name) if !name.is_empty() => Ok(Self::Tap(name.to_string())),
                _ => bail!("--net {s:?}: expected user, none or tap:IFNAME"),
            },
        }
    }
}

/// QEMU's `virt` machine version, which decides how the ACPI power button reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// The current `virt`: the power button is an event of the ACPI Generic Event Device.
    Virt,
    /// `virt-4.1`, the last version without a GED: the power button is a PL061 GPIO line with
    /// an ACPI GPIO event, the way EC2's stop and terminate press it on Graviton.
    Virt41,
}

impl Machine {
    fn name(self) -> &'static str {
        match self {
            Self::Virt => "virt",
            Self::Virt41 => "virt-4.1",
        }
    }
}

/// Which UART the harness reads and types on (the other one, if any, goes to a file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// The machine's PL011 (`ttyAMA0`), QEMU's default.
    Pl011,
    /// A PCI 16550 (`-device pci-serial`, `ttyS0`) at 00:01.0 as on Graviton; its output is
    /// also written to its own file ([`Vm::console_file`]), and the PL011's to another.
    PciSerial,
}

/// Where a NIC sits on PCIe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciPlace {
    /// Behind a `pcie-root-port` with this hotplug slot number: the kernel names the slot,
    /// so udev-style naming gives `ens<slot>` (Nitro's ENIs are `ens5`, `ens6`, ...).
    RootPort { slot: u8 },
    /// Directly on the root bus `pcie.0` at this device number, no slot: `enp0s<addr>`, as
    /// other instance types name their NIC.
    RootBus { addr: u8 },
}

/// One virtio-net NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub net: Net,
    pub mac: String,
    pub place: PciPlace,
}

impl Nic {
    /// The default placement: behind a root port in slot 5 (`ens5`).
    pub fn slot5(net: Net, mac: &str) -> Self {
        Self {
            net,
            mac: mac.to_string(),
            place: PciPlace::RootPort { slot: 5 },
        }
    }
}

/// The MAC of the only NIC of `cargo xtask qemu`, QEMU's own default.
pub const DEFAULT_MAC: &str = "52:54:00:12:34:56";

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub disk: PathBuf,
    pub mem_mib: u32,
    /// vCPUs (`-smp`); 2 by default, 1 for the failover pair (a t4g.nano has 2).
    pub cpus: u32,
    pub machine: Machine,
    pub console: Console,
    /// In PCI order of their places as given; none means `-nic none`.
    pub nics: Vec<Nic>,
    /// Run QEMU inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    /// Boot this kernel directly instead of the disk through UEFI firmware.
    pub direct: Option<DirectBoot>,
    /// Start the guest's RTC this many seconds off the host's clock (`-rtc base=`), so a test
    /// can check that the guest steps its clock; none means QEMU's default (UTC now).
    pub rtc_offset_secs: Option<i64>,
}

/// Direct kernel boot: QEMU loads the kernel and initramfs itself (device tree, no firmware,
/// no disk), with this command line.
#[derive(Debug, Clone)]
pub struct DirectBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

impl DirectBoot {
    /// The kernel, initramfs and command line of a built image: the kernel from the unpacked
    /// kernel package in `cache_dir` (the very file on the ESP), the rest from the image.
    pub fn from_image(image_dir: &Path, cache_dir: &Path) -> Result<Self> {
        let mpath = image_dir.join("manifest.json");
        let text = std::fs::read_to_string(&mpath)
            .with_context(|| format!("reading {}", mpath.display()))?;
        let m: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", mpath.display()))?;
        let sha = m["inputs"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["role"] == "kernel"))
            .and_then(|i| i["sha256"].as_str())
            .with_context(|| format!("{} names no kernel input", mpath.display()))?;
        let release = m["kernel_release"]
            .as_str()
            .with_context(|| format!("{} has no kernel_release", mpath.display()))?;
        let kernel = cache_dir
            .join("unpacked")
            .join(sha)
            .join("boot")
            .join(format!("vmlinuz-{release}"));
        if !kernel.is_file() {
            bail!(
                "{} is missing: build the image again to unpack its kernel",
                kernel.display()
            );
        }
        Ok(Self {
            kernel,
            initrd: image_dir.join("initramfs.img"),
            cmdline: m["cmdline"]
                .as_str()
                .with_context(|| format!("{} has no cmdline", mpath.display()))?
                .to_string(),
        })
    }
}

impl VmConfig {
    pub fn new(disk: PathBuf) -> Self {
        Self {
            disk,
            mem_mib: 512,
            cpus: 2,
            machine: Machine::Virt,
            console: Console::Pl011,
            nics: Vec::new(),
            netns: None,
            direct: None,
            rtc_offset_secs: None,
        }
    }
}

/// The QEMU command line, without the serial ports (see [`serial_args`]). The disk is opened
/// with snapshot=on: the built image is never written to, every boot starts from the same
/// bytes.
pub fn args(cfg: &VmConfig, vars: &Path, qmp: Option<&Path>) -> Vec<String> {
    let mut a: Vec<String> = [
        "-M",
        cfg.machine.name(),
        "-cpu",
        "cortex-a72",
        "-no-reboot",
        "-display",
        "none",
        "-monitor",
        "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(["-smp".into(), cfg.cpus.to_string()]);
    a.extend(["-m".into(), cfg.mem_mib.to_string()]);
    if cfg.console == Console::PciSerial {
        // Before the disk and the root ports take the first free addresses: 00:01.0 as on
        // Graviton. Its chardev comes from `serial_args`.
        a.extend([
            "-device".into(),
            format!("pci-serial,chardev=ttyS0,bus=pcie.0,addr={PCI_SERIAL_ADDR:#x}"),
        ]);
    }
    if let Some(d) = &cfg.direct {
        a.extend([
            "-kernel".into(),
            d.kernel.display().to_string(),
            "-initrd".into(),
            d.initrd.display().to_string(),
            "-append".into(),
            d.cmdline.clone(),
        ]);
    } else {
        a.extend([
            "-drive".into(),
            format!("if=pflash,format=raw,readonly=on,file={FIRMWARE_CODE}"),
        ]);
        a.extend([
            "-drive".into(),
            format!("if=pflash,format=raw,file={}", vars.display()),
        ]);
        a.extend([
            "-drive".into(),
            format!(
                "if=none,id=d0,format=raw,snapshot=on,file={}",
                cfg.disk.display()
            ),
            "-device".into(),
            "nvme,drive=d0,serial=vol0".into(),
        ]);
    }
    if let Some(off) = cfg.rtc_offset_secs {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        a.extend(["-rtc".into(), format!("base={}", rtc_base(now + off))]);
    }
    a.extend(nic_args(&cfg.nics));
    if let Some(q) = qmp {
        a.extend([
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", q.display()),
        ]);
    }
    a
}

/// QEMU's `-rtc base=` datetime (UTC, `YYYY-MM-DDTHH:MM:SS`, ISO 8601) for seconds since the
/// epoch.
pub fn rtc_base(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The NICs' devices: a root port per slot, then each virtio-net NIC with its netdev.
fn nic_args(nics: &[Nic]) -> Vec<String> {
    let mut a = Vec::new();
    let mut any = false;
    for (i, nic) in nics.iter().enumerate() {
        let netdev = match &nic.net {
            Net::User => format!("user,id=n{i}"),
            Net::Tap(t) => format!("tap,id=n{i},ifname={t},script=no,downscript=no"),
            Net::None => continue,
        };
        any = true;
        let bus = match nic.place {
            PciPlace::RootPort { slot } => {
                a.extend([
                    "-device".to_string(),
                    format!("pcie-root-port,id=rp{slot},slot={slot},chassis=1"),
                ]);
                format!("bus=rp{slot}")
            }
            PciPlace::RootBus { addr } => format!("bus=pcie.0,addr={addr:#x}"),
        };
        a.extend([
            "-netdev".to_string(),
            netdev,
            "-device".to_string(),
            // No option ROM: the firmware has its own virtio-net driver and nothing netboots,
            // and QEMU refuses to start when the ROM file (package ipxe-qemu, only a
            // recommendation of qemu-system-arm) is missing.
            format!("virtio-net-pci,netdev=n{i},{bus},mac={},romfile=", nic.mac),
        ]);
    }
    if !any {
        a.extend(["-nic".to_string(), "none".to_string()]);
    }
    a
}

/// The serial ports of a harnessed VM: the console on stdio (also logged to `console_log` for
/// the PCI 16550, whose device [`args`] places), the PL011 then into `other_log`.
fn serial_args(console: Console, console_log: &Path, other_log: &Path) -> Vec<String> {
    match console {
        Console::Pl011 => vec!["-serial".into(), "stdio".into()],
        Console::PciSerial => vec![
            "-chardev".into(),
            format!(
                "stdio,id=ttyS0,signal=off,logfile={},logappend=off",
                console_log.display()
            ),
            "-serial".into(),
            format!("file:{}", other_log.display()),
        ],
    }
}

fn program(cfg: &VmConfig, args: Vec<String>) -> Command {
    match &cfg.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "qemu-system-aarch64"])
                .args(args);
            c
        }
        None => {
            let mut c = Command::new("qemu-system-aarch64");
            c.args(args);
            c
        }
    }
}

/// A private directory for one QEMU run (its variable store and QMP socket), removed on drop.
fn temp_dir(prefix: &str) -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("creating a temporary directory")
}

fn vars_copy(dir: &Path) -> Result<PathBuf> {
    let vars = dir.join("AAVMF_VARS.fd");
    std::fs::copy(FIRMWARE_VARS, &vars)
        .with_context(|| format!("copying {FIRMWARE_VARS} (package qemu-efi-aarch64)"))?;
    Ok(vars)
}

/// `cargo xtask qemu`: the serial console on this terminal (Ctrl-A X quits).
pub fn interactive(image_dir: &Path, net: Net, mem_mib: u32) -> Result<()> {
    let tmp = temp_dir("xtask-qemu-")?;
    let vars = vars_copy(tmp.path())?;
    let mut cfg = VmConfig::new(image_dir.join("disk.raw"));
    cfg.nics = vec![Nic::slot5(net, DEFAULT_MAC)];
    cfg.mem_mib = mem_mib;
    let mut a = args(&cfg, &vars, None);
    a.extend(["-serial".into(), "mon:stdio".into()]);
    eprintln!("[xtask] qemu-system-aarch64 {}", a.join(" "));
    eprintln!("[xtask] Ctrl-A X quits QEMU; the firmware takes several seconds under TCG");
    let status = program(&cfg, a)
        .status()
        .context("starting qemu-system-aarch64")?;
    if !status.success() {
        bail!("qemu exited with {status}");
    }
    Ok(())
}

/// A booted VM whose serial console is captured line by line.
pub struct Vm {
    child: Child,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    /// When each line arrived, since `started`; pushed under the `lines` lock, so indices match.
    arrivals: Arc<Mutex<Vec<Duration>>>,
    qmp: PathBuf,
    /// The PCI 16550's own copy of its output and the PL011's output (with
    /// [`Console::PciSerial`]; never created otherwise).
    console_log: PathBuf,
    pl011_log: PathBuf,
    started: Instant,
    _dir: TempDir,
}

impl Vm {
    pub fn start(cfg: &VmConfig) -> Result<Self> {
        let dir = temp_dir("xtask-vm-")?;
        let vars = vars_copy(dir.path())?;
        let qmp = dir.path().join("qmp.sock");
        let console_log = dir.path().join("ttyS0.log");
        let pl011_log = dir.path().join("pl011.log");
        let mut a = args(cfg, &vars, Some(&qmp));
        a.extend(serial_args(cfg.console, &console_log, &pl011_log));
        let mut child = program(cfg, a)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting qemu-system-aarch64")?;
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let echo = std::env::var_os("XTASK_SERIAL").is_some();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = Arc::clone(&lines);
            let arrivals = Arc::clone(&arrivals);
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut buf = Vec::new();
                while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    if echo {
                        eprintln!("  | {line}");
                    }
                    let (m, cv) = &*lines;
                    if let Ok(mut v) = m.lock() {
                        v.push(line);
                        if let Ok(mut a) = arrivals.lock() {
                            a.push(started.elapsed());
                        }
                    }
                    cv.notify_all();
                    buf.clear();
                }
            });
        }
        Ok(Self {
            child,
            lines,
            arrivals,
            qmp,
            console_log,
            pl011_log,
            started,
            _dir: dir,
        })
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits for a console line containing `needle` at index `from` or later; returns its index
    /// and text.
    pub fn wait_for_from(
        &self,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> Result<(usize, String)> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.lines;
        let mut v = m
            .lock()
            .map_err(|_| anyhow::anyhow!("console reader panicked"))?;
        loop {
            if let Some(i) = v.iter().skip(from).position(|l| l.contains(needle)) {
                return Ok((from + i, v[from + i].clone()));
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "no console line containing {needle:?} within {} s",
                    timeout.as_secs()
                );
            }
            v = cv
                .wait_timeout(v, deadline - now)
                .map_err(|_| anyhow::anyhow!("console reader panicked"))?
                .0;
        }
    }

    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<String> {
        Ok(self.wait_for_from(0, needle, timeout)?.1)
    }

    /// The console lines with when each arrived (since QEMU started).
    pub fn lines_with_arrivals(&self) -> Vec<(String, Duration)> {
        let Ok(lines) = self.lines.0.lock() else {
            return Vec::new();
        };
        let arrivals = self.arrivals.lock().map(|a| a.clone()).unwrap_or_default();
        lines.iter().cloned().zip(arrivals).collect()
    }

    /// How many console lines have arrived so far.
    pub fn line_count(&self) -> usize {
        self.lines.0.lock().map(|v| v.len()).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        self.lines
            .0
            .lock()
            .map(|v| v.join("\n"))
            .unwrap_or_default()
    }

    /// What the PCI 16550 console wrote, as QEMU logged it to its own file (empty when the
    /// console is the PL011).
    pub fn console_file(&self) -> Result<String> {
        read_log(&self.console_log)
    }

    /// What the PL011 wrote while the console was the PCI 16550 (empty otherwise).
    pub fn pl011_log(&self) -> Result<String> {
        read_log(&self.pl011_log)
    }

    /// Sends one QMP command and returns its `return` value.
    pub fn qmp(&self, command: &str) -> Result<serde_json::Value> {
        let s = UnixStream::connect(&self.qmp)
            .with_context(|| format!("connecting to QMP at {}", self.qmp.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut w = s;
        let read_reply = |r: &mut BufReader<UnixStream>| -> Result<serde_json::Value> {
            loop {
                let mut line = String::new();
                if r.read_line(&mut line)? == 0 {
                    bail!("QMP closed the connection");
                }
                let v: serde_json::Value =
                    serde_json::from_str(&line).with_context(|| format!("QMP sent {line:?}"))?;
                if v.get("event").is_some() || v.get("QMP").is_some() {
                    continue;
                }
                if let Some(e) = v.get("error") {
                    bail!("QMP error: {e}");
                }
                return Ok(v.get("return").cloned().unwrap_or_default());
            }
        };
        let mut greeting = String::new();
        r.read_line(&mut greeting)?;
        writeln!(w, r#"{{"execute":"qmp_capabilities"}}"#)?;
        read_reply(&mut r)?;
        writeln!(w, "{}", serde_json::json!({"execute": command}))?;
        read_reply(&mut r)
    }

    /// Waits for QEMU to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                bail!("QEMU still running after {} s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills QEMU at once (SIGKILL, as a host failure would: the guest gets no shutdown) and
    /// reaps it. The clean stop is `qmp("system_powerdown")`.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(st) = self.child.try_wait()? {
            return Ok(st);
        }
        self.child.kill().context("killing QEMU")?;
        self.child.wait().context("reaping QEMU")
    }

    /// Types a line on the guest's serial console.
    pub fn send(&mut self, text: &str) -> Result<()> {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .context("QEMU's stdin is closed")?;
        stdin.write_all(text.as_bytes())?;
        stdin.flush()?;
        Ok(())
    }
}

/// A serial log file; one QEMU did not create is empty. Bytes that are not UTF-8 (line noise
/// at reset) are replaced.
fn read_log(path: &Path) -> Result<String> {
    match std::fs::read(path) {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtc_base_is_the_utc_datetime() {
        assert_eq!(rtc_base(0), "1970-01-01T00:00:00");
        assert_eq!(rtc_base(951_825_600), "2000-02-29T12:00:00");
        assert_eq!(rtc_base(1_796_256_000 - 1), "2026-12-02T23:59:59");
        assert_eq!(rtc_base(-86_400), "1969-12-31T00:00:00");
    }

    #[test]
    fn rtc_offset_gives_an_rtc_base() {
        let mut cfg = VmConfig::new("d.raw".into());
        let a = args(&cfg, Path::new("v"), None);
        assert!(!a.iter().any(|x| x == "-rtc"));
        cfg.rtc_offset_secs = Some(-3600);
        let a = args(&cfg, Path::new("v"), None);
        let i = a.iter().position(|x| x == "-rtc").unwrap();
        assert!(
            a[i + 1].starts_with("base=") && a[i + 1].len() == 24,
            "{}",
            a[i + 1]
        );
    }

    #[test]
    fn nic_sits_in_slot_5_and_disk_is_nvme_snapshot() {
        let mut cfg = VmConfig::new("/x/disk.raw".into());
        cfg.nics = vec![Nic::slot5(Net::Tap("tap0".into()), DEFAULT_MAC)];
        let a = args(&cfg, Path::new("/v"), Some(Path::new("/q")));
        let s = a.join(" ");
        assert!(s.starts_with("-M virt -cpu"), "{s}");
        assert!(s.contains("pcie-root-port,id=rp5,slot=5"));
        assert!(s.contains("virtio-net-pci,netdev=n0,bus=rp5,mac=52:54:00:12:34:56,romfile="));
        assert!(s.contains("tap,id=n0,ifname=tap0,script=no,downscript=no"));
        assert!(s.contains("nvme,drive=d0"));
        assert!(s.contains("snapshot=on,file=/x/disk.raw"));
        assert!(s.contains("readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd"));
        assert!(s.contains("-no-reboot"));
        assert!(!s.contains("pci-serial"));
        assert_eq!(
            serial_args(cfg.console, Path::new("/c"), Path::new("/p")),
            ["-serial", "stdio"]
        );
    }

    #[test]
    fn graviton_like_machine_console_and_nics() {
        let mut cfg = VmConfig::new("/x/disk.raw".into());
        cfg.machine = Machine::Virt41;
        cfg.console = Console::PciSerial;
        cfg.nics = vec![
            Nic::slot5(Net::Tap("t5".into()), "02:00:00:00:00:05"),
            Nic {
                net: Net::Tap("t6".into()),
                mac: "02:00:00:00:00:06".into(),
                place: PciPlace::RootPort { slot: 6 },
            },
            Nic {
                net: Net::Tap("t0".into()),
                mac: "02:00:00:00:00:01".into(),
                place: PciPlace::RootBus { addr: 5 },
            },
        ];
        let a = args(&cfg, Path::new("/v"), None);
        let s = a.join(" ");
        assert!(s.starts_with("-M virt-4.1 -cpu"), "{s}");
        // The 16550 takes 00:01.0 before the disk could.
        let serial = s
            .find("pci-serial,chardev=ttyS0,bus=pcie.0,addr=0x1")
            .unwrap();
        assert!(serial < s.find("nvme,drive=d0").unwrap());
        for want in [
            "pcie-root-port,id=rp5,slot=5,chassis=1",
            "virtio-net-pci,netdev=n0,bus=rp5,mac=02:00:00:00:00:05,romfile=",
            "pcie-root-port,id=rp6,slot=6,chassis=1",
            "tap,id=n1,ifname=t6,",
            "virtio-net-pci,netdev=n1,bus=rp6,mac=02:00:00:00:00:06,romfile=",
            "virtio-net-pci,netdev=n2,bus=pcie.0,addr=0x5,mac=02:00:00:00:00:01,romfile=",
        ] {
            assert!(s.contains(want), "{want} not in {s}");
        }
        assert!(!s.contains("-nic none"));
        let serial = serial_args(
            cfg.console,
            Path::new("/t/ttyS0.log"),
            Path::new("/t/pl011.log"),
        );
        assert_eq!(
            serial,
            [
                "-chardev",
                "stdio,id=ttyS0,signal=off,logfile=/t/ttyS0.log,logappend=off",
                "-serial",
                "file:/t/pl011.log",
            ]
        );
    }

    #[test]
    fn no_nic_is_nic_none() {
        let mut cfg = VmConfig::new("/x/disk.raw".into());
        assert!(
            args(&cfg, Path::new("/v"), None)
                .join(" ")
                .contains("-nic none")
        );
        cfg.nics = vec![Nic::slot5(Net::None, DEFAULT_MAC)];
        let s = args(&cfg, Path::new("/v"), None).join(" ");
        assert!(s.contains("-nic none") && !s.contains("virtio-net"), "{s}");
    }

    #[test]
    fn direct_boot_has_no_firmware_or_disk() {
        let mut cfg = VmConfig::new("/x/disk.raw".into());
        cfg.direct = Some(DirectBoot {
            kernel: "/k/vmlinuz".into(),
            initrd: "/i/initramfs.img".into(),
            cmdline: "console=ttyAMA0 panic=10".into(),
        });
        let a = args(&cfg, Path::new("/v"), None);
        let s = a.join(" ");
        assert!(s.contains("-kernel /k/vmlinuz -initrd /i/initramfs.img"));
        let i = a.iter().position(|x| x == "-append").unwrap();
        assert_eq!(a[i + 1], "console=ttyAMA0 panic=10");
        assert!(!s.contains("pflash") && !s.contains("nvme"));
    }

    #[test]
    fn net_parsing() {
        assert_eq!(Net::parse("tap:t1").unwrap(), Net::Tap("t1".into()));
        assert_eq!(Net::parse("user").unwrap(), Net::User);
        assert!(Net::parse("tap:").is_err());
        assert!(Net::parse("bridge").is_err());
    }
}

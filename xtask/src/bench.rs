//! `cargo xtask bench`: measures our image against the by-hand baseline
//! (`images/baseline-busybox-nft.toml`, busybox sh typing the documented commands), both built
//! by the same pipeline and booted on the same emulated VPC (see `vpc`), alternating, several
//! runs each. Figures: boot to NAT ready from kernel timestamps (direct kernel boot and the
//! full UEFI path) with a breakdown, sizes, memory after ready, conntrack capacity, forwarding
//! throughput ratios under TCG, and build speed. Writes `target/bench/report.{md,json}`.
//! Benchmarks are not tests: `cargo xtask test` does not run this (see `smoke`).

mod flows;
mod parse;
mod render;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::image;
use crate::qemu::{DirectBoot, Net, Vm, VmConfig};
use crate::report::say;
use crate::vpc::{self, Vpc};
use crate::{hostdeps, netns};

use parse::{Milestone, field, milestone_times, stats};

/// The production image: boot timing and sizes.
pub const OURS: &str = "nat-t4g";
/// The same image with init's test console, for `init-test meminfo`.
pub const OURS_TEST: &str = "nat-t4g-e2e";
pub const BASELINE: &str = "baseline-busybox-nft";

/// Long enough that no renewal happens during a boot.
const LEASE_SECS: u32 = 3600;
/// t4g.nano.
const GUEST_MIB: u32 = 512;
/// What the issue asks capacity to reach on 512 MiB.
const CAPACITY_GOAL: u64 = 131_072;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Sizes,
    Build,
    Boot,
    Memory,
    Capacity,
    Throughput,
}

impl Part {
    pub const ALL: [Part; 6] = [
        Part::Sizes,
        Part::Build,
        Part::Boot,
        Part::Memory,
        Part::Capacity,
        Part::Throughput,
    ];

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "sizes" => Self::Sizes,
            "build" => Self::Build,
            "boot" => Self::Boot,
            "memory" => Self::Memory,
            "capacity" => Self::Capacity,
            "throughput" => Self::Throughput,
            _ => bail!(
                "--only {s:?}: expected a comma-separated list of sizes, build, boot, memory, capacity, throughput"
            ),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Sizes => "sizes",
            Self::Build => "build",
            Self::Boot => "boot",
            Self::Memory => "memory",
            Self::Capacity => "capacity",
            Self::Throughput => "throughput",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// One run each, direct kernel boot only, small capacity and throughput targets, no cold
    /// build.
    pub quick: bool,
    /// Boots per image and boot path.
    pub runs: usize,
    pub parts: Vec<Part>,
    /// Where report.md and report.json go.
    pub out: PathBuf,
    /// Capacity: this many flows for both images instead of the guest's configured maximum.
    pub flows: Option<u64>,
}

impl Options {
    pub fn new(root: &Path, quick: bool) -> Self {
        Self {
            quick,
            runs: if quick { 1 } else { 3 },
            parts: Part::ALL.to_vec(),
            out: crate::target_dir(root).join("bench"),
            flows: None,
        }
    }

    fn wants(&self, p: Part) -> bool {
        self.parts.contains(&p)
    }
}

/// `cargo xtask bench [--quick] [--runs N] [--only LIST] [--flows N]`.
pub fn parse_args(root: &Path, parser: &mut lexopt::Parser) -> Result<Options> {
    use lexopt::prelude::*;
    let (mut quick, mut runs, mut only, mut flows) = (false, None, None, None);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("quick") => quick = true,
            Long("runs") => runs = Some(parser.value()?.parse::<usize>()?),
            Long("flows") => flows = Some(parser.value()?.parse::<u64>()?),
            Long("only") => {
                let list: String = parser.value()?.string()?;
                only = Some(
                    list.split(',')
                        .map(Part::parse)
                        .collect::<Result<Vec<_>>>()?,
                );
            }
            _ => bail!("cargo xtask bench: {}", arg.unexpected()),
        }
    }
    let mut o = Options::new(root, quick);
    if let Some(r) = runs {
        if r == 0 {
            bail!("--runs must be at least 1");
        }
        o.runs = r;
    }
    if let Some(p) = only {
        o.parts = p;
    }
    o.flows = flows;
    Ok(o)
}

/// Runs the selected measurements and writes the report; returns report.json's value.
pub fn run(root: &Path, opts: &Options) -> Result<Value> {
    hostdeps::ensure(hostdeps::QEMU)?;
    let needs_vpc = [Part::Boot, Part::Memory, Part::Capacity, Part::Throughput]
        .iter()
        .any(|p| opts.wants(*p));
    if needs_vpc {
        hostdeps::ensure(hostdeps::NET)?;
    }
    if opts.wants(Part::Throughput) {
        hostdeps::ensure(&[hostdeps::Need {
            path: "iperf3",
            package: "iperf3",
        }])?;
    }
    let started = Instant::now();
    let mut report = serde_json::Map::new();
    report.insert("machine".into(), machine());
    report.insert("date".into(), json!(date_utc()));
    let (facts, _) = crate::buildinfo::BuildFacts::gather(root);
    report.insert("commit".into(), json!(facts.commit));
    report.insert("quick".into(), json!(opts.quick));
    report.insert("runs".into(), json!(opts.runs));
    report.insert(
        "parts".into(),
        json!(opts.parts.iter().map(|p| p.name()).collect::<Vec<_>>()),
    );
    report.insert(
        "images".into(),
        json!({"ours": OURS, "ours_test_console": OURS_TEST, "baseline": BASELINE}),
    );

    // Build speed first: its cold run rebuilds the outputs the other parts then use.
    if opts.wants(Part::Build) {
        say("bench: build speed");
        report.insert("build".into(), build_speed(root, opts)?);
    }
    let mut dirs = Vec::new();
    for p in [OURS, OURS_TEST, BASELINE] {
        let built = image::run(
            root,
            &image::Args {
                profile: p.into(),
                ..Default::default()
            },
        )
        .with_context(|| format!("building {p}"))?;
        dirs.push(built.dir);
    }
    let (ours_dir, ours_test_dir, base_dir) = (dirs[0].clone(), dirs[1].clone(), dirs[2].clone());
    same_kernel(&ours_dir, &base_dir)?;
    if opts.wants(Part::Sizes) {
        say("bench: sizes");
        report.insert("sizes".into(), sizes(&ours_dir, &base_dir)?);
    }
    if needs_vpc {
        let cache = crate::target_dir(root).join("cache");
        let mut vpc = Vpc::build(LEASE_SECS, None).context("building the emulated VPC")?;
        bench_rules(&vpc)?;
        let imgs = Images {
            ours: Img::new(&ours_dir, &cache, Kind::Ours)?,
            ours_test: Img::new(&ours_test_dir, &cache, Kind::Ours)?,
            baseline: Img::new(&base_dir, &cache, Kind::Baseline)?,
        };
        if opts.wants(Part::Boot) {
            report.insert("boot".into(), boot_times(&mut vpc, &imgs, opts)?);
        }
        if [Part::Memory, Part::Capacity, Part::Throughput]
            .iter()
            .any(|p| opts.wants(*p))
        {
            let s = sessions(&mut vpc, &imgs, opts)?;
            for (k, v) in s {
                report.insert(k, v);
            }
        }
    }
    report.insert(
        "bench_seconds".into(),
        json!(round1(started.elapsed().as_secs_f64())),
    );
    let report = Value::Object(report);
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let json_path = opts.out.join("report.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md_path = opts.out.join("report.md");
    std::fs::write(&md_path, render::markdown(&report))
        .with_context(|| format!("writing {}", md_path.display()))?;
    say(&format!(
        "bench: wrote {} and {} in {:.0} s",
        md_path.display(),
        json_path.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(report)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn sh_out(program: &str, args: &[&str]) -> String {
    netns::sh(program, args)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok());
    json!({
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "mem_mib": mem_kb.map(|k| k / 1024),
        "kernel": sh_out("uname", &["-sr"]),
        "qemu": sh_out("qemu-system-aarch64", &["--version"]).lines().next().unwrap_or_default().to_string(),
        "accelerator": "TCG (aarch64 guest emulated)",
    })
}

fn date_utc() -> String {
    sh_out("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])
}

fn manifest(dir: &Path) -> Result<Value> {
    let p = dir.join("manifest.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

/// The comparison is only fair on the very same kernel and modules.
fn same_kernel(ours: &Path, base: &Path) -> Result<()> {
    let (a, b) = (manifest(ours)?, manifest(base)?);
    let kernel = |m: &Value| {
        m["inputs"]
            .as_array()
            .and_then(|i| i.iter().find(|x| x["role"] == "kernel"))
            .map(|x| x["sha256"].clone())
    };
    if kernel(&a) != kernel(&b) || a["modules"] != b["modules"] {
        bail!(
            "{} and {} do not boot the same kernel and modules: lock files or module lists differ",
            OURS,
            BASELINE
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// sizes

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
        "initramfs_cpio_gz": size("initramfs.cpio.gz")?,
        "rootfs_tar": size("rootfs.tar")?,
        "disk_raw": size("disk.raw")?,
        "ebs_upload": blocks * EBS_BLOCK as u64,
        "ebs_upload_blocks": blocks,
    }))
}

fn sizes(ours: &Path, base: &Path) -> Result<Value> {
    let (o, b) = (image_sizes(ours)?, image_sizes(base)?);
    let mut ratio = serde_json::Map::new();
    for k in ["disk_vmdk", "initramfs_cpio_gz", "rootfs_tar", "ebs_upload"] {
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

// ---------------------------------------------------------------------------------------
// build speed

/// `cargo xtask image` as a user runs it, timed from outside, with the stage times it prints.
fn timed_image_build(root: &Path, profile: &str) -> Result<Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let t = Instant::now();
    let out = duct::cmd(cargo, ["xtask", "image", "--profile", profile])
        .dir(root)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .context("running cargo xtask image")?;
    let secs = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("cargo xtask image --profile {profile} failed:\n{text}");
    }
    let stages: Vec<Value> = parse::stage_times(&text)
        .into_iter()
        .map(|(name, s)| json!([name, s]))
        .collect();
    Ok(
        json!({"seconds": round3(secs), "stages": stages, "up_to_date": text.contains(" is up to date")}),
    )
}

fn build_speed(root: &Path, opts: &Options) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for profile in [OURS, BASELINE] {
        let mut entry = serde_json::Map::new();
        if opts.quick {
            entry.insert("cold".into(), json!({"skipped": "--quick"}));
            // Make sure the warm run below has something to be warm about.
            timed_image_build(root, profile)?;
        } else {
            // Cold: inputs cached and dependencies compiled, but our crates, the output
            // directory and its stamp are gone. (The baseline compiles nothing.)
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            if profile == OURS {
                netns::sh(
                    &cargo,
                    &[
                        "clean",
                        "--manifest-path",
                        &root.join("Cargo.toml").display().to_string(),
                        "--release",
                        "--target",
                        crate::binaries::TARGET,
                        "-p",
                        "init",
                        "-p",
                        "nat-init",
                    ],
                )?;
            }
            let dir = image::default_out(root, profile);
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_file(dir.with_file_name(format!(".{profile}.stamp")));
            entry.insert("cold".into(), timed_image_build(root, profile)?);
        }
        let mut warm = Vec::new();
        let mut last = Value::Null;
        for _ in 0..opts.runs.max(1) {
            let w = timed_image_build(root, profile)?;
            warm.push(w["seconds"].as_f64().unwrap_or(0.0));
            last = w;
        }
        entry.insert("warm_runs".into(), json!(warm));
        entry.insert("warm".into(), stats(&warm));
        entry.insert("warm_last".into(), last);
        out.insert(profile.into(), Value::Object(entry));
    }
    let warm = out[OURS]["warm"]["median"].as_f64().unwrap_or(f64::MAX);
    out.insert(
        "goal".into(),
        json!({"warm_under_seconds": 3.0, "met": warm < 3.0}),
    );
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------------
// booting on the VPC

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ours,
    Baseline,
}

struct Img {
    dir: PathBuf,
    direct: DirectBoot,
    kind: Kind,
}

impl Img {
    fn new(dir: &Path, cache: &Path, kind: Kind) -> Result<Self> {
        Ok(Self {
            dir: dir.to_path_buf(),
            direct: DirectBoot::from_image(dir, cache)?,
            kind,
        })
    }

    fn ready_needle(&self) -> &'static str {
        match self.kind {
            Kind::Ours => "nat-init: ready ",
            Kind::Baseline => "baseline: ready ",
        }
    }

    fn milestones(&self) -> &'static [Milestone] {
        match self.kind {
            Kind::Ours => parse::OURS_MILESTONES,
            Kind::Baseline => parse::BASELINE_MILESTONES,
        }
    }
}

struct Images {
    ours: Img,
    ours_test: Img,
    baseline: Img,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BootPath {
    Direct,
    Uefi,
}

impl BootPath {
    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Uefi => "uefi",
        }
    }
}

/// A guest that has printed its ready line, and where in its console that was.
struct Guest {
    vm: Vm,
    ready_at: usize,
    /// Guest milliseconds since kernel start of the ready line.
    ready_ms: f64,
    wall_s: f64,
}

/// Another process on this machine may delete our namespaces mid-run (a cleanup of stale
/// test namespaces); then the VPC is built again, with the same user-data and bench settings.
fn ensure_vpc(vpc: &mut Vpc) -> Result<()> {
    if vpc.ns.all_exist() {
        return Ok(());
    }
    say("bench: the VPC's namespaces are gone (deleted by another process); building it again");
    let user_data = vpc.imds.lock().ok().and_then(|s| s.user_data.clone());
    // The names would be the new VPC's: the old one must not delete them when dropped.
    vpc.ns.forget();
    let new = Vpc::build(LEASE_SECS, user_data).context("building the emulated VPC again")?;
    drop(std::mem::replace(vpc, new));
    bench_rules(vpc)
}

fn boot(vpc: &mut Vpc, img: &Img, how: BootPath, extra_cmdline: &str) -> Result<Guest> {
    ensure_vpc(vpc)?;
    let mut cfg = VmConfig::new(img.dir.join("disk.raw"));
    cfg.net = Net::Tap(vpc::TAP.to_string());
    cfg.mac = vpc::NAT_MAC.to_string();
    cfg.netns = Some(vpc.ns.name("vpc"));
    cfg.mem_mib = GUEST_MIB;
    if how == BootPath::Direct {
        let mut d = img.direct.clone();
        if !extra_cmdline.is_empty() {
            d.cmdline = format!("{} {extra_cmdline}", d.cmdline);
        }
        cfg.direct = Some(d);
    } else if !extra_cmdline.is_empty() {
        bail!("a kernel command line can only be added under direct kernel boot");
    }
    let vm = Vm::start(&cfg)?;
    let timeout = Duration::from_secs(if how == BootPath::Uefi { 240 } else { 60 });
    let needle = img.ready_needle();
    let waited = vm.wait_for_from(0, needle, timeout);
    let wall_s = vm.elapsed().as_secs_f64();
    if let Err(e) = waited {
        let log = vm.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{e:#} ({} {}); console tail:\n{}",
            img.dir.display(),
            how.name(),
            tail.join("\n")
        );
    }
    let (i, line) = vm.wait_for_from(0, needle, Duration::from_secs(1))?;
    // The guest's own clock: a kernel timestamp if the line has one, else the CLOCK_BOOTTIME
    // reading it carries (ours `elapsed_ms=`, the baseline's `uptime=`).
    let ready_ms = parse::timestamped(&line)
        .map(|(t, _)| t * 1000.0)
        .or_else(|| parse::own_clock(&line))
        .with_context(|| format!("no guest clock in the ready line {line:?}"))?;
    Ok(Guest {
        vm,
        ready_at: i,
        ready_ms,
        wall_s,
    })
}

fn boot_times(vpc: &mut Vpc, imgs: &Images, opts: &Options) -> Result<Value> {
    let paths: &[BootPath] = if opts.quick {
        &[BootPath::Direct]
    } else {
        &[BootPath::Direct, BootPath::Uefi]
    };
    vpc.set_user_data(None);
    let mut out = serde_json::Map::new();
    // An image that did not get ready once is not booted again in this run: under TCG every
    // failed boot costs its whole timeout.
    let mut broken = [false, false];
    for how in paths {
        let mut runs: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
        for r in 0..opts.runs {
            // Alternate: ours, baseline, ours, baseline...
            for (i, img) in [&imgs.ours, &imgs.baseline].into_iter().enumerate() {
                let label = if i == 0 { OURS } else { BASELINE };
                if broken[i] {
                    runs[i].push(json!({"error": "skipped: an earlier boot of this image did not get ready"}));
                    continue;
                }
                say(&format!(
                    "bench: boot {label} ({}) run {}/{}",
                    how.name(),
                    r + 1,
                    opts.runs
                ));
                let one = match boot(vpc, img, *how, "") {
                    Ok(g) => {
                        let lines: Vec<(String, f64)> =
                            g.vm.lines_with_arrivals()
                                .into_iter()
                                .map(|(l, d)| (l, d.as_secs_f64() * 1000.0))
                                .collect();
                        let ms = milestone_times(&lines, img.milestones());
                        say(&format!(
                            "bench: {label} ready at {:.0} ms guest time ({:.1} s wall)",
                            g.ready_ms, g.wall_s
                        ));
                        json!({
                            "ready_ms": round1(g.ready_ms),
                            "wall_s": round1(g.wall_s),
                            "milestones_ms": ms.iter().map(|(n, t)| json!([n, round1(*t)])).collect::<Vec<_>>(),
                            "phases_ms": parse::phases(&ms),
                            "own_work_ms": parse::own_work(&ms, g.ready_ms).map(round1),
                        })
                    }
                    Err(e) => {
                        broken[i] = true;
                        say(&format!("bench: {label} did not get ready: {e:#}"));
                        json!({"error": format!("{e:#}")})
                    }
                };
                runs[i].push(one);
            }
        }
        let summarise = |v: &[Value]| {
            let ready: Vec<f64> = v.iter().filter_map(|r| r["ready_ms"].as_f64()).collect();
            let own: Vec<f64> = v.iter().filter_map(|r| r["own_work_ms"].as_f64()).collect();
            json!({
                "runs": v,
                "ready_ms": stats(&ready),
                "own_work_ms": stats(&own),
                "phases_median_ms": parse::median_phases(v),
            })
        };
        let (o, b) = (summarise(&runs[0]), summarise(&runs[1]));
        let ratio = match (
            o["ready_ms"]["median"].as_f64(),
            b["ready_ms"]["median"].as_f64(),
        ) {
            (Some(x), Some(y)) if y > 0.0 => json!(round3(x / y)),
            _ => Value::Null,
        };
        let own = o["own_work_ms"]["median"].as_f64();
        out.insert(
            how.name().into(),
            json!({
                "ours": o,
                "baseline": b,
                "ratio_ours_baseline": ratio,
                "goal": {
                    "ratio_at_most": 0.5,
                    "ratio_met": ratio.as_f64().map(|r| r <= 0.5),
                    "own_work_under_ms": 50,
                    "own_work_met": own.map(|w| w < 50.0),
                },
            }),
        );
    }
    out.insert(
        "method".into(),
        json!("the guest's own CLOCK_BOOTTIME (ms since kernel start) in the ready line on the serial console; \
               ours: `nat-init: ready ... elapsed_ms=` (after the lease is bound and the ruleset installed and verified); \
               baseline: `baseline: ready ... uptime=` (/proc/uptime, 10 ms resolution), printed by the script after udhcpc bound the lease and the last nft command returned. \
               Both boot the same kernel command line (`quiet`, so the kernel itself prints nothing). \
               The breakdown: each line's own clock where it has one (init's `up in N ms`, the baseline's `uptime=`), else its arrival on the console relative to the nearest line with a clock \
               (TCG runs the guest clock at the host's rate); init_started is init's module line less the `in N ms` it reports. \
               The baseline uses the kernel's interface name eth0 (busybox has no udev); ours renames it to ens5."),
    );
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------------
// memory, capacity, throughput: a few long-lived boots (direct kernel boot, 512 MiB)

fn sessions(vpc: &mut Vpc, imgs: &Images, opts: &Options) -> Result<Vec<(String, Value)>> {
    let mut memory = serde_json::Map::new();
    let mut capacity = serde_json::Map::new();
    let mut tput = serde_json::Map::new();
    let secs = if opts.quick { 3 } else { 10 };
    let want_tput = opts.wants(Part::Throughput);

    // 1. ours, default config (flowtable on): memory, throughput, capacity.
    vpc.set_user_data(Some("# bench\nhealth_interval = 1\n".into()));
    say("bench: session ours (flowtable on)");
    match boot(vpc, &imgs.ours_test, BootPath::Direct, "") {
        Ok(mut g) => {
            if opts.wants(Part::Memory) {
                memory.insert(
                    "ours".into(),
                    ours_memory(&mut g).unwrap_or_else(|e| json!({"error": format!("{e:#}")})),
                );
            }
            if want_tput {
                tput.insert("ours_flowtable".into(), iperf(vpc, secs));
            }
            if opts.wants(Part::Capacity) {
                capacity.insert(
                    "ours".into(),
                    flows::capacity(vpc, &mut g, Kind::Ours, opts.quick, opts.flows)
                        .unwrap_or_else(|e| json!({"error": format!("{e:#}")})),
                );
            }
        }
        Err(e) => {
            let err = json!({"error": format!("{e:#}")});
            memory.insert("ours".into(), err.clone());
            capacity.insert("ours".into(), err.clone());
            tput.insert("ours_flowtable".into(), err);
        }
    }
    // 2. ours without the flowtable (unless ours could not boot at all above).
    let ours_boots = !memory
        .get("ours")
        .or(capacity.get("ours"))
        .or(tput.get("ours_flowtable"))
        .is_some_and(|v| {
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("nat-init: ready"))
        });
    if want_tput && !ours_boots {
        tput.insert(
            "ours_no_flowtable".into(),
            json!({"error": "skipped: ours did not get ready in the first session"}),
        );
    } else if want_tput {
        vpc.set_user_data(Some(
            "# bench\nhealth_interval = 1\nflowtable = false\n".into(),
        ));
        say("bench: session ours (flowtable off)");
        let r = boot(vpc, &imgs.ours_test, BootPath::Direct, "")
            .map(|_g| iperf(vpc, secs))
            .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
        tput.insert("ours_no_flowtable".into(), r);
    }
    vpc.set_user_data(None);
    // 3. the baseline: memory, throughput (its masquerade rule), capacity at ours' target.
    say("bench: session baseline");
    let ours_target = capacity.get("ours").and_then(|c| c["flows_sent"].as_u64());
    match boot(vpc, &imgs.baseline, BootPath::Direct, "") {
        Ok(mut g) => {
            if opts.wants(Part::Memory) {
                memory.insert(
                    "baseline".into(),
                    baseline_memory(&g).unwrap_or_else(|e| json!({"error": format!("{e:#}")})),
                );
            }
            if want_tput {
                tput.insert("baseline_masquerade".into(), iperf(vpc, secs));
            }
            if opts.wants(Part::Capacity) {
                capacity.insert(
                    "baseline".into(),
                    flows::capacity(
                        vpc,
                        &mut g,
                        Kind::Baseline,
                        opts.quick,
                        opts.flows.or(ours_target),
                    )
                    .unwrap_or_else(|e| json!({"error": format!("{e:#}")})),
                );
            }
        }
        Err(e) => {
            let err = json!({"error": format!("{e:#}")});
            memory.insert("baseline".into(), err.clone());
            capacity.insert("baseline".into(), err.clone());
            tput.insert("baseline_masquerade".into(), err);
        }
    }
    // 4. the control: the same kernel forwarding with no NAT rules at all (the baseline image
    //    told to skip its nft commands), the internet gateway letting private sources through.
    if want_tput {
        say("bench: session forwarding without NAT rules");
        let r = boot(
            vpc,
            &imgs.baseline,
            BootPath::Direct,
            "baseline.mode=forward",
        )
        .and_then(|_g| {
            vpc.ns
                .exec(
                    "vpc",
                    "nft",
                    &[
                        "insert",
                        "rule",
                        "ip",
                        "igw",
                        "forward_filter",
                        "ip",
                        "saddr",
                        "10.0.1.0/24",
                        "accept",
                    ],
                )
                .context("letting private sources through the emulated internet gateway")?;
            Ok(iperf(vpc, secs))
        })
        .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
        tput.insert("forward_no_nat".into(), r);
        let bps = |k: &str| tput.get(k).and_then(|v| v["bits_per_second"].as_f64());
        let mut ratios = serde_json::Map::new();
        if let Some(fwd) = bps("forward_no_nat").filter(|f| *f > 0.0) {
            for k in ["ours_flowtable", "ours_no_flowtable", "baseline_masquerade"] {
                if let Some(x) = bps(k) {
                    ratios.insert(format!("{k}/forward_no_nat"), json!(round3(x / fwd)));
                }
            }
        }
        if let (Some(a), Some(b)) = (bps("ours_flowtable"), bps("ours_no_flowtable"))
            && b > 0.0
        {
            ratios.insert(
                "ours_flowtable/ours_no_flowtable".into(),
                json!(round3(a / b)),
            );
        }
        tput.insert("ratios".into(), Value::Object(ratios));
        tput.insert(
            "method".into(),
            json!(format!(
                "iperf3 TCP, {secs} s, private client 10.0.1.10 -> internet server {} through the guest; MTU 1500 on the client; \
                 TCG makes absolute numbers meaningless, the ratios are the result. Forwarding without NAT rules: the baseline \
                 image booted with baseline.mode=forward (ip_forward=1, no nft table), the VPC's internet gateway told to pass \
                 private sources, replies routed back through the guest.",
                vpc::SERVER
            )),
        );
    }
    let mut out = Vec::new();
    if opts.wants(Part::Memory) {
        let used = |k: &str| {
            memory
                .get(k)
                .and_then(|m| Some(m["MemTotal_kb"].as_f64()? - m["MemAvailable_kb"].as_f64()?))
        };
        let ours_used = used("ours");
        if let (Some(o), Some(b)) = (ours_used, used("baseline"))
            && b > 0.0
        {
            memory.insert("ratio_used_ours_baseline".into(), json!(round3(o / b)));
        }
        memory.insert(
            "goal".into(),
            json!({"used_under_kb": 32 * 1024, "met": ours_used.map(|u| u < 32.0 * 1024.0)}),
        );
        memory.insert(
            "method".into(),
            json!("512 MiB guest, direct kernel boot, right after ready: /proc/meminfo and VmRSS from /proc/<pid>/status. \
                   Ours via init's test console (`init-test meminfo`, image nat-t4g-e2e = nat-t4g plus the console); \
                   baseline: the script's `baseline: mem` line. used = MemTotal - MemAvailable (kernel, initramfs contents, processes)."),
        );
        out.push(("memory".to_string(), Value::Object(memory)));
    }
    if opts.wants(Part::Capacity) {
        // Met when the configured maximum is at least 131072, no flow was dropped, and the
        // table reached that maximum (less the entries already there) within 0.01 %: at the
        // limit the kernel early-drops a few unreplied entries to make room, which costs no
        // packet.
        let c = capacity.get("ours").cloned().unwrap_or_default();
        let met = match (
            c["peak_conntrack"].as_u64(),
            c["configured_max"].as_u64(),
            c["dropped"].as_u64(),
        ) {
            (Some(held), Some(max), Some(dropped)) => {
                let before = c["entries_before"].as_u64().unwrap_or(0);
                let room = max - before.min(max);
                let want = c["flows_sent"].as_u64().unwrap_or(0).min(room);
                Some(max >= CAPACITY_GOAL && dropped == 0 && held as f64 >= 0.9999 * want as f64)
            }
            _ => None,
        };
        capacity.insert(
            "goal".into(),
            json!({"flows_at_least": CAPACITY_GOAL, "met": met}),
        );
        capacity.insert("method".into(), json!(flows::METHOD));
        out.push(("capacity".to_string(), Value::Object(capacity)));
    }
    if want_tput {
        out.push(("throughput".to_string(), Value::Object(tput)));
    }
    Ok(out)
}

fn ours_memory(g: &mut Guest) -> Result<Value> {
    // Let the service settle (IMDS, first health line) before reading.
    std::thread::sleep(Duration::from_secs(2));
    let mark = g.vm.log().lines().count();
    g.vm.send("init-test meminfo\n")?;
    let (_, line) =
        g.vm.wait_for_from(mark, "meminfo MemTotal_kb=", Duration::from_secs(20))?;
    Ok(parse::memory_fields(&line))
}

fn baseline_memory(g: &Guest) -> Result<Value> {
    let (_, line) =
        g.vm.wait_for_from(g.ready_at, "baseline: mem ", Duration::from_secs(20))?;
    Ok(parse::memory_fields(&line))
}

fn iperf(vpc: &Vpc, secs: u32) -> Value {
    let mut errors = Vec::new();
    for attempt in 1..=2 {
        match iperf_once(vpc, secs) {
            Ok(mut v) => {
                v["attempt"] = json!(attempt);
                v["earlier_errors"] = json!(errors);
                return v;
            }
            Err(e) => {
                say(&format!("bench: iperf3 attempt {attempt}: {e:#}"));
                errors.push(format!("{e:#}"));
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
    json!({"error": errors.join("; ")})
}

fn iperf_once(vpc: &Vpc, secs: u32) -> Result<Value> {
    // 1500 everywhere on the data path: throughput must not depend on MSS clamping (the
    // baseline has none and the VPC's internet link is a 1500-byte black hole).
    vpc.ns.ip("private", "link set eth0 mtu 1500")?;
    let server = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &vpc.ns.name("internet"),
            "iperf3",
            "-s",
            "-1",
            "-B",
        ])
        .arg(vpc::SERVER.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting iperf3 -s in the internet namespace")?;
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = KillOnDrop(server);
    std::thread::sleep(Duration::from_millis(500));
    let out = vpc.ns.exec(
        "private",
        "iperf3",
        &[
            "-c",
            &vpc::SERVER.to_string(),
            "-t",
            &secs.to_string(),
            "-J",
            "--connect-timeout",
            "5000",
        ],
    )?;
    let v: Value = serde_json::from_str(&out).context("parsing iperf3 -J output")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3 reported no received rate: {}", v["error"]))?;
    say(&format!("bench: iperf3 {:.0} Mbit/s", bps / 1e6));
    Ok(json!({
        "bits_per_second": bps.round(),
        "retransmits": v["end"]["sum_sent"]["retransmits"],
        "seconds": secs,
    }))
}

/// nftables in the VPC for the capacity test: the private subnet's probe flows are not
/// tracked by the VPC router itself (the NAT's own table is what is measured), and the internet
/// server counts what arrives.
fn bench_rules(vpc: &Vpc) -> Result<()> {
    vpc.ns.nft(
        "vpc",
        &format!(
            "table ip benchraw {{ chain pre {{ type filter hook prerouting priority raw; iifname \"v-priv\" udp dport {}-{} notrack; }}; }}",
            flows::FIRST_PORT,
            flows::LAST_PORT
        ),
    )?;
    vpc.ns.nft(
        "internet",
        &format!(
            "table ip benchsink {{ chain input {{ type filter hook input priority 0; udp dport {}-{} counter drop; }}; }}",
            flows::FIRST_PORT,
            flows::LAST_PORT
        ),
    )?;
    Ok(())
}

/// `cargo xtask test --only bench`: the bench in its quickest form (sizes, warm build, one
/// direct boot of each image), checking that every figure came out. Not part of the default
/// test run: benchmarks do not run in CI.
pub fn smoke(root: &Path, report: &mut crate::report::Report) -> Result<()> {
    let mut opts = Options::new(root, true);
    opts.parts = vec![Part::Sizes, Part::Build, Part::Boot];
    opts.out = crate::target_dir(root).join("bench-smoke");
    let mut result = None;
    report.check("bench-quick-runs-and-writes-its-report", || {
        let r = run(root, &opts)?;
        for f in ["report.md", "report.json"] {
            if !opts.out.join(f).is_file() {
                bail!("no {f}");
            }
        }
        result = Some(r);
        Ok(())
    });
    let Some(r) = result else { return Ok(()) };
    report.check("bench-quick-has-sizes-and-build-speed", || {
        for who in ["ours", "baseline"] {
            for k in ["disk_vmdk", "initramfs_cpio_gz", "ebs_upload"] {
                if r["sizes"][who][k].as_u64().unwrap_or(0) == 0 {
                    bail!("sizes.{who}.{k} missing: {}", r["sizes"]);
                }
            }
        }
        if r["build"][OURS]["warm"]["median"].as_f64().is_none() {
            bail!("no warm build time: {}", r["build"]);
        }
        Ok(())
    });
    report.check("bench-quick-boots-both-to-ready", || {
        for who in ["ours", "baseline"] {
            let t = &r["boot"]["direct"][who]["ready_ms"]["median"];
            if t.as_f64().is_none_or(|t| t <= 0.0) {
                bail!("{who}: no ready time: {}", r["boot"]["direct"][who]["runs"]);
            }
        }
        if r["boot"]["direct"]["ratio_ours_baseline"]
            .as_f64()
            .is_none()
        {
            bail!("no ratio");
        }
        Ok(())
    });
    Ok(())
}

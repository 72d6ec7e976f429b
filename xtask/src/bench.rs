//! `cargo xtask bench`: measures our image against the by-hand baseline
//! (`images/baseline-busybox-nft.toml`, busybox sh typing the documented commands), both built
//! by the same pipeline and booted on the same emulated VPC (see `vpc`), alternating, several
//! runs each. Figures: boot to NAT ready from kernel timestamps (direct kernel boot and the
//! full UEFI path) with a breakdown, sizes, memory after ready, conntrack capacity, forwarding
//! throughput ratios under TCG, and build speed. Writes `target/bench/report.{md,json}`.
//! Benchmarks are not tests: `cargo xtask test` runs only their smoke test (see `smoke`), which
//! checks that every figure comes out, not what it is.

mod aws;
mod boot;
mod build;
mod capacity;
mod failover;
mod metrics;
mod parse;
mod render;
mod sessions;
mod sizes;
pub mod smoke;
mod throughput;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::image;
use crate::report::say;
use crate::vpc::Vpc;
use crate::{hostdeps, netns};

use boot::{Images, Img, Kind};

/// The production image: boot timing and sizes.
pub const OURS: &str = "nat-t4g";
/// The same image with init's test console, for `init-test meminfo`.
pub const OURS_TEST: &str = "nat-t4g-e2e";
pub const BASELINE: &str = "baseline-busybox-nft";

/// Long enough that no renewal happens during a boot.
const LEASE_SECS: u32 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Sizes,
    Build,
    Boot,
    Memory,
    Capacity,
    Throughput,
    /// The AWS side: ready to the private subnet online through the API, and RSS.
    Aws,
    /// Failover: the pair's gaps and connections kept, against an ASG of one.
    Failover,
    /// CloudWatch metrics: nat-init's CPU and RSS publishing and not, and the monthly bill.
    Metrics,
}

impl Part {
    pub const ALL: [Part; 9] = [
        Part::Sizes,
        Part::Build,
        Part::Boot,
        Part::Memory,
        Part::Capacity,
        Part::Throughput,
        Part::Aws,
        Part::Failover,
        Part::Metrics,
    ];

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "sizes" => Self::Sizes,
            "build" => Self::Build,
            "boot" => Self::Boot,
            "memory" => Self::Memory,
            "capacity" => Self::Capacity,
            "throughput" => Self::Throughput,
            "aws" => Self::Aws,
            "failover" => Self::Failover,
            "metrics" => Self::Metrics,
            _ => bail!(
                "{s:?}: expected a comma-separated list of sizes, build, boot, memory, capacity, throughput, aws, failover, metrics"
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
            Self::Aws => "aws",
            Self::Failover => "failover",
            Self::Metrics => "metrics",
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

/// Runs the selected measurements and writes the report; returns report.json's value.
pub fn run(root: &Path, opts: &Options) -> Result<Value> {
    hostdeps::ensure(hostdeps::QEMU)?;
    let needs_vpc = [
        Part::Boot,
        Part::Memory,
        Part::Capacity,
        Part::Throughput,
        Part::Aws,
        Part::Metrics,
    ]
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
        report.insert("build".into(), build::build_speed(root, opts)?);
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
        report.insert("sizes".into(), sizes::sizes(&ours_dir, &base_dir)?);
    }
    if needs_vpc {
        let cache = crate::target_dir(root).join("cache");
        let mut vpc = build_vpc(None)?;
        let imgs = Images {
            ours: Img::new(&ours_dir, &cache, Kind::Ours)?,
            ours_test: Img::new(&ours_test_dir, &cache, Kind::Ours)?,
            baseline: Img::new(&base_dir, &cache, Kind::Baseline)?,
        };
        if opts.wants(Part::Boot) {
            report.insert("boot".into(), boot::boot_times(&mut vpc, &imgs, opts)?);
        }
        if [Part::Memory, Part::Capacity, Part::Throughput]
            .iter()
            .any(|p| opts.wants(*p))
        {
            let s = sessions::sessions(&mut vpc, &imgs, opts)?;
            for (k, v) in s {
                report.insert(k, v);
            }
        }
        if opts.wants(Part::Aws) {
            say("bench: the AWS side");
            report.insert("aws".into(), aws::aws(root, &imgs.ours_test, opts)?);
        }
        if opts.wants(Part::Metrics) {
            say("bench: CloudWatch metrics");
            report.insert(
                "metrics".into(),
                metrics::metrics(root, &imgs.ours_test, opts)?,
            );
        }
    }
    if opts.wants(Part::Failover) {
        say("bench: failover");
        report.insert("failover".into(), failover::failover(root, opts)?);
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

/// The emulated VPC as the bench uses it: leases that outlast a boot, and the capacity
/// test's rules.
fn build_vpc(user_data: Option<String>) -> Result<Vpc> {
    let vpc = Vpc::build(LEASE_SECS, user_data).context("building the emulated VPC")?;
    capacity::vpc_rules(&vpc)?;
    Ok(vpc)
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

//! Booting the images on the emulated VPC (direct kernel boot or the full UEFI path) until
//! their ready line, and the boot-time figures: alternating runs of ours and the baseline,
//! with a breakdown of each boot from its console milestones.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::parse::{self, Milestone, milestone_times, stats};
use super::{BASELINE, OURS, Options, round1, round3};
use crate::checks::kmod;
use crate::qemu::{DirectBoot, Net, Nic, Vm, VmConfig};
use crate::report::say;
use crate::vpc::{self, Vpc};

/// t4g.nano.
const GUEST_MIB: u32 = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ours,
    Baseline,
}

pub struct Img {
    dir: PathBuf,
    direct: DirectBoot,
    pub kind: Kind,
}

impl Img {
    pub fn new(dir: &Path, cache: &Path, kind: Kind) -> Result<Self> {
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

pub struct Images {
    pub ours: Img,
    pub ours_test: Img,
    pub baseline: Img,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPath {
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
pub struct Guest {
    pub vm: Vm,
    pub ready_at: usize,
    /// Guest milliseconds since kernel start of the ready line.
    pub ready_ms: f64,
    pub wall_s: f64,
}

/// Another process on this machine may delete our namespaces mid-run (a cleanup of stale
/// test namespaces); then the VPC is built again, with the same user-data and bench settings.
pub fn ensure_vpc(vpc: &mut Vpc) -> Result<()> {
    if vpc.ns.all_exist() {
        return Ok(());
    }
    say("bench: the VPC's namespaces are gone (deleted by another process); building it again");
    let user_data = vpc.imds.lock().ok().and_then(|s| s.user_data.clone());
    // The names would be the new VPC's: the old one must not delete them when dropped.
    vpc.ns.forget();
    let new = super::build_vpc(user_data).context("building the VPC again")?;
    drop(std::mem::replace(vpc, new));
    Ok(())
}

pub fn boot(vpc: &mut Vpc, img: &Img, how: BootPath, extra_cmdline: &str) -> Result<Guest> {
    ensure_vpc(vpc)?;
    let mut cfg = VmConfig::new(img.dir.join("disk.raw"));
    cfg.nics = vec![Nic::slot5(Net::Tap(vpc::TAP.to_string()), vpc::NAT_MAC)];
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
    if img.kind == Kind::Ours {
        // As in every boot of the test suite: init loaded every module of the image.
        let mpath = img.dir.join("manifest.json");
        let manifest: Value = serde_json::from_str(
            &std::fs::read_to_string(&mpath)
                .with_context(|| format!("reading {}", mpath.display()))?,
        )
        .with_context(|| format!("parsing {}", mpath.display()))?;
        kmod::modules_loaded(&vm, &manifest, Duration::from_secs(1))
            .with_context(|| format!("{} {}", img.dir.display(), how.name()))?;
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

pub fn boot_times(vpc: &mut Vpc, imgs: &Images, opts: &Options) -> Result<Value> {
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
        // Paired runs (ours, then the baseline, booted one after the other): in how many was
        // ours ready first.
        let pairs: Vec<bool> = runs[0]
            .iter()
            .zip(&runs[1])
            .filter_map(|(a, b)| Some(a["ready_ms"].as_f64()? < b["ready_ms"].as_f64()?))
            .collect();
        let first = pairs.iter().filter(|f| **f).count();
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
                    "ready_before_baseline_runs": format!("{first}/{}", pairs.len()),
                    "ready_before_baseline_met": (!pairs.is_empty()).then_some(first == pairs.len()),
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

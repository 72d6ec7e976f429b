//! Failover's figures (`--only failover`), in the emulated VPC with its AWS double (moto, the
//! local stand-in for AWS), two guests under TCG, the same faults the failover check part uses:
//! - our pair (each member's user-data alone, as `checks::failover` sets it up): nat-a, the
//!   owner of the private client's table, is killed (QEMU SIGKILLed) or stopped (the power
//!   button), alternating, `runs` times each; after each, a replacement boots on its ENI and
//!   reclaims after the hold, ready for the next run.
//! - an fck-nat-style ASG of one in the same VPC: nat-a alone, no failover keys, its route
//!   table and Elastic IP on its static ENI; killed, then a new guest booted and attached at
//!   once (the Auto Scaling group's detection and launch time counted as zero, the kindest
//!   case for it: on AWS that alone is tens of seconds to minutes).
//!
//! Each run measures the private client's UDP echoes (every 100 ms, one socket) and one paced
//! TCP download started 3 s before the fault (every byte checked): the longest gap between two
//! answers, the echoes lost, and whether the download completed.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{Options, parse, round1};
use crate::checks::e2e::BOOT;
use crate::checks::failover::{
    DL_BYTES, DL_RATE, DL_STALL, ECHO_EVERY, HOLD_S, RESUMED_TAIL, SETTLE, TAKEOVER, private,
    setup, wait_formed, wait_route,
};
use crate::qemu::Vm;
use crate::report::say;
use crate::vpc::Vpc;
use crate::vpc::meters::{Download, DownloadReport, EchoGaps, EchoReport, Ended};

pub const METHOD: &str = "Two TCG guests (one vCPU each) in the emulated VPC, control plane on the AWS double. \
    A private client sends a numbered UDP echo every 100 ms from one socket and starts a paced 3 MiB TCP download \
    (200 KiB/s, every byte checked) 3 s before the fault. gap_ms: the longest time between two echo answers \
    (100 ms when nothing is lost); kept: the download completed with every byte right. Pair: nat-a killed \
    (SIGKILL to QEMU) or stopped (ACPI power button), a replacement booted on its ENI after each run. \
    ASG of one (fck-nat's design): nat-a alone with a static ENI and Elastic IP, killed, and a new guest of our \
    image booted on that ENI at once: detection and launch by Auto Scaling count as zero here.";

/// The goals.
const HARD_KILL_GOAL_MS: f64 = 3000.0;
const CLEAN_STOP_GOAL_MS: f64 = 500.0;
/// The ASG's replacement takes a whole boot; a connection that could survive it gets this long.
const ASG_STALL: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    Clean,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Self::Kill => "hard-kill",
            Self::Clean => "clean-stop",
        }
    }
}

/// One run's figures. `resumed`: the last [`RESUMED_TAIL`] echoes were answered.
fn figures(setup: &str, fault: Fault, e: &EchoReport, d: &DownloadReport, extra: Value) -> Value {
    let resumed = e.resumed(RESUMED_TAIL);
    let mut v = json!({
        "setup": setup,
        "fault": fault.name(),
        "gap_ms": e.longest_gap_ms,
        "echoes_sent": e.sent,
        "echoes_lost": e.lost.len(),
        "resumed": resumed,
        "kept": d.ended == Ended::Complete && d.received == d.bytes,
        "download": format!("{:?}, {} of {} bytes, longest stall {} ms", d.ended, d.received, d.bytes, d.longest_stall_ms),
    });
    if let (Some(o), Value::Object(x)) = (v.as_object_mut(), extra) {
        o.extend(x);
    }
    v
}

/// One fault on nat-a while nat-b stands by; nat-a's VM is gone afterwards.
fn pair_fault(vpc: &Vpc, a: &mut Vm, b: &Vm, table_a: &str, fault: Fault) -> Result<Value> {
    let echo = EchoGaps::start(&private(vpc), ECHO_EVERY)?;
    let dl = Download::start(&private(vpc), DL_BYTES, DL_RATE, DL_STALL)?;
    // Long enough for the connection's entry to reach nat-b.
    std::thread::sleep(Duration::from_secs(3));
    let mark = b.line_count();
    let t = Instant::now();
    match fault {
        Fault::Kill => {
            a.kill()?;
        }
        Fault::Clean => {
            a.qmp("system_powerdown")?;
        }
    }
    let (_, took) = b.wait_for_from(
        mark,
        &format!("nat-init: failover took {table_a}"),
        TAKEOVER,
    )?;
    let takeover_ms = t.elapsed().as_millis() as u64;
    say(&took);
    if fault == Fault::Clean {
        a.wait_exit(Duration::from_secs(60))?;
    }
    let d = dl.finish()?;
    // A few seconds of echoes after the download, so the tail shows the path is back.
    std::thread::sleep(Duration::from_secs(2));
    let e = echo.finish()?;
    Ok(figures(
        "pair",
        fault,
        &e,
        &d,
        json!({"takeover_seen_ms": takeover_ms}),
    ))
}

/// Our pair: `runs` of each fault, alternating, a replacement nat-a after each.
fn pair(root: &Path, runs: usize) -> Result<Vec<Value>> {
    let (disk, vpc) = setup(root)?;
    let seed = vpc.aws()?.seed().clone();
    let table_a = seed.route_table("a")?.to_string();
    let (mut a, b) = vpc.boot_pair(&disk, |_, _| {})?;
    wait_formed(&vpc, &a, &b, (0, 0))?;
    wait_route(&vpc, &table_a, "nat-a", SETTLE)?;
    let mut out = Vec::new();
    for i in 0..runs {
        for fault in [Fault::Kill, Fault::Clean] {
            say(&format!(
                "bench: failover pair run {} of {runs}, {}",
                i + 1,
                fault.name()
            ));
            let r = pair_fault(&vpc, &mut a, &b, &table_a, fault)?;
            say(&format!("bench: {r}"));
            out.push(r);
            a = Vm::start(&vpc.pair_vm_config(&disk, "nat-a")?).context("booting nat-a again")?;
            // nat-b's lines from its own boot on: its ready line is the first one.
            wait_formed(&vpc, &a, &b, (0, 0))?;
            wait_route(
                &vpc,
                &table_a,
                "nat-a",
                SETTLE + Duration::from_secs(HOLD_S),
            )?;
            // The reclaim's own moves settle before the next fault.
            std::thread::sleep(Duration::from_secs(3));
        }
    }
    Ok(out)
}

/// fck-nat's design: one instance, a static ENI, a replacement booted and attached.
fn asg_of_one(root: &Path, runs: usize) -> Result<Vec<Value>> {
    let (disk, vpc) = setup(root)?;
    let seed = vpc.aws()?.seed().clone();
    let table_a = seed.route_table("a")?.to_string();
    vpc.set_instance_user_data("nat-a", Some(seed.pair_user_data("nat-a")?))?;
    let cfg = vpc.pair_vm_config(&disk, "nat-a")?;
    let mut a = Vm::start(&cfg).context("booting nat-a alone")?;
    a.wait_for_from(0, "nat-init: aws ready ", BOOT + SETTLE)?;
    wait_route(&vpc, &table_a, "nat-a", SETTLE)?;
    let mut out = Vec::new();
    for i in 0..runs {
        say(&format!(
            "bench: failover ASG-of-one run {} of {runs}, hard-kill and replace",
            i + 1
        ));
        let echo = EchoGaps::start(&private(&vpc), ECHO_EVERY)?;
        let dl = Download::start(&private(&vpc), DL_BYTES, DL_RATE, ASG_STALL)?;
        std::thread::sleep(Duration::from_secs(3));
        let t = Instant::now();
        a.kill()?;
        a = Vm::start(&cfg).context("booting the replacement")?;
        a.wait_for_from(0, "nat-init: ready ", BOOT)?;
        let ready_ms = t.elapsed().as_millis() as u64;
        a.wait_for_from(0, "nat-init: aws ready ", SETTLE)?;
        let d = dl.finish()?;
        std::thread::sleep(Duration::from_secs(3));
        let e = echo.finish()?;
        let r = figures(
            "asg-of-one",
            Fault::Kill,
            &e,
            &d,
            json!({"replacement_ready_ms": ready_ms}),
        );
        say(&format!("bench: {r}"));
        out.push(r);
    }
    Ok(out)
}

/// Median/min/max of `key` over the runs of (`setup`, `fault`), with kept and resumed counts.
fn summary(runs: &[Value], setup: &str, fault: Fault) -> Value {
    let these: Vec<&Value> = runs
        .iter()
        .filter(|r| r["setup"] == setup && r["fault"] == fault.name())
        .collect();
    let nums = |k: &str| -> Vec<f64> { these.iter().filter_map(|r| r[k].as_f64()).collect() };
    let count = |k: &str| {
        these
            .iter()
            .filter(|r| r[k].as_bool() == Some(true))
            .count()
    };
    json!({
        "gap_ms": parse::stats(&nums("gap_ms")),
        "echoes_lost": parse::stats(&nums("echoes_lost")),
        "kept": count("kept"),
        "resumed": count("resumed"),
        "n": these.len(),
    })
}

/// The pure part: summaries, the ratio and the goals from the runs.
pub fn summarize(runs: &[Value]) -> Value {
    let kill = summary(runs, "pair", Fault::Kill);
    let clean = summary(runs, "pair", Fault::Clean);
    let asg = summary(runs, "asg-of-one", Fault::Kill);
    let median = |s: &Value| s["gap_ms"]["median"].as_f64();
    let max = |s: &Value| s["gap_ms"]["max"].as_f64();
    let ratio = match (median(&asg), median(&kill)) {
        (Some(a), Some(k)) if k > 0.0 => json!(round1(a / k)),
        _ => Value::Null,
    };
    let all = |s: &Value, k: &str| {
        let n = s["n"].as_u64().unwrap_or(0);
        n > 0 && s[k].as_u64() == Some(n)
    };
    let kept_all = all(&kill, "kept") && all(&clean, "kept");
    json!({
        "pair": {"hard_kill": kill, "clean_stop": clean},
        "asg_of_one": {"hard_kill": asg},
        "ratio_gap_asg_pair_hard_kill": ratio,
        "goal": {
            "hard_kill_gap_under_ms": HARD_KILL_GOAL_MS,
            "clean_stop_gap_under_ms": CLEAN_STOP_GOAL_MS,
            "hard_kill_met": max(&kill).map(|m| m < HARD_KILL_GOAL_MS && all(&kill, "resumed")),
            "clean_stop_met": max(&clean).map(|m| m < CLEAN_STOP_GOAL_MS && all(&clean, "resumed")),
            "every_connection_kept": kept_all,
        },
    })
}

pub fn failover(root: &Path, opts: &Options) -> Result<Value> {
    if opts.runs == 0 {
        bail!("the failover bench needs at least one run");
    }
    let mut runs = pair(root, opts.runs).context("the failover pair")?;
    runs.extend(asg_of_one(root, opts.runs).context("the ASG-of-one emulation")?);
    let mut v = summarize(&runs);
    if let Some(o) = v.as_object_mut() {
        o.insert("runs".into(), json!(runs));
        o.insert("method".into(), json!(METHOD));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(setup: &str, fault: &str, gap: u64, kept: bool) -> Value {
        json!({"setup": setup, "fault": fault, "gap_ms": gap, "echoes_lost": gap / 100,
               "kept": kept, "resumed": true})
    }

    #[test]
    fn ratio_and_goals_from_the_runs() {
        let runs = vec![
            run("pair", "hard-kill", 1500, true),
            run("pair", "hard-kill", 2500, true),
            run("pair", "clean-stop", 200, true),
            run("pair", "clean-stop", 300, true),
            run("asg-of-one", "hard-kill", 40000, false),
        ];
        let s = summarize(&runs);
        assert_eq!(s["pair"]["hard_kill"]["gap_ms"]["median"], 2000.0);
        assert_eq!(s["pair"]["hard_kill"]["kept"], 2);
        assert_eq!(s["asg_of_one"]["hard_kill"]["kept"], 0);
        assert_eq!(s["ratio_gap_asg_pair_hard_kill"], 20.0);
        assert_eq!(s["goal"]["hard_kill_met"], true);
        assert_eq!(s["goal"]["clean_stop_met"], true);
        assert_eq!(s["goal"]["every_connection_kept"], true);
    }

    #[test]
    fn one_slow_or_broken_run_fails_the_goal() {
        let runs = vec![
            run("pair", "hard-kill", 1500, true),
            run("pair", "hard-kill", 3100, true),
            run("pair", "clean-stop", 200, false),
        ];
        let s = summarize(&runs);
        assert_eq!(s["goal"]["hard_kill_met"], false);
        assert_eq!(s["goal"]["every_connection_kept"], false);
        // No ASG runs: no ratio rather than a made-up one.
        assert_eq!(s["ratio_gap_asg_pair_hard_kill"], Value::Null);
    }

    #[test]
    fn a_path_that_never_came_back_is_not_resumed() {
        let e = EchoReport {
            sent: 50,
            answered: 30,
            lost: (30..50).collect(),
            longest_gap_ms: 100,
        };
        let d = DownloadReport {
            bytes: 10,
            received: 10,
            ended: Ended::Complete,
            elapsed_ms: 1,
            longest_stall_ms: 0,
        };
        let v = figures("pair", Fault::Kill, &e, &d, json!({}));
        assert_eq!(v["resumed"], false);
        assert_eq!(v["kept"], true);
        let s = summarize(&[v]);
        assert_eq!(s["goal"]["hard_kill_met"], false);
    }
}

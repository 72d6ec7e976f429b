//! What publishing the CloudWatch metrics costs the appliance: nat-init's CPU time and RSS
//! with `metrics = true` and without, alternated in one run on the emulated VPC's AWS double
//! (moto, a local stand-in for AWS, behind HTTPS), both with the whole EC2 part configured so
//! the metrics are the only difference; and the month's CloudWatch bill at the default period,
//! as the appliance computes it for its configuration and prints when it first publishes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::aws::rss_kb;
use super::boot::{BootPath, Guest, Img, boot};
use super::{Options, parse, round3};
use crate::report::say;
use crate::vpc;
use crate::{hostdeps, target_dir};

pub const METHOD: &str = "512 MiB guest, direct kernel boot of nat-t4g-e2e, a fresh VPC and AWS double per boot with \
    the whole EC2 part in user-data, alternating without and with `metrics = true` (the default 60 s period). 80 s \
    after `aws ready` on both sides (with metrics, the first period has been published by then), a 150 s window of steady traffic through the NAT \
    (5 UDP flows and an 8 KiB HTTP download every 2 s, so conntrack entries come and go): nat-init's CPU time over \
    the window (utime + stime from /proc/PID/stat at 100 ticks a second, as CPU ms per minute of wall time), \
    and its VmRSS at the end (`init-test meminfo`). TCG: the CPU figures are \
    an emulated Cortex-A's, for the on/off ratio, not a Graviton's.";

/// The goal: publishing adds at most 1 MB of RSS.
const RSS_DELTA_GOAL_KB: f64 = 1024.0;
/// The measured window: two and a half default periods (the quick bench: 30 s).
const WINDOW: Duration = Duration::from_secs(150);
const QUICK_WINDOW: Duration = Duration::from_secs(30);
/// From `aws ready` to the window, on both sides: past the first 60 s period and its publishing.
const SETTLE: Duration = Duration::from_secs(80);
/// Clock ticks a second (USER_HZ).
const TICKS_PER_S: f64 = 100.0;

const METRICS_USER_DATA: &str = "metrics = true\nnat_name = \"bench\"\n";

/// nat-init's utime + stime in ticks, from /proc/PID/stat through init's test console.
fn cpu_ticks(g: &mut Guest, pid: u32) -> Result<u64> {
    let mark = g.vm.log().lines().count();
    g.vm.send(&format!("init-test read /proc/{pid}/stat\n"))?;
    let needle = format!("{pid} (nat-init) ");
    let (_, line) = g.vm.wait_for_from(mark, &needle, Duration::from_secs(20))?;
    let after = line
        .split_once(") ")
        .map(|(_, r)| r)
        .with_context(|| format!("no stat fields in {line}"))?;
    // Fields after the command: state is the first (field 3), utime field 14, stime 15.
    let f: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| -> Result<u64> {
        f.get(i - 3)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no field {i} in {line}"))
    };
    Ok(get(14)? + get(15)?)
}

/// The pid init last started nat-init with.
fn pid(g: &Guest) -> Result<u32> {
    g.vm.log()
        .lines()
        .filter_map(|l| l.split("init: started nat-init pid=").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .next_back()
        .context("no `init: started nat-init pid=` line")
}

fn one(root: &std::path::Path, img: &Img, metrics: bool, window: Duration) -> Result<Value> {
    let mut v = super::build_vpc(None)?;
    let moto = hostdeps::ensure_moto(&target_dir(root))?;
    v.start_aws(root, &moto)?;
    let mut ud = v.aws()?.seed().nat_user_data();
    if metrics {
        ud.push_str(METRICS_USER_DATA);
    }
    v.set_user_data(Some(ud));
    let mut g = boot(&mut v, img, BootPath::Direct, "")?;
    let (aws_ready_at, _) =
        g.vm.wait_for_from(g.ready_at, "nat-init: aws ready ", Duration::from_secs(120))?;
    // Both sides settle as long: the first period closes and is published (with metrics)
    // before the window, and the AWS side's start-up work is over on both.
    std::thread::sleep(SETTLE);
    let mut cost = Value::Null;
    if metrics {
        let (_, line) = g.vm.wait_for_from(
            aws_ready_at,
            "nat-init: metrics published to CloudWatch",
            Duration::ZERO,
        )?;
        cost = json!(line.split("at most ").nth(1).unwrap_or(&line).trim());
    }
    let pid = pid(&g)?;
    let t0 = cpu_ticks(&mut g, pid)?;
    let start = Instant::now();
    let private = v.ns.name("private");
    while start.elapsed() < window {
        vpc::udp_echo(&private, 5)?;
        crate::checks::e2e::curl(
            &v,
            "private",
            &[
                "-o",
                "/dev/null",
                &format!("http://{}/bytes/8192", vpc::SERVER),
            ],
        )?;
        std::thread::sleep(Duration::from_secs(2));
    }
    let secs = start.elapsed().as_secs_f64();
    let t1 = cpu_ticks(&mut g, pid)?;
    let cpu_ms_per_min = (t1.saturating_sub(t0)) as f64 / TICKS_PER_S * 1000.0 / (secs / 60.0);
    let published = if metrics {
        g.vm.log()
            .lines()
            .filter(|l| l.contains("nat-init: health "))
            .filter_map(|l| l.split("aws_metrics_sent=").nth(1))
            .filter_map(|r| r.split_whitespace().next()?.parse::<u64>().ok())
            .next_back()
    } else {
        None
    };
    Ok(json!({
        "metrics": metrics,
        "cpu_ms_per_min": round3(cpu_ms_per_min),
        "rss_kb": rss_kb(&mut g)?,
        "periods_published": published,
        "cost": cost,
    }))
}

pub fn metrics(root: &std::path::Path, img: &Img, opts: &Options) -> Result<Value> {
    let mut runs = Vec::new();
    for i in 0..opts.runs {
        for with in [false, true] {
            say(&format!(
                "bench: metrics run {} of {}, {}",
                i + 1,
                opts.runs,
                if with { "publishing" } else { "not publishing" }
            ));
            runs.push(one(
                root,
                img,
                with,
                if opts.quick { QUICK_WINDOW } else { WINDOW },
            )?);
        }
    }
    let pick = |with: bool, k: &str| -> Vec<f64> {
        runs.iter()
            .filter(|r| r["metrics"].as_bool() == Some(with))
            .filter_map(|r| r[k].as_f64())
            .collect()
    };
    let stats =
        |k: &str| json!({"on": parse::stats(&pick(true, k)), "off": parse::stats(&pick(false, k))});
    let (rss, cpu) = (stats("rss_kb"), stats("cpu_ms_per_min"));
    let median = |v: &Value, side: &str| v[side]["median"].as_f64();
    let rss_delta = match (median(&rss, "on"), median(&rss, "off")) {
        (Some(a), Some(b)) => Some(round3(a - b)),
        _ => None,
    };
    let cpu_ratio = match (median(&cpu, "on"), median(&cpu, "off")) {
        (Some(a), Some(b)) if b > 0.0 => json!(round3(a / b)),
        _ => Value::Null,
    };
    let cost = runs
        .iter()
        .find_map(|r| r["cost"].as_str().map(str::to_string));
    Ok(json!({
        "rss_kb": rss,
        "cpu_ms_per_min": cpu,
        "rss_delta_kb": rss_delta,
        "ratio_cpu_on_off": cpu_ratio,
        "monthly_cost": cost,
        "goal": {"rss_delta_at_most_kb": RSS_DELTA_GOAL_KB, "met": rss_delta.map(|d| d <= RSS_DELTA_GOAL_KB)},
        "runs": runs,
        "method": METHOD,
    }))
}

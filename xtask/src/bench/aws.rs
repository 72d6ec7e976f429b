//! The AWS side's figures, on the emulated VPC's AWS double (moto, a local stand-in for AWS):
//! from `nat-init: ready` to `nat-init: aws ready` (the appliance alone turning the source/dest
//! check off, associating two Elastic IPs and pointing the private route table at itself, each
//! read back), then the private client's first echo through the NAT; and nat-init's RSS after
//! ready with the AWS side configured and without, alternated in one run so the ratio is fair.
//! Each boot gets a VPC of its own, seeded just launched.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::boot::{BootPath, Img, boot};
use super::{Options, parse, round3};
use crate::report::say;
use crate::vpc;
use crate::{hostdeps, target_dir};

pub const METHOD: &str = "512 MiB guest, direct kernel boot of nat-t4g-e2e, a fresh VPC and AWS double per boot \
    (just launched: check on, no route, no Elastic IP), alternating without and with the AWS keys in user-data. \
    api_ms: guest clock from `nat-init: ready` to `nat-init: aws ready` (both elapsed_ms); online_ms: host clock from \
    the ready line seen to the private client's first UDP echo through the NAT. RSS: VmRSS of nat-init \
    (`init-test meminfo`) 2 s after ready (without) or after aws ready (with).";

/// The goal from the issue: nat-init's RSS after ready under 8 MB.
const RSS_GOAL_KB: f64 = 8.0 * 1024.0;

/// nat-init's VmRSS through init's test console.
pub(super) fn rss_kb(g: &mut super::boot::Guest) -> Result<f64> {
    let mark = g.vm.log().lines().count();
    g.vm.send("init-test meminfo\n")?;
    let (_, line) =
        g.vm.wait_for_from(mark, "meminfo MemTotal_kb=", Duration::from_secs(20))?;
    parse::memory_fields(&line)["rss_kb_nat-init"]
        .as_f64()
        .with_context(|| format!("no rss_kb_nat-init in {line}"))
}

/// One boot: a fresh VPC with its AWS double; with `aws`, the user-data asks for everything.
fn one(root: &std::path::Path, img: &Img, aws: bool) -> Result<Value> {
    let mut v = super::build_vpc(None)?;
    let moto = hostdeps::ensure_moto(&target_dir(root))?;
    v.start_aws(root, &moto)?;
    if aws {
        let ud = v.aws()?.seed().nat_user_data();
        v.set_user_data(Some(ud));
    }
    let mut g = boot(&mut v, img, BootPath::Direct, "")?;
    let seen_ready = Instant::now();
    if !aws {
        std::thread::sleep(Duration::from_secs(2));
        return Ok(json!({"aws": false, "rss_kb": rss_kb(&mut g)?}));
    }
    let (_, line) =
        g.vm.wait_for_from(g.ready_at, "nat-init: aws ready ", Duration::from_secs(120))?;
    let aws_ms = parse::own_clock(&line).with_context(|| format!("no elapsed_ms in {line}"))?;
    let t = Instant::now();
    let online_ms = loop {
        if vpc::udp_echo(&v.ns.name("private"), 1)? == 1 {
            break seen_ready.elapsed().as_secs_f64() * 1000.0;
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("the private client got no echo within 30 s of `aws ready`");
        }
    };
    Ok(json!({
        "aws": true,
        "api_ms": round3(aws_ms - g.ready_ms),
        "online_ms": round3(online_ms),
        "rss_kb": rss_kb(&mut g)?,
    }))
}

pub fn aws(root: &std::path::Path, img: &Img, opts: &Options) -> Result<Value> {
    let mut runs = Vec::new();
    for i in 0..opts.runs {
        for with in [false, true] {
            say(&format!(
                "bench: aws run {} of {}, {}",
                i + 1,
                opts.runs,
                if with { "with the AWS side" } else { "without" }
            ));
            runs.push(one(root, img, with)?);
        }
    }
    let pick = |with: bool, k: &str| -> Vec<f64> {
        runs.iter()
            .filter(|r| r["aws"].as_bool() == Some(with))
            .filter_map(|r| r[k].as_f64())
            .collect()
    };
    let (on, off) = (
        parse::stats(&pick(true, "rss_kb")),
        parse::stats(&pick(false, "rss_kb")),
    );
    let ratio = match (on["median"].as_f64(), off["median"].as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!(round3(a / b)),
        _ => Value::Null,
    };
    let met = on["median"].as_f64().map(|m| m < RSS_GOAL_KB);
    Ok(json!({
        "api_ms": parse::stats(&pick(true, "api_ms")),
        "online_ms": parse::stats(&pick(true, "online_ms")),
        "rss_kb": {"aws_on": on, "aws_off": off},
        "ratio_rss_on_off": ratio,
        "goal": {"rss_under_kb": RSS_GOAL_KB, "met": met},
        "runs": runs,
        "method": METHOD,
    }))
}

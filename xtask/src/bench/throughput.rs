//! Throughput: iperf3 TCP from the private client to the internet server through the guest.
//! Under TCG the absolute numbers mean little; the ratios between sessions are the result.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::round3;
use crate::report::say;
use crate::vpc::{self, Vpc};

/// Each session's rate relative to forwarding without NAT rules, and the flowtable's gain.
pub fn ratios(tput: &serde_json::Map<String, Value>) -> Value {
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
    Value::Object(ratios)
}

pub fn method(secs: u32) -> String {
    format!(
        "iperf3 TCP, {secs} s, private client 10.0.1.10 -> internet server {} through the guest; MTU 1500 on the client; \
         TCG makes absolute numbers meaningless, the ratios are the result. Forwarding without NAT rules: the baseline \
         image booted with baseline.mode=forward (ip_forward=1, no nft table), the VPC's internet gateway told to pass \
         private sources, replies routed back through the guest.",
        vpc::SERVER
    )
}

pub fn iperf(vpc: &Vpc, secs: u32) -> Value {
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

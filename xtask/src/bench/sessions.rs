//! Memory, capacity and throughput: a few long-lived boots (direct kernel boot, 512 MiB),
//! each measuring what it can while it is up: ours with the flowtable, ours without it, the
//! baseline, and the kernel forwarding without NAT rules as the throughput control.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::boot::{BootPath, Guest, Images, Kind, boot};
use super::{Options, Part, capacity, parse, round3, throughput};
use crate::report::say;
use crate::vpc::Vpc;

pub fn sessions(vpc: &mut Vpc, imgs: &Images, opts: &Options) -> Result<Vec<(String, Value)>> {
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
                tput.insert("ours_flowtable".into(), throughput::iperf(vpc, secs));
            }
            if opts.wants(Part::Capacity) {
                capacity.insert(
                    "ours".into(),
                    capacity::capacity(vpc, &mut g, Kind::Ours, opts.quick, opts.flows)
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
            .map(|_g| throughput::iperf(vpc, secs))
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
                tput.insert("baseline_masquerade".into(), throughput::iperf(vpc, secs));
            }
            if opts.wants(Part::Capacity) {
                capacity.insert(
                    "baseline".into(),
                    capacity::capacity(
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
            Ok(throughput::iperf(vpc, secs))
        })
        .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
        tput.insert("forward_no_nat".into(), r);
        let ratios = throughput::ratios(&tput);
        tput.insert("ratios".into(), ratios);
        tput.insert("method".into(), json!(throughput::method(secs)));
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
        let ours = capacity.get("ours").cloned().unwrap_or_default();
        capacity.insert("goal".into(), capacity::goal(&ours));
        capacity.insert("method".into(), json!(capacity::METHOD));
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

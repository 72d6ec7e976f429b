//! report.md from report.json's value: every figure, ours and the baseline side by side.

use std::fmt::Write;

use serde_json::Value;

fn num(v: &Value) -> String {
    match v {
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if n.is_f64() && f.abs() < 10.0 {
                format!("{f:.2}")
            } else if n.is_f64() {
                format!("{f:.1}")
            } else {
                n.to_string()
            }
        }
        Value::Null => "–".into(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn ratio(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "–".into(), |r| format!("{r:.3}×"))
}

fn mib(v: &Value) -> String {
    v.as_u64().map_or_else(
        || "–".into(),
        |b| format!("{:.2} MiB ({b} B)", b as f64 / (1u64 << 20) as f64),
    )
}

fn goal(v: &Value) -> &'static str {
    match v.as_bool() {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    }
}

/// `median (min–max, n=N)` of a stats object.
fn spread(s: &Value) -> String {
    if s["n"].as_u64().unwrap_or(0) == 0 {
        return "no data".into();
    }
    format!(
        "{} ({}–{}, n={})",
        num(&s["median"]),
        num(&s["min"]),
        num(&s["max"]),
        num(&s["n"])
    )
}

fn errors(s: &mut String, who: &str, v: &Value) {
    if let Some(e) = v["error"].as_str() {
        let first = e.lines().next().unwrap_or(e);
        let _ = writeln!(s, "\n{who}: **error**: {first}");
    }
}

pub fn markdown(r: &Value) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Bench report: ours (`nat-t4g`) against the by-hand baseline (`baseline-busybox-nft`)\n"
    );
    let m = &r["machine"];
    let _ = writeln!(
        s,
        "- date: {}\n- commit: `{}`\n- machine: {} ({} CPUs, {} MiB), {}\n- {}; {}\n- mode: {}, {} run(s) per image and boot path, alternating\n- bench took {} s",
        num(&r["date"]),
        num(&r["commit"]),
        num(&m["cpu"]),
        num(&m["cpus"]),
        num(&m["mem_mib"]),
        num(&m["kernel"]),
        num(&m["qemu"]),
        num(&m["accelerator"]),
        if r["quick"].as_bool() == Some(true) {
            "--quick"
        } else {
            "full"
        },
        num(&r["runs"]),
        num(&r["bench_seconds"]),
    );

    if let Some(b) = r.get("boot") {
        let _ = writeln!(
            s,
            "\n## 1. Boot to NAT ready (guest ms since kernel start)\n"
        );
        let _ = writeln!(
            s,
            "| boot path | ours median (min–max, n) | baseline median (min–max, n) | ours/baseline | goal ≤ 0.5× | ours ready first (paired runs) | goal: every run | init's own work, ours | goal < 50 ms |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        for path in ["direct", "uefi"] {
            let Some(p) = b.get(path) else { continue };
            let _ = writeln!(
                s,
                "| {path} | {} | {} | {} | {} | {} | {} | {} | {} |",
                spread(&p["ours"]["ready_ms"]),
                spread(&p["baseline"]["ready_ms"]),
                ratio(&p["ratio_ours_baseline"]),
                goal(&p["goal"]["ratio_met"]),
                p["goal"]["ready_before_baseline_runs"]
                    .as_str()
                    .unwrap_or("?"),
                goal(&p["goal"]["ready_before_baseline_met"]),
                spread(&p["ours"]["own_work_ms"]),
                goal(&p["goal"]["own_work_met"]),
            );
        }
        for path in ["direct", "uefi"] {
            let Some(p) = b.get(path) else { continue };
            for who in ["ours", "baseline"] {
                let phases = p[who]["phases_median_ms"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if phases.is_empty() {
                    continue;
                }
                let _ = writeln!(
                    s,
                    "\nBreakdown, {who}, {path} (median ms of each phase, ending at the named line):\n"
                );
                let _ = writeln!(
                    s,
                    "| {} |",
                    phases
                        .iter()
                        .map(|x| num(&x[0]))
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
                let _ = writeln!(s, "|{}", "---|".repeat(phases.len()));
                let _ = writeln!(
                    s,
                    "| {} |",
                    phases
                        .iter()
                        .map(|x| num(&x[1]))
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
            }
            for who in ["ours", "baseline"] {
                for run in p[who]["runs"].as_array().into_iter().flatten() {
                    errors(&mut s, &format!("{who} ({path})"), run);
                }
            }
        }
        let _ = writeln!(
            s,
            "\nMethod: {} Own work = ready − init_started − the phases ending in a server's answer (DHCP lease; IMDS for ours).",
            num(&b["method"])
        );
    }

    if let Some(z) = r.get("sizes") {
        let _ = writeln!(s, "\n## 2. Sizes\n");
        let _ = writeln!(s, "| artifact | ours | baseline | ours/baseline |");
        let _ = writeln!(s, "|---|---|---|---|");
        for (k, label) in [
            ("disk_vmdk", "disk.vmdk"),
            ("initramfs", "initramfs.img"),
            ("rootfs_tar", "rootfs.tar (uncompressed tree)"),
            (
                "ebs_upload",
                "EBS upload (non-zero 512 KiB blocks × 512 KiB)",
            ),
        ] {
            let _ = writeln!(
                s,
                "| {label} | {} | {} | {} |",
                mib(&z["ours"][k]),
                mib(&z["baseline"][k]),
                ratio(&z["ratio_ours_baseline"][k])
            );
        }
        let a = &z["ami_reference"];
        let _ = writeln!(
            s,
            "\nAgainst a NAT AMI's root volume: ours uploads {} of its {} ({}). Reference: {} Source: {}.\n\nGoal: under 16 MiB uploaded: **{}**.",
            mib(&z["ours"]["ebs_upload"]),
            mib(&a["bytes"]),
            ratio(&a["ratio_ours_upload"]),
            num(&a["what"]),
            num(&a["source"]),
            goal(&z["goal"]["met"])
        );
    }

    if let Some(a) = r.get("aws") {
        let _ = writeln!(s, "\n## The AWS side (on the emulated VPC's AWS double)\n");
        stats_table(
            &mut s,
            &[
                ("ready → aws ready, guest ms", &a["api_ms"]),
                (
                    "ready → private client's first echo, host ms",
                    &a["online_ms"],
                ),
                ("nat-init RSS kB, AWS side on", &a["rss_kb"]["aws_on"]),
                ("nat-init RSS kB, AWS side off", &a["rss_kb"]["aws_off"]),
            ],
        );
        let _ = writeln!(
            s,
            "\nRSS on/off: {}. Goal: nat-init under 8 MB with the AWS side on: **{}**.\n\nMethod: {}",
            ratio(&a["ratio_rss_on_off"]),
            goal(&a["goal"]["met"]),
            num(&a["method"])
        );
    }

    if let Some(f) = r.get("failover") {
        failover(&mut s, f);
    }

    if let Some(m) = r.get("metrics") {
        let _ = writeln!(
            s,
            "\n## CloudWatch metrics: publishing on and off (on the emulated VPC's AWS double)\n"
        );
        stats_table(
            &mut s,
            &[
                (
                    "nat-init CPU ms a minute, publishing",
                    &m["cpu_ms_per_min"]["on"],
                ),
                (
                    "nat-init CPU ms a minute, not publishing",
                    &m["cpu_ms_per_min"]["off"],
                ),
                ("nat-init RSS kB, publishing", &m["rss_kb"]["on"]),
                ("nat-init RSS kB, not publishing", &m["rss_kb"]["off"]),
            ],
        );
        let _ = writeln!(
            s,
            "\nCPU on/off: {}. RSS added: {} kB. Goal: at most 1 MB more: **{}**. The month's bill at the default period, as the appliance computes it: {}.\n\nMethod: {}",
            ratio(&m["ratio_cpu_on_off"]),
            num(&m["rss_delta_kb"]),
            goal(&m["goal"]["met"]),
            num(&m["monthly_cost"]),
            num(&m["method"])
        );
    }

    if let Some(mem) = r.get("memory") {
        let _ = writeln!(s, "\n## 3. Memory after ready (512 MiB guest)\n");
        let _ = writeln!(
            s,
            "| | MemTotal kB | MemAvailable kB | used kB (Total − Available) | RSS kB |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|");
        for who in ["ours", "baseline"] {
            let v = &mem[who];
            let used = v["MemTotal_kb"]
                .as_u64()
                .zip(v["MemAvailable_kb"].as_u64())
                .map(|(t, a)| t.saturating_sub(a).to_string())
                .unwrap_or_else(|| "–".into());
            let rss: Vec<String> = v
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, x)| k.strip_prefix("rss_kb_").map(|n| format!("{n} {}", num(x))))
                .collect();
            let _ = writeln!(
                s,
                "| {who} | {} | {} | {used} | {} |",
                num(&v["MemTotal_kb"]),
                num(&v["MemAvailable_kb"]),
                rss.join(", ")
            );
        }
        errors(&mut s, "ours", &mem["ours"]);
        errors(&mut s, "baseline", &mem["baseline"]);
        let _ = writeln!(
            s,
            "\nused ours/baseline: {}. Goal: the appliance uses under 32 MiB: **{}**.\n\nMethod: {}",
            ratio(&mem["ratio_used_ours_baseline"]),
            goal(&mem["goal"]["met"]),
            num(&mem["method"])
        );
    }

    if let Some(c) = r.get("capacity") {
        let _ = writeln!(s, "\n## 4. Conntrack capacity (512 MiB guest)\n");
        let _ = writeln!(
            s,
            "| | configured max | entries before | flows sent | arrived | dropped | flows held (peak) | send time s | flows/s | MemAvailable after, kB |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        for who in ["ours", "baseline"] {
            let v = &c[who];
            let _ = writeln!(
                s,
                "| {who} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                num(&v["configured_max"]),
                num(&v["entries_before"]),
                num(&v["flows_sent"]),
                num(&v["flows_arrived"]),
                num(&v["dropped"]),
                num(&v["peak_conntrack"]),
                num(&v["send_seconds"]),
                num(&v["flows_per_second"]),
                num(&v["mem_available_kb_after"]),
            );
        }
        errors(&mut s, "ours", &c["ours"]);
        errors(&mut s, "baseline", &c["baseline"]);
        let _ = writeln!(
            s,
            "\nGoal: at least 131072 concurrent flows with no drops before the configured maximum (met when the maximum is at least 131072, nothing was dropped, and the table filled to within 0.01 % of the maximum less the entries already there): **{}**.\n\nMethod: {}",
            goal(&c["goal"]["met"]),
            num(&c["method"])
        );
    }

    if let Some(t) = r.get("throughput") {
        let _ = writeln!(s, "\n## 5. Forwarding throughput under TCG (iperf3)\n");
        let _ = writeln!(
            s,
            "| configuration | Mbit/s (TCG, not meaningful alone) | retransmits |"
        );
        let _ = writeln!(s, "|---|---|---|");
        for (k, label) in [
            ("ours_flowtable", "ours, flowtable on (default)"),
            ("ours_no_flowtable", "ours, flowtable off (user-data)"),
            ("baseline_masquerade", "baseline (one masquerade rule)"),
            ("forward_no_nat", "forwarding, no NAT rules"),
        ] {
            let v = &t[k];
            let mbps = v["bits_per_second"]
                .as_f64()
                .map_or_else(|| "–".into(), |b| format!("{:.0}", b / 1e6));
            let _ = writeln!(s, "| {label} | {mbps} | {} |", num(&v["retransmits"]));
        }
        let _ = writeln!(s, "\n| ratio | value |\n|---|---|");
        for (k, v) in t["ratios"].as_object().into_iter().flatten() {
            let _ = writeln!(s, "| {k} | {} |", ratio(v));
        }
        for k in [
            "ours_flowtable",
            "ours_no_flowtable",
            "baseline_masquerade",
            "forward_no_nat",
        ] {
            errors(&mut s, k, &t[k]);
        }
        let _ = writeln!(s, "\nMethod: {}", num(&t["method"]));
    }

    if let Some(b) = r.get("build") {
        let _ = writeln!(s, "\n## 6. Build speed (`cargo xtask image`)\n");
        let _ = writeln!(s, "| profile | cold s | warm s median (min–max, n) |");
        let _ = writeln!(s, "|---|---|---|");
        for p in [super::OURS, super::BASELINE] {
            let cold = &b[p]["cold"];
            let cold = if let Some(why) = cold["skipped"].as_str() {
                format!("skipped ({why})")
            } else {
                num(&cold["seconds"])
            };
            let _ = writeln!(s, "| {p} | {cold} | {} |", spread(&b[p]["warm"]));
        }
        for p in [super::OURS, super::BASELINE] {
            for (which, v) in [("cold", &b[p]["cold"]), ("warm", &b[p]["warm_last"])] {
                let Some(st) = v["stages"].as_array() else {
                    continue;
                };
                let _ = writeln!(
                    s,
                    "\n{p}, {which}, per stage (s): {}",
                    st.iter()
                        .map(|x| format!("{} {}", num(&x[0]), num(&x[1])))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        let _ = writeln!(
            s,
            "\nCold: inputs cached, dependencies compiled, our crates cleaned (`cargo clean -p init -p nat-init` for the musl target), output directory removed. Warm: nothing changed. Times include cargo's own start-up. Goal: warm under 3 s: **{}**.",
            goal(&b["goal"]["met"])
        );
    }
    s
}

/// Failover: our pair's gaps and connections kept, against the ASG-of-one emulation.
fn failover(s: &mut String, f: &Value) {
    let _ = writeln!(
        s,
        "\n## Failover (two guests, the emulated VPC's AWS double)\n"
    );
    let _ = writeln!(
        s,
        "| setup | fault | echo gap ms, median (min–max, n) | echoes lost, median | downloads kept | path back |\n|---|---|---|---|---|---|"
    );
    for (setup, fault, v) in [
        ("our pair", "hard kill", &f["pair"]["hard_kill"]),
        ("our pair", "clean stop", &f["pair"]["clean_stop"]),
        (
            "ASG of one (fck-nat style)",
            "hard kill",
            &f["asg_of_one"]["hard_kill"],
        ),
    ] {
        let _ = writeln!(
            s,
            "| {setup} | {fault} | {} | {} | {} of {} | {} of {} |",
            spread(&v["gap_ms"]),
            num(&v["echoes_lost"]["median"]),
            num(&v["kept"]),
            num(&v["n"]),
            num(&v["resumed"]),
            num(&v["n"]),
        );
    }
    let g = &f["goal"];
    let _ = writeln!(
        s,
        "\nGap, ASG of one / our pair (hard kill, medians): {}. Goals: hard-kill gap under {} ms: **{}**; clean-stop gap under {} ms: **{}**; every download kept: **{}**.\n\nMethod: {}",
        ratio(&f["ratio_gap_asg_pair_hard_kill"]),
        num(&g["hard_kill_gap_under_ms"]),
        goal(&g["hard_kill_met"]),
        num(&g["clean_stop_gap_under_ms"]),
        goal(&g["clean_stop_met"]),
        goal(&g["every_connection_kept"]),
        num(&f["method"]),
    );
}

/// A table of figures, each `median (min–max, n)` from `parse::stats`.
fn stats_table(s: &mut String, rows: &[(&str, &Value)]) {
    let _ = writeln!(s, "| figure | median (min–max, n) |\n|---|---|");
    for (what, v) in rows {
        let _ = writeln!(
            s,
            "| {what} | {} ({}–{}, {}) |",
            num(&v["median"]),
            num(&v["min"]),
            num(&v["max"]),
            num(&v["n"])
        );
    }
}

//! Reading the bench's figures out of text: kernel-timestamped console lines, `key=value`
//! fields, the stage times `cargo xtask image` prints; and the statistics over runs.

use serde_json::{Value, json};

/// A point in the boot, found as the first console line (with a kernel timestamp) whose text
/// after the timestamp starts with `needles[0]` and contains every other needle.
#[derive(Debug, Clone, Copy)]
pub struct Milestone {
    pub name: &'static str,
    pub needles: &'static [&'static str],
    /// The phase ending here is mostly waiting for a server (DHCP, IMDS), not the guest's work.
    pub waits: bool,
}

const fn m(name: &'static str, needles: &'static [&'static str], waits: bool) -> Milestone {
    Milestone {
        name,
        needles,
        waits,
    }
}

/// Ours: kernel, init (mounts, modules), nat-init's steps.
pub const OURS_MILESTONES: &[Milestone] = &[
    m("kernel_to_init", &["Run /init as init process"], false),
    m("modules_loaded", &["init: loaded "], false),
    m("init_up", &["init: up in"], false),
    m("nat_init_started", &["nat-init: starting"], false),
    m("link_up", &["nat-init: link ", "up with carrier"], false),
    m("dhcp_bound", &["nat-init: dhcp lease"], true),
    m("imds", &["nat-init: imds "], true),
    m("sysctl", &["nat-init: sysctl "], false),
    m("rules_installed", &["nat-init: nft table"], false),
    m("ready", &["nat-init: ready "], false),
];

/// The baseline script's own log lines.
pub const BASELINE_MILESTONES: &[Milestone] = &[
    m("kernel_to_init", &["Run /init as init process"], false),
    m("script_started", &["baseline: start"], false),
    m("modules_loaded", &["baseline: modules"], false),
    m("dhcp_bound", &["baseline: dhcp"], true),
    m("ready", &["baseline: ready "], false),
];

/// `[    1.498366] text` -> (1.498366, "text").
pub fn timestamped(line: &str) -> Option<(f64, &str)> {
    let open = line.find('[')?;
    let rest = &line[open + 1..];
    let close = rest.find(']')?;
    let t: f64 = rest[..close].trim().parse().ok()?;
    Some((t, rest[close + 1..].trim_start()))
}

/// The value of `key=value` among the whitespace-separated words of `line`.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Every `key=<integer>` word of a line, as a JSON object.
pub fn memory_fields(line: &str) -> Value {
    let mut m = serde_json::Map::new();
    for w in line.split_whitespace() {
        if let Some((k, v)) = w.split_once('=')
            && let Ok(n) = v.parse::<u64>()
        {
            m.insert(k.to_string(), json!(n));
        }
    }
    Value::Object(m)
}

/// The milestones found in a console log, in time order, in ms since kernel start.
pub fn milestone_times(log: &str, milestones: &[Milestone]) -> Vec<(String, f64)> {
    let stamped: Vec<(f64, &str)> = log.lines().filter_map(timestamped).collect();
    let mut found: Vec<(String, f64)> = milestones
        .iter()
        .filter_map(|ms| {
            stamped
                .iter()
                .find(|(_, text)| {
                    text.starts_with(ms.needles[0])
                        && ms.needles[1..].iter().all(|n| text.contains(n))
                })
                .map(|(t, _)| (ms.name.to_string(), t * 1000.0))
        })
        .collect();
    found.sort_by(|a, b| a.1.total_cmp(&b.1));
    found
}

/// Each phase's length: from the previous milestone (or kernel start) to this one.
pub fn phases(found: &[(String, f64)]) -> Value {
    let mut prev = 0.0;
    let mut out = Vec::new();
    for (name, t) in found {
        out.push(json!([name, ((t - prev) * 10.0).round() / 10.0]));
        prev = *t;
    }
    Value::Array(out)
}

fn milestone(name: &str) -> Option<&'static Milestone> {
    OURS_MILESTONES
        .iter()
        .chain(BASELINE_MILESTONES)
        .find(|m| m.name == name)
}

/// The guest's own work from init's start to ready, less the phases spent waiting for a
/// server (DHCP, IMDS). None without the init milestone.
pub fn own_work(found: &[(String, f64)], ready_ms: f64) -> Option<f64> {
    let init = found.iter().find(|(n, _)| n == "kernel_to_init")?.1;
    let mut prev = 0.0;
    let mut waiting = 0.0;
    for (name, t) in found {
        if milestone(name).is_some_and(|m| m.waits) {
            waiting += t - prev;
        }
        prev = *t;
    }
    Some(ready_ms - init - waiting)
}

/// Median, minimum, maximum and spread (max - min) of the samples.
pub fn stats(v: &[f64]) -> Value {
    if v.is_empty() {
        return json!({"n": 0});
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "n": n,
        "median": r(median),
        "min": r(s[0]),
        "max": r(s[n - 1]),
        "spread": r(s[n - 1] - s[0]),
    })
}

/// The median of each phase over runs, in the first run's order.
pub fn median_phases(runs: &[Value]) -> Value {
    let mut names: Vec<String> = Vec::new();
    for r in runs {
        for p in r["phases_ms"].as_array().into_iter().flatten() {
            if let Some(n) = p[0].as_str()
                && !names.iter().any(|x| x == n)
            {
                names.push(n.to_string());
            }
        }
    }
    let mut out = Vec::new();
    for n in names {
        let v: Vec<f64> = runs
            .iter()
            .flat_map(|r| r["phases_ms"].as_array().cloned().unwrap_or_default())
            .filter(|p| p[0].as_str() == Some(n.as_str()))
            .filter_map(|p| p[1].as_f64())
            .collect();
        out.push(json!([n, stats(&v)["median"]]));
    }
    Value::Array(out)
}

/// `[xtask] binaries: 0.41 s` lines of `cargo xtask image`, in order.
pub fn stage_times(stderr: &str) -> Vec<(String, f64)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("[xtask] ")?;
            let (name, value) = rest.split_once(": ")?;
            if name.contains(' ') {
                return None;
            }
            let secs: f64 = value.strip_suffix(" s")?.parse().ok()?;
            Some((name.to_string(), secs))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS_LOG: &str = "\
[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x410fd083]
[    1.498366] Run /init as init process
init: up in 99 ms
[    1.550000] init: loaded 24 modules in 40 ms (0 failed)
[    1.560000] init: up in 60 ms
[    1.570000] nat-init: starting version=0.1.0 config=/etc/nat-init.toml
[    1.600000] nat-init: link ens5 up with carrier mac=52:54:00:0a:00:0a
[    1.900000] nat-init: dhcp lease addr=10.0.0.10/24 gw=10.0.0.1 mtu=9001 lease_s=3600 server=10.0.0.1
[    1.950000] nat-init: imds instance=i-1 mac=52:54:00:0a:00:0a vpc=10.0.0.0/16
[    1.960000] nat-init: sysctl ip_forward=1
[    1.970000] nat-init: nft table ip nat installed and verified
[    1.975000] nat-init: ready iface=ens5 addr=10.0.0.10/24 gw=10.0.0.1 mtu=9001 private=10.0.0.0/16 elapsed_ms=1975
";

    #[test]
    fn timestamps_and_fields() {
        assert_eq!(
            timestamped("[    1.498366] Run /init as init process"),
            Some((1.498366, "Run /init as init process"))
        );
        assert_eq!(timestamped("init: up in 99 ms"), None);
        assert_eq!(timestamped("[ x ] y"), None);
        let l = "nat-init: ready iface=ens5 elapsed_ms=1975";
        assert_eq!(field(l, "elapsed_ms"), Some("1975"));
        assert_eq!(field(l, "elapsed"), None);
        let m = memory_fields("init: test console: meminfo MemTotal_kb=490240 rss_kb_init=? x");
        assert_eq!(m, json!({"MemTotal_kb": 490240}));
    }

    #[test]
    fn milestones_phases_and_own_work() {
        let found = milestone_times(OURS_LOG, OURS_MILESTONES);
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), OURS_MILESTONES.len(), "{names:?}");
        assert_eq!(names[0], "kernel_to_init");
        assert_eq!(names[names.len() - 1], "ready");
        // The untimestamped copy of "init: up in" is not used.
        let up = found.iter().find(|(n, _)| n == "init_up").unwrap().1;
        assert!((up - 1560.0).abs() < 1e-6);
        let p = phases(&found);
        assert_eq!(p[0], json!(["kernel_to_init", 1498.4]));
        assert_eq!(p[5], json!(["dhcp_bound", 300.0]));
        // 1975 - 1498.366 - 300 (dhcp) - 50 (imds)
        let own = own_work(&found, 1975.0).unwrap();
        assert!((own - 126.634).abs() < 1e-6, "{own}");
        assert_eq!(own_work(&[], 1.0), None);
    }

    #[test]
    fn baseline_milestones() {
        let log = "[    1.498366] Run /init as init process\n[    1.656733] baseline: start uptime=1.57\n\
                   [    2.218498] baseline: modules uptime=2.14\n[    2.471718] baseline: dhcp uptime=2.39\n\
                   [    2.511729] baseline: ready iface=eth0 uptime=2.43\n";
        let found = milestone_times(log, BASELINE_MILESTONES);
        assert_eq!(found.len(), 5);
        let own = own_work(&found, 2511.729).unwrap();
        assert!((own - (2511.729 - 1498.366 - 253.22)).abs() < 1e-6, "{own}");
    }

    #[test]
    fn statistics() {
        assert_eq!(stats(&[]), json!({"n": 0}));
        let s = stats(&[3.0, 1.0, 2.0]);
        assert_eq!(s["median"], json!(2.0));
        assert_eq!(s["spread"], json!(2.0));
        assert_eq!(stats(&[1.0, 2.0, 3.0, 10.0])["median"], json!(2.5));
        let runs = vec![
            json!({"phases_ms": [["a", 1.0], ["b", 5.0]]}),
            json!({"phases_ms": [["a", 3.0], ["b", 7.0]]}),
            json!({"error": "x"}),
        ];
        assert_eq!(median_phases(&runs), json!([["a", 2.0], ["b", 6.0]]));
    }

    #[test]
    fn stage_lines() {
        let err = "[xtask] building image nat-t4g\n[xtask] binaries: 0.41 s\n[xtask] rootfs: 60 entries, 3.4 MiB\n\
                   [xtask] rootfs: 0.00 s\n[xtask] image built in 7.75 s:\n";
        assert_eq!(
            stage_times(err),
            vec![("binaries".to_string(), 0.41), ("rootfs".to_string(), 0.0)]
        );
    }
}

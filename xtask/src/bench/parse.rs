//! Reading the bench's figures out of text: kernel-timestamped console lines, `key=value`
//! fields, the stage times `cargo xtask image` prints; and the statistics over runs.

use serde_json::{Value, json};

/// A point in the boot, found as the first console line whose text (after a kernel timestamp,
/// if any) starts with `needles[0]` and contains every other needle.
#[derive(Debug, Clone, Copy)]
pub struct Milestone {
    pub name: &'static str,
    pub needles: &'static [&'static str],
    /// The phase ending here is mostly waiting for a server (DHCP, IMDS), not the guest's work.
    pub waits: bool,
    /// The point is the start of the `in N ms` the line reports, not the line itself.
    pub began: bool,
}

const fn m(name: &'static str, needles: &'static [&'static str], waits: bool) -> Milestone {
    Milestone {
        name,
        needles,
        waits,
        began: false,
    }
}

/// Ours: init (mounts, modules), nat-init's steps. Under the image's `quiet` command line the
/// kernel prints nothing, so init's start is its module line less the time it reports.
pub const OURS_MILESTONES: &[Milestone] = &[
    Milestone {
        began: true,
        ..m("init_started", &["init: loaded "], false)
    },
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

/// The baseline script's own lines (each carries `uptime=`).
pub const BASELINE_MILESTONES: &[Milestone] = &[
    m("init_started", &["baseline: start"], false),
    m("modules_loaded", &["baseline: modules"], false),
    m("dhcp_bound", &["baseline: dhcp"], true),
    m("ready", &["baseline: ready "], false),
];

/// The guest clock a line carries itself, in ms since kernel start (CLOCK_BOOTTIME):
/// `elapsed_ms=N`, `uptime=S.ss`, or init's `up in N ms`.
pub fn own_clock(text: &str) -> Option<f64> {
    if let Some(v) = field(text, "elapsed_ms") {
        return v.parse().ok();
    }
    if let Some(v) = field(text, "uptime") {
        return v.parse::<f64>().ok().map(|s| s * 1000.0);
    }
    if text.contains("init: up in ") {
        return reported_ms(text);
    }
    None
}

/// The N of the first `in N ms` in a line.
pub fn reported_ms(text: &str) -> Option<f64> {
    let i = text.find(" in ")?;
    let mut w = text[i + 4..].split_whitespace();
    let n: f64 = w.next()?.parse().ok()?;
    (w.next()? == "ms").then_some(n)
}

/// The milestones found in the console lines (text, arrival ms on the host), in time order,
/// in guest ms since kernel start. Each line's time is its kernel timestamp, else the clock it
/// carries, else its arrival time relative to the nearest line with such a clock (TCG runs the
/// guest's clock at the host's rate, and the serial console adds well under a millisecond).
pub fn milestone_times(lines: &[(String, f64)], milestones: &[Milestone]) -> Vec<(String, f64)> {
    let text = |l: &str| -> (Option<f64>, String) {
        match timestamped(l) {
            Some((t, rest)) => (Some(t * 1000.0), rest.to_string()),
            None => (None, l.trim().to_string()),
        }
    };
    let parsed: Vec<(Option<f64>, String, f64)> = lines
        .iter()
        .map(|(l, arrived)| {
            let (ts, t) = text(l);
            (ts, t, *arrived)
        })
        .collect();
    let anchors: Vec<(f64, f64)> = parsed
        .iter()
        .filter_map(|(ts, t, arrived)| ts.or_else(|| own_clock(t)).map(|g| (g, *arrived)))
        .collect();
    // The nearest line with a guest clock, so that drift between the clocks stays small.
    let anchor = |arrived: f64| {
        anchors
            .iter()
            .min_by(|x, y| (x.1 - arrived).abs().total_cmp(&(y.1 - arrived).abs()))
            .copied()
    };
    let mut found: Vec<(String, f64)> = milestones
        .iter()
        .filter_map(|ms| {
            let (ts, t, arrived) = parsed.iter().find(|(_, t, _)| {
                t.starts_with(ms.needles[0]) && ms.needles[1..].iter().all(|n| t.contains(n))
            })?;
            let at = ts
                .or_else(|| own_clock(t))
                .or_else(|| anchor(*arrived).map(|(g, a)| g + (arrived - a)))?;
            let at = if ms.began { at - reported_ms(t)? } else { at };
            Some((ms.name.to_string(), at))
        })
        .collect();
    found.sort_by(|a, b| a.1.total_cmp(&b.1));
    found
}

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
    let init = found.iter().find(|(n, _)| n == "init_started")?.1;
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

    fn with_arrivals(log: &str) -> Vec<(String, f64)> {
        // Arrivals 10 ms apart, except where a line says `@N` (then N ms).
        let mut t = 0.0;
        log.lines()
            .map(|l| {
                t += 10.0;
                match l.rsplit_once(" @") {
                    Some((text, at)) => (text.to_string(), at.parse().unwrap()),
                    None => (l.to_string(), t),
                }
            })
            .collect()
    }

    const OURS_LOG: &str = "\
init: loaded 24 modules in 40 ms (0 failed) @1000
init: up in 1062 ms @1002
nat-init: starting version=0.1.0 config=/etc/nat-init.toml @1010
nat-init: link ens5 up with carrier mac=52:54:00:0a:00:0a @1040
nat-init: dhcp lease addr=10.0.0.10/24 gw=10.0.0.1 mtu=9001 lease_s=3600 server=10.0.0.1 @1340
nat-init: imds instance=i-1 mac=52:54:00:0a:00:0a vpc=10.0.0.0/16 @1390
nat-init: sysctl ip_forward=1 @1400
nat-init: nft table ip nat installed and verified @1410
nat-init: ready iface=ens5 addr=10.0.0.10/24 gw=10.0.0.1 mtu=9001 private=10.0.0.0/16 elapsed_ms=1475 @1415
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
        assert_eq!(own_clock(l), Some(1975.0));
        assert_eq!(
            own_clock("baseline: ready iface=eth0 uptime=2.43"),
            Some(2430.0)
        );
        assert_eq!(own_clock("init: up in 99 ms"), Some(99.0));
        assert_eq!(own_clock("nat-init: link ens5 up"), None);
        assert_eq!(
            reported_ms("init: loaded 24 modules in 40 ms (0 failed)"),
            Some(40.0)
        );
        let m = memory_fields("init: test console: meminfo MemTotal_kb=490240 rss_kb_init=? x");
        assert_eq!(m, json!({"MemTotal_kb": 490240}));
    }

    #[test]
    fn milestones_phases_and_own_work() {
        let found = milestone_times(&with_arrivals(OURS_LOG), OURS_MILESTONES);
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), OURS_MILESTONES.len(), "{names:?}");
        assert_eq!(names[0], "init_started");
        assert_eq!(names[names.len() - 1], "ready");
        let at = |n: &str| found.iter().find(|(x, _)| x == n).unwrap().1;
        // init's own clock anchors the arrival times: the module line arrived 2 ms before
        // "up in 1062 ms", and began 40 ms before it arrived.
        assert!((at("modules_loaded") - 1060.0).abs() < 1e-6);
        assert!((at("init_started") - 1020.0).abs() < 1e-6);
        assert!((at("dhcp_bound") - 1400.0).abs() < 1e-6);
        // The ready line's own clock wins over its arrival.
        assert!((at("ready") - 1475.0).abs() < 1e-6);
        let p = phases(&found);
        assert_eq!(p[0], json!(["init_started", 1020.0]));
        assert_eq!(p[5], json!(["dhcp_bound", 300.0]));
        // 1475 - 1020 - 300 (dhcp) - 50 (imds)
        let own = own_work(&found, 1475.0).unwrap();
        assert!((own - 105.0).abs() < 1e-6, "{own}");
        assert_eq!(own_work(&[], 1.0), None);
    }

    #[test]
    fn kernel_timestamps_win() {
        let lines =
            with_arrivals("[    1.100000] init: loaded 2 modules in 10 ms\ninit: up in 9999 ms");
        let found = milestone_times(&lines, OURS_MILESTONES);
        assert_eq!(found[0], ("init_started".to_string(), 1090.0));
        assert_eq!(found[1], ("modules_loaded".to_string(), 1100.0));
    }

    #[test]
    fn baseline_milestones() {
        let log = "baseline: start uptime=1.57\nbaseline: modules uptime=2.14\n\
                   baseline: dhcp uptime=2.39\nbaseline: ready iface=eth0 uptime=2.43\n";
        let found = milestone_times(&with_arrivals(log), BASELINE_MILESTONES);
        assert_eq!(found.len(), 4);
        let own = own_work(&found, 2430.0).unwrap();
        assert!((own - (2430.0 - 1570.0 - 250.0)).abs() < 1e-6, "{own}");
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

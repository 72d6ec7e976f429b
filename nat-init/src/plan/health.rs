//! What the `health` line says, from the table's counters, conntrack and the lease, and the
//! error line when conntrack starts dropping flows.

use crate::nft;
use crate::report::{ConntrackStats, ENA_ALLOWANCES, Health};

/// conntrack's per-CPU statistics (this network namespace's): a header line naming the
/// columns, then one row of hexadecimal counters per CPU.
pub const PROC_CONNTRACK_STAT: &str = "/proc/net/stat/nf_conntrack";

/// [`PROC_CONNTRACK_STAT`] could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConntrackStatError {
    #[error("no column {0:?} in the header")]
    MissingColumn(&'static str),
    #[error("line {line}: {why}")]
    BadRow { line: usize, why: String },
}

/// The statistics in the text of [`PROC_CONNTRACK_STAT`], summed over the CPUs. Columns are
/// found by name: their order and number differ between kernels.
pub fn parse_conntrack_stat(text: &str) -> Result<ConntrackStats, ConntrackStatError> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let col = |name: &'static str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or(ConntrackStatError::MissingColumn(name))
    };
    let cols = [col("drop")?, col("early_drop")?, col("insert_failed")?];
    let mut sums = [0u64; 3];
    for (i, row) in lines.enumerate() {
        let words: Vec<&str> = row.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let bad = |why: String| ConntrackStatError::BadRow { line: i + 2, why };
        if words.len() != header.len() {
            return Err(bad(format!(
                "{} fields under a header of {}",
                words.len(),
                header.len()
            )));
        }
        for (sum, &c) in sums.iter_mut().zip(&cols) {
            let v = u64::from_str_radix(words[c], 16)
                .map_err(|_| bad(format!("{:?} is not hexadecimal", words[c])))?;
            *sum = sum.saturating_add(v);
        }
    }
    Ok(ConntrackStats {
        drop: sums[0],
        early_drop: sums[1],
        insert_failed: sums[2],
    })
}

/// The error text when conntrack dropped flows since the previous health tick (`prev`), naming
/// the figures and what to do. Nothing on the first tick (no baseline) or when a counter went
/// down: the counters were reset (nf_conntrack reloaded) or a CPU's 32-bit counter wrapped, so
/// the increase is unknown; `now` is the next baseline either way.
pub fn conntrack_drops(
    prev: Option<&ConntrackStats>,
    now: &ConntrackStats,
    conntrack: u64,
    conntrack_max: u64,
) -> Option<String> {
    let prev = prev?;
    let delta = |n: u64, p: u64| n.checked_sub(p);
    let d = [
        delta(now.drop, prev.drop)?,
        delta(now.early_drop, prev.early_drop)?,
        delta(now.insert_failed, prev.insert_failed)?,
    ];
    if d == [0, 0, 0] {
        return None;
    }
    Some(format!(
        "conntrack is dropping new flows: ct_drop +{} ct_early_drop +{} ct_insert_failed +{} since the last health line, conntrack={conntrack}/{conntrack_max}; raise conntrack_max (0 sizes it from RAM), or lower per_source_conntrack_limit if one host fills the table",
        d[0], d[1], d[2]
    ))
}

/// The ENA allowance counters among a device's ethtool statistics, in [`ENA_ALLOWANCES`]
/// order; empty for a driver that has none of them.
pub fn ena_allowances(stats: &[(String, u64)]) -> Vec<(&'static str, u64)> {
    ENA_ALLOWANCES
        .iter()
        .filter_map(|&name| {
            stats
                .iter()
                .find(|(n, _)| n == name)
                .map(|&(_, v)| (name, v))
        })
        .collect()
}

/// Where the kernel lists tracked connections (CONFIG_NF_CONNTRACK_PROCFS, on in Debian's
/// kernels); flows in the flowtable carry `[OFFLOAD]` (`[HW_OFFLOAD]` in hardware).
pub const PROC_CONNTRACK: &str = "/proc/net/nf_conntrack";

/// Counts the offloaded flows in the text of [`PROC_CONNTRACK`], reading line by line so a full
/// table is never held in memory.
pub fn count_offloaded(r: impl std::io::BufRead) -> std::io::Result<u64> {
    let mut n = 0;
    for line in r.lines() {
        let line = line?;
        if line.contains(" [OFFLOAD] ") || line.contains(" [HW_OFFLOAD] ") {
            n += 1;
        }
    }
    Ok(n)
}

/// The health line from the table's counters and the conntrack and lease figures. `offloaded`
/// is the number of flows in the flowtable now ([`count_offloaded`]); when that could not be
/// read, the `flow add` rule's packet counter stands in. Zero without a flowtable.
pub fn health(
    c: &nft::Counters,
    flowtable: bool,
    offloaded: Option<u64>,
    conntrack: u64,
    conntrack_max: u64,
    lease_left_s: Option<u64>,
) -> Health {
    let offloaded = match (flowtable, offloaded) {
        (false, _) => 0,
        (true, Some(n)) => n,
        (true, None) => c.rule(nft::RULE_FWD_OFFLOAD).map_or(0, |(p, _)| p),
    };
    Health {
        forwarded_packets: c.forwarded_packets,
        forwarded_bytes: c.forwarded_bytes,
        dropped: c.dropped_packets,
        conntrack,
        conntrack_max,
        lease_left_s: lease_left_s.unwrap_or(0),
        offloaded,
        conntrack_stats: None,
        ena: Vec::new(),
        masq_flows: c.masqueraded_flows,
        masq_bytes: c.masqueraded_bytes,
        per_source_dropped: c.rule(nft::RULE_FWD_PER_SOURCE).map_or(0, |(p, _)| p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_from_counters() {
        let c = nft::Counters {
            forwarded_packets: 10,
            forwarded_bytes: 15000,
            dropped_packets: 2,
            dropped_bytes: 120,
            masqueraded_flows: 3,
            masqueraded_bytes: 4500,
            rules: vec![
                ("forward".into(), nft::RULE_FWD_OFFLOAD.into(), 6, 9000),
                ("forward".into(), nft::RULE_FWD_PER_SOURCE.into(), 8, 480),
            ],
        };
        let h = health(&c, true, None, 7, 65536, Some(3500));
        assert_eq!(
            h.to_string(),
            "nat-init: health forwarded_packets=10 forwarded_bytes=15000 dropped=2 conntrack=7/65536 lease_left_s=3500 offloaded=6 masq_flows=3 masq_bytes=4500 per_source_dropped=8"
        );
        let h = health(&c, false, Some(4), 7, 65536, None);
        assert_eq!((h.offloaded, h.lease_left_s), (0, 0));
        assert_eq!(health(&c, true, Some(4), 7, 65536, None).offloaded, 4);
    }

    /// From a 4-CPU 6.1 kernel under a SYN flood into a full table (the header has two double
    /// spaces, as the kernel prints it).
    const STAT_6_1: &str = "\
entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00020000  00000000 00000000 00000000 0000001a 00000000 00000000 00000000 00000000 00000001 000003e8 00000010 00000000  00000000 00000000 00000000 00000002
00020000  00000000 00000000 00000000 00000003 00000000 00000000 00000000 00000000 00000000 00000a00 00000020 00000000  00000000 00000000 00000000 00000000
00020000  00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000002 00000000 00000000 00000000  00000000 00000000 00000000 00000000
00020000  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 ffffffff 00000001 00000000  00000000 00000000 00000000 00000000
";

    /// A 4.19 kernel's columns: `searched` and `delete_list` where 6.1 has others.
    const STAT_4_19: &str = "\
entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
0000002a  00000000 00000000 00000000 00000000 00000005 00000000 00000000 00000000 00000003 00000004 00000005 00000000  00000000 00000000 00000000 00000000
0000002a  00000000 00000000 00000000 00000000 00000001 00000000 00000000 00000000 00000000 00000001 00000000 00000000  00000000 00000000 00000000 00000000
";

    #[test]
    fn conntrack_stat_sums_the_cpus() {
        assert_eq!(
            parse_conntrack_stat(STAT_6_1).unwrap(),
            ConntrackStats {
                drop: 0x3e8 + 0xa00 + 0xffff_ffff,
                early_drop: 0x10 + 0x20 + 1,
                insert_failed: 3,
            }
        );
        assert_eq!(
            parse_conntrack_stat(STAT_4_19).unwrap(),
            ConntrackStats {
                drop: 5,
                early_drop: 5,
                insert_failed: 3,
            }
        );
        let zero = STAT_6_1.lines().next().unwrap().to_string() + "\n";
        assert_eq!(
            parse_conntrack_stat(&zero).unwrap(),
            ConntrackStats::default()
        );
        // This machine's own file parses (the root tests need nf_conntrack loaded anyway).
        if let Ok(text) = std::fs::read_to_string(PROC_CONNTRACK_STAT) {
            parse_conntrack_stat(&text).unwrap();
        }
    }

    #[test]
    fn conntrack_stat_errors_name_what_is_wrong() {
        assert_eq!(
            parse_conntrack_stat("entries drop insert_failed\n1 2 3\n"),
            Err(ConntrackStatError::MissingColumn("early_drop"))
        );
        assert_eq!(
            parse_conntrack_stat(""),
            Err(ConntrackStatError::MissingColumn("drop"))
        );
        let e = parse_conntrack_stat("drop early_drop insert_failed\n1 2 3\n1 2\n").unwrap_err();
        assert_eq!(e.to_string(), "line 3: 2 fields under a header of 3");
        let e = parse_conntrack_stat("drop early_drop insert_failed\n1 2 x3\n").unwrap_err();
        assert_eq!(e.to_string(), "line 2: \"x3\" is not hexadecimal");
    }

    #[test]
    fn drops_starting_is_an_error_once_a_baseline_exists() {
        let quiet = ConntrackStats {
            drop: 5,
            early_drop: 7,
            insert_failed: 1,
        };
        // The first tick is the baseline, whatever the counters say.
        assert_eq!(conntrack_drops(None, &quiet, 10, 100), None);
        assert_eq!(conntrack_drops(Some(&quiet), &quiet, 10, 100), None);
        let dropping = ConntrackStats {
            drop: 8,
            early_drop: 27,
            ..quiet
        };
        assert_eq!(
            conntrack_drops(Some(&quiet), &dropping, 131072, 131072).as_deref(),
            Some(
                "conntrack is dropping new flows: ct_drop +3 ct_early_drop +20 ct_insert_failed +0 since the last health line, conntrack=131072/131072; raise conntrack_max (0 sizes it from RAM), or lower per_source_conntrack_limit if one host fills the table"
            )
        );
        let clash = ConntrackStats {
            insert_failed: 2,
            ..quiet
        };
        assert!(
            conntrack_drops(Some(&quiet), &clash, 1, 100)
                .unwrap()
                .contains("ct_insert_failed +1 ")
        );
    }

    #[test]
    fn a_counter_reset_is_no_error() {
        let before = ConntrackStats {
            drop: 1000,
            early_drop: 50,
            insert_failed: 3,
        };
        // nf_conntrack reloaded: everything back near zero, some of it already counting again.
        let after = ConntrackStats {
            drop: 2,
            early_drop: 60,
            insert_failed: 0,
        };
        assert_eq!(conntrack_drops(Some(&before), &after, 5, 100), None);
        // From the new baseline, increases are reported again.
        let later = ConntrackStats { drop: 4, ..after };
        assert!(conntrack_drops(Some(&after), &later, 5, 100).is_some());
    }

    fn stats(names: &[&str]) -> Vec<(String, u64)> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), i as u64 * 10))
            .collect()
    }

    #[test]
    fn ena_allowances_are_picked_in_a_fixed_order() {
        // As the ENA driver lists them: interface stats, then the ENI allowances, then queues.
        let ena = stats(&[
            "tx_timeout",
            "suspend",
            "resume",
            "wd_expired",
            "interface_up",
            "interface_down",
            "admin_q_pause",
            "bw_in_allowance_exceeded",
            "bw_out_allowance_exceeded",
            "pps_allowance_exceeded",
            "conntrack_allowance_exceeded",
            "linklocal_allowance_exceeded",
            "conntrack_allowance_available",
            "queue_0_tx_cnt",
            "queue_0_rx_cnt",
        ]);
        assert_eq!(
            ena_allowances(&ena),
            [
                ("bw_in_allowance_exceeded", 70),
                ("bw_out_allowance_exceeded", 80),
                ("pps_allowance_exceeded", 90),
                ("conntrack_allowance_exceeded", 100),
                ("linklocal_allowance_exceeded", 110),
            ]
        );
        // An older ENA driver without the last two: the ones it has.
        let old = stats(&[
            "pps_allowance_exceeded",
            "bw_out_allowance_exceeded",
            "bw_in_allowance_exceeded",
        ]);
        assert_eq!(
            ena_allowances(&old),
            [
                ("bw_in_allowance_exceeded", 20),
                ("bw_out_allowance_exceeded", 10),
                ("pps_allowance_exceeded", 0),
            ]
        );
        let virtio = stats(&[
            "rx_queue_0_packets",
            "rx_queue_0_bytes",
            "rx_queue_0_drops",
            "rx_queue_0_xdp_packets",
            "tx_queue_0_packets",
            "tx_queue_0_bytes",
            "tx_queue_0_kicks",
        ]);
        assert_eq!(ena_allowances(&virtio), []);
        let h = Health {
            ena: ena_allowances(&virtio),
            ..Health::default()
        };
        assert!(!h.to_string().contains("allowance"), "{h}");
        assert_eq!(ena_allowances(&[]), []);
    }

    #[test]
    fn offloaded_flows_are_counted_from_conntrack() {
        let text = "\
ipv4     2 tcp      6 src=10.0.1.2 dst=198.51.100.2 sport=40000 dport=80 src=198.51.100.2 dst=198.51.100.1 sport=80 dport=40000 [OFFLOAD] mark=0 zone=0 use=3
ipv4     2 tcp      6 431999 ESTABLISHED src=10.0.1.2 dst=198.51.100.2 sport=40001 dport=80 src=198.51.100.2 dst=198.51.100.1 sport=80 dport=40001 [ASSURED] mark=0 zone=0 use=2
ipv4     2 udp      17 src=10.0.1.2 dst=198.51.100.2 sport=5000 dport=53 src=198.51.100.2 dst=198.51.100.1 sport=53 dport=5000 [HW_OFFLOAD] mark=0 zone=0 use=3
ipv4     2 udp      17 29 src=10.0.1.2 dst=198.51.100.2 sport=5001 dport=53 [UNREPLIED] src=198.51.100.2 dst=198.51.100.1 sport=53 dport=5001 mark=0 zone=0 use=2
";
        assert_eq!(count_offloaded(text.as_bytes()).unwrap(), 2);
        assert_eq!(count_offloaded(&b""[..]).unwrap(), 0);
    }
}

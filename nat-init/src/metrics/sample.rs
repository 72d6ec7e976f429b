//! One period's values from what the sampler read: the conntrack tally (already per period),
//! and the kernel's cumulative counters (nftables, conntrack's statistics, ENA, failover)
//! turned into per-period increases by [`Deltas`], each source with its own tracker so that
//! one source's restart never touches another's baseline.
//!
//! Where each NAT Gateway metric comes from, and how far it is exact:
//! - the eight `Bytes*`/`Packets*` and `IdleTimeoutCount`: conntrack accounting
//!   ([`super::traffic`]);
//! - `ActiveConnectionCount`: open TCP connections at the sample (NAT Gateway's is the
//!   period's maximum; a sample is a lower bound of it);
//! - `ConnectionAttemptCount`: new flows the NAT rules translated (each flow's first packet);
//! - `ConnectionEstablishedCount`: flows that got their first reply (the table's
//!   `fwd_first_reply` rule, which marks a flow once counted);
//! - `PacketsDropCount`: packets the table's drop rules dropped (invalid, unsolicited, over a
//!   source's connection limit, not from a private range);
//! - `ErrorPortAllocation`: conntrack's `insert_failed`, which is where a flow whose
//!   translation found no free port ends (it also counts rare insertion races).

use std::collections::BTreeMap;

use super::Gauge;
use super::catalogue::Role;
use super::deltas::{Deltas, Reset};
use super::traffic::Tally;
use crate::report::ConntrackStats;

/// The ENA driver's allowance counters by their metric names.
pub const ENA_METRICS: [(&str, &str); 5] = [
    ("bw_in_allowance_exceeded", "BwInAllowanceExceeded"),
    ("bw_out_allowance_exceeded", "BwOutAllowanceExceeded"),
    ("pps_allowance_exceeded", "PpsAllowanceExceeded"),
    ("conntrack_allowance_exceeded", "ConntrackAllowanceExceeded"),
    ("linklocal_allowance_exceeded", "LinklocalAllowanceExceeded"),
];

/// The table's counters the metrics use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCounters {
    /// Which table they are from: changes whenever the table is rebuilt (counters from 0).
    pub generation: u64,
    /// New flows translated (NAT rules' packets).
    pub translated_flows: u64,
    /// First replies (`fwd_first_reply`'s packets).
    pub first_replies: u64,
    /// Packets the drop rules dropped.
    pub dropped: u64,
}

/// What the sampler read at the end of one period; `None` (or empty) for what could not be
/// read, which is then left out rather than published as zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readings {
    pub tally: Option<Tally>,
    pub table: Option<TableCounters>,
    pub conntrack_stats: Option<ConntrackStats>,
    /// Entries and the table's size.
    pub conntrack: Option<(u64, u64)>,
    pub mem_available: Option<u64>,
    /// ENA's allowance counters (ethtool names).
    pub ena: Vec<(&'static str, u64)>,
    /// A failover member's role per route table and its count of role changes since start.
    pub failover: Option<(BTreeMap<String, Role>, u64)>,
}

/// One period's values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Period {
    pub counters: BTreeMap<&'static str, u64>,
    pub gauges: Vec<Gauge>,
    /// Counters that restarted since the previous period (worth a log line).
    pub resets: Vec<Reset<&'static str>>,
}

/// The trackers of the cumulative counters.
#[derive(Debug, Default)]
pub struct Sampler {
    table: Deltas<&'static str>,
    kernel: Deltas<&'static str>,
    ena: Deltas<&'static str>,
    failover: Deltas<&'static str>,
}

impl Sampler {
    pub fn new() -> Self {
        Self::default()
    }

    /// The values of the period that `r` closes.
    pub fn period(&mut self, r: &Readings) -> Period {
        let mut out = Period::default();
        if let Some(t) = &r.tally {
            out.counters.extend(t.counters());
            out.gauges
                .push(Gauge::new("ActiveConnectionCount", t.active_tcp));
        }
        let mut track =
            |d: &mut Deltas<&'static str>, generation: u64, values: Vec<(&'static str, u64)>| {
                let u = d.update(generation, values.into_iter().collect());
                out.counters.extend(u.deltas);
                out.resets.extend(u.resets);
            };
        let table = r.table.map(|t| {
            vec![
                ("ConnectionAttemptCount", t.translated_flows),
                ("ConnectionEstablishedCount", t.first_replies),
                ("PacketsDropCount", t.dropped),
            ]
        });
        track(
            &mut self.table,
            r.table.map_or(0, |t| t.generation),
            table.unwrap_or_default(),
        );
        let kernel = r.conntrack_stats.map(|s| {
            vec![
                ("ErrorPortAllocation", s.insert_failed),
                // Not insert_failed too: a failed insertion also counts as a drop.
                ("ConntrackDrops", s.drop.saturating_add(s.early_drop)),
            ]
        });
        track(&mut self.kernel, 0, kernel.unwrap_or_default());
        let ena = r
            .ena
            .iter()
            .filter_map(|(n, v)| {
                ENA_METRICS
                    .iter()
                    .find(|(e, _)| e == n)
                    .map(|(_, m)| (*m, *v))
            })
            .collect();
        track(&mut self.ena, 0, ena);
        let changes = r
            .failover
            .as_ref()
            .map(|(_, n)| vec![("FailoverTransitions", *n)]);
        track(&mut self.failover, 0, changes.unwrap_or_default());

        if let Some((entries, max)) = r.conntrack {
            out.gauges.push(Gauge::new("ConntrackEntries", entries));
            out.gauges.push(Gauge::new("ConntrackMax", max));
        }
        if let Some(m) = r.mem_available {
            out.gauges.push(Gauge::new("MemAvailableBytes", m));
        }
        if let Some((roles, _)) = &r.failover {
            for (table, role) in roles {
                out.gauges
                    .push(Gauge::per("FailoverRole", table.clone(), role.value()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::ctnetlink::Count;

    fn readings(generation: u64, attempts: u64, insert_failed: u64) -> Readings {
        Readings {
            tally: Some(Tally {
                from_source: Count {
                    packets: 3,
                    bytes: 180,
                },
                from_destination: Count {
                    packets: 4,
                    bytes: 5000,
                },
                idle_timeouts: 1,
                active_tcp: 2,
                live: 2,
                ended: 1,
            }),
            table: Some(TableCounters {
                generation,
                translated_flows: attempts,
                first_replies: attempts / 2,
                dropped: 7,
            }),
            conntrack_stats: Some(ConntrackStats {
                drop: 1,
                early_drop: 0,
                insert_failed,
            }),
            conntrack: Some((10, 65536)),
            mem_available: Some(400 << 20),
            ena: vec![("pps_allowance_exceeded", 5), ("tx_timeout", 9)],
            failover: Some((BTreeMap::from([("rtb-1".to_string(), Role::Owner)]), 1)),
        }
    }

    #[test]
    fn the_first_period_publishes_the_tally_and_gauges_only() {
        let mut s = Sampler::new();
        let p = s.period(&readings(1, 10, 0));
        // Conntrack's tally is per period already; cumulative counters set baselines.
        assert_eq!(p.counters.get("BytesInFromDestination"), Some(&5000));
        assert_eq!(p.counters.get("ConnectionAttemptCount"), None);
        assert_eq!(p.counters.get("ErrorPortAllocation"), None);
        let names: Vec<&str> = p.gauges.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ActiveConnectionCount",
                "ConntrackEntries",
                "ConntrackMax",
                "MemAvailableBytes",
                "FailoverRole"
            ]
        );
        assert_eq!(p.gauges[4].per.as_deref(), Some("rtb-1"));
        assert_eq!(p.gauges[4].value, 1);
    }

    #[test]
    fn later_periods_publish_increases_and_a_rebuilt_table_restarts_only_its_own() {
        let mut s = Sampler::new();
        s.period(&readings(1, 10, 3));
        let p = s.period(&readings(1, 30, 8));
        assert_eq!(p.counters["ConnectionAttemptCount"], 20);
        assert_eq!(p.counters["ConnectionEstablishedCount"], 10);
        assert_eq!(p.counters["PacketsDropCount"], 0);
        assert_eq!(p.counters["ErrorPortAllocation"], 5);
        assert_eq!(p.counters["ConntrackDrops"], 0);
        assert_eq!(p.counters["PpsAllowanceExceeded"], 0);
        assert_eq!(p.counters["FailoverTransitions"], 0);
        assert!(p.resets.is_empty());
        // The table was rebuilt: its counters restart from what the new one counted; the
        // kernel's statistics go on.
        let p = s.period(&readings(2, 4, 9));
        assert_eq!(p.counters["ConnectionAttemptCount"], 4);
        assert_eq!(p.counters["ErrorPortAllocation"], 1);
        assert_eq!(p.resets.len(), 3);
        assert!(p.resets.iter().all(|r| r.name != "ErrorPortAllocation"));
        // Every published name is in the catalogue as the kind it is published as.
        let d = super::super::datums(
            120,
            60,
            &p.counters,
            &p.gauges,
            &super::super::Dimensions {
                instance_id: "i-1".into(),
                nat_name: None,
                asg: None,
            },
        )
        .unwrap();
        assert_eq!(d.len(), p.counters.len() + p.gauges.len());
    }

    #[test]
    fn what_was_not_read_is_left_out() {
        let mut s = Sampler::new();
        let p = s.period(&Readings::default());
        assert!(p.counters.is_empty() && p.gauges.is_empty());
        s.period(&readings(1, 10, 0));
        // The table could not be read this time: nothing for it, and a new baseline after.
        let mut r = readings(1, 50, 0);
        r.table = None;
        let p = s.period(&r);
        assert_eq!(p.counters.get("ConnectionAttemptCount"), None);
        let p = s.period(&readings(1, 60, 0));
        assert_eq!(p.counters.get("ConnectionAttemptCount"), None);
        let p = s.period(&readings(1, 61, 0));
        assert_eq!(p.counters["ConnectionAttemptCount"], 1);
    }
}

//! Every metric the appliance publishes: its CloudWatch name, unit, kind and meaning. The first
//! fourteen are NAT Gateway's `AWS/NATGateway` set under its exact names and units, so that a
//! dashboard or alarm written for a NAT Gateway needs only its namespace and dimensions changed;
//! the rest exist only on an instance (conntrack, memory, ENA's allowance counters, failover).
//!
//! Where the values come from (nftables counters, conntrack, ethtool, the failover state) is
//! another module's business; this table only says what each name means.
//!
//! `FailoverRole` is one gauge per route table (dimension `RouteTableId`), with the values of
//! [`Role`]: 1 owner (its own, held here), 2 standby (a live peer's own, held there),
//! 3 taken-over (a peer's, held here), 4 lent (its own, held by a peer), 0 unheld (its own,
//! held by nobody heard). Alarm on `Maximum` ≥ 3 to hear of a takeover.

use self::Kind::{Counter, Gauge};
use crate::aws::cloudwatch::Unit;

/// How a metric's values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A cumulative kernel counter: each period publishes its increase ([`super::deltas`]).
    Counter,
    /// A level at the sample: published as read.
    Gauge,
}

/// One metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
    pub kind: Kind,
    /// The name of a dimension that splits the metric into one series per value (beyond the
    /// instance's own dimensions), e.g. `RouteTableId`.
    pub per: Option<&'static str>,
    pub meaning: &'static str,
}

const fn metric(name: &'static str, unit: Unit, kind: Kind, meaning: &'static str) -> Metric {
    Metric {
        name,
        unit,
        kind,
        per: None,
        meaning,
    }
}

/// The dimension of [`Role`]'s gauge.
pub const ROUTE_TABLE_DIMENSION: &str = "RouteTableId";

/// Every metric, in publishing order.
pub const CATALOGUE: [Metric; 25] = [
    // NAT Gateway's set.
    metric(
        "ActiveConnectionCount",
        Unit::Count,
        Gauge,
        "TCP connections open through the NAT (NAT Gateway's is the period's maximum: read it with Maximum)",
    ),
    metric(
        "ConnectionAttemptCount",
        Unit::Count,
        Counter,
        "connections sources tried to open through the NAT",
    ),
    metric(
        "ConnectionEstablishedCount",
        Unit::Count,
        Counter,
        "connections established through the NAT",
    ),
    metric(
        "BytesOutToDestination",
        Unit::Bytes,
        Counter,
        "bytes the NAT sent to destinations",
    ),
    metric(
        "BytesInFromDestination",
        Unit::Bytes,
        Counter,
        "bytes the NAT received from destinations",
    ),
    metric(
        "BytesInFromSource",
        Unit::Bytes,
        Counter,
        "bytes the NAT received from sources in the VPC",
    ),
    metric(
        "BytesOutToSource",
        Unit::Bytes,
        Counter,
        "bytes the NAT sent to sources in the VPC",
    ),
    metric(
        "PacketsOutToDestination",
        Unit::Count,
        Counter,
        "packets the NAT sent to destinations",
    ),
    metric(
        "PacketsInFromDestination",
        Unit::Count,
        Counter,
        "packets the NAT received from destinations",
    ),
    metric(
        "PacketsInFromSource",
        Unit::Count,
        Counter,
        "packets the NAT received from sources in the VPC",
    ),
    metric(
        "PacketsOutToSource",
        Unit::Count,
        Counter,
        "packets the NAT sent to sources in the VPC",
    ),
    metric(
        "PacketsDropCount",
        Unit::Count,
        Counter,
        "packets the NAT dropped",
    ),
    metric(
        "ErrorPortAllocation",
        Unit::Count,
        Counter,
        "times the NAT found no free source port for a new connection",
    ),
    metric(
        "IdleTimeoutCount",
        Unit::Count,
        Counter,
        "connections closed because they were idle past their timeout",
    ),
    // The instance's own.
    metric(
        "ConntrackEntries",
        Unit::Count,
        Gauge,
        "entries in the conntrack table",
    ),
    metric(
        "ConntrackMax",
        Unit::Count,
        Gauge,
        "the conntrack table's size (nf_conntrack_max)",
    ),
    metric(
        "ConntrackDrops",
        Unit::Count,
        Counter,
        "new flows conntrack dropped (drop, which includes failed insertions) or evicted to make room (early_drop)",
    ),
    metric(
        "MemAvailableBytes",
        Unit::Bytes,
        Gauge,
        "memory available for new allocations (MemAvailable)",
    ),
    metric(
        "BwInAllowanceExceeded",
        Unit::Count,
        Counter,
        "packets queued or dropped: inbound bandwidth over the instance's allowance (ENA)",
    ),
    metric(
        "BwOutAllowanceExceeded",
        Unit::Count,
        Counter,
        "packets queued or dropped: outbound bandwidth over the instance's allowance (ENA)",
    ),
    metric(
        "PpsAllowanceExceeded",
        Unit::Count,
        Counter,
        "packets queued or dropped: packets per second over the instance's allowance (ENA)",
    ),
    metric(
        "ConntrackAllowanceExceeded",
        Unit::Count,
        Counter,
        "packets dropped: the instance's tracked connections over its allowance (ENA)",
    ),
    metric(
        "LinklocalAllowanceExceeded",
        Unit::Count,
        Counter,
        "packets dropped: traffic to link-local services (DNS, IMDS, NTP) over its allowance (ENA)",
    ),
    metric(
        "FailoverTransitions",
        Unit::Count,
        Counter,
        "changes of role of this member's route tables",
    ),
    Metric {
        name: "FailoverRole",
        unit: Unit::None,
        kind: Gauge,
        per: Some(ROUTE_TABLE_DIMENSION),
        meaning: "this member's role for a route table: 1 owner, 2 standby, 3 taken-over, 4 lent, 0 unheld",
    },
];

/// The catalogue's entry for `name`.
pub fn find(name: &str) -> Option<&'static Metric> {
    CATALOGUE.iter().find(|m| m.name == name)
}

/// How many metrics (series) one instance publishes each period when it knows `route_tables`
/// route tables: one per entry, one per route table for a per-table entry.
pub fn series_per_instance(route_tables: usize) -> usize {
    CATALOGUE
        .iter()
        .map(|m| if m.per.is_some() { route_tables } else { 1 })
        .sum()
}

/// A failover member's role for one route table, as `FailoverRole` publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Its own, held by nobody heard.
    Unheld = 0,
    /// Its own, held here.
    Owner = 1,
    /// A live peer's own, held there.
    Standby = 2,
    /// A peer's, held here.
    TakenOver = 3,
    /// Its own, held by a peer.
    Lent = 4,
}

impl Role {
    /// The gauge's value.
    pub fn value(self) -> u64 {
        self as u64
    }

    /// From the names [`crate::failover`]'s `roles` gives.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "unheld" => Some(Self::Unheld),
            "owner" => Some(Self::Owner),
            "standby" => Some(Self::Standby),
            "taken-over" => Some(Self::TakenOver),
            "lent" => Some(Self::Lent),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_gateway_s_set_under_its_names_and_units() {
        let nat: Vec<(&str, Unit, Kind)> = CATALOGUE[..14]
            .iter()
            .map(|m| (m.name, m.unit, m.kind))
            .collect();
        assert_eq!(
            nat,
            [
                ("ActiveConnectionCount", Unit::Count, Gauge),
                ("ConnectionAttemptCount", Unit::Count, Counter),
                ("ConnectionEstablishedCount", Unit::Count, Counter),
                ("BytesOutToDestination", Unit::Bytes, Counter),
                ("BytesInFromDestination", Unit::Bytes, Counter),
                ("BytesInFromSource", Unit::Bytes, Counter),
                ("BytesOutToSource", Unit::Bytes, Counter),
                ("PacketsOutToDestination", Unit::Count, Counter),
                ("PacketsInFromDestination", Unit::Count, Counter),
                ("PacketsInFromSource", Unit::Count, Counter),
                ("PacketsOutToSource", Unit::Count, Counter),
                ("PacketsDropCount", Unit::Count, Counter),
                ("ErrorPortAllocation", Unit::Count, Counter),
                ("IdleTimeoutCount", Unit::Count, Counter),
            ]
        );
    }

    #[test]
    fn the_instance_s_own() {
        let own: Vec<(&str, Unit, Kind, Option<&str>)> = CATALOGUE[14..]
            .iter()
            .map(|m| (m.name, m.unit, m.kind, m.per))
            .collect();
        assert_eq!(
            own,
            [
                ("ConntrackEntries", Unit::Count, Gauge, None),
                ("ConntrackMax", Unit::Count, Gauge, None),
                ("ConntrackDrops", Unit::Count, Counter, None),
                ("MemAvailableBytes", Unit::Bytes, Gauge, None),
                ("BwInAllowanceExceeded", Unit::Count, Counter, None),
                ("BwOutAllowanceExceeded", Unit::Count, Counter, None),
                ("PpsAllowanceExceeded", Unit::Count, Counter, None),
                ("ConntrackAllowanceExceeded", Unit::Count, Counter, None),
                ("LinklocalAllowanceExceeded", Unit::Count, Counter, None),
                ("FailoverTransitions", Unit::Count, Counter, None),
                ("FailoverRole", Unit::None, Gauge, Some("RouteTableId")),
            ]
        );
    }

    #[test]
    fn names_are_unique_and_meanings_one_line() {
        for (i, m) in CATALOGUE.iter().enumerate() {
            assert!(
                CATALOGUE[i + 1..].iter().all(|o| o.name != m.name),
                "{} twice",
                m.name
            );
            assert!(
                !m.meaning.is_empty() && !m.meaning.contains('\n'),
                "{}",
                m.name
            );
            assert_eq!(find(m.name), Some(m));
        }
        assert_eq!(find("BytesOut"), None);
    }

    #[test]
    fn series_count() {
        assert_eq!(series_per_instance(0), 24);
        assert_eq!(series_per_instance(1), 25);
        assert_eq!(series_per_instance(3), 27);
    }

    #[test]
    fn roles_map_to_their_documented_values() {
        for (name, value) in [
            ("unheld", 0),
            ("owner", 1),
            ("standby", 2),
            ("taken-over", 3),
            ("lent", 4),
        ] {
            assert_eq!(
                Role::from_name(name).map(Role::value),
                Some(value),
                "{name}"
            );
        }
        assert_eq!(Role::from_name("Owner"), None);
        // The catalogue's doc and meaning say the same.
        let meaning = find("FailoverRole").map(|m| m.meaning).unwrap_or_default();
        assert!(meaning.contains("1 owner, 2 standby, 3 taken-over, 4 lent, 0 unheld"));
    }
}

//! What one peer told us: its source-NATed entries keyed by original tuple, each with the
//! instant it expires (the timeout it was sent with, counted from its arrival). Records are
//! applied in stream order; a snapshot is collected apart and replaces the map only when its
//! end arrives, so a copy cut short by a lost connection leaves the previous one in place.
//! Pure: "now" is always a parameter.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::wire::Record;
use super::{Entry, Tuple};

/// One peer's entries.
#[derive(Debug, Default, Clone)]
pub struct Cache {
    entries: BTreeMap<Tuple, (Entry, Instant)>,
    /// A snapshot being received, if one began.
    staging: Option<BTreeMap<Tuple, (Entry, Instant)>>,
}

impl Cache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one record received at `now`.
    pub fn apply(&mut self, r: &Record, now: Instant) {
        let map = self.staging.as_mut().unwrap_or(&mut self.entries);
        match r {
            Record::Upsert(e) => {
                let until = now + Duration::from_secs(u64::from(e.timeout));
                map.insert(e.orig, (*e, until));
            }
            Record::Remove(t) => {
                map.remove(t);
            }
            Record::SnapshotBegin => self.staging = Some(BTreeMap::new()),
            Record::SnapshotEnd { .. } => {
                if let Some(s) = self.staging.take() {
                    self.entries = s;
                }
            }
            Record::Heartbeat => {}
        }
    }

    /// Drops a snapshot cut short (its connection closed): the previous copy stays.
    pub fn abandon_snapshot(&mut self) {
        self.staging = None;
    }

    /// Drops the entries that expired by `now`.
    pub fn expire(&mut self, now: Instant) {
        self.entries.retain(|_, (_, until)| *until > now);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The live entries translated to one of `nat_addrs`, each with the timeout it has left at
    /// `now` (at least one second), in tuple order.
    pub fn entries_for(&self, nat_addrs: &[Ipv4Addr], now: Instant) -> Vec<Entry> {
        self.entries
            .values()
            .filter(|(e, until)| *until > now && nat_addrs.contains(&e.nat_addr))
            .map(|(e, until)| {
                let left = until.saturating_duration_since(now).as_secs().max(1);
                Entry {
                    timeout: u32::try_from(left).unwrap_or(u32::MAX),
                    ..*e
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::PROTO_TCP;

    fn entry(sport: u16, nat: u8, timeout: u32) -> Entry {
        Entry {
            orig: Tuple {
                proto: PROTO_TCP,
                src: Ipv4Addr::new(10, 0, 1, 2),
                dst: Ipv4Addr::new(198, 51, 100, 2),
                sport,
                dport: 80,
            },
            nat_addr: Ipv4Addr::new(198, 51, 100, nat),
            nat_port: sport,
            tcp_state: Some(3),
            status: 6,
            timeout,
        }
    }

    const P1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const P3: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);

    #[test]
    fn upsert_remove_and_filter_by_nat_address() {
        let t0 = Instant::now();
        let mut c = Cache::new();
        c.apply(&Record::Upsert(entry(1, 1, 100)), t0);
        c.apply(&Record::Upsert(entry(2, 3, 100)), t0);
        c.apply(&Record::Upsert(entry(1, 1, 50)), t0);
        assert_eq!(c.len(), 2);
        let got = c.entries_for(&[P1], t0 + Duration::from_secs(10));
        assert_eq!(got, vec![entry(1, 1, 40)]);
        c.apply(&Record::Remove(entry(1, 1, 0).orig), t0);
        assert!(c.entries_for(&[P1], t0).is_empty());
        assert_eq!(c.entries_for(&[P1, P3], t0), vec![entry(2, 3, 100)]);
    }

    #[test]
    fn expiry() {
        let t0 = Instant::now();
        let mut c = Cache::new();
        c.apply(&Record::Upsert(entry(1, 1, 10)), t0);
        c.apply(&Record::Upsert(entry(2, 1, 30)), t0);
        let t = t0 + Duration::from_secs(10);
        assert_eq!(c.entries_for(&[P1], t), vec![entry(2, 1, 20)]);
        c.expire(t);
        assert_eq!(c.len(), 1);
        c.expire(t0 + Duration::from_secs(30));
        assert!(c.is_empty());
    }

    #[test]
    fn snapshot_replaces_only_when_complete() {
        let t0 = Instant::now();
        let mut c = Cache::new();
        c.apply(&Record::Upsert(entry(1, 1, 100)), t0);
        c.apply(&Record::SnapshotBegin, t0);
        c.apply(&Record::Upsert(entry(2, 1, 100)), t0);
        // Until the end, the old copy is what a takeover would commit.
        assert_eq!(c.entries_for(&[P1], t0), vec![entry(1, 1, 100)]);
        c.apply(&Record::SnapshotEnd { count: 1 }, t0);
        assert_eq!(c.entries_for(&[P1], t0), vec![entry(2, 1, 100)]);
        // A snapshot cut short leaves the previous copy.
        c.apply(&Record::SnapshotBegin, t0);
        c.abandon_snapshot();
        c.apply(&Record::Upsert(entry(3, 1, 100)), t0);
        assert_eq!(c.len(), 2);
        // An end without a begin changes nothing.
        c.apply(&Record::SnapshotEnd { count: 0 }, t0);
        assert_eq!(c.len(), 2);
    }
}

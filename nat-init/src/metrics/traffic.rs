//! One period's NAT traffic from conntrack's accounting: what the CTRZERO dump (each live
//! flow's counts since the previous dump, zeroed as read) and the DESTROY events between two
//! dumps (each ended flow's counts since its last zeroing) say. Together they count every
//! packet of a source-NATed flow once, flowtable-offloaded ones too (the flowtable's `counter`
//! flag makes the kernel account them), without keeping any per-flow state here.
//!
//! How NAT Gateway's per-direction metrics map onto one conntrack counter per direction:
//! conntrack counts a packet as it accepts it, before routing; packets dropped later are
//! counted by `PacketsDropCount` only. So `...InFromSource` and `...OutToDestination` are the
//! original direction's counts, `...InFromDestination` and `...OutToSource` the reply's: equal
//! in pairs, where NAT Gateway's may differ by what it dropped. Bytes are IP packet lengths.

use crate::conntrack::ctnetlink::{Count, Traffic};
use crate::conntrack::{
    PROTO_TCP, PROTO_UDP, STATUS_OFFLOAD, STATUS_SEEN_REPLY, TCP_STATE_ESTABLISHED,
};

/// One period's sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Original direction: sources to destinations.
    pub from_source: Count,
    /// Reply direction: destinations to sources.
    pub from_destination: Count,
    /// Flows that ended idle: a TCP connection still ESTABLISHED when it was destroyed (its
    /// timeout ran out, no FIN or RST closed it), or a UDP flow that had replies.
    pub idle_timeouts: u64,
    /// TCP connections open at the dump (ESTABLISHED, or in the flowtable).
    pub active_tcp: u64,
    /// Live entries the dump saw, and ended ones the events told of (for the log).
    pub live: u64,
    pub ended: u64,
}

fn add(to: &mut Count, c: Count) {
    to.packets = to.packets.saturating_add(c.packets);
    to.bytes = to.bytes.saturating_add(c.bytes);
}

impl Tally {
    /// A live entry of the period's dump.
    pub fn live(&mut self, t: &Traffic) {
        self.live += 1;
        add(&mut self.from_source, t.orig);
        add(&mut self.from_destination, t.reply);
        let open = match t.tcp_state {
            Some(s) => s == TCP_STATE_ESTABLISHED,
            // The kernel dumps no TCP state for a flow in the flowtable: only established
            // flows get there.
            None => t.status & STATUS_OFFLOAD != 0,
        };
        if t.proto == PROTO_TCP && open {
            self.active_tcp += 1;
        }
    }

    /// A DESTROY event between two dumps.
    pub fn destroyed(&mut self, t: &Traffic) {
        self.ended += 1;
        add(&mut self.from_source, t.orig);
        add(&mut self.from_destination, t.reply);
        let idle = match t.proto {
            // A kernel that sends no TCP state with the event: not counted (an undercount
            // rather than closed connections counted as idle).
            PROTO_TCP => t.tcp_state == Some(TCP_STATE_ESTABLISHED),
            PROTO_UDP => t.status & STATUS_SEEN_REPLY != 0,
            _ => false,
        };
        if idle {
            self.idle_timeouts += 1;
        }
    }

    /// The period's counter values under their catalogue names.
    pub fn counters(&self) -> [(&'static str, u64); 9] {
        [
            ("BytesInFromSource", self.from_source.bytes),
            ("BytesOutToDestination", self.from_source.bytes),
            ("PacketsInFromSource", self.from_source.packets),
            ("PacketsOutToDestination", self.from_source.packets),
            ("BytesInFromDestination", self.from_destination.bytes),
            ("BytesOutToSource", self.from_destination.bytes),
            ("PacketsInFromDestination", self.from_destination.packets),
            ("PacketsOutToSource", self.from_destination.packets),
            ("IdleTimeoutCount", self.idle_timeouts),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::STATUS_SRC_NAT;

    fn t(
        proto: u8,
        tcp_state: Option<u8>,
        status: u32,
        orig: (u64, u64),
        reply: (u64, u64),
    ) -> Traffic {
        Traffic {
            proto,
            destroyed: false,
            status: status | STATUS_SRC_NAT,
            tcp_state,
            orig: Count {
                packets: orig.0,
                bytes: orig.1,
            },
            reply: Count {
                packets: reply.0,
                bytes: reply.1,
            },
        }
    }

    #[test]
    fn dump_and_events_add_up_per_direction() {
        let mut x = Tally::default();
        // A download: few bytes out, many back.
        x.live(&t(
            PROTO_TCP,
            Some(3),
            STATUS_SEEN_REPLY,
            (10, 600),
            (20, 30_000),
        ));
        // In the flowtable: no state, still open.
        x.live(&t(
            PROTO_TCP,
            None,
            STATUS_OFFLOAD | STATUS_SEEN_REPLY,
            (1, 52),
            (3, 4_500),
        ));
        // Closing: not open.
        x.live(&t(PROTO_TCP, Some(7), STATUS_SEEN_REPLY, (2, 104), (1, 52)));
        x.live(&t(PROTO_UDP, None, STATUS_SEEN_REPLY, (1, 60), (1, 90)));
        x.destroyed(&t(
            PROTO_TCP,
            Some(3),
            STATUS_SEEN_REPLY,
            (5, 300),
            (5, 400),
        ));
        x.destroyed(&t(PROTO_TCP, Some(8), STATUS_SEEN_REPLY, (1, 40), (1, 40)));
        x.destroyed(&t(PROTO_UDP, None, STATUS_SEEN_REPLY, (2, 100), (2, 200)));
        // No reply ever: not an idle connection, but its packets count.
        x.destroyed(&t(PROTO_UDP, None, 0, (3, 150), (0, 0)));
        x.destroyed(&t(1, None, STATUS_SEEN_REPLY, (1, 84), (1, 84)));
        assert_eq!(x.active_tcp, 2);
        assert_eq!((x.live, x.ended), (4, 5));
        assert_eq!(x.idle_timeouts, 2);
        assert_eq!(
            x.from_source,
            Count {
                packets: 10 + 1 + 2 + 1 + 5 + 1 + 2 + 3 + 1,
                bytes: 600 + 52 + 104 + 60 + 300 + 40 + 100 + 150 + 84
            }
        );
        assert_eq!(
            x.from_destination.bytes,
            30_000 + 4_500 + 52 + 90 + 400 + 40 + 200 + 84
        );
        let c = x.counters();
        let get = |n: &str| c.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        assert_eq!(get("BytesInFromSource"), get("BytesOutToDestination"));
        assert_eq!(
            get("PacketsInFromDestination"),
            Some(x.from_destination.packets)
        );
        assert_eq!(get("IdleTimeoutCount"), Some(2));
        // Every name is a catalogue counter.
        for (name, _) in c {
            let m = super::super::catalogue::find(name).unwrap();
            assert_eq!(m.kind, super::super::catalogue::Kind::Counter, "{name}");
        }
    }

    #[test]
    fn sums_saturate() {
        let mut x = Tally::default();
        x.live(&t(PROTO_UDP, None, 0, (u64::MAX, u64::MAX), (0, 0)));
        x.destroyed(&t(PROTO_UDP, None, 0, (5, 5), (0, 0)));
        assert_eq!(x.from_source.bytes, u64::MAX);
    }
}

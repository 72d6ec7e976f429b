//! What the `health` line says, from the table's counters, conntrack and the lease.

use crate::nft;
use crate::report::Health;

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
        masq_flows: c.masqueraded_flows,
        masq_bytes: c.masqueraded_bytes,
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
            rules: vec![("forward".into(), nft::RULE_FWD_OFFLOAD.into(), 6, 9000)],
        };
        let h = health(&c, true, None, 7, 65536, Some(3500));
        assert_eq!(
            h.to_string(),
            "nat-init: health forwarded_packets=10 forwarded_bytes=15000 dropped=2 conntrack=7/65536 lease_left_s=3500 offloaded=6 masq_flows=3 masq_bytes=4500"
        );
        let h = health(&c, false, Some(4), 7, 65536, None);
        assert_eq!((h.offloaded, h.lease_left_s), (0, 0));
        assert_eq!(health(&c, true, Some(4), 7, 65536, None).offloaded, 4);
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

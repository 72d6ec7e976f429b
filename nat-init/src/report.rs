//! The console lines nat-init prints: `ready`, `error` and `health`. Tests and operators grep
//! them (`aws ec2 get-console-output`), so their shape is fixed here: one line each, a fixed
//! prefix, then `key=value` fields in a fixed order.

use std::fmt::{self, Display};
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::cidr::Ipv4Cidr;

/// Every line starts with this.
pub const PREFIX: &str = "nat-init:";

/// What the `ready` line reports: the NAT is forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready<'a> {
    pub iface: &'a str,
    /// The leased address and its prefix length, as in `10.0.1.23/24`.
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// The interface MTU (DHCP option 26, else 1500).
    pub mtu: u32,
    pub private: &'a [Ipv4Cidr],
    /// [`boot_elapsed_ms`] when the line is printed.
    pub elapsed_ms: u64,
}

impl Display for Ready<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX} ready iface={} addr={}/{} gw={} mtu={} private=",
            one_token(self.iface),
            self.addr,
            self.prefix_len,
            self.gateway,
            self.mtu
        )?;
        for (i, c) in self.private.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{c}")?;
        }
        write!(f, " elapsed_ms={}", self.elapsed_ms)
    }
}

/// What a `health` line reports, every `health_interval` seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Packets and bytes counted by the forward chain's accept rule (offloaded packets skip it).
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    /// Packets counted by the forward chain's drop rule (not from a private range, invalid).
    pub dropped: u64,
    /// Tracked connections now, and the table's limit.
    pub conntrack: u64,
    pub conntrack_max: u64,
    /// Seconds until the DHCP lease expires; 0 when there is no lease.
    pub lease_left_s: u64,
    /// Flows in the flowtable now (conntrack entries marked offloaded); where that list cannot
    /// be read, the `flow add` rule's packet counter. Zero without a flowtable.
    pub offloaded: u64,
    /// conntrack's statistics (`/proc/net/stat/nf_conntrack`), when they could be read.
    pub conntrack_stats: Option<ConntrackStats>,
    /// The ENA driver's allowance counters it has, in [`ENA_ALLOWANCES`] order; empty on
    /// other drivers (virtio in QEMU, veth in the tests).
    pub ena: Vec<(&'static str, u64)>,
    /// Flows masquerade started (the nat rule's packets: it sees first packets only; with
    /// several egress addresses, the snat rules' sum) and the bytes of masqueraded flows out of
    /// the interface (offloaded packets not counted): zero while `ready` means nothing is being
    /// NATed.
    pub masq_flows: u64,
    pub masq_bytes: u64,
    /// New flows refused because their source already had its `per_source_conntrack_limit`.
    pub per_source_dropped: u64,
}

/// conntrack's statistics summed over the CPUs: each counts packets whose new flow could not
/// be tracked. `drop`: the table was full and no entry could be evicted; `early_drop`: an
/// entry not yet assured (a half-open TCP flow, unanswered UDP) was evicted to make room (the
/// table is full); `insert_failed`: the entry clashed with another one being inserted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConntrackStats {
    pub drop: u64,
    pub early_drop: u64,
    pub insert_failed: u64,
}

/// The ENA driver's ethtool statistics that count packets the instance's limits dropped
/// (bandwidth in and out, packets per second, tracked connections, link-local services such
/// as DNS, IMDS and NTP): on Nitro the only sign of those drops.
pub const ENA_ALLOWANCES: [&str; 5] = [
    "bw_in_allowance_exceeded",
    "bw_out_allowance_exceeded",
    "pps_allowance_exceeded",
    "conntrack_allowance_exceeded",
    "linklocal_allowance_exceeded",
];

impl Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX} health forwarded_packets={} forwarded_bytes={} dropped={} conntrack={}/{} lease_left_s={} offloaded={}",
            self.forwarded_packets,
            self.forwarded_bytes,
            self.dropped,
            self.conntrack,
            self.conntrack_max,
            self.lease_left_s,
            self.offloaded
        )?;
        if let Some(s) = &self.conntrack_stats {
            write!(
                f,
                " ct_drop={} ct_early_drop={} ct_insert_failed={}",
                s.drop, s.early_drop, s.insert_failed
            )?;
        }
        write!(
            f,
            " masq_flows={} masq_bytes={} per_source_dropped={}",
            self.masq_flows, self.masq_bytes, self.per_source_dropped
        )?;
        for (name, value) in &self.ena {
            write!(f, " {name}={value}")?;
        }
        Ok(())
    }
}

/// `nat-init: error <what> <why>`: `what` is one word naming the capability (`dhcp`, `nft`,
/// `sysctl`, `imds`, `config`, `link`); `why` is flattened onto the one line.
pub fn error_line(what: &str, why: &dyn Display) -> String {
    let why = why.to_string();
    let why: Vec<&str> = why.split_whitespace().collect();
    format!("{PREFIX} error {} {}", one_token(what), why.join(" "))
}

/// An `anyhow`-style chain (`outer: inner: root`) as one `error` line.
pub fn error_chain_line(what: &str, err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    error_line(what, &text)
}

/// A duration in an info or error line: `10 s`, or with one decimal when not whole, `0.5 s`.
pub fn seconds(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// An Ethernet address as IMDS and `ip link` write it: `0a:1b:2c:3d:4e:5f`.
pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Ranges as one `key=value` field's value: `10.0.0.0/16,10.1.0.0/16`.
pub fn ranges_text(ranges: &[Ipv4Cidr]) -> String {
    ranges
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Keeps a field one token so the line stays splittable on spaces.
fn one_token(s: &str) -> String {
    if s.is_empty() {
        return "-".to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Milliseconds since the kernel started, suspend included (CLOCK_BOOTTIME).
pub fn boot_elapsed_ms() -> Result<u64, nix::Error> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)?;
    let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec()).unwrap_or(0);
    Ok(secs.saturating_mul(1000).saturating_add(nanos / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_exact() {
        let private = [
            "10.0.0.0/16".parse().unwrap(),
            "100.64.0.0/10".parse().unwrap(),
        ];
        let r = Ready {
            iface: "ens5",
            addr: Ipv4Addr::new(10, 0, 1, 23),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 0, 1, 1),
            mtu: 9001,
            private: &private,
            elapsed_ms: 1834,
        };
        assert_eq!(
            r.to_string(),
            "nat-init: ready iface=ens5 addr=10.0.1.23/24 gw=10.0.1.1 mtu=9001 private=10.0.0.0/16,100.64.0.0/10 elapsed_ms=1834"
        );
    }

    #[test]
    fn ready_line_keeps_fields_single_tokens() {
        let r = Ready {
            iface: "",
            addr: Ipv4Addr::new(192, 0, 2, 2),
            prefix_len: 32,
            gateway: Ipv4Addr::new(192, 0, 2, 1),
            mtu: 1500,
            private: &[],
            elapsed_ms: 0,
        };
        assert_eq!(
            r.to_string(),
            "nat-init: ready iface=- addr=192.0.2.2/32 gw=192.0.2.1 mtu=1500 private= elapsed_ms=0"
        );
    }

    #[test]
    fn health_line_exact() {
        let h = Health {
            forwarded_packets: 10,
            forwarded_bytes: 15000,
            dropped: 2,
            conntrack: 7,
            conntrack_max: 65536,
            lease_left_s: 3500,
            offloaded: 3,
            masq_flows: 4,
            masq_bytes: 9000,
            per_source_dropped: 5,
            ..Health::default()
        };
        assert_eq!(
            h.to_string(),
            "nat-init: health forwarded_packets=10 forwarded_bytes=15000 dropped=2 conntrack=7/65536 lease_left_s=3500 offloaded=3 masq_flows=4 masq_bytes=9000 per_source_dropped=5"
        );
        let h = Health {
            conntrack_stats: Some(ConntrackStats {
                drop: 4,
                early_drop: 5,
                insert_failed: 6,
            }),
            ena: vec![
                ("bw_in_allowance_exceeded", 1),
                ("pps_allowance_exceeded", 2),
            ],
            ..h
        };
        assert_eq!(
            h.to_string(),
            "nat-init: health forwarded_packets=10 forwarded_bytes=15000 dropped=2 conntrack=7/65536 lease_left_s=3500 offloaded=3 ct_drop=4 ct_early_drop=5 ct_insert_failed=6 masq_flows=4 masq_bytes=9000 per_source_dropped=5 bw_in_allowance_exceeded=1 pps_allowance_exceeded=2"
        );
    }

    #[test]
    fn error_line_is_one_line() {
        assert_eq!(
            error_line("dhcp", &"no offer\n after  30 s"),
            "nat-init: error dhcp no offer after 30 s"
        );
        assert_eq!(error_line("bad word", &"x"), "nat-init: error bad_word x");
    }

    #[test]
    fn error_chain_joins_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("installing the ruleset")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("permission denied"));
        assert_eq!(
            error_chain_line("nft", &e),
            "nat-init: error nft installing the ruleset: permission denied"
        );
    }

    #[test]
    fn boot_clock_moves_forward() {
        let a = boot_elapsed_ms().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = boot_elapsed_ms().unwrap();
        assert!(a > 0 && b >= a + 20, "{a} {b}");
    }

    #[test]
    fn field_texts() {
        assert_eq!(seconds(Duration::from_secs(10)), "10 s");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5 s");
        assert_eq!(seconds(Duration::ZERO), "0 s");
        assert_eq!(
            mac_text(&[0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f]),
            "0a:1b:2c:3d:4e:5f"
        );
        let r = [
            "10.0.0.0/16".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
        ];
        assert_eq!(ranges_text(&r), "10.0.0.0/16,10.1.0.0/16");
        assert_eq!(ranges_text(&[]), "");
    }
}

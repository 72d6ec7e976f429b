//! The table the configuration asks for, and what the ruleset stage says about the flowtable.

use std::net::Ipv4Addr;

use crate::cidr::Ipv4Cidr;
use crate::config::Config;
use crate::nft::{self, RulesetSpec};

/// The appliance's table on `iface` for the `private` ranges, taking DHCP replies from
/// `dhcp_server` only (the lease's, when there is one). `flowtable` is whether it gets one:
/// the configuration wants it and the kernel can add it (see [`nft::flowtable_supported`]).
/// `snat`: the addresses (each with its Elastic IP) new flows are spread across; empty,
/// masquerade on the interface's address. `by_source`: sources that take one address first
/// (a failover member holding a peer's tables).
pub fn ruleset_spec(
    cfg: &Config,
    iface: &str,
    private: &[Ipv4Cidr],
    flowtable: bool,
    dhcp_server: Option<Ipv4Addr>,
    snat: &[Ipv4Addr],
    by_source: &[(Ipv4Cidr, Ipv4Addr)],
) -> RulesetSpec {
    RulesetSpec {
        table: nft::TABLE.to_string(),
        iface: iface.to_string(),
        private: private.to_vec(),
        flowtable,
        mss_clamp: cfg.mss_clamp,
        icmp_rate_per_s: cfg.icmp_rate,
        masquerade_ports: cfg.masquerade_ports,
        per_source_limit: cfg.per_source_conntrack_limit,
        dhcp_server,
        snat_addresses: snat.to_vec(),
        snat_by_source: by_source.to_vec(),
        failover_ports: cfg
            .aws
            .failover
            .as_ref()
            .map(|_| (crate::failover::PORT, crate::failover::CTSYNC_PORT)),
        nat_port_range: cfg.nat_port_range,
    }
}

/// The info line about the flowtable: off by configuration, active, or missing from the kernel.
pub fn flowtable_line(configured: bool, active: bool, iface: &str) -> String {
    if !configured {
        format!("flowtable {} disabled by config", nft::FLOWTABLE)
    } else if active {
        format!("flowtable {} on {iface} active", nft::FLOWTABLE)
    } else {
        format!(
            "flowtable {} unavailable in this kernel; established flows take the slow path",
            nft::FLOWTABLE
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_follows_the_config() {
        let cfg = Config {
            mss_clamp: false,
            icmp_rate: 3,
            masquerade_ports: nft::MasqueradePorts::Random,
            ..Config::default()
        };
        let private = ["10.0.0.0/16".parse().unwrap()];
        let server = Some(Ipv4Addr::new(10, 0, 1, 1));
        let s = ruleset_spec(&cfg, "ens5", &private, true, server, &[], &[]);
        assert_eq!(
            s,
            RulesetSpec {
                table: nft::TABLE.into(),
                iface: "ens5".into(),
                private: private.to_vec(),
                flowtable: true,
                mss_clamp: false,
                icmp_rate_per_s: 3,
                masquerade_ports: nft::MasqueradePorts::Random,
                per_source_limit: 32768,
                dhcp_server: server,
                snat_addresses: Vec::new(),
                snat_by_source: Vec::new(),
                failover_ports: None,
                nat_port_range: None,
            }
        );
        let ranged = Config {
            nat_port_range: Some((2000, 2003)),
            ..cfg.clone()
        };
        assert_eq!(
            ruleset_spec(&ranged, "ens5", &private, true, server, &[], &[]).nat_port_range,
            Some((2000, 2003))
        );
        assert!(!ruleset_spec(&cfg, "ens5", &private, false, None, &[], &[]).flowtable);
        let eips = [Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 40)];
        assert_eq!(
            ruleset_spec(&cfg, "ens5", &private, false, None, &eips, &[]).snat_addresses,
            eips
        );
    }

    #[test]
    fn flowtable_lines() {
        assert_eq!(
            flowtable_line(false, false, "ens5"),
            "flowtable ft disabled by config"
        );
        assert_eq!(
            flowtable_line(true, true, "ens5"),
            "flowtable ft on ens5 active"
        );
        assert!(flowtable_line(true, false, "ens5").contains("unavailable in this kernel"));
    }
}

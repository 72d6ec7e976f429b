//! Fuzzes the nf_tables read-back path on arbitrary bytes: the netlink framing, the crate's parse
//! of each nfnetlink message, and our decoder of the table; then prints, compares, sums and
//! re-encodes whatever decoded, as `verify` and `counters` do with a real dump.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nat_init::nft;

fuzz_target!(|data: &[u8]| {
    let Ok(r) = nft::decode_replies(nft::TABLE, data) else {
        return;
    };
    let _ = r.to_string();
    let _ = nft::build(&nft::RulesetSpec {
        table: nft::TABLE.into(),
        iface: "ens5".into(),
        private: Vec::new(),
        flowtable: true,
        mss_clamp: true,
        icmp_rate_per_s: 10,
        masquerade_ports: nft::MasqueradePorts::default(),
        per_source_limit: 32768,
        dhcp_server: Some(std::net::Ipv4Addr::new(10, 0, 0, 2)),
        snat_addresses: vec![
            std::net::Ipv4Addr::new(198, 51, 100, 1),
            std::net::Ipv4Addr::new(198, 51, 100, 3),
        ],
        snat_by_source: vec![(
            "10.0.2.0/24".parse().expect("literal CIDR"),
            std::net::Ipv4Addr::new(198, 51, 100, 5),
        )],
        failover_ports: Some((7471, 7472)),
        nat_port_range: Some((2000, 2999)),
    })
    .differences(&r);
    let _ = nft::Counters::of(&r);
    let _ = nft::encode(&r);
});

//! The ruleset the appliance wants, built from a [`RulesetSpec`] (the configuration's view of
//! it): masquerade what the private ranges send out of the interface to anywhere else (or
//! spread it across several outside addresses with source NAT), forward only flows they start
//! to non-private destinations (with their replies and ICMP errors), at most a set number per
//! source, and drop unsolicited input but loopback, DHCP replies (from the lease's server,
//! untracked) and rate-limited ping; count masqueraded traffic after source NAT, and each
//! forwarded flow once at its first reply (a conntrack mark says it was counted); keep
//! conntrack's counters running for flows the flowtable carries; take outside ports from
//! `nat_port_range` when set. The order of the rules is part of the policy; the comments at
//! each say why.

use std::net::Ipv4Addr;

use super::model::{Chain, ChainType, Expr, Flowtable, Rule, Ruleset, Set};
use super::uapi::*;
use crate::cidr::{self, Ipv4Cidr};

/// What the appliance wants in its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesetSpec {
    pub table: String,
    /// The outside interface: masquerade source and flowtable device.
    pub iface: String,
    /// Ranges whose new flows are forwarded and masqueraded (the VPC's CIDRs).
    pub private: Vec<Ipv4Cidr>,
    pub flowtable: bool,
    pub mss_clamp: bool,
    pub icmp_rate_per_s: u32,
    pub masquerade_ports: MasqueradePorts,
    /// Most tracked connections one private source may hold (new flows beyond are dropped);
    /// 0: no limit.
    pub per_source_limit: u32,
    /// The DHCP lease's server: once there is one, DHCP replies are accepted from it only.
    pub dhcp_server: Option<Ipv4Addr>,
    /// Outside addresses to spread new flows across (each its own ~64k ports per destination),
    /// one rule each; empty: masquerade to the interface's primary address. Duplicates count
    /// once.
    pub snat_addresses: Vec<Ipv4Addr>,
    /// Sources whose new flows take one address before the spread over `snat_addresses`: a
    /// failover member holding a peer's table sends that table's subnets out through the
    /// peer's address, so that their connections move back with it.
    pub snat_by_source: Vec<(Ipv4Cidr, Ipv4Addr)>,
    /// A failover group member's ports, accepted from anyone (the security group decides who):
    /// the heartbeats' UDP port and connection replication's TCP port.
    pub failover_ports: Option<(u16, u16)>,
    /// The outside source ports (first, last) masquerade and source NAT take flows to;
    /// `None`: the kernel's choice (1024-65535 for a port it must change), and the rules are
    /// exactly those without a range.
    pub nat_port_range: Option<(u16, u16)>,
}

/// How masquerade (or source NAT to several addresses) picks a flow's source port on the
/// outside address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MasqueradePorts {
    /// A keyed hash of the flow picks the port (NF_NAT_RANGE_PROTO_RANDOM, `random`).
    Random,
    /// A fresh random port for every flow (NF_NAT_RANGE_PROTO_RANDOM_FULLY, `fully-random`):
    /// the default, see `Config::masquerade_ports`.
    #[default]
    FullyRandom,
    /// The host's own port while it is free, the kernel's default (no flag, `preserve`).
    Preserve,
}

impl MasqueradePorts {
    /// The config value's spelling, nft's too (but `preserve`, which nft leaves unsaid).
    pub const NAMES: [(&str, MasqueradePorts); 3] = [
        ("random", MasqueradePorts::Random),
        ("fully-random", MasqueradePorts::FullyRandom),
        ("preserve", MasqueradePorts::Preserve),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("fully-random", |(n, _)| n)
    }

    fn flags(self) -> u32 {
        match self {
            MasqueradePorts::Random => NAT_RANGE_PROTO_RANDOM,
            MasqueradePorts::FullyRandom => NAT_RANGE_PROTO_RANDOM_FULLY,
            MasqueradePorts::Preserve => 0,
        }
    }
}

/// The default table name.
pub const TABLE: &str = "nat_instance";
/// The named interval set holding the private ranges.
pub const PRIVATE_SET: &str = "private";
/// The dynamic set keyed by private source address, holding each one's connection count.
pub const PER_SOURCE_SET: &str = "persrc";
/// Most sources [`PER_SOURCE_SET`] holds: the VPC's hosts (a new source beyond it is not
/// limited until one leaves).
const PER_SOURCE_SIZE: u32 = 65535;
/// The flowtable's name.
pub const FLOWTABLE: &str = "ft";

// Names of the rules that carry counters (NFTA_RULE_USERDATA comments).
pub const RULE_MASQ: &str = "masquerade";
/// The source NAT rules to several addresses are named this and their place, from 0
/// (see [`snat_rule_name`]).
pub const RULE_SNAT_PREFIX: &str = "snat ";
/// Counts every packet of masqueraded flows leaving the interface (both directions: replies to
/// private hosts leave by the same ENI), in its own chain after source NAT.
pub const RULE_MASQ_TRAFFIC: &str = "masq_traffic";
pub const RULE_FWD_MSS: &str = "fwd_mss_clamp";
/// Counts each forwarded flow once, at its first reply (NAT Gateway's
/// ConnectionEstablishedCount): see the rule in [`build`].
pub const RULE_FWD_FIRST_REPLY: &str = "fwd_first_reply";
pub const RULE_FWD_OFFLOAD: &str = "fwd_offload";
pub const RULE_FWD_ESTABLISHED: &str = "fwd_established";
pub const RULE_FWD_INVALID: &str = "fwd_invalid";
pub const RULE_FWD_NEW: &str = "fwd_new_private";
pub const RULE_FWD_PER_SOURCE: &str = "fwd_per_source_limit";
pub const RULE_FWD_DROP: &str = "fwd_drop";
pub const RULE_IN_LO: &str = "in_loopback";
pub const RULE_IN_ESTABLISHED: &str = "in_established";
pub const RULE_IN_INVALID: &str = "in_invalid";
pub const RULE_IN_ICMP_LIMIT: &str = "in_icmp_over_limit";
pub const RULE_IN_ICMP: &str = "in_icmp_echo";
pub const RULE_IN_DHCP: &str = "in_dhcp";
pub const RULE_IN_HEARTBEAT: &str = "in_failover_heartbeat";
pub const RULE_IN_CTSYNC: &str = "in_failover_ctsync";
pub const RULE_RAW_DHCP: &str = "raw_dhcp_notrack";
pub const RULE_IN_DROP: &str = "in_drop";

/// The conntrack mark of a flow whose first reply [`RULE_FWD_FIRST_REPLY`] counted.
const FIRST_REPLY_MARK: u32 = 1;

/// nft's default packet burst for `limit rate`.
const LIMIT_BURST: u32 = 5;

fn ifname(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.resize(IFNAMSIZ, 0);
    v
}

fn meta_cmp(key: u32, op: u32, data: Vec<u8>) -> [Expr; 2] {
    [
        Expr::Meta { key, dreg: REG_1 },
        Expr::Cmp {
            sreg: REG_1,
            op,
            data,
        },
    ]
}

fn payload_cmp(base: u32, offset: u32, data: Vec<u8>) -> [Expr; 2] {
    [
        Expr::Payload {
            base,
            offset,
            len: data.len() as u32,
            dreg: REG_1,
        },
        Expr::Cmp {
            sreg: REG_1,
            op: CMP_EQ,
            data,
        },
    ]
}

fn addr_in_set(daddr: bool, invert: bool) -> [Expr; 2] {
    [
        Expr::Payload {
            base: BASE_NETWORK,
            offset: if daddr { 16 } else { 12 },
            len: 4,
            dreg: REG_1,
        },
        Expr::Lookup {
            set: PRIVATE_SET.into(),
            sreg: REG_1,
            invert,
        },
    ]
}

fn ct_state(mask: u32) -> [Expr; 3] {
    ct_bits(CT_STATE, mask)
}

/// Any of `mask`'s bits set in conntrack's `key` (`ct state ...`, `ct status ...`).
fn ct_bits(key: u32, mask: u32) -> [Expr; 3] {
    [
        Expr::Ct { key, dreg: REG_1 },
        Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            len: 4,
            mask: mask.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: REG_1,
            op: CMP_NEQ,
            data: vec![0; 4],
        },
    ]
}

fn ip_protocol(proto: u8) -> [Expr; 2] {
    payload_cmp(BASE_NETWORK, 9, vec![proto])
}

fn counter() -> Expr {
    Expr::Counter {
        packets: 0,
        bytes: 0,
    }
}

fn rule(name: &str, parts: &[&[Expr]]) -> Rule {
    Rule {
        name: name.into(),
        exprs: parts.iter().flat_map(|p| p.iter().cloned()).collect(),
    }
}

/// The name of the source NAT rule at `index` of [`RulesetSpec::snat_addresses`] (duplicates
/// left out): `snat 0`, `snat 1`, ...
pub fn snat_rule_name(index: usize) -> String {
    format!("{RULE_SNAT_PREFIX}{index}")
}

/// The postrouting chain's rules: masquerade, or one source NAT rule per address. Rule `i` of
/// `n` takes a new flow with probability 1/(n-i) among those rules before it passed over, so
/// each address gets 1/n of the flows, drawn per flow (`numgen random`); the last one takes
/// what is left. One rule per address rather than one `numgen ... map` lookup: no anonymous
/// map to encode, name and compare on read-back, and each address has its own counter.
fn nat_rules(spec: &RulesetSpec) -> Vec<Rule> {
    // Forwarded flows only (an input interface; the host's own packets have none): the
    // appliance's own traffic (API calls, egress probes, heartbeats) keeps the primary
    // address, which must reach out before any Elastic IP is claimed anyway, and which stays
    // this instance's when a peer takes an egress address over (SNAT to that address would
    // send the answers to the peer).
    let matches: Vec<Expr> = [
        meta_cmp(META_IIFNAME, CMP_NEQ, ifname("")).to_vec(),
        meta_cmp(META_OIFNAME, CMP_EQ, ifname(&spec.iface)).to_vec(),
        addr_in_set(false, false).to_vec(),
        addr_in_set(true, true).to_vec(),
    ]
    .concat();
    // A port range: its ends loaded into registers as nft does (`to :MIN-MAX`, two bytes in
    // network order each), and PROTO_SPECIFIED so the kernel takes it.
    let ports = |first: u32| -> (Vec<Expr>, u32, Option<(u32, u32)>) {
        match spec.nat_port_range {
            None => (Vec::new(), 0, None),
            Some((min, max)) => (
                vec![
                    Expr::Immediate {
                        dreg: first,
                        data: min.to_be_bytes().to_vec(),
                    },
                    Expr::Immediate {
                        dreg: first + 1,
                        data: max.to_be_bytes().to_vec(),
                    },
                ],
                NAT_RANGE_PROTO_SPECIFIED,
                Some((first, first + 1)),
            ),
        }
    };
    let snat_to = |a: Ipv4Addr| {
        let (load, specified, proto) = ports(REG_2);
        [
            vec![
                counter(),
                Expr::Immediate {
                    dreg: REG_1,
                    data: a.octets().to_vec(),
                },
            ],
            load,
            vec![Expr::Snat {
                addr: REG_1,
                flags: NAT_RANGE_MAP_IPS | specified | spec.masquerade_ports.flags(),
                proto,
            }],
        ]
        .concat()
    };
    let by_source: Vec<Rule> = spec
        .snat_by_source
        .iter()
        .map(|(from, a)| {
            rule(
                &format!("{RULE_SNAT_PREFIX}from {from}"),
                &[
                    &matches,
                    &[
                        Expr::Payload {
                            base: BASE_NETWORK,
                            offset: 12,
                            len: 4,
                            dreg: REG_1,
                        },
                        Expr::Bitwise {
                            sreg: REG_1,
                            dreg: REG_1,
                            len: 4,
                            mask: from.netmask().octets().to_vec(),
                            xor: vec![0; 4],
                        },
                        Expr::Cmp {
                            sreg: REG_1,
                            op: CMP_EQ,
                            data: from.addr().octets().to_vec(),
                        },
                    ],
                    &snat_to(*a),
                ],
            )
        })
        .collect();
    if spec.snat_addresses.is_empty() {
        let (load, specified, proto) = ports(REG_1);
        return by_source
            .into_iter()
            .chain([rule(
                RULE_MASQ,
                &[
                    &matches,
                    &[counter()],
                    &load,
                    &[Expr::Masq {
                        flags: specified | spec.masquerade_ports.flags(),
                        proto,
                    }],
                ],
            )])
            .collect();
    }
    let mut addrs: Vec<Ipv4Addr> = Vec::new();
    for a in &spec.snat_addresses {
        if !addrs.contains(a) {
            addrs.push(*a);
        }
    }
    let n = addrs.len();
    let spread = addrs.iter().enumerate().map(|(i, a)| {
        let pick: Vec<Expr> = if i + 1 < n {
            vec![
                Expr::Numgen {
                    dreg: REG_1,
                    modulus: (n - i) as u32,
                    kind: NG_RANDOM,
                    offset: 0,
                },
                Expr::Cmp {
                    sreg: REG_1,
                    op: CMP_EQ,
                    data: 0u32.to_ne_bytes().to_vec(),
                },
            ]
        } else {
            Vec::new()
        };
        rule(&snat_rule_name(i), &[&matches, &pick, &snat_to(*a)])
    });
    by_source.into_iter().chain(spread).collect()
}

/// The table for `spec`. Pure: same spec, same model, same bytes.
pub fn build(spec: &RulesetSpec) -> Ruleset {
    let accept = Expr::Verdict(NF_ACCEPT);
    let drop = Expr::Verdict(NF_DROP);
    let c = counter();

    let postrouting = Chain {
        name: "postrouting".into(),
        kind: ChainType::Nat,
        hook: HOOK_POST_ROUTING,
        priority: 100,
        policy: NF_ACCEPT,
        rules: nat_rules(spec),
    };

    // The nat chain sees a flow's first packet only; this one, hooked after source NAT, every
    // packet of a flow masquerade translated, for the bytes on the health line. No verdict.
    let masq_count = Chain {
        name: "postrouting_count".into(),
        kind: ChainType::Filter,
        hook: HOOK_POST_ROUTING,
        priority: 101,
        policy: NF_ACCEPT,
        rules: vec![rule(
            RULE_MASQ_TRAFFIC,
            &[
                &meta_cmp(META_OIFNAME, CMP_EQ, ifname(&spec.iface)),
                &ct_bits(CT_STATUS, CT_STATUS_SRC_NAT),
                std::slice::from_ref(&c),
            ],
        )],
    };

    let mut fwd = Vec::new();
    if spec.mss_clamp {
        // Before any accept, so SYNs of new and of established-but-restarted flows are clamped.
        fwd.push(rule(
            RULE_FWD_MSS,
            &[
                &meta_cmp(META_L4PROTO, CMP_EQ, vec![IPPROTO_TCP]),
                &[
                    Expr::Payload {
                        base: BASE_TRANSPORT,
                        offset: 13,
                        len: 1,
                        dreg: REG_1,
                    },
                    Expr::Bitwise {
                        sreg: REG_1,
                        dreg: REG_1,
                        len: 1,
                        mask: vec![TCP_SYN],
                        xor: vec![0],
                    },
                    Expr::Cmp {
                        sreg: REG_1,
                        op: CMP_NEQ,
                        data: vec![0],
                    },
                    Expr::Rt {
                        key: RT_TCPMSS,
                        dreg: REG_1,
                    },
                    Expr::Byteorder {
                        sreg: REG_1,
                        dreg: REG_1,
                        op: BYTEORDER_HTON,
                        len: 2,
                        size: 2,
                    },
                    Expr::Exthdr {
                        op: EXTHDR_OP_TCPOPT,
                        ty: TCPOPT_MAXSEG,
                        offset: 2,
                        len: 2,
                        flags: 0,
                        sreg: Some(REG_1),
                        dreg: None,
                    },
                ],
            ],
        ));
    }
    // A flow's first reply marks it (ct mark 1) and is counted; later replies see the mark.
    // Before the offload rule: the flowtable takes a flow only once conntrack has seen a reply
    // (established), so the first reply of any UDP or TCP flow (for TCP the SYN-ACK, and the
    // flowtable waits for the handshake anyway) always passes here, and each flow counts once
    // whatever the flowtable does. No verdict: the packet goes on to the rules below. The mark
    // is the appliance's alone (nothing else sets one); conntrack replication does not carry
    // it, so a flow taken over from a peer counts again at its next reply here.
    fwd.push(rule(
        RULE_FWD_FIRST_REPLY,
        &[&[
            Expr::Ct {
                key: CT_DIRECTION,
                dreg: REG_1,
            },
            Expr::Cmp {
                sreg: REG_1,
                op: CMP_EQ,
                data: vec![CT_DIR_REPLY],
            },
            Expr::Ct {
                key: CT_MARK,
                dreg: REG_1,
            },
            Expr::Cmp {
                sreg: REG_1,
                op: CMP_EQ,
                data: 0u32.to_ne_bytes().to_vec(),
            },
            Expr::Immediate {
                dreg: REG_1,
                data: FIRST_REPLY_MARK.to_ne_bytes().to_vec(),
            },
            Expr::CtSet {
                key: CT_MARK,
                sreg: REG_1,
            },
            c.clone(),
        ]],
    ));
    // `flow add` ends its rule (NFT_BREAK) for whatever it cannot offload: ICMP, and TCP until
    // the handshake completes. So it has a rule of its own, without a verdict, and the accept
    // follows in the next one; `... flow add @ft accept` in one rule would drop those packets.
    if spec.flowtable {
        let mut offload: Vec<Expr> = ct_state(CT_ESTABLISHED | CT_RELATED).to_vec();
        offload.extend([
            c.clone(),
            Expr::FlowOffload {
                table: FLOWTABLE.into(),
            },
        ]);
        fwd.push(Rule {
            name: RULE_FWD_OFFLOAD.into(),
            exprs: offload,
        });
    }
    fwd.push(rule(
        RULE_FWD_ESTABLISHED,
        &[
            &ct_state(CT_ESTABLISHED | CT_RELATED),
            &[c.clone(), accept.clone()],
        ],
    ));
    // No rule for untracked ICMP errors: those about a NATed flow are RELATED to it (accepted
    // above, and translated back), and any other has no flow here to help.
    fwd.push(rule(
        RULE_FWD_INVALID,
        &[&ct_state(CT_INVALID), &[c.clone(), drop.clone()]],
    ));
    // Before the accept, on exactly the flows it accepts: one host over its share of conntrack
    // gets its new flows dropped, and the others still get theirs.
    if spec.per_source_limit > 0 {
        fwd.push(rule(
            RULE_FWD_PER_SOURCE,
            &[
                &addr_in_set(false, false),
                &addr_in_set(true, true),
                &ct_state(CT_NEW),
                &[
                    Expr::Payload {
                        base: BASE_NETWORK,
                        offset: 12,
                        len: 4,
                        dreg: REG_1,
                    },
                    Expr::Dynset {
                        set: PER_SOURCE_SET.into(),
                        op: DYNSET_OP_ADD,
                        sreg: REG_1,
                        expr: Some(Box::new(Expr::Connlimit {
                            count: spec.per_source_limit,
                            flags: CONNLIMIT_F_INV,
                        })),
                    },
                    c.clone(),
                    drop.clone(),
                ],
            ],
        ));
    }
    fwd.push(rule(
        RULE_FWD_NEW,
        &[
            // From private to the internet only: two private subnets reach each other over the
            // VPC's own routes, so a flow between them here is a misroute (or a relay attempt).
            &addr_in_set(false, false),
            &addr_in_set(true, true),
            &ct_state(CT_NEW),
            &[c.clone(), accept.clone()],
        ],
    ));
    fwd.push(rule(RULE_FWD_DROP, &[&[c.clone(), drop.clone()]]));

    let dhcp_reply: Vec<Expr> = [
        meta_cmp(META_L4PROTO, CMP_EQ, vec![IPPROTO_UDP]),
        payload_cmp(BASE_TRANSPORT, 0, 67u16.to_be_bytes().to_vec()),
        payload_cmp(BASE_TRANSPORT, 2, 68u16.to_be_bytes().to_vec()),
    ]
    .concat();
    // Before conntrack (raw priority): DHCP replies arriving on the interface never get an
    // entry, so a spoofed flood of them cannot fill the table. Before a lease the client reads
    // them on its packet socket, ahead of netfilter; once bound, on its UDP socket, through the
    // input rule below.
    let raw = Chain {
        name: "prerouting_raw".into(),
        kind: ChainType::Filter,
        hook: HOOK_PRE_ROUTING,
        priority: -300,
        policy: NF_ACCEPT,
        rules: vec![rule(
            RULE_RAW_DHCP,
            &[
                &meta_cmp(META_IIFNAME, CMP_EQ, ifname(&spec.iface)),
                &dhcp_reply,
                &[c.clone(), Expr::Notrack],
            ],
        )],
    };
    let mut input = vec![
        rule(
            RULE_IN_LO,
            &[
                &meta_cmp(META_IIFNAME, CMP_EQ, ifname("lo")),
                std::slice::from_ref(&accept),
            ],
        ),
        // Echo requests over the rate are dropped before the established rule: one ping session
        // is a single conntrack entry, so a limit placed after it would never see the flood.
        rule(
            RULE_IN_ICMP_LIMIT,
            &[
                &ip_protocol(IPPROTO_ICMP),
                &payload_cmp(BASE_TRANSPORT, 0, vec![ICMP_ECHO_REQUEST]),
                &[
                    Expr::Limit {
                        rate: u64::from(spec.icmp_rate_per_s),
                        unit_s: 1,
                        burst: LIMIT_BURST,
                        kind: LIMIT_PKTS,
                        flags: LIMIT_F_INV,
                    },
                    c.clone(),
                    drop.clone(),
                ],
            ],
        ),
        rule(
            RULE_IN_ESTABLISHED,
            &[
                &ct_state(CT_ESTABLISHED | CT_RELATED),
                &[c.clone(), accept.clone()],
            ],
        ),
        rule(
            RULE_IN_INVALID,
            &[&ct_state(CT_INVALID), &[c.clone(), drop.clone()]],
        ),
        rule(
            RULE_IN_ICMP,
            &[
                &ip_protocol(IPPROTO_ICMP),
                &payload_cmp(BASE_TRANSPORT, 0, vec![ICMP_ECHO_REQUEST]),
                &[c.clone(), accept.clone()],
            ],
        ),
    ];
    if let Some((heartbeat, ctsync)) = spec.failover_ports {
        for (name, proto, port) in [
            (RULE_IN_HEARTBEAT, IPPROTO_UDP, heartbeat),
            (RULE_IN_CTSYNC, IPPROTO_TCP, ctsync),
        ] {
            input.push(rule(
                name,
                &[
                    &meta_cmp(META_L4PROTO, CMP_EQ, vec![proto]),
                    &payload_cmp(BASE_TRANSPORT, 2, port.to_be_bytes().to_vec()),
                    &[c.clone(), accept.clone()],
                ],
            ));
        }
    }
    input.extend([
        // Untracked (see the raw chain). With a lease, from its server only: anything else
        // claiming to be a DHCP server falls to the final drop, counted there.
        rule(
            RULE_IN_DHCP,
            &[
                &spec
                    .dhcp_server
                    .map(|s| payload_cmp(BASE_NETWORK, 12, s.octets().to_vec()).to_vec())
                    .unwrap_or_default(),
                &dhcp_reply,
                &[c.clone(), accept.clone()],
            ],
        ),
        rule(RULE_IN_DROP, &[&[c, drop]]),
    ]);

    let mut sets = vec![Set {
        name: PRIVATE_SET.into(),
        flags: SET_INTERVAL,
        key_type: TYPE_IPADDR,
        key_len: 4,
        size: 0,
        // The kernel's interval sets reject overlapping elements.
        ranges: cidr::merge(&spec.private),
    }];
    if spec.per_source_limit > 0 {
        sets.push(Set {
            name: PER_SOURCE_SET.into(),
            flags: SET_EVAL,
            key_type: TYPE_IPADDR,
            key_len: 4,
            size: PER_SOURCE_SIZE,
            ranges: Vec::new(),
        });
    }
    Ruleset {
        table: spec.table.clone(),
        sets,
        flowtable: spec.flowtable.then(|| Flowtable {
            name: FLOWTABLE.into(),
            hook: HOOK_NETDEV_INGRESS,
            priority: 0,
            devices: vec![spec.iface.clone()],
            // Offloaded packets skip every chain: only conntrack's own counters (with
            // nf_conntrack_acct on) see them, and only when the flowtable feeds them.
            flags: FLOWTABLE_COUNTER,
        }),
        chains: vec![
            postrouting,
            Chain {
                name: "forward".into(),
                kind: ChainType::Filter,
                hook: HOOK_FORWARD,
                priority: 0,
                policy: NF_DROP,
                rules: fwd,
            },
            Chain {
                name: "input".into(),
                kind: ChainType::Filter,
                hook: HOOK_LOCAL_IN,
                priority: 0,
                policy: NF_DROP,
                rules: input,
            },
            masq_count,
            raw,
        ],
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// A spec for `ens5` with the default table name and an ICMP rate of 10/s.
    pub(in crate::nft) fn spec(private: &[&str], flowtable: bool, mss: bool) -> RulesetSpec {
        RulesetSpec {
            table: TABLE.into(),
            iface: "ens5".into(),
            private: private.iter().map(|s| s.parse().unwrap()).collect(),
            flowtable,
            mss_clamp: mss,
            icmp_rate_per_s: 10,
            masquerade_ports: MasqueradePorts::default(),
            per_source_limit: 0,
            dhcp_server: None,
            snat_addresses: Vec::new(),
            snat_by_source: Vec::new(),
            failover_ports: None,
            nat_port_range: None,
        }
    }

    #[test]
    fn a_peers_subnets_take_its_address_before_the_spread() {
        let mut sp = spec(&["10.0.0.0/16"], false, false);
        sp.snat_addresses = vec![Ipv4Addr::new(10, 0, 0, 40)];
        sp.snat_by_source = vec![("10.0.1.0/24".parse().unwrap(), Ipv4Addr::new(10, 0, 0, 41))];
        let r = build(&sp);
        let post = &r
            .chains
            .iter()
            .find(|c| c.name == "postrouting")
            .unwrap()
            .rules;
        let names: Vec<&str> = post.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["snat from 10.0.1.0/24", "snat 0"]);
        let text = post[0].to_string();
        assert!(text.contains("ip saddr 10.0.1.0/24"), "{text}");
        assert!(text.contains("snat to 10.0.0.41"), "{text}");
        // With masquerade (no snat addresses) it still comes first.
        sp.snat_addresses.clear();
        let r = build(&sp);
        let post = &r
            .chains
            .iter()
            .find(|c| c.name == "postrouting")
            .unwrap()
            .rules;
        assert_eq!(post[0].name, "snat from 10.0.1.0/24");
        assert_eq!(post[1].name, RULE_MASQ);
    }

    #[test]
    fn failover_ports_are_accepted_before_the_final_drop() {
        let plain = build(&spec(&["10.0.0.0/16"], false, false));
        let mut sp = spec(&["10.0.0.0/16"], false, false);
        sp.failover_ports = Some((7471, 7472));
        let member = build(&sp);
        let names = |r: &Ruleset| -> Vec<String> {
            r.chains
                .iter()
                .find(|c| c.name == "input")
                .unwrap()
                .rules
                .iter()
                .map(|x| x.name.clone())
                .collect()
        };
        assert!(!names(&plain).contains(&RULE_IN_HEARTBEAT.to_string()));
        let n = names(&member);
        let at = |name: &str| n.iter().position(|x| x == name).unwrap();
        assert!(at(RULE_IN_HEARTBEAT) < at(RULE_IN_DROP));
        assert!(at(RULE_IN_CTSYNC) < at(RULE_IN_DROP));
        let text = member.to_string();
        assert!(text.contains("udp dport 7471"), "{text}");
        assert!(text.contains("tcp dport 7472"), "{text}");
    }

    #[test]
    fn flowtable_on_and_off() {
        let off = build(&spec(&["10.0.0.0/16"], false, false));
        assert!(off.flowtable.is_none());
        assert!(!off.to_string().contains("flow add"));
        assert!(!off.to_string().contains("maxseg"));
        let on = build(&spec(&["10.0.0.0/16"], true, false));
        let ft = on.flowtable.as_ref().unwrap();
        assert_eq!(ft.devices, ["ens5"]);
        assert_eq!(ft.hook, HOOK_NETDEV_INGRESS);
        assert_eq!(ft.flags, FLOWTABLE_COUNTER);
        let text = on.to_string();
        assert!(
            text.contains("flowtable ft { hook ingress priority 0; devices = { ens5 }; counter; }"),
            "{text}"
        );
        assert!(
            text.contains("ct state established,related counter packets 0 bytes 0 flow add @ft comment \"fwd_offload\""),
            "{text}"
        );
        // The accept is a rule of its own: `flow add` breaks out of its rule for ICMP and for
        // TCP before the handshake completes.
        let fwd = on.chains.iter().find(|c| c.name == "forward").unwrap();
        let names: Vec<&str> = fwd.rules.iter().map(|r| r.name.as_str()).collect();
        let (o, e) = (
            names.iter().position(|n| *n == RULE_FWD_OFFLOAD).unwrap(),
            names
                .iter()
                .position(|n| *n == RULE_FWD_ESTABLISHED)
                .unwrap(),
        );
        assert_eq!(o + 1, e);
        assert!(
            !fwd.rules[o]
                .exprs
                .iter()
                .any(|x| matches!(x, Expr::Verdict(_)))
        );
        assert!(
            !fwd.rules[e]
                .exprs
                .iter()
                .any(|x| matches!(x, Expr::FlowOffload { .. }))
        );
        assert!(!on.differences(&off).is_empty());
    }

    /// Rule i of n draws `numgen random mod (n - i)` and takes the flow on 0, the last takes
    /// the rest: each address 1/n. Duplicates count once; the match and the ports are
    /// masquerade's.
    #[test]
    fn snat_addresses_one_rule_each() {
        let mut sp = spec(&["10.0.0.0/16"], false, false);
        let [a, b, c] = [1, 3, 7].map(|h| Ipv4Addr::new(198, 51, 100, h));
        sp.snat_addresses = vec![a, b, a, c];
        sp.masquerade_ports = MasqueradePorts::Random;
        let r = build(&sp);
        let post = &r.chains[0].rules;
        let names: Vec<&str> = post.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["snat 0", "snat 1", "snat 2"]);
        let masq = &build(&spec(&["10.0.0.0/16"], false, false)).chains[0].rules[0];
        for (i, (rule, addr)) in post.iter().zip([a, b, c]).enumerate() {
            assert_eq!(
                rule.exprs[..6],
                masq.exprs[..6],
                "rule {i}: masquerade's match"
            );
            let modulus = rule.exprs.iter().find_map(|e| match e {
                Expr::Numgen {
                    modulus,
                    kind: NG_RANDOM,
                    offset: 0,
                    dreg: REG_1,
                } => Some(*modulus),
                _ => None,
            });
            assert_eq!(modulus, [Some(3), Some(2), None][i], "rule {i}");
            let n = rule.exprs.len();
            assert_eq!(
                rule.exprs[n - 2..],
                [
                    Expr::Immediate {
                        dreg: REG_1,
                        data: addr.octets().to_vec()
                    },
                    Expr::Snat {
                        addr: REG_1,
                        flags: NAT_RANGE_MAP_IPS | NAT_RANGE_PROTO_RANDOM,
                        proto: None,
                    }
                ]
            );
        }
        assert!(!r.to_string().contains("masquerade"));
        sp.snat_addresses = vec![b];
        let one = build(&sp);
        assert_eq!(one.chains[0].rules.len(), 1);
        assert!(
            !one.chains[0].rules[0]
                .exprs
                .iter()
                .any(|e| matches!(e, Expr::Numgen { .. }))
        );
    }

    /// The rules as built give each address 1/n of the new flows: the chance a flow reaches
    /// rule i times the chance its numgen takes it there.
    #[test]
    fn snat_rules_share_flows_evenly() {
        for n in 1..=8u8 {
            let mut sp = spec(&["10.0.0.0/16"], false, false);
            sp.snat_addresses = (1..=n).map(|h| Ipv4Addr::new(198, 51, 100, h)).collect();
            let r = build(&sp);
            let mut reach = 1.0f64;
            for rule in &r.chains[0].rules {
                let take = rule
                    .exprs
                    .iter()
                    .find_map(|e| match e {
                        Expr::Numgen { modulus, .. } => Some(1.0 / f64::from(*modulus)),
                        _ => None,
                    })
                    .unwrap_or(1.0);
                let p = reach * take;
                assert!((p - 1.0 / f64::from(n)).abs() < 1e-12, "{n}: {}", rule.name);
                reach -= p;
            }
            assert!(reach.abs() < 1e-12, "{n}: {reach} of the flows left");
        }
    }

    /// Unset, the rules are exactly those without a range; set, masquerade and every snat rule
    /// load the range's ends (network order) and say PROTO_SPECIFIED.
    #[test]
    fn nat_port_range_in_masquerade_and_snat() {
        let plain = build(&spec(&["10.0.0.0/16"], false, false));
        let mut sp = spec(&["10.0.0.0/16"], false, false);
        sp.nat_port_range = Some((2000, 2010));
        let r = build(&sp);
        let masq = &r.chains[0].rules[0];
        let n = masq.exprs.len();
        assert_eq!(
            masq.exprs[n - 3..],
            [
                Expr::Immediate {
                    dreg: REG_1,
                    data: vec![0x07, 0xd0]
                },
                Expr::Immediate {
                    dreg: REG_2,
                    data: vec![0x07, 0xda]
                },
                Expr::Masq {
                    flags: NAT_RANGE_PROTO_SPECIFIED | NAT_RANGE_PROTO_RANDOM_FULLY,
                    proto: Some((REG_1, REG_2)),
                }
            ]
        );
        // Everything else as without a range.
        assert_eq!(masq.exprs[..n - 3], plain.chains[0].rules[0].exprs[..n - 3]);
        assert_eq!(r.chains[1..], plain.chains[1..]);
        sp.snat_addresses = vec![
            Ipv4Addr::new(198, 51, 100, 1),
            Ipv4Addr::new(198, 51, 100, 3),
        ];
        sp.snat_by_source = vec![(
            "10.0.1.0/24".parse().unwrap(),
            Ipv4Addr::new(198, 51, 100, 5),
        )];
        sp.masquerade_ports = MasqueradePorts::Preserve;
        let r = build(&sp);
        assert_eq!(r.chains[0].rules.len(), 3);
        for rule in &r.chains[0].rules {
            let n = rule.exprs.len();
            assert_eq!(
                rule.exprs[n - 3..],
                [
                    Expr::Immediate {
                        dreg: REG_2,
                        data: vec![0x07, 0xd0]
                    },
                    Expr::Immediate {
                        dreg: REG_2 + 1,
                        data: vec![0x07, 0xda]
                    },
                    Expr::Snat {
                        addr: REG_1,
                        flags: NAT_RANGE_MAP_IPS | NAT_RANGE_PROTO_SPECIFIED,
                        proto: Some((REG_2, REG_2 + 1)),
                    }
                ],
                "{}",
                rule.name
            );
        }
    }

    #[test]
    fn ranges_merge_and_sort() {
        let r = build(&spec(
            &[
                "192.168.0.0/16",
                "10.0.0.0/8",
                "10.1.0.0/16",
                "10.0.0.0/16",
                "11.0.0.0/8",
                "12.0.0.0/8",
                "172.16.0.0/12",
            ],
            false,
            false,
        ));
        let s = &r.sets[0];
        assert_eq!(
            s.to_string(),
            "set private { type ipv4_addr; flags interval; elements = { 10.0.0.0-12.255.255.255, 172.16.0.0/12, 192.168.0.0/16 } }"
        );
        let top = build(&spec(&["255.255.255.0/24", "0.0.0.0/0"], false, false));
        assert_eq!(
            top.sets[0].ranges,
            [(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST)]
        );
    }
}

//! The appliance's nftables table: masquerade outbound traffic from the private ranges, forward only
//! flows those ranges start, and drop unsolicited input. [`build`] makes a pure model of the table
//! (comparable, printable in nft syntax); [`apply`] installs it over netlink in one atomic batch,
//! [`verify`] reads it back and compares, [`counters`] reports the named rules' counters.
//!
//! Expressions are encoded by hand through netlink-packet-netfilter's raw `Other` escape hatch, and
//! dumps are decoded from raw attributes, so one encoder/decoder pair covers every expression the
//! crate lacks (masq, counter, ct, limit, exthdr, rt, flow_offload) and the round trip is exact.

use std::fmt;
use std::net::Ipv4Addr;

use netlink_packet_core::{
    DefaultNla, Emitable, NLA_F_NESTED, NLA_TYPE_MASK, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE,
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkPayload,
};
use netlink_packet_netfilter::nftables::{
    ExpressionAttribute, Expressions, ListAttribute, NfTablesMessage, RuleAttribute, RuleMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::protocols;

use crate::cidr::Ipv4Cidr;
use crate::netlink::{NetlinkError, Transport};

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
}

/// The default table name.
pub const TABLE: &str = "nat_instance";
/// The named interval set holding the private ranges.
pub const PRIVATE_SET: &str = "private";
/// The flowtable's name.
pub const FLOWTABLE: &str = "ft";

// Names of the rules that carry counters (NFTA_RULE_USERDATA comments).
pub const RULE_MASQ: &str = "masquerade";
pub const RULE_FWD_MSS: &str = "fwd_mss_clamp";
pub const RULE_FWD_OFFLOAD: &str = "fwd_offload";
pub const RULE_FWD_ESTABLISHED: &str = "fwd_established";
pub const RULE_FWD_ICMP: &str = "fwd_icmp_unreachable";
pub const RULE_FWD_INVALID: &str = "fwd_invalid";
pub const RULE_FWD_NEW: &str = "fwd_new_private";
pub const RULE_FWD_DROP: &str = "fwd_drop";
pub const RULE_IN_LO: &str = "in_loopback";
pub const RULE_IN_ESTABLISHED: &str = "in_established";
pub const RULE_IN_INVALID: &str = "in_invalid";
pub const RULE_IN_ICMP_LIMIT: &str = "in_icmp_over_limit";
pub const RULE_IN_ICMP: &str = "in_icmp_echo";
pub const RULE_IN_DHCP: &str = "in_dhcp";
pub const RULE_IN_DROP: &str = "in_drop";

// ---- the model -------------------------------------------------------------------------------

/// A whole table, as intended or as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub table: String,
    pub sets: Vec<Set>,
    pub flowtable: Option<Flowtable>,
    pub chains: Vec<Chain>,
}

/// An IPv4 address set with interval flag; elements are inclusive ranges, sorted and merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub flags: u32,
    pub key_type: u32,
    pub key_len: u32,
    pub ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flowtable {
    pub name: String,
    pub hook: u32,
    pub priority: i32,
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub kind: ChainType,
    pub hook: u32,
    pub priority: i32,
    /// Policy verdict: accept (1) or drop (0).
    pub policy: i32,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Stored as an nft-compatible comment; `counters` finds rules by it.
    pub name: String,
    pub exprs: Vec<Expr>,
}

/// One nf_tables expression, with the attributes we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Meta {
        key: u32,
        dreg: u32,
    },
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Cmp {
        sreg: u32,
        op: u32,
        data: Vec<u8>,
    },
    Bitwise {
        sreg: u32,
        dreg: u32,
        len: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Lookup {
        set: String,
        sreg: u32,
        invert: bool,
    },
    Ct {
        key: u32,
        dreg: u32,
    },
    Counter {
        packets: u64,
        bytes: u64,
    },
    Limit {
        rate: u64,
        unit_s: u64,
        burst: u32,
        kind: u32,
        flags: u32,
    },
    Masq,
    Verdict(i32),
    Byteorder {
        sreg: u32,
        dreg: u32,
        op: u32,
        len: u32,
        size: u32,
    },
    /// TCP option write (`sreg`) or read (`dreg`).
    Exthdr {
        op: u32,
        ty: u8,
        offset: u32,
        len: u32,
        flags: u32,
        sreg: Option<u32>,
        dreg: Option<u32>,
    },
    Rt {
        key: u32,
        dreg: u32,
    },
    FlowOffload {
        table: String,
    },
    /// An expression this module does not model (only ever from a read-back).
    Raw {
        name: String,
        data: Vec<u8>,
    },
}

// Kernel constants (include/uapi/linux/netfilter/nf_tables.h, netfilter.h).
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const HOOK_LOCAL_IN: u32 = 1;
const HOOK_FORWARD: u32 = 2;
const HOOK_POST_ROUTING: u32 = 4;
const HOOK_NETDEV_INGRESS: u32 = 0;
const META_IIFNAME: u32 = 6;
const META_OIFNAME: u32 = 7;
const META_L4PROTO: u32 = 16;
const BASE_NETWORK: u32 = 1;
const BASE_TRANSPORT: u32 = 2;
const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;
const CT_STATE: u32 = 0;
const CT_INVALID: u32 = 1;
const CT_ESTABLISHED: u32 = 1 << 1;
const CT_RELATED: u32 = 1 << 2;
const CT_NEW: u32 = 1 << 3;
const LIMIT_PKTS: u32 = 0;
const LIMIT_F_INV: u32 = 1;
const BYTEORDER_HTON: u32 = 1;
const EXTHDR_OP_TCPOPT: u32 = 1;
const TCPOPT_MAXSEG: u8 = 2;
const RT_TCPMSS: u32 = 3;
const SET_INTERVAL: u32 = 0x4;
const SET_ELEM_INTERVAL_END: u32 = 0x1;
/// nft's `ipv4_addr` datatype, so `nft list` prints the set's elements as addresses.
const TYPE_IPADDR: u32 = 7;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO_REQUEST: u8 = 8;
const TCP_SYN: u8 = 0x02;
const IFNAMSIZ: usize = 16;
/// nft's default packet burst for `limit rate`.
const LIMIT_BURST: u32 = 5;

// ---- building --------------------------------------------------------------------------------

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
    [
        Expr::Ct {
            key: CT_STATE,
            dreg: REG_1,
        },
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

/// Sorted, merged inclusive ranges: the kernel's interval sets reject overlapping elements.
fn merge_ranges(cidrs: &[Ipv4Cidr]) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let mut r: Vec<(u32, u32)> = cidrs
        .iter()
        .map(|c| (u32::from(c.addr()), u32::from(c.last())))
        .collect();
    r.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (a, b) in r {
        match out.last_mut() {
            Some(last) if u64::from(a) <= u64::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out.into_iter()
        .map(|(a, b)| (Ipv4Addr::from(a), Ipv4Addr::from(b)))
        .collect()
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
        rules: vec![rule(
            RULE_MASQ,
            &[
                &meta_cmp(META_OIFNAME, CMP_EQ, ifname(&spec.iface)),
                &addr_in_set(false, false),
                &addr_in_set(true, true),
                &[c.clone(), Expr::Masq],
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
    // Before the invalid drop: a "fragmentation needed" for a flow conntrack no longer knows is
    // invalid, and dropping it would black-hole path MTU discovery.
    fwd.push(rule(
        RULE_FWD_ICMP,
        &[
            &ip_protocol(IPPROTO_ICMP),
            &payload_cmp(BASE_TRANSPORT, 0, vec![ICMP_DEST_UNREACH]),
            &[c.clone(), accept.clone()],
        ],
    ));
    fwd.push(rule(
        RULE_FWD_INVALID,
        &[&ct_state(CT_INVALID), &[c.clone(), drop.clone()]],
    ));
    fwd.push(rule(
        RULE_FWD_NEW,
        &[
            &addr_in_set(false, false),
            &ct_state(CT_NEW),
            &[c.clone(), accept.clone()],
        ],
    ));
    fwd.push(rule(RULE_FWD_DROP, &[&[c.clone(), drop.clone()]]));

    let input = vec![
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
        rule(
            RULE_IN_DHCP,
            &[
                &meta_cmp(META_L4PROTO, CMP_EQ, vec![IPPROTO_UDP]),
                &payload_cmp(BASE_TRANSPORT, 0, 67u16.to_be_bytes().to_vec()),
                &payload_cmp(BASE_TRANSPORT, 2, 68u16.to_be_bytes().to_vec()),
                &[c.clone(), accept.clone()],
            ],
        ),
        rule(RULE_IN_DROP, &[&[c, drop]]),
    ];

    Ruleset {
        table: spec.table.clone(),
        sets: vec![Set {
            name: PRIVATE_SET.into(),
            flags: SET_INTERVAL,
            key_type: TYPE_IPADDR,
            key_len: 4,
            ranges: merge_ranges(&spec.private),
        }],
        flowtable: spec.flowtable.then(|| Flowtable {
            name: FLOWTABLE.into(),
            hook: HOOK_NETDEV_INGRESS,
            priority: 0,
            devices: vec![spec.iface.clone()],
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
        ],
    }
}

impl Ruleset {
    /// The same ruleset with counters zeroed and chains/sets in name order: what `verify` compares.
    pub fn normalized(&self) -> Ruleset {
        let mut r = self.clone();
        for ch in &mut r.chains {
            for ru in &mut ch.rules {
                for e in &mut ru.exprs {
                    if let Expr::Counter { packets, bytes } = e {
                        *packets = 0;
                        *bytes = 0;
                    }
                }
            }
        }
        r.chains.sort_by(|a, b| a.name.cmp(&b.name));
        r.sets.sort_by(|a, b| a.name.cmp(&b.name));
        r
    }

    /// Differences between `self` (intended) and `got`, ignoring counter values; empty if equal.
    pub fn differences(&self, got: &Ruleset) -> Vec<String> {
        let (want, got) = (self.normalized(), got.normalized());
        let mut d = Vec::new();
        if want.table != got.table {
            d.push(format!("table: want {}, got {}", want.table, got.table));
        }
        if want.sets != got.sets {
            d.push(format!(
                "sets: want [{}], got [{}]",
                want.sets
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
                got.sets
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        if want.flowtable != got.flowtable {
            let show = |f: &Option<Flowtable>| f.as_ref().map_or("none".into(), |f| f.to_string());
            d.push(format!(
                "flowtable: want {}, got {}",
                show(&want.flowtable),
                show(&got.flowtable)
            ));
        }
        for w in &want.chains {
            let Some(g) = got.chains.iter().find(|c| c.name == w.name) else {
                d.push(format!("chain {}: missing", w.name));
                continue;
            };
            if (w.kind, w.hook, w.priority, w.policy) != (g.kind, g.hook, g.priority, g.policy) {
                d.push(format!(
                    "chain {}: want `{}`, got `{}`",
                    w.name,
                    w.header(),
                    g.header()
                ));
            }
            let n = w.rules.len().max(g.rules.len());
            for i in 0..n {
                match (w.rules.get(i), g.rules.get(i)) {
                    (Some(a), Some(b)) if a == b => {}
                    (a, b) => d.push(format!(
                        "chain {} rule {}: want `{}`, got `{}`",
                        w.name,
                        i + 1,
                        a.map_or("nothing".into(), |r| r.to_string()),
                        b.map_or("nothing".into(), |r| r.to_string())
                    )),
                }
            }
        }
        for g in &got.chains {
            if !want.chains.iter().any(|c| c.name == g.name) {
                d.push(format!("chain {}: unexpected", g.name));
            }
        }
        d
    }
}

// ---- printing (nft syntax) -------------------------------------------------------------------

fn hook_name(chain: bool, hook: u32) -> String {
    match (chain, hook) {
        (false, HOOK_NETDEV_INGRESS) => "ingress".into(),
        (true, 0) => "prerouting".into(),
        (true, HOOK_LOCAL_IN) => "input".into(),
        (true, HOOK_FORWARD) => "forward".into(),
        (true, 3) => "output".into(),
        (true, HOOK_POST_ROUTING) => "postrouting".into(),
        (_, n) => format!("hook{n}"),
    }
}

fn range_text(a: Ipv4Addr, b: Ipv4Addr) -> String {
    let (x, y) = (u32::from(a), u32::from(b));
    let size = u64::from(y) - u64::from(x) + 1;
    if size.is_power_of_two() && u64::from(x) % size == 0 {
        let len = 32 - size.trailing_zeros() as u8;
        if len == 32 {
            a.to_string()
        } else {
            format!("{a}/{len}")
        }
    } else {
        format!("{a}-{b}")
    }
}

impl fmt::Display for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let elems: Vec<String> = self
            .ranges
            .iter()
            .map(|(a, b)| range_text(*a, *b))
            .collect();
        write!(
            f,
            "set {} {{ type {}; flags {}; elements = {{ {} }} }}",
            self.name,
            if self.key_type == TYPE_IPADDR && self.key_len == 4 {
                "ipv4_addr".to_string()
            } else {
                format!("{}/{}", self.key_type, self.key_len)
            },
            if self.flags == SET_INTERVAL {
                "interval".to_string()
            } else {
                format!("{:#x}", self.flags)
            },
            elems.join(", ")
        )
    }
}

impl fmt::Display for Flowtable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "flowtable {} {{ hook {} priority {}; devices = {{ {} }}; }}",
            self.name,
            hook_name(false, self.hook),
            self.priority,
            self.devices.join(", ")
        )
    }
}

fn policy_name(p: i32) -> String {
    match p {
        NF_ACCEPT => "accept".into(),
        NF_DROP => "drop".into(),
        n => format!("verdict{n}"),
    }
}

impl Chain {
    fn header(&self) -> String {
        format!(
            "type {} hook {} priority {}; policy {};",
            match self.kind {
                ChainType::Filter => "filter",
                ChainType::Nat => "nat",
            },
            hook_name(true, self.hook),
            self.priority,
            policy_name(self.policy)
        )
    }
}

fn ct_state_names(mask: u32) -> String {
    let names = [
        (CT_INVALID, "invalid"),
        (CT_ESTABLISHED, "established"),
        (CT_RELATED, "related"),
        (CT_NEW, "new"),
    ];
    let mut v: Vec<String> = names
        .iter()
        .filter(|(b, _)| mask & b != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let rest = mask & !(CT_INVALID | CT_ESTABLISHED | CT_RELATED | CT_NEW);
    if rest != 0 {
        v.push(format!("{rest:#x}"));
    }
    v.join(",")
}

fn proto_name(p: u8) -> String {
    match p {
        IPPROTO_ICMP => "icmp".into(),
        IPPROTO_TCP => "tcp".into(),
        IPPROTO_UDP => "udp".into(),
        n => n.to_string(),
    }
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn op_text(op: u32) -> &'static str {
    if op == CMP_EQ { "" } else { "!= " }
}

fn u32_ne(data: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(data.try_into().ok()?))
}

/// Renders a rule's expressions as nft statements, recognising the patterns `build` emits and
/// falling back to a bracketed low-level form for anything else.
fn statements(exprs: &[Expr]) -> Vec<String> {
    let mut out = Vec::new();
    let mut l4 = "th".to_string();
    let mut i = 0;
    while i < exprs.len() {
        let next = exprs.get(i + 1);
        let third = exprs.get(i + 2);
        let (text, used) = match (&exprs[i], next, third) {
            (Expr::Meta { key, dreg }, Some(Expr::Cmp { sreg, op, data }), _) if dreg == sreg => {
                let name = match *key {
                    META_IIFNAME => "iifname",
                    META_OIFNAME => "oifname",
                    META_L4PROTO => "meta l4proto",
                    _ => "",
                };
                let val = match *key {
                    META_IIFNAME | META_OIFNAME => {
                        format!(
                            "\"{}\"",
                            String::from_utf8_lossy(data).trim_end_matches('\0')
                        )
                    }
                    META_L4PROTO if data.len() == 1 => {
                        l4 = proto_name(data[0]);
                        l4.clone()
                    }
                    _ => format!("0x{}", hex(data)),
                };
                if name.is_empty() {
                    (format!("meta {key} {}0x{}", op_text(*op), hex(data)), 2)
                } else {
                    (format!("{name} {}{val}", op_text(*op)), 2)
                }
            }
            (
                Expr::Payload {
                    base: BASE_NETWORK,
                    offset,
                    len: 4,
                    dreg,
                },
                Some(Expr::Lookup { set, sreg, invert }),
                _,
            ) if dreg == sreg && (*offset == 12 || *offset == 16) => (
                format!(
                    "ip {} {}@{set}",
                    if *offset == 12 { "saddr" } else { "daddr" },
                    if *invert { "!= " } else { "" }
                ),
                2,
            ),
            (
                Expr::Payload {
                    base: BASE_NETWORK,
                    offset: 9,
                    len: 1,
                    dreg,
                },
                Some(Expr::Cmp { sreg, op, data }),
                _,
            ) if dreg == sreg && data.len() == 1 => {
                l4 = proto_name(data[0]);
                (format!("ip protocol {}{l4}", op_text(*op)), 2)
            }
            (
                Expr::Payload {
                    base: BASE_TRANSPORT,
                    offset,
                    len,
                    dreg,
                },
                Some(Expr::Cmp { sreg, op, data }),
                _,
            ) if dreg == sreg && data.len() == *len as usize => {
                let text = match (l4.as_str(), *offset, data.as_slice()) {
                    ("icmp", 0, [t]) => format!(
                        "icmp type {}{}",
                        op_text(*op),
                        match *t {
                            ICMP_DEST_UNREACH => "destination-unreachable".to_string(),
                            ICMP_ECHO_REQUEST => "echo-request".to_string(),
                            t => t.to_string(),
                        }
                    ),
                    (p, 0, [a, b]) => {
                        format!("{p} sport {}{}", op_text(*op), u16::from_be_bytes([*a, *b]))
                    }
                    (p, 2, [a, b]) => {
                        format!("{p} dport {}{}", op_text(*op), u16::from_be_bytes([*a, *b]))
                    }
                    (_, o, d) => {
                        format!("@th,{},{} {}0x{}", o * 8, d.len() * 8, op_text(*op), hex(d))
                    }
                };
                (text, 2)
            }
            (
                Expr::Payload {
                    base: BASE_TRANSPORT,
                    offset: 13,
                    len: 1,
                    ..
                },
                Some(Expr::Bitwise { mask, .. }),
                Some(Expr::Cmp {
                    op: CMP_NEQ, data, ..
                }),
            ) if mask.as_slice() == [TCP_SYN] && data.as_slice() == [0] => {
                ("tcp flags syn".into(), 3)
            }
            (
                Expr::Ct { key: CT_STATE, .. },
                Some(Expr::Bitwise { mask, .. }),
                Some(Expr::Cmp {
                    op: CMP_NEQ, data, ..
                }),
            ) if data.iter().all(|b| *b == 0) && u32_ne(mask).is_some() => (
                format!(
                    "ct state {}",
                    ct_state_names(u32_ne(mask).unwrap_or_default())
                ),
                3,
            ),
            (
                Expr::Rt { key: RT_TCPMSS, .. },
                Some(Expr::Byteorder { .. }),
                Some(Expr::Exthdr {
                    op: EXTHDR_OP_TCPOPT,
                    ty: TCPOPT_MAXSEG,
                    offset: 2,
                    len: 2,
                    sreg: Some(_),
                    ..
                }),
            ) => ("tcp option maxseg size set rt mtu".into(), 3),
            (e, _, _) => (single(e), 1),
        };
        out.push(text);
        i += used;
    }
    out
}

fn single(e: &Expr) -> String {
    match e {
        Expr::Counter { packets, bytes } => format!("counter packets {packets} bytes {bytes}"),
        Expr::Masq => "masquerade".into(),
        Expr::Verdict(v) => policy_name(*v),
        Expr::Limit {
            rate,
            unit_s,
            burst,
            kind,
            flags,
        } => format!(
            "limit rate {}{rate}/{} burst {burst} {}",
            if flags & 1 != 0 { "over " } else { "" },
            match unit_s {
                1 => "second".to_string(),
                60 => "minute".to_string(),
                n => format!("{n}s"),
            },
            if *kind == LIMIT_PKTS {
                "packets"
            } else {
                "bytes"
            }
        ),
        Expr::FlowOffload { table } => format!("flow add @{table}"),
        other => format!("[{other:?}]"),
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} comment \"{}\"",
            statements(&self.exprs).join(" "),
            self.name
        )
    }
}

impl fmt::Display for Ruleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "table ip {} {{", self.table)?;
        for s in &self.sets {
            writeln!(f, "\t{s}")?;
        }
        if let Some(ft) = &self.flowtable {
            writeln!(f, "\t{ft}")?;
        }
        for c in &self.chains {
            writeln!(f, "\tchain {} {{", c.name)?;
            writeln!(f, "\t\t{}", c.header())?;
            for r in &c.rules {
                writeln!(f, "\t\t{r}")?;
            }
            writeln!(f, "\t}}")?;
        }
        writeln!(f, "}}")
    }
}

// ---- attribute encoding ----------------------------------------------------------------------

fn nla(kind: u16, value: Vec<u8>) -> DefaultNla {
    DefaultNla::new(kind, value)
}

fn nla_u32(kind: u16, v: u32) -> DefaultNla {
    nla(kind, v.to_be_bytes().to_vec())
}

fn nla_u64(kind: u16, v: u64) -> DefaultNla {
    nla(kind, v.to_be_bytes().to_vec())
}

fn nla_str(kind: u16, s: &str) -> DefaultNla {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    nla(kind, v)
}

fn emit_all(attrs: &[DefaultNla]) -> Vec<u8> {
    let mut buf = vec![0u8; attrs.buffer_len()];
    attrs.emit(&mut buf);
    buf
}

fn nla_nested(kind: u16, attrs: &[DefaultNla]) -> DefaultNla {
    nla(kind | NLA_F_NESTED, emit_all(attrs))
}

/// NFTA_DATA_VALUE inside a nested data attribute.
fn nla_data(kind: u16, value: &[u8]) -> DefaultNla {
    nla_nested(kind, &[nla(1, value.to_vec())])
}

fn expr_attrs(e: &Expr) -> (&str, Vec<DefaultNla>) {
    match e {
        Expr::Meta { key, dreg } => ("meta", vec![nla_u32(1, *dreg), nla_u32(2, *key)]),
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => (
            "payload",
            vec![
                nla_u32(1, *dreg),
                nla_u32(2, *base),
                nla_u32(3, *offset),
                nla_u32(4, *len),
            ],
        ),
        Expr::Cmp { sreg, op, data } => (
            "cmp",
            vec![nla_u32(1, *sreg), nla_u32(2, *op), nla_data(3, data)],
        ),
        Expr::Bitwise {
            sreg,
            dreg,
            len,
            mask,
            xor,
        } => (
            "bitwise",
            vec![
                nla_u32(1, *sreg),
                nla_u32(2, *dreg),
                nla_u32(3, *len),
                nla_data(4, mask),
                nla_data(5, xor),
            ],
        ),
        Expr::Lookup { set, sreg, invert } => (
            "lookup",
            vec![
                nla_str(1, set),
                nla_u32(2, *sreg),
                nla_u32(5, u32::from(*invert)),
            ],
        ),
        Expr::Ct { key, dreg } => ("ct", vec![nla_u32(1, *dreg), nla_u32(2, *key)]),
        Expr::Counter { packets, bytes } => {
            ("counter", vec![nla_u64(1, *bytes), nla_u64(2, *packets)])
        }
        Expr::Limit {
            rate,
            unit_s,
            burst,
            kind,
            flags,
        } => (
            "limit",
            vec![
                nla_u64(1, *rate),
                nla_u64(2, *unit_s),
                nla_u32(3, *burst),
                nla_u32(4, *kind),
                nla_u32(5, *flags),
            ],
        ),
        Expr::Masq => ("masq", vec![]),
        Expr::Verdict(code) => (
            "immediate",
            vec![
                nla_u32(1, REG_VERDICT),
                nla_nested(2, &[nla_nested(2, &[nla_u32(1, *code as u32)])]),
            ],
        ),
        Expr::Byteorder {
            sreg,
            dreg,
            op,
            len,
            size,
        } => (
            "byteorder",
            vec![
                nla_u32(1, *sreg),
                nla_u32(2, *dreg),
                nla_u32(3, *op),
                nla_u32(4, *len),
                nla_u32(5, *size),
            ],
        ),
        Expr::Exthdr {
            op,
            ty,
            offset,
            len,
            flags,
            sreg,
            dreg,
        } => {
            let mut v = Vec::new();
            if let Some(d) = dreg {
                v.push(nla_u32(1, *d));
            }
            v.extend([nla(2, vec![*ty]), nla_u32(3, *offset), nla_u32(4, *len)]);
            // The kernel rejects FLAGS on a write (it dumps them as 0).
            if sreg.is_none() {
                v.push(nla_u32(5, *flags));
            }
            v.push(nla_u32(6, *op));
            if let Some(s) = sreg {
                v.push(nla_u32(7, *s));
            }
            ("exthdr", v)
        }
        Expr::Rt { key, dreg } => ("rt", vec![nla_u32(1, *dreg), nla_u32(2, *key)]),
        Expr::FlowOffload { table } => ("flow_offload", vec![nla_str(1, table)]),
        Expr::Raw { name, data } => (name.as_str(), vec![nla(0, data.clone())]),
    }
}

/// nftnl's rule userdata layout: TLVs of (type u8, len u8, value); type 0 is the comment.
fn comment_udata(name: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(name.len() + 3);
    let bytes = &name.as_bytes()[..name.len().min(253)];
    v.push(0);
    v.push(bytes.len() as u8 + 1);
    v.extend_from_slice(bytes);
    v.push(0);
    v
}

fn comment_from_udata(data: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 2 <= data.len() {
        let (ty, len) = (data[i], usize::from(data[i + 1]));
        let val = data.get(i + 2..i + 2 + len)?;
        if ty == 0 {
            return Some(
                String::from_utf8_lossy(val)
                    .trim_end_matches('\0')
                    .to_string(),
            );
        }
        i += 2 + len;
    }
    None
}

fn nf_msg(family: NetfilterProtoFamily, m: NfTablesMessage) -> NetfilterMessage {
    NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), m)
}

fn ipv4(m: NfTablesMessage) -> NetfilterMessage {
    nf_msg(NetfilterProtoFamily::IPv4, m)
}

fn other(message_type: u8, attributes: Vec<DefaultNla>) -> NfTablesMessage {
    NfTablesMessage::Other {
        message_type,
        attributes,
    }
}

// NFT_MSG_* numbers.
const MSG_NEWTABLE: u8 = 0;
const MSG_GETTABLE: u8 = 1;
const MSG_DELTABLE: u8 = 2;
const MSG_NEWCHAIN: u8 = 3;
const MSG_GETCHAIN: u8 = 4;
const MSG_NEWRULE: u8 = 6;
const MSG_GETRULE: u8 = 7;
const MSG_NEWSET: u8 = 9;
const MSG_GETSET: u8 = 10;
const MSG_NEWSETELEM: u8 = 12;
const MSG_GETSETELEM: u8 = 13;
const MSG_NEWFLOWTABLE: u8 = 22;
const MSG_GETFLOWTABLE: u8 = 23;

fn table_msg(kind: u8, table: &str) -> NetfilterMessage {
    ipv4(other(kind, vec![nla_str(1, table)]))
}

/// Set ID used to reference the set from rules within the same batch.
const SET_ID: u32 = 1;

fn set_elem_attrs(table: &str, s: &Set) -> Vec<DefaultNla> {
    let mut elems = Vec::new();
    for (a, b) in &s.ranges {
        elems.push(nla_nested(1, &[nla_data(1, &a.octets())]));
        // The interval ends one past the range; a range reaching the top of the space has no end.
        if let Some(end) = u32::from(*b).checked_add(1) {
            elems.push(nla_nested(
                1,
                &[
                    nla_data(1, &Ipv4Addr::from(end).octets()),
                    nla_u32(3, SET_ELEM_INTERVAL_END),
                ],
            ));
        }
    }
    vec![
        nla_str(1, table),
        nla_str(2, &s.name),
        nla_nested(3, &elems),
        nla_u32(4, SET_ID),
    ]
}

fn hook_attrs(kind: u16, hook: u32, priority: i32, devices: &[String]) -> DefaultNla {
    let mut h = vec![nla_u32(1, hook), nla_u32(2, priority as u32)];
    if !devices.is_empty() {
        let devs: Vec<DefaultNla> = devices.iter().map(|d| nla_str(1, d)).collect();
        h.push(nla_nested(3, &devs));
    }
    nla_nested(kind, &h)
}

fn rule_message(table: &str, chain: &str, r: &Rule) -> NfTablesMessage {
    let exprs: Vec<ListAttribute<ExpressionAttribute>> = r
        .exprs
        .iter()
        .map(|e| {
            let (name, attributes) = expr_attrs(e);
            ListAttribute::from(Expressions::Other {
                expression_type: name.to_string(),
                attributes,
            })
        })
        .collect();
    NfTablesMessage::NewRule(RuleMessage {
        attributes: vec![
            RuleAttribute::Table(table.to_string()),
            RuleAttribute::Chain(chain.to_string()),
            RuleAttribute::Expressions(exprs),
            RuleAttribute::UserData(comment_udata(&r.name)),
        ],
    })
}

/// The add messages for `r`, in dependency order, with their netlink flags and a description
/// (used to say which one the kernel refused).
pub fn encode(r: &Ruleset) -> Vec<(NetfilterMessage, u16, String)> {
    let t = r.table.as_str();
    let mut out = vec![(
        table_msg(MSG_NEWTABLE, t),
        NLM_F_CREATE,
        format!("add table ip {t}"),
    )];
    for s in &r.sets {
        out.push((
            ipv4(other(
                MSG_NEWSET,
                vec![
                    nla_str(1, t),
                    nla_str(2, &s.name),
                    nla_u32(3, s.flags),
                    nla_u32(4, s.key_type),
                    nla_u32(5, s.key_len),
                    nla_u32(10, SET_ID),
                ],
            )),
            NLM_F_CREATE,
            format!("add {s}"),
        ));
        if !s.ranges.is_empty() {
            out.push((
                ipv4(other(MSG_NEWSETELEM, set_elem_attrs(t, s))),
                NLM_F_CREATE,
                format!("add elements to set {}", s.name),
            ));
        }
    }
    if let Some(ft) = &r.flowtable {
        out.push((
            ipv4(NfTablesMessage::NewFlowTable(vec![
                nla_str(1, t),
                nla_str(2, &ft.name),
                hook_attrs(3, ft.hook, ft.priority, &ft.devices),
            ])),
            NLM_F_CREATE,
            format!("add {ft}"),
        ));
    }
    for c in &r.chains {
        let kind = match c.kind {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        };
        out.push((
            ipv4(other(
                MSG_NEWCHAIN,
                vec![
                    nla_str(1, t),
                    nla_str(3, &c.name),
                    hook_attrs(4, c.hook, c.priority, &[]),
                    nla_u32(5, c.policy as u32),
                    nla_str(7, kind),
                ],
            )),
            NLM_F_CREATE,
            format!("add chain {} {{ {} }}", c.name, c.header()),
        ));
    }
    for c in &r.chains {
        for rule in &c.rules {
            out.push((
                ipv4(rule_message(t, &c.name, rule)),
                NLM_F_CREATE | NLM_F_APPEND,
                format!("add rule {} {rule}", c.name),
            ));
        }
    }
    out
}

// ---- attribute decoding ----------------------------------------------------------------------

/// A read-back or encoding that does not fit the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

fn derr(s: impl Into<String>) -> DecodeError {
    DecodeError(s.into())
}

/// (type without flags, value) pairs of a buffer of attributes. Hand-rolled because the crate's
/// iterator hands out buffers that cannot outlive the loop.
fn attrs(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, DecodeError> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 4 <= buf.len() {
        let len = usize::from(u16::from_ne_bytes([buf[off], buf[off + 1]]));
        let kind = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]) & NLA_TYPE_MASK;
        if len < 4 || off + len > buf.len() {
            return Err(derr(format!("bad attribute length {len} at offset {off}")));
        }
        out.push((kind, &buf[off + 4..off + len]));
        off += (len + 3) & !3;
    }
    Ok(out)
}

fn get<'a>(list: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    list.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

fn need<'a>(list: &[(u16, &'a [u8])], kind: u16, what: &str) -> Result<&'a [u8], DecodeError> {
    get(list, kind).ok_or_else(|| derr(format!("{what}: attribute {kind} missing")))
}

fn be32(v: &[u8], what: &str) -> Result<u32, DecodeError> {
    Ok(u32::from_be_bytes(v.try_into().map_err(|_| {
        derr(format!("{what}: want 4 bytes, got {}", v.len()))
    })?))
}

fn be64(v: &[u8], what: &str) -> Result<u64, DecodeError> {
    Ok(u64::from_be_bytes(v.try_into().map_err(|_| {
        derr(format!("{what}: want 8 bytes, got {}", v.len()))
    })?))
}

fn string(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

fn u32_attr(l: &[(u16, &[u8])], kind: u16, what: &str) -> Result<u32, DecodeError> {
    be32(need(l, kind, what)?, what)
}

fn data_value(v: &[u8], what: &str) -> Result<Vec<u8>, DecodeError> {
    Ok(need(&attrs(v)?, 1, what)?.to_vec())
}

fn decode_expr(name: &str, data: &[u8]) -> Result<Expr, DecodeError> {
    let l = attrs(data)?;
    let w = |field: &str| format!("{name} {field}");
    let u = |k: u16, f: &str| u32_attr(&l, k, &w(f));
    Ok(match name {
        "meta" => Expr::Meta {
            dreg: u(1, "dreg")?,
            key: u(2, "key")?,
        },
        "payload" => Expr::Payload {
            dreg: u(1, "dreg")?,
            base: u(2, "base")?,
            offset: u(3, "offset")?,
            len: u(4, "len")?,
        },
        "cmp" => Expr::Cmp {
            sreg: u(1, "sreg")?,
            op: u(2, "op")?,
            data: data_value(need(&l, 3, "cmp data")?, "cmp data")?,
        },
        "bitwise" => Expr::Bitwise {
            sreg: u(1, "sreg")?,
            dreg: u(2, "dreg")?,
            len: u(3, "len")?,
            mask: data_value(need(&l, 4, "bitwise mask")?, "bitwise mask")?,
            xor: data_value(need(&l, 5, "bitwise xor")?, "bitwise xor")?,
        },
        "lookup" => Expr::Lookup {
            set: string(need(&l, 1, "lookup set")?),
            sreg: u(2, "sreg")?,
            invert: get(&l, 5)
                .map(|v| be32(v, "lookup flags"))
                .transpose()?
                .unwrap_or(0)
                & 1
                != 0,
        },
        "ct" => Expr::Ct {
            dreg: u(1, "dreg")?,
            key: u(2, "key")?,
        },
        "counter" => Expr::Counter {
            bytes: be64(need(&l, 1, "counter bytes")?, "counter bytes")?,
            packets: be64(need(&l, 2, "counter packets")?, "counter packets")?,
        },
        "limit" => Expr::Limit {
            rate: be64(need(&l, 1, "limit rate")?, "limit rate")?,
            unit_s: be64(need(&l, 2, "limit unit")?, "limit unit")?,
            burst: get(&l, 3)
                .map(|v| be32(v, "limit burst"))
                .transpose()?
                .unwrap_or(0),
            kind: get(&l, 4)
                .map(|v| be32(v, "limit type"))
                .transpose()?
                .unwrap_or(0),
            flags: get(&l, 5)
                .map(|v| be32(v, "limit flags"))
                .transpose()?
                .unwrap_or(0),
        },
        "masq" => {
            if get(&l, 1).is_some_and(|v| v.iter().any(|b| *b != 0)) || get(&l, 2).is_some() {
                Expr::Raw {
                    name: name.into(),
                    data: data.to_vec(),
                }
            } else {
                Expr::Masq
            }
        }
        "immediate" => {
            let dreg = u(1, "dreg")?;
            let d = attrs(need(&l, 2, "immediate data")?)?;
            match (dreg, get(&d, 2)) {
                (REG_VERDICT, Some(v)) => {
                    Expr::Verdict(u32_attr(&attrs(v)?, 1, "verdict code")? as i32)
                }
                _ => Expr::Raw {
                    name: name.into(),
                    data: data.to_vec(),
                },
            }
        }
        "byteorder" => Expr::Byteorder {
            sreg: u(1, "sreg")?,
            dreg: u(2, "dreg")?,
            op: u(3, "op")?,
            len: u(4, "len")?,
            size: u(5, "size")?,
        },
        "exthdr" => Expr::Exthdr {
            dreg: get(&l, 1).map(|v| be32(v, "exthdr dreg")).transpose()?,
            ty: *need(&l, 2, "exthdr type")?
                .first()
                .ok_or_else(|| derr("exthdr type empty"))?,
            offset: u(3, "offset")?,
            len: u(4, "len")?,
            flags: get(&l, 5)
                .map(|v| be32(v, "exthdr flags"))
                .transpose()?
                .unwrap_or(0),
            op: get(&l, 6)
                .map(|v| be32(v, "exthdr op"))
                .transpose()?
                .unwrap_or(0),
            sreg: get(&l, 7).map(|v| be32(v, "exthdr sreg")).transpose()?,
        },
        "rt" => Expr::Rt {
            dreg: u(1, "dreg")?,
            key: u(2, "key")?,
        },
        "flow_offload" => Expr::FlowOffload {
            table: string(need(&l, 1, "flow_offload table")?),
        },
        _ => Expr::Raw {
            name: name.into(),
            data: data.to_vec(),
        },
    })
}

/// The attribute bytes of a message (what follows the nfgenmsg header).
fn body(m: &NfTablesMessage) -> Vec<u8> {
    let mut buf = vec![0u8; m.buffer_len()];
    m.emit(&mut buf);
    buf
}

fn decode_rule(b: &[u8]) -> Result<(String, Rule), DecodeError> {
    let l = attrs(b)?;
    let chain = string(need(&l, 2, "rule chain")?);
    let mut exprs = Vec::new();
    if let Some(list) = get(&l, 4) {
        for (_, elem) in attrs(list)? {
            let e = attrs(elem)?;
            let name = string(need(&e, 1, "expression name")?);
            let data = get(&e, 2).unwrap_or(&[]);
            exprs.push(decode_expr(&name, data).map_err(|x| derr(format!("chain {chain}: {x}")))?);
        }
    }
    let name = get(&l, 7).and_then(comment_from_udata).unwrap_or_default();
    Ok((chain, Rule { name, exprs }))
}

/// Hook number, priority and (for a flowtable, whose NFTA_FLOWTABLE_HOOK_DEVS is 3) devices.
/// Base chains of an ip table have no devices.
fn decode_hook(b: &[u8], flowtable: bool) -> Result<(u32, i32, Vec<String>), DecodeError> {
    let h = attrs(b)?;
    let devs = match get(&h, 3) {
        Some(d) if flowtable => attrs(d)?.into_iter().map(|(_, v)| string(v)).collect(),
        _ => Vec::new(),
    };
    Ok((
        u32_attr(&h, 1, "hook number")?,
        u32_attr(&h, 2, "hook priority")? as i32,
        devs,
    ))
}

/// Builds the model from the bodies of the messages that describe one table: NEWTABLE, NEWSET,
/// NEWSETELEM, NEWFLOWTABLE, NEWCHAIN and NEWRULE, in any order. Objects of other tables are
/// skipped.
pub fn decode(table: &str, msgs: &[NfTablesMessage]) -> Result<Ruleset, DecodeError> {
    let mut r = Ruleset {
        table: String::new(),
        sets: Vec::new(),
        flowtable: None,
        chains: Vec::new(),
    };
    let mut rules: Vec<(String, Rule)> = Vec::new();
    let mut elems: Vec<(String, u32, u32)> = Vec::new();
    for m in msgs {
        let kind: u8 = m.message_type().into();
        let b = body(m);
        let l = attrs(&b)?;
        let owner = match kind {
            MSG_NEWSETELEM => string(need(&l, 1, "set element table")?),
            MSG_NEWTABLE => string(need(&l, 1, "table name")?),
            _ => string(need(&l, 1, "object table")?),
        };
        if owner != table {
            continue;
        }
        match kind {
            MSG_NEWTABLE => r.table = owner,
            MSG_NEWSET => r.sets.push(Set {
                name: string(need(&l, 2, "set name")?),
                flags: get(&l, 3)
                    .map(|v| be32(v, "set flags"))
                    .transpose()?
                    .unwrap_or(0),
                key_type: get(&l, 4)
                    .map(|v| be32(v, "set key type"))
                    .transpose()?
                    .unwrap_or(0),
                key_len: u32_attr(&l, 5, "set key len")?,
                ranges: Vec::new(),
            }),
            MSG_NEWSETELEM => {
                let set = string(need(&l, 2, "set element set")?);
                if let Some(list) = get(&l, 3) {
                    for (_, e) in attrs(list)? {
                        let ea = attrs(e)?;
                        let key = data_value(need(&ea, 1, "element key")?, "element key")?;
                        let key: [u8; 4] = key
                            .as_slice()
                            .try_into()
                            .map_err(|_| derr("set element key is not an IPv4 address"))?;
                        let flags = get(&ea, 3)
                            .map(|v| be32(v, "element flags"))
                            .transpose()?
                            .unwrap_or(0);
                        elems.push((set.clone(), u32::from_be_bytes(key), flags));
                    }
                }
            }
            MSG_NEWFLOWTABLE => {
                let (hook, priority, devices) = decode_hook(need(&l, 3, "flowtable hook")?, true)?;
                r.flowtable = Some(Flowtable {
                    name: string(need(&l, 2, "flowtable name")?),
                    hook,
                    priority,
                    devices,
                });
            }
            MSG_NEWCHAIN => {
                let name = string(need(&l, 3, "chain name")?);
                let Some(hook) = get(&l, 4) else {
                    return Err(derr(format!("chain {name} is not a base chain")));
                };
                let (hook, priority, _) = decode_hook(hook, false)?;
                let kind = match string(need(&l, 7, "chain type")?).as_str() {
                    "nat" => ChainType::Nat,
                    "filter" => ChainType::Filter,
                    other => return Err(derr(format!("chain {name} has type {other}"))),
                };
                r.chains.push(Chain {
                    name,
                    kind,
                    hook,
                    priority,
                    policy: get(&l, 5)
                        .map(|v| be32(v, "chain policy"))
                        .transpose()?
                        .unwrap_or(1) as i32,
                    rules: Vec::new(),
                });
            }
            MSG_NEWRULE => rules.push(decode_rule(&b)?),
            _ => {}
        }
    }
    if r.table.is_empty() {
        return Err(derr(format!("table {table} not found")));
    }
    for (chain, rule) in rules {
        let c = r
            .chains
            .iter_mut()
            .find(|c| c.name == chain)
            .ok_or_else(|| derr(format!("rule in unknown chain {chain}")))?;
        c.rules.push(rule);
    }
    for s in &mut r.sets {
        let mut e: Vec<(u32, u32)> = elems
            .iter()
            .filter(|(n, _, _)| *n == s.name)
            .map(|(_, k, f)| (*k, *f))
            .collect();
        // An interval end sorts before a start at the same key (end of one range, start of next).
        e.sort_by_key(|(k, f)| (*k, f & SET_ELEM_INTERVAL_END == 0));
        let mut start: Option<u32> = None;
        for (k, f) in e {
            if f & SET_ELEM_INTERVAL_END != 0 {
                if let Some(a) = start.take() {
                    s.ranges
                        .push((Ipv4Addr::from(a), Ipv4Addr::from(k.wrapping_sub(1))));
                }
            } else if let Some(a) = start.replace(k) {
                // Two starts in a row: the first ran up to just before the second.
                s.ranges
                    .push((Ipv4Addr::from(a), Ipv4Addr::from(k.wrapping_sub(1))));
            }
        }
        if let Some(a) = start {
            s.ranges.push((Ipv4Addr::from(a), Ipv4Addr::BROADCAST));
        }
    }
    Ok(r)
}

// ---- the kernel side -------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("{what}: {source}")]
    Decode {
        what: String,
        #[source]
        source: DecodeError,
    },
    #[error(
        "the kernel refused `{what}`: errno {errno} ({}){}",
        crate::netlink::errno_text(*errno),
        message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
    )]
    Refused {
        what: String,
        errno: i32,
        message: Option<String>,
    },
    #[error("batch: {0}")]
    Batch(String),
    #[error("table {table} differs from what was installed:\n  {}", differences.join("\n  "))]
    Differs {
        table: String,
        differences: Vec<String>,
    },
}

impl NftError {
    /// The kernel's errno, if the kernel refused something.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Netlink(e) => e.errno(),
            Self::Refused { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

pub type Result<T, E = NftError> = std::result::Result<T, E>;

/// An nfnetlink socket.
pub struct Nfnl {
    t: Transport,
}

impl Nfnl {
    pub fn open() -> Result<Self> {
        Ok(Self {
            t: Transport::open(protocols::NETLINK_NETFILTER, "opening nfnetlink socket")?,
        })
    }

    /// Sends `msgs` between BATCH_BEGIN and BATCH_END in one datagram: the kernel applies all or
    /// nothing. Every message asks for an ACK; the first refusal is reported with its description.
    fn batch(&mut self, msgs: Vec<(NetfilterMessage, u16, String)>) -> Result<()> {
        let what = "sending nf_tables batch";
        let ctl = |m: ControlMessage| {
            NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 10),
                NetfilterMessageInner::from(m),
            )
        };
        let mut bytes = Vec::new();
        let begin = self.t.next_seq();
        bytes.extend(Transport::frame(
            ctl(ControlMessage::BatchBegin),
            NLM_F_REQUEST,
            begin,
        ));
        let mut pending: Vec<(u32, String)> = Vec::new();
        for (m, flags, desc) in msgs {
            let seq = self.t.next_seq();
            bytes.extend(Transport::frame(m, NLM_F_REQUEST | NLM_F_ACK | flags, seq));
            pending.push((seq, desc));
        }
        let end = self.t.next_seq();
        bytes.extend(Transport::frame(
            ctl(ControlMessage::BatchEnd),
            NLM_F_REQUEST,
            end,
        ));
        self.t.send(&bytes, what)?;
        let mut first_err: Option<NftError> = None;
        for reply in self.t.drain::<NetfilterMessage>(what)? {
            let seq = reply.header.sequence_number;
            if let NetlinkPayload::Error(e) = reply.payload {
                let desc = pending
                    .iter()
                    .position(|(s, _)| *s == seq)
                    .map(|i| pending.remove(i).1);
                if let Some(code) = e.code {
                    first_err.get_or_insert(NftError::Refused {
                        what: desc.unwrap_or_else(|| format!("batch message {seq}")),
                        errno: -code.get(),
                        message: crate::netlink::extack_message(&e.header),
                    });
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if !pending.is_empty() {
            return Err(NftError::Batch(format!(
                "no answer for {} of the messages, first: {}",
                pending.len(),
                pending[0].1
            )));
        }
        Ok(())
    }

    fn dump(
        &mut self,
        kind: u8,
        attrs: Vec<DefaultNla>,
        what: &str,
    ) -> Result<Vec<NfTablesMessage>> {
        let replies = self.t.request(ipv4(other(kind, attrs)), NLM_F_DUMP, what)?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m.inner {
                NetfilterMessageInner::NfTables(n) => Some(n),
                _ => None,
            })
            .collect())
    }
}

/// Replaces the appliance's table atomically: one batch adds the table (a no-op if it exists),
/// deletes it with everything in it, and adds it again with the new content.
pub fn apply(sock: &mut Nfnl, r: &Ruleset) -> Result<()> {
    let t = r.table.as_str();
    let mut msgs = vec![
        (
            table_msg(MSG_NEWTABLE, t),
            NLM_F_CREATE,
            format!("add table ip {t}"),
        ),
        (
            table_msg(MSG_DELTABLE, t),
            0,
            format!("delete table ip {t}"),
        ),
    ];
    msgs.extend(encode(r));
    sock.batch(msgs)
}

/// Reads `table` back from the kernel.
pub fn read_back(sock: &mut Nfnl, table: &str) -> Result<Ruleset> {
    let what = |x: &str| format!("reading back table {table}: {x}");
    let mut msgs = sock
        .t
        .request(table_msg(MSG_GETTABLE, table), 0, &what("table"))?
        .into_iter()
        .filter_map(|m| match m.inner {
            NetfilterMessageInner::NfTables(n) => Some(n),
            _ => None,
        })
        .collect::<Vec<_>>();
    let sets = sock.dump(MSG_GETSET, vec![nla_str(1, table)], &what("sets"))?;
    let mut names = Vec::new();
    for s in &sets {
        let b = body(s);
        let l = attrs(&b).map_err(|source| NftError::Decode {
            what: what("sets"),
            source,
        })?;
        if get(&l, 1).map(string).as_deref() == Some(table)
            && let Some(n) = get(&l, 2)
        {
            names.push(string(n));
        }
    }
    msgs.extend(sets);
    for n in names {
        msgs.extend(sock.dump(
            MSG_GETSETELEM,
            vec![nla_str(1, table), nla_str(2, &n)],
            &what(&format!("elements of set {n}")),
        )?);
    }
    msgs.extend(sock.dump(
        MSG_GETFLOWTABLE,
        vec![nla_str(1, table)],
        &what("flowtables"),
    )?);
    msgs.extend(sock.dump(MSG_GETCHAIN, vec![nla_str(1, table)], &what("chains"))?);
    msgs.extend(sock.dump(MSG_GETRULE, vec![nla_str(1, table)], &what("rules"))?);
    decode(table, &msgs).map_err(|source| NftError::Decode {
        what: what("decoding"),
        source,
    })
}

/// Reads the table back and compares it with `r`; the error lists every difference.
pub fn verify(sock: &mut Nfnl, r: &Ruleset) -> Result<()> {
    let got = read_back(sock, &r.table)?;
    let differences = r.differences(&got);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(NftError::Differs {
            table: r.table.clone(),
            differences,
        })
    }
}

/// Packet and byte counts of the named rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Accepted in the forward chain (established, ICMP errors, new private flows).
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    /// Dropped by rules in forward and input (invalid and the final drops).
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// New connections masqueraded (NAT rules see only a flow's first packet).
    pub masqueraded_flows: u64,
    /// (chain, rule name, packets, bytes) for every rule with a counter.
    pub rules: Vec<(String, String, u64, u64)>,
}

impl Counters {
    pub fn rule(&self, name: &str) -> Option<(u64, u64)> {
        self.rules
            .iter()
            .find(|(_, n, _, _)| n == name)
            .map(|(_, _, p, b)| (*p, *b))
    }
}

/// Reads the counters of the table's rules.
pub fn counters(sock: &mut Nfnl, table: &str) -> Result<Counters> {
    let r = read_back(sock, table)?;
    let mut c = Counters::default();
    for ch in &r.chains {
        for rule in &ch.rules {
            let Some((p, b)) = rule.exprs.iter().find_map(|e| match e {
                Expr::Counter { packets, bytes } => Some((*packets, *bytes)),
                _ => None,
            }) else {
                continue;
            };
            let verdict = rule.exprs.iter().rev().find_map(|e| match e {
                Expr::Verdict(v) => Some(*v),
                _ => None,
            });
            if ch.hook == HOOK_FORWARD && verdict == Some(NF_ACCEPT) {
                c.forwarded_packets += p;
                c.forwarded_bytes += b;
            }
            if verdict == Some(NF_DROP) {
                c.dropped_packets += p;
                c.dropped_bytes += b;
            }
            if rule.exprs.contains(&Expr::Masq) {
                c.masqueraded_flows += p;
            }
            c.rules.push((ch.name.clone(), rule.name.clone(), p, b));
        }
    }
    Ok(c)
}

/// Whether the kernel can add a flowtable to an ip table (nf_flow_table and its ip type). Probes
/// with one batch that adds a scratch table with a flowtable on `lo` and deletes it again: the
/// kernel either applies both or neither, so nothing is left behind either way.
pub fn flowtable_supported(sock: &mut Nfnl) -> bool {
    let t = format!("nat_init_probe_{}", std::process::id());
    let msgs = vec![
        (
            table_msg(MSG_NEWTABLE, &t),
            NLM_F_CREATE,
            format!("add table ip {t}"),
        ),
        (
            ipv4(NfTablesMessage::NewFlowTable(vec![
                nla_str(1, &t),
                nla_str(2, FLOWTABLE),
                hook_attrs(3, HOOK_NETDEV_INGRESS, 0, &["lo".to_string()]),
            ])),
            NLM_F_CREATE,
            "add probe flowtable".into(),
        ),
        (
            table_msg(MSG_DELTABLE, &t),
            0,
            format!("delete table ip {t}"),
        ),
    ];
    sock.batch(msgs).is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;
    use netlink_packet_core::NetlinkMessage;

    fn spec(private: &[&str], flowtable: bool, mss: bool) -> RulesetSpec {
        RulesetSpec {
            table: TABLE.into(),
            iface: "ens5".into(),
            private: private.iter().map(|s| s.parse().unwrap()).collect(),
            flowtable,
            mss_clamp: mss,
            icmp_rate_per_s: 10,
        }
    }

    const EXPECTED_ENS5: &str = r#"table ip nat_instance {
	set private { type ipv4_addr; flags interval; elements = { 10.0.0.0/16 } }
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		oifname "ens5" ip saddr @private ip daddr != @private counter packets 0 bytes 0 masquerade comment "masquerade"
	}
	chain forward {
		type filter hook forward priority 0; policy drop;
		meta l4proto tcp tcp flags syn tcp option maxseg size set rt mtu comment "fwd_mss_clamp"
		ct state established,related counter packets 0 bytes 0 accept comment "fwd_established"
		ip protocol icmp icmp type destination-unreachable counter packets 0 bytes 0 accept comment "fwd_icmp_unreachable"
		ct state invalid counter packets 0 bytes 0 drop comment "fwd_invalid"
		ip saddr @private ct state new counter packets 0 bytes 0 accept comment "fwd_new_private"
		counter packets 0 bytes 0 drop comment "fwd_drop"
	}
	chain input {
		type filter hook input priority 0; policy drop;
		iifname "lo" accept comment "in_loopback"
		ip protocol icmp icmp type echo-request limit rate over 10/second burst 5 packets counter packets 0 bytes 0 drop comment "in_icmp_over_limit"
		ct state established,related counter packets 0 bytes 0 accept comment "in_established"
		ct state invalid counter packets 0 bytes 0 drop comment "in_invalid"
		ip protocol icmp icmp type echo-request counter packets 0 bytes 0 accept comment "in_icmp_echo"
		meta l4proto udp udp sport 67 udp dport 68 counter packets 0 bytes 0 accept comment "in_dhcp"
		counter packets 0 bytes 0 drop comment "in_drop"
	}
}
"#;

    #[test]
    fn text_for_ens5() {
        let r = build(&spec(&["10.0.0.0/16"], false, true));
        assert_eq!(r.to_string(), EXPECTED_ENS5);
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
        let text = on.to_string();
        assert!(text.contains("flowtable ft { hook ingress priority 0; devices = { ens5 }; }"));
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

    #[test]
    fn deterministic() {
        let s = spec(&["10.0.0.0/16", "100.64.0.0/10"], true, true);
        let a = encode(&build(&s));
        let b = encode(&build(&s));
        assert_eq!(a, b);
    }

    /// Serialises every message to netlink bytes, parses them back with the crate's parser and
    /// decodes: the model must survive unchanged.
    fn round_trip(r: &Ruleset) -> Ruleset {
        let mut parsed = Vec::new();
        for (i, (m, flags, _)) in encode(r).into_iter().enumerate() {
            let bytes = Transport::frame(m, flags, i as u32 + 1);
            let back = NetlinkMessage::<NetfilterMessage>::deserialize(&bytes).unwrap();
            let NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::NfTables(n),
                ..
            }) = back.payload
            else {
                panic!("not an nf_tables message");
            };
            parsed.push(n);
        }
        decode(&r.table, &parsed).unwrap()
    }

    #[test]
    fn encoding_round_trips() {
        for (private, ft, mss) in [
            (vec!["10.0.0.0/16"], false, true),
            (vec!["10.0.0.0/16"], true, false),
            (
                vec![
                    "10.0.0.0/8",
                    "172.16.0.0/12",
                    "192.168.0.0/16",
                    "100.64.0.0/10",
                ],
                true,
                true,
            ),
            (vec!["0.0.0.0/0"], false, false),
            (vec![], false, false),
        ] {
            let r = build(&spec(&private, ft, mss));
            let back = round_trip(&r);
            assert_eq!(back, r, "{back}\n{r}");
            assert!(r.differences(&back).is_empty());
        }
    }

    #[test]
    fn differences_are_reported() {
        let want = build(&spec(&["10.0.0.0/16"], false, false));
        let mut got = want.clone();
        got.chains[1].rules.pop();
        got.chains[2].policy = NF_ACCEPT;
        got.sets[0].ranges.clear();
        if let Expr::Counter { packets, .. } = &mut got.chains[0].rules[0].exprs[6] {
            *packets = 99;
        } else {
            panic!("counter expected at index 6");
        }
        let d = want.differences(&got);
        assert_eq!(d.len(), 3, "{d:#?}");
        assert!(d[0].starts_with("sets:"));
        assert!(
            d.iter()
                .any(|x| x.contains("chain forward rule 5") && x.contains("got `nothing`"))
        );
        assert!(
            d.iter()
                .any(|x| x.contains("chain input") && x.contains("policy accept"))
        );
    }

    /// The flowtable cannot be installed on the CI host, so its wire format is pinned here to
    /// what `nft --debug=mnl` sends for `flowtable ft { hook ingress priority 0; devices = { lo } }`
    /// in table `t` and for `flow add @ft` (nft also sends NFTA_FLOWTABLE_FLAGS 0, which is
    /// optional).
    #[test]
    fn flowtable_wire_format_matches_nft() {
        let mut sp = spec(&["10.0.0.0/8"], true, false);
        sp.table = "t".into();
        sp.iface = "lo".into();
        let msgs = encode(&build(&sp));
        let ft = msgs
            .iter()
            .find_map(|(m, _, _)| match &m.inner {
                NetfilterMessageInner::NfTables(n @ NfTablesMessage::NewFlowTable(_)) => Some(n),
                _ => None,
            })
            .unwrap();
        let want: Vec<u8> = [
            &[6u8, 0, 1, 0, b't', 0, 0, 0][..],
            &[7, 0, 2, 0, b'f', b't', 0, 0],
            &[32, 0, 3, 0x80],
            &[8, 0, 1, 0, 0, 0, 0, 0],
            &[8, 0, 2, 0, 0, 0, 0, 0],
            &[12, 0, 3, 0x80, 7, 0, 1, 0, b'l', b'o', 0, 0],
        ]
        .concat();
        assert_eq!(body(ft), want);

        let flow = Expr::FlowOffload { table: "ft".into() };
        let (name, attrs) = expr_attrs(&flow);
        assert_eq!(name, "flow_offload");
        assert_eq!(emit_all(&attrs), [7, 0, 1, 0, b'f', b't', 0, 0]);
    }

    #[test]
    fn comment_userdata() {
        let u = comment_udata("fwd_drop");
        assert_eq!(u[0], 0);
        assert_eq!(usize::from(u[1]), "fwd_drop".len() + 1);
        assert_eq!(comment_from_udata(&u).as_deref(), Some("fwd_drop"));
        assert_eq!(comment_from_udata(&[1, 2, 0]), None);
    }
}

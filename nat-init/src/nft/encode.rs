//! The model as nf_tables netlink messages: one add message per object, in dependency order,
//! each with a description of itself in nft syntax so a refusal can say which one it was.
//! Every expression's attributes are written here through netlink-packet-netfilter's raw
//! escape hatches (see the `nft` module doc for why); `decode` reads the same layout back.

use std::net::Ipv4Addr;

use netlink_packet_core::{DefaultNla, Emitable, NLA_F_NESTED, NLM_F_APPEND, NLM_F_CREATE};
use netlink_packet_netfilter::nftables::{
    ExpressionAttribute, Expressions, ListAttribute, NfTablesMessage, RuleAttribute, RuleMessage,
};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use super::model::{ChainType, Expr, Rule, Ruleset, Set};
use super::uapi::{
    MSG_NEWCHAIN, MSG_NEWSET, MSG_NEWSETELEM, MSG_NEWTABLE, NAT_SNAT, NFPROTO_IPV4,
    NFTA_FLOWTABLE_FLAGS, REG_VERDICT, SET_ELEM_INTERVAL_END,
};

fn nla(kind: u16, value: Vec<u8>) -> DefaultNla {
    DefaultNla::new(kind, value)
}

fn nla_u32(kind: u16, v: u32) -> DefaultNla {
    nla(kind, v.to_be_bytes().to_vec())
}

fn nla_u64(kind: u16, v: u64) -> DefaultNla {
    nla(kind, v.to_be_bytes().to_vec())
}

pub(super) fn nla_str(kind: u16, s: &str) -> DefaultNla {
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
        // NFTA_CT_KEY, then NFTA_CT_SREG (4), as nft sends them.
        Expr::CtSet { key, sreg } => ("ct", vec![nla_u32(2, *key), nla_u32(4, *sreg)]),
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
        // The kernel dumps NFTA_MASQ_FLAGS only when not zero; so is it sent.
        Expr::Masq { flags, proto } => {
            let mut v = Vec::new();
            if *flags != 0 {
                v.push(nla_u32(1, *flags));
            }
            if let Some((min, max)) = proto {
                v.extend([nla_u32(2, *min), nla_u32(3, *max)]);
            }
            ("masq", v)
        }
        Expr::Verdict(code) => (
            "immediate",
            vec![
                nla_u32(1, REG_VERDICT),
                nla_nested(2, &[nla_nested(2, &[nla_u32(1, *code as u32)])]),
            ],
        ),
        Expr::Immediate { dreg, data } => ("immediate", vec![nla_u32(1, *dreg), nla_data(2, data)]),
        Expr::Numgen {
            dreg,
            modulus,
            kind,
            offset,
        } => (
            "numgen",
            vec![
                nla_u32(1, *dreg),
                nla_u32(2, *modulus),
                nla_u32(3, *kind),
                nla_u32(4, *offset),
            ],
        ),
        // One address: the same register for both ends of the range, as the kernel dumps it.
        Expr::Snat { addr, flags, proto } => {
            let mut v = vec![
                nla_u32(1, NAT_SNAT),
                nla_u32(2, NFPROTO_IPV4),
                nla_u32(3, *addr),
                nla_u32(4, *addr),
            ];
            if let Some((min, max)) = proto {
                v.extend([nla_u32(5, *min), nla_u32(6, *max)]);
            }
            if *flags != 0 {
                v.push(nla_u32(7, *flags));
            }
            ("nat", v)
        }
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
        Expr::Dynset {
            set,
            op,
            sreg,
            expr,
        } => {
            let mut v = vec![nla_u32(4, *sreg), nla_u32(3, *op), nla_str(1, set)];
            if let Some(e) = expr {
                v.push(nla_nested(7, &expr_nla(e)));
            }
            ("dynset", v)
        }
        Expr::Notrack => ("notrack", vec![]),
        Expr::Connlimit { count, flags } => {
            ("connlimit", vec![nla_u32(1, *count), nla_u32(2, *flags)])
        }
        Expr::Raw { name, data } => (name.as_str(), vec![nla(0, data.clone())]),
    }
}

/// One expression as NFTA_EXPR_NAME and NFTA_EXPR_DATA, for nesting (a dynset's element).
fn expr_nla(e: &Expr) -> Vec<DefaultNla> {
    let (name, attrs) = expr_attrs(e);
    vec![nla_str(1, name), nla_nested(2, &attrs)]
}

/// nftnl's rule userdata layout: TLVs of (type u8, len u8, value); type 0 is the comment.
pub(super) fn comment_udata(name: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(name.len() + 3);
    let bytes = &name.as_bytes()[..name.len().min(253)];
    v.push(0);
    v.push(bytes.len() as u8 + 1);
    v.extend_from_slice(bytes);
    v.push(0);
    v
}

fn nf_msg(family: NetfilterProtoFamily, m: NfTablesMessage) -> NetfilterMessage {
    NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), m)
}

pub(super) fn ipv4(m: NfTablesMessage) -> NetfilterMessage {
    nf_msg(NetfilterProtoFamily::IPv4, m)
}

pub(super) fn other(message_type: u8, attributes: Vec<DefaultNla>) -> NfTablesMessage {
    NfTablesMessage::Other {
        message_type,
        attributes,
    }
}

pub(super) fn table_msg(kind: u8, table: &str) -> NetfilterMessage {
    ipv4(other(kind, vec![nla_str(1, table)]))
}

fn set_elem_attrs(table: &str, s: &Set, id: u32) -> Vec<DefaultNla> {
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
        nla_u32(4, id),
    ]
}

pub(super) fn flowtable_flags(flags: u32) -> DefaultNla {
    nla_u32(NFTA_FLOWTABLE_FLAGS, flags)
}

pub(super) fn hook_attrs(kind: u16, hook: u32, priority: i32, devices: &[String]) -> DefaultNla {
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
    for (i, s) in r.sets.iter().enumerate() {
        // The set's id within the batch: its place, from 1.
        let id = i as u32 + 1;
        let mut attrs = vec![
            nla_str(1, t),
            nla_str(2, &s.name),
            nla_u32(3, s.flags),
            nla_u32(4, s.key_type),
            nla_u32(5, s.key_len),
            nla_u32(10, id),
        ];
        if s.size != 0 {
            attrs.push(nla_nested(9, &[nla_u32(1, s.size)]));
        }
        out.push((
            ipv4(other(MSG_NEWSET, attrs)),
            NLM_F_CREATE,
            format!("add {s}"),
        ));
        if !s.ranges.is_empty() {
            out.push((
                ipv4(other(MSG_NEWSETELEM, set_elem_attrs(t, s, id))),
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
                // Always sent, as nft does; the kernel dumps it always.
                flowtable_flags(ft.flags),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::policy::build;
    use crate::nft::policy::tests::spec;
    use netlink_packet_netfilter::NetfilterMessageInner;

    /// The attribute bytes of a message (what follows the nfgenmsg header).
    fn body(m: &NfTablesMessage) -> Vec<u8> {
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        buf
    }

    #[test]
    fn deterministic() {
        let s = spec(&["10.0.0.0/16", "100.64.0.0/10"], true, true);
        let a = encode(&build(&s));
        let b = encode(&build(&s));
        assert_eq!(a, b);
    }

    /// The flowtable cannot be installed on the CI host (its kernel has no NF_FLOW_TABLE), so
    /// its wire format is pinned here to what `nft --debug=mnl` (1.0.6) sends on that host for
    /// `flowtable ft { hook ingress priority 0; devices = { lo }; counter; }` in table `t`
    /// (NFTA_FLOWTABLE_FLAGS is attribute 7, NFT_FLOWTABLE_COUNTER 0x2), and for `flow add @ft`.
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
            &[8, 0, 7, 0, 0, 0, 0, 2],
        ]
        .concat();
        assert_eq!(body(ft), want);

        let flow = Expr::FlowOffload { table: "ft".into() };
        let (name, attrs) = expr_attrs(&flow);
        assert_eq!(name, "flow_offload");
        assert_eq!(emit_all(&attrs), [7, 0, 1, 0, b'f', b't', 0, 0]);
    }

    /// `ct direction reply ct mark 0 ct mark set 1 counter` as `nft --debug=mnl` (1.0.6) sends
    /// it, expression by expression: direction one byte, the mark four in host order, the set
    /// NFTA_CT_KEY then NFTA_CT_SREG (4).
    #[test]
    fn first_reply_wire_format_matches_nft() {
        let r = build(&spec(&["10.0.0.0/8"], false, false));
        let fwd = r.chains.iter().find(|c| c.name == "forward").unwrap();
        let rule = fwd
            .rules
            .iter()
            .find(|r| r.name == crate::nft::RULE_FWD_FIRST_REPLY)
            .unwrap();
        let u = |k: u8, v: u8| [8u8, 0, k, 0, 0, 0, 0, v];
        let wire: Vec<(&str, Vec<u8>)> = rule
            .exprs
            .iter()
            .map(|e| {
                let (n, a) = expr_attrs(e);
                (n, emit_all(&a))
            })
            .collect();
        let one = 1u32.to_ne_bytes();
        let want: Vec<(&str, Vec<u8>)> = vec![
            ("ct", [u(1, 1), u(2, 1)].concat()),
            (
                "cmp",
                [
                    &u(1, 1)[..],
                    &u(2, 0),
                    &[12, 0, 3, 0x80, 5, 0, 1, 0, 1, 0, 0, 0],
                ]
                .concat(),
            ),
            ("ct", [u(1, 1), u(2, 3)].concat()),
            (
                "cmp",
                [
                    &u(1, 1)[..],
                    &u(2, 0),
                    &[12, 0, 3, 0x80, 8, 0, 1, 0, 0, 0, 0, 0],
                ]
                .concat(),
            ),
            (
                "immediate",
                [&u(1, 1)[..], &[12, 0, 2, 0x80, 8, 0, 1, 0], &one].concat(),
            ),
            ("ct", [u(2, 3), u(4, 1)].concat()),
            (
                "counter",
                [&[12u8, 0, 1, 0][..], &[0; 8], &[12, 0, 2, 0], &[0; 8]].concat(),
            ),
        ];
        assert_eq!(wire, want);
    }

    /// `meta l4proto tcp masquerade to :2000-2010 fully-random` and `... snat to
    /// 1.2.3.4:2000-2010 fully-random` as `nft --debug=mnl` (1.0.6) sends them, past the
    /// protocol match nft insists on: the ports in two-byte immediates (network order), then
    /// the expression naming their registers with PROTO_SPECIFIED; snat's range end address
    /// and MAP_IPS as in `snat_wire_format_matches_nft`.
    #[test]
    fn nat_port_range_wire_format_matches_nft() {
        let mut sp = spec(&["10.0.0.0/8"], false, false);
        sp.nat_port_range = Some((2000, 2010));
        let wire = |r: &Ruleset| -> Vec<(String, Vec<u8>)> {
            let post = &r.chains[0].rules[0].exprs;
            post[post.len() - 4..]
                .iter()
                .map(|e| {
                    let (n, a) = expr_attrs(e);
                    (n.to_string(), emit_all(&a))
                })
                .collect()
        };
        let u = |k: u8, v: u8| [8u8, 0, k, 0, 0, 0, 0, v];
        let imm = |reg: u8, port: [u8; 2]| {
            (
                "immediate".to_string(),
                [
                    &u(1, reg)[..],
                    &[12, 0, 2, 0x80, 6, 0, 1, 0],
                    &port,
                    &[0, 0],
                ]
                .concat(),
            )
        };
        let masq = wire(&build(&sp));
        assert_eq!(
            masq[1..],
            [
                imm(1, [0x07, 0xd0]),
                imm(2, [0x07, 0xda]),
                ("masq".to_string(), [u(1, 0x12), u(2, 1), u(3, 2)].concat()),
            ]
        );
        sp.snat_addresses = vec![Ipv4Addr::new(1, 2, 3, 4)];
        let snat = wire(&build(&sp));
        assert_eq!(
            snat,
            [
                (
                    "immediate".to_string(),
                    [&u(1, 1)[..], &[12, 0, 2, 0x80, 8, 0, 1, 0, 1, 2, 3, 4]].concat()
                ),
                imm(2, [0x07, 0xd0]),
                imm(3, [0x07, 0xda]),
                (
                    "nat".to_string(),
                    [
                        u(1, 0),
                        u(2, 2),
                        u(3, 1),
                        u(4, 1),
                        u(5, 2),
                        u(6, 3),
                        u(7, 0x13)
                    ]
                    .concat()
                ),
            ]
        );
    }

    /// `numgen random mod 2` and the immediate load of 198.51.100.1 as `nft --debug=mnl`
    /// sends them; its `nat` has the same attributes but for the range's end (the kernel sets
    /// it to the start and dumps it back, so it is sent here) and MAP_IPS (added likewise).
    #[test]
    fn snat_wire_format_matches_nft() {
        let ng = Expr::Numgen {
            dreg: 1,
            modulus: 2,
            kind: crate::nft::uapi::NG_RANDOM,
            offset: 0,
        };
        let (name, attrs) = expr_attrs(&ng);
        assert_eq!(name, "numgen");
        let u = |k: u8, v: u8| [8u8, 0, k, 0, 0, 0, 0, v];
        assert_eq!(
            emit_all(&attrs),
            [u(1, 1), u(2, 2), u(3, 1), u(4, 0)].concat()
        );
        let imm = Expr::Immediate {
            dreg: 1,
            data: vec![198, 51, 100, 1],
        };
        let (name, attrs) = expr_attrs(&imm);
        assert_eq!(name, "immediate");
        assert_eq!(
            emit_all(&attrs),
            [&u(1, 1)[..], &[12, 0, 2, 0x80, 8, 0, 1, 0, 198, 51, 100, 1]].concat()
        );
        let nat = Expr::Snat {
            addr: 1,
            flags: 0x11,
            proto: None,
        };
        let (name, attrs) = expr_attrs(&nat);
        assert_eq!(name, "nat");
        assert_eq!(
            emit_all(&attrs),
            [u(1, 0), u(2, 2), u(3, 1), u(4, 1), u(7, 0x11)].concat()
        );
    }
}

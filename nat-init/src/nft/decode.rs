//! Dump replies back into the model: the bodies of NEWTABLE, NEWSET, NEWSETELEM, NEWFLOWTABLE,
//! NEWCHAIN and NEWRULE messages, read attribute by attribute in the layout `encode` writes.
//! Everything here comes from the kernel (or, in the fuzz target, from anywhere), so nothing
//! may panic: a message that does not fit is a [`DecodeError`] saying where.

use std::net::Ipv4Addr;

use netlink_packet_core::{NLA_TYPE_MASK, NetlinkDeserializable, NetlinkHeader, NetlinkPayload};

use super::model::{Chain, ChainType, Expr, Flowtable, Rule, Ruleset, Set};
use super::uapi::{
    MSG_NEWCHAIN, MSG_NEWFLOWTABLE, MSG_NEWRULE, MSG_NEWSET, MSG_NEWSETELEM, MSG_NEWTABLE,
    NAT_SNAT, NFGENMSG_LEN, NFNL_SUBSYS_NFTABLES, NFPROTO_IPV4, NFTA_FLOWTABLE_FLAGS, REG_VERDICT,
    SET_ELEM_INTERVAL_END,
};

/// A read-back or encoding that does not fit the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

fn derr(s: impl Into<String>) -> DecodeError {
    DecodeError(s.into())
}

/// (type without flags, value) pairs of a buffer of attributes. Hand-rolled because the crate's
/// iterator hands out buffers that cannot outlive the loop.
pub(super) fn attrs(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, DecodeError> {
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

pub(super) fn get<'a>(list: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
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

pub(super) fn string(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

fn u32_attr(l: &[(u16, &[u8])], kind: u16, what: &str) -> Result<u32, DecodeError> {
    be32(need(l, kind, what)?, what)
}

fn data_value(v: &[u8], what: &str) -> Result<Vec<u8>, DecodeError> {
    Ok(need(&attrs(v)?, 1, what)?.to_vec())
}

/// The registers of a port range's ends (attributes `min` and `max`): `Some(None)` without a
/// range, `None` when only one end is there (not a layout the kernel dumps).
fn proto_regs(
    l: &[(u16, &[u8])],
    min: u16,
    max: u16,
    what: &str,
) -> Result<Option<Option<(u32, u32)>>, DecodeError> {
    Ok(match (get(l, min), get(l, max)) {
        (None, None) => Some(None),
        (Some(a), Some(b)) => Some(Some((be32(a, what)?, be32(b, what)?))),
        _ => None,
    })
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
        // A load has NFTA_CT_DREG, a set NFTA_CT_SREG (4); one with both or neither is not ours.
        "ct" => match (get(&l, 1), get(&l, 4)) {
            (Some(_), None) => Expr::Ct {
                dreg: u(1, "dreg")?,
                key: u(2, "key")?,
            },
            (None, Some(_)) => Expr::CtSet {
                sreg: u(4, "sreg")?,
                key: u(2, "key")?,
            },
            _ => Expr::Raw {
                name: name.into(),
                data: data.to_vec(),
            },
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
        "masq" => match proto_regs(&l, 2, 3, &w("proto"))? {
            // A range with one end only (the kernel dumps both) is not ours: kept raw.
            None => Expr::Raw {
                name: name.into(),
                data: data.to_vec(),
            },
            Some(proto) => Expr::Masq {
                flags: get(&l, 1)
                    .map(|v| be32(v, "masq flags"))
                    .transpose()?
                    .unwrap_or(0),
                proto,
            },
        },
        "immediate" => {
            let dreg = u(1, "dreg")?;
            let d = attrs(need(&l, 2, "immediate data")?)?;
            match (dreg, get(&d, 2), get(&d, 1)) {
                (REG_VERDICT, Some(v), _) => {
                    Expr::Verdict(u32_attr(&attrs(v)?, 1, "verdict code")? as i32)
                }
                (r, None, Some(value)) if r != REG_VERDICT => Expr::Immediate {
                    dreg,
                    data: value.to_vec(),
                },
                _ => Expr::Raw {
                    name: name.into(),
                    data: data.to_vec(),
                },
            }
        }
        "numgen" => Expr::Numgen {
            dreg: u(1, "dreg")?,
            modulus: u(2, "modulus")?,
            kind: u(3, "type")?,
            offset: get(&l, 4)
                .map(|v| be32(v, "numgen offset"))
                .transpose()?
                .unwrap_or(0),
        },
        "nat" => {
            let opt = |k: u16, f: &str| get(&l, k).map(|v| be32(v, &w(f))).transpose();
            let (min, max) = (opt(3, "addr min")?, opt(4, "addr max")?);
            let proto = proto_regs(&l, 5, 6, &w("proto"))?;
            // Source NAT to one IPv4 address, with or without a port range, is ours; any other
            // is kept raw so it shows as foreign.
            match (u(1, "type")?, u(2, "family")?, min, max, proto) {
                (NAT_SNAT, NFPROTO_IPV4, Some(a), Some(b), Some(proto)) if a == b => Expr::Snat {
                    addr: a,
                    flags: opt(7, "flags")?.unwrap_or(0),
                    proto,
                },
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
        "dynset" => Expr::Dynset {
            set: string(need(&l, 1, "dynset set")?),
            op: u(3, "op")?,
            sreg: u(4, "sreg")?,
            expr: match get(&l, 7) {
                None => None,
                Some(e) => {
                    let e = attrs(e)?;
                    let inner = string(need(&e, 1, "dynset expression name")?);
                    // One level only: what comes from outside must not nest without bound.
                    if inner == "dynset" {
                        return Err(derr("dynset inside a dynset"));
                    }
                    Some(Box::new(decode_expr(&inner, get(&e, 2).unwrap_or(&[]))?))
                }
            },
        },
        "notrack" => Expr::Notrack,
        "connlimit" => Expr::Connlimit {
            count: u(1, "count")?,
            flags: get(&l, 2)
                .map(|v| be32(v, "connlimit flags"))
                .transpose()?
                .unwrap_or(0),
        },
        _ => Expr::Raw {
            name: name.into(),
            data: data.to_vec(),
        },
    })
}

/// A message from the kernel as it came: its netlink type and the attributes after the nfgenmsg
/// header. Replies are read this way, never through netlink-packet-netfilter's typed parse,
/// which panics on a nested attribute longer than its parent (the nft_decode fuzz target's
/// first find) and would only be emitted back to bytes here anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// nfnetlink subsystem in the high byte, NFT_MSG_* in the low one.
    pub message_type: u16,
    pub attrs: Vec<u8>,
}

impl Reply {
    /// The NFT_MSG_* type, for an nf_tables message.
    fn nft_kind(&self) -> Option<u8> {
        let [subsystem, kind] = self.message_type.to_be_bytes();
        (subsystem == NFNL_SUBSYS_NFTABLES).then_some(kind)
    }
}

impl NetlinkDeserializable for Reply {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, DecodeError> {
        let attrs = payload.get(NFGENMSG_LEN..).ok_or_else(|| {
            derr(format!(
                "message of {} bytes is shorter than its nfgenmsg header",
                payload.len()
            ))
        })?;
        Ok(Reply {
            message_type: header.message_type,
            attrs: attrs.to_vec(),
        })
    }
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

/// Builds the model from the messages that describe one table: NEWTABLE, NEWSET, NEWSETELEM,
/// NEWFLOWTABLE, NEWCHAIN and NEWRULE, in any order. Objects of other tables, and messages of
/// other subsystems, are skipped.
pub fn decode(table: &str, msgs: &[Reply]) -> Result<Ruleset, DecodeError> {
    let mut r = Ruleset {
        table: String::new(),
        sets: Vec::new(),
        flowtable: None,
        chains: Vec::new(),
    };
    let mut rules: Vec<(String, Rule)> = Vec::new();
    let mut elems: Vec<(String, u32, u32)> = Vec::new();
    for m in msgs {
        let Some(kind) = m.nft_kind() else {
            continue;
        };
        let l = attrs(&m.attrs)?;
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
                size: match get(&l, 9) {
                    Some(d) => get(&attrs(d)?, 1)
                        .map(|v| be32(v, "set size"))
                        .transpose()?
                        .unwrap_or(0),
                    None => 0,
                },
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
                    // Absent on kernels before flowtable flags (5.7): none.
                    flags: get(&l, NFTA_FLOWTABLE_FLAGS)
                        .map(|v| be32(v, "flowtable flags"))
                        .transpose()?
                        .unwrap_or(0),
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
            MSG_NEWRULE => rules.push(decode_rule(&m.attrs)?),
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
    for s in r.sets.iter_mut().filter(|s| !s.is_dynamic()) {
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

/// Decodes `table` from raw dump replies: netlink messages back to back, as the kernel queues
/// them in a datagram; other messages (DONE, errors, other subsystems) are skipped. `read_back`
/// takes its messages from the socket instead: this is the way in for captured replies and for
/// the fuzz target, and runs the same parse of each message.
pub fn decode_replies(table: &str, bytes: &[u8]) -> Result<Ruleset, DecodeError> {
    let msgs: Vec<Reply> = crate::netlink::split::<Reply>(bytes)
        .map_err(|e| derr(format!("netlink: {e}")))?
        .into_iter()
        .filter_map(|m| match m.payload {
            NetlinkPayload::InnerMessage(r) => Some(r),
            _ => None,
        })
        .collect();
    decode(table, &msgs)
}

/// The comment in nftnl's rule userdata layout (see `encode`), if there is one.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::Transport;
    use crate::nft::encode::{comment_udata, encode};
    use crate::nft::policy::build;
    use crate::nft::policy::{TABLE, tests::spec};
    use netlink_packet_core::{NLM_F_MULTIPART, NetlinkMessage};

    /// Serialises every message to netlink bytes, parses them back as replies and decodes: the
    /// model must survive unchanged.
    fn round_trip(r: &Ruleset) -> Ruleset {
        let mut parsed = Vec::new();
        for (i, (m, flags, _)) in encode(r).into_iter().enumerate() {
            let bytes = Transport::frame(m, flags, i as u32 + 1);
            let back = NetlinkMessage::<Reply>::deserialize(&bytes).unwrap();
            let NetlinkPayload::InnerMessage(reply) = back.payload else {
                panic!("not an nf_tables message");
            };
            parsed.push(reply);
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
            for ((((_, ports), limit), snat), range) in crate::nft::MasqueradePorts::NAMES
                .into_iter()
                .zip([0, 5, 32768])
                .zip([0, 1, 3])
                .zip([None, Some((2000, 2003)), Some((1, 65535))])
            {
                let mut sp = spec(&private, ft, mss);
                sp.nat_port_range = range;
                sp.masquerade_ports = ports;
                sp.per_source_limit = limit;
                sp.dhcp_server = (limit == 5).then(|| std::net::Ipv4Addr::new(10, 0, 0, 2));
                sp.snat_addresses = (0..snat)
                    .map(|h| std::net::Ipv4Addr::new(198, 51, 100, h + 1))
                    .collect();
                let r = build(&sp);
                let back = round_trip(&r);
                assert_eq!(back, r, "{back}\n{r}");
                assert!(r.differences(&back).is_empty());
            }
        }
    }

    #[test]
    fn comment_userdata() {
        let u = comment_udata("fwd_drop");
        assert_eq!(u[0], 0);
        assert_eq!(usize::from(u[1]), "fwd_drop".len() + 1);
        assert_eq!(comment_from_udata(&u).as_deref(), Some("fwd_drop"));
        assert_eq!(comment_from_udata(&[1, 2, 0]), None);
    }

    /// A dump the way the kernel queues it: every message framed, back to back, then DONE.
    fn dump_bytes(r: &Ruleset) -> Vec<u8> {
        let mut out = Vec::new();
        let mut seq = 1;
        for (m, _, _) in encode(r) {
            out.extend(Transport::frame(m, NLM_F_MULTIPART, seq));
            seq += 1;
        }
        // nlmsghdr (len 20, NLMSG_DONE, NLM_F_MULTIPART, seq, port 0) and the status 0.
        for field in [20u32, 3 | u32::from(NLM_F_MULTIPART) << 16, seq, 0, 0] {
            out.extend(field.to_ne_bytes());
        }
        out
    }

    #[test]
    fn raw_replies_decode() {
        let r = build(&spec(&["10.0.0.0/16"], true, true));
        let bytes = dump_bytes(&r);
        assert_eq!(decode_replies(TABLE, &bytes).unwrap(), r);
        let err = decode_replies(TABLE, &bytes[..bytes.len() - 30]).unwrap_err();
        assert!(
            err.to_string().starts_with("netlink: bad message length"),
            "{err}"
        );
        let err = decode_replies("other", &bytes).unwrap_err();
        assert_eq!(err.to_string(), "table other not found");
    }

    /// The nft_decode fuzz target's seeds: dumps in our encoder's layout, which must decode to
    /// what they were made from. `NAT_INIT_WRITE_SEEDS=1` writes them afresh.
    #[test]
    fn fuzz_seeds_decode() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/nft_decode");
        let all = [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
        ];
        for (file, r) in [
            ("ens5.bin", build(&spec(&["10.0.0.0/16"], false, true))),
            ("flowtable.bin", {
                let mut sp = spec(&all, true, true);
                sp.per_source_limit = 32768;
                build(&sp)
            }),
            ("ports.bin", {
                let mut sp = spec(&all, true, true);
                sp.nat_port_range = Some((2000, 2003));
                sp.snat_by_source = vec![(
                    "10.0.2.0/24".parse().unwrap(),
                    std::net::Ipv4Addr::new(198, 51, 100, 5),
                )];
                build(&sp)
            }),
            ("snat.bin", {
                let mut sp = spec(&all, false, true);
                sp.snat_addresses = (1..=3)
                    .map(|h| std::net::Ipv4Addr::new(198, 51, 100, h))
                    .collect();
                build(&sp)
            }),
        ] {
            let path = dir.join(file);
            if std::env::var_os("NAT_INIT_WRITE_SEEDS").is_some() {
                std::fs::write(&path, dump_bytes(&r)).unwrap();
            }
            let seed = std::fs::read(&path).unwrap();
            assert_eq!(decode_replies(TABLE, &seed).unwrap(), r, "{file}");
        }
    }

    /// A `nat` expression other than source NAT to one address (a dnat, an address range, half
    /// a port range) is not ours: it reads back raw, so verify reports it.
    #[test]
    fn foreign_nat_stays_raw() {
        let u = |k: u16, v: u32| tlv(k, &v.to_be_bytes());
        let ours = [u(1, 0), u(2, 2), u(3, 1), u(4, 1), u(7, 0x11)].concat();
        assert_eq!(
            decode_expr("nat", &ours).unwrap(),
            Expr::Snat {
                addr: 1,
                flags: 0x11,
                proto: None,
            }
        );
        let ranged = [
            u(1, 0),
            u(2, 2),
            u(3, 1),
            u(4, 1),
            u(5, 2),
            u(6, 3),
            u(7, 0x13),
        ]
        .concat();
        assert_eq!(
            decode_expr("nat", &ranged).unwrap(),
            Expr::Snat {
                addr: 1,
                flags: 0x13,
                proto: Some((2, 3)),
            }
        );
        let masq = [u(1, 0x12), u(2, 1), u(3, 2)].concat();
        assert_eq!(
            decode_expr("masq", &masq).unwrap(),
            Expr::Masq {
                flags: 0x12,
                proto: Some((1, 2)),
            }
        );
        // One end of a range only: not a layout the kernel dumps.
        assert!(matches!(
            decode_expr("masq", &[u(1, 2), u(2, 1)].concat()).unwrap(),
            Expr::Raw { .. }
        ));
        for other in [
            [u(1, 0), u(2, 2), u(3, 1), u(4, 1), u(5, 2)].concat(),
            [u(1, 1), u(2, 2), u(3, 1), u(4, 1)].concat(),
            [u(1, 0), u(2, 2), u(3, 1), u(4, 2)].concat(),
            [u(1, 0), u(2, 10), u(3, 1), u(4, 1)].concat(),
        ] {
            assert!(
                matches!(decode_expr("nat", &other).unwrap(), Expr::Raw { .. }),
                "{other:?}"
            );
        }
        // An immediate with neither a verdict nor a value is not a load either.
        let imm = [u(1, 1), tlv(2 | 0x8000, &[])].concat();
        assert!(matches!(
            decode_expr("immediate", &imm).unwrap(),
            Expr::Raw { .. }
        ));
    }

    /// A ct expression is a load (DREG) or a set (SREG); both or neither is not ours.
    #[test]
    fn ct_load_and_set_decode() {
        let u = |k: u16, v: u32| tlv(k, &v.to_be_bytes());
        assert_eq!(
            decode_expr("ct", &[u(1, 1), u(2, 3)].concat()).unwrap(),
            Expr::Ct { key: 3, dreg: 1 }
        );
        // The kernel dumps a set's SREG before its KEY.
        assert_eq!(
            decode_expr("ct", &[u(4, 1), u(2, 3)].concat()).unwrap(),
            Expr::CtSet { key: 3, sreg: 1 }
        );
        for other in [[u(1, 1), u(4, 1), u(2, 3)].concat(), u(2, 3)] {
            assert!(
                matches!(decode_expr("ct", &other).unwrap(), Expr::Raw { .. }),
                "{other:?}"
            );
        }
        assert!(decode_expr("ct", &[u(4, 1)].concat()).is_err());
    }

    /// One netlink attribute, padded, as the kernel lays them out.
    fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = u16::try_from(4 + value.len())
            .unwrap()
            .to_ne_bytes()
            .to_vec();
        v.extend(kind.to_ne_bytes());
        v.extend(value);
        v.resize((v.len() + 3) & !3, 0);
        v
    }

    /// The nft_decode fuzz target's first find: a cmp whose data nest holds an attribute longer
    /// than the nest. netlink-packet-netfilter's typed parse of the rule indexed past the end
    /// and panicked; read as raw attributes it is an error that says where.
    #[test]
    fn nested_attribute_longer_than_its_parent_is_an_error() {
        const NESTED: u16 = 0x8000;
        let mut bad_data = tlv(1, &[10, 0, 0, 0]);
        bad_data[0] = 0; // NFTA_DATA_VALUE claims 256 bytes of the 8 there are
        bad_data[1] = 1;
        let cmp = [
            tlv(1, &1u32.to_be_bytes()),
            tlv(2, &0u32.to_be_bytes()),
            tlv(3 | NESTED, &bad_data),
        ]
        .concat();
        let expr = [tlv(1, b"cmp\0"), tlv(2 | NESTED, &cmp)].concat();
        let attrs = [
            tlv(1, b"nat_instance\0"),
            tlv(2, b"forward\0"),
            tlv(4 | NESTED, &tlv(1 | NESTED, &expr)),
        ]
        .concat();
        let mut msg = Vec::new();
        let len = u32::try_from(16 + 4 + attrs.len()).unwrap();
        msg.extend(len.to_ne_bytes());
        msg.extend((u16::from(NFNL_SUBSYS_NFTABLES) << 8 | u16::from(MSG_NEWRULE)).to_ne_bytes());
        msg.extend(NLM_F_MULTIPART.to_ne_bytes());
        msg.extend([0u8; 8]); // sequence number, port
        msg.extend([2, 0, 0, 0]); // nfgenmsg: AF_INET, version 0, resource id 0
        msg.extend(&attrs);
        let err = decode_replies(TABLE, &msg).unwrap_err();
        assert_eq!(
            err.to_string(),
            "chain forward: bad attribute length 256 at offset 0"
        );
    }
}

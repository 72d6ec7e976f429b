//! The model in nft syntax, as `nft list table` would show it: what error messages, the
//! verify report and the tests speak. Rules print their patterns (`ct state established,related`,
//! `ip saddr @private`) when they are the ones `policy` builds, and a bracketed low-level form
//! otherwise, so a foreign rule read back is still visible.

use std::fmt;
use std::net::Ipv4Addr;

use super::model::{Chain, ChainType, Expr, Flowtable, Rule, Ruleset, Set};
use super::uapi::*;

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
    // A read-back can hold anything, an end before its start included.
    let Some(size) = u64::from(y).checked_sub(u64::from(x)).map(|d| d + 1) else {
        return format!("{a}-{b}");
    };
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
        if self.is_dynamic() {
            return write!(
                f,
                "set {} {{ type {}; size {}; flags dynamic; }}",
                self.name,
                if self.key_type == TYPE_IPADDR && self.key_len == 4 {
                    "ipv4_addr".to_string()
                } else {
                    format!("{}/{}", self.key_type, self.key_len)
                },
                self.size
            );
        }
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
            "flowtable {} {{ hook {} priority {}; devices = {{ {} }}; ",
            self.name,
            hook_name(false, self.hook),
            self.priority,
            self.devices.join(", ")
        )?;
        // As nft lists them: `flags offload;`, `counter;`, and any other bits in hex.
        if self.flags & FLOWTABLE_HW_OFFLOAD != 0 {
            write!(f, "flags offload; ")?;
        }
        if self.flags & FLOWTABLE_COUNTER != 0 {
            write!(f, "counter; ")?;
        }
        let rest = self.flags & !(FLOWTABLE_HW_OFFLOAD | FLOWTABLE_COUNTER);
        if rest != 0 {
            write!(f, "flags {rest:#x}; ")?;
        }
        write!(f, "}}")
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
    pub(super) fn header(&self) -> String {
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
        if let Some((text, used)) = nat_with_ports(&exprs[i..]) {
            out.push(text);
            i += used;
            continue;
        }
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
                    offset: 12,
                    len: 4,
                    dreg,
                },
                Some(Expr::Dynset {
                    set,
                    op: DYNSET_OP_ADD,
                    sreg,
                    expr,
                }),
                _,
            ) if dreg == sreg => (
                format!(
                    "add @{set} {{ ip saddr{} }}",
                    expr.as_deref()
                        .map(|e| format!(" {}", single(e)))
                        .unwrap_or_default()
                ),
                2,
            ),
            (
                Expr::Payload {
                    base: BASE_NETWORK,
                    offset,
                    len: 4,
                    ..
                },
                Some(Expr::Bitwise { mask, xor, .. }),
                Some(Expr::Cmp {
                    op: CMP_EQ, data, ..
                }),
            ) if (*offset == 12 || *offset == 16)
                && mask.len() == 4
                && data.len() == 4
                && xor.iter().all(|b| *b == 0) =>
            {
                let bits = u32::from_be_bytes([mask[0], mask[1], mask[2], mask[3]]).count_ones();
                (
                    format!(
                        "ip {} {}/{bits}",
                        if *offset == 12 { "saddr" } else { "daddr" },
                        Ipv4Addr::new(data[0], data[1], data[2], data[3])
                    ),
                    3,
                )
            }
            (
                Expr::Payload {
                    base: BASE_NETWORK,
                    offset,
                    len: 4,
                    dreg,
                },
                Some(Expr::Cmp { sreg, op, data }),
                _,
            ) if dreg == sreg && (*offset == 12 || *offset == 16) && data.len() == 4 => (
                format!(
                    "ip {} {}{}",
                    if *offset == 12 { "saddr" } else { "daddr" },
                    op_text(*op),
                    Ipv4Addr::new(data[0], data[1], data[2], data[3])
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
                        format!(
                            "@th,{},{} {}0x{}",
                            u64::from(o) * 8,
                            d.len() * 8,
                            op_text(*op),
                            hex(d)
                        )
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
                Expr::Ct { key: CT_STATUS, .. },
                Some(Expr::Bitwise { mask, .. }),
                Some(Expr::Cmp {
                    op: CMP_NEQ, data, ..
                }),
            ) if data.iter().all(|b| *b == 0) && u32_ne(mask) == Some(CT_STATUS_SRC_NAT) => {
                ("ct status snat".into(), 3)
            }
            (
                Expr::Ct {
                    key: CT_DIRECTION,
                    dreg,
                },
                Some(Expr::Cmp { sreg, op, data }),
                _,
            ) if dreg == sreg && data.len() == 1 => (
                format!(
                    "ct direction {}{}",
                    op_text(*op),
                    match data[0] {
                        0 => "original".to_string(),
                        CT_DIR_REPLY => "reply".to_string(),
                        d => d.to_string(),
                    }
                ),
                2,
            ),
            (Expr::Ct { key: CT_MARK, dreg }, Some(Expr::Cmp { sreg, op, data }), _)
                if dreg == sreg && u32_ne(data).is_some() =>
            {
                (
                    format!(
                        "ct mark {}{}",
                        op_text(*op),
                        ct_mark_text(u32_ne(data).unwrap_or_default())
                    ),
                    2,
                )
            }
            (Expr::Immediate { dreg, data }, Some(Expr::CtSet { key: CT_MARK, sreg }), _)
                if dreg == sreg && u32_ne(data).is_some() =>
            {
                (
                    format!(
                        "ct mark set {}",
                        ct_mark_text(u32_ne(data).unwrap_or_default())
                    ),
                    2,
                )
            }
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
            (
                Expr::Numgen {
                    dreg,
                    modulus,
                    kind,
                    offset,
                },
                Some(Expr::Cmp { sreg, op, data }),
                _,
            ) if dreg == sreg && u32_ne(data).is_some() => (
                format!(
                    "{} {}{}",
                    numgen_text(*kind, *modulus, *offset),
                    op_text(*op),
                    u32_ne(data).unwrap_or_default()
                ),
                2,
            ),
            (
                Expr::Immediate { dreg, data },
                Some(Expr::Snat {
                    addr,
                    flags,
                    proto: None,
                }),
                _,
            ) if dreg == addr && data.len() == 4 && flags & NAT_RANGE_MAP_IPS != 0 => (
                format!(
                    "snat to {}{}",
                    Ipv4Addr::new(data[0], data[1], data[2], data[3]),
                    ports_text(flags & !NAT_RANGE_MAP_IPS)
                ),
                2,
            ),
            (e, _, _) => (single(e), 1),
        };
        out.push(text);
        i += used;
    }
    out
}

/// A conntrack mark in decimal, as the rule is written (`ct mark set 1`, which nft reads);
/// `nft list` (1.0.6) shows it in hex, `0x00000001`.
fn ct_mark_text(mark: u32) -> String {
    mark.to_string()
}

/// A two-byte port loaded into register `reg`, as `build` loads a range's ends.
fn port_load(e: &Expr, reg: u32) -> Option<u16> {
    match e {
        Expr::Immediate { dreg, data } if *dreg == reg => {
            Some(u16::from_be_bytes(data.as_slice().try_into().ok()?))
        }
        _ => None,
    }
}

/// `masquerade to :MIN-MAX` and `snat to ADDR:MIN-MAX` (with how they pick ports) from the
/// loads and the expression `build` emits for a port range, and how many expressions that is.
fn nat_with_ports(exprs: &[Expr]) -> Option<(String, usize)> {
    match exprs {
        [
            lo,
            hi,
            Expr::Masq {
                flags,
                proto: Some((a, b)),
            },
            ..,
        ] if flags & NAT_RANGE_PROTO_SPECIFIED != 0 => Some((
            format!(
                "masquerade to :{}-{}{}",
                port_load(lo, *a)?,
                port_load(hi, *b)?,
                ports_text(flags & !NAT_RANGE_PROTO_SPECIFIED)
            ),
            3,
        )),
        [
            Expr::Immediate { dreg, data },
            lo,
            hi,
            Expr::Snat {
                addr,
                flags,
                proto: Some((a, b)),
            },
            ..,
        ] if dreg == addr
            && flags & NAT_RANGE_MAP_IPS != 0
            && flags & NAT_RANGE_PROTO_SPECIFIED != 0 =>
        {
            let ip: [u8; 4] = data.as_slice().try_into().ok()?;
            Some((
                format!(
                    "snat to {}:{}-{}{}",
                    Ipv4Addr::from(ip),
                    port_load(lo, *a)?,
                    port_load(hi, *b)?,
                    ports_text(flags & !(NAT_RANGE_MAP_IPS | NAT_RANGE_PROTO_SPECIFIED))
                ),
                4,
            ))
        }
        _ => None,
    }
}

/// How masquerade or snat picks ports, as nft writes it after the statement.
fn ports_text(flags: u32) -> String {
    match flags {
        0 => String::new(),
        NAT_RANGE_PROTO_RANDOM => " random".into(),
        NAT_RANGE_PROTO_RANDOM_FULLY => " fully-random".into(),
        f => format!(" flags {f:#x}"),
    }
}

fn numgen_text(kind: u32, modulus: u32, offset: u32) -> String {
    format!(
        "numgen {} mod {modulus}{}",
        match kind {
            NG_RANDOM => "random".to_string(),
            0 => "inc".to_string(),
            k => format!("type{k}"),
        },
        if offset == 0 {
            String::new()
        } else {
            format!(" offset {offset}")
        }
    )
}

fn single(e: &Expr) -> String {
    match e {
        Expr::Counter { packets, bytes } => format!("counter packets {packets} bytes {bytes}"),
        Expr::Masq { flags, proto: None } => format!("masquerade{}", ports_text(*flags)),
        Expr::Numgen {
            modulus,
            kind,
            offset,
            ..
        } => numgen_text(*kind, *modulus, *offset),
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
        Expr::Notrack => "notrack".into(),
        Expr::Connlimit { count, flags } => format!(
            "ct count {}{count}",
            if flags & CONNLIMIT_F_INV != 0 {
                "over "
            } else {
                ""
            }
        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::policy::tests::spec;
    use crate::nft::policy::{MasqueradePorts, build};

    const EXPECTED_ENS5: &str = r#"table ip nat_instance {
	set private { type ipv4_addr; flags interval; elements = { 10.0.0.0/16 } }
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		iifname != "" oifname "ens5" ip saddr @private ip daddr != @private counter packets 0 bytes 0 masquerade fully-random comment "masquerade"
	}
	chain forward {
		type filter hook forward priority 0; policy drop;
		meta l4proto tcp tcp flags syn tcp option maxseg size set rt mtu comment "fwd_mss_clamp"
		ct direction reply ct mark 0 ct mark set 1 counter packets 0 bytes 0 comment "fwd_first_reply"
		ct state established,related counter packets 0 bytes 0 accept comment "fwd_established"
		ct state invalid counter packets 0 bytes 0 drop comment "fwd_invalid"
		ip saddr @private ip daddr != @private ct state new counter packets 0 bytes 0 accept comment "fwd_new_private"
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
	chain postrouting_count {
		type filter hook postrouting priority 101; policy accept;
		oifname "ens5" ct status snat counter packets 0 bytes 0 comment "masq_traffic"
	}
	chain prerouting_raw {
		type filter hook prerouting priority -300; policy accept;
		iifname "ens5" meta l4proto udp udp sport 67 udp dport 68 counter packets 0 bytes 0 notrack comment "raw_dhcp_notrack"
	}
}
"#;

    #[test]
    fn text_for_ens5() {
        let r = build(&spec(&["10.0.0.0/16"], false, true));
        assert_eq!(r.to_string(), EXPECTED_ENS5);
    }

    #[test]
    fn masquerade_port_allocation_prints_as_nft_does() {
        for (name, ports, text) in [
            (
                "random",
                MasqueradePorts::Random,
                "masquerade random comment",
            ),
            (
                "fully-random",
                MasqueradePorts::FullyRandom,
                "masquerade fully-random comment",
            ),
            (
                "preserve",
                MasqueradePorts::Preserve,
                "counter packets 0 bytes 0 masquerade comment",
            ),
        ] {
            let mut sp = spec(&["10.0.0.0/16"], false, true);
            sp.masquerade_ports = ports;
            assert!(build(&sp).to_string().contains(text), "{name}");
            assert_eq!(ports.name(), name);
        }
    }

    /// As `nft list ruleset` (1.0.6) prints what `nft` itself installs for these rules.
    #[test]
    fn snat_addresses_print_as_nft_does() {
        let mut sp = spec(&["10.0.0.0/16"], false, false);
        sp.snat_addresses = vec![
            Ipv4Addr::new(198, 51, 100, 1),
            Ipv4Addr::new(198, 51, 100, 3),
        ];
        let text = build(&sp).to_string();
        let m = "iifname != \"\" oifname \"ens5\" ip saddr @private ip daddr != @private";
        assert!(
            text.contains(&format!("\t\t{m} numgen random mod 2 0 counter packets 0 bytes 0 snat to 198.51.100.1 fully-random comment \"snat 0\"\n\t\t{m} counter packets 0 bytes 0 snat to 198.51.100.3 fully-random comment \"snat 1\"\n\t}}")),
            "{text}"
        );
        sp.masquerade_ports = MasqueradePorts::Preserve;
        assert!(
            build(&sp)
                .to_string()
                .contains("snat to 198.51.100.3 comment \"snat 1\""),
        );
        // Not the patterns built: the low-level form.
        let odd = [
            Expr::Numgen {
                dreg: REG_1,
                modulus: 4,
                kind: 0,
                offset: 2,
            },
            Expr::Snat {
                addr: REG_1,
                flags: 0,
                proto: None,
            },
        ];
        assert_eq!(
            statements(&odd),
            [
                "numgen inc mod 4 offset 2",
                "[Snat { addr: 1, flags: 0, proto: None }]"
            ]
        );
    }

    /// As `nft list ruleset` (1.0.6) prints `masquerade to :2000-2010 fully-random` and
    /// `snat to 1.2.3.4:2000-2010` that nft installed.
    #[test]
    fn nat_port_range_prints_as_nft_does() {
        let mut sp = spec(&["10.0.0.0/16"], false, false);
        sp.nat_port_range = Some((2000, 2010));
        let text = build(&sp).to_string();
        assert!(
            text.contains("counter packets 0 bytes 0 masquerade to :2000-2010 fully-random comment \"masquerade\"\n"),
            "{text}"
        );
        sp.snat_addresses = vec![Ipv4Addr::new(1, 2, 3, 4)];
        sp.masquerade_ports = MasqueradePorts::Preserve;
        let text = build(&sp).to_string();
        assert!(
            text.contains(
                "counter packets 0 bytes 0 snat to 1.2.3.4:2000-2010 comment \"snat 0\"\n"
            ),
            "{text}"
        );
        // A range whose loads are not where the expression says: the low-level form.
        let odd = [
            Expr::Immediate {
                dreg: REG_1,
                data: vec![0x07, 0xd0],
            },
            Expr::Immediate {
                dreg: REG_1,
                data: vec![0x07, 0xda],
            },
            Expr::Masq {
                flags: NAT_RANGE_PROTO_SPECIFIED,
                proto: Some((REG_1, REG_2)),
            },
        ];
        assert_eq!(statements(&odd).len(), 3, "{:?}", statements(&odd));
    }

    #[test]
    fn dhcp_from_the_lease_server_only() {
        let mut sp = spec(&["10.0.0.0/16"], false, false);
        sp.dhcp_server = Some(Ipv4Addr::new(10, 0, 1, 1));
        let text = build(&sp).to_string();
        assert!(
            text.contains("\t\tip saddr 10.0.1.1 meta l4proto udp udp sport 67 udp dport 68 counter packets 0 bytes 0 accept comment \"in_dhcp\"\n"),
            "{text}"
        );
        assert!(
            text.contains("notrack comment \"raw_dhcp_notrack\""),
            "{text}"
        );
    }

    #[test]
    fn per_source_limit_prints_as_nft_does() {
        let mut sp = spec(&["10.0.0.0/16"], false, false);
        sp.per_source_limit = 20;
        let text = build(&sp).to_string();
        assert!(
            text.contains("\tset persrc { type ipv4_addr; size 65535; flags dynamic; }\n"),
            "{text}"
        );
        assert!(
            text.contains("\t\tip saddr @private ip daddr != @private ct state new add @persrc { ip saddr ct count over 20 } counter packets 0 bytes 0 drop comment \"fwd_per_source_limit\"\n\t\tip saddr @private ip daddr != @private ct state new counter"),
            "{text}"
        );
        sp.per_source_limit = 0;
        assert!(!build(&sp).to_string().contains("persrc"));
    }

    /// A read-back holds whatever the kernel (or the fuzz target's bytes) said, so printing must
    /// not overflow: the nft_decode fuzz target found the far payload offset; the backwards
    /// range (two set elements starting at one key) is the same kind of input.
    #[test]
    fn read_back_extremes_print() {
        let far = [
            Expr::Payload {
                base: BASE_TRANSPORT,
                offset: u32::MAX,
                len: 1,
                dreg: REG_1,
            },
            Expr::Cmp {
                sreg: REG_1,
                op: CMP_EQ,
                data: vec![1],
            },
        ];
        assert_eq!(statements(&far), ["@th,34359738360,8 0x01"]);
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 4));
        assert_eq!(range_text(a, b), "10.0.0.5-10.0.0.4");
        assert_eq!(
            range_text(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST),
            "0.0.0.0/0"
        );
        assert_eq!(range_text(a, a), "10.0.0.5");
    }
}

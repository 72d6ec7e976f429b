//! The table as data: what the appliance intends and what the kernel reports back are both a
//! [`Ruleset`], so they compare with `==` and [`Ruleset::differences`] says what drifted. The
//! expressions keep the kernel's own numbers (see `uapi`), nothing is interpreted here.

use std::net::Ipv4Addr;

use super::uapi::{HOOK_FORWARD, NF_ACCEPT, NF_DROP};

/// A whole table, as intended or as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub table: String,
    pub sets: Vec<Set>,
    pub flowtable: Option<Flowtable>,
    pub chains: Vec<Chain>,
}

/// An IPv4 address set: with the interval flag, elements are inclusive ranges, sorted and
/// merged; a dynamic one (filled by rules) has none here, whatever the kernel holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub flags: u32,
    pub key_type: u32,
    pub key_len: u32,
    /// Most elements (NFTA_SET_DESC_SIZE); 0 when not given.
    pub size: u32,
    pub ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
}

impl Set {
    /// Filled by rules (`flags dynamic`): its elements are the kernel's business.
    pub fn is_dynamic(&self) -> bool {
        self.flags & super::uapi::SET_EVAL != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flowtable {
    pub name: String,
    pub hook: u32,
    pub priority: i32,
    pub devices: Vec<String>,
    /// NFT_FLOWTABLE_* flags: the appliance's has `counter`, so conntrack keeps counting the
    /// bytes and packets of offloaded flows (the metrics' source for them).
    pub flags: u32,
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
    /// Writes register `sreg` into conntrack's `key` (`ct mark set ...`).
    CtSet {
        key: u32,
        sreg: u32,
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
    /// NF_NAT_RANGE_* flags: how the source port is chosen (see `MasqueradePorts`), with
    /// PROTO_SPECIFIED when `proto` names the registers holding the port range's ends (min, max;
    /// NFTA_MASQ_REG_PROTO_MIN and _MAX).
    Masq {
        flags: u32,
        proto: Option<(u32, u32)>,
    },
    Verdict(i32),
    /// A constant loaded into a data register (`immediate` other than a verdict).
    Immediate {
        dreg: u32,
        data: Vec<u8>,
    },
    /// A number in `offset..offset + modulus` into `dreg`, random or counting up (`numgen`).
    Numgen {
        dreg: u32,
        modulus: u32,
        kind: u32,
        offset: u32,
    },
    /// Source NAT to the IPv4 address in register `addr` (the `nat` expression, type snat,
    /// family ip, one address). `flags` are NF_NAT_RANGE_* as the kernel holds them:
    /// MAP_IPS, which it adds for an address register, and the port flags; PROTO_SPECIFIED
    /// when `proto` names the registers holding the port range's ends (min, max;
    /// NFTA_NAT_REG_PROTO_MIN and _MAX).
    Snat {
        addr: u32,
        flags: u32,
        proto: Option<(u32, u32)>,
    },
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
    /// Adds the key in `sreg` to `set`, running `expr` for its element (`add @set { ... }`).
    Dynset {
        set: String,
        op: u32,
        sreg: u32,
        expr: Option<Box<Expr>>,
    },
    /// The packet gets no conntrack entry.
    Notrack,
    /// Connections tracked under the element (`ct count [over] N`).
    Connlimit {
        count: u32,
        flags: u32,
    },
    /// An expression this module does not model (only ever from a read-back).
    Raw {
        name: String,
        data: Vec<u8>,
    },
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

/// Packet and byte counts of the named rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Accepted in the forward chain (established and related, new private flows).
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    /// Dropped by rules in forward and input (invalid and the final drops).
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// New connections masqueraded or source-NATed to one of several addresses (NAT rules see
    /// only a flow's first packet).
    pub masqueraded_flows: u64,
    /// Bytes of masqueraded flows leaving the interface, both directions, counted after source
    /// NAT. Like the forward counters, this misses packets the flowtable offloaded.
    pub masqueraded_bytes: u64,
    /// (chain, rule name, packets, bytes) for every rule with a counter.
    pub rules: Vec<(String, String, u64, u64)>,
}

impl Counters {
    /// Sums the counters of a table read back from the kernel, by what each rule does. The sums
    /// saturate: the values come from outside.
    pub fn of(r: &Ruleset) -> Counters {
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
                    c.forwarded_packets = c.forwarded_packets.saturating_add(p);
                    c.forwarded_bytes = c.forwarded_bytes.saturating_add(b);
                }
                if verdict == Some(NF_DROP) {
                    c.dropped_packets = c.dropped_packets.saturating_add(p);
                    c.dropped_bytes = c.dropped_bytes.saturating_add(b);
                }
                if rule
                    .exprs
                    .iter()
                    .any(|e| matches!(e, Expr::Masq { .. } | Expr::Snat { .. }))
                {
                    c.masqueraded_flows = c.masqueraded_flows.saturating_add(p);
                }
                if rule.name == super::policy::RULE_MASQ_TRAFFIC {
                    c.masqueraded_bytes = c.masqueraded_bytes.saturating_add(b);
                }
                c.rules.push((ch.name.clone(), rule.name.clone(), p, b));
            }
        }
        c
    }

    pub fn rule(&self, name: &str) -> Option<(u64, u64)> {
        self.rules
            .iter()
            .find(|(_, n, _, _)| n == name)
            .map(|(_, _, p, b)| (*p, *b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::policy::build;
    use crate::nft::policy::tests::spec;

    #[test]
    fn differences_are_reported() {
        let want = build(&spec(&["10.0.0.0/16"], false, false));
        let mut got = want.clone();
        got.chains[1].rules.pop();
        got.chains[2].policy = NF_ACCEPT;
        got.sets[0].ranges.clear();
        if let Expr::Counter { packets, .. } = &mut got.chains[0].rules[0].exprs[8] {
            *packets = 99;
        } else {
            panic!("counter expected at index 8");
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

    /// A table whose forward chain lacks the first-reply rule (an older table) differs.
    #[test]
    fn a_missing_first_reply_rule_differs() {
        let want = build(&spec(&["10.0.0.0/16"], true, false));
        let mut got = want.clone();
        let fwd = got.chains.iter_mut().find(|c| c.name == "forward").unwrap();
        fwd.rules
            .retain(|r| r.name != crate::nft::RULE_FWD_FIRST_REPLY);
        let d = want.differences(&got);
        assert!(
            d.iter().any(|x| x.starts_with("chain forward rule 1: want `ct direction reply ct mark 0 ct mark set 1 counter packets 0 bytes 0 comment \"fwd_first_reply\"`")),
            "{d:#?}"
        );
    }

    /// A flowtable without the counter flag leaves offloaded traffic uncounted: verify says so.
    #[test]
    fn a_flowtable_without_its_counter_flag_differs() {
        let want = build(&spec(&["10.0.0.0/16"], true, false));
        let mut got = want.clone();
        if let Some(ft) = &mut got.flowtable {
            ft.flags = 0;
        }
        let d = want.differences(&got);
        assert_eq!(
            d,
            [
                "flowtable: want flowtable ft { hook ingress priority 0; devices = { ens5 }; counter; }, got flowtable ft { hook ingress priority 0; devices = { ens5 }; }"
            ]
        );
    }

    #[test]
    fn counters_are_summed_by_what_the_rule_does() {
        let mut r = build(&spec(&["10.0.0.0/16"], false, false));
        let mut n = 0;
        for ch in &mut r.chains {
            for rule in &mut ch.rules {
                for e in &mut rule.exprs {
                    if let Expr::Counter { packets, bytes } = e {
                        n += 1;
                        (*packets, *bytes) = (n, 100 * n);
                    }
                }
            }
        }
        let c = Counters::of(&r);
        // postrouting: masquerade 1; forward: first reply 2 (no verdict: neither forwarded nor
        // dropped), established 3, invalid 4 (drop), new 5, drop 6; input: over limit 7
        // (drop), established 8, invalid 9 (drop), echo 10, dhcp 11, drop 12. The loopback
        // accept has no counter.
        assert_eq!(c.masqueraded_flows, 1);
        assert_eq!(c.rule(crate::nft::RULE_FWD_FIRST_REPLY), Some((2, 200)));
        assert_eq!((c.forwarded_packets, c.forwarded_bytes), (3 + 5, 800));
        assert_eq!(c.dropped_packets, 4 + 6 + 7 + 9 + 12);
        assert_eq!(c.dropped_bytes, 100 * c.dropped_packets);
        // postrouting_count: masqueraded traffic 13; prerouting_raw: DHCP notrack 14 (neither).
        assert_eq!(c.masqueraded_bytes, 1300);
        assert_eq!(c.rules.len(), 14);
        assert_eq!(c.rule(crate::nft::RULE_IN_DHCP), Some((11, 1100)));
        assert_eq!(c.rule(crate::nft::RULE_IN_LO), None);
    }

    /// With several egress addresses, masqueraded flows are the sum over the snat rules.
    #[test]
    fn masqueraded_flows_sum_the_snat_rules() {
        let mut sp = spec(&["10.0.0.0/16"], false, false);
        sp.snat_addresses = (1..=3).map(|h| Ipv4Addr::new(198, 51, 100, h)).collect();
        let mut r = build(&sp);
        for (i, rule) in r.chains[0].rules.iter_mut().enumerate() {
            for e in &mut rule.exprs {
                if let Expr::Counter { packets, .. } = e {
                    *packets = 10u64.pow(i as u32);
                }
            }
        }
        let c = Counters::of(&r);
        assert_eq!(c.masqueraded_flows, 111);
        assert_eq!(c.rule("snat 2"), Some((100, 0)));
    }

    /// Counters read back can hold anything (the nft_decode fuzz target feeds them), and their
    /// sums must not overflow.
    #[test]
    fn counter_sums_saturate() {
        let mut r = build(&spec(&["10.0.0.0/16"], false, false));
        for ch in &mut r.chains {
            for rule in &mut ch.rules {
                for e in &mut rule.exprs {
                    if let Expr::Counter { packets, bytes } = e {
                        (*packets, *bytes) = (u64::MAX, u64::MAX);
                    }
                }
            }
        }
        let c = Counters::of(&r);
        assert_eq!((c.forwarded_packets, c.dropped_bytes), (u64::MAX, u64::MAX));
    }
}

//! IPv4 prefixes (`10.0.0.0/16`): the one address-range type shared by the config, IMDS, the
//! DHCP lease, the routes and the nftables ruleset, and [`merge`], which turns a list of them into
//! the disjoint ranges an nftables interval set takes.
//!
//! Ours rather than ipnet's `Ipv4Net` (2.12), because of the parts that matter here:
//! - parsing: ipnet accepts host bits (`10.0.0.1/16` is a valid `Ipv4Net`) and leading-zero
//!   octets (`010.0.0.0/8` reads as 10.0.0.0/8, where std, and so we, refuse the octal-looking
//!   form), and every failure is the same `invalid IP address syntax`. A configuration or IMDS
//!   error must name the bad value and say what is wrong with it ([`CidrError`], with a
//!   suggestion for host bits), so the parser would stay ours anyway;
//! - merging: `Ipv4Net::aggregate` returns the fewest CIDRs (10/8, 11/8 and 12/8 become 10/7 and
//!   12/8), while an interval set wants the fewest ranges (10.0.0.0-12.255.255.255), so the merge
//!   would stay ours too;
//! - containment, netmask and last address are all ipnet would take over: three lines of masks.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: an address whose host bits are zero, and a prefix length of 0..=32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not a CIDR block: expected a.b.c.d/len")]
    Syntax(String),
    #[error("`{0}`: prefix length must be 0 to 32")]
    Length(String),
    #[error("`{input}` has host bits set: did you mean {suggest}?")]
    HostBits { input: String, suggest: String },
}

impl Ipv4Cidr {
    /// A network from an address and a length; fails when host bits are set.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, CidrError> {
        let text = format!("{addr}/{len}");
        if len > 32 {
            return Err(CidrError::Length(text));
        }
        let net = Ipv4Addr::from(u32::from(addr) & mask(len));
        if net != addr {
            return Err(CidrError::HostBits {
                input: text,
                suggest: format!("{net}/{len}"),
            });
        }
        Ok(Self { addr, len })
    }

    /// The network that contains `addr` with prefix `len` (host bits cleared).
    pub fn containing(addr: Ipv4Addr, len: u8) -> Self {
        let len = len.min(32);
        Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask(len)),
            len,
        }
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.len))
    }

    /// The last address of the block.
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.len))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == u32::from(self.addr)
    }

    /// The RFC 1918 ranges plus RFC 6598 shared space: the private ranges used without IMDS.
    pub fn private_defaults() -> Vec<Self> {
        [
            (Ipv4Addr::new(10, 0, 0, 0), 8),
            (Ipv4Addr::new(172, 16, 0, 0), 12),
            (Ipv4Addr::new(192, 168, 0, 0), 16),
            (Ipv4Addr::new(100, 64, 0, 0), 10),
        ]
        .into_iter()
        .map(|(addr, len)| Self { addr, len })
        .collect()
    }
}

/// The disjoint inclusive ranges `cidrs` cover, sorted, with overlapping and adjacent blocks
/// joined: `10.0.0.0/8`, `11.0.0.0/8`, `10.1.0.0/16` become `10.0.0.0-11.255.255.255`.
pub fn merge(cidrs: &[Ipv4Cidr]) -> Vec<(Ipv4Addr, Ipv4Addr)> {
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

/// The special-use blocks a private range must not touch, with why: sources or destinations
/// there are never a VPC's hosts, and some (link-local: IMDS, the VPC DNS) must never be NATed.
pub const SPECIAL_USE: [(Ipv4Addr, u8, &str); 5] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\""),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local (IMDS, the VPC DNS)",
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved and broadcast"),
];

/// Why a set of private ranges cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangesError {
    #[error(
        "cover the whole address space once merged: that would make an open relay and masquerade nothing; list the VPC ranges instead"
    )]
    Everything,
    #[error("{range} overlaps {special} ({why}), which is never a private source")]
    SpecialUse {
        range: Ipv4Cidr,
        special: Ipv4Cidr,
        why: &'static str,
    },
}

impl RangesError {
    /// The offending range, when one range is at fault (not the union as a whole).
    pub fn range(&self) -> Option<Ipv4Cidr> {
        match self {
            RangesError::Everything => None,
            RangesError::SpecialUse { range, .. } => Some(*range),
        }
    }
}

/// Checks ranges meant as the private set: their merged union must not be the whole space
/// (`0.0.0.0/1` + `128.0.0.0/1` is), and no range may overlap a [`SPECIAL_USE`] block.
pub fn check_private(cidrs: &[Ipv4Cidr]) -> Result<(), RangesError> {
    if merge(cidrs) == [(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST)] {
        return Err(RangesError::Everything);
    }
    for c in cidrs {
        for (addr, len, why) in SPECIAL_USE {
            let special = Ipv4Cidr { addr, len };
            // Two prefixes overlap exactly when one contains the other's first address.
            if c.contains(special.addr) || special.contains(c.addr) {
                return Err(RangesError::SpecialUse {
                    range: *c,
                    special,
                    why,
                });
            }
        }
    }
    Ok(())
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let (a, l) = t
            .split_once('/')
            .ok_or_else(|| CidrError::Syntax(s.to_string()))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| CidrError::Syntax(s.to_string()))?;
        if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) || l.len() > 2 {
            return Err(CidrError::Syntax(s.to_string()));
        }
        let len: u8 = l.parse().map_err(|_| CidrError::Syntax(s.to_string()))?;
        Self::new(addr, len)
    }
}

impl serde::Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let c: Ipv4Cidr = "10.0.0.0/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/16");
        assert!(c.contains(Ipv4Addr::new(10, 0, 255, 1)));
        assert!(!c.contains(Ipv4Addr::new(10, 1, 0, 1)));
        assert_eq!(c.last(), Ipv4Addr::new(10, 0, 255, 255));
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 0, 0));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            "10.0.0.1/16".parse::<Ipv4Cidr>(),
            Err(CidrError::HostBits { .. })
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Ipv4Cidr>(),
            Err(CidrError::Length(_))
        ));
        for bad in [
            "10.0.0.0",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/008",
            "010.0.0.0/8",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn zero_and_full_lengths() {
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(203, 0, 113, 9)));
        let one: Ipv4Cidr = "192.0.2.7/32".parse().unwrap();
        assert!(one.contains(Ipv4Addr::new(192, 0, 2, 7)));
        assert!(!one.contains(Ipv4Addr::new(192, 0, 2, 8)));
        assert_eq!(
            Ipv4Cidr::containing(Ipv4Addr::new(10, 0, 0, 77), 24).to_string(),
            "10.0.0.0/24"
        );
    }

    #[test]
    fn merge_joins_overlapping_and_adjacent_blocks() {
        let c = |s: &str| s.parse::<Ipv4Cidr>().unwrap();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            merge(&[
                c("11.0.0.0/8"),
                c("10.1.0.0/16"),
                c("10.0.0.0/8"),
                c("192.168.0.0/16")
            ]),
            [
                (ip("10.0.0.0"), ip("11.255.255.255")),
                (ip("192.168.0.0"), ip("192.168.255.255"))
            ]
        );
        assert_eq!(
            merge(&[c("255.255.255.255/32"), c("0.0.0.0/1"), c("128.0.0.0/1")]),
            [(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST)]
        );
        assert_eq!(merge(&[c("10.0.0.0/24"), c("10.0.2.0/24")]).len(), 2);
        assert!(merge(&[]).is_empty());
    }

    #[test]
    fn private_ranges_are_checked_as_a_merged_union() {
        let c = |v: &[&str]| {
            v.iter()
                .map(|s| s.parse().unwrap())
                .collect::<Vec<Ipv4Cidr>>()
        };
        assert_eq!(
            check_private(&c(&["0.0.0.0/1", "128.0.0.0/1"])),
            Err(RangesError::Everything)
        );
        assert_eq!(
            check_private(&c(&["0.0.0.0/0"])),
            Err(RangesError::Everything)
        );
        assert!(check_private(&Ipv4Cidr::private_defaults()).is_ok());
        assert!(check_private(&c(&["10.0.0.0/16", "198.18.0.0/15", "1.0.0.0/8"])).is_ok());
        for (bad, special) in [
            ("0.0.0.0/8", "0.0.0.0/8"),
            ("127.0.0.1/32", "127.0.0.0/8"),
            ("169.254.169.254/32", "169.254.0.0/16"),
            ("168.0.0.0/6", "169.254.0.0/16"),
            ("224.0.0.0/3", "224.0.0.0/4"),
            ("255.255.255.255/32", "240.0.0.0/4"),
        ] {
            let e = check_private(&c(&["10.0.0.0/8", bad])).unwrap_err();
            assert_eq!(e.range(), Some(bad.parse().unwrap()), "{bad}");
            assert!(e.to_string().contains(special), "{bad}: {e}");
        }
        assert!(check_private(&c(&["126.0.0.0/8", "128.0.0.0/8", "223.0.0.0/8"])).is_ok());
    }

    #[test]
    fn errors_name_the_value() {
        let e = |s: &str| s.parse::<Ipv4Cidr>().unwrap_err().to_string();
        assert_eq!(
            e("10.0.0.1/16"),
            "`10.0.0.1/16` has host bits set: did you mean 10.0.0.0/16?"
        );
        assert_eq!(
            e("10.0.0.0/33"),
            "`10.0.0.0/33`: prefix length must be 0 to 32"
        );
        assert_eq!(
            e("ten/8"),
            "`ten/8` is not a CIDR block: expected a.b.c.d/len"
        );
    }
}

//! IPv4 prefixes (`10.0.0.0/16`): the one address-range type shared by the config, the DHCP lease
//! and the nftables ruleset. Written here because it is a dozen lines and the crates that offer it
//! (ipnet, cidr) would bring more than we use.

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
}

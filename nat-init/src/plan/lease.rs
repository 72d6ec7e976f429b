//! What a DHCP lease becomes on the interface: its MTU, the address with the lease's lifetimes,
//! the routes, and the stale addresses to remove.

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use crate::cidr::Ipv4Cidr;
use crate::dhcp::Lease;
use crate::netlink::RouteInfo;

/// Interface MTU when DHCP gives none (option 26 absent).
pub const DEFAULT_MTU: u32 = 1500;
/// MTUs accepted from option 26: IPv4's minimum datagram every host must take (RFC 791; RFC
/// 2132 allows 68, too small to carry much) up to the largest jumbo frame NICs take (ENA
/// 9216, VPC 9001). Anything else is a broken or hostile server.
pub const MTU_RANGE: RangeInclusive<u16> = 576..=9216;
/// Prefix lengths accepted from option 1: a VPC subnet is /16 to /28; wider than /8 would put
/// much of the address space on-link, /31 and /32 leave no room for a router beside us.
pub const PREFIX_RANGE: RangeInclusive<u8> = 8..=30;

/// One route to set on the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: Ipv4Cidr,
    /// `None`: on-link.
    pub gateway: Option<Ipv4Addr>,
    pub src: Option<Ipv4Addr>,
    /// Route MTU metric; `None` follows the interface MTU.
    pub mtu: Option<u32>,
}

/// What a lease becomes on the interface, in the order to do it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasePlan {
    /// Interface MTU: option 26, else 1500.
    pub mtu: u32,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    /// Address lifetimes: the lease's time left, so an expired lease cannot linger even if
    /// nat-init is not running. `u32::MAX` is the kernel's "forever".
    pub valid_lft_s: u32,
    pub preferred_lft_s: u32,
    /// Other IPv4 addresses on the interface (an earlier lease): removed.
    pub remove: Vec<(Ipv4Addr, u8)>,
    /// Routes to add or replace. The subnet route is the kernel's own prefix route, which has no
    /// MTU metric and so keeps the interface MTU; only the router's host route (when the router
    /// is outside the subnet) and the default route are listed.
    pub routes: Vec<RouteSpec>,
    pub gateway: Ipv4Addr,
    /// What the lease got wrong and what was kept instead, one error line each.
    pub problems: Vec<LeaseProblem>,
    /// Secondary private addresses of the ENI that carry Elastic IPs (the AWS side assigned
    /// them): on the interface with the lease's prefix, for as long as the lease.
    pub secondary: Vec<Ipv4Addr>,
}

/// What the interface holds now, for the values a bad lease cannot set.
#[derive(Debug, Clone, Copy)]
pub struct Current<'a> {
    /// The interface's MTU now.
    pub link_mtu: u32,
    /// The plan in force (from the earlier lease), if any.
    pub previous: Option<&'a LeasePlan>,
}

/// Which lease a problem is about, as its lines name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseName {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub server: Ipv4Addr,
}

impl LeaseName {
    fn of(l: &Lease) -> LeaseName {
        LeaseName {
            addr: l.addr,
            prefix_len: l.prefix_len,
            server: l.server,
        }
    }
}

impl fmt::Display for LeaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lease {}/{} from {}",
            self.addr, self.prefix_len, self.server
        )
    }
}

/// Why a router (option 3) cannot be ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRouter {
    Missing,
    Outside(Ipv4Cidr),
    OwnAddress,
    NetworkAddress(Ipv4Cidr),
    BroadcastAddress(Ipv4Cidr),
}

impl fmt::Display for BadRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRouter::Missing => Ok(()),
            BadRouter::Outside(s) => write!(f, "outside {s}"),
            BadRouter::OwnAddress => f.write_str("our own address"),
            BadRouter::NetworkAddress(s) => write!(f, "the network address of {s}"),
            BadRouter::BroadcastAddress(s) => write!(f, "the broadcast address of {s}"),
        }
    }
}

/// How a router's fault reads in a line: "router X (option 3) is why", or "no router".
struct RouterFault(Option<Ipv4Addr>, BadRouter);

impl fmt::Display for RouterFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouterFault(Some(r), why) if *why != BadRouter::Missing => {
                write!(f, "router {r} (option 3) is {why}")
            }
            _ => f.write_str("no router (option 3)"),
        }
    }
}

/// A value of a lease that was not used, and what was used instead: one error line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseProblem {
    #[error(
        "{lease}: MTU {mtu} (option 26) is outside {}..={}; keeping the interface MTU {kept}",
        MTU_RANGE.start(),
        MTU_RANGE.end()
    )]
    Mtu {
        lease: LeaseName,
        mtu: u16,
        kept: u32,
    },
    #[error(
        "{lease}: prefix /{} (option 1) is outside /{}../{}; keeping /{kept}",
        lease.prefix_len,
        PREFIX_RANGE.start(),
        PREFIX_RANGE.end()
    )]
    Prefix { lease: LeaseName, kept: u8 },
    #[error("{lease}: {}; keeping the router {kept}", RouterFault(*router, *why))]
    Router {
        lease: LeaseName,
        router: Option<Ipv4Addr>,
        why: BadRouter,
        kept: Ipv4Addr,
    },
    #[error(
        "{lease}: lease time {granted_s} s (option 51) is under {held_s} s; holding it for \
         {held_s} s"
    )]
    LeaseTime {
        lease: LeaseName,
        granted_s: u32,
        held_s: u32,
    },
}

impl LeasePlan {
    /// The plan when the interface refused the lease's MTU and keeps `link_mtu`: no route may
    /// claim more than the interface carries.
    pub fn with_link_mtu(mut self, link_mtu: u32) -> LeasePlan {
        self.mtu = link_mtu;
        for r in &mut self.routes {
            r.mtu = r.mtu.map(|m| m.min(link_mtu));
        }
        self
    }

    /// Whether `iface` still has the planned address, given its IPv4 addresses now.
    pub fn check_address(&self, iface: &str, addrs: &[(Ipv4Addr, u8)]) -> Result<(), String> {
        let missing: Vec<String> = std::iter::once(self.addr)
            .chain(self.secondary.iter().copied())
            .filter(|a| !addrs.contains(&(*a, self.prefix_len)))
            .map(|a| format!("{a}/{}", self.prefix_len))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "address {} is missing from {iface}",
                missing.join(", ")
            ))
        }
    }

    /// The plan with the ENI's secondary addresses kept (not removed as stale) and put in
    /// place: those outside the lease's subnet (or the lease's own) are left out.
    pub fn with_secondary(mut self, secondary: &[Ipv4Addr]) -> LeasePlan {
        let subnet = Ipv4Cidr::containing(self.addr, self.prefix_len);
        self.secondary = secondary
            .iter()
            .copied()
            .filter(|a| *a != self.addr && subnet.contains(*a))
            .collect();
        self.secondary.sort_unstable();
        self.secondary.dedup();
        let keep = &self.secondary;
        let len = self.prefix_len;
        self.remove
            .retain(|(a, l)| !(keep.contains(a) && *l == len));
        self
    }

    /// Whether the planned default route (gateway and MTU) is still in the main table.
    pub fn check_default_route(&self, routes: &[RouteInfo]) -> Result<(), String> {
        let want = self.routes.last().and_then(|r| r.mtu);
        let ok = routes
            .iter()
            .any(|r| r.dst.prefix_len() == 0 && r.gateway == Some(self.gateway) && r.mtu == want);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "default route via {} with mtu {} is missing",
                self.gateway,
                want.unwrap_or(0)
            ))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("lease {addr}/{prefix_len} from {server} has no router (option 3): no way out")]
    NoRouter {
        addr: Ipv4Addr,
        prefix_len: u8,
        server: Ipv4Addr,
    },
    #[error(
        "{lease}: prefix /{} (option 1) is outside /{}../{} and there is no earlier prefix \
         for {} to keep; lease not applied",
        lease.prefix_len,
        PREFIX_RANGE.start(),
        PREFIX_RANGE.end(),
        lease.addr
    )]
    BadPrefix { lease: LeaseName },
    #[error(
        "{lease}: router {router} (option 3) is {why}, and there is no earlier router to \
         keep; no default route, lease not applied"
    )]
    BadRouter {
        lease: LeaseName,
        router: Ipv4Addr,
        why: BadRouter,
    },
    #[error("lease {addr}/{prefix_len} has expired")]
    Expired { addr: Ipv4Addr, prefix_len: u8 },
}

/// The interface MTU a lease asks for (option 26 as sent, else 1500), sane or not.
pub fn lease_mtu(lease: &Lease) -> u32 {
    lease.mtu.map_or(DEFAULT_MTU, u32::from)
}

/// Why `router` cannot be the gateway of `addr` in `subnet`, if it cannot.
fn router_fault(router: Ipv4Addr, addr: Ipv4Addr, subnet: Ipv4Cidr) -> Option<BadRouter> {
    let network = subnet.addr();
    let broadcast = subnet.last();
    if !subnet.contains(router) {
        Some(BadRouter::Outside(subnet))
    } else if router == addr {
        Some(BadRouter::OwnAddress)
    } else if router == network {
        Some(BadRouter::NetworkAddress(subnet))
    } else if router == broadcast {
        Some(BadRouter::BroadcastAddress(subnet))
    } else {
        None
    }
}

/// Plans the interface configuration for `lease` at `now_ms`, given the IPv4 addresses the
/// interface has now. The default route gets `default_route_mtu` (the internet path), never
/// more than the interface MTU. A value outside its bounds is not used: `current` says what is
/// kept instead (the interface's MTU, the previous plan's prefix and router), and the plan's
/// `problems` say so; without anything to keep, a bad prefix or router refuses the lease.
pub fn plan_lease(
    lease: &Lease,
    now_ms: u64,
    existing: &[(Ipv4Addr, u8)],
    default_route_mtu: u16,
    current: Current<'_>,
) -> Result<LeasePlan, LeaseError> {
    let name = LeaseName::of(lease);
    let mut problems = Vec::new();
    let left = lease.left_s(now_ms);
    if left == 0 {
        return Err(LeaseError::Expired {
            addr: lease.addr,
            prefix_len: lease.prefix_len,
        });
    }
    // The previous plan lends its prefix only to the same address.
    let same_addr = current.previous.filter(|p| p.addr == lease.addr);
    let prefix_len = if PREFIX_RANGE.contains(&lease.prefix_len) {
        lease.prefix_len
    } else if let Some(p) = same_addr {
        problems.push(LeaseProblem::Prefix {
            lease: name,
            kept: p.prefix_len,
        });
        p.prefix_len
    } else {
        return Err(LeaseError::BadPrefix { lease: name });
    };
    let subnet = Ipv4Cidr::containing(lease.addr, prefix_len);
    let fault = match lease.router {
        Some(r) => router_fault(r, lease.addr, subnet),
        None => Some(BadRouter::Missing),
    };
    let gateway = match (lease.router, fault) {
        (Some(r), None) => r,
        (router, why) => {
            let why = why.unwrap_or(BadRouter::Missing);
            let kept = current
                .previous
                .map(|p| p.gateway)
                .filter(|g| router_fault(*g, lease.addr, subnet).is_none());
            match (kept, router) {
                (Some(kept), _) => {
                    problems.push(LeaseProblem::Router {
                        lease: name,
                        router,
                        why,
                        kept,
                    });
                    kept
                }
                (None, Some(router)) => {
                    return Err(LeaseError::BadRouter {
                        lease: name,
                        router,
                        why,
                    });
                }
                (None, None) => {
                    return Err(LeaseError::NoRouter {
                        addr: lease.addr,
                        prefix_len: lease.prefix_len,
                        server: lease.server,
                    });
                }
            }
        }
    };
    let mtu = match lease.mtu {
        None => DEFAULT_MTU,
        Some(m) if MTU_RANGE.contains(&m) => u32::from(m),
        Some(m) => {
            problems.push(LeaseProblem::Mtu {
                lease: name,
                mtu: m,
                kept: current.link_mtu,
            });
            current.link_mtu
        }
    };
    if lease.granted_lease_s < lease.lease_s {
        problems.push(LeaseProblem::LeaseTime {
            lease: name,
            granted_s: lease.granted_lease_s,
            held_s: lease.lease_s,
        });
    }
    let lifetime = u32::try_from(left).unwrap_or(u32::MAX);
    // The router is inside the subnet (checked above): the kernel's prefix route reaches it.
    let routes = vec![RouteSpec {
        dst: Ipv4Cidr::containing(Ipv4Addr::UNSPECIFIED, 0),
        gateway: Some(gateway),
        src: Some(lease.addr),
        mtu: Some(u32::from(default_route_mtu).min(mtu)),
    }];
    let mut remove: Vec<(Ipv4Addr, u8)> = existing
        .iter()
        .copied()
        .filter(|(a, l)| !(*a == lease.addr && *l == prefix_len))
        .collect();
    remove.sort_unstable();
    remove.dedup();
    Ok(LeasePlan {
        mtu,
        addr: lease.addr,
        prefix_len,
        valid_lft_s: lifetime,
        preferred_lft_s: lifetime,
        remove,
        routes,
        gateway,
        problems,
        secondary: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first lease on an interface at 1500.
    const FRESH: Current<'static> = Current {
        link_mtu: 1500,
        previous: None,
    };

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    fn lease() -> Lease {
        Lease {
            addr: Ipv4Addr::new(10, 0, 1, 23),
            prefix_len: 24,
            router: Some(Ipv4Addr::new(10, 0, 1, 1)),
            mtu: Some(9001),
            dns: vec![Ipv4Addr::new(10, 0, 0, 2)],
            server: Ipv4Addr::new(10, 0, 1, 1),
            lease_s: 3600,
            t1_s: 1800,
            t2_s: 3150,
            start_ms: 10_000,
            granted_lease_s: 3600,
        }
    }

    #[test]
    fn lease_plan_for_a_vpc_lease() {
        let p = plan_lease(&lease(), 10_000, &[], 1500, FRESH).unwrap();
        assert_eq!(p.mtu, 9001);
        assert_eq!((p.addr, p.prefix_len), (Ipv4Addr::new(10, 0, 1, 23), 24));
        assert_eq!((p.valid_lft_s, p.preferred_lft_s), (3600, 3600));
        assert_eq!(
            p.routes,
            vec![RouteSpec {
                dst: cidr("0.0.0.0/0"),
                gateway: Some(Ipv4Addr::new(10, 0, 1, 1)),
                src: Some(Ipv4Addr::new(10, 0, 1, 23)),
                mtu: Some(1500),
            }]
        );
        assert!(p.remove.is_empty());
        // Later: the lifetime is what is left.
        let p = plan_lease(&lease(), 10_000 + 600_500, &[], 1500, FRESH).unwrap();
        assert_eq!(p.valid_lft_s, 2999);
    }

    #[test]
    fn lease_plan_mtu_rules() {
        let mut l = lease();
        l.mtu = None;
        let p = plan_lease(&l, 10_000, &[], 1500, FRESH).unwrap();
        assert_eq!(p.mtu, 1500);
        l.mtu = Some(40);
        assert_eq!(plan_lease(&l, 10_000, &[], 1500, FRESH).unwrap().mtu, 1500);
        // The default route never exceeds the interface MTU.
        l.mtu = Some(1400);
        let p = plan_lease(&l, 10_000, &[], 1500, FRESH).unwrap();
        assert_eq!(p.routes[0].mtu, Some(1400));
        l.mtu = Some(9001);
        let p = plan_lease(&l, 10_000, &[], 9001, FRESH).unwrap();
        assert_eq!(p.routes[0].mtu, Some(9001));
    }

    #[test]
    fn refused_mtu_caps_the_routes() {
        let p = plan_lease(&lease(), 10_000, &[], 1500, FRESH)
            .unwrap()
            .with_link_mtu(1280);
        assert_eq!(p.mtu, 1280);
        assert_eq!(p.routes[0].mtu, Some(1280));
        let p = plan_lease(&lease(), 10_000, &[], 1500, FRESH)
            .unwrap()
            .with_link_mtu(4000);
        assert_eq!((p.mtu, p.routes[0].mtu), (4000, Some(1500)));
    }

    #[test]
    fn secondary_addresses_are_kept_and_checked() {
        let l = lease();
        let s: Ipv4Addr = "10.0.1.40".parse().unwrap();
        let outside: Ipv4Addr = "192.168.9.9".parse().unwrap();
        let existing = [(l.addr, 24), (s, 24), ("10.0.1.99".parse().unwrap(), 24)];
        let p = plan_lease(&l, 10_000, &existing, 1500, FRESH)
            .unwrap()
            .with_secondary(&[s, outside, l.addr, s]);
        assert_eq!(p.secondary, vec![s]);
        assert_eq!(p.remove, vec![("10.0.1.99".parse().unwrap(), 24)]);
        assert!(p.check_address("ens5", &existing).is_ok());
        let e = p.check_address("ens5", &[(l.addr, 24)]).unwrap_err();
        assert_eq!(e, "address 10.0.1.40/24 is missing from ens5");
    }

    #[test]
    fn lease_plan_removes_stale_addresses_and_keeps_the_current_one() {
        let existing = [
            (Ipv4Addr::new(10, 0, 1, 23), 24),
            (Ipv4Addr::new(10, 0, 1, 99), 24),
            (Ipv4Addr::new(10, 0, 1, 23), 16),
        ];
        let p = plan_lease(&lease(), 10_000, &existing, 1500, FRESH).unwrap();
        assert_eq!(
            p.remove,
            vec![
                (Ipv4Addr::new(10, 0, 1, 23), 16),
                (Ipv4Addr::new(10, 0, 1, 99), 24)
            ]
        );
    }

    #[test]
    fn lease_plan_errors_and_infinite_leases() {
        let mut l = lease();
        l.router = None;
        assert!(matches!(
            plan_lease(&l, 10_000, &[], 1500, FRESH),
            Err(LeaseError::NoRouter { .. })
        ));
        let l = lease();
        assert!(matches!(
            plan_lease(&l, 10_000 + 3_600_000, &[], 1500, FRESH),
            Err(LeaseError::Expired { .. })
        ));
        let mut l = lease();
        l.lease_s = u32::MAX;
        let p = plan_lease(&l, 99_999_999, &[], 1500, FRESH).unwrap();
        assert_eq!(p.valid_lft_s, u32::MAX);
    }

    #[test]
    fn drift_checks_find_a_missing_address_or_route() {
        let p = plan_lease(&lease(), 10_000, &[], 1500, FRESH).unwrap();
        let here = [(Ipv4Addr::new(10, 0, 1, 23), 24)];
        assert_eq!(p.check_address("ens5", &here), Ok(()));
        assert_eq!(
            p.check_address("ens5", &[(Ipv4Addr::new(10, 0, 1, 23), 16)]),
            Err("address 10.0.1.23/24 is missing from ens5".into())
        );
        let route = |gw: [u8; 4], mtu| RouteInfo {
            dst: cidr("0.0.0.0/0"),
            gateway: Some(Ipv4Addr::from(gw)),
            oif: Some(2),
            src: Some(Ipv4Addr::new(10, 0, 1, 23)),
            mtu,
            table: 254,
        };
        assert_eq!(
            p.check_default_route(&[route([10, 0, 1, 1], Some(1500))]),
            Ok(())
        );
        let missing = Err("default route via 10.0.1.1 with mtu 1500 is missing".to_string());
        assert_eq!(
            p.check_default_route(&[route([10, 0, 1, 1], None)]),
            missing
        );
        assert_eq!(
            p.check_default_route(&[route([10, 0, 1, 9], Some(1500))]),
            missing
        );
        assert_eq!(p.check_default_route(&[]), missing);
    }

    /// The plan of the good lease, as the one in force.
    fn previous() -> LeasePlan {
        plan_lease(&lease(), 10_000, &[], 1500, FRESH).unwrap()
    }

    fn texts(p: &LeasePlan) -> Vec<String> {
        p.problems.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_sane_lease_has_no_problems() {
        assert!(previous().problems.is_empty());
        for mtu in [576, 1500, 9001, 9216] {
            let mut l = lease();
            l.mtu = Some(mtu);
            let p = plan_lease(&l, 10_000, &[], 1500, FRESH).unwrap();
            assert_eq!((p.mtu, texts(&p)), (u32::from(mtu), vec![]), "{mtu}");
        }
    }

    #[test]
    fn mtu_outside_576_to_9216_keeps_the_interface_mtu() {
        for mtu in [0, 68, 575, 9217, u16::MAX] {
            let mut l = lease();
            l.mtu = Some(mtu);
            let now = Current {
                link_mtu: 9001,
                previous: None,
            };
            let p = plan_lease(&l, 10_000, &[], 1500, now).unwrap();
            assert_eq!(p.mtu, 9001, "{mtu}");
            assert_eq!(
                texts(&p),
                [format!(
                    "lease 10.0.1.23/24 from 10.0.1.1: MTU {mtu} (option 26) is outside \
                     576..=9216; keeping the interface MTU 9001"
                )]
            );
            // The default route never claims more than the interface keeps.
            assert_eq!(p.routes.last().unwrap().mtu, Some(1500));
        }
    }

    #[test]
    fn prefix_outside_8_to_30_keeps_the_previous_one_or_refuses_a_first_lease() {
        for prefix_len in [0, 7, 31, 32] {
            let mut l = lease();
            l.prefix_len = prefix_len;
            let e = plan_lease(&l, 10_000, &[], 1500, FRESH).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "lease 10.0.1.23/{prefix_len} from 10.0.1.1: prefix /{prefix_len} \
                     (option 1) is outside /8../30 and there is no earlier prefix for \
                     10.0.1.23 to keep; lease not applied"
                )
            );
            let prev = previous();
            let now = Current {
                link_mtu: 9001,
                previous: Some(&prev),
            };
            let p = plan_lease(&l, 10_000, &[], 1500, now).unwrap();
            assert_eq!(p.prefix_len, 24);
            assert_eq!(
                texts(&p),
                [format!(
                    "lease 10.0.1.23/{prefix_len} from 10.0.1.1: prefix /{prefix_len} \
                     (option 1) is outside /8../30; keeping /24"
                )]
            );
            // An earlier lease for another address has no prefix to lend.
            let mut other = lease();
            other.addr = Ipv4Addr::new(10, 0, 1, 24);
            other.prefix_len = prefix_len;
            assert!(plan_lease(&other, 10_000, &[], 1500, now).is_err());
        }
        let mut l = lease();
        l.prefix_len = 8;
        assert!(
            plan_lease(&l, 10_000, &[], 1500, FRESH)
                .unwrap()
                .problems
                .is_empty()
        );
        l.prefix_len = 30;
        l.addr = Ipv4Addr::new(10, 0, 1, 2);
        assert!(
            plan_lease(&l, 10_000, &[], 1500, FRESH)
                .unwrap()
                .problems
                .is_empty()
        );
    }

    #[test]
    fn router_outside_the_subnet_or_our_own_keeps_the_previous_one_or_refuses_a_first_lease() {
        let cases = [
            ([10, 0, 2, 1], "outside 10.0.1.0/24"),
            ([10, 0, 1, 23], "our own address"),
            ([10, 0, 1, 0], "the network address of 10.0.1.0/24"),
            ([10, 0, 1, 255], "the broadcast address of 10.0.1.0/24"),
        ];
        for (router, why) in cases {
            let router = Ipv4Addr::from(router);
            let mut l = lease();
            l.router = Some(router);
            let e = plan_lease(&l, 10_000, &[], 1500, FRESH).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "lease 10.0.1.23/24 from 10.0.1.1: router {router} (option 3) is {why}, \
                     and there is no earlier router to keep; no default route, lease not \
                     applied"
                )
            );
            let prev = previous();
            let now = Current {
                link_mtu: 1500,
                previous: Some(&prev),
            };
            let p = plan_lease(&l, 10_000, &[], 1500, now).unwrap();
            assert_eq!(p.gateway, Ipv4Addr::new(10, 0, 1, 1));
            assert_eq!(p.routes.last().unwrap().gateway, Some(p.gateway));
            assert_eq!(
                texts(&p),
                [format!(
                    "lease 10.0.1.23/24 from 10.0.1.1: router {router} (option 3) is {why}; \
                     keeping the router 10.0.1.1"
                )]
            );
        }
        // The earlier router must fit the new subnet too.
        let mut l = lease();
        l.addr = Ipv4Addr::new(10, 0, 9, 23);
        l.router = Some(Ipv4Addr::new(10, 0, 2, 1));
        let prev = previous();
        let now = Current {
            link_mtu: 1500,
            previous: Some(&prev),
        };
        assert!(plan_lease(&l, 10_000, &[], 1500, now).is_err());
    }

    #[test]
    fn a_renewal_without_router_keeps_the_previous_one() {
        let mut l = lease();
        l.router = None;
        let prev = previous();
        let now = Current {
            link_mtu: 1500,
            previous: Some(&prev),
        };
        let p = plan_lease(&l, 10_000, &[], 1500, now).unwrap();
        assert_eq!(p.gateway, Ipv4Addr::new(10, 0, 1, 1));
        assert_eq!(
            texts(&p),
            ["lease 10.0.1.23/24 from 10.0.1.1: no router (option 3); keeping the router 10.0.1.1"]
        );
    }

    #[test]
    fn a_lease_under_a_minute_is_said_to_be_held_longer() {
        let mut l = lease();
        l.granted_lease_s = 10;
        l.lease_s = crate::dhcp::MIN_LEASE_S;
        let p = plan_lease(&l, 10_000, &[], 1500, FRESH).unwrap();
        assert_eq!(
            texts(&p),
            [
                "lease 10.0.1.23/24 from 10.0.1.1: lease time 10 s (option 51) is under 60 s; \
              holding it for 60 s"
            ]
        );
        assert_eq!(p.valid_lft_s, 60);
    }
}

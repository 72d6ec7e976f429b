//! What a DHCP lease becomes on the interface: its MTU, the address with the lease's lifetimes,
//! the routes, and the stale addresses to remove.

use std::net::Ipv4Addr;

use crate::cidr::Ipv4Cidr;
use crate::dhcp::Lease;
use crate::netlink::RouteInfo;

/// Interface MTU when DHCP gives none (option 26 absent).
pub const DEFAULT_MTU: u32 = 1500;
/// Smallest MTU accepted from option 26 (RFC 2132 section 5.1).
const MIN_MTU: u16 = 68;

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
}

/// What the interface holds now, for the values a bad lease cannot set.
#[derive(Debug, Clone, Copy)]
pub struct Current<'a> {
    /// The interface's MTU now.
    pub link_mtu: u32,
    /// The plan in force (from the earlier lease), if any.
    pub previous: Option<&'a LeasePlan>,
}

/// A value of a lease that was not used, and what was used instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseProblem {}

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
        if addrs.contains(&(self.addr, self.prefix_len)) {
            Ok(())
        } else {
            Err(format!(
                "address {}/{} is missing from {iface}",
                self.addr, self.prefix_len
            ))
        }
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
    #[error("lease {addr}/{prefix_len} has expired")]
    Expired { addr: Ipv4Addr, prefix_len: u8 },
}

/// The interface MTU a lease asks for.
pub fn lease_mtu(lease: &Lease) -> u32 {
    match lease.mtu {
        Some(m) if m >= MIN_MTU => u32::from(m),
        _ => DEFAULT_MTU,
    }
}

/// Plans the interface configuration for `lease` at `now_ms`, given the IPv4 addresses the
/// interface has now. The default route gets `default_route_mtu` (the internet path), never
/// more than the interface MTU.
pub fn plan_lease(
    lease: &Lease,
    now_ms: u64,
    existing: &[(Ipv4Addr, u8)],
    default_route_mtu: u16,
    current: Current<'_>,
) -> Result<LeasePlan, LeaseError> {
    let _ = current;
    let problems = Vec::new();
    let gateway = lease.router.ok_or(LeaseError::NoRouter {
        addr: lease.addr,
        prefix_len: lease.prefix_len,
        server: lease.server,
    })?;
    let left = lease.left_s(now_ms);
    if left == 0 {
        return Err(LeaseError::Expired {
            addr: lease.addr,
            prefix_len: lease.prefix_len,
        });
    }
    let lifetime = u32::try_from(left).unwrap_or(u32::MAX);
    let mtu = lease_mtu(lease);
    let subnet = Ipv4Cidr::containing(lease.addr, lease.prefix_len);
    let mut routes = Vec::new();
    if !subnet.contains(gateway) || lease.prefix_len >= 31 {
        routes.push(RouteSpec {
            dst: Ipv4Cidr::containing(gateway, 32),
            gateway: None,
            src: Some(lease.addr),
            mtu: None,
        });
    }
    routes.push(RouteSpec {
        dst: Ipv4Cidr::containing(Ipv4Addr::UNSPECIFIED, 0),
        gateway: Some(gateway),
        src: Some(lease.addr),
        mtu: Some(u32::from(default_route_mtu).min(mtu)),
    });
    let mut remove: Vec<(Ipv4Addr, u8)> = existing
        .iter()
        .copied()
        .filter(|(a, l)| !(*a == lease.addr && *l == lease.prefix_len))
        .collect();
    remove.sort_unstable();
    remove.dedup();
    Ok(LeasePlan {
        mtu,
        addr: lease.addr,
        prefix_len: lease.prefix_len,
        valid_lft_s: lifetime,
        preferred_lft_s: lifetime,
        remove,
        routes,
        gateway,
        problems,
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
    fn lease_plan_router_outside_subnet_gets_a_host_route() {
        let mut l = lease();
        l.prefix_len = 32;
        let p = plan_lease(&l, 10_000, &[], 1500, FRESH).unwrap();
        assert_eq!(p.routes.len(), 2);
        assert_eq!(p.routes[0].dst, cidr("10.0.1.1/32"));
        assert_eq!(p.routes[0].gateway, None);
        assert_eq!(p.routes[1].dst, cidr("0.0.0.0/0"));
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
}

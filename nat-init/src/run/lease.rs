//! [`Stage::Address`](nat_init::plan::Stage::Address): the lease on the interface (MTU, address
//! with the lease's lifetimes, routes) as `plan` lays it out, its removal when the lease is
//! lost, and the check that it is still there.

use std::net::Ipv4Addr;

use anyhow::{Result, anyhow};

use nat_init::cidr::Ipv4Cidr;
use nat_init::dhcp::Lease;
use nat_init::netlink::Rtnl;
use nat_init::plan;

use super::Service;
use super::console::{error, now_ms};

impl Service {
    /// The stage: MTU, address with lifetimes, routes, and stale addresses removed.
    pub(super) fn configure_address(&mut self) -> Result<()> {
        let lease = self
            .lease
            .clone()
            .ok_or_else(|| anyhow!("no lease to configure"))?;
        let mut rtnl = Rtnl::open()?;
        let index = self.iface.index;
        let link = rtnl
            .links()?
            .into_iter()
            .find(|l| l.index == index)
            .ok_or_else(|| anyhow!("interface {} is gone", self.iface.name))?;
        let existing = rtnl.addresses(index)?;
        let current = plan::Current {
            link_mtu: link.mtu,
            previous: self.applied.as_ref(),
        };
        let mut plan = plan::plan_lease(
            &lease,
            now_ms(),
            &existing,
            self.cfg.default_route_mtu,
            current,
        )?
        .with_secondary(&self.secondary);
        for p in &plan.problems {
            error("dhcp", format_args!("{p}"));
        }
        if link.mtu != plan.mtu
            && let Err(e) = rtnl.set_mtu(index, plan.mtu)
        {
            // A NAT at the old MTU beats no NAT: say so, carry on, try again at renewal.
            error("link", format_args!("{e:#}; keeping MTU {}", link.mtu));
            plan = plan.with_link_mtu(link.mtu);
        }
        for (a, len) in &plan.remove {
            match rtnl.delete_address(index, *a, *len) {
                Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => {}
                r => r?,
            }
        }
        rtnl.replace_address(
            index,
            plan.addr,
            plan.prefix_len,
            plan.valid_lft_s,
            plan.preferred_lft_s,
        )?;
        for a in &plan.secondary {
            rtnl.replace_address(
                index,
                *a,
                plan.prefix_len,
                plan.valid_lft_s,
                plan.preferred_lft_s,
            )?;
        }
        for r in &plan.routes {
            rtnl.replace_route(r.dst, r.gateway, index, r.src, r.mtu)?;
        }
        self.applied = Some(plan);
        Ok(())
    }

    /// Takes a lost lease off the interface: its default route and address (already gone is fine),
    /// as configured (a bad prefix or router in the lease may have been replaced).
    pub(super) fn remove_lease(&mut self, l: &Lease) -> Result<()> {
        let (prefix_len, router) = match &self.applied {
            Some(p) if p.addr == l.addr => (p.prefix_len, Some(p.gateway)),
            _ => (l.prefix_len, l.router),
        };
        let mut rtnl = Rtnl::open()?;
        let default = Ipv4Cidr::containing(Ipv4Addr::UNSPECIFIED, 0);
        match rtnl.delete_route(default, router, Some(self.iface.index)) {
            Err(e) if e.errno() == Some(libc::ESRCH) => {}
            r => r?,
        }
        match rtnl.delete_address(self.iface.index, l.addr, prefix_len) {
            Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => {}
            r => r?,
        }
        Ok(())
    }

    /// Whether the configured address and default route are still in place (nothing to check
    /// before the first configuration).
    pub(super) fn check_address(&self) -> Result<()> {
        let Some(p) = &self.applied else {
            return Ok(());
        };
        let mut rtnl = Rtnl::open()?;
        p.check_address(&self.iface.name, &rtnl.addresses(self.iface.index)?)
            .map_err(|e| anyhow!(e))?;
        p.check_default_route(&rtnl.routes()?)
            .map_err(|e| anyhow!(e))?;
        Ok(())
    }
}

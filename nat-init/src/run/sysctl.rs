//! [`Stage::Sysctl`](nat_init::plan::Stage::Sysctl): forwarding on, redirects off, reverse-path
//! filtering, conntrack sized and its timeouts, IPv6 off, all written and read back. It runs after the table, and
//! [`forwarding_off`] undoes forwarding whenever the table is lost: never unfiltered.

use std::path::Path;

use anyhow::Result;

use nat_init::plan;
use nat_init::sysctl::{self, SysctlSettings};

use super::Service;
use super::console::{error, info};

const PROC_SYS: &str = sysctl::PROC_SYS;
const SYS: &str = sysctl::SYS;

impl Service {
    pub(super) fn apply_sysctls(&mut self) -> Result<()> {
        let mem = sysctl::mem_total(Path::new("/proc/meminfo"))?;
        let sizing =
            plan::conntrack_sizing(self.cfg.conntrack_max, self.cfg.conntrack_buckets, mem);
        for why in &sizing.refused {
            error("config", why);
        }
        let (max, buckets) = (sizing.max, sizing.buckets);
        let root = Path::new(PROC_SYS);
        let ipv6_devices = sysctl::ipv6_devices(root)?;
        if ipv6_devices.is_none() && !self.ipv6_absent_said {
            info(format_args!(
                "sysctl IPv6 is absent in this kernel (no {PROC_SYS}/{}): nothing to turn off",
                sysctl::IPV6_CONF
            ));
            self.ipv6_absent_said = true;
        }
        let ipv6 = ipv6_devices.is_some();
        let settings = SysctlSettings {
            iface: self.iface.name.clone(),
            rp_filter: self.cfg.rp_filter,
            conntrack_max: max,
            conntrack_buckets: buckets,
            tcp_established_timeout_s: self.cfg.tcp_established_timeout,
            tcp_transitory_timeout_s: self.cfg.tcp_transitory_timeout,
            tcp_time_wait_timeout_s: self.cfg.tcp_time_wait_timeout,
            udp_timeout_s: self.cfg.udp_timeout,
            udp_timeout_stream_s: self.cfg.udp_timeout_stream,
            ipv6_devices,
        };
        let mut wanted = sysctl::plan(&settings);
        // Only outside the initial network namespace (the host test): the kernel makes the
        // global conntrack size read-only there. On the appliance nat-init runs in the initial
        // namespace, where it is writable and a failure to set it is an error like any other.
        let global_ro = sysctl::is_read_only(root, sysctl::CONNTRACK_MAX_SYSCTL);
        if global_ro {
            wanted.retain(|(k, _)| k != sysctl::CONNTRACK_MAX_SYSCTL);
            if !self.global_ro_said {
                info(format_args!(
                    "sysctl {} is read-only in this network namespace (global, owned by the initial one); conntrack size and buckets left as they are",
                    sysctl::CONNTRACK_MAX_SYSCTL
                ));
                self.global_ro_said = true;
            }
        }
        sysctl::apply(root, &wanted)?;
        if !global_ro {
            sysctl::apply_conntrack_buckets(Path::new(SYS), root, buckets)?;
        }
        info(plan::sysctl_line(
            &self.cfg,
            (!global_ro).then_some((max, buckets)),
            ipv6,
        ));
        self.sysctl_plan = wanted;
        Ok(())
    }
}

/// Without a verified table forwarding would be unfiltered (an open router): switch it off
/// until the table is back; the sysctl stage turns it on again after that.
pub(super) fn forwarding_off() {
    let path = Path::new(PROC_SYS).join("net/ipv4/ip_forward");
    match std::fs::read_to_string(&path) {
        Ok(v) if v.trim() == "0" => {}
        _ => match std::fs::write(&path, "0\n") {
            Ok(()) => error(
                "sysctl",
                "ip_forward=0 until the nftables table is back (no unfiltered forwarding)",
            ),
            Err(e) => error(
                "sysctl",
                format_args!("writing 0 to {}: {e}", path.display()),
            ),
        },
    }
}

//! The primary ENI (`plan::decide_primary` decides): IMDS's answer checked against the
//! interface nat-init drives, the switch to the interface IMDS names, and the record of that
//! answer in /run, so that a restarted nat-init goes straight to the primary instead of taking
//! the NAT's default route over to the first candidate while it asks again.

use std::path::Path;

use anyhow::{Result, anyhow};

use nat_init::config::Config;
use nat_init::naming;
use nat_init::netlink::Rtnl;
use nat_init::plan::{self, Primary};
use nat_init::report;

use super::Service;
use super::console::{error, info};
use super::link;

/// The primary ENI's MAC as IMDS named it in this boot (/run is a tmpfs: gone at reboot, when
/// the ENIs may be others).
const RECORD: &str = "/run/nat-init/primary-mac";

/// The MAC recorded earlier in this boot, if any.
pub fn remembered() -> Option<[u8; 6]> {
    std::fs::read_to_string(RECORD)
        .ok()
        .and_then(|t| naming::parse_mac(&t))
}

/// Records `mac`; a failure only costs a restart the detour, so it is said and ignored.
fn remember(mac: [u8; 6]) {
    let path = Path::new(RECORD);
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, format!("{}\n", report::mac_text(&mac))));
    if let Err(e) = written {
        error(
            "link",
            format_args!("recording the primary ENI in {RECORD}: {e}"),
        );
    }
}

impl Service {
    /// Checks the interface against IMDS's `meta-data/mac`: fine, pinned (said), or another
    /// interface to switch to (left in `switch_to` for the loop). Not here: an error, and the
    /// stage is retried (an ENI may still be attaching).
    pub(super) fn check_primary(&mut self, imds_mac: &str) -> Result<()> {
        let snapshot = naming::read_sysfs(Path::new("/"))
            .map_err(|e| anyhow!("reading /sys/class/net: {e}"))?;
        let pinned = self.cfg.interface.is_some();
        match plan::decide_primary(
            imds_mac,
            &self.iface.name,
            self.iface.mac,
            pinned,
            &snapshot,
        )? {
            Primary::Keep => remember(self.iface.mac),
            Primary::Pinned { primary } => info(format_args!(
                "link {} is the configured interface; IMDS names {primary} as the primary ENI",
                self.iface.name
            )),
            Primary::Switch { to, mac } => {
                info(format_args!(
                    "link IMDS names {} ({to}) as the primary ENI, not {} ({}); switching to it",
                    report::mac_text(&mac),
                    self.iface.name,
                    report::mac_text(&self.iface.mac)
                ));
                remember(mac);
                self.switch_to = Some(mac);
            }
        }
        Ok(())
    }

    /// Leaves the interface driven so far (its lease off, the link down) and starts over on the
    /// one with `mac`, from the baked configuration.
    pub(super) fn switch_primary(&mut self, mac: [u8; 6]) {
        if let Some(l) = self.lease.clone()
            && let Err(e) = self.remove_lease(&l)
        {
            error("link", format_args!("{e:#}"));
        }
        if let Err(e) = Rtnl::open().and_then(|mut r| r.set_down(self.iface.index)) {
            error(
                "link",
                format_args!("setting {} down: {e:#}", self.iface.name),
            );
        }
        let baked = self
            .baked
            .as_deref()
            .map(|t| (t, self.config_path.as_str()));
        let cfg = Config::layered(baked, None).config;
        let iface = link::setup_link(&cfg, Some(mac));
        link::wait_for_carrier(&iface);
        *self = Service::new(self.config_path.clone(), self.baked.clone(), cfg, iface);
    }
}

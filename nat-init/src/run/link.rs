//! The primary interface, before the loop starts: found (naming decides, `plan` resolves the
//! configuration), renamed, brought up with loopback, and given a little time for carrier.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use nat_init::config::Config;
use nat_init::naming;
use nat_init::netlink::Rtnl;
use nat_init::plan::{self, Backoff};
use nat_init::report;

use super::console::{error, info};

/// How long the primary interface may take to appear before it is reported missing.
const LINK_APPEAR: Duration = Duration::from_secs(10);
/// How long to wait for carrier before starting DHCP anyway (and saying so).
const CARRIER_WAIT: Duration = Duration::from_secs(10);

/// The primary interface once it is up: final name, index, MAC.
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
}

/// Finds, renames and brings up the primary interface, waiting for it to appear.
pub fn setup_link(cfg: &Config) -> Iface {
    let start = Instant::now();
    let mut backoff = Backoff::default();
    loop {
        match try_setup_link(cfg) {
            Ok(i) => return i,
            // Drivers probe asynchronously: poll quietly while the interface may still appear.
            Err(_) if start.elapsed() < LINK_APPEAR => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => {
                let d = backoff.failure();
                error(
                    "link",
                    format_args!(
                        "{e:#} (waited {}); retrying in {}",
                        report::seconds(Duration::from_secs(start.elapsed().as_secs())),
                        report::seconds(d)
                    ),
                );
                std::thread::sleep(d);
            }
        }
    }
}

fn try_setup_link(cfg: &Config) -> Result<Iface> {
    let snapshot = naming::read_sysfs(Path::new("/")).context("reading /sys/class/net")?;
    let mut rtnl = Rtnl::open()?;
    let links = rtnl.links()?;
    let choice = plan::resolve_interface(
        naming::choose(&snapshot, cfg.interface.as_deref()),
        &snapshot,
        &links,
        cfg,
    )?;
    let link = links
        .iter()
        .find(|l| l.name == choice.current)
        .ok_or_else(|| anyhow!("{} is in sysfs but not in rtnetlink", choice.current))?
        .clone();
    if let Some(new) = &choice.rename_to {
        rtnl.rename(link.index, new)?;
        info(format_args!("link {} renamed to {new}", choice.current));
    } else if let Some(note) = &choice.note {
        info(format_args!("link {note}"));
    }
    if let Some(lo) = rtnl.link("lo")? {
        rtnl.set_up(lo.index)?;
    }
    rtnl.set_up(link.index)?;
    let link = rtnl
        .links()?
        .into_iter()
        .find(|l| l.index == link.index)
        .ok_or_else(|| anyhow!("link {} vanished while being set up", link.name))?;
    let mac = link
        .mac
        .ok_or_else(|| anyhow!("{} has no Ethernet address", link.name))?;
    Ok(Iface {
        name: link.name,
        index: link.index,
        mac,
    })
}

/// Waits up to [`CARRIER_WAIT`] for carrier; DHCP starts either way, the line says which.
pub fn wait_for_carrier(iface: &Iface) {
    match Rtnl::open().and_then(|mut r| r.wait_for_carrier(iface.index, CARRIER_WAIT)) {
        Ok(true) => info(format_args!(
            "link {} up with carrier mac={}",
            iface.name,
            report::mac_text(&iface.mac)
        )),
        Ok(false) => error(
            "link",
            format_args!(
                "{} has no carrier after {}; starting DHCP anyway",
                iface.name,
                report::seconds(CARRIER_WAIT)
            ),
        ),
        Err(e) => error(
            "link",
            format_args!(
                "waiting for carrier on {}: {e:#}; starting DHCP anyway",
                iface.name
            ),
        ),
    }
}

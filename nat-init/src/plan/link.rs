//! Which interface nat-init drives and what it should be called, from the naming decision,
//! the links the kernel has and the configuration.

use crate::config::Config;
use crate::naming::{Choice, NamingError, NetDevice, Snapshot, udev_name};
use crate::netlink::Link;

/// The interface nat-init drives: what it is called now and what it should be called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub current: String,
    /// `None`: keep the current name.
    pub rename_to: Option<String>,
    /// Why there is no rename, for the info line (`None` when renaming or nothing to say).
    pub note: Option<String>,
}

/// Picks the interface from the naming decision and the configuration. A pinned `interface`
/// that naming does not find is still accepted when it is an Ethernet link by that name (a
/// veth, say: naming only considers PCI devices; the operator asked for it by name), or when
/// nat-init renamed it on an earlier run: a link already called `name`, or the single PCI
/// Ethernet device that already carries its udev-style name.
pub fn resolve_interface(
    choice: Result<Choice, NamingError>,
    snapshot: &Snapshot,
    links: &[Link],
    cfg: &Config,
) -> Result<Interface, NamingError> {
    let (current, udev) = match choice {
        Ok(c) => (c.current, c.udev_name),
        Err(e @ NamingError::NotFound { .. }) => {
            let wanted = cfg.interface.as_deref().unwrap_or_default();
            let by_name = |n: &str| links.iter().find(|l| l.name == n && l.is_ether);
            let renamed = cfg.name.as_deref().filter(|_| cfg.rename).and_then(by_name);
            if let Some(l) = by_name(wanted).or(renamed) {
                (l.name.clone(), None)
            } else {
                let already: Vec<&NetDevice> = snapshot
                    .devices
                    .iter()
                    .filter(|d| {
                        cfg.rename
                            && cfg.name.is_none()
                            && d.pci.and_then(|p| udev_name(p, &snapshot.slots)).as_deref()
                                == Some(d.name.as_str())
                    })
                    .collect();
                match already.as_slice() {
                    [d] => (d.name.clone(), Some(d.name.clone())),
                    _ => return Err(e),
                }
            }
        }
        Err(e) => return Err(e),
    };
    let (target, note) = if !cfg.rename {
        (None, None)
    } else if let Some(name) = &cfg.name {
        (Some(name.clone()), None)
    } else if let Some(u) = udev {
        (Some(u), None)
    } else {
        (
            None,
            Some(format!(
                "{current} has no udev-style name (not on PCI, or too long); keeping it"
            )),
        )
    };
    let rename_to = target.filter(|t| *t != current);
    Ok(Interface {
        current,
        rename_to,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::PciAddr;

    fn link(name: &str, ether: bool) -> Link {
        Link {
            index: 2,
            name: name.into(),
            mac: Some([2, 0, 0, 0, 0, 1]),
            mtu: 1500,
            up: false,
            carrier: false,
            is_ether: ether,
        }
    }

    fn choice(current: &str, udev: Option<&str>) -> Choice {
        Choice {
            current: current.into(),
            pci: PciAddr {
                domain: 0,
                bus: 0,
                device: 5,
                function: 0,
            },
            mac: None,
            udev_name: udev.map(str::to_string),
        }
    }

    #[test]
    fn interface_rename_decisions() {
        let cfg = Config::default();
        let i = resolve_interface(
            Ok(choice("eth0", Some("ens5"))),
            &Snapshot::default(),
            &[],
            &cfg,
        )
        .unwrap();
        assert_eq!(i.rename_to.as_deref(), Some("ens5"));
        // Restarted: already renamed.
        let i = resolve_interface(
            Ok(choice("ens5", Some("ens5"))),
            &Snapshot::default(),
            &[],
            &cfg,
        )
        .unwrap();
        assert_eq!((i.current.as_str(), i.rename_to), ("ens5", None));
        let no = Config {
            rename: false,
            ..Config::default()
        };
        let i = resolve_interface(
            Ok(choice("eth0", Some("ens5"))),
            &Snapshot::default(),
            &[],
            &no,
        )
        .unwrap();
        assert_eq!(i.rename_to, None);
        assert_eq!(i.note, None);
        let named = Config {
            name: Some("wan0".into()),
            ..Config::default()
        };
        let i = resolve_interface(
            Ok(choice("eth0", Some("ens5"))),
            &Snapshot::default(),
            &[],
            &named,
        )
        .unwrap();
        assert_eq!(i.rename_to.as_deref(), Some("wan0"));
        let i =
            resolve_interface(Ok(choice("eth0", None)), &Snapshot::default(), &[], &cfg).unwrap();
        assert_eq!(i.rename_to, None);
        assert!(i.note.unwrap().contains("no udev-style name"));
    }

    #[test]
    fn pinned_virtual_ethernet_is_accepted_by_name_only() {
        let cfg = Config {
            interface: Some("eth0".into()),
            rename: false,
            ..Config::default()
        };
        let nf = || NamingError::NotFound {
            wanted: "eth0".into(),
            seen: "eth0,lo".into(),
        };
        let links = [link("lo", false), link("eth0", true)];
        let i = resolve_interface(Err(nf()), &Snapshot::default(), &links, &cfg).unwrap();
        assert_eq!(i.current, "eth0");
        assert_eq!(i.rename_to, None);
        // Not Ethernet, or not there: still an error.
        assert_eq!(
            resolve_interface(
                Err(nf()),
                &Snapshot::default(),
                &[link("eth0", false)],
                &cfg
            ),
            Err(nf())
        );
        assert_eq!(
            resolve_interface(Err(nf()), &Snapshot::default(), &[], &cfg),
            Err(nf())
        );
        // Renamed on an earlier run to the configured name.
        let wan = Config {
            interface: Some("eth0".into()),
            name: Some("wan0".into()),
            ..Config::default()
        };
        let i = resolve_interface(Err(nf()), &Snapshot::default(), &[link("wan0", true)], &wan)
            .unwrap();
        assert_eq!((i.current.as_str(), i.rename_to), ("wan0", None));
        // Renamed on an earlier run to its udev-style name.
        let snap = Snapshot {
            devices: vec![
                NetDevice {
                    name: "ens5".into(),
                    arphrd: Some(1),
                    pci: Some(PciAddr {
                        domain: 0,
                        bus: 0,
                        device: 5,
                        function: 0,
                    }),
                    mac: None,
                },
                NetDevice {
                    name: "eth1".into(),
                    arphrd: Some(1),
                    pci: Some(PciAddr {
                        domain: 0,
                        bus: 0,
                        device: 6,
                        function: 0,
                    }),
                    mac: None,
                },
            ],
            slots: vec![crate::naming::PciSlot {
                name: "5".into(),
                domain: 0,
                bus: 0,
                device: 5,
            }],
        };
        let pinned = Config {
            interface: Some("eth0".into()),
            ..Config::default()
        };
        let i = resolve_interface(Err(nf()), &snap, &[], &pinned).unwrap();
        assert_eq!((i.current.as_str(), i.rename_to), ("ens5", None));
        // Without a pinned name there is no fallback.
        let e = NamingError::NoEthernet("lo".into());
        assert_eq!(
            resolve_interface(
                Err(e.clone()),
                &Snapshot::default(),
                &links,
                &Config::default()
            ),
            Err(e)
        );
    }
}

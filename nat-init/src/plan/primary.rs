//! Whether nat-init drives the primary ENI. With several ENIs the first Ethernet device in PCI
//! order need not be the primary: IMDS's `meta-data/mac` names it (device index 0, the ENI
//! the instance was launched with), and IMDS answers on any ENI. So nat-init brings up the
//! first candidate, asks, and then keeps it, switches to the device IMDS names, or refuses to
//! be ready when no device here has that MAC. A configured `interface` is the operator's
//! choice (a secondary ENI that moves between instances, say): kept, and the difference said.

use crate::naming::{self, Snapshot};
use crate::report::mac_text;

/// What to do with the interface nat-init drives, once IMDS named the primary ENI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Primary {
    /// It is the primary.
    Keep,
    /// It is the configured `interface`, which is not the primary ENI `primary`: kept.
    Pinned { primary: String },
    /// The Ethernet device now called `to` has the primary's MAC: drive that one instead.
    Switch { to: String, mac: [u8; 6] },
}

/// IMDS names a primary ENI that is not here (yet): nat-init is not ready while this holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "IMDS names {primary} as the primary ENI but no Ethernet device here has that MAC \
     ({driving} is {driving_mac}; all: {seen}); not ready on the wrong interface"
)]
pub struct PrimaryMissing {
    pub primary: String,
    pub driving: String,
    pub driving_mac: String,
    /// Every candidate as `name=mac`, in PCI order.
    pub seen: String,
}

/// Decides from IMDS's `meta-data/mac` (`imds_mac`), the interface driven now (`driving`, with
/// `driving_mac`), whether an `interface` is configured, and the candidates in `snapshot`.
pub fn decide_primary(
    imds_mac: &str,
    driving: &str,
    driving_mac: [u8; 6],
    pinned: bool,
    snapshot: &Snapshot,
) -> Result<Primary, PrimaryMissing> {
    let primary = naming::parse_mac(imds_mac);
    if primary == Some(driving_mac) {
        return Ok(Primary::Keep);
    }
    let primary_text = primary
        .as_ref()
        .map_or_else(|| imds_mac.to_string(), mac_text);
    if pinned {
        return Ok(Primary::Pinned {
            primary: primary_text,
        });
    }
    let candidates = naming::candidates(snapshot);
    if let Some(mac) = primary
        && let Some(c) = candidates.iter().find(|c| c.mac == Some(mac))
    {
        return Ok(Primary::Switch {
            to: c.current.clone(),
            mac,
        });
    }
    let seen: Vec<String> = candidates
        .iter()
        .map(|c| {
            let mac = c.mac.as_ref().map_or_else(|| "?".to_string(), mac_text);
            format!("{}={mac}", c.current)
        })
        .collect();
    Err(PrimaryMissing {
        primary: primary_text,
        driving: driving.to_string(),
        driving_mac: mac_text(&driving_mac),
        seen: if seen.is_empty() {
            "none".to_string()
        } else {
            seen.join(",")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::{NetDevice, PciAddr, PciSlot};

    const SLOT5_MAC: [u8; 6] = [0x52, 0x54, 0, 0x0a, 0, 0x0b];
    const SLOT6_MAC: [u8; 6] = [0x52, 0x54, 0, 0x0a, 0, 0x0a];

    /// Two virtio NICs behind root ports in slots 5 and 6; the slot-5 one already renamed.
    fn two_nics() -> Snapshot {
        let dev = |name: &str, bus: u8, mac| NetDevice {
            name: name.into(),
            arphrd: Some(1),
            pci: Some(PciAddr {
                domain: 0,
                bus,
                device: 0,
                function: 0,
            }),
            mac: Some(mac),
        };
        let slot = |name: &str, bus: u8| PciSlot {
            name: name.into(),
            domain: 0,
            bus,
            device: 0,
        };
        Snapshot {
            devices: vec![
                dev("ens5", 1, SLOT5_MAC),
                dev("eth1", 2, SLOT6_MAC),
                NetDevice {
                    name: "lo".into(),
                    arphrd: Some(772),
                    pci: None,
                    mac: Some([0; 6]),
                },
            ],
            slots: vec![slot("5", 1), slot("6", 2)],
        }
    }

    #[test]
    fn imds_naming_the_driven_interface_keeps_it() {
        let snap = two_nics();
        for mac in ["52:54:00:0a:00:0b", "52:54:00:0A:00:0B\n"] {
            assert_eq!(
                decide_primary(mac, "ens5", SLOT5_MAC, false, &snap),
                Ok(Primary::Keep)
            );
        }
        // Pinned or not, and whatever else is there.
        assert_eq!(
            decide_primary(
                "52:54:00:0a:00:0b",
                "ens5",
                SLOT5_MAC,
                true,
                &Snapshot::default()
            ),
            Ok(Primary::Keep)
        );
    }

    #[test]
    fn imds_naming_another_nic_switches_to_it() {
        assert_eq!(
            decide_primary("52:54:00:0a:00:0a", "ens5", SLOT5_MAC, false, &two_nics()),
            Ok(Primary::Switch {
                to: "eth1".into(),
                mac: SLOT6_MAC
            })
        );
    }

    #[test]
    fn a_pinned_interface_is_kept_and_the_primary_named() {
        assert_eq!(
            decide_primary("52:54:00:0A:00:0A", "ens5", SLOT5_MAC, true, &two_nics()),
            Ok(Primary::Pinned {
                primary: "52:54:00:0a:00:0a".into()
            })
        );
    }

    #[test]
    fn a_primary_that_is_not_here_refuses_naming_every_mac() {
        let e =
            decide_primary("02:00:00:00:00:99", "ens5", SLOT5_MAC, false, &two_nics()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "IMDS names 02:00:00:00:00:99 as the primary ENI but no Ethernet device here has \
             that MAC (ens5 is 52:54:00:0a:00:0b; all: ens5=52:54:00:0a:00:0b,\
             eth1=52:54:00:0a:00:0a); not ready on the wrong interface"
        );
        // Without any PCI candidate (a pinned veth is pinned, so this is the unpinned case).
        let e = decide_primary(
            "02:00:00:00:00:99",
            "eth0",
            SLOT5_MAC,
            false,
            &Snapshot::default(),
        )
        .unwrap_err();
        assert_eq!(e.seen, "none");
        // A MAC that is not one (IMDS's answer is validated before, but not twice trusted).
        let e = decide_primary("junk", "ens5", SLOT5_MAC, false, &two_nics()).unwrap_err();
        assert_eq!(e.primary, "junk");
    }
}

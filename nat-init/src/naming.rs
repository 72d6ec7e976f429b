//! Which network interface is the primary one and what udev would call it. The image has no
//! udev, so the kernel names the ENA device `eth0`; AWS documentation, rules and operators expect
//! `ens5`. [`read_sysfs`] takes a snapshot of sysfs (the edge); [`choose`], [`choose_primary`]
//! and [`udev_name`] are pure functions of it.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// ARPHRD_ETHER, the `type` of an Ethernet interface.
const ARPHRD_ETHER: u32 = 1;
/// IFNAMSIZ - 1.
const MAX_NAME: usize = 15;

/// A PCI function address `domain:bus:device.function`, ordered as lspci sorts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddr {
    pub domain: u32,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl PciAddr {
    /// Parses `0000:00:05.0`.
    pub fn parse(s: &str) -> Option<PciAddr> {
        let (slot, function) = s.split_once('.')?;
        let (domain, bus, device) = parse_slot_addr(slot)?;
        if function.len() != 1 {
            return None;
        }
        let function = u8::from_str_radix(function, 16).ok()?;
        (function < 8).then_some(PciAddr {
            domain,
            bus,
            device,
            function,
        })
    }
}

impl fmt::Display for PciAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

/// Parses a slot's `address` file: `0000:00:05` (domain:bus:device).
fn parse_slot_addr(s: &str) -> Option<(u32, u8, u8)> {
    let mut parts = s.trim().split(':');
    let (d, b, v) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || d.len() != 4 || b.len() != 2 || v.len() != 2 {
        return None;
    }
    let hex = |t: &str| t.bytes().all(|c| c.is_ascii_hexdigit());
    if !(hex(d) && hex(b) && hex(v)) {
        return None;
    }
    let device = u8::from_str_radix(v, 16).ok()?;
    (device < 32).then_some(())?;
    Some((
        u32::from_str_radix(d, 16).ok()?,
        u8::from_str_radix(b, 16).ok()?,
        device,
    ))
}

/// One entry of /sys/class/net.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDevice {
    /// The current kernel name (`eth0`).
    pub name: String,
    /// The `type` file (ARPHRD_*); `None` when unreadable.
    pub arphrd: Option<u32>,
    /// The PCI function behind the `device` link; `None` for virtual devices.
    pub pci: Option<PciAddr>,
    /// The `address` file; `None` when unreadable or not a 6-byte MAC.
    pub mac: Option<[u8; 6]>,
}

/// A hotplug slot from /sys/bus/pci/slots: its name and the PCI device it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciSlot {
    pub name: String,
    pub domain: u32,
    pub bus: u8,
    pub device: u8,
}

/// What [`read_sysfs`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub devices: Vec<NetDevice>,
    pub slots: Vec<PciSlot>,
}

/// The primary interface: its current name and the name it should get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub current: String,
    pub pci: PciAddr,
    pub mac: Option<[u8; 6]>,
    /// The udev-style name; `None` when it would not fit in 15 bytes.
    pub udev_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    #[error("no Ethernet device on PCI (saw: {0})")]
    NoEthernet(String),
    #[error("configured interface {wanted} not found among Ethernet devices on PCI (saw: {seen})")]
    NotFound { wanted: String, seen: String },
}

/// udev's `ID_NET_NAME_SLOT` when the function sits in a numbered hotplug slot, else
/// `ID_NET_NAME_PATH`: `ens<slot>[f<fn>]` or `enp<bus>s<dev>[f<fn>]`, with `P<domain>` after
/// `en` when the domain is not 0. `None` when the result exceeds 15 bytes.
pub fn udev_name(pci: PciAddr, slots: &[PciSlot]) -> Option<String> {
    let mut name = String::from("en");
    if pci.domain != 0 {
        name.push_str(&format!("P{}", pci.domain));
    }
    let slot = slots.iter().find(|s| {
        s.domain == pci.domain
            && s.bus == pci.bus
            && s.device == pci.device
            && !s.name.is_empty()
            && s.name.bytes().all(|c| c.is_ascii_digit())
    });
    match slot {
        // udev prints the slot number as a number: `05` would be `ens5`.
        Some(s) => name.push_str(&format!("s{}", s.name.parse::<u32>().ok()?)),
        None => name.push_str(&format!("p{}s{}", pci.bus, pci.device)),
    }
    if pci.function > 0 {
        name.push_str(&format!("f{}", pci.function));
    }
    (name.len() <= MAX_NAME).then_some(name)
}

/// The Ethernet devices on PCI, in PCI address order: the candidates for the primary interface.
pub fn candidates(snapshot: &Snapshot) -> Vec<Choice> {
    let mut found: Vec<(PciAddr, &NetDevice)> = snapshot
        .devices
        .iter()
        .filter(|d| d.arphrd == Some(ARPHRD_ETHER))
        .filter_map(|d| Some((d.pci?, d)))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    found
        .into_iter()
        .map(|(pci, d)| Choice {
            current: d.name.clone(),
            pci,
            mac: d.mac,
            udev_name: udev_name(pci, &snapshot.slots),
        })
        .collect()
}

/// As [`choose`], except that with no `configured` interface the candidate whose MAC is
/// `primary` wins when there is one: the primary ENI that IMDS named earlier in this boot.
pub fn choose_primary(
    snapshot: &Snapshot,
    configured: Option<&str>,
    primary: Option<[u8; 6]>,
) -> Result<Choice, NamingError> {
    if configured.is_none()
        && let Some(mac) = primary
        && let Some(c) = candidates(snapshot)
            .into_iter()
            .find(|c| c.mac == Some(mac))
    {
        return Ok(c);
    }
    choose(snapshot, configured)
}

/// The primary interface: the Ethernet device on PCI named `configured` (either its current name
/// or its udev-style name), else the first in PCI address order.
pub fn choose(snapshot: &Snapshot, configured: Option<&str>) -> Result<Choice, NamingError> {
    let choices = candidates(snapshot);
    let seen = || {
        let mut names: Vec<&str> = snapshot.devices.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        if names.is_empty() {
            "nothing".to_string()
        } else {
            names.join(",")
        }
    };
    match configured {
        Some(wanted) => choices
            .into_iter()
            .find(|c| c.current == wanted || c.udev_name.as_deref() == Some(wanted))
            .ok_or_else(|| NamingError::NotFound {
                wanted: wanted.to_string(),
                seen: seen(),
            }),
        None => choices
            .into_iter()
            .next()
            .ok_or_else(|| NamingError::NoEthernet(seen())),
    }
}

/// Reads /sys/class/net and /sys/bus/pci/slots under `root` (`/` on the appliance). Entries that
/// cannot be read are kept with what could be read; only an unreadable /sys/class/net fails.
pub fn read_sysfs(root: &Path) -> io::Result<Snapshot> {
    let net_dir = root.join("sys/class/net");
    let mut devices = Vec::new();
    for entry in fs::read_dir(&net_dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let dir = net_dir.join(&name);
        let arphrd = fs::read_to_string(dir.join("type"))
            .ok()
            .and_then(|t| t.trim().parse().ok());
        let pci = fs::canonicalize(dir.join("device"))
            .ok()
            .and_then(|p| pci_of_path(&p));
        let mac = fs::read_to_string(dir.join("address"))
            .ok()
            .and_then(|t| parse_mac(&t));
        devices.push(NetDevice {
            name,
            arphrd,
            pci,
            mac,
        });
    }
    devices.sort_by(|a, b| a.name.cmp(&b.name));

    let mut slots = Vec::new();
    // Kernels without hotplug slot drivers have no such directory: no slots.
    if let Ok(rd) = fs::read_dir(root.join("sys/bus/pci/slots")) {
        for entry in rd.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Ok(addr) = fs::read_to_string(entry.path().join("address")) else {
                continue;
            };
            if let Some((domain, bus, device)) = parse_slot_addr(&addr) {
                slots.push(PciSlot {
                    name,
                    domain,
                    bus,
                    device,
                });
            }
        }
    }
    slots.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Snapshot { devices, slots })
}

/// `0a:1b:2c:3d:4e:5f` (either case, surrounding whitespace allowed) as six bytes.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The nearest PCI function in a resolved device path: the path itself for ENA
/// (`.../0000:00:05.0`), its parent for virtio (`.../0000:01:00.0/virtio0`).
fn pci_of_path(path: &Path) -> Option<PciAddr> {
    let mut p: Option<PathBuf> = Some(path.to_path_buf());
    while let Some(cur) = p {
        if let Some(addr) = cur
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(PciAddr::parse)
        {
            return Some(addr);
        }
        p = cur.parent().map(Path::to_path_buf);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A throwaway directory removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "nat-init-naming-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Adds interface `name` whose device directory is `devices/<dev_path>`, like the kernel
    /// lays it out (class entry and `device` are symlinks).
    fn add_if(root: &Path, name: &str, arphrd: u32, dev_path: Option<&str>) {
        let devices = root.join("sys/devices");
        let if_dir = match dev_path {
            Some(d) => devices.join(d).join("net").join(name),
            None => devices.join("virtual/net").join(name),
        };
        fs::create_dir_all(&if_dir).unwrap();
        fs::write(if_dir.join("type"), format!("{arphrd}\n")).unwrap();
        if let Some(d) = dev_path {
            symlink(devices.join(d), if_dir.join("device")).unwrap();
        }
        let class = root.join("sys/class/net");
        fs::create_dir_all(&class).unwrap();
        symlink(&if_dir, class.join(name)).unwrap();
    }

    fn add_slot(root: &Path, slot: &str, addr: &str) {
        let d = root.join("sys/bus/pci/slots").join(slot);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("address"), format!("{addr}\n")).unwrap();
    }

    #[test]
    fn virtio_behind_root_port_slot_5_is_ens5() {
        let t = TempDir::new("virtio");
        add_if(&t.0, "lo", 772, None);
        add_if(
            &t.0,
            "eth0",
            1,
            Some("pci0000:00/0000:00:01.0/0000:01:00.0/virtio1"),
        );
        add_slot(&t.0, "5", "0000:01:00");
        let snap = read_sysfs(&t.0).unwrap();
        let c = choose(&snap, None).unwrap();
        assert_eq!(c.current, "eth0");
        assert_eq!(c.pci.to_string(), "0000:01:00.0");
        assert_eq!(c.udev_name.as_deref(), Some("ens5"));
    }

    #[test]
    fn ena_on_nitro_is_ens5() {
        let t = TempDir::new("ena");
        add_if(&t.0, "eth0", 1, Some("pci0000:00/0000:00:05.0"));
        add_slot(&t.0, "5", "0000:00:05");
        add_slot(&t.0, "4", "0000:00:04");
        let snap = read_sysfs(&t.0).unwrap();
        assert_eq!(
            choose(&snap, None).unwrap().udev_name.as_deref(),
            Some("ens5")
        );
    }

    #[test]
    fn no_slot_is_enp0s5() {
        let t = TempDir::new("noslot");
        add_if(&t.0, "eth0", 1, Some("pci0000:00/0000:00:05.0"));
        let snap = read_sysfs(&t.0).unwrap();
        assert!(snap.slots.is_empty());
        assert_eq!(
            choose(&snap, None).unwrap().udev_name.as_deref(),
            Some("enp0s5")
        );
    }

    #[test]
    fn first_ethernet_in_pci_order_wins_and_others_are_skipped() {
        let t = TempDir::new("order");
        add_if(&t.0, "eth0", 1, Some("pci0000:00/0000:00:06.0"));
        add_if(&t.0, "eth1", 1, Some("pci0000:00/0000:00:05.0"));
        add_if(&t.0, "wg0", 65534, None);
        add_if(&t.0, "ib0", 32, Some("pci0000:00/0000:00:04.0"));
        add_if(&t.0, "veth0", 1, None);
        let snap = read_sysfs(&t.0).unwrap();
        let c = choose(&snap, None).unwrap();
        assert_eq!(c.current, "eth1");
        assert_eq!(c.udev_name.as_deref(), Some("enp0s5"));
        // Pinned by current name or by udev name.
        assert_eq!(choose(&snap, Some("eth0")).unwrap().current, "eth0");
        assert_eq!(choose(&snap, Some("enp0s6")).unwrap().current, "eth0");
        assert_eq!(
            choose(&snap, Some("veth0")),
            Err(NamingError::NotFound {
                wanted: "veth0".into(),
                seen: "eth0,eth1,ib0,veth0,wg0".into()
            })
        );
    }

    fn add_mac(root: &Path, name: &str, mac: &str) {
        let dir = fs::canonicalize(root.join("sys/class/net").join(name)).unwrap();
        fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
    }

    #[test]
    fn a_remembered_primary_mac_wins_over_pci_order() {
        let t = TempDir::new("primary");
        add_if(
            &t.0,
            "eth0",
            1,
            Some("pci0000:00/0000:00:02.0/0000:01:00.0/virtio1"),
        );
        add_if(
            &t.0,
            "eth1",
            1,
            Some("pci0000:00/0000:00:03.0/0000:02:00.0/virtio2"),
        );
        add_mac(&t.0, "eth0", "52:54:00:0a:00:0b");
        add_mac(&t.0, "eth1", "52:54:00:0A:00:0A");
        add_slot(&t.0, "5", "0000:01:00");
        add_slot(&t.0, "6", "0000:02:00");
        let snap = read_sysfs(&t.0).unwrap();
        let primary = parse_mac("52:54:00:0a:00:0a");
        assert_eq!(snap.devices[1].mac, primary, "read case-insensitively");
        let first = choose(&snap, None).unwrap();
        assert_eq!(
            (first.current.as_str(), first.udev_name.as_deref()),
            ("eth0", Some("ens5"))
        );
        let c = choose_primary(&snap, None, primary).unwrap();
        assert_eq!(
            (c.current.as_str(), c.udev_name.as_deref()),
            ("eth1", Some("ens6"))
        );
        assert_eq!(c.mac, primary);
        // A MAC no device has: PCI order as before; a pinned interface wins over the MAC.
        let gone = parse_mac("02:00:00:00:00:99");
        assert_eq!(choose_primary(&snap, None, gone).unwrap(), first);
        assert_eq!(choose_primary(&snap, None, None).unwrap(), first);
        assert_eq!(choose_primary(&snap, Some("ens5"), primary).unwrap(), first);
        assert_eq!(
            candidates(&snap)
                .iter()
                .map(|c| c.current.as_str())
                .collect::<Vec<_>>(),
            ["eth0", "eth1"]
        );
    }

    #[test]
    fn mac_text_parsing() {
        assert_eq!(
            parse_mac(" 0A:1b:2c:3d:4e:5f\n"),
            Some([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f])
        );
        for bad in [
            "",
            "0a:1b:2c:3d:4e",
            "0a:1b:2c:3d:4e:5f:60",
            "0a:1b:2c:3d:4e:5",
            "0a-1b-2c-3d-4e-5f",
            "0a:1b:2c:3d:4e:5g",
            "+a:1b:2c:3d:4e:5f",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn no_ethernet_is_an_error() {
        let t = TempDir::new("none");
        add_if(&t.0, "lo", 772, None);
        let snap = read_sysfs(&t.0).unwrap();
        assert_eq!(
            choose(&snap, None),
            Err(NamingError::NoEthernet("lo".into()))
        );
        assert!(read_sysfs(&t.0.join("missing")).is_err());
    }

    fn pci(domain: u32, bus: u8, device: u8, function: u8) -> PciAddr {
        PciAddr {
            domain,
            bus,
            device,
            function,
        }
    }

    #[test]
    fn udev_name_rules() {
        let slots = vec![
            PciSlot {
                name: "5".into(),
                domain: 0,
                bus: 0,
                device: 5,
            },
            PciSlot {
                name: "7".into(),
                domain: 2,
                bus: 0,
                device: 3,
            },
            PciSlot {
                name: "hotplug-a".into(),
                domain: 0,
                bus: 0,
                device: 9,
            },
        ];
        assert_eq!(udev_name(pci(0, 0, 5, 0), &slots).unwrap(), "ens5");
        assert_eq!(udev_name(pci(0, 0, 5, 1), &slots).unwrap(), "ens5f1");
        assert_eq!(
            udev_name(pci(0, 0x1a, 0x1f, 0), &slots).unwrap(),
            "enp26s31"
        );
        assert_eq!(udev_name(pci(0, 3, 0, 2), &slots).unwrap(), "enp3s0f2");
        assert_eq!(udev_name(pci(2, 0, 3, 0), &slots).unwrap(), "enP2s7");
        assert_eq!(udev_name(pci(1, 0, 5, 0), &slots).unwrap(), "enP1p0s5");
        // A slot whose name is not a number does not give a slot name.
        assert_eq!(udev_name(pci(0, 0, 9, 0), &slots).unwrap(), "enp0s9");
        assert_eq!(udev_name(pci(65535, 255, 31, 7), &[]), None);
    }

    #[test]
    fn pci_address_parsing() {
        assert_eq!(PciAddr::parse("0000:00:05.0"), Some(pci(0, 0, 5, 0)));
        assert_eq!(PciAddr::parse("0001:1a:1f.7"), Some(pci(1, 0x1a, 0x1f, 7)));
        for bad in [
            "0000:00:05",
            "0000:00:20.0",
            "0000:00:05.8",
            "virtio1",
            "pci0000:00",
            "000:00:05.0",
            "0000:0g:05.0",
            "0000:00:05.0.1",
        ] {
            assert_eq!(PciAddr::parse(bad), None, "{bad}");
        }
        assert_eq!(parse_slot_addr("0000:00:05\n"), Some((0, 0, 5)));
        assert_eq!(parse_slot_addr("0000:00:05.0"), None);
    }
}

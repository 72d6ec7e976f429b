//! The service's decisions, kept pure so they are unit-tested: which stage runs next and when a
//! failed one is retried, what a DHCP lease turns into on the interface (MTU, address, routes),
//! which private ranges and configuration win, and what the health line says. `main.rs` does the
//! I/O these decisions call for.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::cidr::Ipv4Cidr;
use crate::config::Config;
use crate::dhcp::Lease;
use crate::naming::{Choice, NamingError, NetDevice, Snapshot, udev_name};
use crate::netlink::Link;
use crate::nft;
use crate::report::Health;

/// First retry delay of a failed stage.
pub const RETRY_MIN: Duration = Duration::from_millis(500);
/// Retry delay cap: a broken stage is retried (and reported) at least this often.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// Interface MTU when DHCP gives none (option 26 absent).
pub const DEFAULT_MTU: u32 = 1500;
/// Smallest MTU accepted from option 26 (RFC 2132 section 5.1).
const MIN_MTU: u16 = 68;

/// Exponential back-off: `min`, doubling to `max`, back to `min` after a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    last: Option<Duration>,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            last: None,
        }
    }

    /// The delay before the next attempt after a failure.
    pub fn failure(&mut self) -> Duration {
        let next = match self.last {
            None => self.min,
            Some(d) => d.saturating_mul(2).min(self.max),
        };
        self.last = Some(next);
        next
    }

    pub fn success(&mut self) {
        self.last = None;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(RETRY_MIN, RETRY_MAX)
    }
}

/// What has to be true, in this order, before the NAT is ready. Each needs the ones before it.
/// The table comes before the sysctls so forwarding is only ever on behind the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// The current DHCP lease is configured on the interface (MTU, address, routes).
    Address,
    /// IMDS asked (or skipped) and user-data layered over the baked configuration. Done once.
    Config,
    /// The nftables table installed and read back identical.
    Nft,
    /// Forwarding and conntrack sysctls written and read back.
    Sysctl,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::Address, Stage::Config, Stage::Nft, Stage::Sysctl];

    /// The one-word capability name used in `nat-init: error <what> ...` lines.
    pub fn what(self) -> &'static str {
        match self {
            Stage::Address => "link",
            Stage::Config => "imds",
            Stage::Sysctl => "sysctl",
            Stage::Nft => "nft",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Default)]
struct StageState {
    done: bool,
    /// When a pending stage may run (ms, boot clock); 0 means at once.
    due_ms: u64,
    backoff: Backoff,
}

/// Progress through the stages, with a retry schedule per stage. Times are boot-clock ms.
#[derive(Debug, Clone, Default)]
pub struct Stages {
    states: [StageState; 4],
    /// Whether the DHCP client holds a lease (nothing runs without one).
    lease: bool,
    /// Whether the `ready` line was printed since the last time something broke.
    announced: bool,
}

impl Stages {
    pub fn new() -> Self {
        Self::default()
    }

    /// A lease arrived or was renewed: (re)configure the address at once. A renewal does not
    /// make the NAT "not ready" (nothing was broken), so `ready` is not printed again for it.
    pub fn lease_applied_by_dhcp(&mut self) {
        self.lease = true;
        let st = &mut self.states[Stage::Address.index()];
        st.done = false;
        st.due_ms = 0;
    }

    /// The lease is gone: nothing is ready until a new one is configured. The other stages'
    /// results stay (the ruleset and sysctls do not depend on the address).
    pub fn lease_lost(&mut self) {
        self.lease = false;
        self.states[Stage::Address.index()].done = false;
        self.announced = false;
    }

    pub fn has_lease(&self) -> bool {
        self.lease
    }

    pub fn is_done(&self, s: Stage) -> bool {
        self.states[s.index()].done
    }

    /// The first stage not done, if it may run at `now_ms`; `None` while waiting (for a lease,
    /// or for a retry time) or when everything is done.
    pub fn next_due(&self, now_ms: u64) -> Option<Stage> {
        let s = self.first_pending()?;
        (self.states[s.index()].due_ms <= now_ms).then_some(s)
    }

    /// When the first pending stage may run; `None` when nothing is pending or there is no lease.
    pub fn wake_ms(&self) -> Option<u64> {
        self.first_pending().map(|s| self.states[s.index()].due_ms)
    }

    fn first_pending(&self) -> Option<Stage> {
        if !self.lease {
            return None;
        }
        Stage::ALL
            .into_iter()
            .find(|s| !self.states[s.index()].done)
    }

    pub fn succeeded(&mut self, s: Stage) {
        let st = &mut self.states[s.index()];
        st.done = true;
        st.backoff.success();
    }

    /// Schedules the retry of a failed stage; returns the delay chosen. A failed table also
    /// undoes the sysctl stage: the caller switches forwarding off (no unfiltered forwarding),
    /// and the sysctl stage switches it back on once the table is verified again.
    pub fn failed(&mut self, s: Stage, now_ms: u64) -> Duration {
        if s == Stage::Nft {
            self.states[Stage::Sysctl.index()].done = false;
        }
        let st = &mut self.states[s.index()];
        st.done = false;
        let d = st.backoff.failure();
        st.due_ms = now_ms.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        d
    }

    /// Something found `s` broken (drift, renewal): redo it from `now_ms`, and announce again
    /// once everything holds.
    pub fn invalidate(&mut self, s: Stage, now_ms: u64) {
        let st = &mut self.states[s.index()];
        st.done = false;
        st.due_ms = now_ms;
        self.announced = false;
    }

    pub fn all_done(&self) -> bool {
        self.lease && self.states.iter().all(|s| s.done)
    }

    /// True exactly once each time everything becomes done: print `ready` then.
    pub fn take_announcement(&mut self) -> bool {
        if self.all_done() && !self.announced {
            self.announced = true;
            return true;
        }
        false
    }

    pub fn announced(&self) -> bool {
        self.announced
    }
}

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
) -> Result<LeasePlan, LeaseError> {
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
    })
}

/// What the user-data is, as far as nat-init is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserData<'a> {
    /// None, or only whitespace.
    Absent,
    /// A script or cloud-init document meant for another tool: ignored, said so.
    Foreign(&'static str),
    /// A nat-init TOML document (or an attempt at one: errors are reported).
    Toml(&'a str),
}

/// Sorts user-data: shell scripts (`#!`), cloud-init documents (`#cloud-config`, MIME
/// multipart) and gzip are not meant for nat-init; anything else is parsed as its TOML.
pub fn classify_user_data(text: Option<&str>) -> UserData<'_> {
    let Some(t) = text else {
        return UserData::Absent;
    };
    let head = t.trim_start();
    if head.is_empty() {
        UserData::Absent
    } else if head.starts_with("#!") {
        UserData::Foreign("a script")
    } else if head.starts_with("#cloud-") || head.starts_with("Content-Type: multipart") {
        UserData::Foreign("a cloud-init document")
    } else if t.starts_with('\u{1f}') {
        UserData::Foreign("compressed")
    } else {
        UserData::Toml(t)
    }
}

/// Where the private ranges came from, for the info line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangesFrom {
    Config,
    Imds,
    Defaults,
}

impl RangesFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            RangesFrom::Config => "config",
            RangesFrom::Imds => "imds",
            RangesFrom::Defaults => "defaults",
        }
    }
}

/// The private ranges: configured ones win, then the VPC's CIDRs from IMDS, then RFC 1918 and
/// 100.64.0.0/10. Sorted and deduplicated so the ruleset and the ready line are deterministic.
pub fn private_ranges(cfg: &Config, vpc: Option<&[Ipv4Cidr]>) -> (Vec<Ipv4Cidr>, RangesFrom) {
    let (mut v, from) = match (&cfg.private_ranges, vpc) {
        (Some(r), _) if !r.is_empty() => (r.clone(), RangesFrom::Config),
        (_, Some(v)) if !v.is_empty() => (v.to_vec(), RangesFrom::Imds),
        _ => (Ipv4Cidr::private_defaults(), RangesFrom::Defaults),
    };
    if from != RangesFrom::Defaults {
        v.sort_unstable();
        v.dedup();
    }
    (v, from)
}

/// Conntrack table size and buckets: configured values win; 0 sizes from RAM, and buckets
/// default to half the size.
pub fn conntrack_sizing(cfg_max: u32, cfg_buckets: u32, mem_total_bytes: u64) -> (u32, u32) {
    let (ram_max, _) = crate::sysctl::conntrack_size_for_ram(mem_total_bytes);
    let max = if cfg_max == 0 { ram_max } else { cfg_max };
    let buckets = if cfg_buckets == 0 {
        (max / 2).max(1)
    } else {
        cfg_buckets
    };
    (max, buckets)
}

/// Where the kernel lists tracked connections (CONFIG_NF_CONNTRACK_PROCFS, on in Debian's
/// kernels); flows in the flowtable carry `[OFFLOAD]` (`[HW_OFFLOAD]` in hardware).
pub const PROC_CONNTRACK: &str = "/proc/net/nf_conntrack";

/// Counts the offloaded flows in the text of [`PROC_CONNTRACK`], reading line by line so a full
/// table is never held in memory.
pub fn count_offloaded(r: impl std::io::BufRead) -> std::io::Result<u64> {
    let mut n = 0;
    for line in r.lines() {
        let line = line?;
        if line.contains(" [OFFLOAD] ") || line.contains(" [HW_OFFLOAD] ") {
            n += 1;
        }
    }
    Ok(n)
}

/// The health line from the table's counters and the conntrack and lease figures. `offloaded`
/// is the number of flows in the flowtable now ([`count_offloaded`]); when that could not be
/// read, the `flow add` rule's packet counter stands in. Zero without a flowtable.
pub fn health(
    c: &nft::Counters,
    flowtable: bool,
    offloaded: Option<u64>,
    conntrack: u64,
    conntrack_max: u64,
    lease_left_s: Option<u64>,
) -> Health {
    let offloaded = match (flowtable, offloaded) {
        (false, _) => 0,
        (true, Some(n)) => n,
        (true, None) => c.rule(nft::RULE_FWD_OFFLOAD).map_or(0, |(p, _)| p),
    };
    Health {
        forwarded_packets: c.forwarded_packets,
        forwarded_bytes: c.forwarded_bytes,
        dropped: c.dropped_packets,
        conntrack,
        conntrack_max,
        lease_left_s: lease_left_s.unwrap_or(0),
        offloaded,
    }
}

/// Keeps a repeating error from flooding the console: a line is printed when it differs from
/// the previous one or when `gap_ms` has passed since that was printed.
#[derive(Debug, Clone, Default)]
pub struct Throttle {
    last: Option<(String, u64)>,
}

impl Throttle {
    pub fn should_print(&mut self, line: &str, now_ms: u64, gap_ms: u64) -> bool {
        match &self.last {
            Some((l, at)) if l == line && now_ms.saturating_sub(*at) < gap_ms => false,
            _ => {
                self.last = Some((line.to_string(), now_ms));
                true
            }
        }
    }
}

/// `--config PATH`; anything else is a usage error.
pub fn parse_args(args: &[String]) -> Result<Option<String>, String> {
    let mut config = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => match it.next() {
                Some(p) if !p.is_empty() => config = Some(p.clone()),
                _ => return Err("--config needs a path".to_string()),
            },
            other => {
                return Err(format!(
                    "unexpected argument {other:?}; usage: nat-init [--config PATH]"
                ));
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::naming::PciAddr;

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
        }
    }

    #[test]
    fn backoff_doubles_to_cap_and_resets() {
        let mut b = Backoff::default();
        let got: Vec<u64> = (0..9).map(|_| b.failure().as_millis() as u64).collect();
        assert_eq!(
            got,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        b.success();
        assert_eq!(b.failure(), Duration::from_millis(500));
        let mut odd = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(odd.failure(), Duration::from_secs(5));
        assert_eq!(odd.failure(), Duration::from_secs(5));
    }

    #[test]
    fn stages_wait_for_a_lease_then_run_in_order() {
        let mut s = Stages::new();
        assert_eq!(s.next_due(0), None, "nothing without a lease");
        assert_eq!(s.wake_ms(), None);
        s.lease_applied_by_dhcp();
        assert_eq!(s.next_due(0), Some(Stage::Address));
        s.succeeded(Stage::Address);
        assert_eq!(s.next_due(0), Some(Stage::Config));
        s.succeeded(Stage::Config);
        assert_eq!(s.next_due(0), Some(Stage::Nft));
        s.succeeded(Stage::Nft);
        assert!(!s.take_announcement());
        assert_eq!(s.next_due(0), Some(Stage::Sysctl));
        s.succeeded(Stage::Sysctl);
        assert_eq!(s.next_due(0), None);
        assert!(s.all_done());
        assert!(s.take_announcement());
        assert!(!s.take_announcement(), "announced once");
    }

    #[test]
    fn failed_stage_is_retried_with_backoff_and_blocks_later_ones() {
        let mut s = Stages::new();
        s.lease_applied_by_dhcp();
        for st in [Stage::Address, Stage::Config] {
            s.succeeded(st);
        }
        assert_eq!(s.failed(Stage::Nft, 1000), Duration::from_millis(500));
        assert_eq!(s.next_due(1499), None);
        assert_eq!(s.wake_ms(), Some(1500));
        assert_eq!(s.next_due(1500), Some(Stage::Nft));
        assert_eq!(s.failed(Stage::Nft, 1500), Duration::from_secs(1));
        assert_eq!(s.wake_ms(), Some(2500));
        s.succeeded(Stage::Nft);
        assert_eq!(
            s.next_due(2500),
            Some(Stage::Sysctl),
            "forwarding after the table"
        );
        s.succeeded(Stage::Sysctl);
        assert!(s.take_announcement());
        // A later failure starts the back-off over, and takes forwarding down with it.
        assert_eq!(s.failed(Stage::Nft, 9000), Duration::from_millis(500));
        assert!(!s.is_done(Stage::Sysctl));
        assert!(!s.all_done());
        s.succeeded(Stage::Nft);
        assert_eq!(s.next_due(9000), Some(Stage::Sysctl));
        // A failing sysctl stage is retried on its own.
        let mut s = Stages::new();
        s.lease_applied_by_dhcp();
        for st in [Stage::Address, Stage::Config, Stage::Nft] {
            s.succeeded(st);
        }
        s.failed(Stage::Sysctl, 0);
        assert!(s.is_done(Stage::Nft));
        assert_eq!(s.next_due(10_000), Some(Stage::Sysctl));
    }

    #[test]
    fn renewal_redoes_the_address_without_reannouncing_after_success() {
        let mut s = Stages::new();
        s.lease_applied_by_dhcp();
        for st in Stage::ALL {
            s.succeeded(st);
        }
        assert!(s.take_announcement());
        s.lease_applied_by_dhcp();
        assert_eq!(s.next_due(5), Some(Stage::Address));
        s.succeeded(Stage::Address);
        assert!(s.all_done());
        assert!(!s.take_announcement(), "a renewal is not a new ready");
    }

    #[test]
    fn drift_and_lease_loss_reannounce() {
        let mut s = Stages::new();
        s.lease_applied_by_dhcp();
        for st in Stage::ALL {
            s.succeeded(st);
        }
        assert!(s.take_announcement());
        s.invalidate(Stage::Nft, 100);
        assert!(!s.announced());
        assert_eq!(s.next_due(100), Some(Stage::Nft));
        s.succeeded(Stage::Nft);
        assert!(s.take_announcement());
        s.lease_lost();
        assert!(!s.all_done());
        assert_eq!(s.next_due(1_000_000), None, "no lease: wait for DHCP");
        assert!(s.is_done(Stage::Nft), "the ruleset stays");
        s.lease_applied_by_dhcp();
        assert_eq!(s.next_due(0), Some(Stage::Address));
        s.succeeded(Stage::Address);
        assert!(s.take_announcement());
    }

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

    #[test]
    fn lease_plan_for_a_vpc_lease() {
        let p = plan_lease(&lease(), 10_000, &[], 1500).unwrap();
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
        let p = plan_lease(&lease(), 10_000 + 600_500, &[], 1500).unwrap();
        assert_eq!(p.valid_lft_s, 2999);
    }

    #[test]
    fn lease_plan_mtu_rules() {
        let mut l = lease();
        l.mtu = None;
        let p = plan_lease(&l, 10_000, &[], 1500).unwrap();
        assert_eq!(p.mtu, 1500);
        l.mtu = Some(40);
        assert_eq!(plan_lease(&l, 10_000, &[], 1500).unwrap().mtu, 1500);
        // The default route never exceeds the interface MTU.
        l.mtu = Some(1400);
        let p = plan_lease(&l, 10_000, &[], 1500).unwrap();
        assert_eq!(p.routes[0].mtu, Some(1400));
        l.mtu = Some(9001);
        let p = plan_lease(&l, 10_000, &[], 9001).unwrap();
        assert_eq!(p.routes[0].mtu, Some(9001));
    }

    #[test]
    fn refused_mtu_caps_the_routes() {
        let p = plan_lease(&lease(), 10_000, &[], 1500)
            .unwrap()
            .with_link_mtu(1280);
        assert_eq!(p.mtu, 1280);
        assert_eq!(p.routes[0].mtu, Some(1280));
        let p = plan_lease(&lease(), 10_000, &[], 1500)
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
        let p = plan_lease(&lease(), 10_000, &existing, 1500).unwrap();
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
        let p = plan_lease(&l, 10_000, &[], 1500).unwrap();
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
            plan_lease(&l, 10_000, &[], 1500),
            Err(LeaseError::NoRouter { .. })
        ));
        let l = lease();
        assert!(matches!(
            plan_lease(&l, 10_000 + 3_600_000, &[], 1500),
            Err(LeaseError::Expired { .. })
        ));
        let mut l = lease();
        l.lease_s = u32::MAX;
        let p = plan_lease(&l, 99_999_999, &[], 1500).unwrap();
        assert_eq!(p.valid_lft_s, u32::MAX);
    }

    #[test]
    fn user_data_kinds() {
        assert_eq!(classify_user_data(None), UserData::Absent);
        assert_eq!(classify_user_data(Some(" \n")), UserData::Absent);
        assert!(matches!(
            classify_user_data(Some("#!/bin/sh\necho\n")),
            UserData::Foreign(_)
        ));
        assert!(matches!(
            classify_user_data(Some("#cloud-config\n")),
            UserData::Foreign(_)
        ));
        assert!(matches!(
            classify_user_data(Some("\u{1f}\u{8b}...")),
            UserData::Foreign(_)
        ));
        assert_eq!(
            classify_user_data(Some("# nat-init\nrp_filter = 1\n")),
            UserData::Toml("# nat-init\nrp_filter = 1\n")
        );
    }

    #[test]
    fn private_range_precedence() {
        let vpc = [
            cidr("10.1.0.0/16"),
            cidr("10.0.0.0/16"),
            cidr("10.1.0.0/16"),
        ];
        let cfg = Config::default();
        assert_eq!(
            private_ranges(&cfg, Some(&vpc)),
            (
                vec![cidr("10.0.0.0/16"), cidr("10.1.0.0/16")],
                RangesFrom::Imds
            )
        );
        assert_eq!(
            private_ranges(&cfg, None),
            (Ipv4Cidr::private_defaults(), RangesFrom::Defaults)
        );
        assert_eq!(private_ranges(&cfg, Some(&[])).1, RangesFrom::Defaults);
        let pinned = Config {
            private_ranges: Some(vec![cidr("192.168.0.0/16")]),
            ..Config::default()
        };
        assert_eq!(
            private_ranges(&pinned, Some(&vpc)),
            (vec![cidr("192.168.0.0/16")], RangesFrom::Config)
        );
    }

    #[test]
    fn conntrack_sizing_rules() {
        const MIB: u64 = 1 << 20;
        assert_eq!(conntrack_sizing(0, 0, 512 * MIB), (131072, 65536));
        assert_eq!(conntrack_sizing(100_000, 0, 512 * MIB), (100_000, 50_000));
        assert_eq!(conntrack_sizing(0, 4096, 512 * MIB), (131072, 4096));
        assert_eq!(conntrack_sizing(1, 0, 0), (1, 1));
    }

    #[test]
    fn health_from_counters() {
        let c = nft::Counters {
            forwarded_packets: 10,
            forwarded_bytes: 15000,
            dropped_packets: 2,
            dropped_bytes: 120,
            masqueraded_flows: 3,
            rules: vec![("forward".into(), nft::RULE_FWD_OFFLOAD.into(), 6, 9000)],
        };
        let h = health(&c, true, None, 7, 65536, Some(3500));
        assert_eq!(
            h.to_string(),
            "nat-init: health forwarded_packets=10 forwarded_bytes=15000 dropped=2 conntrack=7/65536 lease_left_s=3500 offloaded=6"
        );
        let h = health(&c, false, Some(4), 7, 65536, None);
        assert_eq!((h.offloaded, h.lease_left_s), (0, 0));
        assert_eq!(health(&c, true, Some(4), 7, 65536, None).offloaded, 4);
    }

    #[test]
    fn offloaded_flows_are_counted_from_conntrack() {
        let text = "\
ipv4     2 tcp      6 src=10.0.1.2 dst=198.51.100.2 sport=40000 dport=80 src=198.51.100.2 dst=198.51.100.1 sport=80 dport=40000 [OFFLOAD] mark=0 zone=0 use=3
ipv4     2 tcp      6 431999 ESTABLISHED src=10.0.1.2 dst=198.51.100.2 sport=40001 dport=80 src=198.51.100.2 dst=198.51.100.1 sport=80 dport=40001 [ASSURED] mark=0 zone=0 use=2
ipv4     2 udp      17 src=10.0.1.2 dst=198.51.100.2 sport=5000 dport=53 src=198.51.100.2 dst=198.51.100.1 sport=53 dport=5000 [HW_OFFLOAD] mark=0 zone=0 use=3
ipv4     2 udp      17 29 src=10.0.1.2 dst=198.51.100.2 sport=5001 dport=53 [UNREPLIED] src=198.51.100.2 dst=198.51.100.1 sport=53 dport=5001 mark=0 zone=0 use=2
";
        assert_eq!(count_offloaded(text.as_bytes()).unwrap(), 2);
        assert_eq!(count_offloaded(&b""[..]).unwrap(), 0);
    }

    #[test]
    fn throttle_suppresses_repeats_only() {
        let mut t = Throttle::default();
        assert!(t.should_print("a", 0, 1000));
        assert!(!t.should_print("a", 999, 1000));
        assert!(t.should_print("b", 999, 1000));
        assert!(t.should_print("a", 1000, 1000));
        assert!(!t.should_print("a", 1500, 1000));
        assert!(t.should_print("a", 2000, 1000));
    }

    #[test]
    fn args() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_args(&s(&[])), Ok(None));
        assert_eq!(
            parse_args(&s(&["--config", "/tmp/x.toml"])),
            Ok(Some("/tmp/x.toml".into()))
        );
        assert!(parse_args(&s(&["--config"])).is_err());
        assert!(parse_args(&s(&["--bogus"])).is_err());
    }
}

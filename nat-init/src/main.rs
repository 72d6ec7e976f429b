//! nat-init, the NAT service PID 1 starts and restarts: finds and names the primary interface,
//! leases its address over DHCP, reads IMDS, sets the sysctls, installs and verifies the
//! nftables table, prints `nat-init: ready ...`, then keeps the lease renewed and checks for
//! drift, printing a health line every `health_interval` seconds. Every failure is printed as
//! `nat-init: error <what> <why>` and retried with back-off; it never exits on its own. It is
//! safe to restart at any point: everything it sets is re-applied idempotently, and what is
//! already in place (addresses, the verified table) keeps the NAT working meanwhile.
//!
//! The decisions live in `nat_init::service` (unit-tested); this file does their I/O.

use std::fmt::Display;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use nat_init::cidr::Ipv4Cidr;
use nat_init::config::{self, Config};
use nat_init::dhcp::{self, Lease, LeaseChange};
use nat_init::imds;
use nat_init::naming;
use nat_init::netlink::Rtnl;
use nat_init::nft::{self, Nfnl, RulesetSpec};
use nat_init::report::{self, Ready};
use nat_init::service::{self, Backoff, LeasePlan, Stage, Stages, Throttle, UserData};
use nat_init::sysctl::{self, SysctlSettings};

const PROC_SYS: &str = sysctl::PROC_SYS;
const SYS: &str = sysctl::SYS;
/// How long the primary interface may take to appear before it is reported missing.
const LINK_APPEAR: Duration = Duration::from_secs(10);
/// How long to wait for carrier before starting DHCP anyway (and saying so).
const CARRIER_WAIT: Duration = Duration::from_secs(10);
/// A repeating DHCP socket error is printed again after this long.
const DHCP_ERROR_GAP_MS: u64 = 30_000;
/// Longest single wait in the main loop, so nothing is starved by a far deadline.
const MAX_WAIT_MS: u64 = 60_000;
/// Cap of the interval between `no lease` error lines.
const NO_LEASE_REPORT_MAX: Duration = Duration::from_secs(300);

/// One console line. Write errors are ignored: a missing console must not stop the NAT.
fn say(line: impl Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn info(msg: impl Display) {
    say(format_args!("{} {msg}", report::PREFIX));
}

fn error(what: &str, why: impl Display) {
    say(report::error_line(what, &why));
}

fn now_ms() -> u64 {
    report::boot_elapsed_ms().unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn human(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn join(ranges: &[Ipv4Cidr]) -> String {
    ranges
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

extern "C" fn on_sigterm(_: libc::c_int) {
    const MSG: &[u8] = b"nat-init: stopping on SIGTERM; the ruleset stays in place\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe, and MSG is a static buffer. Exiting
    // from the handler is what makes the stop prompt even in the middle of a blocking call.
    unsafe {
        libc::write(libc::STDOUT_FILENO, MSG.as_ptr().cast(), MSG.len());
        libc::_exit(0);
    }
}

/// SIGTERM (init stopping services at shutdown) and SIGINT end the process with status 0.
fn install_signal_handlers() -> Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_sigterm),
        SaFlags::empty(),
        SigSet::all(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only calls async-signal-safe functions.
        unsafe { nix::sys::signal::sigaction(sig, &action) }
            .with_context(|| format!("installing the {sig} handler"))?;
    }
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None)
        .context("unblocking SIGTERM")?;
    Ok(())
}

/// The primary interface once it is up: final name, index, MAC.
struct Iface {
    name: String,
    index: u32,
    mac: [u8; 6],
}

/// Finds, renames and brings up the primary interface, waiting for it to appear.
fn setup_link(cfg: &Config) -> Iface {
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
                        human(Duration::from_secs(start.elapsed().as_secs())),
                        human(d)
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
    let choice = service::resolve_interface(
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

struct Service {
    config_path: String,
    baked: Option<String>,
    cfg: Config,
    iface: Iface,
    client: dhcp::Client,
    /// The lease the DHCP client holds (the last Apply).
    lease: Option<Lease>,
    /// What the lease was turned into on the interface, once configured.
    applied: Option<LeasePlan>,
    stages: Stages,
    private: Vec<Ipv4Cidr>,
    ruleset: Option<nft::Ruleset>,
    flowtable_active: bool,
    flowtable_said: Option<String>,
    sysctl_plan: Vec<(String, String)>,
    global_ro_said: bool,
    next_health_ms: u64,
    dhcp_errors: Throttle,
    no_lease_since_ms: u64,
    no_lease_report_ms: u64,
    no_lease_backoff: Backoff,
}

impl Service {
    fn new(config_path: String, baked: Option<String>, cfg: Config, iface: Iface) -> Self {
        let salt = report::boot_elapsed_ms().unwrap_or(0) ^ u64::from(std::process::id()) << 32;
        let client = dhcp::Client::new(
            &iface.name,
            iface.index,
            iface.mac,
            dhcp::seed(iface.mac, salt),
        );
        let now = now_ms();
        let timeout = Duration::from_secs(u64::from(cfg.dhcp_timeout));
        Service {
            config_path,
            baked,
            client,
            lease: None,
            applied: None,
            stages: Stages::new(),
            private: Vec::new(),
            ruleset: None,
            flowtable_active: false,
            flowtable_said: None,
            sysctl_plan: Vec::new(),
            global_ro_said: false,
            next_health_ms: u64::MAX,
            dhcp_errors: Throttle::default(),
            no_lease_since_ms: now,
            no_lease_report_ms: now.saturating_add(ms(timeout)),
            no_lease_backoff: Backoff::new(timeout, NO_LEASE_REPORT_MAX.max(timeout)),
            cfg,
            iface,
        }
    }

    fn run(&mut self) -> ! {
        loop {
            self.run_due_stages();
            let now = now_ms();
            if self.stages.take_announcement() {
                self.announce();
                self.next_health_ms = now_ms() + u64::from(self.cfg.health_interval) * 1000;
            }
            if now >= self.next_health_ms {
                self.next_health_ms = now + u64::from(self.cfg.health_interval) * 1000;
                if self.stages.announced() {
                    self.health_tick();
                }
            }
            if self.lease.is_none() && now >= self.no_lease_report_ms {
                error(
                    "dhcp",
                    format_args!(
                        "no lease on {} after {} s (client state {:?}); still trying",
                        self.iface.name,
                        now.saturating_sub(self.no_lease_since_ms) / 1000,
                        self.client.machine().state()
                    ),
                );
                self.no_lease_report_ms = now + ms(self.no_lease_backoff.failure());
            }
            let mut wake = self.next_health_ms;
            if let Some(w) = self.stages.wake_ms() {
                wake = wake.min(w);
            }
            if self.lease.is_none() {
                wake = wake.min(self.no_lease_report_ms);
            }
            let wait = wake.saturating_sub(now_ms()).min(MAX_WAIT_MS);
            let step = self.client.step(Duration::from_millis(wait));
            let now = now_ms();
            for e in step.errors {
                let line = report::error_chain_line("dhcp", &e);
                if self.dhcp_errors.should_print(&line, now, DHCP_ERROR_GAP_MS) {
                    say(line);
                }
            }
            for change in step.changes {
                self.on_lease_change(change);
            }
        }
    }

    fn run_due_stages(&mut self) {
        while let Some(stage) = self.stages.next_due(now_ms()) {
            let r = match stage {
                Stage::Address => self.configure_address(),
                Stage::Config => self.load_config(),
                Stage::Sysctl => self.apply_sysctls(),
                Stage::Nft => self.install_ruleset(),
            };
            match r {
                Ok(()) => self.stages.succeeded(stage),
                Err(e) => {
                    let d = self.stages.failed(stage, now_ms());
                    error(
                        stage.what(),
                        format_args!("{e:#}; retrying in {}", human(d)),
                    );
                    if stage == Stage::Nft {
                        forwarding_off();
                    }
                    return;
                }
            }
        }
    }

    fn on_lease_change(&mut self, change: LeaseChange) {
        match change {
            LeaseChange::Apply(l) => {
                let left = l.left_s(now_ms());
                if self.lease.is_some() {
                    info(format_args!(
                        "dhcp renewed addr={}/{} lease_s={}",
                        l.addr, l.prefix_len, left
                    ));
                } else {
                    info(format_args!(
                        "dhcp lease addr={}/{} gw={} mtu={} lease_s={} server={}",
                        l.addr,
                        l.prefix_len,
                        l.router.map_or("-".to_string(), |g| g.to_string()),
                        service::lease_mtu(&l),
                        left,
                        l.server
                    ));
                }
                self.lease = Some(l);
                self.stages.lease_applied_by_dhcp();
            }
            LeaseChange::Drop(l) => {
                error(
                    "dhcp",
                    format_args!(
                        "lease lost addr={}/{} (expired or refused by {}); NAT is down until a new lease",
                        l.addr, l.prefix_len, l.server
                    ),
                );
                if let Err(e) = self.remove_lease(&l) {
                    error("link", format_args!("{e:#}"));
                }
                self.lease = None;
                self.applied = None;
                self.stages.lease_lost();
                let now = now_ms();
                self.no_lease_since_ms = now;
                self.no_lease_backoff.success();
                self.no_lease_report_ms =
                    now.saturating_add(ms(Duration::from_secs(u64::from(self.cfg.dhcp_timeout))));
            }
        }
    }

    fn remove_lease(&mut self, l: &Lease) -> Result<()> {
        let mut rtnl = Rtnl::open()?;
        let default = Ipv4Cidr::containing(Ipv4Addr::UNSPECIFIED, 0);
        match rtnl.delete_route(default, l.router, Some(self.iface.index)) {
            Err(e) if e.errno() == Some(libc::ESRCH) => {}
            r => r?,
        }
        match rtnl.delete_address(self.iface.index, l.addr, l.prefix_len) {
            Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => {}
            r => r?,
        }
        Ok(())
    }

    /// Stage::Address: MTU, address with lifetimes, routes.
    fn configure_address(&mut self) -> Result<()> {
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
        let mut plan =
            service::plan_lease(&lease, now_ms(), &existing, self.cfg.default_route_mtu)?;
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
        for r in &plan.routes {
            rtnl.replace_route(r.dst, r.gateway, index, r.src, r.mtu)?;
        }
        self.applied = Some(plan);
        Ok(())
    }

    /// Stage::Config: IMDS (VPC ranges, user-data), layered configuration, private ranges.
    fn load_config(&mut self) -> Result<()> {
        let baked = self
            .baked
            .as_deref()
            .map(|t| (t, self.config_path.as_str()));
        let imds_on = Config::layered(baked, None).config.imds;
        let mut vpc: Option<Vec<Ipv4Cidr>> = None;
        let mut user_data: Option<String> = None;
        let mut unavailable: Option<String> = None;
        if !imds_on {
            info("imds disabled by config");
        } else {
            match imds::fetch(&imds::Endpoint::default()) {
                Ok(d) => {
                    info(format_args!(
                        "imds instance={} mac={} vpc={}",
                        d.instance_id,
                        d.mac,
                        join(&d.vpc_cidrs)
                    ));
                    let ours = mac_text(&self.iface.mac);
                    if !d.mac.eq_ignore_ascii_case(&ours) {
                        error(
                            "imds",
                            format_args!(
                                "the primary ENI is {} but {} is {ours}: is the right interface chosen?",
                                d.mac, self.iface.name
                            ),
                        );
                    }
                    vpc = Some(d.vpc_cidrs);
                    match service::classify_user_data(d.user_data.as_deref()) {
                        UserData::Absent => {}
                        UserData::Foreign(kind) => {
                            info(format_args!(
                                "user-data is {kind}, not a nat-init document; ignored"
                            ));
                        }
                        UserData::Toml(t) => user_data = Some(t.to_string()),
                    }
                }
                Err(e) => unavailable = Some(format!("{e:#}")),
            }
        }
        let layered = Config::layered(baked, user_data.as_deref());
        for e in layered
            .errors
            .iter()
            .filter(|e| e.source_name == "user-data")
        {
            error(
                "config",
                format_args!("{e}; continuing on {}", self.config_path),
            );
        }
        if user_data.is_some() && layered.errors.iter().all(|e| e.source_name != "user-data") {
            info("config user-data applied over the baked configuration");
        }
        let new = layered.config;
        if (&new.interface, new.rename, &new.name)
            != (&self.cfg.interface, self.cfg.rename, &self.cfg.name)
        {
            info("config interface, rename and name from user-data apply from the next boot only");
        }
        let (ranges, from) = service::private_ranges(&new, vpc.as_deref());
        match unavailable {
            Some(why) => info(format_args!(
                "imds unavailable ({why}); using private={} from {}",
                join(&ranges),
                from.as_str()
            )),
            None => info(format_args!(
                "config private={} from {}",
                join(&ranges),
                from.as_str()
            )),
        }
        let route_mtu_changed = new.default_route_mtu != self.cfg.default_route_mtu;
        self.private = ranges;
        self.cfg = new;
        if route_mtu_changed {
            self.stages.invalidate(Stage::Address, 0);
        }
        Ok(())
    }

    /// Stage::Sysctl.
    fn apply_sysctls(&mut self) -> Result<()> {
        let mem = sysctl::mem_total(Path::new("/proc/meminfo"))?;
        let (max, buckets) =
            service::conntrack_sizing(self.cfg.conntrack_max, self.cfg.conntrack_buckets, mem);
        let settings = SysctlSettings {
            iface: self.iface.name.clone(),
            rp_filter: self.cfg.rp_filter,
            conntrack_max: max,
            conntrack_buckets: buckets,
            tcp_established_timeout_s: self.cfg.tcp_established_timeout,
        };
        let mut plan = sysctl::plan(&settings);
        let root = Path::new(PROC_SYS);
        // Only outside the initial network namespace (the host test): the kernel makes the
        // global conntrack size read-only there. On the appliance nat-init runs in the initial
        // namespace, where it is writable and a failure to set it is an error like any other.
        let global_ro = sysctl::is_read_only(root, sysctl::CONNTRACK_MAX_SYSCTL);
        if global_ro {
            plan.retain(|(k, _)| k != sysctl::CONNTRACK_MAX_SYSCTL);
            if !self.global_ro_said {
                info(format_args!(
                    "sysctl {} is read-only in this network namespace (global, owned by the initial one); conntrack size and buckets left as they are",
                    sysctl::CONNTRACK_MAX_SYSCTL
                ));
                self.global_ro_said = true;
            }
        }
        sysctl::apply(root, &plan)?;
        if !global_ro {
            sysctl::apply_conntrack_buckets(Path::new(SYS), root, buckets)?;
        }
        info(format_args!(
            "sysctl ip_forward=1 send_redirects=0 rp_filter={} conntrack_max={} conntrack_buckets={} tcp_established_timeout={}",
            self.cfg.rp_filter,
            if global_ro {
                "host".to_string()
            } else {
                max.to_string()
            },
            if global_ro {
                "host".to_string()
            } else {
                buckets.to_string()
            },
            self.cfg.tcp_established_timeout
        ));
        self.sysctl_plan = plan;
        Ok(())
    }

    /// Stage::Nft: build, keep an identical table already installed (a restart), else install
    /// atomically and read back.
    fn install_ruleset(&mut self) -> Result<()> {
        let mut sock = Nfnl::open()?;
        let supported = self.cfg.flowtable && nft::flowtable_supported(&mut sock);
        let spec = RulesetSpec {
            table: nft::TABLE.to_string(),
            iface: self.iface.name.clone(),
            private: self.private.clone(),
            flowtable: supported,
            mss_clamp: self.cfg.mss_clamp,
            icmp_rate_per_s: self.cfg.icmp_rate,
        };
        let r = nft::build(&spec);
        match nft::verify(&mut sock, &r) {
            Ok(()) => info(format_args!(
                "nft table ip {} already installed and verified; kept",
                r.table
            )),
            Err(_) => {
                nft::apply(&mut sock, &r)
                    .with_context(|| format!("installing table ip {}", r.table))?;
                nft::verify(&mut sock, &r)
                    .with_context(|| format!("verifying table ip {} after install", r.table))?;
                info(format_args!(
                    "nft table ip {} installed and verified",
                    r.table
                ));
            }
        }
        let line = if !self.cfg.flowtable {
            format!("flowtable {} disabled by config", nft::FLOWTABLE)
        } else if supported {
            format!("flowtable {} on {} active", nft::FLOWTABLE, self.iface.name)
        } else {
            format!(
                "flowtable {} unavailable in this kernel; established flows take the slow path",
                nft::FLOWTABLE
            )
        };
        if self.flowtable_said.as_deref() != Some(line.as_str()) {
            info(&line);
            self.flowtable_said = Some(line);
        }
        self.flowtable_active = supported;
        self.ruleset = Some(r);
        Ok(())
    }

    fn announce(&self) {
        let Some(p) = &self.applied else { return };
        say(Ready {
            iface: &self.iface.name,
            addr: p.addr,
            prefix_len: p.prefix_len,
            gateway: p.gateway,
            mtu: p.mtu,
            private: &self.private,
            elapsed_ms: now_ms(),
        });
    }

    /// The health line (unless the table drifted) and drift checks: a drifted stage is redone
    /// at once, and `ready` printed again once everything holds.
    fn health_tick(&mut self) {
        let now = now_ms();
        let lease_left = self.lease.as_ref().map(|l| l.left_s(now));
        let conntrack = sysctl::conntrack_count(Path::new(PROC_SYS)).unwrap_or(0);
        let conntrack_max =
            std::fs::read_to_string(Path::new(PROC_SYS).join(sysctl::CONNTRACK_MAX_SYSCTL))
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
        let offloaded = if self.flowtable_active {
            std::fs::File::open(service::PROC_CONNTRACK)
                .and_then(|f| service::count_offloaded(std::io::BufReader::new(f)))
                .ok()
        } else {
            None
        };
        match Nfnl::open() {
            Err(e) => error("nft", format_args!("{e:#}")),
            Ok(mut sock) => {
                let drifted = match &self.ruleset {
                    Some(r) => nft::verify(&mut sock, r).err(),
                    None => None,
                };
                match drifted {
                    Some(e) => {
                        error("nft", format_args!("{e:#}; reinstalling"));
                        self.stages.invalidate(Stage::Nft, now);
                    }
                    None => match nft::counters(&mut sock, nft::TABLE) {
                        Ok(c) => say(service::health(
                            &c,
                            self.flowtable_active,
                            offloaded,
                            conntrack,
                            conntrack_max,
                            lease_left,
                        )),
                        Err(e) => error("nft", format_args!("reading counters: {e:#}")),
                    },
                }
            }
        }
        if let Err(e) = sysctl::check(Path::new(PROC_SYS), &self.sysctl_plan) {
            error("sysctl", format_args!("{e:#}; re-applying"));
            self.stages.invalidate(Stage::Sysctl, now);
        }
        if let Err(e) = self.check_address() {
            error("link", format_args!("{e:#}; re-applying the lease"));
            self.stages.invalidate(Stage::Address, now);
        }
    }

    fn check_address(&self) -> Result<()> {
        let Some(p) = &self.applied else {
            return Ok(());
        };
        let mut rtnl = Rtnl::open()?;
        let addrs = rtnl.addresses(self.iface.index)?;
        if !addrs.contains(&(p.addr, p.prefix_len)) {
            return Err(anyhow!(
                "address {}/{} is missing from {}",
                p.addr,
                p.prefix_len,
                self.iface.name
            ));
        }
        let want = p.routes.last().and_then(|r| r.mtu);
        let ok = rtnl
            .routes()?
            .iter()
            .any(|r| r.dst.prefix_len() == 0 && r.gateway == Some(p.gateway) && r.mtu == want);
        if !ok {
            return Err(anyhow!(
                "default route via {} with mtu {} is missing",
                p.gateway,
                want.unwrap_or(0)
            ));
        }
        Ok(())
    }
}

/// Without a verified table forwarding would be unfiltered (an open router): switch it off
/// until the table is back; the sysctl stage turns it on again after that.
fn forwarding_off() {
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

/// Reads the baked configuration; a missing file means the defaults, an unreadable one is
/// reported and also means the defaults.
fn read_baked(path: &str) -> Option<String> {
    match config::read_baked(Path::new(path)) {
        Ok(Some(t)) => Some(t),
        Ok(None) => {
            info(format_args!("config {path} absent; using the defaults"));
            None
        }
        Err(e) => {
            error(
                "config",
                format_args!("reading {path}: {e}; using the defaults"),
            );
            None
        }
    }
}

fn main() {
    // A bug must still leave an `error` line on the console before init restarts us.
    std::panic::set_hook(Box::new(|info| {
        error("panic", format_args!("{info}; init will restart nat-init"));
    }));
    if let Err(e) = install_signal_handlers() {
        error("signal", format_args!("{e:#}"));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config_path = match service::parse_args(&args) {
        Ok(p) => p.unwrap_or_else(|| config::BAKED_PATH.to_string()),
        Err(e) => {
            error("usage", &e);
            std::process::exit(2);
        }
    };
    info(format_args!(
        "starting version={} config={config_path}",
        env!("CARGO_PKG_VERSION")
    ));
    let baked = read_baked(&config_path);
    let layered = Config::layered(baked.as_deref().map(|t| (t, config_path.as_str())), None);
    for e in &layered.errors {
        error("config", format_args!("{e}; using the defaults"));
    }
    let cfg = layered.config;
    let iface = setup_link(&cfg);
    match Rtnl::open().and_then(|mut r| r.wait_for_carrier(iface.index, CARRIER_WAIT)) {
        Ok(true) => info(format_args!(
            "link {} up with carrier mac={}",
            iface.name,
            mac_text(&iface.mac)
        )),
        Ok(false) => error(
            "link",
            format_args!(
                "{} has no carrier after {}; starting DHCP anyway",
                iface.name,
                human(CARRIER_WAIT)
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
    Service::new(config_path, baked, cfg, iface).run()
}

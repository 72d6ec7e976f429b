//! The service's I/O, one file a stage: `nat_init::plan` decides (in files of the same names),
//! this module does what it says and prints what happened. [`start`] reads the configuration
//! and brings up the primary interface; [`Service::run`] is the loop from there on.
//! - `console`: the lines printed and the boot clock;
//! - `signals`: SIGTERM and SIGINT end the process, leaving the table in place;
//! - `link`: finds, renames and brings up the primary interface, waits for carrier;
//! - `primary`: whether that is the primary ENI IMDS names, and the switch when it is not;
//! - `dhcp`: the DHCP client's lease changes and errors, and the `no lease` report;
//! - `lease` ([`Stage::Address`]): the lease on the interface, and its drift check;
//! - `config` ([`Stage::Config`]): the baked file, IMDS and user-data, and IMDS asked again in
//!   the background when it did not answer;
//! - `ruleset` ([`Stage::Nft`]): the nftables table, installed and verified;
//! - `sysctl` ([`Stage::Sysctl`]): forwarding and conntrack, and forwarding off without a table;
//! - `health`: the `ready` line, the `health` line and the drift checks;
//! - `watchdog`: the pings that tell init the loop is alive;
//! - `aws`: the clock, the instance role and the EC2 calls, on a thread of their own;
//! - `ctsync`: conntrack replication to and from the peers, for failover;
//! - `failover`: a failover group member's heartbeats, probes, takeovers and handover;
//! - `metrics`: the CloudWatch metrics' sampler, on a thread of its own.

mod aws;
mod config;
mod console;
mod ctsync;
mod dhcp;
mod failover;
mod health;
mod lease;
mod link;
mod metrics;
mod primary;
mod ruleset;
mod signals;
mod sysctl;
pub mod watchdog;

use std::time::Duration;

use nat_init::cidr::Ipv4Cidr;
use nat_init::config::Config;
use nat_init::dhcp::Lease;
use nat_init::nft;
use nat_init::plan::{self, Backoff, LeasePlan, RangesFrom, Stage, Stages, Throttle};
use nat_init::report;

pub use console::{error, info};
use console::{ms, now_ms};
use link::Iface;
pub use signals::install_signal_handlers;

/// Longest single wait in the main loop, so nothing is starved by a far deadline.
const MAX_WAIT_MS: u64 = 60_000;
/// Longest wait while the AWS thread may have news for the loop (its events are polled).
const AWS_POLL_MS: u64 = 1_000;
/// Cap of the interval between `no lease` error lines.
const NO_LEASE_REPORT_MAX: Duration = Duration::from_secs(300);

/// The service once its interface is up: the DHCP client, the stages' schedule, and what each
/// stage last put in place (so the health check can tell drift).
pub struct Service {
    config_path: String,
    baked: Option<String>,
    cfg: Config,
    iface: Iface,
    client: nat_init::dhcp::Client,
    /// The lease the DHCP client holds (the last Apply).
    lease: Option<Lease>,
    /// What the lease was turned into on the interface, once configured.
    applied: Option<LeasePlan>,
    /// The ENI's secondary private addresses that carry Elastic IPs (from the AWS side): on
    /// the interface beside the lease's address, and the table's SNAT sources.
    secondary: Vec<std::net::Ipv4Addr>,
    /// The addresses new flows are spread across (empty: masquerade on the lease's address).
    snat: Vec<std::net::Ipv4Addr>,
    /// Sources whose new flows take one address first (a peer's subnets, while held here).
    snat_by_source: Vec<(Ipv4Cidr, std::net::Ipv4Addr)>,
    /// The AWS side's thread.
    aws: aws::Aws,
    /// The failover thread, once started (a group member, after the first `ready`).
    failover: Option<failover::Failover>,
    /// What the metrics sampler reads from the loop; the sampler runs once metrics are on.
    metrics: metrics::Handle,
    metrics_started: bool,
    stages: Stages,
    private: Vec<Ipv4Cidr>,
    private_from: RangesFrom,
    /// IMDS did not answer at boot: when to ask again (boot-clock ms), on `imds_backoff`.
    imds_retry_ms: Option<u64>,
    imds_backoff: Backoff,
    ruleset: Option<nft::Ruleset>,
    /// The DHCP server the installed table accepts replies from (none: from any).
    table_dhcp_server: Option<std::net::Ipv4Addr>,
    flowtable_active: bool,
    flowtable_said: Option<String>,
    sysctl_plan: Vec<(String, String)>,
    global_ro_said: bool,
    ipv6_absent_said: bool,
    /// What the health tick remembers between ticks.
    watch: health::Watch,
    next_health_ms: u64,
    dhcp_errors: Throttle,
    no_lease_since_ms: u64,
    no_lease_report_ms: u64,
    no_lease_backoff: Backoff,
    /// IMDS named another interface as the primary ENI: the loop switches to the one with
    /// this MAC before anything else runs.
    switch_to: Option<[u8; 6]>,
}

/// Reads the baked configuration at `config_path`, brings up the primary interface (waiting for
/// it as long as it takes) and waits a little for carrier: the service, ready to loop.
pub fn start(config_path: String) -> Service {
    let baked = config::read_baked(&config_path);
    let layered = Config::layered(baked.as_deref().map(|t| (t, config_path.as_str())), None);
    for e in &layered.errors {
        error("config", format_args!("{e}; using the defaults"));
    }
    let cfg = layered.config;
    // Only IMDS names the primary, so only then is an earlier answer worth anything.
    let primary = if cfg.imds {
        primary::remembered()
    } else {
        None
    };
    let iface = link::setup_link(&cfg, primary);
    link::wait_for_carrier(&iface);
    Service::new(config_path, baked, cfg, iface)
}

impl Service {
    fn new(config_path: String, baked: Option<String>, cfg: Config, iface: Iface) -> Self {
        let client = nat_init::dhcp::Client::new(&iface.name, iface.index, iface.mac);
        let now = now_ms();
        let timeout = Duration::from_secs(u64::from(cfg.dhcp_timeout));
        Service {
            config_path,
            baked,
            client,
            lease: None,
            applied: None,
            secondary: Vec::new(),
            snat: Vec::new(),
            snat_by_source: Vec::new(),
            aws: aws::Aws::start(),
            failover: None,
            metrics: metrics::Handle::default(),
            metrics_started: false,
            stages: Stages::new(),
            private: Vec::new(),
            private_from: RangesFrom::Defaults,
            imds_retry_ms: None,
            imds_backoff: plan::imds_backoff(),
            ruleset: None,
            table_dhcp_server: None,
            flowtable_active: false,
            flowtable_said: None,
            sysctl_plan: Vec::new(),
            global_ro_said: false,
            ipv6_absent_said: false,
            watch: health::Watch::default(),
            next_health_ms: u64::MAX,
            dhcp_errors: Throttle::default(),
            no_lease_since_ms: now,
            no_lease_report_ms: now.saturating_add(ms(timeout)),
            no_lease_backoff: Backoff::new(timeout, NO_LEASE_REPORT_MAX.max(timeout)),
            switch_to: None,
            cfg,
            iface,
        }
    }

    /// Runs the due stages, prints `ready` and `health` when it is time, reports a missing
    /// lease, then waits in the DHCP client until its next packet or the next deadline.
    pub fn run(&mut self, mut watchdog: Option<watchdog::Watchdog>) -> ! {
        loop {
            self.run_due_stages();
            if let Some(mac) = self.switch_to.take() {
                self.switch_primary(mac);
                continue;
            }
            let now = now_ms();
            self.retry_imds(now);
            if self.switch_to.is_some() {
                continue;
            }
            self.aws_events();
            self.announce_and_check(now);
            self.report_no_lease(now);
            let mut wake = self.next_health_ms.min(now.saturating_add(AWS_POLL_MS));
            if let Some(at) = self.imds_retry_ms {
                wake = wake.min(at);
            }
            if let Some(w) = self.stages.wake_ms() {
                wake = wake.min(w);
            }
            if self.lease.is_none() {
                wake = wake.min(self.no_lease_report_ms);
            }
            // init's watchdog: ping it, and wake in time for the next ping.
            if let Some(w) = &mut watchdog {
                w.ping_if_due(now_ms());
                wake = wake.min(w.due_ms());
            }
            let wait = wake.saturating_sub(now_ms()).min(MAX_WAIT_MS);
            self.dhcp_step(Duration::from_millis(wait));
        }
    }

    /// What the AWS thread needs, sent whenever it changes (it ignores repeats): once the
    /// configuration is settled and there is a lease.
    fn feed_aws(&mut self) {
        // After the first `ready`: the NAT on its own ENI comes first.
        let Some(lease) = &self.lease else { return };
        if !self.stages.announced() {
            return;
        }
        let primary = lease.addr;
        self.aws.update(aws::Inputs {
            cfg: self.cfg.aws.clone(),
            imds: self.cfg.imds,
            mac: report::mac_text(&self.iface.mac),
            primary,
            dns: lease.dns.clone(),
        });
        if let (None, Some(group)) = (&self.failover, &self.cfg.aws.failover) {
            self.failover = Some(failover::Failover::start(
                group.clone(),
                self.aws.commander(),
                primary,
                std::sync::Arc::new(ctsync::start()),
                self.metrics.clone(),
            ));
        }
        if let Ok(mut m) = self.metrics.lock() {
            m.iface.clone_from(&self.iface.name);
            m.period_s = self.cfg.aws.metrics.as_ref().map_or(0, |c| c.period_s);
        }
        if self.cfg.aws.metrics.is_some() && !self.metrics_started {
            metrics::start(self.metrics.clone(), self.aws.publisher());
            self.metrics_started = true;
        }
    }

    /// The `aws_*` and `failover*` fields of the `ready` and `health` lines.
    fn side_fields(&self) -> String {
        match &self.failover {
            Some(f) => format!("{} {}", self.aws.fields(), f.fields()),
            None => self.aws.fields(),
        }
    }

    /// The AWS thread's news: new egress addresses put the secondary addresses on the
    /// interface and rebuild the table.
    fn aws_events(&mut self) {
        self.feed_aws();
        while let Some(ev) = self.aws.event() {
            match ev {
                aws::Event::Egress {
                    secondary,
                    snat,
                    by_source,
                } => {
                    let now = now_ms();
                    if secondary != self.secondary {
                        self.secondary = secondary;
                        self.stages.invalidate(Stage::Address, now);
                    }
                    if snat != self.snat {
                        info(format_args!(
                            "egress {}",
                            if snat.is_empty() {
                                "masquerade on the lease's address".to_string()
                            } else {
                                format!(
                                    "snat across {}",
                                    snat.iter()
                                        .map(ToString::to_string)
                                        .collect::<Vec<_>>()
                                        .join(",")
                                )
                            }
                        ));
                        self.snat = snat;
                        self.stages.invalidate(Stage::Nft, now);
                    }
                    if by_source != self.snat_by_source {
                        info(format_args!(
                            "egress for a peer's subnets: {}",
                            if by_source.is_empty() {
                                "none".to_string()
                            } else {
                                by_source
                                    .iter()
                                    .map(|(c, a)| format!("{c}->{a}"))
                                    .collect::<Vec<_>>()
                                    .join(",")
                            }
                        ));
                        self.snat_by_source = by_source;
                        self.stages.invalidate(Stage::Nft, now);
                    }
                }
            }
        }
    }

    /// Runs every stage that is due, in order, until one fails (it is retried on its back-off)
    /// or the interface turns out not to be the primary ENI (nothing more is done on it).
    fn run_due_stages(&mut self) {
        while let Some(stage) = self.stages.next_due(now_ms()) {
            let r = match stage {
                Stage::Address => self.configure_address(),
                Stage::Config => self.load_config(),
                Stage::Sysctl => self.apply_sysctls(),
                Stage::Nft => self.install_ruleset(),
            };
            match r {
                Ok(()) if self.switch_to.is_some() => return,
                Ok(()) => self.stages.succeeded(stage),
                Err(e) => {
                    let d = self.stages.failed(stage, now_ms());
                    error(
                        stage.what(),
                        format_args!("{e:#}; retrying in {}", report::seconds(d)),
                    );
                    if stage == Stage::Nft {
                        sysctl::forwarding_off();
                    }
                    return;
                }
            }
        }
    }
}

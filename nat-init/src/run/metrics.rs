//! The metrics sampler, on a thread of its own: it reads conntrack's DESTROY events as they
//! come (each ended flow's last counts), and at every period boundary (wall-clock multiples
//! of `metrics_period`) dumps and zeroes the live flows' counters, reads the table's counters,
//! conntrack's statistics, memory, ENA's allowance counters and the failover roles, and hands
//! the period to the AWS thread, which publishes it (`aws/publish.rs`). `nat_init::metrics`
//! decides what each figure means; this file only reads. It never touches the NAT: a failure
//! here is an error line and a period published without the figures that could not be read.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nat_init::conntrack::socket::{Ctnl, CtnlError};
use nat_init::metrics::catalogue::Role;
use nat_init::metrics::sample::{Readings, Sampler, TableCounters};
use nat_init::metrics::traffic::Tally;
use nat_init::metrics::{Sample, period_start};
use nat_init::nft::{self, Nfnl};
use nat_init::plan::{self, Throttle};
use nat_init::{ethtool, sysctl};

use super::aws::Publisher;
use super::console::{error, info, now_ms};

/// The event socket's wait, so the boundary is never missed by more than this.
const EVENT_WAIT: Duration = Duration::from_millis(500);
/// Error lines that repeat are printed at most this often.
const REPEAT_GAP_MS: u64 = 300_000;

/// What the main loop and the failover thread tell the sampler.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    /// The primary interface (ENA's counters).
    pub iface: String,
    /// Bumped whenever the table is installed anew (its counters restart).
    pub table_generation: u64,
    /// `metrics_period`; 0 while metrics are off.
    pub period_s: u32,
    /// A failover member's role per route table, and how many role changes it has seen.
    pub failover: Option<(BTreeMap<String, Role>, u64)>,
}

pub type Handle = Arc<Mutex<Shared>>;

/// Starts the sampler thread; it samples while `period_s` is set.
pub fn start(shared: Handle, publisher: Publisher) {
    let spawned = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || Sampling::new(shared, publisher).run());
    if let Err(e) = spawned {
        error(
            "metrics",
            format_args!("cannot start the sampler thread: {e}"),
        );
    }
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

struct Sampling {
    shared: Handle,
    publisher: Publisher,
    sampler: Sampler,
    tally: Tally,
    events: Option<Ctnl>,
    dump: Option<Ctnl>,
    /// Events the kernel dropped this period (the tally is short by their flows).
    overruns: u64,
    errors: Throttle,
}

impl Sampling {
    fn new(shared: Handle, publisher: Publisher) -> Self {
        Self {
            shared,
            publisher,
            sampler: Sampler::new(),
            tally: Tally::default(),
            events: None,
            dump: None,
            overruns: 0,
            errors: Throttle::default(),
        }
    }

    fn say_error(&mut self, what: &str, line: String) {
        if self.errors.should_print(&line, now_ms(), REPEAT_GAP_MS) {
            error(what, line);
        }
    }

    fn shared(&self) -> Shared {
        self.shared.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn run(mut self) {
        let mut next_ms: Option<u64> = None;
        loop {
            let period_ms = u64::from(self.shared().period_s) * 1000;
            if period_ms == 0 {
                self.events = None;
                next_ms = None;
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            let now = unix_now_ms();
            // The first boundary, or the clock was stepped past a period: realign.
            let due = match next_ms {
                Some(n) if n > now.saturating_sub(period_ms) && n <= now + period_ms => n,
                _ => (now / period_ms + 1) * period_ms,
            };
            next_ms = Some(due);
            if now < due {
                self.read_events(Duration::from_millis(due - now).min(EVENT_WAIT));
                continue;
            }
            self.close_period(due / 1000, period_ms / 1000);
            next_ms = Some(due + period_ms);
        }
    }

    /// Waits up to `wait` for DESTROY events and adds them to the period's tally.
    fn read_events(&mut self, wait: Duration) {
        if self.events.is_none() {
            match Ctnl::subscribe_destroy(EVENT_WAIT) {
                Ok(s) => self.events = Some(s),
                Err(e) => {
                    self.say_error(
                        "metrics",
                        format!("{e}; ended flows go uncounted until it works"),
                    );
                    std::thread::sleep(wait);
                    return;
                }
            }
        }
        let Some(sock) = self.events.as_mut() else {
            return;
        };
        let mut bad = Vec::new();
        let tally = &mut self.tally;
        let r = sock.traffic_events(&mut bad, |t| tally.destroyed(&t));
        match r {
            Ok(_) => {}
            Err(CtnlError::Overrun) => self.overruns += 1,
            Err(e) => {
                self.events = None;
                self.say_error("metrics", format!("{e}; subscribing again"));
                std::thread::sleep(wait);
            }
        }
        if let Some(e) = bad.first() {
            self.say_error(
                "metrics",
                format!("{} conntrack event(s) not understood: {e}", bad.len()),
            );
        }
    }

    /// The dump that zeroes the live flows' counters, added to the tally.
    fn dump_live(&mut self) -> bool {
        if self.dump.is_none() {
            match Ctnl::open(Duration::from_secs(5)) {
                Ok(s) => self.dump = Some(s),
                Err(e) => {
                    self.say_error("metrics", format!("{e}"));
                    return false;
                }
            }
        }
        let Some(sock) = self.dump.as_mut() else {
            return false;
        };
        let tally = &mut self.tally;
        match sock.traffic_dump_zero(|t| tally.live(&t)) {
            Ok(bad) => {
                if let Some(e) = bad.first() {
                    let line = format!("{} conntrack entries not understood: {e}", bad.len());
                    self.say_error("metrics", line);
                }
                true
            }
            Err(e) => {
                self.dump = None;
                self.say_error("metrics", format!("{e}; the period goes without traffic"));
                false
            }
        }
    }

    fn close_period(&mut self, unix_s: u64, period_s: u64) {
        let shared = self.shared();
        let dumped = self.dump_live();
        let tally = std::mem::take(&mut self.tally);
        if std::mem::take(&mut self.overruns) > 0 {
            self.say_error(
                "metrics",
                "the kernel dropped conntrack events (receive buffer overrun): this period's traffic is undercounted".into(),
            );
        }
        let table = match Nfnl::open().and_then(|mut s| nft::counters(&mut s, nft::TABLE)) {
            Ok(c) => Some(TableCounters {
                generation: shared.table_generation,
                translated_flows: c.masqueraded_flows,
                first_replies: c.rule(nft::RULE_FWD_FIRST_REPLY).map_or(0, |(p, _)| p),
                dropped: c.dropped_packets,
            }),
            Err(e) => {
                self.say_error("metrics", format!("reading the table's counters: {e:#}"));
                None
            }
        };
        let conntrack_stats = std::fs::read_to_string(plan::PROC_CONNTRACK_STAT)
            .ok()
            .and_then(|t| plan::parse_conntrack_stat(&t).ok());
        let proc_sys = Path::new(sysctl::PROC_SYS);
        let conntrack = sysctl::conntrack_count(proc_sys).ok().and_then(|n| {
            std::fs::read_to_string(proc_sys.join(sysctl::CONNTRACK_MAX_SYSCTL))
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .map(|max| (n, max))
        });
        let mem_available = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| sysctl::parse_meminfo(&t, "MemAvailable"));
        let ena = ethtool::stats(&shared.iface)
            .map(|s| plan::ena_allowances(&s))
            .unwrap_or_default();
        let readings = Readings {
            tally: dumped.then_some(tally),
            table,
            conntrack_stats,
            conntrack,
            mem_available,
            ena,
            failover: shared.failover.clone(),
        };
        let period = self.sampler.period(&readings);
        for r in &period.resets {
            info(format_args!(
                "metrics: {} restarted ({:?}); its count since the last period is lost",
                r.name, r.cause
            ));
        }
        info(format_args!(
            "metrics period {} s at {}: bytes_from_source={} bytes_from_destination={} flows_live={} flows_ended={} active_tcp={}",
            period_s,
            period_start(unix_s, period_s),
            tally.from_source.bytes,
            tally.from_destination.bytes,
            tally.live,
            tally.ended,
            tally.active_tcp
        ));
        self.publisher.send(Sample {
            unix_s,
            period_s,
            counters: period.counters,
            gauges: period.gauges,
        });
    }
}

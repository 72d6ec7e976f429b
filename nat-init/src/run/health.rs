//! The `ready` line once every stage holds, and every `health_interval` seconds after it the
//! `health` line and the drift checks: a table, sysctl, address or route that changed under us
//! sends its stage back to be redone, and `ready` is printed again once everything holds.
//! conntrack dropping flows is an error line; so is a statistic that cannot be read, once
//! until it can again.

use std::path::Path;

use nat_init::nft::{self, Nfnl};
use nat_init::plan::{self, Stage};
use nat_init::report::{ConntrackStats, Ready};
use nat_init::{ethtool, sysctl};

use super::Service;
use super::console::{error, now_ms, say};

const PROC_SYS: &str = sysctl::PROC_SYS;

/// What the health tick keeps from one tick to the next.
#[derive(Debug, Default)]
pub(super) struct Watch {
    /// conntrack's statistics at the previous tick: drops are the increase since.
    conntrack_stats: Option<ConntrackStats>,
    /// A failure to read them, or the device's ethtool statistics, was said (until they can
    /// be read again).
    conntrack_stats_failed: bool,
    ethtool_failed: bool,
}

impl Service {
    /// conntrack's statistics now, and the error line if they show new drops.
    fn conntrack_stats(&mut self, conntrack: u64, conntrack_max: u64) -> Option<ConntrackStats> {
        let read = std::fs::read_to_string(plan::PROC_CONNTRACK_STAT)
            .map_err(anyhow::Error::from)
            .and_then(|t| plan::parse_conntrack_stat(&t).map_err(anyhow::Error::from));
        let now = match read {
            Ok(s) => s,
            Err(e) => {
                if !std::mem::replace(&mut self.watch.conntrack_stats_failed, true) {
                    error(
                        "conntrack",
                        format_args!(
                            "reading {}: {e:#}; the health line goes without ct_ figures",
                            plan::PROC_CONNTRACK_STAT
                        ),
                    );
                }
                return None;
            }
        };
        self.watch.conntrack_stats_failed = false;
        let prev = self.watch.conntrack_stats.replace(now);
        if let Some(why) = plan::conntrack_drops(prev.as_ref(), &now, conntrack, conntrack_max) {
            error("conntrack", why);
        }
        Some(now)
    }

    /// The ENA allowance counters of the interface; none on other drivers.
    fn ena_allowances(&mut self) -> Vec<(&'static str, u64)> {
        match ethtool::stats(&self.iface.name) {
            Ok(s) => {
                self.watch.ethtool_failed = false;
                plan::ena_allowances(&s)
            }
            Err(e) => {
                if !std::mem::replace(&mut self.watch.ethtool_failed, true) {
                    error(
                        "ethtool",
                        format_args!("{e:#}; the health line goes without ENA allowance figures"),
                    );
                }
                Vec::new()
            }
        }
    }

    /// `ready` when the stages have just all come to hold; the health tick when it is due.
    pub(super) fn announce_and_check(&mut self, now: u64) {
        if self.stages.take_announcement() {
            self.feed_aws();
            self.announce();
            self.next_health_ms = now_ms() + u64::from(self.cfg.health_interval) * 1000;
        }
        if now >= self.next_health_ms {
            self.next_health_ms = now + u64::from(self.cfg.health_interval) * 1000;
            if self.stages.announced() {
                self.health_tick();
            }
        }
    }

    fn announce(&self) {
        let Some(p) = &self.applied else { return };
        let ready = Ready {
            iface: &self.iface.name,
            addr: p.addr,
            prefix_len: p.prefix_len,
            gateway: p.gateway,
            mtu: p.mtu,
            private: &self.private,
            elapsed_ms: now_ms(),
        };
        say(format_args!("{ready} {}", self.side_fields()));
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
        let conntrack_stats = self.conntrack_stats(conntrack, conntrack_max);
        let ena = self.ena_allowances();
        let offloaded = if self.flowtable_active {
            std::fs::File::open(plan::PROC_CONNTRACK)
                .and_then(|f| plan::count_offloaded(std::io::BufReader::new(f)))
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
                        Ok(c) => {
                            let mut h = plan::health(
                                &c,
                                self.flowtable_active,
                                offloaded,
                                conntrack,
                                conntrack_max,
                                lease_left,
                            );
                            h.conntrack_stats = conntrack_stats;
                            h.ena = ena;
                            say(format_args!("{h} {}", self.side_fields()));
                        }
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
}

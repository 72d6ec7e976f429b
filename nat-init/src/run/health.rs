//! The `ready` line once every stage holds, and every `health_interval` seconds after it the
//! `health` line and the drift checks: a table, sysctl, address or route that changed under us
//! sends its stage back to be redone, and `ready` is printed again once everything holds.

use std::path::Path;

use nat_init::nft::{self, Nfnl};
use nat_init::plan::{self, Stage};
use nat_init::report::Ready;
use nat_init::sysctl;

use super::Service;
use super::console::{error, now_ms, say};

const PROC_SYS: &str = sysctl::PROC_SYS;

impl Service {
    /// `ready` when the stages have just all come to hold; the health tick when it is due.
    pub(super) fn announce_and_check(&mut self, now: u64) {
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
                        Ok(c) => say(plan::health(
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
}

//! The DHCP client's side of the loop: waiting in it, printing its errors (throttled), turning
//! its lease changes into stage changes, and saying so while there is no lease.

use std::time::Duration;

use nat_init::dhcp::LeaseChange;
use nat_init::plan::{self, Stage};
use nat_init::report;

use super::Service;
use super::console::{error, info, ms, now_ms, say};

/// A repeating DHCP socket error is printed again after this long.
const DHCP_ERROR_GAP_MS: u64 = 30_000;

impl Service {
    /// Waits in the DHCP client for up to `wait` and handles what it reports.
    pub(super) fn dhcp_step(&mut self, wait: Duration) {
        let step = self.client.step(wait);
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

    /// While there is no lease: an error line when it is due, then less and less often.
    pub(super) fn report_no_lease(&mut self, now: u64) {
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
                        plan::lease_mtu(&l),
                        left,
                        l.server
                    ));
                }
                let server = l.server;
                self.lease = Some(l);
                self.stages.lease_applied_by_dhcp();
                if self.ruleset.is_some() && self.table_dhcp_server != Some(server) {
                    // The table takes DHCP replies from the old server only: rebuild it.
                    self.stages.invalidate(Stage::Nft, now_ms());
                }
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
                // Without a lease, DHCP replies from any server: the stages wait for a lease,
                // so the table is rebuilt here (forwarding off if that fails, as in the stage).
                if self.ruleset.is_some()
                    && self.table_dhcp_server.is_some()
                    && let Err(e) = self.install_ruleset()
                {
                    let d = self.stages.failed(Stage::Nft, now_ms());
                    error(
                        "nft",
                        format_args!("{e:#}; retrying in {}", report::seconds(d)),
                    );
                    super::sysctl::forwarding_off();
                }
                let now = now_ms();
                self.no_lease_since_ms = now;
                self.no_lease_backoff.success();
                self.no_lease_report_ms =
                    now.saturating_add(ms(Duration::from_secs(u64::from(self.cfg.dhcp_timeout))));
            }
        }
    }
}

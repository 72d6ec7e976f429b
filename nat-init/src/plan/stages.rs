//! The service's schedule: the [`Stage`]s that must hold before the NAT is ready, in order,
//! each retried on its own back-off, redone when something finds it broken, and the `ready`
//! line announced once each time they all hold.

use std::time::Duration;

use super::retry::Backoff;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}

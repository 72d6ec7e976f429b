//! Service supervision as a state machine without system calls: it takes events (time has
//! come, a start succeeded or failed, a child exited, shutdown) and answers with actions
//! (spawn this service, kill this pid, log this line). Restarts back off exponentially. A
//! service with a watchdog (`watchdog_ms`) must ping within that time from its start and from
//! each ping, or it is killed (and then restarted like any exit). Time is passed in
//! (milliseconds since boot), so every path is tested without processes; main feeds it real
//! events and carries out its actions with `children`.

use std::collections::VecDeque;

use crate::children::{ExitReason, describe_exit};
use crate::config::Service;

/// A service that ran at least this long starts its backoff over from the floor.
pub const BACKOFF_RESET_MS: u64 = 60_000;

/// The delay before the next start: the floor after a long run or the first failure,
/// otherwise double the previous delay, capped.
pub fn next_backoff(previous: Option<u64>, ran_ms: u64, min_ms: u64, max_ms: u64) -> u64 {
    match previous {
        Some(p) if ran_ms < BACKOFF_RESET_MS => p.saturating_mul(2).clamp(min_ms, max_ms),
        _ => min_ms,
    }
}

/// A configured service, by position in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceId(usize);

/// Something that happened, for the supervisor to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Time has passed (a deadline from `next_due` or any wake-up): start what is due.
    Timer,
    /// The outcome of an [`Action::Spawn`]: the new pid, or why it could not start.
    Spawned {
        service: ServiceId,
        result: Result<i32, String>,
    },
    /// A child was reaped; children that are not services are ignored.
    Exited { pid: i32, reason: ExitReason },
    /// The service with this pid wrote to its watchdog fd: it is alive now.
    Ping { pid: i32 },
    /// No more starts or restarts from now on.
    Shutdown,
}

/// What the supervisor asks its caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start this service, then report the outcome as [`Event::Spawned`].
    Spawn(ServiceId),
    /// SIGKILL this pid (a service that missed its watchdog deadline); its exit comes back
    /// as [`Event::Exited`] and is restarted like any other.
    Kill(i32),
    Log(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not running; to be started at `due`.
    Waiting { due: u64 },
    /// A spawn was asked for and its outcome has not come back yet.
    Starting,
    Running {
        pid: i32,
        since: u64,
        /// The start or the last ping, whichever is later.
        alive_at: u64,
        /// A watchdog kill was asked for: no second one while its exit is awaited.
        killed: bool,
    },
    /// Not running and not to be started again (shutdown).
    Stopped,
}

#[derive(Debug)]
struct State {
    spec: Service,
    phase: Phase,
    /// The last delay used, for doubling.
    backoff: Option<u64>,
}

/// All configured services and what they are doing.
#[derive(Debug)]
pub struct Supervisor {
    services: Vec<State>,
    stopping: bool,
}

impl Supervisor {
    /// Every service is due immediately, in configuration order.
    pub fn new(specs: Vec<Service>, now: u64) -> Supervisor {
        let services = specs
            .into_iter()
            .map(|spec| State {
                spec,
                phase: Phase::Waiting { due: now },
                backoff: None,
            })
            .collect();
        Supervisor {
            services,
            stopping: false,
        }
    }

    /// Takes one event at time `now` and returns what to do about it, in order.
    pub fn handle(&mut self, event: Event, now: u64) -> Vec<Action> {
        match event {
            Event::Timer => {
                let mut actions = self.check_watchdogs(now);
                actions.extend(self.start_due(now));
                actions
            }
            Event::Ping { pid } => {
                self.ping(pid, now);
                Vec::new()
            }
            Event::Spawned { service, result } => self.spawned(service, result, now),
            Event::Exited { pid, reason } => self.exited(pid, reason, now),
            Event::Shutdown => {
                self.stop();
                Vec::new()
            }
        }
    }

    /// The service an [`Action::Spawn`] refers to.
    pub fn service(&self, id: ServiceId) -> Option<&Service> {
        self.services.get(id.0).map(|s| &s.spec)
    }

    /// Kills every service whose watchdog deadline has passed, in configuration order.
    fn check_watchdogs(&mut self, now: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.stopping {
            return actions;
        }
        for s in &mut self.services {
            let Some(deadline) = watchdog_deadline(s) else {
                continue;
            };
            if let Phase::Running {
                pid,
                alive_at,
                ref mut killed,
                ..
            } = s.phase
                && deadline <= now
            {
                *killed = true;
                actions.push(Action::Log(format!(
                    "watchdog: {} pid={pid} silent for {} ms (limit {} ms), sending SIGKILL",
                    s.spec.name,
                    now.saturating_sub(alive_at),
                    s.spec.watchdog_ms
                )));
                actions.push(Action::Kill(pid));
            }
        }
        actions
    }

    fn ping(&mut self, pid: i32, now: u64) {
        for s in &mut self.services {
            if let Phase::Running {
                pid: p,
                ref mut alive_at,
                ..
            } = s.phase
                && p == pid
            {
                *alive_at = now;
            }
        }
    }

    /// Asks for every service whose time has come, in configuration order.
    fn start_due(&mut self, now: u64) -> Vec<Action> {
        if self.stopping {
            return Vec::new();
        }
        let mut actions = Vec::new();
        for (i, s) in self.services.iter_mut().enumerate() {
            if let Phase::Waiting { due } = s.phase
                && due <= now
            {
                s.phase = Phase::Starting;
                actions.push(Action::Spawn(ServiceId(i)));
            }
        }
        actions
    }

    fn spawned(&mut self, id: ServiceId, result: Result<i32, String>, now: u64) -> Vec<Action> {
        let stopping = self.stopping;
        let Some(s) = self.services.get_mut(id.0) else {
            return Vec::new();
        };
        // An outcome nobody is waiting for changes nothing.
        if s.phase != Phase::Starting {
            return Vec::new();
        }
        match result {
            Ok(pid) => {
                s.phase = Phase::Running {
                    pid,
                    since: now,
                    alive_at: now,
                    killed: false,
                };
                vec![Action::Log(format!("started {} pid={pid}", s.spec.name))]
            }
            Err(e) => {
                let mut actions =
                    vec![Action::Log(format!("failed to start {}: {e}", s.spec.name))];
                if stopping {
                    s.phase = Phase::Stopped;
                } else {
                    actions.push(Action::Log(schedule(s, now, 0)));
                }
                actions
            }
        }
    }

    /// Records an exited child; no actions if it was not a service.
    fn exited(&mut self, pid: i32, reason: ExitReason, now: u64) -> Vec<Action> {
        let stopping = self.stopping;
        let found = self.services.iter_mut().find_map(|s| match s.phase {
            Phase::Running { pid: p, since, .. } if p == pid => Some((s, since)),
            _ => None,
        });
        let Some((s, since)) = found else {
            return Vec::new();
        };
        let mut actions = vec![Action::Log(describe_exit(&s.spec.name, reason))];
        if stopping {
            s.phase = Phase::Stopped;
        } else {
            let ran = now.saturating_sub(since);
            actions.push(Action::Log(schedule(s, now, ran)));
        }
        actions
    }

    /// The earliest pending start or watchdog deadline, to bound the main loop's wait.
    pub fn next_due(&self) -> Option<u64> {
        if self.stopping {
            return None;
        }
        self.services
            .iter()
            .filter_map(|s| match s.phase {
                Phase::Waiting { due } => Some(due),
                _ => watchdog_deadline(s),
            })
            .min()
    }

    fn stop(&mut self) {
        self.stopping = true;
        for s in &mut self.services {
            if let Phase::Waiting { .. } = s.phase {
                s.phase = Phase::Stopped;
            }
        }
    }

    /// Running services as (name, pid), in configuration order.
    pub fn running(&self) -> Vec<(String, i32)> {
        self.services
            .iter()
            .filter_map(|s| match s.phase {
                Phase::Running { pid, .. } => Some((s.spec.name.clone(), pid)),
                _ => None,
            })
            .collect()
    }
}

/// When a running service with a watchdog is overdue, unless it is already being killed.
fn watchdog_deadline(s: &State) -> Option<u64> {
    match s.phase {
        Phase::Running {
            alive_at,
            killed: false,
            ..
        } if s.spec.watchdog_ms > 0 => Some(alive_at.saturating_add(s.spec.watchdog_ms)),
        _ => None,
    }
}

/// Waits for the next start with backoff; returns the log line. A huge configured delay
/// saturates at the end of time instead of wrapping around to "now".
fn schedule(s: &mut State, now: u64, ran_ms: u64) -> String {
    let delay = next_backoff(
        s.backoff,
        ran_ms,
        s.spec.restart_min_ms,
        s.spec.restart_max_ms,
    );
    s.backoff = Some(delay);
    s.phase = Phase::Waiting {
        due: now.saturating_add(delay),
    };
    format!("restarting {} in {delay} ms", s.spec.name)
}

/// Feeds one event to the supervisor and carries out its actions: `spawn` starts a service
/// (its outcome goes straight back in), `kill` SIGKILLs a pid (an error becomes a line), and
/// the log lines are returned in order.
pub fn drive(
    sup: &mut Supervisor,
    event: Event,
    now: u64,
    mut spawn: impl FnMut(&Service) -> Result<i32, String>,
    mut kill: impl FnMut(i32) -> Result<(), String>,
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut pending: VecDeque<Action> = sup.handle(event, now).into();
    while let Some(action) = pending.pop_front() {
        match action {
            Action::Log(line) => lines.push(line),
            Action::Kill(pid) => {
                if let Err(e) = kill(pid) {
                    lines.push(format!("watchdog: kill pid={pid}: {e}"));
                }
            }
            Action::Spawn(service) => {
                // Ids come from this supervisor, so the service is always there.
                let Some(spec) = sup.service(service) else {
                    continue;
                };
                let result = spawn(spec);
                // A start's lines come before the next start is tried.
                for a in sup
                    .handle(Event::Spawned { service, result }, now)
                    .into_iter()
                    .rev()
                {
                    pending.push_front(a);
                }
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn svc(name: &str) -> Service {
        Service {
            name: name.into(),
            path: format!("/sbin/{name}").into(),
            args: vec![],
            env: BTreeMap::new(),
            restart_min_ms: 200,
            restart_max_ms: 1000,
            watchdog_ms: 0,
            oom_score_adj: 0,
        }
    }

    fn start_due(
        sup: &mut Supervisor,
        now: u64,
        spawn: impl FnMut(&Service) -> Result<i32, String>,
    ) -> Vec<String> {
        drive(sup, Event::Timer, now, spawn, |pid| {
            panic!("killed pid {pid} without a watchdog")
        })
    }

    /// A timer tick that may kill: the pids killed are pushed to `killed`.
    fn tick(sup: &mut Supervisor, now: u64, next_pid: i32, killed: &mut Vec<i32>) -> Vec<String> {
        drive(
            sup,
            Event::Timer,
            now,
            |_| Ok(next_pid),
            |pid| {
                killed.push(pid);
                Ok(())
            },
        )
    }

    fn ping(sup: &mut Supervisor, pid: i32, now: u64) {
        let lines = drive(
            sup,
            Event::Ping { pid },
            now,
            |s| panic!("ping started {}", s.name),
            |p| panic!("ping killed {p}"),
        );
        assert!(lines.is_empty(), "{lines:?}");
    }

    fn watched(name: &str, watchdog_ms: u64) -> Service {
        Service {
            watchdog_ms,
            ..svc(name)
        }
    }

    #[test]
    fn a_service_that_never_pings_is_killed_at_its_deadline_from_start() {
        let mut sup = Supervisor::new(vec![watched("w", 5000), svc("plain")], 0);
        let mut killed = Vec::new();
        let mut pid = 10;
        let lines = drive(
            &mut sup,
            Event::Timer,
            100,
            |_| {
                pid += 1;
                Ok(pid)
            },
            |_| panic!("no kill at start"),
        );
        assert_eq!(lines, ["started w pid=11", "started plain pid=12"]);
        // The loop must wake for the deadline, counted from the start.
        assert_eq!(sup.next_due(), Some(5100));
        assert!(tick(&mut sup, 5099, 0, &mut killed).is_empty());
        assert_eq!(
            tick(&mut sup, 5100, 0, &mut killed),
            ["watchdog: w pid=11 silent for 5000 ms (limit 5000 ms), sending SIGKILL"]
        );
        assert_eq!(killed, [11]);
        // Killed once: the next ticks wait for its exit instead of killing again.
        assert!(tick(&mut sup, 9000, 0, &mut killed).is_empty());
        assert_eq!(killed, [11]);
        assert_eq!(sup.next_due(), None);
        // Its death is restarted like any other, and the new process gets a new deadline.
        assert_eq!(
            on_exit(&mut sup, 11, ExitReason::Signal(9, false), 9000),
            ["w killed by signal SIGKILL", "restarting w in 200 ms"]
        );
        assert_eq!(tick(&mut sup, 9200, 13, &mut killed), ["started w pid=13"]);
        assert_eq!(sup.next_due(), Some(14_200));
    }

    #[test]
    fn pings_keep_a_service_alive() {
        let mut sup = Supervisor::new(vec![watched("w", 1000)], 0);
        let mut killed = Vec::new();
        assert_eq!(tick(&mut sup, 0, 7, &mut killed), ["started w pid=7"]);
        for now in (400..=100_000).step_by(400) {
            ping(&mut sup, 7, now);
            assert_eq!(sup.next_due(), Some(now + 1000));
            assert!(tick(&mut sup, now + 300, 0, &mut killed).is_empty());
        }
        // A ping from some other pid does not count.
        ping(&mut sup, 8, 100_500);
        assert_eq!(
            tick(&mut sup, 101_000, 0, &mut killed),
            ["watchdog: w pid=7 silent for 1000 ms (limit 1000 ms), sending SIGKILL"]
        );
        assert_eq!(killed, [7]);
    }

    #[test]
    fn a_service_that_keeps_hanging_backs_off() {
        let mut sup = Supervisor::new(vec![watched("w", 1000)], 0);
        let mut killed = Vec::new();
        let mut now = 0;
        let mut pid = 100;
        let mut delays = Vec::new();
        for _ in 0..4 {
            pid += 1;
            assert_eq!(
                tick(&mut sup, now, pid, &mut killed),
                [format!("started w pid={pid}")]
            );
            now = sup.next_due().unwrap();
            assert_eq!(tick(&mut sup, now, 0, &mut killed).len(), 1);
            let lines = on_exit(&mut sup, pid, ExitReason::Signal(9, false), now);
            let due = sup.next_due().unwrap();
            assert_eq!(lines[1], format!("restarting w in {} ms", due - now));
            delays.push(due - now);
            now = due;
        }
        assert_eq!(killed, [101, 102, 103, 104]);
        assert_eq!(delays, [200, 400, 800, 1000]);
    }

    #[test]
    fn no_watchdog_kills_during_shutdown_and_failed_kills_are_said() {
        let mut sup = Supervisor::new(vec![watched("w", 1000)], 0);
        let mut killed = Vec::new();
        tick(&mut sup, 0, 7, &mut killed);
        let lines = drive(
            &mut sup,
            Event::Timer,
            1000,
            |_| Ok(0),
            |_| Err("ESRCH".into()),
        );
        assert_eq!(lines[1], "watchdog: kill pid=7: ESRCH");
        let mut sup = Supervisor::new(vec![watched("w", 1000)], 0);
        tick(&mut sup, 0, 7, &mut killed);
        shut_down(&mut sup, 500);
        assert!(tick(&mut sup, 5000, 0, &mut killed).is_empty());
        assert!(killed.is_empty());
    }

    #[test]
    fn deadlines_and_restarts_saturate_at_the_end_of_time() {
        let mut s = watched("w", crate::config::MAX_WATCHDOG_MS);
        (s.restart_min_ms, s.restart_max_ms) = (u64::MAX, u64::MAX);
        let near_end = u64::MAX - 5;
        let mut sup = Supervisor::new(vec![s], near_end);
        let mut killed = Vec::new();
        assert_eq!(
            tick(&mut sup, near_end, 3, &mut killed),
            ["started w pid=3"]
        );
        // start + watchdog would wrap to a time long past: it must not fire now.
        assert_eq!(sup.next_due(), Some(u64::MAX));
        assert!(tick(&mut sup, u64::MAX - 1, 0, &mut killed).is_empty());
        assert_eq!(
            on_exit(&mut sup, 3, ExitReason::Status(1), near_end)[1],
            format!("restarting w in {} ms", u64::MAX)
        );
        assert_eq!(sup.next_due(), Some(u64::MAX));
        assert!(tick(&mut sup, u64::MAX - 1, 4, &mut killed).is_empty());
        assert!(killed.is_empty());
    }

    fn on_exit(sup: &mut Supervisor, pid: i32, reason: ExitReason, now: u64) -> Vec<String> {
        drive(
            sup,
            Event::Exited { pid, reason },
            now,
            |s| panic!("an exit started {}; only timers start services", s.name),
            |p| panic!("an exit killed {p}"),
        )
    }

    fn shut_down(sup: &mut Supervisor, now: u64) {
        let lines = drive(
            sup,
            Event::Shutdown,
            now,
            |s| panic!("shutdown started {}", s.name),
            |p| panic!("shutdown killed {p}"),
        );
        assert!(lines.is_empty(), "{lines:?}");
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        assert_eq!(next_backoff(None, 0, 200, 1000), 200);
        assert_eq!(next_backoff(Some(200), 10, 200, 1000), 400);
        assert_eq!(next_backoff(Some(800), 10, 200, 1000), 1000);
        assert_eq!(next_backoff(Some(1000), 10, 200, 1000), 1000);
        assert_eq!(next_backoff(Some(1000), BACKOFF_RESET_MS, 200, 1000), 200);
        assert_eq!(next_backoff(Some(u64::MAX), 0, 200, 1000), 1000);
    }

    #[test]
    fn events_become_actions() {
        let mut sup = Supervisor::new(vec![svc("a"), svc("b")], 0);
        let (a, b) = (ServiceId(0), ServiceId(1));
        assert_eq!(
            sup.handle(Event::Timer, 0),
            [Action::Spawn(a), Action::Spawn(b)]
        );
        assert_eq!(sup.service(a).map(|s| s.name.as_str()), Some("a"));
        assert_eq!(sup.service(ServiceId(2)), None);
        // Asked for once: a second tick before the outcome asks for nothing.
        assert!(sup.handle(Event::Timer, 0).is_empty());
        assert_eq!(sup.next_due(), None);
        let spawned = |service, result| Event::Spawned { service, result };
        assert_eq!(
            sup.handle(spawned(a, Ok(7)), 0),
            [Action::Log("started a pid=7".into())]
        );
        assert_eq!(
            sup.handle(spawned(b, Err("EACCES".into())), 0),
            [
                Action::Log("failed to start b: EACCES".into()),
                Action::Log("restarting b in 200 ms".into())
            ]
        );
        // Outcomes nobody asked for, or for no such service, change nothing.
        assert!(sup.handle(spawned(a, Ok(8)), 0).is_empty());
        assert!(sup.handle(spawned(ServiceId(9), Ok(8)), 0).is_empty());
        assert_eq!(sup.running(), vec![("a".to_string(), 7)]);
        assert_eq!(sup.next_due(), Some(200));
        assert_eq!(sup.handle(Event::Timer, 200), [Action::Spawn(b)]);
    }

    #[test]
    fn a_start_failing_during_shutdown_is_not_retried() {
        let mut sup = Supervisor::new(vec![svc("a")], 0);
        assert_eq!(sup.handle(Event::Timer, 0), [Action::Spawn(ServiceId(0))]);
        assert!(sup.handle(Event::Shutdown, 0).is_empty());
        let failed = Event::Spawned {
            service: ServiceId(0),
            result: Err("ENOMEM".into()),
        };
        assert_eq!(
            sup.handle(failed, 0),
            [Action::Log("failed to start a: ENOMEM".into())]
        );
        assert_eq!(sup.next_due(), None);
        assert!(sup.handle(Event::Timer, 100_000).is_empty());
    }

    #[test]
    fn starts_in_order_and_restarts_after_backoff() {
        let mut sup = Supervisor::new(vec![svc("a"), svc("b")], 0);
        let mut order = Vec::new();
        let mut next_pid = 100;
        let mut spawn = |s: &Service| {
            order.push(s.name.clone());
            next_pid += 1;
            Ok(next_pid)
        };
        assert_eq!(
            start_due(&mut sup, 0, &mut spawn),
            vec!["started a pid=101", "started b pid=102"]
        );
        assert_eq!(sup.next_due(), None);
        assert_eq!(
            on_exit(&mut sup, 101, ExitReason::Signal(9, false), 5000),
            vec!["a killed by signal SIGKILL", "restarting a in 200 ms"]
        );
        assert!(
            on_exit(&mut sup, 999, ExitReason::Status(0), 5000).is_empty(),
            "not a service"
        );
        assert_eq!(sup.next_due(), Some(5200));
        assert!(start_due(&mut sup, 5199, &mut spawn).is_empty());
        assert_eq!(
            start_due(&mut sup, 5200, &mut spawn),
            vec!["started a pid=103"]
        );
        // A quick second death doubles the delay.
        assert_eq!(
            on_exit(&mut sup, 103, ExitReason::Status(1), 5300)[1],
            "restarting a in 400 ms"
        );
        assert_eq!(
            start_due(&mut sup, 5700, &mut spawn),
            vec!["started a pid=104"]
        );
        // After a long run the backoff starts over.
        assert_eq!(
            on_exit(&mut sup, 104, ExitReason::Status(1), 5700 + 61_000)[1],
            "restarting a in 200 ms"
        );
        assert_eq!(order, ["a", "b", "a", "a"]);
    }

    #[test]
    fn missing_binary_backs_off_instead_of_spinning() {
        let mut sup = Supervisor::new(vec![svc("gone")], 0);
        let mut attempts = 0;
        let mut spawn = |_: &Service| {
            attempts += 1;
            Err("No such file or directory".to_string())
        };
        let mut now = 0;
        let mut delays = Vec::new();
        for _ in 0..5 {
            let lines = start_due(&mut sup, now, &mut spawn);
            assert_eq!(lines[0], "failed to start gone: No such file or directory");
            let due = sup.next_due().unwrap();
            assert!(due > now, "never due immediately again");
            delays.push(due - now);
            // Nothing happens before the due time.
            assert!(start_due(&mut sup, due - 1, &mut spawn).is_empty());
            now = due;
        }
        assert_eq!(attempts, 5);
        assert_eq!(delays, [200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn huge_restart_delay_saturates_instead_of_wrapping() {
        let mut s = svc("slow");
        (s.restart_min_ms, s.restart_max_ms) = (u64::MAX - 10, u64::MAX);
        let mut sup = Supervisor::new(vec![s], 0);
        assert_eq!(
            start_due(&mut sup, 0, |_| Ok(5)),
            vec!["started slow pid=5"]
        );
        assert_eq!(
            on_exit(&mut sup, 5, ExitReason::Status(1), 1000)[1],
            format!("restarting slow in {} ms", u64::MAX - 10)
        );
        // Wrapping would have made it due at 989, that is at once.
        assert_eq!(sup.next_due(), Some(u64::MAX));
        assert!(start_due(&mut sup, u64::MAX - 1, |_| Ok(6)).is_empty());
    }

    #[test]
    fn stop_prevents_restarts_and_lists_running() {
        let mut sup = Supervisor::new(vec![svc("a"), svc("b")], 0);
        let mut pid = 10;
        start_due(&mut sup, 0, |_| {
            pid += 1;
            Ok(pid)
        });
        assert_eq!(
            sup.running(),
            vec![("a".to_string(), 11), ("b".to_string(), 12)]
        );
        shut_down(&mut sup, 10);
        assert_eq!(
            on_exit(&mut sup, 11, ExitReason::Status(0), 10),
            vec!["a exited with status 0"]
        );
        assert_eq!(sup.next_due(), None);
        assert!(start_due(&mut sup, 100_000, |_| Ok(1)).is_empty());
        assert_eq!(sup.running(), vec![("b".to_string(), 12)]);
    }
}

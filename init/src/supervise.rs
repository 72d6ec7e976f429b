//! Service supervision: start services in order, report how they exit, restart them
//! with exponential backoff. Time is passed in (milliseconds since boot) so the state
//! machine is tested without processes.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::config::Service;

/// A service that ran at least this long starts its backoff over from the floor.
pub const BACKOFF_RESET_MS: u64 = 60_000;

/// The environment every service starts from.
pub const BASE_PATH: &str = "/sbin:/bin";

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    Status(i32),
    /// Signal number and whether it dumped core.
    Signal(i32, bool),
}

/// `<name> exited with status N` or `<name> killed by signal SIGKILL`.
pub fn describe_exit(name: &str, reason: ExitReason) -> String {
    match reason {
        ExitReason::Status(n) => format!("{name} exited with status {n}"),
        ExitReason::Signal(s, core) => format!(
            "{name} killed by signal {}{}",
            crate::signals::name(s),
            if core { " (core dumped)" } else { "" }
        ),
    }
}

/// The delay before the next start: the floor after a long run or the first failure,
/// otherwise double the previous delay, capped.
pub fn next_backoff(previous: Option<u64>, ran_ms: u64, min_ms: u64, max_ms: u64) -> u64 {
    match previous {
        Some(p) if ran_ms < BACKOFF_RESET_MS => p.saturating_mul(2).clamp(min_ms, max_ms),
        _ => min_ms,
    }
}

#[derive(Debug)]
struct State {
    spec: Service,
    pid: Option<i32>,
    started_at: u64,
    /// When to start next; None while running (or after stop).
    due: Option<u64>,
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
                pid: None,
                started_at: 0,
                due: Some(now),
                backoff: None,
            })
            .collect();
        Supervisor {
            services,
            stopping: false,
        }
    }

    /// Starts every service whose time has come; returns the log lines.
    pub fn start_due(
        &mut self,
        now: u64,
        mut spawn: impl FnMut(&Service) -> Result<i32, String>,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        if self.stopping {
            return lines;
        }
        for s in &mut self.services {
            if s.pid.is_some() || s.due.is_none_or(|d| d > now) {
                continue;
            }
            match spawn(&s.spec) {
                Ok(pid) => {
                    s.pid = Some(pid);
                    s.started_at = now;
                    s.due = None;
                    lines.push(format!("started {} pid={pid}", s.spec.name));
                }
                Err(e) => {
                    lines.push(format!("failed to start {}: {e}", s.spec.name));
                    lines.push(schedule(s, now, 0));
                }
            }
        }
        lines
    }

    /// Records an exited child; lines are empty if it was not a service.
    pub fn on_exit(&mut self, pid: i32, reason: ExitReason, now: u64) -> Vec<String> {
        let stopping = self.stopping;
        let Some(s) = self.services.iter_mut().find(|s| s.pid == Some(pid)) else {
            return Vec::new();
        };
        s.pid = None;
        let mut lines = vec![describe_exit(&s.spec.name, reason)];
        if !stopping {
            let ran = now.saturating_sub(s.started_at);
            lines.push(schedule(s, now, ran));
        }
        lines
    }

    /// The earliest pending start, to bound the main loop's wait.
    pub fn next_due(&self) -> Option<u64> {
        if self.stopping {
            return None;
        }
        self.services
            .iter()
            .filter(|s| s.pid.is_none())
            .filter_map(|s| s.due)
            .min()
    }

    /// No more starts or restarts from now on.
    pub fn stop(&mut self) {
        self.stopping = true;
        for s in &mut self.services {
            s.due = None;
        }
    }

    /// Running services as (name, pid), in configuration order.
    pub fn running(&self) -> Vec<(String, i32)> {
        self.services
            .iter()
            .filter_map(|s| s.pid.map(|p| (s.spec.name.clone(), p)))
            .collect()
    }
}

fn schedule(s: &mut State, now: u64, ran_ms: u64) -> String {
    let delay = next_backoff(
        s.backoff,
        ran_ms,
        s.spec.restart_min_ms,
        s.spec.restart_max_ms,
    );
    s.backoff = Some(delay);
    s.due = Some(now + delay);
    format!("restarting {} in {delay} ms", s.spec.name)
}

/// Builds the command for a service: minimal environment, stdin /dev/null,
/// stdout/stderr inherited from init (the console), cwd /.
pub fn command(spec: &Service) -> Command {
    let mut cmd = Command::new(&spec.path);
    cmd.args(&spec.args)
        .env_clear()
        .env("PATH", BASE_PATH)
        .envs(&spec.env)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let reset = || {
        // SAFETY: pre_exec runs this in the freshly forked child, as reset_in_child requires.
        unsafe { crate::signals::reset_in_child() }
    };
    // SAFETY: the closure runs between fork and exec in the child and only calls
    // async-signal-safe functions (signal, sigprocmask, setsid); it allocates nothing.
    unsafe { cmd.pre_exec(reset) };
    cmd
}

/// Spawns a service; the Child handle is dropped because init reaps with waitpid(-1).
pub fn spawn(spec: &Service) -> Result<i32, String> {
    let child = command(spec)
        .spawn()
        .map_err(|e| format!("{}: {e}", spec.path.display()))?;
    i32::try_from(child.id()).map_err(|e| format!("pid out of range: {e}"))
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
        }
    }

    #[test]
    fn exit_descriptions() {
        assert_eq!(
            describe_exit("a", ExitReason::Status(3)),
            "a exited with status 3"
        );
        assert_eq!(
            describe_exit("a", ExitReason::Signal(9, false)),
            "a killed by signal SIGKILL"
        );
        assert_eq!(
            describe_exit("a", ExitReason::Signal(11, true)),
            "a killed by signal SIGSEGV (core dumped)"
        );
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
            sup.start_due(0, &mut spawn),
            vec!["started a pid=101", "started b pid=102"]
        );
        assert_eq!(sup.next_due(), None);
        assert_eq!(
            sup.on_exit(101, ExitReason::Signal(9, false), 5000),
            vec!["a killed by signal SIGKILL", "restarting a in 200 ms"]
        );
        assert!(
            sup.on_exit(999, ExitReason::Status(0), 5000).is_empty(),
            "not a service"
        );
        assert_eq!(sup.next_due(), Some(5200));
        assert!(sup.start_due(5199, &mut spawn).is_empty());
        assert_eq!(sup.start_due(5200, &mut spawn), vec!["started a pid=103"]);
        // A quick second death doubles the delay.
        assert_eq!(
            sup.on_exit(103, ExitReason::Status(1), 5300)[1],
            "restarting a in 400 ms"
        );
        assert_eq!(sup.start_due(5700, &mut spawn), vec!["started a pid=104"]);
        // After a long run the backoff starts over.
        assert_eq!(
            sup.on_exit(104, ExitReason::Status(1), 5700 + 61_000)[1],
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
            let lines = sup.start_due(now, &mut spawn);
            assert_eq!(lines[0], "failed to start gone: No such file or directory");
            let due = sup.next_due().unwrap();
            assert!(due > now, "never due immediately again");
            delays.push(due - now);
            // Nothing happens before the due time.
            assert!(sup.start_due(due - 1, &mut spawn).is_empty());
            now = due;
        }
        assert_eq!(attempts, 5);
        assert_eq!(delays, [200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn stop_prevents_restarts_and_lists_running() {
        let mut sup = Supervisor::new(vec![svc("a"), svc("b")], 0);
        let mut pid = 10;
        sup.start_due(0, |_| {
            pid += 1;
            Ok(pid)
        });
        assert_eq!(
            sup.running(),
            vec![("a".to_string(), 11), ("b".to_string(), 12)]
        );
        sup.stop();
        assert_eq!(
            sup.on_exit(11, ExitReason::Status(0), 10),
            vec!["a exited with status 0"]
        );
        assert_eq!(sup.next_due(), None);
        assert!(sup.start_due(100_000, |_| Ok(1)).is_empty());
        assert_eq!(sup.running(), vec![("b".to_string(), 12)]);
    }

    #[test]
    fn command_has_minimal_environment() {
        let mut s = svc("x");
        s.env.insert("RUST_BACKTRACE".into(), "1".into());
        s.args = vec!["--flag".into()];
        let cmd = command(&s);
        let envs: Vec<_> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_str().unwrap().to_string(),
                    v.map(|v| v.to_str().unwrap().to_string()),
                )
            })
            .collect();
        assert_eq!(
            envs,
            vec![
                ("PATH".into(), Some(BASE_PATH.into())),
                ("RUST_BACKTRACE".into(), Some("1".into()))
            ]
        );
        assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["--flag"]);
    }

    #[test]
    fn spawned_child_has_clean_signal_state_own_session_and_env() {
        use nix::sys::signal::{SigHandler, SigSet, Signal, signal};
        // PID 1 blocks everything; std only resets the mask, so also ignore a signal:
        // only our pre_exec puts ignored dispositions back to default.
        let mut set = SigSet::empty();
        set.add(Signal::SIGUSR1);
        set.thread_block().unwrap();
        // SAFETY: installs SIG_IGN, no handler code; no other test uses SIGUSR2.
        unsafe { signal(Signal::SIGUSR2, SigHandler::SigIgn) }.unwrap();
        let s = Service {
            name: "sh".into(),
            path: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "grep -E '^Sig(Blk|Ign)' /proc/self/status; echo \"stat=$(cat /proc/$$/stat)\"; \
                 echo \"env=$(env | sort | tr '\\n' ' ')\""
                    .into(),
            ],
            env: BTreeMap::from([("X".to_string(), "1".to_string())]),
            restart_min_ms: 200,
            restart_max_ms: 1000,
        };
        let out = command(&s).stdout(Stdio::piped()).output().unwrap();
        set.thread_unblock().unwrap();
        // SAFETY: as above, restores the default.
        unsafe { signal(Signal::SIGUSR2, SigHandler::SigDfl) }.unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("SigBlk:\t0000000000000000"), "{text}");
        // Signals 32 to 34 belong to the C library, which refuses to touch them; the
        // kernel starts PID 1 with them at default anyway.
        let ign = text
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:\t"))
            .unwrap();
        let ign = u64::from_str_radix(ign, 16).unwrap() & !(0b111 << 31);
        assert_eq!(ign, 0, "ignored signals leaked into the child: {text}");
        // pid (comm) state ppid pgrp session: the service leads its own session.
        let stat = text.lines().find_map(|l| l.strip_prefix("stat=")).unwrap();
        let pid = stat.split(' ').next().unwrap();
        let after: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
        assert_eq!((after[2], after[3]), (pid, pid), "{stat}");
        assert!(text.contains("PATH=/sbin:/bin"), "{text}");
        assert!(text.contains("X=1"), "{text}");
        assert!(!text.contains("HOME="), "{text}");
    }

    #[test]
    fn spawn_of_missing_binary_is_an_error() {
        let err = spawn(&svc("definitely-not-here-init-test")).unwrap_err();
        assert!(err.contains("/sbin/definitely-not-here-init-test"), "{err}");
    }
}

//! Child processes, the system-call side of supervision: starting a service (minimal
//! environment, clean signal state, a session of its own, its oom_score_adj, and the write
//! end of its watchdog pipe when it has a watchdog), reaping every exited child with
//! waitpid(-1, WNOHANG), and reading a wait status as an [`ExitReason`]. `supervise` decides
//! what to start and when; main carries that out with the functions here.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::config::Service;

/// The environment every service starts from.
pub const BASE_PATH: &str = "/sbin:/bin";
/// Names the inherited fd a watched service writes its pings to (any bytes, e.g. one `\n`).
pub const WATCHDOG_FD_ENV: &str = "INIT_WATCHDOG_FD";
/// The watchdog limit in ms; the service pings at least every half of it.
pub const WATCHDOG_MS_ENV: &str = "INIT_WATCHDOG_MS";

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

/// Result of one reaping pass.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    pub exited: Vec<(i32, ExitReason)>,
    /// waitpid said ECHILD: init has no children left at all.
    pub no_children: bool,
}

/// Converts a wait status into an exit, if it is one.
pub fn exit_of(status: WaitStatus) -> Option<(i32, ExitReason)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), ExitReason::Status(code))),
        WaitStatus::Signaled(pid, sig, core) => {
            Some((pid.as_raw(), ExitReason::Signal(sig as i32, core)))
        }
        _ => None,
    }
}

/// Reaps every exited child without blocking.
pub fn reap_all() -> Reaped {
    let mut reaped = Reaped::default();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => break,
            Ok(status) => reaped.exited.extend(exit_of(status)),
            Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => {
                reaped.no_children = true;
                break;
            }
            Err(_) => break,
        }
    }
    reaped
}

/// Runs in the forked child before exec: default dispositions, nothing blocked, and
/// a session of its own so a service and its helpers form one process group.
///
/// # Safety
/// Must only be called in a freshly forked child; it only makes async-signal-safe calls.
unsafe fn reset_in_child(oom_score_adj: &[u8], watchdog: Option<RawFd>) -> std::io::Result<()> {
    for signo in 1..libc::SIGRTMAX() {
        if signo == libc::SIGKILL || signo == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring SIG_DFL installs no handler code; signal(2) is async-signal-safe.
        // Numbers glibc/musl reserve for themselves just fail, which is fine.
        unsafe { libc::signal(signo, libc::SIG_DFL) };
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    nix::unistd::setsid()?;
    // Set here, before exec, so the service never runs a moment with init's -1000. Without
    // /proc (ENOENT) there is nothing to set.
    // SAFETY: open/write/close on a static C string and a caller-owned buffer; all three are
    // async-signal-safe and nothing is allocated.
    unsafe {
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            let n = libc::write(fd, oom_score_adj.as_ptr().cast(), oom_score_adj.len());
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if n < 0 {
                return Err(err);
            }
        } else if std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT) {
            return Err(std::io::Error::last_os_error());
        }
    }
    if let Some(fd) = watchdog {
        // The one fd the service inherits on purpose: clear its close-on-exec flag.
        // SAFETY: fcntl(2) on an fd number, async-signal-safe.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Builds the command for a service: minimal environment, stdin /dev/null,
/// stdout/stderr inherited from init (the console), cwd /, its oom_score_adj; with
/// `watchdog`, that fd (the write end of its watchdog pipe) is inherited and named in
/// `INIT_WATCHDOG_FD`, with `INIT_WATCHDOG_MS`.
pub fn command(spec: &Service, watchdog: Option<RawFd>) -> Command {
    let mut cmd = Command::new(&spec.path);
    cmd.args(&spec.args)
        .env_clear()
        .env("PATH", BASE_PATH)
        .envs(&spec.env)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    if let Some(fd) = watchdog {
        cmd.env(WATCHDOG_FD_ENV, fd.to_string())
            .env(WATCHDOG_MS_ENV, spec.watchdog_ms.to_string());
    }
    // Formatted before the fork: the child must not allocate.
    let oom = format!("{}\n", spec.oom_score_adj).into_bytes();
    let reset = move || {
        // SAFETY: pre_exec runs this in the freshly forked child, as reset_in_child requires.
        unsafe { reset_in_child(&oom, watchdog) }
    };
    // SAFETY: the closure runs between fork and exec in the child and only calls
    // async-signal-safe functions (signal, sigprocmask, setsid, open, write, close, fcntl);
    // it allocates nothing.
    unsafe { cmd.pre_exec(reset) };
    cmd
}

/// The read end of a watchdog pipe (non-blocking, close-on-exec) and the write end for the
/// child, at 3 or above so that the child's stdio set-up cannot land on it.
pub fn watchdog_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    if write.as_raw_fd() > 2 {
        return Ok((read, write));
    }
    let high = fcntl(&write, FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nothing else owns.
    Ok((read, unsafe {
        <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high)
    }))
}

/// A started service: its pid and, with a watchdog, the read end of its pipe.
#[derive(Debug)]
pub struct Started {
    pub pid: i32,
    pub watchdog: Option<OwnedFd>,
}

/// Spawns a service; the Child handle is dropped because init reaps with waitpid(-1). The
/// write end of the watchdog pipe is closed here once the child has it.
pub fn spawn(spec: &Service) -> Result<Started, String> {
    let pipe = if spec.watchdog_ms > 0 {
        Some(watchdog_pipe().map_err(|e| format!("watchdog pipe: {e}"))?)
    } else {
        None
    };
    let child = command(spec, pipe.as_ref().map(|(_, w)| w.as_raw_fd()))
        .spawn()
        .map_err(|e| format!("{}: {e}", spec.path.display()))?;
    let pid = i32::try_from(child.id()).map_err(|e| format!("pid out of range: {e}"))?;
    Ok(Started {
        pid,
        watchdog: pipe.map(|(read, _write)| read),
    })
}

/// Drains a watchdog pipe: `Some(true)` if the service pinged, `Some(false)` if not,
/// `None` once the service's end is closed (it exited or closed it; nothing more will come).
pub fn drain_pings(fd: &OwnedFd) -> Option<bool> {
    let mut pinged = false;
    let mut buf = [0u8; 64];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return if pinged { Some(true) } else { None },
            Ok(_) => pinged = true,
            Err(Errno::EINTR) => continue,
            Err(_) => return Some(pinged),
        }
    }
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
    fn wait_status_conversion() {
        use nix::sys::signal::Signal;
        let p = Pid::from_raw(42);
        assert_eq!(
            exit_of(WaitStatus::Exited(p, 3)),
            Some((42, ExitReason::Status(3)))
        );
        assert_eq!(
            exit_of(WaitStatus::Signaled(p, Signal::SIGKILL, false)),
            Some((42, ExitReason::Signal(9, false)))
        );
        assert_eq!(exit_of(WaitStatus::StillAlive), None);
    }

    #[test]
    fn command_has_minimal_environment() {
        let mut s = svc("x");
        s.env.insert("RUST_BACKTRACE".into(), "1".into());
        s.args = vec!["--flag".into()];
        let cmd = command(&s, None);
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
            watchdog_ms: 0,
            oom_score_adj: 0,
        };
        let out = command(&s, None).stdout(Stdio::piped()).output().unwrap();
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
    fn child_gets_its_oom_score_adj_and_watchdog_fd_before_exec() {
        let (read, write) = watchdog_pipe().unwrap();
        let s = Service {
            path: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "echo \"oom=$(cat /proc/self/oom_score_adj) fd=$INIT_WATCHDOG_FD ms=$INIT_WATCHDOG_MS\"; \
                 echo ping >&$INIT_WATCHDOG_FD"
                    .into(),
            ],
            watchdog_ms: 4000,
            oom_score_adj: 321,
            ..svc("sh")
        };
        let out = command(&s, Some(write.as_raw_fd()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        drop(write);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{text} {:?}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            text.trim(),
            format!("oom=321 fd={} ms=4000", s_fd(&text)),
            "{text}"
        );
        assert_eq!(drain_pings(&read), Some(true));
        // The child is gone and the write end closed: the pipe says so.
        assert_closes(&read);
    }

    /// The pipe reports its writer gone. Not at once: a test on another thread may be
    /// between fork and exec, holding a copy of every fd until its exec closes them.
    fn assert_closes(fd: &OwnedFd) {
        for _ in 0..200 {
            match drain_pings(fd) {
                None => return,
                Some(pinged) => assert!(!pinged, "a ping after the child died"),
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the watchdog pipe never reported its writer closed");
    }

    /// The fd number the child printed (whatever pipe2 gave this test).
    fn s_fd(text: &str) -> String {
        text.split("fd=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    }

    #[test]
    fn spawned_service_reports_its_watchdog_pipe_and_oom_score_adj() {
        let s = Service {
            path: "/bin/sleep".into(),
            args: vec!["5".into()],
            watchdog_ms: 2000,
            // Raised, not lowered: lowering needs CAP_SYS_RESOURCE, which a test container
            // may lack (in the guest, init is at -1000 and every service value is a raise).
            oom_score_adj: 500,
            ..svc("sleep")
        };
        let started = spawn(&s).unwrap();
        let adj = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", started.pid)).unwrap();
        let fd = started.watchdog.as_ref().expect("a watchdog pipe");
        // Alive and silent.
        assert_eq!(drain_pings(fd), Some(false));
        nix::sys::signal::kill(
            Pid::from_raw(started.pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        waitpid(Pid::from_raw(started.pid), None).unwrap();
        assert_eq!(adj.trim(), "500");
        assert_closes(fd);
        // Without a watchdog, no pipe.
        let plain = spawn(&Service {
            path: "/bin/true".into(),
            ..svc("true")
        })
        .unwrap();
        assert!(plain.watchdog.is_none());
        waitpid(Pid::from_raw(plain.pid), None).unwrap();
    }

    /// The supervisor with real processes: `spawn`, the watchdog pipes, SIGKILL and waitpid,
    /// as main's loop wires them, on a millisecond clock of the test's own.
    struct Harness {
        sup: crate::supervise::Supervisor,
        pipes: Vec<(i32, OwnedFd)>,
        lines: Vec<String>,
        t0: std::time::Instant,
    }

    impl Harness {
        fn new(s: Service) -> Harness {
            Harness {
                sup: crate::supervise::Supervisor::new(vec![s], 0),
                pipes: Vec::new(),
                lines: Vec::new(),
                t0: std::time::Instant::now(),
            }
        }

        fn now(&self) -> u64 {
            self.t0.elapsed().as_millis() as u64
        }

        fn feed(&mut self, event: crate::supervise::Event) {
            let now = self.now();
            let pipes = &mut self.pipes;
            let lines = crate::supervise::drive(
                &mut self.sup,
                event,
                now,
                |s| {
                    spawn(s).map(|st| {
                        pipes.extend(st.watchdog.map(|fd| (st.pid, fd)));
                        st.pid
                    })
                },
                |pid| {
                    nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
                        .map_err(|e| e.to_string())
                },
            );
            self.lines.extend(lines);
        }

        /// Runs the loop for `ms`: pings from the pipes, exits of the running service, timers.
        fn run_for(&mut self, ms: u64) {
            use crate::supervise::Event;
            let end = self.now() + ms;
            while self.now() < end {
                std::thread::sleep(std::time::Duration::from_millis(20));
                let pings: Vec<i32> = self
                    .pipes
                    .iter()
                    .filter(|(_, fd)| drain_pings(fd) == Some(true))
                    .map(|(p, _)| *p)
                    .collect();
                for pid in pings {
                    self.feed(Event::Ping { pid });
                }
                for (_, pid) in self.sup.running() {
                    if let Ok(st) = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG))
                        && let Some((pid, reason)) = exit_of(st)
                    {
                        self.pipes.retain(|(p, _)| *p != pid);
                        self.feed(Event::Exited { pid, reason });
                    }
                }
                self.feed(Event::Timer);
            }
        }

        fn stop(mut self) -> Vec<String> {
            self.feed(crate::supervise::Event::Shutdown);
            for (_, pid) in self.sup.running() {
                let _ =
                    nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                let _ = waitpid(Pid::from_raw(pid), None);
            }
            self.lines
        }
    }

    #[test]
    fn a_real_hung_service_is_killed_and_restarted() {
        // Pings once, then hangs (stopped, as the e2e test's SIGSTOP leaves nat-init).
        let hung = Service {
            path: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "echo >&$INIT_WATCHDOG_FD; kill -STOP $$".into(),
            ],
            watchdog_ms: 1000,
            ..svc("hung")
        };
        let mut h = Harness::new(hung);
        // Killed after about 1 s and started again 200 ms later; the rest is slack for a
        // loaded machine.
        h.run_for(3000);
        let lines = h.stop();
        let first = lines[0]
            .strip_prefix("started hung pid=")
            .unwrap()
            .to_string();
        let watchdog = lines
            .iter()
            .position(|l| l.starts_with(&format!("watchdog: hung pid={first} silent for ")))
            .unwrap_or_else(|| panic!("no watchdog line: {lines:#?}"));
        assert!(
            lines[watchdog].ends_with("(limit 1000 ms), sending SIGKILL"),
            "{lines:#?}"
        );
        assert_eq!(
            lines[watchdog + 1..watchdog + 3],
            ["hung killed by signal SIGKILL", "restarting hung in 200 ms"],
            "{lines:#?}"
        );
        assert!(
            lines[watchdog + 3].starts_with("started hung pid="),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_real_service_that_pings_is_left_alone() {
        let alive = Service {
            path: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "while :; do echo >&$INIT_WATCHDOG_FD; sleep 0.2; done".into(),
            ],
            // Ten pings a limit: a loaded machine does not make this one miss.
            watchdog_ms: 2000,
            ..svc("alive")
        };
        let mut h = Harness::new(alive);
        h.run_for(4500);
        let lines = h.stop();
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].starts_with("started alive pid="), "{lines:#?}");
    }

    #[test]
    fn spawn_of_missing_binary_is_an_error() {
        let err = spawn(&svc("definitely-not-here-init-test")).unwrap_err();
        assert!(err.contains("/sbin/definitely-not-here-init-test"), "{err}");
    }
}

//! Child processes, the system-call side of supervision: starting a service (minimal
//! environment, clean signal state, a session of its own), reaping every exited child with
//! waitpid(-1, WNOHANG), and reading a wait status as an [`ExitReason`]. `supervise` decides
//! what to start and when; main carries that out with the functions here.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::config::Service;

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
unsafe fn reset_in_child() -> std::io::Result<()> {
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
    Ok(())
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
        unsafe { reset_in_child() }
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

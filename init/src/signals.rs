//! Signals: PID 1 blocks them all and reads them from a signalfd; children are reaped
//! with waitpid(-1, WNOHANG); spawned services get a clean signal state back.

use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::supervise::ExitReason;

/// What a received signal asks init to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Reap,
    PowerOff,
    /// Ctrl-Alt-Del, which arrives as SIGINT once the kernel's reboot-on-CAD is off.
    Reboot,
    Ignore,
}

pub fn classify(signo: i32) -> Action {
    match Signal::try_from(signo) {
        Ok(Signal::SIGCHLD) => Action::Reap,
        Ok(Signal::SIGTERM | Signal::SIGPWR) => Action::PowerOff,
        Ok(Signal::SIGINT) => Action::Reboot,
        _ => Action::Ignore,
    }
}

/// `SIGKILL` for 9, `signal 40` for numbers nix has no name for (real-time signals).
pub fn name(signo: i32) -> String {
    match Signal::try_from(signo) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {signo}"),
    }
}

/// Blocks every signal in this thread (the only one), so they queue for the signalfd.
pub fn block_all() -> Result<(), Errno> {
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), None)
}

/// The signal source for the main loop.
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    pub fn new() -> Result<Signals, Errno> {
        let fd = SignalFd::with_flags(
            &SigSet::all(),
            SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
        )?;
        Ok(Signals { fd })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads every pending signal number.
    pub fn drain(&self) -> Vec<i32> {
        let mut out = Vec::new();
        while let Ok(Some(info)) = self.fd.read_signal() {
            out.push(info.ssi_signo as i32);
        }
        out
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
pub unsafe fn reset_in_child() -> std::io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify(libc::SIGCHLD), Action::Reap);
        assert_eq!(classify(libc::SIGTERM), Action::PowerOff);
        assert_eq!(classify(libc::SIGPWR), Action::PowerOff);
        assert_eq!(classify(libc::SIGINT), Action::Reboot);
        assert_eq!(classify(libc::SIGHUP), Action::Ignore);
        assert_eq!(classify(libc::SIGRTMIN() + 3), Action::Ignore);
    }

    #[test]
    fn signal_names() {
        assert_eq!(name(9), "SIGKILL");
        assert_eq!(name(15), "SIGTERM");
        assert_eq!(name(40), "signal 40");
    }

    #[test]
    fn wait_status_conversion() {
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
}

//! Signals: PID 1 blocks them all and reads them from a signalfd, and each one is
//! classified into what it asks init to do. Reaping and a child's clean signal state
//! are in `children`.

use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

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
}

//! init's watchdog: when init starts nat-init with a liveness limit it passes the write end of
//! a pipe in `INIT_WATCHDOG_FD` and the limit in `INIT_WATCHDOG_MS`; the main loop writes a
//! byte at least every half of that limit, and a nat-init that stops doing so (hung, stopped,
//! spinning outside the loop) is killed and restarted by init. Without the variables (run by
//! hand, in the tests) there is no watchdog.

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, RawFd};

use super::console::error;

/// The variables init sets.
const FD_ENV: &str = "INIT_WATCHDOG_FD";
const MS_ENV: &str = "INIT_WATCHDOG_MS";

/// The pipe to init and when the next ping is due.
#[derive(Debug)]
pub struct Watchdog {
    pipe: File,
    every_ms: u64,
    next_ms: u64,
    said_error: bool,
}

/// The fd and the limit from the variables' values: `Ok(None)` when init set neither.
pub fn parse(fd: Option<&str>, ms: Option<&str>) -> Result<Option<(RawFd, u64)>, String> {
    let (fd, ms) = match (fd, ms) {
        (None, None) => return Ok(None),
        (Some(fd), Some(ms)) => (fd, ms),
        _ => return Err(format!("{FD_ENV} and {MS_ENV} go together; got only one")),
    };
    let fd: RawFd = fd
        .parse()
        .ok()
        .filter(|fd| *fd > 2)
        .ok_or_else(|| format!("{FD_ENV}={fd:?} is not an fd number above 2"))?;
    let ms: u64 = ms
        .parse()
        .ok()
        .filter(|ms| *ms >= 2)
        .ok_or_else(|| format!("{MS_ENV}={ms:?} is not a number of milliseconds"))?;
    Ok(Some((fd, ms)))
}

/// The watchdog init asked for, if any; a bad variable or fd is an error line and no watchdog
/// (init then restarts nat-init at its deadline, which the line explains).
pub fn from_env(now_ms: u64) -> Option<Watchdog> {
    let fd = std::env::var(FD_ENV).ok();
    let ms = std::env::var(MS_ENV).ok();
    let (fd, ms) = match parse(fd.as_deref(), ms.as_deref()) {
        Ok(v) => v?,
        Err(e) => {
            error("watchdog", format_args!("{e}; not pinging init"));
            return None;
        }
    };
    // SAFETY: fcntl(F_GETFD) on a number only asks whether it is an open fd.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        error(
            "watchdog",
            format_args!("{FD_ENV}={fd} is not open; not pinging init"),
        );
        return None;
    }
    // SAFETY: init opened this fd for us alone and nothing else in the process refers to it:
    // it is taken over exactly once, here, at startup.
    let pipe = unsafe { File::from_raw_fd(fd) };
    // Not for anything nat-init might run.
    // SAFETY: fcntl(F_SETFD) on the fd just taken over.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(Watchdog {
        pipe,
        every_ms: ms / 2,
        next_ms: now_ms,
        said_error: false,
    })
}

impl Watchdog {
    /// When the loop must be awake for the next ping.
    pub fn due_ms(&self) -> u64 {
        self.next_ms
    }

    /// Pings init if it is time. A full pipe (init is behind) is fine: a ping is there.
    pub fn ping_if_due(&mut self, now_ms: u64) {
        if now_ms < self.next_ms {
            return;
        }
        self.next_ms = now_ms.saturating_add(self.every_ms);
        match self.pipe.write(b"\n") {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if !self.said_error => {
                self.said_error = true;
                error("watchdog", format_args!("pinging init: {e}"));
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::IntoRawFd;

    #[test]
    fn variables_are_parsed_and_checked() {
        assert_eq!(parse(None, None), Ok(None));
        assert_eq!(parse(Some("3"), Some("30000")), Ok(Some((3, 30_000))));
        for (fd, ms, says) in [
            (Some("3"), None, "go together"),
            (None, Some("1000"), "go together"),
            (Some("1"), Some("1000"), "INIT_WATCHDOG_FD=\"1\""),
            (Some("x"), Some("1000"), "INIT_WATCHDOG_FD=\"x\""),
            (Some("3"), Some("soon"), "INIT_WATCHDOG_MS=\"soon\""),
        ] {
            let err = parse(fd, ms).unwrap_err();
            assert!(err.contains(says), "{fd:?} {ms:?}: {err}");
        }
    }

    #[test]
    fn pings_when_due_and_every_half_limit() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let mut w = Watchdog {
            // SAFETY: the write end was just created by this test and is given away here.
            pipe: unsafe { File::from_raw_fd(write.into_raw_fd()) },
            every_ms: 500,
            next_ms: 1000,
            said_error: false,
        };
        w.ping_if_due(999);
        w.ping_if_due(1000);
        assert_eq!(w.due_ms(), 1500);
        w.ping_if_due(1499);
        w.ping_if_due(1600);
        assert_eq!(w.due_ms(), 2100);
        drop(w);
        let mut got = String::new();
        File::from(read).read_to_string(&mut got).unwrap();
        assert_eq!(got, "\n\n", "one ping at 1000 and one at 1600");
    }
}

//! Log lines to the console and to the kernel log, each prefixed `init: `.
//!
//! The file descriptors live in atomics rather than behind a lock so that the
//! panic hook can log even if a panic happened half-way through another log call.

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, SFlag, fstat};

/// Where console lines go: stdout, which the kernel opened on /dev/console.
static CONSOLE_FD: AtomicI32 = AtomicI32::new(libc::STDOUT_FILENO);
/// /dev/kmsg once /dev is mounted; -1 until then.
static KMSG_FD: AtomicI32 = AtomicI32::new(-1);

/// The kernel truncates longer /dev/kmsg records; keep well below its limit.
const MAX_LINE: usize = 900;

/// Logs one message; a multi-line message becomes several prefixed lines.
pub fn line(args: fmt::Arguments<'_>) {
    let text = fmt::format(args);
    for l in format_lines(&text) {
        write_console(l.as_bytes());
        write_kmsg(&l);
    }
}

/// `log!("...", args)`: log a formatted line with the `init: ` prefix.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::log::line(format_args!($($arg)*)) };
}

/// Splits a message into console lines `init: <line>\n`, truncating overlong ones.
pub fn format_lines(text: &str) -> Vec<String> {
    let text = text.trim_end_matches('\n');
    text.split('\n')
        .map(|l| {
            let l = l.trim_end_matches('\r');
            let mut cut = l.len().min(MAX_LINE);
            while !l.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("init: {}\n", &l[..cut])
        })
        .collect()
}

/// The /dev/kmsg record for a console line: level 6 (info), no trailing newline needed.
pub fn kmsg_record(console_line: &str) -> String {
    format!("<6>{}", console_line)
}

fn write_console(bytes: &[u8]) {
    write_fd(CONSOLE_FD.load(Ordering::Relaxed), bytes);
}

fn write_kmsg(console_line: &str) {
    let fd = KMSG_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        write_fd(fd, kmsg_record(console_line).as_bytes());
    }
}

/// Best effort: a console that cannot be written to must not stop the boot.
fn write_fd(fd: RawFd, mut bytes: &[u8]) {
    if fd < 0 {
        return;
    }
    // SAFETY: the descriptor is owned by this module (or is stdout) and stays open for
    // the life of the process; it is only borrowed for this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

/// Opens /dev/kmsg for writing (needs /dev mounted).
pub fn open_kmsg() -> anyhow::Result<()> {
    use anyhow::Context;
    let fd = open(
        "/dev/kmsg",
        OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .context("opening /dev/kmsg")?;
    let old = KMSG_FD.swap(fd.into_raw_fd(), Ordering::Relaxed);
    if old >= 0 {
        // SAFETY: `old` was a descriptor this module opened and nothing else refers to it.
        drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(old) });
    }
    Ok(())
}

/// Character device 1:3, /dev/null: what Rust's runtime puts on closed standard fds.
fn is_dev_null(fd: RawFd) -> bool {
    // SAFETY: borrowed only for the fstat call; fstat on a closed fd just fails.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    match fstat(fd) {
        Ok(st) => {
            SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFCHR
                && st.st_rdev == libc::makedev(1, 3)
        }
        Err(_) => true,
    }
}

/// If the kernel could not give us a console (stdout is closed or /dev/null),
/// open /dev/console now that /dev is mounted and put it on stdout and stderr,
/// which services inherit.
pub fn reopen_console_if_needed() -> anyhow::Result<bool> {
    use anyhow::Context;
    if !is_dev_null(libc::STDOUT_FILENO) {
        return Ok(false);
    }
    let fd = open(
        "/dev/console",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context("opening /dev/console")?;
    for target in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: dup2 onto the standard descriptors, which this process owns; no Rust
        // object holds them other than the std handles, which stay valid.
        let rc = unsafe { libc::dup2(fd.as_raw_fd(), target) };
        nix::errno::Errno::result(rc).with_context(|| format!("dup2 console to fd {target}"))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_gets_prefix_and_newline() {
        assert_eq!(format_lines("up in 5 ms"), vec!["init: up in 5 ms\n"]);
    }

    #[test]
    fn multi_line_message_is_split_and_each_prefixed() {
        assert_eq!(
            format_lines("bad config:\n  line 3\n"),
            vec!["init: bad config:\n", "init:   line 3\n"]
        );
    }

    #[test]
    fn overlong_line_is_truncated_on_char_boundary() {
        let long = "é".repeat(1000);
        let out = format_lines(&long);
        assert_eq!(out.len(), 1);
        assert!(out[0].len() <= "init: \n".len() + MAX_LINE);
        assert!(out[0].ends_with("é\n"));
    }

    #[test]
    fn kmsg_record_has_info_level() {
        assert_eq!(kmsg_record("init: x\n"), "<6>init: x\n");
    }
}

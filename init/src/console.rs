//! The test console, only in an init built with the `test-console` feature (test image
//! profiles, `[init] test_console = true`, which also sets the runtime key in /etc/init.toml):
//! init reads lines from the serial console and obeys `init-test kill <service>`, which
//! SIGKILLs a running service so that tests can prove supervision on the real boot path,
//! `init-test stop <service>`, which SIGSTOPs it (a hung service, for the watchdog),
//! `init-test meminfo`, which prints MemAvailable and the RSS of init and each service, and
//! `init-test read <path>`, which prints the first line of a file under /proc or /sys (both
//! for `cargo xtask bench`). Production init does not contain this module, and
//! `cargo xtask ami` refuses an image built with the feature.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// A command read from the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Kill(String),
    Stop(String),
    Meminfo,
    Read(String),
}

/// Parses one console line; anything that is not an `init-test` command is ignored, so a
/// stray echo or a human typing does nothing.
pub fn parse(line: &str) -> Option<Command> {
    let mut words = line.split_whitespace();
    if words.next()? != "init-test" {
        return None;
    }
    match (words.next()?, words.next(), words.next()) {
        ("kill", Some(name), None) => Some(Command::Kill(name.to_string())),
        ("stop", Some(name), None) => Some(Command::Stop(name.to_string())),
        ("meminfo", None, None) => Some(Command::Meminfo),
        ("read", Some(path), None)
            if (path.starts_with("/proc/") || path.starts_with("/sys/"))
                && !path.split('/').any(|c| c == "..") =>
        {
            Some(Command::Read(path.to_string()))
        }
        _ => None,
    }
}

/// Where a `read` really goes: the path with every symlink resolved, which must still be a
/// file under /proc or /sys and not inside a process's `root` or `cwd` (both lead into a file
/// system outside /proc, perhaps another mount namespace's). Checked on the resolved path and
/// the resolved path is what is read, so `/proc/1/root/etc/shadow`, `/proc/self/cwd/..` or a
/// symlink out of /sys do not get around the prefix check `parse` made on the text.
pub fn resolve_read_path(path: &str) -> Result<PathBuf, String> {
    let real = std::fs::canonicalize(path).map_err(|e| format!("resolving the path: {e}"))?;
    let mut parts = real.components();
    let top = match (parts.next(), parts.next()) {
        (Some(Component::RootDir), Some(Component::Normal(top))) => top,
        _ => {
            return Err(format!(
                "resolves to {}, not under /proc or /sys",
                real.display()
            ));
        }
    };
    if top != "proc" && top != "sys" {
        return Err(format!(
            "resolves to {}, not under /proc or /sys",
            real.display()
        ));
    }
    if top == "proc"
        && real.components().any(|c| {
            c == Component::Normal("root".as_ref()) || c == Component::Normal("cwd".as_ref())
        })
    {
        return Err(format!(
            "resolves to {}, inside a process's root or cwd",
            real.display()
        ));
    }
    Ok(real)
}

/// The first line of the file a `read` names, once [`resolve_read_path`] allows it.
pub fn read_first_line(path: &str) -> Result<String, String> {
    let real = resolve_read_path(path)?;
    let text = std::fs::read_to_string(Path::new(&real)).map_err(|e| e.to_string())?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// A `kB` field of a /proc meminfo or status text, e.g. `MemAvailable` or `VmRSS`.
pub fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The `meminfo` answer: `meminfo MemTotal_kb=.. MemAvailable_kb=.. rss_kb_<name>=..`, with
/// `?` for what could not be read.
pub fn meminfo_line(meminfo: &str, rss: &[(String, Option<u64>)]) -> String {
    let show = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
    let mut line = format!(
        "meminfo MemTotal_kb={} MemAvailable_kb={}",
        show(kb_field(meminfo, "MemTotal")),
        show(kb_field(meminfo, "MemAvailable"))
    );
    for (name, kb) in rss {
        line.push_str(&format!(" rss_kb_{name}={}", show(*kb)));
    }
    line
}

/// Splits complete lines off `buf`, keeping a partial last line for the next read.
pub fn take_lines(buf: &mut Vec<u8>) -> Vec<String> {
    let mut lines = Vec::new();
    while let Some(i) = buf.iter().position(|b| *b == b'\n' || *b == b'\r') {
        let line: Vec<u8> = buf.drain(..=i).collect();
        let text = String::from_utf8_lossy(&line[..line.len() - 1])
            .trim()
            .to_string();
        if !text.is_empty() {
            lines.push(text);
        }
    }
    // Bounded: a console that never sends a newline cannot grow init's memory.
    if buf.len() > 4096 {
        buf.clear();
    }
    lines
}

pub struct Console {
    file: File,
    buf: Vec<u8>,
}

impl Console {
    pub fn open() -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open("/dev/console")?;
        Ok(Self {
            file,
            buf: Vec::new(),
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Reads what is there and returns the commands in complete lines.
    pub fn read_commands(&mut self) -> Vec<Command> {
        let mut chunk = [0u8; 512];
        while let Ok(n) = self.file.read(&mut chunk) {
            if n == 0 {
                break;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        take_lines(&mut self.buf)
            .iter()
            .filter_map(|l| parse(l))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_commands_are_obeyed() {
        assert_eq!(
            parse("init-test kill nat-init"),
            Some(Command::Kill("nat-init".into()))
        );
        assert_eq!(
            parse("  init-test   kill  x  "),
            Some(Command::Kill("x".into()))
        );
        assert_eq!(parse("init-test meminfo"), Some(Command::Meminfo));
        assert_eq!(
            parse("init-test stop nat-init"),
            Some(Command::Stop("nat-init".into()))
        );
        assert_eq!(
            parse("init-test read /proc/sys/net/netfilter/nf_conntrack_count"),
            Some(Command::Read(
                "/proc/sys/net/netfilter/nf_conntrack_count".into()
            ))
        );
        for ignored in [
            "",
            "kill nat-init",
            "init-test",
            "init-test kill",
            "init-test kill a b",
            "init-test stop",
            "init-test stop a b",
            "init-test reboot",
            "init-test meminfo now",
            "init-test read /etc/shadow",
            "init-test read /proc/../etc/shadow",
        ] {
            assert_eq!(parse(ignored), None, "{ignored:?}");
        }
    }

    #[test]
    fn reads_follow_symlinks_only_within_proc_and_sys() {
        // Allowed: plain files, and links that stay inside (/proc/self, /sys/class/net/lo).
        assert_eq!(
            read_first_line("/proc/sys/kernel/ostype").as_deref(),
            Ok("Linux")
        );
        assert!(
            read_first_line("/proc/self/status")
                .unwrap()
                .starts_with("Name:")
        );
        assert_eq!(
            read_first_line("/sys/class/net/lo/address").as_deref(),
            Ok("00:00:00:00:00:00")
        );
        // Each of these reads a file outside /proc and /sys on the old code.
        let own_fd = std::fs::File::open("/etc/passwd").unwrap();
        let fd_link = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&own_fd));
        let own_task = format!("/proc/self/task/{}/root/etc/passwd", std::process::id());
        for escape in [
            "/proc/self/root/etc/passwd",
            "/proc/thread-self/root/etc/passwd",
            // cargo runs tests in the package directory.
            "/proc/self/cwd/Cargo.toml",
            own_task.as_str(),
            "/proc/self/exe",
            fd_link.as_str(),
            "/sys/../etc/passwd",
            "/proc/../etc/passwd",
        ] {
            let err = read_first_line(escape).unwrap_err();
            assert!(err.contains("not under /proc or /sys"), "{escape}: {err}");
        }
        // Another process's root: refused whether or not it may be looked at (in a
        // container, PID 1's is not ours to resolve, which is an error too).
        for other in ["/proc/1/root/etc/passwd", "/proc/1/task/1/root/etc/passwd"] {
            assert!(read_first_line(other).is_err(), "{other}");
        }
        // Through a root back into our own /proc is harmless: it is the resolved path that
        // is read, in init's own mount namespace.
        let back = resolve_read_path("/proc/self/root/proc/self/status").unwrap();
        assert_eq!(
            back,
            Path::new(&format!("/proc/{}/status", std::process::id()))
        );
        assert!(read_first_line("/proc/definitely-not-here").is_err());
    }

    #[test]
    fn meminfo_line_reads_kb_fields() {
        let meminfo = "MemTotal:         490240 kB\nMemFree:  1 kB\nMemAvailable:     459952 kB\n";
        let status = "Name:\tinit\nVmRSS:\t    1376 kB\n";
        assert_eq!(kb_field(status, "VmRSS"), Some(1376));
        assert_eq!(kb_field(meminfo, "Mem"), None);
        assert_eq!(
            meminfo_line(
                meminfo,
                &[
                    ("init".into(), kb_field(status, "VmRSS")),
                    ("nat-init".into(), None)
                ]
            ),
            "meminfo MemTotal_kb=490240 MemAvailable_kb=459952 rss_kb_init=1376 rss_kb_nat-init=?"
        );
    }

    #[test]
    fn lines_are_split_and_partial_lines_kept() {
        let mut buf = b"init-test kill a\r\nnoise\ninit-te".to_vec();
        assert_eq!(take_lines(&mut buf), vec!["init-test kill a", "noise"]);
        assert_eq!(buf, b"init-te");
        buf.extend_from_slice(b"st kill b\n");
        assert_eq!(take_lines(&mut buf), vec!["init-test kill b"]);
        let mut long = vec![b'x'; 5000];
        assert!(take_lines(&mut long).is_empty());
        assert!(long.is_empty());
    }
}

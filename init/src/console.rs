//! The test console: with `test_console = true` in /etc/init.toml (test images only), init
//! reads lines from the serial console and obeys `init-test kill <service>`, which SIGKILLs a
//! running service so that tests can prove supervision on the real boot path, and
//! `init-test meminfo`, which prints MemAvailable and the RSS of init and each service, and
//! `init-test read <path>`, which prints the first line of a file under /proc or /sys (both
//! for `cargo xtask bench`). Production
//! profiles leave it off, and then init never reads the console.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

/// A command read from the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Kill(String),
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
            "init-test reboot",
            "init-test meminfo now",
            "init-test read /etc/shadow",
            "init-test read /proc/../etc/shadow",
        ] {
            assert_eq!(parse(ignored), None, "{ignored:?}");
        }
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

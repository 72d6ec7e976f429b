//! `heartbeat`: a test-only service for the boot tests of the test image profile.
//!
//! Prints `heartbeat: started pid=<pid>`, then `heartbeat: alive n=<k>` once per second.
//! With `--die-after SECS` it sends itself SIGKILL after that many seconds, so init's
//! restart path is exercised by a real signal death.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::getpid;

/// Seconds until self-kill, if asked for.
fn parse_args(args: &[String]) -> anyhow::Result<Option<u64>> {
    match args {
        [] => Ok(None),
        [flag, secs] if flag == "--die-after" => secs
            .parse()
            .map(Some)
            .with_context(|| format!("--die-after {secs:?}: not a number of seconds")),
        _ => bail!("usage: heartbeat [--die-after SECS]"),
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let die_after = parse_args(&args)?;
    let start = Instant::now();
    let mut out = std::io::stdout();
    writeln!(out, "heartbeat: started pid={}", getpid())?;
    for n in 1u64.. {
        std::thread::sleep(Duration::from_secs(1));
        if let Some(secs) = die_after
            && start.elapsed() >= Duration::from_secs(secs)
        {
            kill(getpid(), Signal::SIGKILL).context("kill(self, SIGKILL)")?;
        }
        writeln!(out, "heartbeat: alive n={n}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments() {
        assert_eq!(parse_args(&[]).unwrap(), None);
        assert_eq!(
            parse_args(&strings(&["--die-after", "5"])).unwrap(),
            Some(5)
        );
        assert!(parse_args(&strings(&["--die-after", "x"])).is_err());
        assert!(parse_args(&strings(&["--die-after"])).is_err());
        assert!(parse_args(&strings(&["--other", "1"])).is_err());
    }
}

//! `heartbeat`: a test-only service for the boot tests of the test image profile.
//!
//! Prints `heartbeat: started pid=<pid>`, then `heartbeat: alive n=<k>` once per second.
//! With `--die-after SECS` it sends itself SIGKILL after that many seconds, so init's
//! restart path is exercised by a real signal death.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use argh::FromArgs;
use nix::sys::signal::{Signal, kill};
use nix::unistd::getpid;

/// test service of the boot tests: prints a line every second
#[derive(FromArgs, Debug, PartialEq, Eq)]
struct Heartbeat {
    /// send itself SIGKILL after SECS seconds (init's restart path)
    #[argh(option, arg_name = "SECS")]
    die_after: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    // Prints usage or the error naming the bad flag, and exits, on anything else.
    let Heartbeat { die_after } = argh::from_env();
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

    /// Seconds until self-kill, if asked for: what `main` gets from `argh::from_env`.
    fn parse_args(args: &[&str]) -> Result<Option<u64>, argh::EarlyExit> {
        Heartbeat::from_args(&["heartbeat"], args).map(|h| h.die_after)
    }

    #[test]
    fn arguments() {
        assert_eq!(parse_args(&[]).unwrap(), None);
        assert_eq!(parse_args(&["--die-after", "5"]).unwrap(), Some(5));
        assert!(parse_args(&["--die-after", "x"]).is_err());
        assert!(parse_args(&["--die-after"]).is_err());
        assert!(parse_args(&["--other", "1"]).is_err());
        let e = parse_args(&["--die-after", "x"]).unwrap_err();
        assert!(e.output.contains("--die-after"), "{}", e.output);
        let help = parse_args(&["--help"]).unwrap_err();
        assert!(help.status.is_ok());
        assert!(
            help.output
                .starts_with("Usage: heartbeat [--die-after <SECS>]")
        );
    }
}

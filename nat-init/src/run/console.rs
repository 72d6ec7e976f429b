//! What the service prints: one line at a time on stdout (init passes it to the console), in
//! the shapes `nat_init::report` fixes, and the boot clock the lines and deadlines use.

use std::fmt::Display;
use std::io::Write;
use std::time::Duration;

use nat_init::report;

/// One console line. Write errors are ignored: a missing console must not stop the NAT.
pub fn say(line: impl Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `nat-init: <msg>`.
pub fn info(msg: impl Display) {
    say(format_args!("{} {msg}", report::PREFIX));
}

/// `nat-init: error <what> <why>`.
pub fn error(what: &str, why: impl Display) {
    say(report::error_line(what, &why));
}

/// Milliseconds since boot: the clock of every deadline and of `elapsed_ms`.
pub fn now_ms() -> u64 {
    report::boot_elapsed_ms().unwrap_or(0)
}

pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

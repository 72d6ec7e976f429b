//! SIGTERM (init stopping services at shutdown) and SIGINT end nat-init at once with status 0.
//! The table, addresses and sysctls stay: the NAT keeps working until the machine goes down or a
//! new nat-init takes over.

use anyhow::{Context, Result};

extern "C" fn on_sigterm(_: libc::c_int) {
    const MSG: &[u8] = b"nat-init: stopping on SIGTERM; the ruleset stays in place\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe, and MSG is a static buffer. Exiting
    // from the handler is what makes the stop prompt even in the middle of a blocking call.
    unsafe {
        libc::write(libc::STDOUT_FILENO, MSG.as_ptr().cast(), MSG.len());
        libc::_exit(0);
    }
}

/// SIGTERM (init stopping services at shutdown) and SIGINT end the process with status 0.
pub fn install_signal_handlers() -> Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_sigterm),
        SaFlags::empty(),
        SigSet::all(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only calls async-signal-safe functions.
        unsafe { nix::sys::signal::sigaction(sig, &action) }
            .with_context(|| format!("installing the {sig} handler"))?;
    }
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None)
        .context("unblocking SIGTERM")?;
    Ok(())
}

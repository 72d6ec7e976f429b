//! SIGTERM (init stopping services at shutdown) and SIGINT end nat-init at once with status 0,
//! except on a failover member, which first hands its routes to a peer (`failover`).
//! The table, addresses and sysctls stay: the NAT keeps working until the machine goes down or a
//! new nat-init takes over.

use anyhow::{Context, Result};

extern "C" fn on_sigterm(_: libc::c_int) {
    const MSG: &[u8] = b"nat-init: stopping on SIGTERM; the ruleset stays in place\n";
    const HANDOVER: &[u8] = b"nat-init: SIGTERM; handing over to the failover group first\n";
    // A failover member hands its routes over first; its thread exits when done (atomics are
    // async-signal-safe).
    if super::failover::ACTIVE.load(std::sync::atomic::Ordering::SeqCst) {
        super::failover::STOP.store(true, std::sync::atomic::Ordering::SeqCst);
        // SAFETY: write(2) is async-signal-safe and HANDOVER is a static buffer.
        unsafe {
            libc::write(
                libc::STDOUT_FILENO,
                HANDOVER.as_ptr().cast(),
                HANDOVER.len(),
            );
        }
        return;
    }
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

//! nat-init, the NAT service PID 1 starts and restarts: finds and names the primary interface,
//! leases its address over DHCP, reads IMDS, sets the sysctls, installs and verifies the
//! nftables table, prints `nat-init: ready ...`, then keeps the lease renewed and checks for
//! drift, printing a health line every `health_interval` seconds. Every failure is printed as
//! `nat-init: error <what> <why>` and retried with back-off; it never exits on its own. It is
//! safe to restart at any point: everything it sets is re-applied idempotently, and what is
//! already in place (addresses, the verified table) keeps the NAT working meanwhile.
//!
//! The decisions live in the library's `nat_init::plan` (unit-tested); the I/O they call for is
//! this binary's `run` module, in files of the same names (`plan/lease.rs` decides what
//! `run/lease.rs` does for `Stage::Address`, ...). This file only sets up the process: panic
//! hook, signals, arguments, init's watchdog pipe (`run::watchdog`), then `run`.

mod run;

use nat_init::config;
use nat_init::plan;

/// `--iam-policy`: the policy for the configuration (and user-data) given, on stdout; errors
/// on stderr and status 2.
fn print_iam_policy(a: &plan::PolicyArgs) -> i32 {
    let read = |path: &str| {
        std::fs::read_to_string(path).map_err(|e| eprintln!("nat-init: reading {path}: {e}"))
    };
    let baked = match a.config.as_deref().map(read).transpose() {
        Ok(t) => t,
        Err(()) => return 2,
    };
    let user_data = match a.user_data.as_deref().map(read).transpose() {
        Ok(t) => t,
        Err(()) => return 2,
    };
    let name = a.config.as_deref().unwrap_or(config::BAKED_PATH);
    let layered =
        config::Config::layered(baked.as_deref().map(|t| (t, name)), user_data.as_deref());
    if !layered.errors.is_empty() {
        for e in &layered.errors {
            eprintln!("nat-init: {e}");
        }
        return 2;
    }
    let inputs = plan::aws::policy_inputs(&layered.config.aws, a);
    println!("{}", nat_init::aws::iam::policy_json(&inputs));
    0
}

fn main() {
    // A bug must still leave an `error` line on the console before init restarts us.
    std::panic::set_hook(Box::new(|info| {
        run::error("panic", format_args!("{info}; init will restart nat-init"));
    }));
    if let Err(e) = run::install_signal_handlers() {
        run::error("signal", format_args!("{e:#}"));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config_path = match plan::parse_args(&args) {
        Ok(plan::Command::Run(p)) => p.unwrap_or_else(|| config::BAKED_PATH.to_string()),
        Ok(plan::Command::IamPolicy(a)) => std::process::exit(print_iam_policy(&a)),
        Err(exit) if exit.status.is_ok() => {
            print!("{}", exit.output);
            std::process::exit(0);
        }
        Err(exit) => {
            run::error("usage", exit.output.trim_end());
            std::process::exit(2);
        }
    };
    run::info(format_args!(
        "starting version={} config={config_path}",
        env!("CARGO_PKG_VERSION")
    ));
    // Taken first, so the fd is close-on-exec before anything else runs.
    let watchdog = run::watchdog::from_env(nat_init::report::boot_elapsed_ms().unwrap_or(0));
    run::start(config_path).run(watchdog)
}

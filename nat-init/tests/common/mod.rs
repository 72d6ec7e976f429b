//! Helpers shared by the root network-namespace tests: running host tools, and failing with
//! the exact install command when one is missing (a test never skips for lack of a tool).

use std::process::Command;

pub fn tool_hint(tool: &str) -> &'static str {
    match tool {
        "ip" => "apt-get install -y iproute2",
        "nft" => "apt-get install -y nftables",
        "ping" => "apt-get install -y iputils-ping",
        "dnsmasq" => "apt-get install -y dnsmasq-base",
        _ => "apt-get install -y <package providing it>",
    }
}

/// Runs a tool, failing the test with the install command if it is missing.
pub fn run(tool: &str, args: &[&str]) -> std::process::Output {
    match Command::new(tool).args(args).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`{tool}` is missing; install it with: {}", tool_hint(tool))
        }
        Err(e) => panic!("running {tool} {args:?}: {e}"),
    }
}

/// Runs a tool that must succeed; returns its stdout.
pub fn sh(tool: &str, args: &[&str]) -> String {
    let o = run(tool, args);
    assert!(
        o.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `f` on a new thread inside network namespace `ns` and returns its handle.
pub fn spawn_in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    test_support::netns::spawn_in(ns, f).unwrap_or_else(|e| panic!("{e}"))
}

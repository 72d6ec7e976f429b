//! Host checks: the workspace's own tests (`cargo test --workspace`), unit tests of every crate
//! and nat-init's root tests in network namespaces. With the environment variable `CI` set,
//! `--locked` too: CI must build from the committed Cargo.lock.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::hostdeps;
use crate::report::Report;

const CARGO_TEST: &str = "cargo-test-workspace";
pub const CHECKS: &[&str] = &[CARGO_TEST];

pub fn run(root: &Path, report: &mut Report) -> Result<()> {
    // The workspace's tests use QEMU's tools, the disk checkers and network namespaces.
    hostdeps::ensure(hostdeps::QEMU)?;
    hostdeps::ensure(hostdeps::DISK_TOOLS)?;
    hostdeps::ensure(hostdeps::NET)?;
    let args = cargo_test_args(std::env::var_os("CI").is_some());
    report.check(CARGO_TEST, || cargo_test(root, &args));
    Ok(())
}

fn cargo_test_args(ci: bool) -> Vec<&'static str> {
    let mut args = vec!["test", "--workspace"];
    if ci {
        args.push("--locked");
    }
    args
}

fn cargo_test(root: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = duct::cmd(&cargo, args)
        .dir(root)
        .unchecked()
        .run()
        .with_context(|| format!("running {cargo}"))?;
    if !out.status.success() {
        bail!("cargo {} failed (see above)", args.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_builds_locked() {
        assert_eq!(cargo_test_args(false), ["test", "--workspace"]);
        assert_eq!(cargo_test_args(true), ["test", "--workspace", "--locked"]);
    }
}

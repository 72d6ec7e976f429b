//! Host checks: the workspace's own tests (`cargo test --workspace`), unit tests of every crate
//! nat-init's root tests in network namespaces, and xtask-ami's tests against the moto that host
//! setup installs. With the environment variable `CI` set,
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
    // xtask-ami's tests run against moto (a local AWS double on loopback).
    let moto = hostdeps::ensure_moto(&crate::target_dir(root))?;
    let args = cargo_test_args(std::env::var_os("CI").is_some());
    report.check(CARGO_TEST, || cargo_test(root, &args, &moto));
    Ok(())
}

fn cargo_test_args(ci: bool) -> Vec<&'static str> {
    let mut args = vec!["test", "--workspace"];
    if ci {
        args.push("--locked");
    }
    args
}

fn cargo_test(root: &Path, args: &[&str], moto: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = duct::cmd(&cargo, args)
        .dir(root)
        .env(hostdeps::MOTO_ENV, moto)
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

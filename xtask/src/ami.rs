//! `cargo xtask ami`: publishes the built image as an arm64 AMI by building and running the
//! `xtask-ami` binary on demand, so the AWS SDK never enters the build of `cargo xtask image`.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Runs `xtask-ami` with `args` (everything after `cargo xtask ami`).
pub fn run(root: &Path, args: Vec<OsString>) -> Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    if !target.join("debug").join("xtask-ami").exists() {
        // `cargo run -q` shows no progress, and the first build compiles the AWS SDK.
        eprintln!("building xtask-ami (the AWS SDK): the first build takes several minutes");
    }
    let status = Command::new(cargo())
        .current_dir(root)
        .args(["run", "-q", "-p", "xtask-ami", "--"])
        .args(args)
        .status()
        .context("running `cargo run -p xtask-ami`")?;
    if !status.success() {
        // xtask-ami has printed its own error.
        bail!("cargo xtask ami failed ({status})");
    }
    Ok(())
}

/// Runs xtask-ami's tests: unit tests and the end-to-end tests against moto_server on loopback.
pub fn test(root: &Path) -> Result<()> {
    let status = Command::new(cargo())
        .current_dir(root)
        .args(["test", "-p", "xtask-ami"])
        .status()
        .context("running `cargo test -p xtask-ami`")?;
    if !status.success() {
        bail!("xtask-ami tests failed ({status})");
    }
    Ok(())
}

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
    let target = crate::target_dir(root);
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

//! Cross-compiles the on-image binaries: static aarch64-unknown-linux-musl, linked by rust-lld
//! (see .cargo/config.toml), with the size-tuned release profile of the workspace.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub const TARGET: &str = "aarch64-unknown-linux-musl";

/// Makes sure the Rust target is installed, adding it with rustup when it is missing.
pub fn ensure_target(log: &mut dyn FnMut(&str)) -> Result<()> {
    let installed = duct::cmd!("rustup", "target", "list", "--installed")
        .stderr_null()
        .read()
        .context("running `rustup target list --installed`: is rustup installed? The image needs rustup's aarch64-unknown-linux-musl target")?;
    if installed.lines().any(|l| l.trim() == TARGET) {
        return Ok(());
    }
    log(&format!(
        "the Rust target {TARGET} is missing: running `rustup target add {TARGET}`"
    ));
    duct::cmd!("rustup", "target", "add", TARGET)
        .run()
        .with_context(|| {
            format!("`rustup target add {TARGET}` failed; run it by hand and retry")
        })?;
    Ok(())
}

/// Builds the packages' binaries in release mode and returns the directory that holds them.
pub fn build(root: &Path, packages: &[&str], locked: bool) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut args: Vec<String> = vec![
        "build".into(),
        "--release".into(),
        "--target".into(),
        TARGET.into(),
    ];
    if locked {
        args.push("--locked".into());
    }
    for p in packages {
        args.push("-p".into());
        args.push((*p).to_string());
    }
    // Paths of the checkout and of CARGO_HOME would otherwise end up in panic messages, so two
    // clones in different folders would build different bytes.
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|_| PathBuf::from("/root/.cargo"));
    let flags = [
        "-Ctarget-feature=+crt-static".to_string(),
        format!("--remap-path-prefix={}=/build", root.display()),
        format!("--remap-path-prefix={}=/cargo", cargo_home.display()),
    ]
    .join("\x1f");
    let out = duct::cmd(cargo, &args)
        .dir(root)
        .env("CARGO_ENCODED_RUSTFLAGS", flags)
        .unchecked()
        .run()
        .context("running cargo")?;
    if !out.status.success() {
        bail!("cargo {} failed (see its output above)", args.join(" "));
    }
    Ok(root.join("target").join(TARGET).join("release"))
}

//! Host checks: the workspace's own tests (`cargo test --workspace`), unit tests of every crate
//! and nat-init's root tests in network namespaces.

use std::path::Path;

use anyhow::{Result, bail};

use crate::report::Report;

pub fn run(root: &Path, report: &mut Report) -> Result<()> {
    report.check("cargo-test-workspace", || cargo_test(root));
    Ok(())
}

fn cargo_test(root: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = duct::cmd(cargo, ["test", "--workspace"])
        .dir(root)
        .unchecked()
        .run()?;
    if !out.status.success() {
        bail!("cargo test --workspace failed (see above)");
    }
    Ok(())
}

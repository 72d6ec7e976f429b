//! `cargo xtask test`: every test of the project in one command. First the workspace's own
//! tests (`cargo test --workspace`: unit tests and root network-namespace tests), then checks
//! of the built image's artifacts, then boot tests of the real disk image under UEFI in QEMU.
//! It ends with a `N passed, M failed` line.

use std::path::Path;

use anyhow::{Result, bail};

use crate::checks;
use crate::hostdeps;
use crate::report::Report;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Host,
    Image,
    Boot,
    E2e,
    /// The bench's smoke test: only with `--only bench`, never in the default run.
    Bench,
}

impl Part {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "host" => Self::Host,
            "image" => Self::Image,
            "boot" => Self::Boot,
            "e2e" => Self::E2e,
            "bench" => Self::Bench,
            _ => bail!("--only {s:?}: expected host, image, boot, e2e or bench"),
        })
    }
}

pub fn run(root: &Path, only: Option<Part>) -> Result<()> {
    let want = |p: Part| only.is_none_or(|o| o == p);
    let mut report = Report::default();
    if want(Part::Host) {
        hostdeps::ensure(hostdeps::QEMU)?;
        hostdeps::ensure(hostdeps::DISK_TOOLS)?;
        hostdeps::ensure(hostdeps::NET)?;
        checks::host::run(root, &mut report)?;
    }
    if want(Part::Image) {
        hostdeps::ensure(hostdeps::QEMU)?;
        hostdeps::ensure(hostdeps::DISK_TOOLS)?;
        checks::image::run(root, &mut report)?;
    }
    if want(Part::Boot) {
        hostdeps::ensure(hostdeps::QEMU)?;
        checks::boot::run(root, &mut report)?;
    }
    if want(Part::E2e) {
        hostdeps::ensure(hostdeps::QEMU)?;
        hostdeps::ensure(hostdeps::NET)?;
        checks::e2e::run(root, &mut report)?;
    }
    if want(Part::Bench) {
        crate::bench::smoke::run(root, &mut report)?;
    }
    report.finish()
}

//! `cargo xtask test`: every test of the project in one command, as check modules run in
//! order: `host` (`cargo test --workspace`, with `--locked` when the environment variable `CI`
//! is set: unit tests and root network-namespace tests), `deploy` (the deploy templates: cfn-lint,
//! moto's CloudFormation, the Terraform module parsed and checkov'd, their parity), `vpc` (the emulated VPC's control
//! plane, without a guest), `image` (the built image's
//! artifacts), `boot` (the real disk image under UEFI in QEMU), `e2e` (the NAT on an emulated
//! VPC), `failover` (two NAT guests in a failover group) and `bench` (the bench's smoke test). `--only PART` runs one of them.
//!
//! Each module plans its checks before it starts; a check ends passed, failed, or not run
//! because an earlier check or the module's setup failed (counted as failed), and a module
//! whose setup fails does not stop the next. It ends with `xtask: N passed, M failed`.

use std::path::Path;

use anyhow::{Result, bail};

use crate::report::Report;
use crate::{bench, checks};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Host,
    /// The deploy templates (`deploy/`): needs no image.
    Deploy,
    Vpc,
    Image,
    Boot,
    E2e,
    /// Two NAT guests in a failover group.
    Failover,
    /// The bench's smoke test: the last part of the default run.
    Bench,
}

impl Part {
    /// In the order of the default run.
    pub const ALL: [Part; 8] = [
        Part::Host,
        Part::Deploy,
        Part::Vpc,
        Part::Image,
        Part::Boot,
        Part::E2e,
        Part::Failover,
        Part::Bench,
    ];

    pub fn parse(s: &str) -> Result<Self> {
        match Self::ALL.into_iter().find(|p| p.name() == s) {
            Some(p) => Ok(p),
            None => bail!("{s:?}: expected host, deploy, vpc, image, boot, e2e, failover or bench"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Deploy => "deploy",
            Self::Vpc => "vpc",
            Self::Image => "image",
            Self::Boot => "boot",
            Self::E2e => "e2e",
            Self::Failover => "failover",
            Self::Bench => "bench",
        }
    }

    /// The part's check module: the checks it plans and how to run them.
    fn module(self) -> Module {
        match self {
            Self::Host => Module {
                checks: checks::host::CHECKS,
                run: checks::host::run,
            },
            Self::Deploy => Module {
                checks: checks::deploy::CHECKS,
                run: checks::deploy::run,
            },
            Self::Vpc => Module {
                checks: checks::vpc::CHECKS,
                run: checks::vpc::run,
            },
            Self::Image => Module {
                checks: checks::image::CHECKS,
                run: checks::image::run,
            },
            Self::Boot => Module {
                checks: checks::boot::CHECKS,
                run: checks::boot::run,
            },
            Self::E2e => Module {
                checks: checks::e2e::CHECKS,
                run: checks::e2e::run,
            },
            Self::Failover => Module {
                checks: checks::failover::CHECKS,
                run: checks::failover::run,
            },
            Self::Bench => Module {
                checks: bench::smoke::CHECKS,
                run: bench::smoke::run,
            },
        }
    }
}

/// A check module: the names of the checks it plans, and its entry point (setup, then checks).
struct Module {
    checks: &'static [&'static str],
    run: fn(&Path, &mut Report) -> Result<()>,
}

pub fn run(root: &Path, only: Option<Part>) -> Result<()> {
    let mut report = Report::default();
    for part in Part::ALL {
        if only.is_none_or(|o| o == part) {
            let m = part.module();
            report.module(part.name(), m.checks, |r| (m.run)(root, r));
        }
    }
    report.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_parses_and_check_names_are_unique() {
        let mut all = Vec::new();
        for p in Part::ALL {
            assert_eq!(Part::parse(p.name()).unwrap(), p);
            let names = p.module().checks;
            assert!(!names.is_empty(), "{p:?} plans no checks");
            all.extend_from_slice(names);
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a check name is planned twice");
        assert!(Part::parse("all").is_err());
    }
}

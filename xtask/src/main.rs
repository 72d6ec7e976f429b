//! xtask: the builder and test driver of the NAT appliance, run as `cargo xtask <command>`.
//!
//! - `image` turns a profile (`images/*.toml`) into a bootable arm64 UEFI disk image: it
//!   cross-compiles `init` (PID 1) and the profile's services (`nat-init`), fetches the Debian
//!   kernel and systemd-boot, resolves kernel modules, assembles the rootfs and initramfs, and
//!   writes the GPT/FAT32 disk in raw, VHD and VMDK forms with a manifest.
//! - `qemu` boots that disk the way EC2 does: UEFI firmware, NVMe disk, a PCIe NIC in slot 5.
//! - `test` runs every test: the workspace's unit and namespace tests, then boot tests.

mod ami;
mod bench;
mod binaries;
mod buildinfo;
mod checks;
mod deb;
mod digest;
mod disk;
mod formats;
mod hostdeps;
mod image;
mod initramfs;
mod modules;
mod netns;
mod packages;
mod profile;
mod qemu;
mod report;
mod rootfs;
mod testsuite;
mod vpc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use lexopt::prelude::*;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  image [--profile NAME] [--out DIR] [--kernel-deb FILE]... [--locked] [--update]
        build target/images/<profile>/ (default profile: nat-t4g)
  qemu  [--profile NAME] [--net user|tap:IFNAME|none] [--mem MIB] [--build]
        boot the built disk under UEFI firmware with the serial console on stdio
  ami   [--profile NAME] [--region R] [--name NAME] [--via ebs-direct|s3 --bucket B] [--public] [--dry-run]
        publish target/images/<profile>/disk.raw as an arm64 AMI (`cargo xtask ami --help`)
  test  [--only host|image|boot|e2e|bench]
        run every test: host tests, image checks, boot and end-to-end tests in QEMU, then the
        bench's smoke test; ends with `xtask: N passed, M failed` (not run counts as failed)
  bench [--quick] [--runs N] [--only sizes,build,boot,memory,capacity,throughput] [--flows N]
        measure ours against the by-hand baseline; writes target/bench/report.{md,json}
";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: xtask lives one level below it.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn run() -> Result<()> {
    let mut parser = lexopt::Parser::from_env();
    let cmd = match parser.next()? {
        Some(Value(v)) => v.string()?,
        Some(Long("help") | Short('h')) | None => {
            print!("{USAGE}");
            return Ok(());
        }
        Some(other) => bail!("{}\n{USAGE}", other.unexpected()),
    };
    let root = workspace_root();
    match cmd.as_str() {
        "image" => {
            let args = parse_image_args(&mut parser)?;
            image::run(&root, &args)?;
        }
        "qemu" => {
            let mut profile = "nat-t4g".to_string();
            let mut net = qemu::Net::User;
            let mut mem = 512;
            let mut build = false;
            while let Some(arg) = parser.next()? {
                match arg {
                    Long("profile") => profile = parser.value()?.string()?,
                    Long("net") => net = qemu::Net::parse(&parser.value()?.string()?)?,
                    Long("mem") => mem = parser.value()?.parse()?,
                    Long("build") => build = true,
                    _ => bail!("{}\n{USAGE}", arg.unexpected()),
                }
            }
            hostdeps::ensure(hostdeps::QEMU)?;
            let dir = if build {
                image::run(
                    &root,
                    &image::Args {
                        profile: profile.clone(),
                        ..Default::default()
                    },
                )?
                .dir
            } else {
                image::default_out(&root, &profile)
            };
            if !dir.join("disk.raw").is_file() {
                bail!(
                    "{} has no disk.raw: run `cargo xtask image --profile {profile}` first (or pass --build)",
                    dir.display()
                );
            }
            qemu::interactive(&dir, net, mem)?;
        }
        "test" => {
            let mut only = None;
            while let Some(arg) = parser.next()? {
                match arg {
                    Long("only") => {
                        only = Some(testsuite::Part::parse(&parser.value()?.string()?)?)
                    }
                    _ => bail!("{}\n{USAGE}", arg.unexpected()),
                }
            }
            testsuite::run(&root, only)?;
        }
        "bench" => {
            let opts = bench::parse_args(&root, &mut parser)?;
            bench::run(&root, &opts)?;
        }
        "ami" => ami::run(&root, parser.raw_args()?.collect())?,
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
    Ok(())
}

fn parse_image_args(parser: &mut lexopt::Parser) -> Result<image::Args> {
    let mut a = image::Args {
        profile: "nat-t4g".into(),
        ..Default::default()
    };
    while let Some(arg) = parser.next()? {
        match arg {
            Long("profile") => a.profile = parser.value()?.string()?,
            Long("out") => a.out = Some(PathBuf::from(parser.value()?)),
            Long("kernel-deb") => {
                let p = PathBuf::from(parser.value()?);
                let p = std::fs::canonicalize(&p)
                    .with_context(|| format!("--kernel-deb {}", p.display()))?;
                a.kernel_debs.push(p);
            }
            Long("locked") => a.locked = true,
            Long("update") => a.update = true,
            _ => bail!("{}\n{USAGE}", arg.unexpected()),
        }
    }
    if a.locked && a.update {
        bail!("--locked and --update contradict each other");
    }
    Ok(a)
}

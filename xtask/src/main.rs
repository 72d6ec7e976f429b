//! xtask: the builder and test driver of the NAT appliance, run as `cargo xtask <command>`.
//!
//! - `image` turns a profile (`images/*.toml`) into a bootable arm64 UEFI disk image: it
//!   cross-compiles `init` (PID 1) and the profile's services (`nat-init`), fetches the Debian
//!   kernel and systemd-boot, resolves kernel modules, assembles the rootfs and initramfs, and
//!   writes the GPT/FAT32 disk in raw, VHD and VMDK forms with a manifest.
//! - `qemu` boots that disk the way EC2 does: UEFI firmware, NVMe disk, a PCIe NIC in slot 5.
//! - `test` runs every test: the workspace's unit and namespace tests, then boot tests.
//!
//! Every command and flag is declared in `cli`, which also generates `--help`.

mod ami;
mod bench;
mod binaries;
mod buildinfo;
mod checks;
mod cli;
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

use anyhow::{Result, bail};

use crate::cli::{Command, Parsed};

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
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let root = workspace_root();
    let command = match cli::parse(&root, &args)? {
        Parsed::Run(command) => command,
        Parsed::Usage(text) => {
            println!("{text}");
            return Ok(());
        }
    };
    match command {
        Command::Image(args) => {
            image::run(&root, &args)?;
        }
        Command::Qemu {
            profile,
            net,
            mem_mib,
            build,
        } => {
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
            qemu::interactive(&dir, net, mem_mib)?;
        }
        Command::Test { only } => testsuite::run(&root, only)?,
        Command::Bench(opts) => {
            bench::run(&root, &opts)?;
        }
        Command::Ami(rest) => ami::run(&root, rest)?,
    }
    Ok(())
}

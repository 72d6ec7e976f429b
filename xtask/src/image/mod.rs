//! `cargo xtask image`: from a profile to the artifacts under `target/images/<profile>/`.
//! Stages: binaries, packages, modules, rootfs, initramfs, disk, formats, manifest. The output
//! directory is built beside its final name and renamed into place, so a failed build never
//! leaves half-written artifacts under that name.
//!
//! Each stage lives in its own module; `run` is the sequence of them:
//! - `pinning`: whether the build may move its pins (`--locked`, CI);
//! - `compile`: cross-compile init and the services;
//! - `debian`: the Debian packages, and the kernel and boot loader inside them;
//! - `tree`: the root file system (skeleton, binaries, configs, modules);
//! - `stamp`: the digest of every input, to skip a build whose inputs did not change;
//! - `staging`: the work directory beside the output and its final rename;
//! - `archives`: `rootfs.tar` and the initramfs;
//! - `esp`: the EFI system partition's files and the GPT disk holding them;
//! - `outputs`: the other disk formats, hashed while they are written;
//! - `manifest`: `manifest.json` and `SHA256SUMS`;
//! - `report`: stage timings and the closing summary.

mod archives;
mod compile;
mod debian;
mod esp;
mod manifest;
mod outputs;
mod pinning;
mod report;
mod staging;
mod stamp;
mod tree;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::buildinfo::{BuildFacts, Toolchain};
use crate::modules;
use crate::profile::Loaded;

pub use report::human;

#[derive(Debug, Clone, Default)]
pub struct Args {
    pub profile: String,
    pub out: Option<PathBuf>,
    pub kernel_debs: Vec<PathBuf>,
    pub locked: bool,
    pub update: bool,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub dir: PathBuf,
    pub manifest: serde_json::Value,
    pub up_to_date: bool,
}

/// Every file the image build writes, in the order SHA256SUMS lists them.
pub const ARTIFACTS: &[&str] = &[
    "disk.raw",
    "disk.vhd",
    "disk.vmdk",
    "initramfs.img",
    "rootfs.tar",
    "manifest.json",
];

pub use crate::report::say;

pub fn default_out(root: &Path, profile: &str) -> PathBuf {
    crate::target_dir(root).join("images").join(profile)
}

pub fn run(root: &Path, args: &Args) -> Result<Built> {
    let mut st = report::Stages::new();
    let locked = pinning::Locked::decide(args, std::env::var_os("CI").as_deref());
    locked.announce();
    let args = &Args {
        locked: locked.is_locked(),
        ..args.clone()
    };
    let loaded = Loaded::load(root, &args.profile)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(root, loaded.name()));
    let (facts, notes) = BuildFacts::gather(root);
    for n in notes {
        say(&n);
    }
    let toolchain = Toolchain::gather(root)?;
    say(&format!(
        "building image {} ({} {}) into {}",
        loaded.name(),
        facts.version,
        facts.commit_short(),
        out.display()
    ));

    let bins = compile::binaries(root, &loaded.profile, args.locked)?;
    st.done("binaries");

    let debs = debian::resolve(root, &loaded, args)?;
    st.done("packages");

    let mods = modules::resolve(&debs.modules_dir(), &loaded.profile.kernel.modules)
        .with_context(|| format!("resolving [kernel] modules of {}", loaded.path.display()))?;
    st.done("modules");

    let tree = tree::assemble(root, &loaded, &facts, &debs, bins, &mods)?;
    st.done("rootfs");

    // Everything below is a pure function of these inputs: skip it when nothing changed.
    let boot = debs.read_boot_files()?;
    let cmdline = loaded.cmdline();
    let stamp = stamp::Stamp::new(
        &out,
        &stamp::Inputs {
            profile: &loaded.text,
            facts: &facts,
            cmdline: &cmdline,
            features: &compile::features_text(&compile::features(&loaded.profile)),
            packages: &debs.resolved,
            vmlinuz: &boot.vmlinuz,
            loader: &boot.loader,
            tree: &tree,
            lock: stamp::read_lock(&loaded.lock_path)?.as_deref(),
            skeleton: &stamp::read_skeleton(&root.join("rootfs"))?,
            toolchain: &toolchain,
            xtask_sources: stamp::XTASK_SOURCES,
        },
    );
    if stamp.is_up_to_date(&out) {
        let manifest = manifest::read(&out)?;
        say(&format!("{} is up to date", out.display()));
        st.summary(&out, true)?;
        return Ok(Built {
            dir: out,
            manifest,
            up_to_date: true,
        });
    }

    let work = staging::Work::create(&out)?;
    let epoch = facts.source_date_epoch;
    let initrd = archives::write(
        &tree,
        epoch,
        loaded.profile.image.initramfs_compression,
        work.path(),
    )?;
    st.done("initramfs");

    let seed = stamp.seed();
    let disk = esp::write_disk(&loaded, &facts, &cmdline, boot, initrd, seed, work.path())?;
    st.done("disk");

    let hashes = outputs::write(work.path(), epoch, seed)?;
    st.done("formats");

    let manifest = manifest::write(
        work.path(),
        &manifest::Facts {
            loaded: &loaded,
            facts: &facts,
            toolchain: &toolchain,
            resolved: &debs.resolved,
            tree: &tree,
            mods: &mods,
            cmdline: &cmdline,
            disk: &disk,
        },
        &hashes,
    )?;
    st.done("manifest");

    work.finish(&out)?;
    stamp.write()?;
    st.summary(&out, false)?;
    Ok(Built {
        dir: out,
        manifest,
        up_to_date: false,
    })
}

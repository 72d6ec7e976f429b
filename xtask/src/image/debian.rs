//! Stage 2, packages: resolves the profile's Debian packages against its lock file and finds
//! the kernel and the boot loader inside them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{Args, say};
use crate::modules;
use crate::packages::{self, Resolved};
use crate::profile::Loaded;

/// Where systemd-boot-efi ships the arm64 boot loader.
const LOADER_PATH: &str = "usr/lib/systemd/boot/efi/systemd-bootaa64.efi";

/// The resolved packages and the boot files found in them.
pub struct Debs {
    pub resolved: Vec<Resolved>,
    pub kernel: Resolved,
    pub kernel_release: String,
    vmlinuz_path: PathBuf,
    loader_path: PathBuf,
}

/// The bytes of the kernel image and the boot loader.
pub struct BootFiles {
    pub vmlinuz: Vec<u8>,
    pub loader: Vec<u8>,
}

pub fn resolve(root: &Path, loaded: &Loaded, args: &Args) -> Result<Debs> {
    let profile = &loaded.profile;
    let cache_dir = crate::target_dir(root).join("cache");
    let mut requests = vec![
        packages::Request {
            role: "kernel".into(),
            name: profile.packages.kernel.clone(),
        },
        packages::Request {
            role: "bootloader".into(),
            name: profile.packages.bootloader.clone(),
        },
    ];
    for name in &profile.packages.extra {
        requests.push(packages::Request {
            role: format!("extra:{name}"),
            name: name.clone(),
        });
    }
    let opts = packages::Options {
        lock_path: loaded.lock_path.clone(),
        cache_dir,
        locked: args.locked,
        local_debs: args.kernel_debs.clone(),
        update: args.update,
        update_command: super::pinning::update_command(args),
    };
    let resolved = packages::resolve(&requests, &opts, &mut |m| say(m))?;
    let by_role = |role: &str| {
        resolved
            .iter()
            .find(|r| r.role == role)
            .cloned()
            .with_context(|| format!("package resolution returned no {role} package"))
    };
    for r in &resolved {
        say(&format!(
            "{}: {} {} ({})",
            r.role,
            r.name,
            r.version,
            r.deb.display()
        ));
    }
    let kernel = by_role("kernel")?;
    let loader_pkg = by_role("bootloader")?;
    let (kernel_release, vmlinuz_path) = find_kernel(&kernel.root)?;
    let loader_path = loader_pkg.root.join(LOADER_PATH);
    if !loader_path.is_file() {
        bail!(
            "package {} {} has no {LOADER_PATH}: is [packages] bootloader an arm64 systemd-boot-efi?",
            loader_pkg.name,
            loader_pkg.version
        );
    }
    Ok(Debs {
        resolved,
        kernel,
        kernel_release,
        vmlinuz_path,
        loader_path,
    })
}

impl Debs {
    /// The extra packages, whose `extra_files` go into the rootfs.
    pub fn extras(&self) -> Vec<&Resolved> {
        self.resolved
            .iter()
            .filter(|r| r.role.starts_with("extra:"))
            .collect()
    }

    /// `lib/modules/<release>` of the kernel package.
    pub fn modules_dir(&self) -> PathBuf {
        self.kernel
            .root
            .join("lib/modules")
            .join(&self.kernel_release)
    }

    pub fn read_boot_files(&self) -> Result<BootFiles> {
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        Ok(BootFiles {
            vmlinuz: read(&self.vmlinuz_path)?,
            loader: read(&self.loader_path)?,
        })
    }
}

fn find_kernel(root: &Path) -> Result<(String, PathBuf)> {
    let release = modules::kernel_release(root)?;
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("the kernel package has no boot/vmlinuz-{release}");
    }
    Ok((release, vmlinuz))
}

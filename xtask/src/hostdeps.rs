//! Host packages the tests need (QEMU, firmware, network tools). Missing ones are installed
//! with apt-get when we are root on Debian; otherwise the exact command is printed and the
//! caller fails. Nothing is skipped for lack of a package.

use std::path::Path;

use anyhow::{Result, bail};

/// A program or file, and the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    pub path: &'static str,
    pub package: &'static str,
}

const fn need(path: &'static str, package: &'static str) -> Need {
    Need { path, package }
}

pub const QEMU: &[Need] = &[
    need("qemu-system-aarch64", "qemu-system-arm"),
    need("/usr/share/AAVMF/AAVMF_CODE.fd", "qemu-efi-aarch64"),
    need("qemu-img", "qemu-utils"),
];

pub const DISK_TOOLS: &[Need] = &[need("sgdisk", "gdisk"), need("fsck.vfat", "dosfstools")];

pub const NET: &[Need] = &[
    need("ip", "iproute2"),
    need("nft", "nftables"),
    need("dnsmasq", "dnsmasq-base"),
    need("curl", "curl"),
    need("ping", "iputils-ping"),
];

fn present(n: &Need) -> bool {
    if n.path.starts_with('/') {
        return Path::new(n.path).exists();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(Into::into))
        .any(|d| d.join(n.path).is_file())
}

/// Makes sure every need is met, installing what is missing when possible.
pub fn ensure(needs: &[Need]) -> Result<()> {
    let mut missing: Vec<&str> = needs
        .iter()
        .filter(|n| !present(n))
        .map(|n| n.package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let cmd = format!("apt-get install -y {}", missing.join(" "));
    let is_root = nix_is_root();
    let debian = Path::new("/etc/debian_version").exists();
    if !(is_root && debian) {
        bail!(
            "missing host packages: {}. Install them with: sudo {cmd}",
            missing.join(", ")
        );
    }
    eprintln!("[xtask] installing missing host packages: {cmd}");
    let install = || {
        duct::cmd(
            "apt-get",
            ["install", "-y", "-q"]
                .iter()
                .copied()
                .chain(missing.iter().copied()),
        )
        .env("DEBIAN_FRONTEND", "noninteractive")
        .unchecked()
        .run()
    };
    let ok = install().is_ok_and(|o| o.status.success())
        || (duct::cmd!("apt-get", "update", "-q").run().is_ok()
            && install().is_ok_and(|o| o.status.success()));
    if !ok {
        bail!("`{cmd}` failed (see apt's output above); install the packages and retry");
    }
    let still: Vec<&str> = needs
        .iter()
        .filter(|n| !present(n))
        .map(|n| n.path)
        .collect();
    if !still.is_empty() {
        bail!("still missing after installing: {}", still.join(", "));
    }
    Ok(())
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

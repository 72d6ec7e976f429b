//! The API file systems every boot needs: /proc, /sys, /dev, /dev/pts, /run, /tmp.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MsFlags, mount};

/// One mount to perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: &'static str,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// In order: /dev before /dev/pts; /proc first so later steps can read the command line.
pub const MOUNTS: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    // Device nodes need dev, and nothing executable lives there.
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: "mode=0755",
    },
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: "mode=0620,ptmxmode=0666",
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "mode=0755",
    },
    Mount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=1777",
    },
];

/// Mounts everything in `mounts` through `op`, creating mount points; returns the
/// failures as messages (the boot goes on). EBUSY means already mounted and is fine.
pub fn mount_all(
    mounts: &[Mount],
    mut op: impl FnMut(&Mount) -> Result<(), Errno>,
    mut mkdir: impl FnMut(&Path) -> std::io::Result<()>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for m in mounts {
        if let Err(e) = mkdir(Path::new(m.target)) {
            failures.push(format!("creating {}: {e}", m.target));
            continue;
        }
        match op(m) {
            Ok(()) | Err(Errno::EBUSY) => {}
            Err(e) => failures.push(format!(
                "mounting {} on {}: {}",
                m.fstype,
                m.target,
                e.desc()
            )),
        }
    }
    failures
}

/// mount(2) for one table entry.
pub fn mount_one(m: &Mount) -> Result<(), Errno> {
    let data = (!m.data.is_empty()).then_some(m.data);
    mount(Some(m.source), m.target, Some(m.fstype), m.flags, data)
}

/// Creates a mount point (and parents) if missing.
pub fn create_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)
}

/// The /dev/fd and /dev/std* links devtmpfs does not create; missing ones are harmless.
pub fn dev_links() -> Vec<String> {
    let links = [
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ];
    let mut failures = Vec::new();
    for (target, link) in links {
        match std::os::unix::fs::symlink(target, link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => failures.push(format!("linking {link}: {e}")),
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_flags() {
        let targets: Vec<_> = MOUNTS.iter().map(|m| m.target).collect();
        assert_eq!(
            targets,
            ["/proc", "/sys", "/dev", "/dev/pts", "/run", "/tmp"]
        );
        for m in MOUNTS {
            assert!(m.flags.contains(MsFlags::MS_NOSUID), "{}", m.target);
        }
        let dev = MOUNTS.iter().find(|m| m.target == "/dev").unwrap();
        assert!(
            !dev.flags.contains(MsFlags::MS_NODEV),
            "/dev must allow device nodes"
        );
        let proc_ = MOUNTS.iter().find(|m| m.target == "/proc").unwrap();
        assert!(proc_.flags.contains(NOSUID_NODEV_NOEXEC));
    }

    #[test]
    fn ebusy_is_fine_other_errors_reported_and_boot_continues() {
        let mut done = Vec::new();
        let mut made = Vec::new();
        let failures = mount_all(
            MOUNTS,
            |m| {
                done.push(m.target);
                match m.target {
                    "/proc" => Err(Errno::EBUSY),
                    "/dev/pts" => Err(Errno::ENODEV),
                    _ => Ok(()),
                }
            },
            |p| {
                made.push(p.to_path_buf());
                Ok(())
            },
        );
        assert_eq!(done.len(), MOUNTS.len());
        assert_eq!(made.len(), MOUNTS.len());
        assert_eq!(failures.len(), 1);
        assert!(failures[0].contains("/dev/pts"), "{}", failures[0]);
    }

    #[test]
    fn failed_mkdir_skips_that_mount() {
        let mut done = Vec::new();
        let failures = mount_all(
            MOUNTS,
            |m| {
                done.push(m.target);
                Ok(())
            },
            |p| {
                if p == Path::new("/run") {
                    Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
                } else {
                    Ok(())
                }
            },
        );
        assert!(!done.contains(&"/run"));
        assert_eq!(failures.len(), 1);
    }
}

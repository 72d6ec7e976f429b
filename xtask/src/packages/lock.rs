//! The lock file `images/<profile>.lock`: what it records per role, how it is read and
//! written, and what a build does when the archive no longer offers a locked version.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// What the lock file records per role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    /// The name the profile asks for.
    pub requested: String,
    /// The real package.
    pub package: String,
    pub version: String,
    pub sha256: String,
    /// The .deb file name as fetched (or as given on the command line).
    pub file: String,
}

/// Role → entry; a BTreeMap so the file is sorted.
pub type Lock = BTreeMap<String, LockEntry>;

const LOCK_HEADER: &str = "\
# Debian arm64 packages of this image profile, pinned by `cargo xtask image`.
# Generated file: build without --locked to update it after a version disappears.
# sha256 is of the .deb file.
";

pub fn render_lock(lock: &Lock) -> Result<String> {
    let body = toml::to_string(lock).context("serialising the lock file")?;
    Ok(format!("{LOCK_HEADER}\n{body}"))
}

pub fn parse_lock(text: &str) -> Result<Lock> {
    let lock: Lock = toml::from_str(text)?;
    for (role, e) in &lock {
        if e.sha256.len() != 64 || !e.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("{role}: sha256 {:?} is not 64 hex digits", e.sha256);
        }
    }
    Ok(lock)
}

/// What to do for a role that the lock pins but the cache does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockedAction {
    /// Download exactly the locked package and version.
    Download,
    /// The locked version is gone: resolve anew and update the lock.
    Reresolve,
}

/// Decides between fetching the locked version and re-resolving, given the versions apt offers
/// now for the locked package. With `locked` a vanished version is an error that names
/// `update_command`, the command that moves the lock.
pub fn decide_locked(
    role: &str,
    entry: &LockEntry,
    available: &[String],
    locked: bool,
    update_command: &str,
) -> Result<LockedAction> {
    if available.contains(&entry.version) {
        return Ok(LockedAction::Download);
    }
    if !locked {
        return Ok(LockedAction::Reresolve);
    }
    let now = if available.is_empty() {
        "apt offers no version of it now".to_string()
    } else {
        format!("apt offers now: {}", available.join(", "))
    };
    bail!(
        "{role}: the lock file pins {} {}, which is no longer available ({now}). \
         Run `{update_command}` to move the lock to the current version (outside CI a build \
         without --locked does the same), and commit the lock file.",
        entry.package,
        entry.version
    )
}

/// A line describing how a role's lock entry changed, or None if it did not.
pub fn describe_change(role: &str, old: Option<&LockEntry>, new: &LockEntry) -> Option<String> {
    match old {
        None => Some(format!("{role}: locked {} {}", new.package, new.version)),
        Some(old) if old == new => None,
        Some(old) if old.package == new.package && old.version == new.version => Some(format!(
            "{role}: {} {} now has sha256 {}",
            new.package, new.version, new.sha256
        )),
        Some(old) => Some(format!(
            "{role}: {} {} -> {} {}",
            old.package, old.version, new.package, new.version
        )),
    }
}

pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn entry(package: &str, version: &str) -> LockEntry {
        LockEntry {
            requested: "linux-image-cloud-arm64".into(),
            package: package.into(),
            version: version.into(),
            sha256: "ab".repeat(32),
            file: format!("{package}_{version}_arm64.deb"),
        }
    }

    #[test]
    fn lock_round_trip_is_sorted_and_stable() {
        let mut lock = Lock::new();
        lock.insert(
            "kernel".into(),
            entry("linux-image-6.1.0-56-cloud-arm64", "6.1.192-2"),
        );
        let mut boot = entry("systemd-boot-efi", "252.39-1~deb12u2");
        boot.requested = "systemd-boot-efi".into();
        lock.insert("bootloader".into(), boot);
        let text = render_lock(&lock).unwrap();
        assert!(text.starts_with("# Debian arm64 packages"));
        assert!(text.find("[bootloader]").unwrap() < text.find("[kernel]").unwrap());
        assert!(text.contains("version = \"252.39-1~deb12u2\""));
        assert_eq!(parse_lock(&text).unwrap(), lock);
        assert_eq!(render_lock(&parse_lock(&text).unwrap()).unwrap(), text);
    }

    #[test]
    fn lock_parsing_rejects_bad_entries() {
        let good = render_lock(&Lock::from([(
            "kernel".to_string(),
            entry("linux-image-x", "1"),
        )]))
        .unwrap();
        assert!(parse_lock(&good.replace(&"ab".repeat(32), "abc")).is_err());
        assert!(parse_lock(&format!("{good}extra = 1\n")).is_err());
        assert!(parse_lock(&good.replace("version = \"1\"\n", "")).is_err());
    }

    const UPDATE: &str = "cargo xtask image --profile nat-t4g --update";

    #[test]
    fn locked_version_decisions() {
        let e = entry("linux-image-6.1.0-56-cloud-arm64", "6.1.192-2");
        let now = vec!["6.1.192-2".to_string(), "6.1.176-1".to_string()];
        assert_eq!(
            decide_locked("kernel", &e, &now, true, UPDATE).unwrap(),
            LockedAction::Download
        );
        assert_eq!(
            decide_locked("kernel", &e, &now, false, UPDATE).unwrap(),
            LockedAction::Download
        );
        let gone = vec!["6.1.200-1".to_string()];
        assert_eq!(
            decide_locked("kernel", &e, &gone, false, UPDATE).unwrap(),
            LockedAction::Reresolve
        );
        let err = decide_locked("kernel", &e, &gone, true, UPDATE)
            .unwrap_err()
            .to_string();
        for part in [
            "linux-image-6.1.0-56-cloud-arm64",
            "6.1.192-2",
            "6.1.200-1",
            "without --locked",
            "Run `cargo xtask image --profile nat-t4g --update`",
        ] {
            assert!(err.contains(part), "{part} missing from: {err}");
        }
        let err = decide_locked("kernel", &e, &[], true, UPDATE)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no version"), "{err}");
    }

    #[test]
    fn lock_changes_are_described() {
        let old = entry("linux-image-6.1.0-56-cloud-arm64", "6.1.192-2");
        assert_eq!(describe_change("kernel", Some(&old), &old), None);
        let new = entry("linux-image-6.1.0-57-cloud-arm64", "6.1.200-1");
        assert_eq!(
            describe_change("kernel", Some(&old), &new).unwrap(),
            "kernel: linux-image-6.1.0-56-cloud-arm64 6.1.192-2 -> linux-image-6.1.0-57-cloud-arm64 6.1.200-1"
        );
        assert!(
            describe_change("kernel", None, &new)
                .unwrap()
                .contains("locked")
        );
    }
}

//! The package cache: `debs/<sha256>.deb` as downloaded and verified, and
//! `unpacked/<sha256>/` with each one's data tree.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::local::LocalDeb;
use super::lock::LockEntry;
use crate::deb;
use crate::digest::sha256_file;

/// `cache_dir/debs/<sha256>.deb` and `cache_dir/unpacked/<sha256>/`.
pub(super) struct Cache {
    pub(super) debs: PathBuf,
    pub(super) unpacked: PathBuf,
}

impl Cache {
    pub(super) fn new(dir: &Path) -> Result<Cache> {
        let c = Cache {
            debs: dir.join("debs"),
            unpacked: dir.join("unpacked"),
        };
        for d in [&c.debs, &c.unpacked] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(c)
    }

    pub(super) fn deb_path(&self, sha: &str) -> PathBuf {
        self.debs.join(format!("{sha}.deb"))
    }

    /// An unpacked tree only exists after its .deb was verified, so either is enough.
    pub(super) fn has(&self, sha: &str) -> bool {
        self.unpacked.join(sha).is_dir() || self.deb_path(sha).is_file()
    }

    pub(super) fn partial_dir(&self) -> Result<PathBuf> {
        let d = self.debs.join(format!("partial-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }

    /// Moves a verified download into the cache.
    pub(super) fn store(&self, file: &Path, sha: &str) -> Result<PathBuf> {
        let dest = self.deb_path(sha);
        fs::rename(file, &dest)
            .with_context(|| format!("moving {} to {}", file.display(), dest.display()))?;
        Ok(dest)
    }

    /// Hashes a local .deb and copies it into the cache.
    pub(super) fn add_local(
        &self,
        local: &LocalDeb,
        requested: &str,
    ) -> Result<(LockEntry, PathBuf)> {
        let sha = sha256_file(&local.path)?;
        let dest = self.deb_path(&sha);
        if !dest.is_file() {
            let tmp = self.debs.join(format!("{sha}.tmp-{}", std::process::id()));
            fs::copy(&local.path, &tmp).with_context(|| {
                format!("copying {} to {}", local.path.display(), tmp.display())
            })?;
            fs::rename(&tmp, &dest).with_context(|| format!("renaming {}", tmp.display()))?;
        }
        let file = local
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let entry = LockEntry {
            requested: requested.to_string(),
            package: local.control.package.clone(),
            version: local.control.version.clone(),
            sha256: sha,
            file,
        };
        Ok((entry, dest))
    }

    /// The unpacked tree of a cached .deb, unpacking (after verifying the hash) on first use.
    /// Unpacks into a temporary directory renamed when complete, so an interrupted unpack is
    /// never taken for a finished one.
    pub(super) fn unpacked(
        &self,
        sha: &str,
        deb_path: &Path,
        log: &mut dyn FnMut(&str),
    ) -> Result<PathBuf> {
        let dest = self.unpacked.join(sha);
        if dest.is_dir() {
            return Ok(dest);
        }
        let actual = sha256_file(deb_path)?;
        if actual != sha {
            let _ = fs::remove_file(deb_path);
            bail!(
                "cached {} has sha256 {actual}, expected {sha}; removed it, build again to fetch it anew",
                deb_path.display()
            );
        }
        let start = Instant::now();
        let tmp = self
            .unpacked
            .join(format!("{sha}.partial-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        deb::unpack(deb_path, &tmp)?;
        match fs::rename(&tmp, &dest) {
            Ok(()) => {}
            // Another build finished the same unpack first.
            Err(_) if dest.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()));
            }
        }
        log(&format!(
            "unpacked {} in {:.1} s",
            deb_path.display(),
            start.elapsed().as_secs_f64()
        ));
        Ok(dest)
    }
}

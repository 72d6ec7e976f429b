//! The work directory a build writes into, beside the output and renamed into its place when
//! complete, so a failed build never leaves half-written artifacts under the output's name.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// `.<name>.partial-<pid>` beside the output; removed on drop unless renamed into place.
pub struct Work {
    dir: PathBuf,
}

impl Work {
    pub fn create(out: &Path) -> Result<Work> {
        let dir = out.with_file_name(format!(
            ".{}.partial-{}",
            out.file_name().and_then(|n| n.to_str()).unwrap_or("image"),
            std::process::id()
        ));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Work { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Puts the finished build at `out`.
    pub fn finish(self, out: &Path) -> Result<()> {
        replace_dir(&self.dir, out)
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if self.dir.exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Creates a file, with a hint at the usual cause of failing to.
pub fn create(path: &Path) -> Result<std::fs::File> {
    std::fs::File::create(path).with_context(|| {
        format!(
            "creating {} (is the disk full? `df -h {}`)",
            path.display(),
            path.parent().unwrap_or(Path::new(".")).display()
        )
    })
}

/// Puts `work` at `out`, replacing an older build in one rename.
fn replace_dir(work: &Path, out: &Path) -> Result<()> {
    let old = out.with_file_name(format!(
        ".{}.old-{}",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("image"),
        std::process::id()
    ));
    if out.exists() {
        std::fs::rename(out, &old)
            .with_context(|| format!("moving the old {} aside", out.display()))?;
    }
    std::fs::rename(work, out)
        .with_context(|| format!("moving the new build to {}", out.display()))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_dir_swaps_whole_directories() {
        let base = std::env::temp_dir().join(format!("xtask-replace-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let out = base.join("out");
        let work = base.join("work");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("stale"), b"x").unwrap();
        std::fs::create_dir_all(&work).unwrap();
        std::fs::write(work.join("fresh"), b"y").unwrap();
        replace_dir(&work, &out).unwrap();
        assert!(out.join("fresh").exists() && !out.join("stale").exists() && !work.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}

//! Build facts that go into the image: version, commit and the timestamp every archive uses.

use std::path::Path;

/// What identifies a build. Two builds with equal facts and inputs give equal bytes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildFacts {
    pub version: String,
    /// Full commit id, with `-dirty` when the work tree has changes; `unknown` outside git.
    pub commit: String,
    /// Seconds since 1970: `SOURCE_DATE_EPOCH` if set, else the commit's time.
    pub source_date_epoch: u64,
}

impl BuildFacts {
    pub fn gather(root: &Path) -> (Self, Vec<String>) {
        let mut notes = Vec::new();
        let git = |args: &[&str]| -> Option<String> {
            duct::cmd("git", args)
                .dir(root)
                .stderr_null()
                .read()
                .ok()
                .map(|s| s.trim().to_string())
        };
        let commit = match git(&["rev-parse", "HEAD"]) {
            Some(c) if !c.is_empty() => {
                let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
                if dirty { format!("{c}-dirty") } else { c }
            }
            _ => {
                notes.push("not a git checkout: the image records commit \"unknown\"".to_string());
                "unknown".to_string()
            }
        };
        let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => match v.trim().parse() {
                Ok(n) => Some(n),
                Err(_) => {
                    notes.push(format!("SOURCE_DATE_EPOCH={v:?} is not a number; ignored"));
                    None
                }
            },
            Err(_) => None,
        };
        let source_date_epoch = epoch
            .or_else(|| git(&["log", "-1", "--format=%ct"]).and_then(|s| s.parse().ok()))
            .unwrap_or_else(|| {
                notes.push("no SOURCE_DATE_EPOCH and no commit time: timestamps are 0".to_string());
                0
            });
        let facts = Self {
            version: env!("CARGO_PKG_VERSION").to_string(),
            commit,
            source_date_epoch,
        };
        (facts, notes)
    }

    pub fn commit_short(&self) -> String {
        let dirty = self.commit.ends_with("-dirty");
        let base: String = self.commit.chars().take(12).collect();
        if dirty && !base.ends_with("-dirty") {
            format!("{base}-dirty")
        } else {
            base
        }
    }
}

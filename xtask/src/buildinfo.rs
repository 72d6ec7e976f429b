//! Build facts that go into the image: version, commit and the timestamp every archive uses;
//! and the Rust toolchain that compiles the on-image binaries, recorded in the manifest.

use std::path::Path;

use anyhow::{Context, Result, bail};

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

/// The Rust toolchain, as `rustc -vV` and `cargo -V` describe it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Toolchain {
    pub rustc: Rustc,
    /// `cargo -V`, e.g. "cargo 1.95.0 (f2d3ce0bd 2026-03-21)".
    pub cargo: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rustc {
    /// The first line, e.g. "rustc 1.95.0 (59807616e 2026-04-14)".
    pub version: String,
    pub release: String,
    pub commit_hash: String,
    pub host: String,
}

impl Toolchain {
    /// Asks the rustc and cargo that build the image (`RUSTC`, `CARGO`, else the ones on PATH,
    /// run in `root` so that its rust-toolchain.toml applies).
    pub fn gather(root: &Path) -> Result<Toolchain> {
        let run = |var: &str, default: &str, arg: &str| -> Result<String> {
            let program = std::env::var(var).unwrap_or_else(|_| default.to_string());
            duct::cmd(&program, [arg])
                .dir(root)
                .stderr_null()
                .read()
                .with_context(|| format!("running `{program} {arg}`"))
        };
        let rustc = run("RUSTC", "rustc", "-vV")?;
        let cargo = run("CARGO", "cargo", "-V")?;
        Toolchain::parse(&rustc, &cargo)
    }

    fn parse(rustc_vv: &str, cargo_v: &str) -> Result<Toolchain> {
        let key = |k: &str| -> Result<String> {
            rustc_vv
                .lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(": "))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .with_context(|| format!("`rustc -vV` printed no {k}:\n{rustc_vv}"))
        };
        let version = rustc_vv.lines().next().unwrap_or_default().trim();
        if !version.starts_with("rustc ") {
            bail!("`rustc -vV` printed {rustc_vv:?}, not a rustc version");
        }
        let cargo = cargo_v.trim();
        if !cargo.starts_with("cargo ") {
            bail!("`cargo -V` printed {cargo_v:?}, not a cargo version");
        }
        Ok(Toolchain {
            rustc: Rustc {
                version: version.to_string(),
                release: key("release")?,
                commit_hash: key("commit-hash")?,
                host: key("host")?,
            },
            cargo: cargo.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolchain_from_rustc_and_cargo_output() {
        let vv = "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\n\
                  commit-hash: 59807616e1fa2540724bfbac14d7976d7e4a3860\ncommit-date: 2026-04-14\n\
                  host: x86_64-unknown-linux-gnu\nrelease: 1.95.0\nLLVM version: 22.1.2\n";
        let t = Toolchain::parse(vv, "cargo 1.95.0 (f2d3ce0bd 2026-03-21)\n").unwrap();
        assert_eq!(t.rustc.version, "rustc 1.95.0 (59807616e 2026-04-14)");
        assert_eq!(t.rustc.release, "1.95.0");
        assert_eq!(
            t.rustc.commit_hash,
            "59807616e1fa2540724bfbac14d7976d7e4a3860"
        );
        assert_eq!(t.rustc.host, "x86_64-unknown-linux-gnu");
        assert_eq!(t.cargo, "cargo 1.95.0 (f2d3ce0bd 2026-03-21)");
        assert!(Toolchain::parse("rustc 1.95.0\nrelease: 1.95.0\n", "cargo 1").is_err());
        assert!(Toolchain::parse(vv, "error: no such command").is_err());
    }

    #[test]
    fn this_toolchain_answers() {
        let root = crate::workspace_root();
        let t = Toolchain::gather(&root).unwrap();
        assert!(t.rustc.release.starts_with("1."), "{t:?}");
        assert_eq!(t.rustc.commit_hash.len(), 40, "{t:?}");
    }
}

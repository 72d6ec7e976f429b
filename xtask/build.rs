//! Embeds `XTASK_SOURCES_SHA256`, a digest of xtask's own sources, so that `cargo xtask image`
//! rebuilds an image when the builder changed, dirty work tree or not.
//!
//! Computed here rather than at run time so it describes the code that was compiled into the
//! running binary, not whatever the checkout holds now, and costs nothing per build.
//! Covered: every file under `src/`, this file, `Cargo.toml`, and the workspace's `Cargo.toml`
//! and `Cargo.lock` (dependency versions and profiles). Each file is hashed as its path and
//! bytes, both length-prefixed, in sorted path order.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn main() -> io::Result<()> {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let mut files = Vec::new();
    collect(&dir, Path::new("src"), &mut files)?;
    for f in ["build.rs", "Cargo.toml", "../Cargo.toml", "../Cargo.lock"] {
        files.push(PathBuf::from(f));
    }
    files.sort();
    let mut h = Sha256::new();
    for rel in &files {
        let data = fs::read(dir.join(rel))?;
        let name = rel.to_string_lossy();
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(&data);
        if !rel.starts_with("src") {
            println!("cargo::rerun-if-changed={}", rel.display());
        }
    }
    // A directory makes cargo look at everything below it, new files included.
    println!("cargo::rerun-if-changed=src");
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo::rustc-env=XTASK_SOURCES_SHA256={hex}");
    Ok(())
}

/// Every file below `dir/rel`, as paths relative to `dir`.
fn collect(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir.join(rel))? {
        let entry = entry?;
        let rel = rel.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            collect(dir, &rel, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

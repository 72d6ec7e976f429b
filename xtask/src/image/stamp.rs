//! The up-to-date check: a digest of every input of the stages after the rootfs, stored in a
//! stamp file beside the output directory. A build whose stamp matches is not redone.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::ARTIFACTS;
use super::debian::BootFiles;
use crate::buildinfo::BuildFacts;
use crate::digest::sha256_file;
use crate::profile::Loaded;
use crate::rootfs::Tree;

pub struct Stamp {
    path: PathBuf,
    input_digest: String,
    text: String,
}

impl Stamp {
    pub fn new(
        out: &Path,
        loaded: &Loaded,
        facts: &BuildFacts,
        tree: &Tree,
        boot: &BootFiles,
        cmdline: &str,
    ) -> Result<Stamp> {
        let input_digest = input_digest(loaded, facts, tree, &boot.vmlinuz, &boot.loader, cmdline)?;
        // The stamp also covers the builder itself: a changed xtask may write other bytes from the
        // same inputs. (The exe's hash is not reproducible across checkouts, so it stays out of the
        // seed that names the disk.)
        let exe = std::env::current_exe().context("locating the xtask binary")?;
        let text = format!("{input_digest} {}", sha256_file(&exe)?);
        Ok(Stamp {
            path: stamp_path(out),
            input_digest,
            text,
        })
    }

    pub fn is_up_to_date(&self, out: &Path) -> bool {
        std::fs::read_to_string(&self.path).is_ok_and(|s| s == self.text)
            && ARTIFACTS
                .iter()
                .chain(["SHA256SUMS"].iter())
                .all(|a| out.join(a).is_file())
    }

    /// What the disk's GUIDs and FAT volume id are derived from.
    pub fn seed(&self) -> [u8; 32] {
        seed(&self.input_digest)
    }

    pub fn write(&self) -> Result<()> {
        std::fs::write(&self.path, &self.text)
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

fn input_digest(
    loaded: &Loaded,
    facts: &BuildFacts,
    tree: &Tree,
    vmlinuz: &[u8],
    loader: &[u8],
    cmdline: &str,
) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut field = |tag: &str, data: &[u8]| {
        h.update(tag.as_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    };
    field("profile", loaded.text.as_bytes());
    field("facts", serde_json::to_string(facts)?.as_bytes());
    field("cmdline", cmdline.as_bytes());
    field("vmlinuz", vmlinuz);
    field("loader", loader);
    for (path, node) in tree.iter() {
        field("node", format!("{path} {node:?}").as_bytes());
    }
    Ok(crate::digest::hex(&h.finalize()))
}

fn seed(input_digest: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut s = [0u8; 32];
    s.copy_from_slice(&Sha256::digest(
        format!("disk-identity:{input_digest}").as_bytes(),
    ));
    s
}

fn stamp_path(out: &Path) -> PathBuf {
    out.with_file_name(format!(
        ".{}.stamp",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("image")
    ))
}

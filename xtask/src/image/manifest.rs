//! Stage 8, manifest: `manifest.json` (what went into the image and what came out) and
//! `SHA256SUMS` of every artifact.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use super::ARTIFACTS;
use super::outputs::DiskHashes;
use crate::buildinfo::{BuildFacts, Toolchain};
use crate::digest::{sha256_file, sha256_hex};
use crate::disk::DiskReport;
use crate::modules::ModuleSet;
use crate::packages::Resolved;
use crate::profile::Loaded;
use crate::rootfs::{Node, Tree};

/// What the manifest records besides the artifacts.
pub struct Facts<'a> {
    pub loaded: &'a Loaded,
    pub facts: &'a BuildFacts,
    pub toolchain: &'a Toolchain,
    pub resolved: &'a [Resolved],
    pub tree: &'a Tree,
    pub mods: &'a ModuleSet,
    pub cmdline: &'a str,
    pub disk: &'a DiskReport,
}

/// Writes `manifest.json` and `SHA256SUMS` into `work`; returns the manifest.
pub fn write(work: &Path, f: &Facts, hashes: &DiskHashes) -> Result<serde_json::Value> {
    let mut artifacts = Vec::new();
    for a in ARTIFACTS.iter().filter(|a| **a != "manifest.json") {
        let p = work.join(a);
        let size = std::fs::metadata(&p)
            .with_context(|| format!("stat {}", p.display()))?
            .len();
        let sha = match *a {
            "disk.raw" => hashes.raw.clone(),
            "disk.vhd" => hashes.vhd.clone(),
            _ => sha256_file(&p)?,
        };
        artifacts.push(json!({"file": a, "size": size, "sha256": sha}));
    }
    let loaded = f.loaded;
    let report = f.disk;
    let manifest = json!({
        "profile": {
            "name": loaded.name(),
            "path": format!("images/{}", loaded.path.file_name().and_then(|n| n.to_str()).unwrap_or_default()),
            "sha256": sha256_hex(loaded.text.as_bytes()),
            "description": loaded.profile.image.description,
        },
        "version": f.facts.version,
        "commit": f.facts.commit,
        "source_date_epoch": f.facts.source_date_epoch,
        "toolchain": f.toolchain,
        "xtask_sources_sha256": super::stamp::XTASK_SOURCES,
        "inputs": f.resolved.iter().map(|r| json!({
            "role": r.role, "package": r.name, "version": r.version, "sha256": r.sha256,
        })).collect::<Vec<_>>(),
        "binaries": tree_binaries(f.tree),
        // `cargo xtask ami` refuses an image whose init has the test console.
        "cargo_features": super::compile::features(&loaded.profile),
        "kernel_release": f.mods.kernel_release,
        "cmdline": f.cmdline,
        "modules": f.mods.ordered.iter().map(|m| json!({"name": m.name, "path": m.rel_path, "depends": m.depends})).collect::<Vec<_>>(),
        "builtin_modules": f.mods.builtin,
        "disk": {
            "size_bytes": report.size_bytes,
            "disk_guid": report.disk_guid,
            "esp_guid": report.esp_guid,
            "fat_volume_id": format!("{:08x}", report.volume_id),
            "boot_loader": "systemd-boot (EFI/BOOT/BOOTAA64.EFI) with a Boot Loader Specification entry",
        },
        "artifacts": artifacts,
    });
    let manifest_text = serde_json::to_string_pretty(&manifest)? + "\n";
    std::fs::write(work.join("manifest.json"), &manifest_text).context("writing manifest.json")?;
    let mut sums = String::new();
    for a in ARTIFACTS {
        let sha = if *a == "manifest.json" {
            sha256_hex(manifest_text.as_bytes())
        } else {
            artifacts
                .iter()
                .find(|x| x["file"] == *a)
                .and_then(|x| x["sha256"].as_str())
                .unwrap_or_default()
                .to_string()
        };
        sums.push_str(&format!("{sha}  {a}\n"));
    }
    std::fs::write(work.join("SHA256SUMS"), sums).context("writing SHA256SUMS")?;
    Ok(manifest)
}

/// The manifest of an earlier build.
pub fn read(out: &Path) -> Result<serde_json::Value> {
    let p = out.join("manifest.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

fn tree_binaries(tree: &Tree) -> Vec<serde_json::Value> {
    tree.iter()
        .filter(|(p, _)| p.starts_with("sbin/"))
        .filter_map(|(p, n)| match n {
            Node::File { data, .. } => Some(
                json!({"path": format!("/{p}"), "size": data.len(), "sha256": sha256_hex(data)}),
            ),
            _ => None,
        })
        .collect()
}

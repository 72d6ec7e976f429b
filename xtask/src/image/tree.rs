//! Stage 4, rootfs: assembles the image's root file system in memory: the `rootfs/` skeleton
//! rendered from the profile, PID 1, the services and their baked configs, the extra packages'
//! files and the kernel modules with their load list.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::compile::Binaries;
use super::debian::Debs;
use super::{human, say};
use crate::buildinfo::BuildFacts;
use crate::modules::ModuleSet;
use crate::packages;
use crate::profile::Loaded;
use crate::rootfs::Tree;

pub fn assemble(
    root: &Path,
    loaded: &Loaded,
    facts: &BuildFacts,
    debs: &Debs,
    bins: Binaries,
    mods: &ModuleSet,
) -> Result<Tree> {
    let profile = &loaded.profile;
    let kernel_release = &debs.kernel_release;
    let mut tree = Tree::new();
    let template_facts = template_facts(loaded, facts, kernel_release);
    tree.add_skeleton(&root.join("rootfs"), &template_facts)?;
    match (bins.init, &profile.init.script) {
        (Some(bin), _) => {
            tree.file("sbin/init", 0o755, bin);
            tree.symlink("init", "sbin/init");
        }
        (None, Some(script)) => {
            let dir = loaded.path.parent().unwrap_or(Path::new("."));
            let p = dir.join(script);
            let text = std::fs::read(&p)
                .with_context(|| format!("reading [init] script {}", p.display()))?;
            if !text.starts_with(b"#!") {
                bail!("[init] script {} has no #! line", p.display());
            }
            tree.file("init", 0o755, text);
            // The Rust init's config would only mislead whoever inspects this image.
            tree.remove("etc/init.toml");
        }
        (None, None) => bail!("no init binary and no [init] script"),
    }
    let extras = debs.extras();
    for f in &profile.packages.extra_files {
        let data =
            extra_file(&extras, f).with_context(|| format!("[packages] extra_files {f:?}"))?;
        tree.file(f, 0o755, data);
    }
    let dir = loaded.path.parent().unwrap_or(Path::new("."));
    for (at, from) in &profile.files {
        let p = dir.join(from);
        let data = std::fs::read(&p)
            .with_context(|| format!("[files] {at:?}: reading {}", p.display()))?;
        tree.file(at.trim_start_matches('/'), 0o644, data);
    }
    for (s, bin) in bins.services {
        tree.file(&format!("sbin/{}", s.binary()), 0o755, bin);
        if let Some(cfg) = &s.config {
            let text = format!(
                "# Baked by `cargo xtask image` from images/{}.toml; IMDS user-data may override it.\n{}",
                loaded.name(),
                toml::to_string(cfg).context("serialising a [service.config] table")?
            );
            tree.file(&format!("etc/{}.toml", s.name), 0o644, text.into_bytes());
        }
    }
    let mut list =
        String::from("# Kernel modules in load order, written by `cargo xtask image`.\n");
    for m in &mods.ordered {
        let path = format!("lib/modules/{}/{}", kernel_release, m.rel_path);
        list.push_str(&format!("/{path}\n"));
        tree.file(&path, 0o644, m.data.clone());
    }
    tree.file("etc/init/modules.list", 0o644, list.into_bytes());
    say(&format!(
        "rootfs: {} entries, {} of files, {} modules",
        tree.len(),
        human(tree.file_bytes()),
        mods.ordered.len()
    ));
    Ok(tree)
}

/// What the `rootfs/` templates see: the profile's facts, its services as init starts them.
fn template_facts(loaded: &Loaded, facts: &BuildFacts, kernel_release: &str) -> serde_json::Value {
    let profile = &loaded.profile;
    let services_facts: Vec<_> = profile
        .services
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "path": format!("/sbin/{}", s.binary()),
                "args": s.args,
                "env": s.env,
                "watchdog_ms": s.watchdog_ms,
                "oom_score_adj": s.oom_score_adj,
            })
        })
        .collect();
    json!({
        "profile": loaded.name(),
        "description": profile.image.description,
        "hostname": profile.image.hostname,
        "version": facts.version,
        "commit": facts.commit,
        "commit_short": facts.commit_short(),
        "kernel_release": kernel_release,
        "services": services_facts,
        "init": profile.init,
    })
}

/// The bytes of `path` from the first extra package that has it, following symlinks (relative
/// or absolute, resolved inside the extra packages: an soname link may point into another
/// package of the closure). Every extra file is installed 0755: libraries and programs alike.
fn extra_file(extras: &[&packages::Resolved], path: &str) -> Result<Vec<u8>> {
    let mut path = path.trim_start_matches('/').to_string();
    for _ in 0..8 {
        let mut found = None;
        for r in extras {
            let p = r.root.join(&path);
            if let Ok(meta) = std::fs::symlink_metadata(&p) {
                found = Some((p, meta));
                break;
            }
        }
        let Some((p, meta)) = found else {
            bail!(
                "/{path} is in none of the extra packages ({})",
                extras
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        if meta.file_type().is_symlink() {
            let target =
                std::fs::read_link(&p).with_context(|| format!("reading link {}", p.display()))?;
            let target = target.to_string_lossy();
            path = if let Some(abs) = target.strip_prefix('/') {
                abs.to_string()
            } else {
                let parent = path.rsplit_once('/').map_or("", |(d, _)| d);
                normalise(&format!("{parent}/{target}"))
            };
            continue;
        }
        if !meta.is_file() {
            bail!("{} is not a regular file", p.display());
        }
        return std::fs::read(&p).with_context(|| format!("reading {}", p.display()));
    }
    bail!("too many symlinks")
}

/// Resolves `.` and `..` in a relative '/'-separated path.
fn normalise(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn init_toml(profile: &str) -> String {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let loaded = Loaded::load(root, profile).unwrap();
        let facts = BuildFacts {
            version: "0.1.0".into(),
            commit: "abc".into(),
            source_date_epoch: 1,
        };
        let mut tree = Tree::new();
        tree.add_skeleton(
            &root.join("rootfs"),
            &template_facts(&loaded, &facts, "6.1.0"),
        )
        .unwrap();
        match tree.iter().find(|(p, _)| *p == "etc/init.toml") {
            Some((_, crate::rootfs::Node::File { data, .. })) => {
                String::from_utf8(data.clone()).unwrap()
            }
            other => panic!("no etc/init.toml file: {other:?}"),
        }
    }

    #[test]
    fn init_toml_carries_the_watchdog_and_oom_score_adj() {
        let prod = init_toml("nat-t4g");
        let service = prod.split("[[service]]").nth(1).unwrap();
        assert!(service.contains("name = \"nat-init\""), "{prod}");
        assert!(service.contains("\nwatchdog_ms = 30000\n"), "{prod}");
        assert!(service.contains("\noom_score_adj = -900\n"), "{prod}");
        assert!(prod.contains("test_console = false"), "{prod}");
        assert!(init_toml("nat-t4g-e2e").contains("test_console = true"));
        // Absent keys are left to init's defaults (watchdog off, oom_score_adj 0).
        let boot = init_toml("test-boot");
        assert!(
            !boot.contains("watchdog_ms") && !boot.contains("oom_score_adj"),
            "{boot}"
        );
    }

    #[test]
    fn extra_files_follow_symlinks_across_packages() {
        let base = std::env::temp_dir().join(format!("xtask-extra-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (a, b) = (base.join("a"), base.join("b"));
        std::fs::create_dir_all(a.join("lib/x")).unwrap();
        std::fs::create_dir_all(b.join("lib/x")).unwrap();
        std::fs::write(b.join("lib/x/libq.so.1.2"), b"ELF").unwrap();
        std::os::unix::fs::symlink("libq.so.1.2", a.join("lib/x/libq.so.1")).unwrap();
        std::os::unix::fs::symlink("x/../x/libq.so.1", a.join("lib/ld.so")).unwrap();
        let pkg = |root: &Path| packages::Resolved {
            role: "extra:p".into(),
            name: "p".into(),
            version: "1".into(),
            sha256: String::new(),
            deb: PathBuf::new(),
            root: root.to_path_buf(),
        };
        let (pa, pb) = (pkg(&a), pkg(&b));
        let extras = [&pa, &pb];
        assert_eq!(extra_file(&extras, "/lib/ld.so").unwrap(), b"ELF");
        let e = extra_file(&extras, "/lib/nope").unwrap_err().to_string();
        assert!(e.contains("none of the extra packages"), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}

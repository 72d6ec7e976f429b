//! The image's root file system as an in-memory tree: the `rootfs/` skeleton (with `*.hbs`
//! templates rendered from the profile and build facts), the binaries, the kernel modules and
//! their load list. Exported as `rootfs.tar` here and packed into the initramfs elsewhere.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use handlebars::Handlebars;
use serde_json::Value;
use walkdir::WalkDir;

/// One node of the tree. Paths are relative, '/'-separated, without a leading slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

/// A sorted tree; BTreeMap order puts every directory before its contents.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    pub fn new() -> Self {
        let mut t = Self::default();
        // Mount points init needs, and the console the kernel opens before init runs.
        for d in ["dev", "proc", "sys", "run", "tmp", "etc", "sbin", "lib"] {
            t.dir(d, 0o755);
        }
        t.nodes.insert("tmp".into(), Node::Dir { mode: 0o1777 });
        t.nodes.insert(
            "dev/console".into(),
            Node::CharDev {
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        );
        // Rust's runtime opens /dev/null for closed stdio before main; devtmpfs is not
        // mounted yet when the kernel starts init.
        t.nodes.insert(
            "dev/null".into(),
            Node::CharDev {
                mode: 0o666,
                major: 1,
                minor: 3,
            },
        );
        t
    }

    /// Adds a directory and its parents.
    pub fn dir(&mut self, path: &str, mode: u32) {
        let path = path.trim_matches('/');
        if path.is_empty() {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755);
        }
        self.nodes
            .entry(path.to_string())
            .or_insert(Node::Dir { mode });
    }

    /// Adds a file (and its parent directories), replacing an earlier file at that path.
    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        let path = path.trim_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755);
        }
        self.nodes
            .insert(path.to_string(), Node::File { mode, data });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = path.trim_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755);
        }
        self.nodes.insert(
            path.to_string(),
            Node::Symlink {
                target: target.to_string(),
            },
        );
    }

    /// Removes a node (not its children); returns whether it was there.
    pub fn remove(&mut self, path: &str) -> bool {
        self.nodes.remove(path.trim_matches('/')).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Total bytes of file content.
    pub fn file_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match n {
                Node::File { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Adds the skeleton under `dir`: plain files are copied, `name.hbs` becomes `name`
    /// rendered with `facts`. Files keep only their executable bit from the checkout.
    pub fn add_skeleton(&mut self, dir: &Path, facts: &Value) -> Result<()> {
        let hb = renderer();
        for entry in WalkDir::new(dir).sort_by_file_name() {
            let entry = entry.with_context(|| format!("walking {}", dir.display()))?;
            let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
            let Some(rel) = rel.to_str() else {
                bail!(
                    "{}: file names in rootfs/ must be UTF-8",
                    entry.path().display()
                );
            };
            if rel.is_empty() {
                continue;
            }
            let ft = entry.file_type();
            if ft.is_dir() {
                self.dir(rel, 0o755);
            } else if ft.is_symlink() {
                let target = std::fs::read_link(entry.path())
                    .with_context(|| format!("reading link {}", entry.path().display()))?;
                self.symlink(rel, &target.to_string_lossy());
            } else {
                let data = std::fs::read(entry.path())
                    .with_context(|| format!("reading {}", entry.path().display()))?;
                let mode = if is_executable(entry.path()) {
                    0o755
                } else {
                    0o644
                };
                if let Some(out) = rel.strip_suffix(".hbs") {
                    let text = String::from_utf8(data).with_context(|| {
                        format!("{}: templates must be UTF-8", entry.path().display())
                    })?;
                    let rendered = hb.render_template(&text, facts).with_context(|| {
                        format!("rendering template {}", entry.path().display())
                    })?;
                    self.file(out, mode, rendered.into_bytes());
                } else {
                    self.file(rel, mode, data);
                }
            }
        }
        Ok(())
    }

    /// Writes the tree as a tar archive with deterministic headers (uid/gid 0, fixed mtime).
    pub fn write_tar(&self, out: impl std::io::Write, mtime: u64) -> Result<()> {
        let mut b = tar::Builder::new(out);
        for (path, node) in &self.nodes {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(mtime);
            h.set_username("root")?;
            h.set_groupname("root")?;
            match node {
                Node::Dir { mode } => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    b.append_data(&mut h, format!("{path}/"), std::io::empty())?;
                }
                Node::File { mode, data } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_slice())?;
                }
                Node::Symlink { target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, path, target)?;
                }
                Node::CharDev { mode, major, minor } => {
                    h.set_entry_type(tar::EntryType::Char);
                    h.set_mode(*mode);
                    h.set_size(0);
                    h.set_device_major(*major)?;
                    h.set_device_minor(*minor)?;
                    b.append_data(&mut h, path, std::io::empty())?;
                }
            }
        }
        b.into_inner()?.flush()?;
        Ok(())
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// Handlebars with no HTML escaping and a `toml` helper that prints a value as a TOML literal,
/// so templates cannot produce broken TOML from odd strings.
fn renderer() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_helper("toml", Box::new(toml_helper));
    hb
}

fn toml_helper(
    h: &handlebars::Helper<'_>,
    _: &Handlebars<'_>,
    _: &handlebars::Context,
    _: &mut handlebars::RenderContext<'_, '_>,
    out: &mut dyn handlebars::Output,
) -> handlebars::HelperResult {
    let param = h
        .param(0)
        .ok_or_else(|| handlebars::RenderErrorReason::ParamNotFoundForIndex("toml", 0))?;
    let v = match param.value() {
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) if n.is_i64() => toml::Value::Integer(n.as_i64().unwrap_or_default()),
        other => {
            return Err(handlebars::RenderErrorReason::Other(format!(
                "toml helper: unsupported value {other}"
            ))
            .into());
        }
    };
    out.write(&v.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_before_children_and_console_exists() {
        let mut t = Tree::new();
        t.file("lib/modules/6.1/kernel/a.ko", 0o644, vec![1]);
        let paths: Vec<_> = t.iter().map(|(p, _)| p.clone()).collect();
        let pos = |p: &str| paths.iter().position(|x| x == p).unwrap();
        assert!(
            pos("lib") < pos("lib/modules")
                && pos("lib/modules/6.1/kernel") < pos("lib/modules/6.1/kernel/a.ko")
        );
        assert_eq!(
            t.nodes.get("dev/console"),
            Some(&Node::CharDev {
                mode: 0o600,
                major: 5,
                minor: 1
            })
        );
    }

    #[test]
    fn toml_helper_quotes_strings() {
        let hb = renderer();
        let s = hb
            .render_template(
                "a = {{toml x}}\nb = {{toml n}}",
                &serde_json::json!({"x": "q\"uo\\te\n", "n": 3}),
            )
            .unwrap();
        let v: toml::Table = toml::from_str(&s).unwrap();
        assert_eq!(v["a"].as_str(), Some("q\"uo\\te\n"));
        assert_eq!(v["b"].as_integer(), Some(3));
    }

    #[test]
    fn strict_templates_reject_unknown_facts() {
        let hb = renderer();
        assert!(
            hb.render_template("{{nope}}", &serde_json::json!({}))
                .is_err()
        );
    }

    #[test]
    fn tar_is_deterministic_and_complete() {
        let mut t = Tree::new();
        t.file("sbin/init", 0o755, b"ELF".to_vec());
        t.symlink("init", "sbin/init");
        let mut a = Vec::new();
        let mut b = Vec::new();
        t.write_tar(&mut a, 1_700_000_000).unwrap();
        t.write_tar(&mut b, 1_700_000_000).unwrap();
        assert_eq!(a, b);
        let mut ar = tar::Archive::new(a.as_slice());
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"dev/console".to_string()));
        assert!(names.contains(&"sbin/init".to_string()));
        assert!(names.contains(&"init".to_string()));
    }
}

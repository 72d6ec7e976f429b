//! The up-to-date check: a digest of every input of the image, stored in a stamp file beside
//! the output directory. A build whose stamp matches is not redone.
//!
//! Two digests, both over length-prefixed fields (`digest::Fields`) of the inputs' bytes:
//! - the content digest covers what the artifacts are made of: the profile (with the profiles
//!   it extends), the build facts, the kernel command line, the packages (by sha256), the
//!   kernel and boot loader, and every node of the rootfs tree (binaries, modules, configs,
//!   rendered templates). It also names the disk (its GUIDs and FAT volume id), so it holds
//!   nothing that differs between two hosts building the same commit.
//! - the stamp digest adds what produced them: xtask's own sources (embedded by build.rs),
//!   the toolchain (`rustc -vV`, `cargo -V`), the lock file and the `rootfs/` files as they
//!   are in the checkout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use walkdir::WalkDir;

use super::ARTIFACTS;
use crate::buildinfo::{BuildFacts, Toolchain};
use crate::digest::Fields;
use crate::packages::Resolved;
use crate::rootfs::{Node, Tree};

/// Digest of xtask's sources, from build.rs.
pub const XTASK_SOURCES: &str = env!("XTASK_SOURCES_SHA256");

/// Everything a build's output depends on.
pub struct Inputs<'a> {
    /// The profile's text, parents included.
    pub profile: &'a str,
    pub facts: &'a BuildFacts,
    pub cmdline: &'a str,
    /// The cargo features of each on-image package (`compile::features_text`).
    pub features: &'a str,
    pub packages: &'a [Resolved],
    pub vmlinuz: &'a [u8],
    pub loader: &'a [u8],
    pub tree: &'a Tree,
    /// The lock file's bytes, None when there is none.
    pub lock: Option<&'a [u8]>,
    /// `rootfs/` as in the checkout, sorted by path.
    pub skeleton: &'a [(String, Node)],
    pub toolchain: &'a Toolchain,
    pub xtask_sources: &'a str,
}

pub struct Stamp {
    path: PathBuf,
    content: String,
    text: String,
}

impl Stamp {
    pub fn new(out: &Path, inputs: &Inputs) -> Stamp {
        let content = content_digest(inputs);
        let text = stamp_digest(&content, inputs);
        Stamp {
            path: stamp_path(out),
            content,
            text,
        }
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
        seed(&self.content)
    }

    pub fn write(&self) -> Result<()> {
        std::fs::write(&self.path, &self.text)
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

fn content_digest(i: &Inputs) -> String {
    let mut f = Fields::new("image-content");
    f.field("profile", i.profile.as_bytes());
    f.field("version", i.facts.version.as_bytes());
    f.field("commit", i.facts.commit.as_bytes());
    f.u64("source_date_epoch", i.facts.source_date_epoch);
    f.field("cmdline", i.cmdline.as_bytes());
    f.field("features", i.features.as_bytes());
    for p in i.packages {
        f.field("package.role", p.role.as_bytes());
        f.field("package.name", p.name.as_bytes());
        f.field("package.version", p.version.as_bytes());
        f.field("package.sha256", p.sha256.as_bytes());
    }
    f.field("vmlinuz", i.vmlinuz);
    f.field("loader", i.loader);
    for (path, node) in i.tree.iter() {
        node_fields(&mut f, "tree", path, node);
    }
    f.finish()
}

fn stamp_digest(content: &str, i: &Inputs) -> String {
    let mut f = Fields::new("image-stamp");
    f.field("content", content.as_bytes());
    f.field("xtask_sources", i.xtask_sources.as_bytes());
    let t = i.toolchain;
    f.field("rustc.version", t.rustc.version.as_bytes());
    f.field("rustc.release", t.rustc.release.as_bytes());
    f.field("rustc.commit_hash", t.rustc.commit_hash.as_bytes());
    f.field("rustc.host", t.rustc.host.as_bytes());
    f.field("cargo", t.cargo.as_bytes());
    match i.lock {
        Some(lock) => f.field("lock", lock),
        None => f.field("no-lock", b""),
    };
    for (path, node) in i.skeleton {
        node_fields(&mut f, "skeleton", path, node);
    }
    f.finish()
}

/// A node as fields: its path, then its kind with what that kind holds.
fn node_fields(f: &mut Fields, prefix: &str, path: &str, node: &Node) {
    f.field(&format!("{prefix}.path"), path.as_bytes());
    match node {
        Node::Dir { mode } => {
            f.u64("dir", u64::from(*mode));
        }
        Node::File { mode, data } => {
            f.u64("file", u64::from(*mode));
            f.field("data", data);
        }
        Node::Symlink { target } => {
            f.field("symlink", target.as_bytes());
        }
        Node::CharDev { mode, major, minor } => {
            f.u64("chardev", u64::from(*mode));
            f.u64("major", u64::from(*major));
            f.u64("minor", u64::from(*minor));
        }
    }
}

/// `rootfs/` as nodes: files with the executable bit as the only mode (all the rootfs keeps:
/// other permission bits depend on the umask of the checkout), symlinks with their targets.
pub fn read_skeleton(dir: &Path) -> Result<Vec<(String, Node)>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    for entry in WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.with_context(|| format!("walking {}", dir.display()))?;
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let rel = rel.to_string_lossy().into_owned();
        if rel.is_empty() {
            continue;
        }
        let ft = entry.file_type();
        let node = if ft.is_dir() {
            Node::Dir { mode: 0o755 }
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path())
                .with_context(|| format!("reading link {}", entry.path().display()))?;
            Node::Symlink {
                target: target.to_string_lossy().into_owned(),
            }
        } else {
            let meta = entry
                .metadata()
                .with_context(|| format!("stat {}", entry.path().display()))?;
            let data = std::fs::read(entry.path())
                .with_context(|| format!("reading {}", entry.path().display()))?;
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            Node::File { mode, data }
        };
        out.push((rel, node));
    }
    Ok(out)
}

/// The lock file's bytes, or None when it does not exist.
pub fn read_lock(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn seed(content_digest: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut s = [0u8; 32];
    s.copy_from_slice(&Sha256::digest(
        format!("disk-identity:{content_digest}").as_bytes(),
    ));
    s
}

fn stamp_path(out: &Path) -> PathBuf {
    out.with_file_name(format!(
        ".{}.stamp",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("image")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buildinfo::Rustc;

    /// Owned inputs, so that each test case can change one of them.
    #[derive(Clone)]
    struct Owned {
        profile: String,
        facts: BuildFacts,
        cmdline: String,
        features: String,
        packages: Vec<Resolved>,
        vmlinuz: Vec<u8>,
        loader: Vec<u8>,
        tree: Tree,
        lock: Option<Vec<u8>>,
        skeleton: Vec<(String, Node)>,
        toolchain: Toolchain,
        xtask_sources: String,
    }

    impl Owned {
        fn sample() -> Owned {
            let mut tree = Tree::new();
            tree.file("sbin/init", 0o755, b"\x7fELF init".to_vec());
            tree.file("sbin/nat-init", 0o755, b"\x7fELF nat-init".to_vec());
            tree.file("etc/hostname", 0o644, b"nat\n".to_vec());
            tree.symlink("init", "sbin/init");
            Owned {
                profile: "[image]\nname = \"t\"\n".into(),
                facts: BuildFacts {
                    version: "0.1.0".into(),
                    commit: "abc".into(),
                    source_date_epoch: 1,
                },
                cmdline: "console=ttyS0 panic=10".into(),
                features: "init:\nnat-init:\n".into(),
                packages: vec![Resolved {
                    role: "kernel".into(),
                    name: "linux-image-x".into(),
                    version: "1".into(),
                    sha256: "ab".repeat(32),
                    deb: PathBuf::from("/cache/x.deb"),
                    root: PathBuf::from("/cache/x"),
                }],
                vmlinuz: b"kernel".to_vec(),
                loader: b"MZ loader".to_vec(),
                tree,
                lock: Some(b"[kernel]\n".to_vec()),
                skeleton: vec![
                    ("etc".into(), Node::Dir { mode: 0o755 }),
                    (
                        "etc/hostname.hbs".into(),
                        Node::File {
                            mode: 0o644,
                            data: b"{{hostname}}\n".to_vec(),
                        },
                    ),
                ],
                toolchain: Toolchain {
                    rustc: Rustc {
                        version: "rustc 1.95.0 (x 2026-04-14)".into(),
                        release: "1.95.0".into(),
                        commit_hash: "59".repeat(20),
                        host: "x86_64-unknown-linux-gnu".into(),
                    },
                    cargo: "cargo 1.95.0".into(),
                },
                xtask_sources: "cd".repeat(32),
            }
        }

        /// (content digest, stamp)
        fn digests(&self) -> (String, String) {
            let s = Stamp::new(
                Path::new("/out/t"),
                &Inputs {
                    profile: &self.profile,
                    facts: &self.facts,
                    cmdline: &self.cmdline,
                    features: &self.features,
                    packages: &self.packages,
                    vmlinuz: &self.vmlinuz,
                    loader: &self.loader,
                    tree: &self.tree,
                    lock: self.lock.as_deref(),
                    skeleton: &self.skeleton,
                    toolchain: &self.toolchain,
                    xtask_sources: &self.xtask_sources,
                },
            );
            (s.content, s.text)
        }
    }

    fn flip_last(v: &mut [u8]) {
        if let Some(b) = v.last_mut() {
            *b ^= 1;
        }
    }

    fn flip_str(s: &mut String) {
        let mut b = std::mem::take(s).into_bytes();
        flip_last(&mut b);
        *s = String::from_utf8(b).unwrap();
    }

    fn flip_tree_file(tree: &mut Tree, path: &str) {
        let Some((_, Node::File { mode, data })) = tree.iter().find(|(p, _)| *p == path) else {
            panic!("{path} is not a file");
        };
        let (mode, mut data) = (*mode, data.clone());
        flip_last(&mut data);
        tree.file(path, mode, data);
    }

    /// One byte of any input changes the stamp; one byte of what the artifacts are made of
    /// also changes the content digest (and so the disk's identity); the rest does not.
    #[test]
    fn every_input_changes_the_digest() {
        let base = Owned::sample();
        let (content, stamp) = base.digests();
        assert_eq!(base.digests(), (content.clone(), stamp.clone()), "stable");
        type Change = fn(&mut Owned);
        let content_changes: &[(&str, Change)] = &[
            ("profile", |o| flip_str(&mut o.profile)),
            ("version", |o| flip_str(&mut o.facts.version)),
            ("commit", |o| flip_str(&mut o.facts.commit)),
            ("epoch", |o| o.facts.source_date_epoch += 1),
            ("cmdline", |o| flip_str(&mut o.cmdline)),
            ("cargo features", |o| {
                o.features = "init:test-console\nnat-init:\n".into()
            }),
            ("package sha256", |o| flip_str(&mut o.packages[0].sha256)),
            ("package version", |o| flip_str(&mut o.packages[0].version)),
            ("vmlinuz", |o| flip_last(&mut o.vmlinuz)),
            ("loader", |o| flip_last(&mut o.loader)),
            ("init binary", |o| flip_tree_file(&mut o.tree, "sbin/init")),
            ("service binary", |o| {
                flip_tree_file(&mut o.tree, "sbin/nat-init")
            }),
            ("rootfs file", |o| {
                flip_tree_file(&mut o.tree, "etc/hostname")
            }),
            ("file mode", |o| {
                o.tree.file("etc/hostname", 0o600, b"nat\n".to_vec())
            }),
            ("symlink", |o| o.tree.symlink("init", "sbin/inix")),
            ("new node", |o| o.tree.dir("var", 0o755)),
        ];
        let stamp_changes: &[(&str, Change)] = &[
            ("xtask sources", |o| flip_str(&mut o.xtask_sources)),
            ("rustc", |o| flip_str(&mut o.toolchain.rustc.commit_hash)),
            ("rustc host", |o| flip_str(&mut o.toolchain.rustc.host)),
            ("cargo", |o| flip_str(&mut o.toolchain.cargo)),
            ("lock", |o| flip_last(o.lock.as_mut().unwrap())),
            ("no lock", |o| o.lock = None),
            ("empty lock", |o| o.lock = Some(Vec::new())),
            ("skeleton file", |o| {
                if let Node::File { data, .. } = &mut o.skeleton[1].1 {
                    flip_last(data);
                }
            }),
            ("skeleton name", |o| flip_str(&mut o.skeleton[1].0)),
        ];
        for (what, change) in content_changes {
            let mut o = base.clone();
            change(&mut o);
            let (c, s) = o.digests();
            assert_ne!(c, content, "{what} must change the content digest");
            assert_ne!(s, stamp, "{what} must change the stamp");
        }
        for (what, change) in stamp_changes {
            let mut o = base.clone();
            change(&mut o);
            let (c, s) = o.digests();
            assert_eq!(c, content, "{what} must not rename the disk");
            assert_ne!(s, stamp, "{what} must change the stamp");
        }
        // Where the cache lives is no input.
        let mut o = base.clone();
        o.packages[0].root = PathBuf::from("/elsewhere");
        assert_eq!(o.digests(), (content, stamp));
    }

    /// Bytes moved from one field to the next give another digest.
    #[test]
    fn field_boundaries_count() {
        let mut a = Owned::sample();
        let mut b = Owned::sample();
        a.vmlinuz = b"ab".to_vec();
        a.loader = b"c".to_vec();
        b.vmlinuz = b"a".to_vec();
        b.loader = b"bc".to_vec();
        assert_ne!(a.digests(), b.digests());
        let (mut a, mut b) = (Owned::sample(), Owned::sample());
        a.tree.file("x", 0o644, b"yz".to_vec());
        b.tree.file("xy", 0o644, b"z".to_vec());
        assert_ne!(a.digests(), b.digests());
    }

    #[test]
    fn skeleton_is_read_with_contents_and_exec_bit() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::deb::tests::tempdir("skeleton");
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/a"), b"A").unwrap();
        std::fs::write(dir.join("etc/run"), b"#!").unwrap();
        std::fs::set_permissions(dir.join("etc/run"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::os::unix::fs::symlink("a", dir.join("etc/l")).unwrap();
        let s = read_skeleton(&dir).unwrap();
        let paths: Vec<&str> = s.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["etc", "etc/a", "etc/l", "etc/run"]);
        assert_eq!(
            s[1].1,
            Node::File {
                mode: 0o644,
                data: b"A".to_vec()
            }
        );
        assert_eq!(s[2].1, Node::Symlink { target: "a".into() });
        assert!(matches!(s[3].1, Node::File { mode: 0o755, .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn xtask_sources_digest_is_embedded() {
        assert_eq!(XTASK_SOURCES.len(), 64);
        assert!(XTASK_SOURCES.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}

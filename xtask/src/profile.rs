//! Image profiles: `images/<name>.toml` says what goes into one image (kernel and boot loader
//! packages, kernel modules, command line, the services init starts and their baked configs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub image: ImageSection,
    pub packages: PackagesSection,
    pub kernel: KernelSection,
    #[serde(default)]
    pub init: InitSection,
    #[serde(default, rename = "service")]
    pub services: Vec<Service>,
    /// More files for the rootfs: absolute path in the image = file beside the profile (a
    /// relative path below the profile's directory). Installed with mode 0644.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSection {
    /// Must equal the file's stem, so that output paths and the name inside the image agree.
    pub name: String,
    pub description: String,
    pub hostname: String,
    #[serde(default = "default_disk_size")]
    pub disk_size_gib: u64,
    /// How `initramfs.img` is stored: `gzip` (the default) or `none`.
    #[serde(default)]
    pub initramfs_compression: InitramfsCompression,
}

/// The initramfs's compression. `none` suits an initramfs of already compressed content (xz
/// modules, a static binary): gzip saves little there and costs the kernel a decompression
/// pass at every boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitramfsCompression {
    #[default]
    Gzip,
    None,
}

/// Settings for PID 1 beyond its service list.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct InitSection {
    /// Test images only: init is built with its `test-console` cargo feature and obeys
    /// `init-test` commands on the serial console; `cargo xtask ami` refuses such an image.
    #[serde(default)]
    pub test_console: bool,
    /// Bench baseline only: PID 1 is this script (a file beside the profile, with a `#!` line)
    /// installed as `/init`, instead of the Rust init; the image then has no services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
}

fn default_disk_size() -> u64 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackagesSection {
    /// Debian arm64 kernel package (a metapackage such as `linux-image-cloud-arm64` is resolved).
    pub kernel: String,
    /// Debian arm64 package that ships `systemd-bootaa64.efi`.
    pub bootloader: String,
    /// Lock file beside the profile; profiles that must boot the very same kernel share one.
    pub lock: Option<String>,
    /// More Debian arm64 packages (locked as `extra:<name>`); only `extra_files` of them are
    /// installed. No dependency resolution: list the closure.
    #[serde(default)]
    pub extra: Vec<String>,
    /// Absolute paths inside the extra packages to install at the same path. A symlink is
    /// followed (within the extra packages) and its target's bytes installed as a file.
    #[serde(default)]
    pub extra_files: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSection {
    /// Added after the fixed console and panic arguments.
    #[serde(default)]
    pub cmdline: Vec<String>,
    /// Module names or aliases; their dependency closure is loaded by init, in order, at boot.
    pub modules: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    /// Workspace package that builds the binary.
    pub package: String,
    /// Binary name inside the package; defaults to the service name.
    pub binary: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// init's liveness limit for the service (init.toml `watchdog_ms`; absent: off).
    pub watchdog_ms: Option<u64>,
    /// The service's oom_score_adj (init.toml `oom_score_adj`; absent: 0).
    pub oom_score_adj: Option<i32>,
    /// Baked configuration, written to `/etc/<name>.toml` in the image.
    pub config: Option<toml::Table>,
}

impl Service {
    pub fn binary(&self) -> &str {
        self.binary.as_deref().unwrap_or(&self.name)
    }
}

/// A profile with where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub profile: Profile,
    pub path: PathBuf,
    pub text: String,
    pub lock_path: PathBuf,
}

/// The fixed part of every image's kernel command line: both serial consoles (QEMU's PL011 and
/// Graviton's 16550; the last one named becomes /dev/console) and a reboot 10 s after a panic.
pub const BASE_CMDLINE: &[&str] = &["console=ttyAMA0", "console=ttyS0,115200n8", "panic=10"];

impl Loaded {
    /// Loads `images/<name>.toml` (or a path) and validates it against the workspace in `root`.
    pub fn load(root: &Path, name_or_path: &str) -> Result<Self> {
        let path = resolve_path(root, name_or_path);
        let (table, text, lock_dir) = load_table(root, &path, 0)?;
        let profile: Profile = Profile::deserialize(toml::Value::Table(table))
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        validate(&profile, stem, root)
            .with_context(|| format!("invalid profile {}", path.display()))?;
        let lock_path = match &profile.packages.lock {
            Some(l) => lock_dir.0.join(l),
            None => lock_dir.0.join(format!("{}.lock", lock_dir.1)),
        };
        Ok(Self {
            profile,
            path,
            text,
            lock_path,
        })
    }

    pub fn name(&self) -> &str {
        &self.profile.image.name
    }

    pub fn cmdline(&self) -> String {
        let mut parts: Vec<&str> = BASE_CMDLINE.to_vec();
        parts.extend(self.profile.kernel.cmdline.iter().map(String::as_str));
        parts.join(" ")
    }
}

/// Reads a profile as a TOML table, merged over the profile it `extends`. Also returns the
/// texts it came from and where its lock file lives (the first profile in the chain that
/// names packages owns the lock: a profile that only adds to another shares its kernel).
fn load_table(
    root: &Path,
    path: &Path,
    depth: u32,
) -> Result<(toml::Table, String, (PathBuf, String))> {
    if depth > 4 {
        bail!("{}: `extends` chain is too deep (a loop?)", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read profile {} (profiles live in {}; pass --profile NAME)",
            path.display(),
            root.join("images").display()
        )
    })?;
    let own: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let parent = own
        .get("image")
        .and_then(|i| i.get("extends"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let Some(parent) = parent else {
        // A whole profile: parsed typed here so that unknown keys name this file's line.
        parse(&text, path)?;
        return Ok((own, text, (dir, stem)));
    };
    let parent_path = resolve_path(root, &parent);
    let (mut merged, parent_text, parent_lock) = load_table(root, &parent_path, depth + 1)
        .with_context(|| format!("{}: extends = {parent:?}", path.display()))?;
    let own_packages = own.contains_key("packages");
    merge(&mut merged, own);
    if let Some(image) = merged.get_mut("image").and_then(|v| v.as_table_mut()) {
        image.remove("extends");
    }
    let lock = if own_packages {
        (dir, stem)
    } else {
        parent_lock
    };
    Ok((merged, format!("{parent_text}\n{text}"), lock))
}

/// Tables merge key by key; anything else in `over` replaces what `base` had.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn resolve_path(root: &Path, name_or_path: &str) -> PathBuf {
    if name_or_path.ends_with(".toml") || name_or_path.contains('/') {
        PathBuf::from(name_or_path)
    } else {
        root.join("images").join(format!("{name_or_path}.toml"))
    }
}

/// Parses a profile; toml's message names the line, column and key of the problem.
pub fn parse(text: &str, path: &Path) -> Result<Profile> {
    toml::from_str(text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))
}

fn validate(p: &Profile, stem: &str, root: &Path) -> Result<()> {
    if p.image.name != stem {
        bail!(
            "[image] name = {:?} must match the file name {:?}",
            p.image.name,
            format!("{stem}.toml")
        );
    }
    if !(1..=64).contains(&p.image.disk_size_gib) {
        bail!(
            "[image] disk_size_gib = {} must be 1 to 64",
            p.image.disk_size_gib
        );
    }
    let h = &p.image.hostname;
    if h.is_empty()
        || h.len() > 63
        || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        || h.starts_with('-')
    {
        bail!(
            "[image] hostname = {h:?} is not a valid host name (letters, digits, '-'; at most 63)"
        );
    }
    if p.kernel.modules.is_empty() {
        bail!("[kernel] modules is empty: the image needs at least its network driver");
    }
    for arg in &p.kernel.cmdline {
        if arg.is_empty() || arg.chars().any(|c| c.is_whitespace() || c == '"') {
            bail!("[kernel] cmdline entry {arg:?} must be one word without quotes");
        }
    }
    if p.packages.extra.is_empty() != p.packages.extra_files.is_empty() {
        bail!("[packages] extra and extra_files go together: files are taken from those packages");
    }
    for f in &p.packages.extra_files {
        if !f.starts_with('/') || f.split('/').any(|c| c == "..") || f.ends_with('/') {
            bail!("[packages] extra_files entry {f:?} must be an absolute file path without ..");
        }
    }
    for (at, from) in &p.files {
        if !at.starts_with('/') || at.ends_with('/') || at.split('/').any(|c| c == ".." || c == ".")
        {
            bail!("[files] {at:?} must be an absolute file path without . or ..");
        }
        if from.is_empty()
            || from.starts_with('/')
            || from
                .split('/')
                .any(|c| c.is_empty() || c == ".." || c == ".")
        {
            bail!(
                "[files] {at:?} = {from:?} must be a relative path below the profile's directory"
            );
        }
    }
    if let Some(script) = &p.init.script {
        if script.is_empty() || script.contains('/') || script.starts_with('.') {
            bail!("[init] script = {script:?} must name a file beside the profile");
        }
        if !p.services.is_empty() {
            bail!(
                "[init] script replaces the Rust init, which is what starts [[service]]s; remove one"
            );
        }
    }
    let mut names = BTreeSet::new();
    for s in &p.services {
        if s.name.is_empty()
            || !s
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!(
                "[[service]] name = {:?}: use letters, digits, '-' and '_'",
                s.name
            );
        }
        if !names.insert(&s.name) {
            bail!("[[service]] name = {:?} appears twice", s.name);
        }
        if s.package == "xtask" || !root.join(&s.package).join("Cargo.toml").is_file() {
            bail!(
                "[[service]] {:?}: package = {:?} is not an on-image crate of this workspace",
                s.name,
                s.package
            );
        }
        if s.name == "init" {
            bail!("[[service]] name \"init\" is reserved for PID 1");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    const GOOD: &str = r#"
[image]
name = "demo"
description = "demo"
hostname = "nat"
[packages]
kernel = "linux-image-cloud-arm64"
bootloader = "systemd-boot-efi"
[kernel]
cmdline = ["quiet"]
modules = ["virtio_net"]
[[service]]
name = "nat-init"
package = "nat-init"
[service.config]
health_interval = 5
"#;

    #[test]
    fn good_profile_validates() {
        let p = parse(GOOD, Path::new("demo.toml")).unwrap();
        validate(&p, "demo", &root()).unwrap();
        assert_eq!(p.services[0].binary(), "nat-init");
        assert_eq!(p.image.disk_size_gib, 1);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let bad = GOOD.replace("hostname = \"nat\"", "hostname = \"nat\"\nhostnmae = \"x\"");
        let e = parse(&bad, Path::new("demo.toml")).unwrap_err().to_string();
        assert!(e.contains("hostnmae"), "{e}");
        assert!(e.contains("line 6"), "{e}");
        assert!(e.contains("demo.toml"), "{e}");
    }

    #[test]
    fn semantic_errors_are_named() {
        let cases = [
            (
                GOOD.replace("name = \"demo\"", "name = \"other\""),
                "must match the file name",
            ),
            (
                GOOD.replace("package = \"nat-init\"", "package = \"nope\""),
                "not an on-image crate",
            ),
            (
                GOOD.replace("package = \"nat-init\"", "package = \"xtask\""),
                "not an on-image crate",
            ),
            (
                GOOD.replace("hostname = \"nat\"", "hostname = \"n a t\""),
                "hostname",
            ),
            (
                GOOD.replace("modules = [\"virtio_net\"]", "modules = []"),
                "modules is empty",
            ),
            (
                GOOD.replace("cmdline = [\"quiet\"]", "cmdline = [\"a b\"]"),
                "one word",
            ),
            (
                GOOD.replace("[kernel]", "extra = [\"busybox-static\"]\n[kernel]"),
                "go together",
            ),
            (
                GOOD.replace(
                    "[kernel]",
                    "extra = [\"x\"]\nextra_files = [\"bin/x\"]\n[kernel]",
                ),
                "absolute file path",
            ),
            (
                GOOD.replace("[[service]]", "[init]\nscript = \"x.sh\"\n[[service]]"),
                "remove one",
            ),
            (
                GOOD.replace("[[service]]", "[init]\nscript = \"../x.sh\"\n[[service]]"),
                "beside the profile",
            ),
            (
                format!("{GOOD}\n[files]\n\"etc/ca.pem\" = \"test-ca/ca.pem\"\n"),
                "absolute file path",
            ),
            (
                format!("{GOOD}\n[files]\n\"/etc/ca.pem\" = \"../secrets/ca.pem\"\n"),
                "below the profile's directory",
            ),
            (
                format!("{GOOD}\n[files]\n\"/etc/ca.pem\" = \"/etc/ssl/ca.pem\"\n"),
                "below the profile's directory",
            ),
        ];
        for (text, want) in cases {
            let p = parse(&text, Path::new("demo.toml")).unwrap();
            let e = validate(&p, "demo", &root()).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
        }
    }

    #[test]
    fn extends_merges_tables_and_shares_the_lock() {
        let dir = std::env::temp_dir().join(format!("xtask-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("demo.toml"), GOOD).unwrap();
        let child = "[image]\nextends = \"demo\"\nname = \"kid\"\ndescription = \"kid\"\n[init]\ntest_console = true\n";
        std::fs::write(dir.join("kid.toml"), child).unwrap();
        // `extends` names a profile in images/, so point at this dir through a path.
        let child_path = dir.join("kid.toml");
        let text = std::fs::read_to_string(&child_path).unwrap().replace(
            "\"demo\"",
            &format!("{:?}", dir.join("demo.toml").to_str().unwrap()),
        );
        std::fs::write(&child_path, text).unwrap();
        let l = Loaded::load(&root(), child_path.to_str().unwrap()).unwrap();
        assert_eq!(l.profile.image.name, "kid");
        assert_eq!(l.profile.image.hostname, "nat");
        assert!(l.profile.init.test_console);
        assert_eq!(l.profile.services.len(), 1);
        assert_eq!(l.lock_path, dir.join("demo.lock"));
        std::fs::write(
            &child_path,
            "[image]\nextends = \"/nonexistent/x.toml\"\nname = \"kid\"\n",
        )
        .unwrap();
        let e = format!(
            "{:#}",
            Loaded::load(&root(), child_path.to_str().unwrap()).unwrap_err()
        );
        assert!(e.contains("extends") && e.contains("x.toml"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shipped_profiles_load() {
        for entry in std::fs::read_dir(root().join("images")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let l = Loaded::load(&root(), path.to_str().unwrap()).unwrap();
                assert!(
                    l.cmdline()
                        .starts_with("console=ttyAMA0 console=ttyS0,115200n8 panic=10")
                );
                assert!(l.lock_path.exists() || l.profile.packages.lock.is_none());
            }
        }
    }
}

//! `cargo xtask image`: from a profile to the artifacts under `target/images/<profile>/`.
//! Stages: binaries, packages, modules, rootfs, initramfs, disk, formats, manifest. The output
//! directory is built beside its final name and renamed into place, so a failed build never
//! leaves half-written artifacts under that name.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;
use sha2::Digest;

use crate::buildinfo::BuildFacts;
use crate::digest::{sha256_file, sha256_hex};
use crate::profile::Loaded;
use crate::rootfs::Tree;
use crate::{binaries, disk, formats, initramfs, modules, packages};

#[derive(Debug, Clone, Default)]
pub struct Args {
    pub profile: String,
    pub out: Option<PathBuf>,
    pub kernel_debs: Vec<PathBuf>,
    pub locked: bool,
    pub update: bool,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub dir: PathBuf,
    pub manifest: serde_json::Value,
    pub up_to_date: bool,
}

/// Every file the image build writes, in the order SHA256SUMS lists them.
pub const ARTIFACTS: &[&str] = &[
    "disk.raw",
    "disk.vhd",
    "disk.vmdk",
    "initramfs.cpio.gz",
    "rootfs.tar",
    "manifest.json",
];

const ESP_KERNEL: &str = "vmlinuz";
const ESP_INITRD: &str = "initrd";

struct Stages {
    start: Instant,
    last: Instant,
    times: Vec<(&'static str, f64)>,
}

impl Stages {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            start: now,
            last: now,
            times: Vec::new(),
        }
    }
    fn done(&mut self, name: &'static str) {
        let now = Instant::now();
        let secs = (now - self.last).as_secs_f64();
        self.times.push((name, secs));
        say(&format!("{name}: {secs:.2} s"));
        self.last = now;
    }
}

pub use crate::report::say;

pub fn default_out(root: &Path, profile: &str) -> PathBuf {
    crate::target_dir(root).join("images").join(profile)
}

pub fn run(root: &Path, args: &Args) -> Result<Built> {
    let mut st = Stages::new();
    let loaded = Loaded::load(root, &args.profile)?;
    let profile = &loaded.profile;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(root, loaded.name()));
    let (facts, notes) = BuildFacts::gather(root);
    for n in notes {
        say(&n);
    }
    say(&format!(
        "building image {} ({} {}) into {}",
        loaded.name(),
        facts.version,
        facts.commit_short(),
        out.display()
    ));

    // 1. binaries
    // A profile whose PID 1 is a script (the bench baseline) has no Rust binaries at all.
    let mut init_bin = None;
    let mut service_bins = Vec::new();
    if profile.init.script.is_none() {
        binaries::ensure_target(&mut |m| say(m))?;
        let mut pkgs: Vec<&str> = vec!["init"];
        for s in &profile.services {
            if !pkgs.contains(&s.package.as_str()) {
                pkgs.push(&s.package);
            }
        }
        say(&format!(
            "compiling {} for {}",
            pkgs.join(", "),
            binaries::TARGET
        ));
        let bin_dir = binaries::build(root, &pkgs, args.locked)?;
        let read_bin = |name: &str| -> Result<Vec<u8>> {
            let p = bin_dir.join(name);
            std::fs::read(&p).with_context(|| format!("reading built binary {}", p.display()))
        };
        init_bin = Some(read_bin("init")?);
        for s in &profile.services {
            service_bins.push((s.clone(), read_bin(s.binary())?));
        }
    }
    st.done("binaries");

    // 2. packages
    let cache_dir = crate::target_dir(root).join("cache");
    let mut requests = vec![
        packages::Request {
            role: "kernel".into(),
            name: profile.packages.kernel.clone(),
        },
        packages::Request {
            role: "bootloader".into(),
            name: profile.packages.bootloader.clone(),
        },
    ];
    for name in &profile.packages.extra {
        requests.push(packages::Request {
            role: format!("extra:{name}"),
            name: name.clone(),
        });
    }
    let opts = packages::Options {
        lock_path: loaded.lock_path.clone(),
        cache_dir: cache_dir.clone(),
        locked: args.locked,
        local_debs: args.kernel_debs.clone(),
        update: args.update,
    };
    let resolved = packages::resolve(&requests, &opts, &mut |m| say(m))?;
    let by_role = |role: &str| {
        resolved
            .iter()
            .find(|r| r.role == role)
            .with_context(|| format!("package resolution returned no {role} package"))
    };
    for r in &resolved {
        say(&format!(
            "{}: {} {} ({})",
            r.role,
            r.name,
            r.version,
            r.deb.display()
        ));
    }
    let kernel_pkg = by_role("kernel")?;
    let loader_pkg = by_role("bootloader")?;
    let (kernel_release, vmlinuz_path) = find_kernel(&kernel_pkg.root)?;
    let loader_path = loader_pkg
        .root
        .join("usr/lib/systemd/boot/efi/systemd-bootaa64.efi");
    if !loader_path.is_file() {
        bail!(
            "package {} {} has no usr/lib/systemd/boot/efi/systemd-bootaa64.efi: is [packages] bootloader an arm64 systemd-boot-efi?",
            loader_pkg.name,
            loader_pkg.version
        );
    }
    st.done("packages");

    // 3. modules
    let mods = modules::resolve(
        &kernel_pkg.root.join("lib/modules").join(&kernel_release),
        &profile.kernel.modules,
    )
    .with_context(|| format!("resolving [kernel] modules of {}", loaded.path.display()))?;
    st.done("modules");

    // 4. rootfs
    let mut tree = Tree::new();
    let services_facts: Vec<_> = profile
        .services
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "path": format!("/sbin/{}", s.binary()),
                "args": s.args,
                "env": s.env,
            })
        })
        .collect();
    let template_facts = json!({
        "profile": loaded.name(),
        "description": profile.image.description,
        "hostname": profile.image.hostname,
        "version": facts.version,
        "commit": facts.commit,
        "commit_short": facts.commit_short(),
        "kernel_release": kernel_release,
        "services": services_facts,
        "init": profile.init,
    });
    tree.add_skeleton(&root.join("rootfs"), &template_facts)?;
    match (init_bin, &profile.init.script) {
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
    let extras: Vec<&packages::Resolved> = resolved
        .iter()
        .filter(|r| r.role.starts_with("extra:"))
        .collect();
    for f in &profile.packages.extra_files {
        let data =
            extra_file(&extras, f).with_context(|| format!("[packages] extra_files {f:?}"))?;
        tree.file(f, 0o755, data);
    }
    for (s, bin) in service_bins {
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
    st.done("rootfs");

    // Everything below is a pure function of these inputs: skip it when nothing changed.
    let vmlinuz = std::fs::read(&vmlinuz_path)
        .with_context(|| format!("reading {}", vmlinuz_path.display()))?;
    let loader = std::fs::read(&loader_path)
        .with_context(|| format!("reading {}", loader_path.display()))?;
    let cmdline = loaded.cmdline();
    let input_digest = input_digest(&loaded, &facts, &tree, &vmlinuz, &loader, &cmdline)?;
    // The stamp also covers the builder itself: a changed xtask may write other bytes from the
    // same inputs. (The exe's hash is not reproducible across checkouts, so it stays out of the
    // seed that names the disk.)
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let stamp_text = format!("{input_digest} {}", sha256_file(&exe)?);
    let stamp = stamp_path(&out);
    if is_up_to_date(&out, &stamp, &stamp_text) {
        let manifest = read_manifest(&out)?;
        say(&format!("{} is up to date", out.display()));
        summary(&out, &st, true)?;
        return Ok(Built {
            dir: out,
            manifest,
            up_to_date: true,
        });
    }

    let work = out.with_file_name(format!(
        ".{}.partial-{}",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("image"),
        std::process::id()
    ));
    let _cleanup = RemoveOnDrop(work.clone());
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let epoch = facts.source_date_epoch;

    // 5. rootfs.tar and initramfs
    let f = create(&work.join("rootfs.tar"))?;
    tree.write_tar(std::io::BufWriter::new(f), epoch)?;
    let mut initrd = Vec::new();
    initramfs::write(&tree, epoch, &mut initrd)?;
    std::fs::write(work.join("initramfs.cpio.gz"), &initrd).context("writing initramfs.cpio.gz")?;
    st.done("initramfs");

    // 6. disk
    let name = loaded.name();
    let seed = seed(&input_digest);
    let esp = vec![
        disk::EspFile {
            path: "EFI/BOOT/BOOTAA64.EFI".into(),
            data: loader,
        },
        disk::EspFile {
            path: "loader/loader.conf".into(),
            data: loader_conf(name).into_bytes(),
        },
        disk::EspFile {
            path: format!("loader/entries/{name}.conf"),
            data: boot_entry(&profile.image.description, &facts, &cmdline).into_bytes(),
        },
        disk::EspFile {
            path: ESP_KERNEL.into(),
            data: vmlinuz,
        },
        disk::EspFile {
            path: ESP_INITRD.into(),
            data: initrd,
        },
    ];
    say(&format!(
        "writing a {} GiB GPT disk with an EFI system partition",
        profile.image.disk_size_gib
    ));
    let report = disk::write_disk(
        &disk::DiskLayout {
            size_bytes: profile.image.disk_size_gib << 30,
            seed,
            volume_label: "NATBOOT".into(),
        },
        &esp,
        &work.join("disk.raw"),
    )?;
    st.done("disk");

    // 7. formats, while another thread hashes disk.raw (a fixed VHD is disk.raw plus a
    // footer, so its hash continues from the raw's state instead of reading 1 GiB again).
    let raw = work.join("disk.raw");
    let hasher = {
        let raw = raw.clone();
        std::thread::spawn(move || crate::digest::sha256_state(&raw))
    };
    formats::write_vhd_fixed(&raw, &work.join("disk.vhd"), epoch, seed)?;
    let mut last_pct = 0;
    formats::write_vmdk_stream(&raw, &work.join("disk.vmdk"), &mut |done, total| {
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        if pct >= last_pct + 25 {
            last_pct = pct;
            say(&format!("disk.vmdk: {pct}%"));
        }
    })?;
    let raw_state = hasher
        .join()
        .map_err(|_| anyhow::anyhow!("hashing disk.raw panicked"))??;
    st.done("formats");

    // 8. manifest and sums
    let mut artifacts = Vec::new();
    for a in ARTIFACTS.iter().filter(|a| **a != "manifest.json") {
        let p = work.join(a);
        let size = std::fs::metadata(&p)
            .with_context(|| format!("stat {}", p.display()))?
            .len();
        let sha = match *a {
            "disk.raw" => crate::digest::hex(&raw_state.clone().finalize()),
            "disk.vhd" => {
                crate::digest::sha256_continue(raw_state.clone(), &p, size_of_raw(&raw)?)?
            }
            _ => sha256_file(&p)?,
        };
        artifacts.push(json!({"file": a, "size": size, "sha256": sha}));
    }
    let manifest = json!({
        "profile": {
            "name": name,
            "path": format!("images/{}", loaded.path.file_name().and_then(|n| n.to_str()).unwrap_or_default()),
            "sha256": sha256_hex(loaded.text.as_bytes()),
            "description": profile.image.description,
        },
        "version": facts.version,
        "commit": facts.commit,
        "source_date_epoch": epoch,
        "inputs": resolved.iter().map(|r| json!({
            "role": r.role, "package": r.name, "version": r.version, "sha256": r.sha256,
        })).collect::<Vec<_>>(),
        "binaries": tree_binaries(&tree),
        "kernel_release": mods.kernel_release,
        "cmdline": cmdline,
        "modules": mods.ordered.iter().map(|m| json!({"name": m.name, "path": m.rel_path, "depends": m.depends})).collect::<Vec<_>>(),
        "builtin_modules": mods.builtin,
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
    st.done("manifest");

    replace_dir(&work, &out)?;
    std::fs::write(&stamp, &stamp_text).with_context(|| format!("writing {}", stamp.display()))?;
    summary(&out, &st, false)?;
    Ok(Built {
        dir: out,
        manifest,
        up_to_date: false,
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

fn size_of_raw(raw: &Path) -> Result<u64> {
    Ok(std::fs::metadata(raw)
        .with_context(|| format!("stat {}", raw.display()))?
        .len())
}

fn find_kernel(root: &Path) -> Result<(String, PathBuf)> {
    let release = modules::kernel_release(root)?;
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("the kernel package has no boot/vmlinuz-{release}");
    }
    Ok((release, vmlinuz))
}

fn loader_conf(name: &str) -> String {
    // No menu, no editing the command line from the console, straight to the one entry.
    format!("timeout 0\ndefault {name}.conf\neditor no\nauto-entries no\nauto-firmware no\n")
}

fn boot_entry(description: &str, facts: &BuildFacts, cmdline: &str) -> String {
    format!(
        "title {description}\nversion {} ({})\nlinux /{ESP_KERNEL}\ninitrd /{ESP_INITRD}\noptions {cmdline}\n",
        facts.version,
        facts.commit_short()
    )
}

fn tree_binaries(tree: &Tree) -> Vec<serde_json::Value> {
    tree.iter()
        .filter(|(p, _)| p.starts_with("sbin/"))
        .filter_map(|(p, n)| match n {
            crate::rootfs::Node::File { data, .. } => Some(
                json!({"path": format!("/{p}"), "size": data.len(), "sha256": sha256_hex(data)}),
            ),
            _ => None,
        })
        .collect()
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

fn is_up_to_date(out: &Path, stamp: &Path, digest: &str) -> bool {
    std::fs::read_to_string(stamp).is_ok_and(|s| s == digest)
        && ARTIFACTS
            .iter()
            .chain(["SHA256SUMS"].iter())
            .all(|a| out.join(a).is_file())
}

fn read_manifest(out: &Path) -> Result<serde_json::Value> {
    let p = out.join("manifest.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

fn create(path: &Path) -> Result<std::fs::File> {
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

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn summary(out: &Path, st: &Stages, up_to_date: bool) -> Result<()> {
    let total = st.start.elapsed().as_secs_f64();
    say(&format!(
        "{} in {:.2} s{}",
        if up_to_date {
            "nothing to do"
        } else {
            "image built"
        },
        total,
        if up_to_date { "" } else { ":" }
    ));
    for a in ARTIFACTS.iter().chain(["SHA256SUMS"].iter()) {
        let p = out.join(a);
        let meta = std::fs::metadata(&p).with_context(|| format!("stat {}", p.display()))?;
        let allocated = {
            use std::os::unix::fs::MetadataExt;
            meta.blocks() * 512
        };
        say(&format!(
            "  {:<60} {:>10} bytes ({} allocated)",
            p.display(),
            meta.len(),
            human(allocated)
        ));
    }
    Ok(())
}

pub fn human(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_entry_names_kernel_initrd_and_cmdline() {
        let facts = BuildFacts {
            version: "0.1.0".into(),
            commit: "abc".into(),
            source_date_epoch: 1,
        };
        let e = boot_entry("NAT", &facts, "console=ttyS0 panic=10");
        assert!(e.contains("linux /vmlinuz\n"));
        assert!(e.contains("initrd /initrd\n"));
        assert!(e.contains("options console=ttyS0 panic=10\n"));
        assert!(loader_conf("nat-t4g").starts_with("timeout 0\n"));
        assert!(loader_conf("nat-t4g").contains("editor no"));
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

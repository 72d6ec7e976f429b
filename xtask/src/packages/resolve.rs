//! From the profile's requests to unpacked packages: the lock file decides what to fetch, apt
//! fetches it (unless the cache or a local .deb has it), and the lock is updated.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::apt::{AptPackage, AptSession, Tools};
use super::cache::Cache;
use super::local::{local_matches, read_local_debs, take_local, unmatched_local};
use super::lock::{
    Lock, LockEntry, LockedAction, decide_locked, describe_change, parse_lock, render_lock,
    write_atomic,
};
use super::{Options, Request, Resolved};
use crate::deb;
use crate::digest::sha256_file;

/// Follows a kernel metapackage to the real image package: the first `linux-image-*`
/// dependency other than itself. Other packages are taken as they are.
pub fn metapackage_target(name: &str, depends_field: &str) -> Option<String> {
    if !name.starts_with("linux-image-") {
        return None;
    }
    depends_field
        .split(',')
        .flat_map(|alternatives| alternatives.split('|'))
        .map(|dep| dep.split(['(', ':']).next().unwrap_or("").trim())
        .find(|dep| dep.starts_with("linux-image-") && *dep != name)
        .map(str::to_string)
}

/// Resolves, fetches (if needed) and unpacks the requested packages, updating the lock file
/// unless `opts.locked`.
pub fn resolve(
    requests: &[Request],
    opts: &Options,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Resolved>> {
    resolve_with(requests, opts, &Tools::host(), log)
}

fn resolve_with(
    requests: &[Request],
    opts: &Options,
    tools: &Tools,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Resolved>> {
    if opts.locked && opts.update {
        bail!("--locked and --update contradict each other");
    }
    let old_lock = match fs::read_to_string(&opts.lock_path) {
        Ok(text) => Some(
            parse_lock(&text).with_context(|| format!("parsing {}", opts.lock_path.display()))?,
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", opts.lock_path.display())),
    };
    if opts.locked && old_lock.is_none() {
        bail!(
            "--locked, but there is no lock file {}; run `{}` to create it, and commit it",
            opts.lock_path.display(),
            opts.update_command
        );
    }
    let old_lock = old_lock.unwrap_or_default();
    let cache = Cache::new(&opts.cache_dir)?;
    let mut locals = read_local_debs(&opts.local_debs)?;
    for local in &locals {
        let used = requests.iter().any(|r| {
            local_matches(
                local,
                r,
                old_lock.get(&r.role).filter(|e| e.requested == r.name),
            )
        });
        if !used {
            return Err(unmatched_local(local, requests));
        }
    }
    let cache_dir = std::path::absolute(&opts.cache_dir)
        .with_context(|| format!("resolving {}", opts.cache_dir.display()))?;
    let mut apt = AptSession {
        tools,
        cache_dir,
        ready: false,
        _lock: None,
    };

    let mut new_lock = Lock::new();
    let mut out = Vec::new();
    for req in requests {
        let old = old_lock.get(&req.role);
        if opts.locked {
            match old {
                None => bail!(
                    "--locked, but {} has no entry for {} ({}); run `{}` to add it",
                    opts.lock_path.display(),
                    req.role,
                    req.name,
                    opts.update_command
                ),
                Some(e) if e.requested != req.name => bail!(
                    "--locked, but the profile asks for {} as {} while {} has {}; run `{}` to update it",
                    req.name,
                    req.role,
                    opts.lock_path.display(),
                    e.requested,
                    opts.update_command
                ),
                Some(_) => {}
            }
        }
        // A lock entry for another requested name does not apply.
        let old = old.filter(|e| e.requested == req.name);

        let (entry, deb_path) = if let Some(local) = take_local(&mut locals, req, old)? {
            let (entry, path) = cache.add_local(&local, &req.name)?;
            log(&format!(
                "{}: using {} {} from {}",
                req.role,
                entry.package,
                entry.version,
                local.path.display()
            ));
            if opts.locked && old.is_some_and(|o| o.sha256 != entry.sha256) {
                bail!(
                    "--locked, but {} ({} {}) differs from the lock file's {} {}; run `{}` to record it",
                    local.path.display(),
                    entry.package,
                    entry.version,
                    old.map_or("", |o| o.package.as_str()),
                    old.map_or("", |o| o.version.as_str()),
                    opts.update_command
                );
            }
            (entry, path)
        } else if let Some(old) = old.filter(|_| !opts.update) {
            if cache.has(&old.sha256) {
                (old.clone(), cache.deb_path(&old.sha256))
            } else {
                let available = apt.available_versions(&old.package, log)?;
                match decide_locked(
                    &req.role,
                    old,
                    &available,
                    opts.locked,
                    &opts.update_command,
                )? {
                    LockedAction::Download => {
                        let pkg = apt.show(&old.package, &old.version, log)?;
                        let (entry, path) = fetch(&mut apt, &cache, req, &pkg, log)?;
                        if entry.sha256 != old.sha256 {
                            bail!(
                                "{}: downloaded {} {} has sha256 {}, but the lock file says {}. \
                                 The archive changed a published version; check it, then delete the {} entry \
                                 from {} to accept the new file",
                                req.role,
                                entry.package,
                                entry.version,
                                entry.sha256,
                                old.sha256,
                                req.role,
                                opts.lock_path.display()
                            );
                        }
                        (entry, path)
                    }
                    LockedAction::Reresolve => {
                        log(&format!(
                            "{}: locked {} {} is no longer available; resolving {} again",
                            req.role, old.package, old.version, req.name
                        ));
                        resolve_fresh(&mut apt, &cache, req, log)?
                    }
                }
            }
        } else {
            resolve_fresh(&mut apt, &cache, req, log)?
        };

        if let Some(line) = describe_change(&req.role, old, &entry) {
            log(&line);
        }
        let root = cache.unpacked(&entry.sha256, &deb_path, log)?;
        out.push(Resolved {
            role: req.role.clone(),
            name: entry.package.clone(),
            version: entry.version.clone(),
            sha256: entry.sha256.clone(),
            deb: deb_path,
            root,
        });
        new_lock.insert(req.role.clone(), entry);
    }
    if let Some(unused) = locals.first() {
        return Err(unmatched_local(unused, requests));
    }

    if opts.locked {
        // Every role was checked against the lock above; what is left are extra roles.
        if new_lock != old_lock {
            bail!(
                "--locked, but {} has entries the profile does not request; run `{}` to drop them",
                opts.lock_path.display(),
                opts.update_command
            );
        }
        return Ok(out);
    }
    let text = render_lock(&new_lock)?;
    if fs::read_to_string(&opts.lock_path).ok().as_deref() != Some(text.as_str()) {
        write_atomic(&opts.lock_path, text.as_bytes())?;
        log(&format!("wrote {}", opts.lock_path.display()));
    }
    Ok(out)
}

/// Resolves a request to the current candidate of its real package and fetches it.
fn resolve_fresh(
    apt: &mut AptSession,
    cache: &Cache,
    req: &Request,
    log: &mut dyn FnMut(&str),
) -> Result<(LockEntry, PathBuf)> {
    let mut name = req.name.clone();
    let mut pkg = apt.show_candidate(&name, log)?;
    for _ in 0..4 {
        match metapackage_target(&name, &pkg.depends) {
            Some(target) => {
                log(&format!("{}: {name} {} -> {target}", req.role, pkg.version));
                name = target;
                pkg = apt.show_candidate(&name, log)?;
            }
            None => break,
        }
    }
    fetch(apt, cache, req, &pkg, log)
}

/// Fetches `pkg` unless the cache holds its sha256 already.
fn fetch(
    apt: &mut AptSession,
    cache: &Cache,
    req: &Request,
    pkg: &AptPackage,
    log: &mut dyn FnMut(&str),
) -> Result<(LockEntry, PathBuf)> {
    let file = pkg
        .filename
        .rsplit('/')
        .next()
        .unwrap_or(&pkg.filename)
        .to_string();
    let entry = |sha256: String| LockEntry {
        requested: req.name.clone(),
        package: pkg.package.clone(),
        version: pkg.version.clone(),
        sha256,
        file: file.clone(),
    };
    if let Some(sha) = &pkg.sha256
        && cache.has(sha)
    {
        return Ok((entry(sha.clone()), cache.deb_path(sha)));
    }
    let partial = cache.partial_dir()?;
    let spec = format!("{}={}", pkg.package, pkg.version);
    log(&format!(
        "{}: downloading {spec} ({})",
        req.role,
        megabytes(pkg.size)
    ));
    let start = Instant::now();
    apt.run(&apt.tools.apt_get, &["download", &spec], Some(&partial))?;
    let downloaded = single_deb(&partial)?;
    let size = fs::metadata(&downloaded).map(|m| m.len()).unwrap_or(0);
    log(&format!(
        "{}: downloaded {} ({}) in {:.1} s",
        req.role,
        file,
        megabytes(Some(size)),
        start.elapsed().as_secs_f64()
    ));
    let control = deb::control(&downloaded)?;
    if control.package != pkg.package || control.version != pkg.version {
        bail!(
            "{}: apt delivered {} {} when asked for {spec}",
            downloaded.display(),
            control.package,
            control.version
        );
    }
    let sha = sha256_file(&downloaded)?;
    if let Some(expected) = &pkg.sha256
        && *expected != sha
    {
        bail!(
            "{}: sha256 {sha} differs from apt's index ({expected})",
            downloaded.display()
        );
    }
    let path = cache.store(&downloaded, &sha)?;
    let _ = fs::remove_dir_all(&partial);
    Ok((entry(sha), path))
}

fn megabytes(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) => format!("{:.1} MB", b as f64 / 1e6),
        None => "size unknown".to_string(),
    }
}

fn single_deb(dir: &Path) -> Result<PathBuf> {
    let mut debs = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "deb") {
            debs.push(p);
        }
    }
    match debs.len() {
        1 => Ok(debs.remove(0)),
        n => bail!(
            "expected one .deb from apt-get download in {}, found {n}",
            dir.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::apt::tests::{FakeApt, no_apt_tools};
    use super::*;
    use crate::deb::tests::{tempdir, write_deb};

    const UPDATE: &str = "cargo xtask image --profile test --update";

    fn requests() -> Vec<Request> {
        vec![
            Request {
                role: "kernel".into(),
                name: "linux-image-cloud-arm64".into(),
            },
            Request {
                role: "bootloader".into(),
                name: "systemd-boot-efi".into(),
            },
        ]
    }

    #[test]
    fn kernel_metapackage_follows_image_dependency() {
        let deps = "linux-image-6.1.0-56-cloud-arm64 (= 6.1.192-2), linux-base";
        assert_eq!(
            metapackage_target("linux-image-cloud-arm64", deps).as_deref(),
            Some("linux-image-6.1.0-56-cloud-arm64")
        );
        let real =
            "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool";
        assert_eq!(
            metapackage_target("linux-image-6.1.0-56-cloud-arm64", real),
            None
        );
        assert_eq!(metapackage_target("systemd-boot-efi", deps), None);
    }

    /// Local .debs replace apt; a second build with the lock and cache runs no apt (the
    /// programs do not exist here); without the cache it needs apt and says what to do.
    #[test]
    fn local_debs_lock_and_warm_cache_without_apt() {
        let dir = tempdir("pkg-local");
        let kernel = dir.join("linux-image-6.1.0-9-cloud-arm64_6.1.1-1_arm64.deb");
        let boot = dir.join("sdboot.deb");
        write_deb(
            &kernel,
            "linux-image-6.1.0-9-cloud-arm64",
            "6.1.1-1",
            "xz",
            &[
                ("./", b"", None),
                ("./boot/", b"", None),
                ("./boot/vmlinuz-6.1.0-9-cloud-arm64", b"Image", None),
            ],
        );
        write_deb(
            &boot,
            "systemd-boot-efi",
            "252-1",
            "zst",
            &[
                ("./", b"", None),
                ("./usr/", b"", None),
                ("./usr/lib/", b"", None),
                ("./usr/lib/systemd-bootaa64.efi", b"MZ", None),
            ],
        );
        let mut opts = Options {
            lock_path: dir.join("images/test.lock"),
            cache_dir: dir.join("cache"),
            locked: false,
            local_debs: vec![kernel.clone(), boot.clone()],
            update: false,
            update_command: UPDATE.into(),
        };
        let mut lines = Vec::new();
        let got = resolve_with(&requests(), &opts, &no_apt_tools(), &mut |l| {
            lines.push(l.to_string())
        })
        .unwrap();
        assert_eq!(got[0].name, "linux-image-6.1.0-9-cloud-arm64");
        assert_eq!(got[0].version, "6.1.1-1");
        assert_eq!(got[0].sha256, sha256_file(&kernel).unwrap());
        assert_eq!(
            got[0].deb,
            opts.cache_dir.join(format!("debs/{}.deb", got[0].sha256))
        );
        assert_eq!(
            fs::read(got[0].root.join("boot/vmlinuz-6.1.0-9-cloud-arm64")).unwrap(),
            b"Image"
        );
        assert_eq!(
            fs::read(got[1].root.join("usr/lib/systemd-bootaa64.efi")).unwrap(),
            b"MZ"
        );
        let lock = parse_lock(&fs::read_to_string(&opts.lock_path).unwrap()).unwrap();
        assert_eq!(lock["kernel"].requested, "linux-image-cloud-arm64");
        assert_eq!(
            lock["kernel"].file,
            "linux-image-6.1.0-9-cloud-arm64_6.1.1-1_arm64.deb"
        );
        assert_eq!(lock["bootloader"].package, "systemd-boot-efi");
        assert!(lines.iter().any(|l| l.contains("wrote")), "{lines:?}");

        // Warm: lock + cache, no local debs, no apt.
        opts.local_debs.clear();
        opts.locked = true;
        let lock_before = fs::read(&opts.lock_path).unwrap();
        let warm = resolve_with(&requests(), &opts, &no_apt_tools(), &mut |_| {}).unwrap();
        assert_eq!(warm[0].root, got[0].root);
        let err = format!(
            "{:#}",
            resolve_with(&requests()[..1], &opts, &no_apt_tools(), &mut |_| {}).unwrap_err()
        );
        assert!(
            err.contains("entries the profile does not request"),
            "{err}"
        );
        assert_eq!(warm[1].sha256, got[1].sha256);
        assert_eq!(fs::read(&opts.lock_path).unwrap(), lock_before);

        // An interrupted unpack is redone; a corrupted cached .deb is caught.
        fs::remove_dir_all(&got[0].root).unwrap();
        fs::create_dir_all(
            opts.cache_dir
                .join(format!("unpacked/{}.partial-1", got[0].sha256)),
        )
        .unwrap();
        let again = resolve_with(&requests(), &opts, &no_apt_tools(), &mut |_| {}).unwrap();
        assert!(
            again[0]
                .root
                .join("boot/vmlinuz-6.1.0-9-cloud-arm64")
                .is_file()
        );
        fs::remove_dir_all(&got[0].root).unwrap();
        fs::write(&got[0].deb, b"garbage").unwrap();
        let err = format!(
            "{:#}",
            resolve_with(&requests(), &opts, &no_apt_tools(), &mut |_| {}).unwrap_err()
        );
        assert!(
            err.contains("expected") && err.contains(&got[0].sha256),
            "{err}"
        );

        // Cold cache without apt: a clear error naming the way out.
        fs::remove_dir_all(&opts.cache_dir).unwrap();
        let err = format!(
            "{:#}",
            resolve_with(&requests(), &opts, &no_apt_tools(), &mut |_| {}).unwrap_err()
        );
        assert!(
            err.contains("not found") && err.contains("--kernel-deb FILE"),
            "{err}"
        );

        // --locked refuses a different local kernel.
        let other = dir.join("other.deb");
        write_deb(
            &other,
            "linux-image-6.1.0-10-cloud-arm64",
            "6.1.2-1",
            "gz",
            &[("./", b"", None)],
        );
        opts.local_debs = vec![other.clone(), boot.clone()];
        let err = format!(
            "{:#}",
            resolve_with(&requests(), &opts, &no_apt_tools(), &mut |_| {}).unwrap_err()
        );
        assert!(err.contains("--locked") && err.contains("6.1.2-1"), "{err}");
        // Without --locked it is recorded.
        opts.locked = false;
        let mut lines = Vec::new();
        resolve_with(&requests(), &opts, &no_apt_tools(), &mut |l| {
            lines.push(l.to_string())
        })
        .unwrap();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("6.1.1-1 -> linux-image-6.1.0-10-cloud-arm64 6.1.2-1")),
            "{lines:?}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn locked_without_lock_file_and_unmatched_local_deb_are_errors() {
        let dir = tempdir("pkg-errors");
        let mut opts = Options {
            lock_path: dir.join("x.lock"),
            cache_dir: dir.join("cache"),
            locked: true,
            local_debs: vec![],
            update: false,
            update_command: UPDATE.into(),
        };
        let err = format!(
            "{:#}",
            resolve_with(&requests(), &opts, &no_apt_tools(), &mut |_| {}).unwrap_err()
        );
        assert!(err.contains("no lock file"), "{err}");
        assert!(
            err.contains(&format!("run `{UPDATE}` to create it")),
            "{err}"
        );
        opts.locked = false;
        let stray = dir.join("stray.deb");
        write_deb(&stray, "busybox", "1", "", &[("./", b"", None)]);
        opts.local_debs = vec![stray];
        let err = format!(
            "{:#}",
            resolve_with(&requests(), &opts, &no_apt_tools(), &mut |_| {}).unwrap_err()
        );
        assert!(err.contains("stray.deb (busybox) matches none"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    fn workspace_target() -> PathBuf {
        match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        }
    }

    /// Against the real Debian arm64 archive through the host's apt. Shares `target/cache` with
    /// the image build, so the ~22 MB download happens once per cache.
    #[test]
    fn real_debian_arm64_kernel_boot_loader_and_modules() {
        let dir = tempdir("pkg-real");
        let mut opts = Options {
            lock_path: dir.join("real.lock"),
            cache_dir: workspace_target().join("cache"),
            locked: false,
            local_debs: vec![],
            update: false,
            update_command: UPDATE.into(),
        };
        let start = Instant::now();
        let got = resolve(&requests(), &opts, &mut |l| eprintln!("{l}")).unwrap();
        eprintln!(
            "resolve without lock: {:.2} s",
            start.elapsed().as_secs_f64()
        );
        let kernel = &got[0];
        assert!(
            kernel.name.starts_with("linux-image-6.") && kernel.name.ends_with("-cloud-arm64"),
            "{}",
            kernel.name
        );
        let kver = crate::modules::kernel_release(&kernel.root).unwrap();
        let kver = kver.as_str();
        assert_eq!(Some(kver), kernel.name.strip_prefix("linux-image-"));
        let image = fs::metadata(kernel.root.join(format!("boot/vmlinuz-{kver}"))).unwrap();
        assert!(
            image.len() > 10_000_000,
            "kernel Image is {} bytes",
            image.len()
        );
        let boot = &got[1];
        assert_eq!(boot.name, "systemd-boot-efi");
        let efi = fs::read(
            boot.root
                .join("usr/lib/systemd/boot/efi/systemd-bootaa64.efi"),
        )
        .unwrap();
        assert_eq!(&efi[..2], b"MZ");
        let lock = parse_lock(&fs::read_to_string(&opts.lock_path).unwrap()).unwrap();
        assert_eq!(lock["kernel"].package, kernel.name);
        assert_eq!(lock["kernel"].sha256, sha256_file(&kernel.deb).unwrap());
        eprintln!("{}", fs::read_to_string(&opts.lock_path).unwrap());

        // Warm: lock and cache present; apt must not be needed at all.
        opts.locked = true;
        let start = Instant::now();
        let warm = resolve_with(&requests(), &opts, &no_apt_tools(), &mut |l| {
            eprintln!("{l}")
        })
        .unwrap();
        let warm_time = start.elapsed();
        eprintln!(
            "resolve with lock and cache: {:.1} ms",
            warm_time.as_secs_f64() * 1e3
        );
        assert_eq!(warm[0].root, kernel.root);
        assert!(
            warm_time.as_millis() < 500,
            "warm resolve took {warm_time:?}"
        );

        let wanted: Vec<String> = [
            "ena",
            "virtio_net",
            "virtio_pci",
            "evdev",
            "nf_tables",
            "nft-chain-2-nat",
            "nft-expr-masq",
            "nft_ct",
            "nf_flow_table_inet",
            "nft_flow_offload",
            "nvme",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let start = Instant::now();
        let set =
            crate::modules::resolve(&kernel.root.join("lib/modules").join(kver), &wanted).unwrap();
        eprintln!(
            "module resolution: {:.0} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
        let order: Vec<&str> = set.ordered.iter().map(|m| m.name.as_str()).collect();
        eprintln!("load order: {}", order.join(" "));
        assert_eq!(set.kernel_release, kver);
        assert_eq!(set.builtin, ["nvme"]);
        let pos = |n: &str| {
            order
                .iter()
                .position(|m| *m == n)
                .unwrap_or_else(|| panic!("{n} not in {order:?}"))
        };
        for (a, b) in [
            ("virtio_ring", "virtio_net"),
            ("nfnetlink", "nf_tables"),
            ("nf_conntrack", "nf_nat"),
            ("nf_tables", "nft_chain_nat"),
            ("nf_nat", "nft_masq"),
            ("nf_flow_table", "nf_flow_table_inet"),
        ] {
            assert!(pos(a) < pos(b), "{a} must load before {b}: {order:?}");
        }
        for n in ["ena", "evdev", "virtio_pci", "nft_ct", "nft_flow_offload"] {
            pos(n);
        }
        for m in &set.ordered {
            assert_eq!(&m.data[..4], b"\x7fELF", "{}", m.rel_path);
            assert!(
                m.rel_path.starts_with("kernel/") && m.rel_path.ends_with(".ko"),
                "{}",
                m.rel_path
            );
            for d in &m.depends {
                assert!(pos(d) < pos(&m.name), "{d} before {}", m.name);
            }
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn version_gone_and_changed_file_with_fake_apt() {
        let dir = tempdir("pkg-fake-apt");
        let apt = FakeApt::new(&dir);
        let k1 = dir.join("k1.deb");
        let k2 = dir.join("k2.deb");
        let b1 = dir.join("b1.deb");
        write_deb(
            &k1,
            "linux-image-6.1.0-1-cloud-arm64",
            "6.1.1-1",
            "xz",
            &[("./", b"", None)],
        );
        write_deb(
            &k2,
            "linux-image-6.1.0-2-cloud-arm64",
            "6.1.2-1",
            "xz",
            &[("./", b"", None)],
        );
        write_deb(&b1, "systemd-boot-efi", "252-1", "", &[("./", b"", None)]);
        apt.publish(
            &k1,
            "linux-image-6.1.0-1-cloud-arm64",
            "6.1.1-1",
            Some("linux-image-cloud-arm64"),
        );
        apt.publish(&b1, "systemd-boot-efi", "252-1", None);
        let mut opts = Options {
            lock_path: dir.join("t.lock"),
            cache_dir: dir.join("cache"),
            locked: false,
            local_debs: vec![],
            update: false,
            update_command: UPDATE.into(),
        };
        let mut lines = Vec::new();
        let got = resolve_with(&requests(), &opts, &apt.tools, &mut |l| {
            lines.push(l.to_string())
        })
        .unwrap();
        assert_eq!(got[0].name, "linux-image-6.1.0-1-cloud-arm64");
        assert!(lines.iter().any(|l| {
            l.starts_with("kernel: downloading linux-image-6.1.0-1-cloud-arm64=6.1.1-1 (")
        }));
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("kernel: downloaded ") && l.ends_with(" s")),
            "{lines:?}"
        );
        assert!(
            apt.calls()
                .contains("download linux-image-6.1.0-1-cloud-arm64=6.1.1-1")
        );

        // --update with nothing new: apt is asked, nothing is downloaded again.
        opts.update = true;
        resolve_with(&requests(), &opts, &apt.tools, &mut |_| {}).unwrap();
        assert_eq!(
            apt.calls().matches("download ").count(),
            2,
            "{}",
            apt.calls()
        );
        opts.update = false;

        // Cold cache, lock present, version still there: exactly the locked one is fetched.
        fs::remove_dir_all(&opts.cache_dir).unwrap();
        opts.locked = true;
        resolve_with(&requests(), &opts, &apt.tools, &mut |_| {}).unwrap();

        // The archive moves on: the locked kernel disappears.
        fs::remove_dir_all(&opts.cache_dir).unwrap();
        apt.withdraw("linux-image-6.1.0-1-cloud-arm64");
        apt.publish(
            &k2,
            "linux-image-6.1.0-2-cloud-arm64",
            "6.1.2-1",
            Some("linux-image-cloud-arm64"),
        );
        let err = format!(
            "{:#}",
            resolve_with(&requests(), &opts, &apt.tools, &mut |_| {}).unwrap_err()
        );
        assert!(
            err.contains(
                "pins linux-image-6.1.0-1-cloud-arm64 6.1.1-1, which is no longer available"
            ),
            "{err}"
        );
        assert!(err.contains("without --locked"), "{err}");
        assert!(err.contains(&format!("Run `{UPDATE}`")), "{err}");
        opts.locked = false;
        let mut lines = Vec::new();
        let got = resolve_with(&requests(), &opts, &apt.tools, &mut |l| {
            lines.push(l.to_string())
        })
        .unwrap();
        assert_eq!(got[0].name, "linux-image-6.1.0-2-cloud-arm64");
        let change = "kernel: linux-image-6.1.0-1-cloud-arm64 6.1.1-1 -> linux-image-6.1.0-2-cloud-arm64 6.1.2-1";
        assert!(lines.iter().any(|l| l == change), "{lines:?}");
        let lock = parse_lock(&fs::read_to_string(&opts.lock_path).unwrap()).unwrap();
        assert_eq!(lock["kernel"].version, "6.1.2-1");

        // Same version, different bytes: refused against the lock.
        fs::remove_dir_all(&opts.cache_dir).unwrap();
        let k2b = dir.join("k2b.deb");
        write_deb(
            &k2b,
            "linux-image-6.1.0-2-cloud-arm64",
            "6.1.2-1",
            "gz",
            &[("./", b"", None)],
        );
        apt.publish(
            &k2b,
            "linux-image-6.1.0-2-cloud-arm64",
            "6.1.2-1",
            Some("linux-image-cloud-arm64"),
        );
        let err = format!(
            "{:#}",
            resolve_with(&requests(), &opts, &apt.tools, &mut |_| {}).unwrap_err()
        );
        assert!(err.contains("but the lock file says"), "{err}");

        // apt failures show apt's stderr.
        fs::remove_file(apt.state.join("show/systemd-boot-efi=252-1")).unwrap();
        fs::remove_file(&opts.lock_path).unwrap();
        let err = format!(
            "{:#}",
            resolve_with(&requests(), &opts, &apt.tools, &mut |_| {}).unwrap_err()
        );
        assert!(err.contains("E: No packages found"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Two builds sharing a cache must not run apt-get update at the same time (the fake apt,
    /// like apt, fails when the lists are busy).
    #[test]
    fn concurrent_builds_take_turns_with_apt() {
        let dir = tempdir("pkg-concurrent");
        let apt = FakeApt::new(&dir);
        let b1 = dir.join("b1.deb");
        write_deb(&b1, "systemd-boot-efi", "252-1", "", &[("./", b"", None)]);
        apt.publish(&b1, "systemd-boot-efi", "252-1", None);
        let boot = [Request {
            role: "bootloader".into(),
            name: "systemd-boot-efi".into(),
        }];
        std::thread::scope(|scope| {
            let runs: Vec<_> = (0..2)
                .map(|i| {
                    let (apt, dir, boot) = (&apt, &dir, &boot);
                    scope.spawn(move || {
                        let opts = Options {
                            lock_path: dir.join(format!("{i}.lock")),
                            cache_dir: dir.join("cache"),
                            locked: false,
                            local_debs: vec![],
                            update: false,
                            update_command: UPDATE.into(),
                        };
                        resolve_with(boot, &opts, &apt.tools, &mut |_| {})
                    })
                })
                .collect();
            for run in runs {
                run.join().unwrap().unwrap();
            }
        });
        assert_eq!(apt.calls().matches("update").count(), 2, "{}", apt.calls());
        fs::remove_dir_all(&dir).unwrap();
    }
}

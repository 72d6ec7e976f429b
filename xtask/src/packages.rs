//! The profile's Debian arm64 packages (kernel, boot loader): resolving them with the host's
//! apt, fetching and verifying the .deb files, caching them by sha256 and recording the exact
//! versions in the profile's lock file.
//!
//! apt runs with its lists and cache inside our cache directory and an empty dpkg status, so
//! the host's package state is never read or changed. A build with a lock file and a warm
//! cache does not run apt at all.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::deb;
use crate::digest::sha256_file;

/// One package the profile asks for.
#[derive(Debug, Clone)]
pub struct Request {
    /// What the package is for, e.g. "kernel", "bootloader"; the lock is keyed by it.
    pub role: String,
    /// A package name, possibly a metapackage like linux-image-cloud-arm64.
    pub name: String,
}

/// A package ready to use.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub role: String,
    /// The real package (the metapackage's target).
    pub name: String,
    pub version: String,
    /// Of the .deb file.
    pub sha256: String,
    /// The .deb in the cache (absent if `debs/` was pruned while the unpacked tree stayed).
    pub deb: PathBuf,
    /// Its unpacked data tree in the cache.
    pub root: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// images/<profile>.lock
    pub lock_path: PathBuf,
    /// e.g. target/cache
    pub cache_dir: PathBuf,
    /// Fail instead of changing the lock file.
    pub locked: bool,
    /// Use these .deb files instead of apt for the roles they match.
    pub local_debs: Vec<PathBuf>,
    /// Re-resolve every package to the current candidate version.
    pub update: bool,
}

/// What the lock file records per role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    /// The name the profile asks for.
    pub requested: String,
    /// The real package.
    pub package: String,
    pub version: String,
    pub sha256: String,
    /// The .deb file name as fetched (or as given on the command line).
    pub file: String,
}

/// Role → entry; a BTreeMap so the file is sorted.
pub type Lock = BTreeMap<String, LockEntry>;

const LOCK_HEADER: &str = "\
# Debian arm64 packages of this image profile, pinned by `cargo xtask image`.
# Generated file: build without --locked to update it after a version disappears.
# sha256 is of the .deb file.
";

pub fn render_lock(lock: &Lock) -> Result<String> {
    let body = toml::to_string(lock).context("serialising the lock file")?;
    Ok(format!("{LOCK_HEADER}\n{body}"))
}

pub fn parse_lock(text: &str) -> Result<Lock> {
    let lock: Lock = toml::from_str(text)?;
    for (role, e) in &lock {
        if e.sha256.len() != 64 || !e.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("{role}: sha256 {:?} is not 64 hex digits", e.sha256);
        }
    }
    Ok(lock)
}

/// What to do for a role that the lock pins but the cache does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockedAction {
    /// Download exactly the locked package and version.
    Download,
    /// The locked version is gone: resolve anew and update the lock.
    Reresolve,
}

/// Decides between fetching the locked version and re-resolving, given the versions apt offers
/// now for the locked package. With `locked` a vanished version is an error that says what to do.
pub fn decide_locked(
    role: &str,
    entry: &LockEntry,
    available: &[String],
    locked: bool,
) -> Result<LockedAction> {
    if available.contains(&entry.version) {
        return Ok(LockedAction::Download);
    }
    if !locked {
        return Ok(LockedAction::Reresolve);
    }
    let now = if available.is_empty() {
        "apt offers no version of it now".to_string()
    } else {
        format!("apt offers now: {}", available.join(", "))
    };
    bail!(
        "{role}: the lock file pins {} {}, which is no longer available ({now}). \
         Build without --locked to move the lock to the current version, and commit the lock file.",
        entry.package,
        entry.version
    )
}

/// A line describing how a role's lock entry changed, or None if it did not.
pub fn describe_change(role: &str, old: Option<&LockEntry>, new: &LockEntry) -> Option<String> {
    match old {
        None => Some(format!("{role}: locked {} {}", new.package, new.version)),
        Some(old) if old == new => None,
        Some(old) if old.package == new.package && old.version == new.version => Some(format!(
            "{role}: {} {} now has sha256 {}",
            new.package, new.version, new.sha256
        )),
        Some(old) => Some(format!(
            "{role}: {} {} -> {} {}",
            old.package, old.version, new.package, new.version
        )),
    }
}

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

/// The apt programs; tests swap them out.
struct Tools {
    apt_get: String,
    apt_cache: String,
}

impl Tools {
    fn host() -> Tools {
        Tools {
            apt_get: "apt-get".into(),
            apt_cache: "apt-cache".into(),
        }
    }
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
            "--locked, but there is no lock file {}; build once without --locked to create it",
            opts.lock_path.display()
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
                    "--locked, but {} has no entry for {} ({}); build without --locked to add it",
                    opts.lock_path.display(),
                    req.role,
                    req.name
                ),
                Some(e) if e.requested != req.name => bail!(
                    "--locked, but the profile asks for {} as {} while {} has {}; build without --locked to update it",
                    req.name,
                    req.role,
                    opts.lock_path.display(),
                    e.requested
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
                    "--locked, but {} ({} {}) differs from the lock file's {} {}; build without --locked to record it",
                    local.path.display(),
                    entry.package,
                    entry.version,
                    old.map_or("", |o| o.package.as_str()),
                    old.map_or("", |o| o.version.as_str()),
                );
            }
            (entry, path)
        } else if let Some(old) = old.filter(|_| !opts.update) {
            if cache.has(&old.sha256) {
                (old.clone(), cache.deb_path(&old.sha256))
            } else {
                let available = apt.available_versions(&old.package, log)?;
                match decide_locked(&req.role, old, &available, opts.locked)? {
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
                "--locked, but {} has entries the profile does not request; build without --locked",
                opts.lock_path.display()
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

fn unmatched_local(local: &LocalDeb, requests: &[Request]) -> anyhow::Error {
    let names: Vec<&str> = requests.iter().map(|r| r.name.as_str()).collect();
    anyhow::anyhow!(
        "{} ({}) matches none of the requested packages: {}",
        local.path.display(),
        local.control.package,
        names.join(", ")
    )
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

struct LocalDeb {
    path: PathBuf,
    control: deb::Control,
}

fn read_local_debs(paths: &[PathBuf]) -> Result<Vec<LocalDeb>> {
    paths
        .iter()
        .map(|p| {
            let control = deb::control(p)?;
            if control.architecture != "arm64" && control.architecture != "all" {
                bail!("{} is for {}, not arm64", p.display(), control.architecture);
            }
            Ok(LocalDeb {
                path: p.clone(),
                control,
            })
        })
        .collect()
}

/// Whether a local .deb replaces apt for `req`: same package as requested or locked, or for a
/// kernel metapackage any linux-image-* package.
fn local_matches(local: &LocalDeb, req: &Request, old: Option<&LockEntry>) -> bool {
    let p = &local.control.package;
    *p == req.name
        || old.is_some_and(|o| o.package == *p)
        || (req.name.starts_with("linux-image-") && p.starts_with("linux-image-"))
}

/// Takes the local .deb that replaces apt for `req`, if any.
fn take_local(
    locals: &mut Vec<LocalDeb>,
    req: &Request,
    old: Option<&LockEntry>,
) -> Result<Option<LocalDeb>> {
    let found: Vec<usize> = (0..locals.len())
        .filter(|&i| local_matches(&locals[i], req, old))
        .collect();
    match found.as_slice() {
        [] => Ok(None),
        [i] => Ok(Some(locals.remove(*i))),
        many => bail!(
            "several .deb files match {} ({}): {}",
            req.role,
            req.name,
            many.iter()
                .map(|&i| locals[i].path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `cache_dir/debs/<sha256>.deb` and `cache_dir/unpacked/<sha256>/`.
struct Cache {
    debs: PathBuf,
    unpacked: PathBuf,
}

impl Cache {
    fn new(dir: &Path) -> Result<Cache> {
        let c = Cache {
            debs: dir.join("debs"),
            unpacked: dir.join("unpacked"),
        };
        for d in [&c.debs, &c.unpacked] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(c)
    }

    fn deb_path(&self, sha: &str) -> PathBuf {
        self.debs.join(format!("{sha}.deb"))
    }

    /// An unpacked tree only exists after its .deb was verified, so either is enough.
    fn has(&self, sha: &str) -> bool {
        self.unpacked.join(sha).is_dir() || self.deb_path(sha).is_file()
    }

    fn partial_dir(&self) -> Result<PathBuf> {
        let d = self.debs.join(format!("partial-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }

    /// Moves a verified download into the cache.
    fn store(&self, file: &Path, sha: &str) -> Result<PathBuf> {
        let dest = self.deb_path(sha);
        fs::rename(file, &dest)
            .with_context(|| format!("moving {} to {}", file.display(), dest.display()))?;
        Ok(dest)
    }

    /// Hashes a local .deb and copies it into the cache.
    fn add_local(&self, local: &LocalDeb, requested: &str) -> Result<(LockEntry, PathBuf)> {
        let sha = sha256_file(&local.path)?;
        let dest = self.deb_path(&sha);
        if !dest.is_file() {
            let tmp = self.debs.join(format!("{sha}.tmp-{}", std::process::id()));
            fs::copy(&local.path, &tmp).with_context(|| {
                format!("copying {} to {}", local.path.display(), tmp.display())
            })?;
            fs::rename(&tmp, &dest).with_context(|| format!("renaming {}", tmp.display()))?;
        }
        let file = local
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let entry = LockEntry {
            requested: requested.to_string(),
            package: local.control.package.clone(),
            version: local.control.version.clone(),
            sha256: sha,
            file,
        };
        Ok((entry, dest))
    }

    /// The unpacked tree of a cached .deb, unpacking (after verifying the hash) on first use.
    /// Unpacks into a temporary directory renamed when complete, so an interrupted unpack is
    /// never taken for a finished one.
    fn unpacked(&self, sha: &str, deb_path: &Path, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
        let dest = self.unpacked.join(sha);
        if dest.is_dir() {
            return Ok(dest);
        }
        let actual = sha256_file(deb_path)?;
        if actual != sha {
            let _ = fs::remove_file(deb_path);
            bail!(
                "cached {} has sha256 {actual}, expected {sha}; removed it, build again to fetch it anew",
                deb_path.display()
            );
        }
        let start = Instant::now();
        let tmp = self
            .unpacked
            .join(format!("{sha}.partial-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        deb::unpack(deb_path, &tmp)?;
        match fs::rename(&tmp, &dest) {
            Ok(()) => {}
            // Another build finished the same unpack first.
            Err(_) if dest.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()));
            }
        }
        log(&format!(
            "unpacked {} in {:.1} s",
            deb_path.display(),
            start.elapsed().as_secs_f64()
        ));
        Ok(dest)
    }
}

/// The fields of `apt-cache show` we use.
#[derive(Debug, Clone, Default)]
struct AptPackage {
    package: String,
    version: String,
    depends: String,
    filename: String,
    size: Option<u64>,
    sha256: Option<String>,
}

/// Parses the first record of `apt-cache show` output.
fn parse_show(text: &str) -> AptPackage {
    let record = text.split("\n\n").next().unwrap_or("");
    let mut p = AptPackage::default();
    for line in record.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let v = v.trim().to_string();
        match k {
            "Package" => p.package = v,
            "Version" => p.version = v,
            "Depends" => p.depends = v,
            "Filename" => p.filename = v,
            "Size" => p.size = v.parse().ok(),
            "SHA256" => p.sha256 = Some(v.to_ascii_lowercase()),
            _ => {}
        }
    }
    p
}

/// `Candidate: x` from `apt-cache policy`.
fn parse_candidate(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "(none)")
        .map(str::to_string)
}

/// Versions from `apt-cache madison` lines `name | version | source`.
fn parse_madison(name: &str, text: &str) -> Vec<String> {
    let mut versions: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let mut cols = l.split('|').map(str::trim);
            (cols.next()? == name).then(|| cols.next().map(str::to_string))?
        })
        .collect();
    versions.dedup();
    versions
}

/// The host's apt pointed at our cache directory; the package lists are refreshed on first use.
struct AptSession<'a> {
    tools: &'a Tools,
    cache_dir: PathBuf,
    ready: bool,
    /// Held while this session uses apt.
    _lock: Option<fs::File>,
}

impl AptSession<'_> {
    fn options(&self) -> Vec<String> {
        // apt resolves relative Dir:: paths against its root directory, not the working directory.
        let apt = self.cache_dir.join("apt");
        let cache = apt.join("cache");
        vec![
            "-oAPT::Architecture=arm64".into(),
            "-oAPT::Architectures=arm64".into(),
            format!("-oDir::State::Lists={}", apt.join("lists").display()),
            format!("-oDir::Cache={}", cache.display()),
            // Container images often disable these caches; without them every apt-cache call
            // re-parses all package lists (over a second each).
            format!(
                "-oDir::Cache::pkgcache={}",
                cache.join("pkgcache.bin").display()
            ),
            format!(
                "-oDir::Cache::srcpkgcache={}",
                cache.join("srcpkgcache.bin").display()
            ),
            // An empty dpkg status: the host's installed packages play no part.
            "-oDir::State::Status=/dev/null".into(),
            "-oAcquire::Languages=none".into(),
            "-q".into(),
        ]
    }

    fn run(&self, program: &str, args: &[&str], dir: Option<&Path>) -> Result<String> {
        let mut argv = self.options();
        argv.extend(args.iter().map(|a| a.to_string()));
        let mut cmd = duct::cmd(program, &argv)
            .env("LC_ALL", "C")
            .stdin_null()
            .stdout_capture()
            .stderr_capture()
            .unchecked();
        if let Some(dir) = dir {
            cmd = cmd.dir(dir);
        }
        let out = match cmd.run() {
            Ok(out) => out,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(no_apt(program)),
            Err(e) => return Err(e).with_context(|| format!("running {program}")),
        };
        if !out.status.success() {
            bail!(
                "{program} {} failed ({}):\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn ensure_lists(&mut self, log: &mut dyn FnMut(&str)) -> Result<()> {
        if self.ready {
            return Ok(());
        }
        let apt = self.cache_dir.join("apt");
        for d in [
            apt.join("lists/partial"),
            apt.join("cache/archives/partial"),
        ] {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        // apt-get update fails at once when another one holds the lists, so builds and tests
        // sharing this cache take turns; the lock is released when the session ends.
        let lock_path = apt.join("xtask.lock");
        let lock = fs::File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            log("waiting for another build using the same apt cache");
            lock.lock()
                .with_context(|| format!("locking {}", lock_path.display()))?;
        }
        self._lock = Some(lock);
        log("updating the arm64 package lists with apt-get update");
        let start = Instant::now();
        self.run(&self.tools.apt_get, &["update"], None).context(
            "apt-get update failed; apt's sources are the host's /etc/apt/sources.list(.d)",
        )?;
        log(&format!(
            "package lists updated in {:.1} s",
            start.elapsed().as_secs_f64()
        ));
        self.ready = true;
        Ok(())
    }

    fn available_versions(&mut self, name: &str, log: &mut dyn FnMut(&str)) -> Result<Vec<String>> {
        self.ensure_lists(log)?;
        let text = self.run(&self.tools.apt_cache, &["madison", name], None)?;
        Ok(parse_madison(name, &text))
    }

    fn show(&mut self, name: &str, version: &str, log: &mut dyn FnMut(&str)) -> Result<AptPackage> {
        self.ensure_lists(log)?;
        let text = self.run(
            &self.tools.apt_cache,
            &["show", &format!("{name}={version}")],
            None,
        )?;
        let p = parse_show(&text);
        if p.package != name || p.version != version {
            bail!("apt-cache show {name}={version} gave no matching record");
        }
        Ok(p)
    }

    fn show_candidate(&mut self, name: &str, log: &mut dyn FnMut(&str)) -> Result<AptPackage> {
        self.ensure_lists(log)?;
        let policy = self.run(&self.tools.apt_cache, &["policy", name], None)?;
        let version = parse_candidate(&policy).with_context(|| {
            format!("apt has no arm64 candidate version of {name}; is the name right?")
        })?;
        self.show(name, &version, log)
    }
}

fn no_apt(program: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{program} not found: this host has no apt to fetch the Debian arm64 packages. \
         Pass the packages as files with --kernel-deb FILE (the kernel .deb, and the boot loader's \
         systemd-boot-efi .deb), or install apt"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::deb::tests::{tempdir, write_deb};

    fn entry(package: &str, version: &str) -> LockEntry {
        LockEntry {
            requested: "linux-image-cloud-arm64".into(),
            package: package.into(),
            version: version.into(),
            sha256: "ab".repeat(32),
            file: format!("{package}_{version}_arm64.deb"),
        }
    }

    fn no_apt_tools() -> Tools {
        Tools {
            apt_get: "apt-get-absent-in-test".into(),
            apt_cache: "apt-cache-absent-in-test".into(),
        }
    }

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
    fn lock_round_trip_is_sorted_and_stable() {
        let mut lock = Lock::new();
        lock.insert(
            "kernel".into(),
            entry("linux-image-6.1.0-56-cloud-arm64", "6.1.192-2"),
        );
        let mut boot = entry("systemd-boot-efi", "252.39-1~deb12u2");
        boot.requested = "systemd-boot-efi".into();
        lock.insert("bootloader".into(), boot);
        let text = render_lock(&lock).unwrap();
        assert!(text.starts_with("# Debian arm64 packages"));
        assert!(text.find("[bootloader]").unwrap() < text.find("[kernel]").unwrap());
        assert!(text.contains("version = \"252.39-1~deb12u2\""));
        assert_eq!(parse_lock(&text).unwrap(), lock);
        assert_eq!(render_lock(&parse_lock(&text).unwrap()).unwrap(), text);
    }

    #[test]
    fn lock_parsing_rejects_bad_entries() {
        let good = render_lock(&Lock::from([(
            "kernel".to_string(),
            entry("linux-image-x", "1"),
        )]))
        .unwrap();
        assert!(parse_lock(&good.replace(&"ab".repeat(32), "abc")).is_err());
        assert!(parse_lock(&format!("{good}extra = 1\n")).is_err());
        assert!(parse_lock(&good.replace("version = \"1\"\n", "")).is_err());
    }

    #[test]
    fn locked_version_decisions() {
        let e = entry("linux-image-6.1.0-56-cloud-arm64", "6.1.192-2");
        let now = vec!["6.1.192-2".to_string(), "6.1.176-1".to_string()];
        assert_eq!(
            decide_locked("kernel", &e, &now, true).unwrap(),
            LockedAction::Download
        );
        assert_eq!(
            decide_locked("kernel", &e, &now, false).unwrap(),
            LockedAction::Download
        );
        let gone = vec!["6.1.200-1".to_string()];
        assert_eq!(
            decide_locked("kernel", &e, &gone, false).unwrap(),
            LockedAction::Reresolve
        );
        let err = decide_locked("kernel", &e, &gone, true)
            .unwrap_err()
            .to_string();
        for part in [
            "linux-image-6.1.0-56-cloud-arm64",
            "6.1.192-2",
            "6.1.200-1",
            "without --locked",
        ] {
            assert!(err.contains(part), "{part} missing from: {err}");
        }
        let err = decide_locked("kernel", &e, &[], true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no version"), "{err}");
    }

    #[test]
    fn lock_changes_are_described() {
        let old = entry("linux-image-6.1.0-56-cloud-arm64", "6.1.192-2");
        assert_eq!(describe_change("kernel", Some(&old), &old), None);
        let new = entry("linux-image-6.1.0-57-cloud-arm64", "6.1.200-1");
        assert_eq!(
            describe_change("kernel", Some(&old), &new).unwrap(),
            "kernel: linux-image-6.1.0-56-cloud-arm64 6.1.192-2 -> linux-image-6.1.0-57-cloud-arm64 6.1.200-1"
        );
        assert!(
            describe_change("kernel", None, &new)
                .unwrap()
                .contains("locked")
        );
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

    #[test]
    fn apt_output_parsing() {
        let show = "Package: linux-image-cloud-arm64\nSource: linux-signed-arm64 (6.1.192+2)\nVersion: 6.1.192-2\n\
                    Depends: linux-image-6.1.0-56-cloud-arm64 (= 6.1.192-2)\nDescription: x\n Size: 1\n\
                    Filename: pool/main/l/x/linux-image-cloud-arm64_6.1.192-2_arm64.deb\nSize: 1500\n\
                    SHA256: ABCDEF\n\nPackage: other\nVersion: 9\n";
        let p = parse_show(show);
        assert_eq!(p.package, "linux-image-cloud-arm64");
        assert_eq!(p.version, "6.1.192-2");
        assert_eq!(p.size, Some(1500));
        assert_eq!(p.sha256.as_deref(), Some("abcdef"));
        assert!(
            p.filename
                .ends_with("linux-image-cloud-arm64_6.1.192-2_arm64.deb")
        );
        let policy = "systemd-boot-efi:\n  Installed: (none)\n  Candidate: 252.39-1~deb12u2\n  Version table:\n";
        assert_eq!(parse_candidate(policy).as_deref(), Some("252.39-1~deb12u2"));
        assert_eq!(
            parse_candidate("x:\n  Installed: (none)\n  Candidate: (none)\n"),
            None
        );
        let madison = " systemd-boot-efi | 254.26-1~bpo12+1 | http://a bookworm-backports/main arm64 Packages\n\
                        systemd-boot-efi | 252.39-1~deb12u2 | http://a bookworm/main arm64 Packages\n\
                       other | 1 | x\n";
        assert_eq!(
            parse_madison("systemd-boot-efi", madison),
            ["254.26-1~bpo12+1", "252.39-1~deb12u2"]
        );
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
        };
        let err = format!(
            "{:#}",
            resolve_with(&requests(), &opts, &no_apt_tools(), &mut |_| {}).unwrap_err()
        );
        assert!(err.contains("no lock file"), "{err}");
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

    /// A stand-in for apt-get and apt-cache: answers from files under `state`, records calls.
    struct FakeApt {
        state: PathBuf,
        tools: Tools,
    }

    impl FakeApt {
        fn new(dir: &Path) -> FakeApt {
            use std::os::unix::fs::PermissionsExt;
            let state = dir.join("fake-apt");
            for sub in ["policy", "madison", "show", "files"] {
                fs::create_dir_all(state.join(sub)).unwrap();
            }
            let script = state.join("apt");
            fs::write(
                &script,
                format!(
                    "#!/bin/sh\nS='{}'\nwhile [ \"${{1#-}}\" != \"$1\" ]; do shift; done\ncmd=$1; shift\n\
                     echo \"$cmd $*\" >> \"$S/calls\"\n\
                     case $cmd in\n\
                     update) mkdir \"$S/updating\" || {{ echo \"E: Could not get lock\" >&2; exit 100; }}; sleep 0.3; rmdir \"$S/updating\" ;;\n\
                     policy|madison) cat \"$S/$cmd/$1\" 2>/dev/null || true ;;\n\
                     show) cat \"$S/show/$1\" || {{ echo \"E: No packages found\" >&2; exit 100; }} ;;\n\
                     download) cp \"$S/files/$1\" \"./${{1%%=*}}_${{1#*=}}_arm64.deb\" ;;\n\
                     esac\n",
                    state.display()
                ),
            )
            .unwrap();
            fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
            let tools = Tools {
                apt_get: script.display().to_string(),
                apt_cache: script.display().to_string(),
            };
            FakeApt { state, tools }
        }

        /// Publishes `deb` as the current version of `package`; `meta` makes a metapackage point at it.
        fn publish(&self, deb: &Path, package: &str, version: &str, meta: Option<&str>) {
            let sha = sha256_file(deb).unwrap();
            let size = fs::metadata(deb).unwrap().len();
            fs::copy(deb, self.state.join(format!("files/{package}={version}"))).unwrap();
            let show = format!(
                "Package: {package}\nVersion: {version}\nDepends: kmod\nFilename: pool/{package}_{version}_arm64.deb\n\
                 Size: {size}\nSHA256: {sha}\n\n"
            );
            fs::write(self.state.join(format!("show/{package}={version}")), show).unwrap();
            fs::write(
                self.state.join(format!("policy/{package}")),
                format!("{package}:\n  Candidate: {version}\n"),
            )
            .unwrap();
            fs::write(
                self.state.join(format!("madison/{package}")),
                format!(" {package} | {version} | x\n"),
            )
            .unwrap();
            if let Some(meta) = meta {
                fs::write(
                    self.state.join(format!("show/{meta}=9")),
                    format!("Package: {meta}\nVersion: 9\nDepends: {package} (= {version})\n\n"),
                )
                .unwrap();
                fs::write(
                    self.state.join(format!("policy/{meta}")),
                    format!("{meta}:\n  Candidate: 9\n"),
                )
                .unwrap();
            }
        }

        /// Makes `package` unavailable.
        fn withdraw(&self, package: &str) {
            fs::remove_file(self.state.join(format!("madison/{package}"))).unwrap();
            fs::remove_file(self.state.join(format!("policy/{package}"))).unwrap();
        }

        fn calls(&self) -> String {
            fs::read_to_string(self.state.join("calls")).unwrap_or_default()
        }
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

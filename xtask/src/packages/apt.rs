//! The host's apt-get and apt-cache, run with their lists and cache inside our cache
//! directory and an empty dpkg status, and the parsing of what they print.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The apt programs; tests swap them out.
pub(super) struct Tools {
    pub(super) apt_get: String,
    pub(super) apt_cache: String,
}

impl Tools {
    pub(super) fn host() -> Tools {
        Tools {
            apt_get: "apt-get".into(),
            apt_cache: "apt-cache".into(),
        }
    }
}

/// The fields of `apt-cache show` we use.
#[derive(Debug, Clone, Default)]
pub(super) struct AptPackage {
    pub(super) package: String,
    pub(super) version: String,
    pub(super) depends: String,
    pub(super) filename: String,
    pub(super) size: Option<u64>,
    pub(super) sha256: Option<String>,
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
pub(super) struct AptSession<'a> {
    pub(super) tools: &'a Tools,
    pub(super) cache_dir: PathBuf,
    pub(super) ready: bool,
    /// Held while this session uses apt.
    pub(super) _lock: Option<fs::File>,
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

    pub(super) fn run(&self, program: &str, args: &[&str], dir: Option<&Path>) -> Result<String> {
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

    pub(super) fn available_versions(
        &mut self,
        name: &str,
        log: &mut dyn FnMut(&str),
    ) -> Result<Vec<String>> {
        self.ensure_lists(log)?;
        let text = self.run(&self.tools.apt_cache, &["madison", name], None)?;
        Ok(parse_madison(name, &text))
    }

    pub(super) fn show(
        &mut self,
        name: &str,
        version: &str,
        log: &mut dyn FnMut(&str),
    ) -> Result<AptPackage> {
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

    pub(super) fn show_candidate(
        &mut self,
        name: &str,
        log: &mut dyn FnMut(&str),
    ) -> Result<AptPackage> {
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
pub(super) mod tests {
    use super::*;
    use crate::digest::sha256_file;

    pub(crate) fn no_apt_tools() -> Tools {
        Tools {
            apt_get: "apt-get-absent-in-test".into(),
            apt_cache: "apt-cache-absent-in-test".into(),
        }
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

    /// A stand-in for apt-get and apt-cache: answers from files under `state`, records calls.
    pub(crate) struct FakeApt {
        pub(crate) state: PathBuf,
        pub(crate) tools: Tools,
    }

    impl FakeApt {
        pub(crate) fn new(dir: &Path) -> FakeApt {
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
        pub(crate) fn publish(&self, deb: &Path, package: &str, version: &str, meta: Option<&str>) {
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
        pub(crate) fn withdraw(&self, package: &str) {
            fs::remove_file(self.state.join(format!("madison/{package}"))).unwrap();
            fs::remove_file(self.state.join(format!("policy/{package}"))).unwrap();
        }

        pub(crate) fn calls(&self) -> String {
            fs::read_to_string(self.state.join("calls")).unwrap_or_default()
        }
    }
}

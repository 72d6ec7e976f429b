//! Host setup: the packages and tools the tests need (QEMU, firmware, network tools, moto).
//! All of it lives here, so that `cargo xtask test` alone works on a fresh machine.
//!
//! Missing Debian packages are installed with apt-get when we are root on Debian; otherwise the
//! exact command is printed and the caller fails. Nothing is skipped for lack of a package.
//! Packages are installed from the release their installed siblings came from (a machine with
//! `qemu-utils` from backports gets `qemu-system-arm` from backports too), apt is never allowed to
//! remove a package (`--no-remove`), and every change is said: what was installed, which apt
//! source was added, and how to undo it.
//!
//! moto (the local stand-in for AWS) is installed with pip into a virtual environment under
//! `target/`, so the user's own Python packages are never touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// A program or file, and the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    pub path: &'static str,
    pub package: &'static str,
}

const fn need(path: &'static str, package: &'static str) -> Need {
    Need { path, package }
}

pub const QEMU: &[Need] = &[
    need("qemu-system-aarch64", "qemu-system-arm"),
    need("/usr/share/AAVMF/AAVMF_CODE.fd", "qemu-efi-aarch64"),
    need("qemu-img", "qemu-utils"),
];

pub const DISK_TOOLS: &[Need] = &[need("sgdisk", "gdisk"), need("fsck.vfat", "dosfstools")];

pub const NET: &[Need] = &[
    need("ip", "iproute2"),
    need("nft", "nftables"),
    need("dnsmasq", "dnsmasq-base"),
    need("curl", "curl"),
    need("ping", "iputils-ping"),
    // nat-init's HTTPS tests make their CAs with it; the AWS double's certificate is signed
    // with the test CA by it.
    need("openssl", "openssl"),
];

pub const PYTHON: &[Need] = &[need("python3", "python3"), need("pip3", "python3-pip")];

/// The moto release the AWS tests are written against (`moto_server`, a local AWS double).
pub const MOTO: &str = "moto[server]==5.2.5";
const MOTO_VERSION: &str = "5.2.5";
/// The variable that tells the tests where `moto_server` is.
pub const MOTO_ENV: &str = "XTASK_MOTO_SERVER";

fn present(n: &Need) -> bool {
    if n.path.starts_with('/') {
        return Path::new(n.path).exists();
    }
    which(n.path).is_some()
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(Into::into))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Makes sure every need is met, installing what is missing when possible.
pub fn ensure(needs: &[Need]) -> Result<()> {
    let mut missing: Vec<&str> = needs
        .iter()
        .filter(|n| !present(n))
        .map(|n| n.package)
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let plain = format!("apt-get install -y --no-remove {}", missing.join(" "));
    if !Path::new("/etc/debian_version").exists() {
        bail!(
            "missing host packages (Debian names): {}. This host is not Debian: install their \
             equivalents and retry",
            missing.join(", ")
        );
    }
    if !is_root() {
        bail!(
            "missing host packages: {}. Installing them needs root: run `sudo {plain}` (or run \
             this command as root, which installs them itself), then retry",
            missing.join(", ")
        );
    }
    install(&missing)?;
    let still: Vec<&str> = needs
        .iter()
        .filter(|n| !present(n))
        .map(|n| n.path)
        .collect();
    if !still.is_empty() {
        bail!(
            "still missing after installing {}: {}",
            missing.join(" "),
            still.join(", ")
        );
    }
    Ok(())
}

/// One installed package as dpkg reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Installed {
    source: String,
    version: String,
}

/// `dpkg-query -W -f '${Package}\t${source:Package}\t${Version}\t${db:Status-Abbrev}\n'`.
fn parse_installed(text: &str) -> BTreeMap<String, Installed> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (pkg, source, version, status) = (f.next()?, f.next()?, f.next()?, f.next()?);
            // Only fully installed packages ("ii"); "un"/"rc" rows are leftovers.
            (status.trim() == "ii").then(|| {
                let pkg = pkg.split(':').next().unwrap_or(pkg).to_string();
                let source = if source.is_empty() {
                    pkg.clone()
                } else {
                    source.to_string()
                };
                (
                    pkg,
                    Installed {
                        source,
                        version: version.to_string(),
                    },
                )
            })
        })
        .collect()
}

/// The source package named by `apt-cache show PKG` (its first stanza), or PKG itself.
fn parse_source(pkg: &str, show: &str) -> String {
    show.lines()
        .find_map(|l| l.strip_prefix("Source:"))
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or(pkg)
        .to_string()
}

/// The Debian release a backported version was built for: `1:10.0~bpo12+1` -> 12.
fn backport_of(version: &str) -> Option<u32> {
    let rest = version.split("~bpo").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// What to install from where, decided from the installed siblings of each missing package.
#[derive(Debug, PartialEq, Eq)]
struct Decision {
    /// `-t SUITE` for apt-get: a suite the siblings came from, when it is not the default.
    target_release: Option<String>,
    /// Why, for the log: `qemu-utils 1:10.0.2~bpo12+1 is installed (from backports)`.
    reasons: Vec<String>,
}

fn decide(
    missing: &[(&str, String)],
    installed: &BTreeMap<String, Installed>,
    codename: &str,
    os_major: Option<u32>,
) -> Result<Decision> {
    let mut target = None;
    let mut reasons = Vec::new();
    for (pkg, source) in missing {
        let sibling = installed
            .iter()
            .find(|(_, i)| &i.source == source && backport_of(&i.version).is_some());
        if let Some((name, i)) = sibling {
            let bpo = backport_of(&i.version);
            if os_major.is_some() && bpo != os_major {
                bail!(
                    "{name} {} is a backport for another Debian release than this one \
                     ({codename}); install {pkg} at a matching version by hand",
                    i.version
                );
            }
            reasons.push(format!(
                "{name} {} is installed from {codename}-backports, so {pkg} (same source, \
                 {source}) comes from there too",
                i.version
            ));
            target = Some(format!("{codename}-backports"));
        }
    }
    Ok(Decision {
        target_release: target,
        reasons,
    })
}

/// Packages an apt-get simulation (`-s`) would remove or replace with another version.
fn parse_simulation(text: &str) -> (Vec<String>, Vec<String>) {
    let mut removed = Vec::new();
    let mut replaced = Vec::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("Remv ") {
            removed.push(rest.split_whitespace().next().unwrap_or(rest).to_string());
        } else if let Some(rest) = l.strip_prefix("Inst ") {
            // `Inst qemu-utils [1:10.0.2...] (1:7.2... Debian:12/stable [amd64])`: the bracket
            // is the installed version being replaced.
            let mut w = rest.split_whitespace();
            if let (Some(name), Some(old)) = (w.next(), w.next())
                && old.starts_with('[')
            {
                replaced.push(format!("{name} {}", old.trim_matches(['[', ']'])));
            }
        }
    }
    (removed, replaced)
}

fn os_release() -> (String, Option<u32>) {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_string())
    };
    let codename = field("VERSION_CODENAME").unwrap_or_else(|| "stable".into());
    let major = field("VERSION_ID").and_then(|v| v.split('.').next()?.parse().ok());
    (codename, major)
}

fn capture(program: &str, args: &[&str]) -> Result<(bool, String)> {
    let out = duct::cmd(program, args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .with_context(|| format!("running {program}"))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

fn installed_now() -> Result<BTreeMap<String, Installed>> {
    let (_, text) = capture(
        "dpkg-query",
        &[
            "-W",
            "-f",
            "${Package}\t${source:Package}\t${Version}\t${db:Status-Abbrev}\n",
        ],
    )?;
    Ok(parse_installed(&text))
}

/// The mirror this machine's apt already uses for Debian itself.
fn debian_mirror() -> Option<String> {
    let deb822 = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").ok();
    let from_deb822 = deb822.as_deref().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("URIs:"))
            .and_then(|u| u.split_whitespace().next().map(str::to_string))
    });
    from_deb822.or_else(|| {
        let list = std::fs::read_to_string("/etc/apt/sources.list").ok()?;
        list.lines()
            .filter(|l| l.starts_with("deb "))
            .filter_map(|l| l.split_whitespace().find(|w| w.contains("://")))
            .find(|u| !u.contains("security"))
            .map(str::to_string)
    })
}

fn suite_known(suite: &str) -> Result<bool> {
    let (_, policy) = capture("apt-cache", &["policy"])?;
    Ok(policy.contains(&format!("a={suite},")) || policy.contains(&format!("n={suite},")))
}

fn install(missing: &[&str]) -> Result<()> {
    say("updating apt's package lists (apt-get update)");
    let (ok, text) = capture("apt-get", &["update", "-q"])?;
    if !ok {
        bail!("`apt-get update` failed:\n{text}");
    }
    let before = installed_now()?;
    let mut sources = Vec::new();
    for pkg in missing {
        let (_, show) = capture("apt-cache", &["show", pkg])?;
        sources.push((*pkg, parse_source(pkg, &show)));
    }
    let (codename, major) = os_release();
    let decision = decide(&sources, &before, &codename, major)?;
    for r in &decision.reasons {
        say(r);
    }
    let mut added_source = None;
    if let Some(suite) = &decision.target_release
        && !suite_known(suite)?
    {
        let mirror = debian_mirror().with_context(|| {
            format!("{suite} is needed but no Debian mirror is configured to add it from")
        })?;
        let file = PathBuf::from(format!("/etc/apt/sources.list.d/xtask-{suite}.sources"));
        let text = format!(
            "# Added by `cargo xtask` to install packages matching those already installed from {suite}.\n\
             Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        );
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        say(&format!(
            "added apt source {} ({suite} from {mirror}); undo with: rm {} && apt-get update",
            file.display(),
            file.display()
        ));
        let (ok, text) = capture("apt-get", &["update", "-q"])?;
        if !ok {
            let _ = std::fs::remove_file(&file);
            let _ = capture("apt-get", &["update", "-q"]);
            bail!(
                "`apt-get update` with {suite} added failed, so the source was removed again:\n{text}"
            );
        }
        added_source = Some(file);
    }
    // Recommends of qemu-system-arm (GUI, OpenGL, spice) pull in and upgrade a desktop stack.
    let mut args = vec![
        "install",
        "-y",
        "-q",
        "--no-remove",
        "--no-install-recommends",
    ];
    if let Some(suite) = &decision.target_release {
        args.extend(["-t", suite.as_str()]);
    }
    args.extend(missing.iter().copied());
    let cmd = format!("apt-get {}", args.join(" "));
    let mut sim = args.clone();
    sim.insert(1, "-s");
    let (_, plan) = capture("apt-get", &sim)?;
    let (removed, replaced) = parse_simulation(&plan);
    if !removed.is_empty() {
        // --no-remove would refuse anyway; say it plainly and change nothing.
        bail!(
            "installing {} would remove installed packages ({}); nothing was changed. Resolve it \
             by hand: {cmd}",
            missing.join(" "),
            removed.join(", ")
        );
    }
    if !replaced.is_empty() {
        say(&format!(
            "this install replaces installed versions of: {}",
            replaced.join(", ")
        ));
    }
    say(&format!("installing missing host packages: {cmd}"));
    let status = duct::cmd("apt-get", &args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .unchecked()
        .run()
        .context("running apt-get install")?;
    let after = installed_now()?;
    let changes = diff(&before, &after);
    if !status.status.success() {
        let undo = undo_hint(&changes, added_source.as_deref());
        bail!(
            "`{cmd}` failed (see apt's output above). {}{undo}",
            if changes.is_empty() {
                "No package was changed. ".to_string()
            } else {
                format!("Changed: {}. ", changes.join(", "))
            }
        );
    }
    if !changes.is_empty() {
        say(&format!("host packages changed: {}", changes.join(", ")));
    }
    Ok(())
}

fn diff(before: &BTreeMap<String, Installed>, after: &BTreeMap<String, Installed>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, a) in after {
        match before.get(name) {
            None => out.push(format!("+{name} {}", a.version)),
            Some(b) if b.version != a.version => {
                out.push(format!("{name} {} -> {}", b.version, a.version))
            }
            Some(_) => {}
        }
    }
    for name in before.keys().filter(|n| !after.contains_key(*n)) {
        out.push(format!("-{name}"));
    }
    out
}

fn undo_hint(changes: &[String], added: Option<&Path>) -> String {
    let new: Vec<&str> = changes
        .iter()
        .filter_map(|c| c.strip_prefix('+'))
        .filter_map(|c| c.split_whitespace().next())
        .collect();
    let mut hint = String::new();
    if !new.is_empty() {
        hint.push_str(&format!("Undo with: apt-get remove {}. ", new.join(" ")));
    }
    if let Some(f) = added {
        hint.push_str(&format!(
            "The apt source {} was added: rm it and apt-get update to undo.",
            f.display()
        ));
    }
    hint
}

/// Makes sure the pinned moto is installed in a virtual environment under `target/` and
/// returns the path of its `moto_server`.
pub fn ensure_moto(target: &Path) -> Result<PathBuf> {
    ensure(PYTHON)?;
    let venv = target.join("host").join("moto");
    let server = venv.join("bin").join("moto_server");
    let python = venv.join("bin").join("python3");
    let have = capture(
        &python.to_string_lossy(),
        &["-c", "import moto; print(moto.__version__)"],
    )
    .ok()
    .filter(|(ok, _)| *ok)
    .map(|(_, v)| v.trim().to_string());
    if have.as_deref() == Some(MOTO_VERSION) && server.is_file() {
        return Ok(server);
    }
    say(&format!(
        "installing {MOTO} (a local AWS double for the tests) into {}",
        venv.display()
    ));
    new_venv(target, &venv)?;
    let pip = venv.join("bin").join("pip");
    let (ok, text) = capture(&pip.to_string_lossy(), &["install", "-q", MOTO])?;
    if !ok {
        bail!(
            "`pip install '{MOTO}'` into {} failed:\n{text}",
            venv.display()
        );
    }
    if !server.is_file() {
        bail!("{MOTO} installed but {} is missing", server.display());
    }
    Ok(server)
}

/// A fresh virtual environment at `venv` (under `target`), installing python3-venv first when
/// it is missing and this is root on Debian.
fn new_venv(target: &Path, venv: &Path) -> Result<()> {
    std::fs::create_dir_all(venv.parent().unwrap_or(target))?;
    let (ok, text) = capture(
        "python3",
        &["-m", "venv", "--clear", &venv.to_string_lossy()],
    )?;
    if !ok {
        if is_root() && Path::new("/etc/debian_version").exists() {
            install(&["python3-venv"])?;
            let (ok, text) = capture(
                "python3",
                &["-m", "venv", "--clear", &venv.to_string_lossy()],
            )?;
            if !ok {
                bail!("python3 -m venv {} failed:\n{text}", venv.display());
            }
        } else {
            bail!(
                "python3 -m venv {} failed (on Debian: apt-get install python3-venv):\n{text}",
                venv.display()
            );
        }
    }
    Ok(())
}

/// The deploy templates' tools, pinned: moto (CloudFormation stand-in), cfn-lint, and checkov
/// (which brings the HCL2 parser the Terraform checks use, bc-python-hcl2, at the version it
/// pins; python-hcl2 itself would replace that module under checkov).
pub const DEPLOY_TOOLS: &[&str] = &[MOTO, "cfn-lint==1.58.0", "checkov==3.3.30"];

/// Makes sure [`DEPLOY_TOOLS`] are installed in a virtual environment under `target/` (its own,
/// beside moto's) and returns its `bin` directory. A stamp file naming the pins makes an
/// unchanged set a no-op.
pub fn ensure_deploy_tools(target: &Path) -> Result<PathBuf> {
    ensure(PYTHON)?;
    let venv = target.join("host").join("deploy");
    let bin = venv.join("bin");
    let stamp = venv.join("xtask-pins.txt");
    let want = DEPLOY_TOOLS.join("\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str())
        && bin.join("python3").is_file()
    {
        return Ok(bin);
    }
    say(&format!(
        "installing {} (the deploy templates' checks) into {}",
        DEPLOY_TOOLS.join(" "),
        venv.display()
    ));
    new_venv(target, &venv)?;
    let pip = bin.join("pip");
    let mut args = vec!["install", "-q"];
    args.extend(DEPLOY_TOOLS);
    let (ok, text) = capture(&pip.to_string_lossy(), &args)?;
    if !ok {
        bail!(
            "`pip install {}` into {} failed:\n{text}",
            DEPLOY_TOOLS.join(" "),
            venv.display()
        );
    }
    for tool in ["moto_server", "cfn-lint", "checkov"] {
        if !bin.join(tool).is_file() {
            bail!("{} installed but {tool} is missing", venv.display());
        }
    }
    std::fs::write(&stamp, want).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(bin)
}

fn say(msg: &str) {
    eprintln!("[xtask] host setup: {msg}");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DPKG: &str = "qemu-utils\tqemu\t1:10.0.2+ds-2+deb13u1~bpo12+1\tii \n\
                        qemu-system-common\tqemu-system-common\t\tun \n\
                        libc6:amd64\tglibc\t2.36-9+deb12u10\tii \n\
                        gdisk\t\t1.0.9-2.1\tii \n";

    #[test]
    fn installed_keeps_only_ii_rows_and_fills_source() {
        let m = parse_installed(DPKG);
        assert_eq!(m.len(), 3);
        assert_eq!(m["qemu-utils"].source, "qemu");
        assert_eq!(m["libc6"].source, "glibc");
        assert_eq!(m["gdisk"].source, "gdisk");
        assert!(!m.contains_key("qemu-system-common"));
    }

    #[test]
    fn source_from_apt_cache_show() {
        let show =
            "Package: qemu-system-arm\nSource: qemu (1:7.2+dfsg-7+deb12u18)\nVersion: 1:7.2\n";
        assert_eq!(parse_source("qemu-system-arm", show), "qemu");
        assert_eq!(
            parse_source("gdisk", "Package: gdisk\nVersion: 1\n"),
            "gdisk"
        );
    }

    #[test]
    fn backport_release_from_version() {
        assert_eq!(backport_of("1:10.0.2+ds-2+deb13u1~bpo12+1"), Some(12));
        assert_eq!(backport_of("1:7.2+dfsg-7+deb12u18+b2"), None);
    }

    #[test]
    fn missing_sibling_of_a_backport_comes_from_backports() {
        let installed = parse_installed(DPKG);
        let d = decide(
            &[
                ("qemu-system-arm", "qemu".into()),
                ("dnsmasq-base", "dnsmasq".into()),
            ],
            &installed,
            "bookworm",
            Some(12),
        )
        .unwrap();
        assert_eq!(d.target_release.as_deref(), Some("bookworm-backports"));
        assert_eq!(d.reasons.len(), 1);
        assert!(d.reasons[0].contains("qemu-utils"), "{:?}", d.reasons);
    }

    #[test]
    fn no_backported_sibling_means_default_release() {
        let installed = parse_installed("qemu-utils\tqemu\t1:7.2+dfsg-7\tii \n");
        let d = decide(
            &[("qemu-system-arm", "qemu".into())],
            &installed,
            "bookworm",
            Some(12),
        )
        .unwrap();
        assert_eq!(d.target_release, None);
    }

    #[test]
    fn backport_for_another_release_is_refused() {
        let installed = parse_installed(DPKG);
        let e = decide(
            &[("qemu-system-arm", "qemu".into())],
            &installed,
            "trixie",
            Some(13),
        )
        .unwrap_err();
        assert!(e.to_string().contains("another Debian release"), "{e}");
    }

    #[test]
    fn simulation_lists_removals_and_replacements() {
        let sim = "NOTE: This is only a simulation!\n\
                   Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]\n\
                   Inst qemu-block-extra [1:10.0] (1:7.2 Debian:12/stable [amd64])\n\
                   Inst qemu-system-arm (1:7.2 Debian:12/stable [amd64])\n\
                   Conf qemu-system-arm (1:7.2 Debian:12/stable [amd64])\n";
        let (removed, replaced) = parse_simulation(sim);
        assert_eq!(removed, ["qemu-utils"]);
        assert_eq!(replaced, ["qemu-block-extra 1:10.0"]);
    }

    #[test]
    fn diff_and_undo_name_every_change() {
        let before = parse_installed("a\ta\t1\tii \nb\tb\t1\tii \n");
        let after = parse_installed("a\ta\t2\tii \nc\tc\t1\tii \n");
        let d = diff(&before, &after);
        assert_eq!(d, ["a 1 -> 2", "+c 1", "-b"]);
        let hint = undo_hint(&d, Some(Path::new("/etc/apt/sources.list.d/x.sources")));
        assert!(hint.contains("apt-get remove c"), "{hint}");
        assert!(hint.contains("x.sources"), "{hint}");
    }
}

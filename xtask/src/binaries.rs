//! Cross-compiles the on-image binaries: static aarch64-unknown-linux-musl, linked by rust-lld
//! (see .cargo/config.toml), with the size-tuned release profile of the workspace.
//!
//! Where the binaries end up is cargo's answer, not our guess: `CARGO_TARGET_DIR`, a
//! `build.target-dir` in a cargo config or `--target-dir` would each move them, so the paths
//! come from the `compiler-artifact` messages cargo prints with `--message-format=json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub const TARGET: &str = "aarch64-unknown-linux-musl";

/// Binary name → the executable cargo built.
pub type Executables = BTreeMap<String, PathBuf>;

/// Makes sure the Rust target is installed, adding it with rustup when it is missing.
pub fn ensure_target(log: &mut dyn FnMut(&str)) -> Result<()> {
    let installed = duct::cmd!("rustup", "target", "list", "--installed")
        .stderr_null()
        .read()
        .context("running `rustup target list --installed`: is rustup installed? The image needs rustup's aarch64-unknown-linux-musl target")?;
    if installed.lines().any(|l| l.trim() == TARGET) {
        return Ok(());
    }
    log(&format!(
        "the Rust target {TARGET} is missing: running `rustup target add {TARGET}`"
    ));
    duct::cmd!("rustup", "target", "add", TARGET)
        .run()
        .with_context(|| {
            format!("`rustup target add {TARGET}` failed; run it by hand and retry")
        })?;
    Ok(())
}

/// Builds the packages' binaries in release mode for `TARGET`, with `features` (each
/// `package/feature`); with `locked`, cargo must not change Cargo.lock either.
pub fn build(
    root: &Path,
    packages: &[&str],
    features: &[String],
    locked: bool,
) -> Result<Executables> {
    // Paths of the checkout and of CARGO_HOME would otherwise end up in panic messages, so two
    // clones in different folders would build different bytes.
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|_| PathBuf::from("/root/.cargo"));
    let flags = [
        "-Ctarget-feature=+crt-static".to_string(),
        format!("--remap-path-prefix={}=/build", root.display()),
        format!("--remap-path-prefix={}=/cargo", cargo_home.display()),
    ]
    .join("\x1f");
    let mut args = build_args(packages, Some(TARGET), locked);
    args.extend(feature_args(features));
    cargo_build(root, &args, &[("CARGO_ENCODED_RUSTFLAGS", flags)])
}

/// `--features a/x,b/y`, or nothing: without the flag every package gets its defaults only.
fn feature_args(features: &[String]) -> Vec<String> {
    if features.is_empty() {
        return Vec::new();
    }
    vec!["--features".into(), features.join(",")]
}

/// `cargo build` arguments: release, machine-readable artifact messages (diagnostics still
/// rendered for people on stderr).
fn build_args(packages: &[&str], target: Option<&str>, locked: bool) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "build".into(),
        "--release".into(),
        "--message-format=json-render-diagnostics".into(),
    ];
    if let Some(target) = target {
        args.push("--target".into());
        args.push(target.into());
    }
    if locked {
        args.push("--locked".into());
    }
    for p in packages {
        args.push("-p".into());
        args.push((*p).to_string());
    }
    args
}

/// Runs cargo in `dir` and returns the executables it reports.
fn cargo_build(dir: &Path, args: &[String], env: &[(&str, String)]) -> Result<Executables> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = duct::cmd(cargo, args).dir(dir).stdout_capture().unchecked();
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let out = cmd.run().context("running cargo")?;
    if !out.status.success() {
        bail!("cargo {} failed (see its output above)", args.join(" "));
    }
    executables(&String::from_utf8_lossy(&out.stdout))
}

/// The `bin` executables in cargo's JSON messages, one message a line; other lines are skipped.
fn executables(messages: &str) -> Result<Executables> {
    let mut out = Executables::new();
    for line in messages.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let is_bin = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "bin"));
        let Some(name) = msg["target"]["name"].as_str().filter(|_| is_bin) else {
            continue;
        };
        let exe = PathBuf::from(exe);
        if let Some(prev) = out.get(name)
            && *prev != exe
        {
            bail!(
                "cargo built two binaries named {name}: {} and {}",
                prev.display(),
                exe.display()
            );
        }
        out.insert(name.to_string(), exe);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_reaches_cargo() {
        let args = build_args(&["init", "nat-init"], Some(TARGET), true);
        assert!(args.contains(&"--locked".to_string()), "{args:?}");
        assert!(args.windows(2).any(|w| w == ["--target", TARGET]));
        assert!(args.windows(2).any(|w| w == ["-p", "nat-init"]));
        assert!(!build_args(&["init"], Some(TARGET), false).contains(&"--locked".to_string()));
    }

    #[test]
    fn features_reach_cargo_only_when_asked_for() {
        assert!(feature_args(&[]).is_empty());
        assert_eq!(
            feature_args(&["init/test-console".into(), "nat-init/x".into()]),
            ["--features", "init/test-console,nat-init/x"]
        );
    }

    #[test]
    fn executables_come_from_bin_artifacts_only() {
        let messages = r#"{"reason":"compiler-artifact","package_id":"registry+x#libc@0.2.1","target":{"kind":["custom-build"],"name":"build-script-build"},"filenames":["/t/release/build/libc-1/build-script-build"],"executable":null,"fresh":true}
{"reason":"build-script-executed","package_id":"registry+x#libc@0.2.1"}
{"reason":"compiler-artifact","package_id":"path+file:///w/nat-init#0.1.0","target":{"kind":["lib"],"name":"nat_init"},"filenames":["/t/libnat_init.rlib"],"executable":null,"fresh":false}
{"reason":"compiler-artifact","package_id":"path+file:///w/init#0.1.0","target":{"kind":["bin"],"name":"init"},"filenames":["/elsewhere/aarch64-unknown-linux-musl/release/init"],"executable":"/elsewhere/aarch64-unknown-linux-musl/release/init","fresh":false}
{"reason":"compiler-artifact","package_id":"path+file:///w/init#0.1.0","target":{"kind":["bin"],"name":"heartbeat"},"executable":"/elsewhere/aarch64-unknown-linux-musl/release/heartbeat","fresh":true}
not json at all
{"reason":"build-finished","success":true}
"#;
        let exes = executables(messages).unwrap();
        assert_eq!(exes.len(), 2, "{exes:?}");
        assert_eq!(
            exes["init"],
            Path::new("/elsewhere/aarch64-unknown-linux-musl/release/init")
        );
        assert!(exes.contains_key("heartbeat"));
        let twice = format!(
            "{messages}{}\n",
            r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"init"},"executable":"/other/init"}"#
        );
        let err = executables(&twice).unwrap_err().to_string();
        assert!(err.contains("two binaries named init"), "{err}");
    }

    /// A real cargo with CARGO_TARGET_DIR set elsewhere: the executable is where cargo put it,
    /// not under the crate's own target/.
    #[test]
    fn follows_cargo_target_dir() {
        let dir = crate::deb::tests::tempdir("binaries-target-dir");
        let krate = dir.join("probe");
        std::fs::create_dir_all(krate.join("src")).unwrap();
        std::fs::write(
            krate.join("Cargo.toml"),
            "[package]\nname = \"probe\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
        )
        .unwrap();
        std::fs::write(krate.join("src/main.rs"), "fn main() {}\n").unwrap();
        let target_dir = dir.join("elsewhere");
        let mut args = build_args(&["probe"], None, false);
        args.push("--quiet".into());
        let exes = cargo_build(
            &krate,
            &args,
            &[("CARGO_TARGET_DIR", target_dir.display().to_string())],
        )
        .unwrap();
        let exe = &exes["probe"];
        assert!(exe.starts_with(&target_dir), "{}", exe.display());
        assert!(exe.is_file(), "{}", exe.display());
        assert!(!krate.join("target").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Build speed: `cargo xtask image` timed from outside, cold (our crates and the output gone)
//! and warm (nothing changed), with the stage times it prints.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::parse::{self, stats};
use super::{BASELINE, OURS, Options, round3};
use crate::{image, netns};

/// `cargo xtask image` as a user runs it, timed from outside, with the stage times it prints.
fn timed_image_build(root: &Path, profile: &str) -> Result<Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let t = Instant::now();
    let out = duct::cmd(cargo, ["xtask", "image", "--profile", profile])
        .dir(root)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .context("running cargo xtask image")?;
    let secs = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("cargo xtask image --profile {profile} failed:\n{text}");
    }
    let stages: Vec<Value> = parse::stage_times(&text)
        .into_iter()
        .map(|(name, s)| json!([name, s]))
        .collect();
    Ok(
        json!({"seconds": round3(secs), "stages": stages, "up_to_date": text.contains(" is up to date")}),
    )
}

pub fn build_speed(root: &Path, opts: &Options) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for profile in [OURS, BASELINE] {
        let mut entry = serde_json::Map::new();
        if opts.quick {
            entry.insert("cold".into(), json!({"skipped": "--quick"}));
            // Make sure the warm run below has something to be warm about.
            timed_image_build(root, profile)?;
        } else {
            // Cold: inputs cached and dependencies compiled, but our crates, the output
            // directory and its stamp are gone. (The baseline compiles nothing.)
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            if profile == OURS {
                netns::sh(
                    &cargo,
                    &[
                        "clean",
                        "--manifest-path",
                        &root.join("Cargo.toml").display().to_string(),
                        "--release",
                        "--target",
                        crate::binaries::TARGET,
                        "-p",
                        "init",
                        "-p",
                        "nat-init",
                    ],
                )?;
            }
            let dir = image::default_out(root, profile);
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_file(dir.with_file_name(format!(".{profile}.stamp")));
            entry.insert("cold".into(), timed_image_build(root, profile)?);
        }
        let mut warm = Vec::new();
        let mut last = Value::Null;
        for _ in 0..opts.runs.max(1) {
            let w = timed_image_build(root, profile)?;
            warm.push(w["seconds"].as_f64().unwrap_or(0.0));
            last = w;
        }
        entry.insert("warm_runs".into(), json!(warm));
        entry.insert("warm".into(), stats(&warm));
        entry.insert("warm_last".into(), last);
        out.insert(profile.into(), Value::Object(entry));
    }
    let warm = out[OURS]["warm"]["median"].as_f64().unwrap_or(f64::MAX);
    out.insert(
        "goal".into(),
        json!({"warm_under_seconds": 3.0, "met": warm < 3.0}),
    );
    Ok(Value::Object(out))
}

//! Stage 1, binaries: cross-compiles init and the profile's services and reads their bytes.
//! The profile decides the cargo features: init's test console only in test profiles
//! (`[init] test_console = true`); the manifest records them and `cargo xtask ami` refuses
//! an image whose init has it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use super::say;
use crate::binaries;
use crate::profile::{Profile, Service};

/// The on-image binaries. A profile whose PID 1 is a script (the bench baseline) has none.
pub struct Binaries {
    pub init: Option<Vec<u8>>,
    pub services: Vec<(Service, Vec<u8>)>,
}

/// init's cargo feature for the `init-test` console commands.
pub const TEST_CONSOLE_FEATURE: &str = "test-console";

/// Each on-image package with the cargo features it is built with (none by default), by
/// package name. Empty for a profile whose PID 1 is a script: nothing is compiled.
pub fn features(profile: &Profile) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    if profile.init.script.is_some() {
        return out;
    }
    let init: Vec<String> = if profile.init.test_console {
        vec![TEST_CONSOLE_FEATURE.to_string()]
    } else {
        Vec::new()
    };
    out.insert("init".to_string(), init);
    for s in &profile.services {
        out.entry(s.package.clone()).or_default();
    }
    out
}

/// The features as cargo's `package/feature` list.
pub fn cargo_features(features: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    features
        .iter()
        .flat_map(|(p, fs)| fs.iter().map(move |f| format!("{p}/{f}")))
        .collect()
}

/// The features as one stable text, for the image stamp: `package:feature,feature` lines.
pub fn features_text(features: &BTreeMap<String, Vec<String>>) -> String {
    features
        .iter()
        .map(|(p, fs)| format!("{p}:{}\n", fs.join(",")))
        .collect()
}

pub fn binaries(root: &Path, profile: &Profile, locked: bool) -> Result<Binaries> {
    let mut bins = Binaries {
        init: None,
        services: Vec::new(),
    };
    if profile.init.script.is_some() {
        return Ok(bins);
    }
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
    let features = cargo_features(&features(profile));
    if !features.is_empty() {
        say(&format!("with features {}", features.join(", ")));
    }
    let exes = binaries::build(root, &pkgs, &features, locked)?;
    let read_bin = |name: &str| -> Result<Vec<u8>> {
        let p = exes.get(name).with_context(|| {
            format!(
                "cargo reported no binary {name} (it built: {})",
                exes.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        std::fs::read(p).with_context(|| format!("reading built binary {}", p.display()))
    };
    bins.init = Some(read_bin("init")?);
    for s in &profile.services {
        bins.services.push((s.clone(), read_bin(s.binary())?));
    }
    Ok(bins)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Loaded;

    fn root() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    #[test]
    fn only_test_profiles_build_init_with_the_test_console() {
        let prod = Loaded::load(&root(), "nat-t4g").unwrap();
        let e2e = Loaded::load(&root(), "nat-t4g-e2e").unwrap();
        let baseline = Loaded::load(&root(), "baseline-busybox-nft").unwrap();
        let prod = features(&prod.profile);
        assert_eq!(
            prod,
            BTreeMap::from([("init".into(), vec![]), ("nat-init".into(), vec![])])
        );
        assert!(cargo_features(&prod).is_empty());
        let e2e = features(&e2e.profile);
        assert_eq!(cargo_features(&e2e), ["init/test-console"]);
        assert_eq!(features_text(&e2e), "init:test-console\nnat-init:\n");
        assert_ne!(features_text(&prod), features_text(&e2e));
        assert!(features(&baseline.profile).is_empty());
    }
}

//! Stage 1, binaries: cross-compiles init and the profile's services and reads their bytes.

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
    let exes = binaries::build(root, &pkgs, locked)?;
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

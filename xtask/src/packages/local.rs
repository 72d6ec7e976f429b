//! Local .deb files (`--kernel-deb FILE`) that stand in for apt for the roles they match.

use std::path::PathBuf;

use anyhow::{Result, bail};

use super::Request;
use super::lock::LockEntry;
use crate::deb;

pub(super) struct LocalDeb {
    pub(super) path: PathBuf,
    pub(super) control: deb::Control,
}

pub(super) fn read_local_debs(paths: &[PathBuf]) -> Result<Vec<LocalDeb>> {
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
pub(super) fn local_matches(local: &LocalDeb, req: &Request, old: Option<&LockEntry>) -> bool {
    let p = &local.control.package;
    *p == req.name
        || old.is_some_and(|o| o.package == *p)
        || (req.name.starts_with("linux-image-") && p.starts_with("linux-image-"))
}

/// Takes the local .deb that replaces apt for `req`, if any.
pub(super) fn take_local(
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

pub(super) fn unmatched_local(local: &LocalDeb, requests: &[Request]) -> anyhow::Error {
    let names: Vec<&str> = requests.iter().map(|r| r.name.as_str()).collect();
    anyhow::anyhow!(
        "{} ({}) matches none of the requested packages: {}",
        local.path.display(),
        local.control.package,
        names.join(", ")
    )
}

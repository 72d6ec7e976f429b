//! The profile's Debian arm64 packages (kernel, boot loader): resolving them with the host's
//! apt, fetching and verifying the .deb files, caching them by sha256 and recording the exact
//! versions in the profile's lock file.
//!
//! apt runs with its lists and cache inside our cache directory and an empty dpkg status, so
//! the host's package state is never read or changed. A build with a lock file and a warm
//! cache does not run apt at all.
//!
//! - `lock`: the lock file and the decisions it drives;
//! - `apt`: the host's apt, pointed at our cache;
//! - `cache`: downloaded .deb files and their unpacked trees, by sha256;
//! - `local`: .deb files given on the command line in place of apt;
//! - `resolve`: all of the above, from the profile's requests to unpacked packages.

mod apt;
mod cache;
mod local;
mod lock;
mod resolve;

use std::path::PathBuf;

pub use resolve::resolve;

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
    /// The command that moves the lock (`cargo xtask image --profile P --update`), named by
    /// every error of a locked build that would have to change it.
    pub update_command: String,
}

//! The image's facts, read from `target/images/<profile>/manifest.json` as `cargo xtask image`
//! writes it: profile name, version, commit and each artifact's size and sha256. An image
//! built with a test-only cargo feature (init's test console) is refused: it never becomes
//! an AMI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no built image for profile {profile}: {path} is missing; run `cargo xtask image --profile {profile}` first"
    )]
    NoImage { profile: String, path: PathBuf },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a manifest `cargo xtask image` wrote: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "{path}: profile {profile} was built with the test-only cargo feature {package}/{feature}, which must never reach an AMI; publish a production profile (e.g. nat-t4g)"
    )]
    TestBuild {
        path: PathBuf,
        profile: String,
        package: String,
        feature: String,
    },
    #[error(
        "{path} does not record the cargo features its binaries were built with (an older `cargo xtask image`); run `cargo xtask image --profile {profile}` again"
    )]
    NoFeatures { path: PathBuf, profile: String },
    #[error("{path} lists no {file}; run `cargo xtask image --profile {profile}` again")]
    NoArtifact {
        path: PathBuf,
        file: String,
        profile: String,
    },
}

/// Cargo features that only test images are built with, as (package, feature).
pub const TEST_ONLY_FEATURES: &[(&str, &str)] = &[("init", "test-console")];

#[derive(Debug, Clone, Deserialize)]
struct Raw {
    profile: RawProfile,
    /// Package → the cargo features it was built with.
    cargo_features: Option<BTreeMap<String, Vec<String>>>,
    version: String,
    commit: String,
    artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawProfile {
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Artifact {
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

/// What `cargo xtask ami` needs to know about a built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The directory holding manifest.json and the disks.
    pub dir: PathBuf,
    pub profile: String,
    pub version: String,
    pub commit: String,
    pub raw: Artifact,
    pub vmdk: Option<Artifact>,
}

impl Image {
    pub fn raw_path(&self) -> PathBuf {
        self.dir.join(&self.raw.file)
    }

    /// Loads the manifest in `dir` and checks that `disk.raw` is there with the recorded size.
    pub fn load(dir: &Path, profile: &str) -> Result<Image, Error> {
        let path = dir.join("manifest.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoImage {
                    profile: profile.to_string(),
                    path,
                });
            }
            Err(source) => return Err(Error::Read { path, source }),
        };
        let image = Self::parse(dir, &text).map_err(|source| Error::Parse {
            path: path.clone(),
            source,
        })?;
        refuse_test_build(&path, &text)?;
        let Some(image) = image else {
            return Err(Error::NoArtifact {
                path,
                file: "disk.raw".into(),
                profile: profile.to_string(),
            });
        };
        let raw = image.raw_path();
        match std::fs::metadata(&raw) {
            Ok(m) if m.len() == image.raw.size => Ok(image),
            Ok(_) | Err(_) => Err(Error::NoImage {
                profile: profile.to_string(),
                path: raw,
            }),
        }
    }

    /// Parses manifest text; `Ok(None)` when it lists no disk.raw.
    pub fn parse(dir: &Path, text: &str) -> Result<Option<Image>, serde_json::Error> {
        let raw: Raw = serde_json::from_str(text)?;
        let find = |name: &str| raw.artifacts.iter().find(|a| a.file == name).cloned();
        let Some(disk) = find("disk.raw") else {
            return Ok(None);
        };
        Ok(Some(Image {
            dir: dir.to_path_buf(),
            profile: raw.profile.name.clone(),
            version: raw.version.clone(),
            commit: raw.commit.clone(),
            raw: disk,
            vmdk: find("disk.vmdk"),
        }))
    }
}

/// Refuses manifest text whose binaries were built with a test-only feature, or that does not
/// say what they were built with.
pub fn refuse_test_build(path: &Path, text: &str) -> Result<(), Error> {
    let raw: Raw = serde_json::from_str(text).map_err(|source| Error::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let profile = raw.profile.name;
    let Some(features) = raw.cargo_features else {
        return Err(Error::NoFeatures {
            path: path.to_path_buf(),
            profile,
        });
    };
    for (package, feature) in TEST_ONLY_FEATURES {
        if features
            .get(*package)
            .is_some_and(|fs| fs.iter().any(|f| f == feature))
        {
            return Err(Error::TestBuild {
                path: path.to_path_buf(),
                profile,
                package: package.to_string(),
                feature: feature.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) const SAMPLE: &str = r#"{
  "profile": { "name": "nat-t4g", "path": "images/nat-t4g.toml", "sha256": "00", "description": "NAT" },
  "version": "0.1.0",
  "commit": "0123456789abcdef0123456789abcdef01234567",
  "source_date_epoch": 1764000000,
  "cargo_features": { "init": [], "nat-init": [] },
  "disk": { "size_bytes": 1073741824 },
  "artifacts": [
    { "file": "disk.raw", "size": 1073741824, "sha256": "aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899" },
    { "file": "disk.vhd", "size": 1073742336, "sha256": "11" },
    { "file": "disk.vmdk", "size": 12345678, "sha256": "22" }
  ]
}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fields_it_needs_and_ignores_the_rest() {
        let img = Image::parse(Path::new("/x"), SAMPLE).unwrap().unwrap();
        assert_eq!(img.profile, "nat-t4g");
        assert_eq!(img.version, "0.1.0");
        assert_eq!(img.commit, "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(img.raw.size, 1 << 30);
        assert_eq!(img.vmdk.as_ref().map(|a| a.size), Some(12345678));
        assert_eq!(img.raw_path(), Path::new("/x/disk.raw"));
    }

    #[test]
    fn test_console_builds_are_refused() {
        let p = Path::new("/x/manifest.json");
        assert!(refuse_test_build(p, SAMPLE).is_ok());
        let e2e = SAMPLE
            .replace("\"nat-t4g\"", "\"nat-t4g-e2e\"")
            .replace("\"init\": []", "\"init\": [\"test-console\"]");
        let msg = refuse_test_build(p, &e2e).unwrap_err().to_string();
        assert!(
            msg.contains("profile nat-t4g-e2e") && msg.contains("init/test-console"),
            "{msg}"
        );
        // A manifest that does not say is refused too: it may be an old test build.
        let old = SAMPLE.replace(
            "\"cargo_features\": { \"init\": [], \"nat-init\": [] },",
            "",
        );
        let msg = refuse_test_build(p, &old).unwrap_err().to_string();
        assert!(msg.contains("does not record the cargo features"), "{msg}");
        // And so does loading the image, before anything looks at its disk.
        let dir = std::env::temp_dir().join(format!("xtask-ami-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("manifest.json"), &e2e).unwrap();
        let msg = Image::load(&dir, "nat-t4g-e2e").unwrap_err().to_string();
        assert!(msg.contains("init/test-console"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_disk_raw_is_reported() {
        let text = SAMPLE.replace("disk.raw", "disk.img");
        assert!(Image::parse(Path::new("/x"), &text).unwrap().is_none());
    }

    #[test]
    fn missing_manifest_names_the_fix() {
        let e = Image::load(Path::new("/nonexistent/images/p1"), "p1").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("run `cargo xtask image --profile p1` first"),
            "{msg}"
        );
    }

    #[test]
    fn disk_raw_absent_on_disk_names_the_fix() {
        let dir = std::env::temp_dir().join(format!("xtask-ami-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("manifest.json"), SAMPLE).unwrap();
        let msg = Image::load(&dir, "nat-t4g").unwrap_err().to_string();
        assert!(msg.contains("disk.raw is missing"), "{msg}");
        assert!(msg.contains("cargo xtask image --profile nat-t4g"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

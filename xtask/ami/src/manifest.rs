//! The image's facts, read from `target/images/<profile>/manifest.json` as `cargo xtask image`
//! writes it: profile name, version, commit and each artifact's size and sha256.

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
    #[error("{path} lists no {file}; run `cargo xtask image --profile {profile}` again")]
    NoArtifact {
        path: PathBuf,
        file: String,
        profile: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
struct Raw {
    profile: RawProfile,
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

#[cfg(test)]
pub(crate) const SAMPLE: &str = r#"{
  "profile": { "name": "nat-t4g", "path": "images/nat-t4g.toml", "sha256": "00", "description": "NAT" },
  "version": "0.1.0",
  "commit": "0123456789abcdef0123456789abcdef01234567",
  "source_date_epoch": 1764000000,
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

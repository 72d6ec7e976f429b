//! The AMI's identity and RegisterImage's parameters: name, description and tags from the
//! manifest, and the fixed flags a Graviton (arm64, UEFI, Nitro) AMI needs.

use crate::awscli::{Command, Word, expand, lit};
use crate::manifest::Image;

/// Fixed RegisterImage flags. Nitro instance types refuse an AMI without ENA support;
/// Graviton firmware boots UEFI only.
pub const ARCHITECTURE: &str = "arm64";
pub const BOOT_MODE: &str = "uefi";
pub const VIRTUALIZATION_TYPE: &str = "hvm";
pub const IMDS_SUPPORT: &str = "v2.0";
pub const ROOT_DEVICE: &str = "/dev/xvda";
pub const VOLUME_TYPE: &str = "gp3";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub description: String,
    pub tags: Vec<(String, String)>,
}

/// AMI names allow letters, digits and `()[] ./-'@_`, 3 to 128 characters.
pub fn sanitize_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    while out.len() < 3 {
        out.push('_');
    }
    out
}

/// Commit as `0123456789ab` or `0123456789ab-dirty`.
fn short_commit(commit: &str) -> String {
    let base: String = commit.trim_end_matches("-dirty").chars().take(12).collect();
    if commit.ends_with("-dirty") {
        format!("{base}-dirty")
    } else {
        base
    }
}

impl Identity {
    pub fn from_image(image: &Image, name_override: Option<&str>) -> Identity {
        let sha = &image.raw.sha256;
        let short_sha: String = sha.chars().take(12).collect();
        let name = match name_override {
            Some(n) => sanitize_name(n),
            None => sanitize_name(&format!(
                "{}-{}-{}-{}",
                image.profile,
                image.version,
                short_commit(&image.commit),
                short_sha
            )),
        };
        let description: String = format!(
            "{} {} commit {} disk.raw sha256 {}",
            image.profile, image.version, image.commit, sha
        )
        .chars()
        .take(255)
        .collect();
        let tags = vec![
            ("Name".to_string(), name.clone()),
            ("appliance:profile".to_string(), image.profile.clone()),
            ("appliance:version".to_string(), image.version.clone()),
            ("appliance:commit".to_string(), image.commit.clone()),
            ("appliance:disk-sha256".to_string(), sha.clone()),
        ];
        Identity {
            name,
            description,
            tags,
        }
    }
}

/// Everything RegisterImage is called with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterParams {
    pub identity: Identity,
    pub snapshot_id: String,
}

impl RegisterParams {
    /// The request as EC2's query protocol spells it, in a fixed order; `--dry-run` prints these.
    pub fn query_params(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = [
            ("Name", self.identity.name.as_str()),
            ("Description", self.identity.description.as_str()),
            ("Architecture", ARCHITECTURE),
            ("BootMode", BOOT_MODE),
            ("VirtualizationType", VIRTUALIZATION_TYPE),
            ("EnaSupport", "true"),
            ("ImdsSupport", IMDS_SUPPORT),
            ("RootDeviceName", ROOT_DEVICE),
            ("BlockDeviceMapping.1.DeviceName", ROOT_DEVICE),
            (
                "BlockDeviceMapping.1.Ebs.SnapshotId",
                self.snapshot_id.as_str(),
            ),
            ("BlockDeviceMapping.1.Ebs.VolumeType", VOLUME_TYPE),
            ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"),
            ("TagSpecification.1.ResourceType", "image"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (i, (k, v)) in self.identity.tags.iter().enumerate() {
            p.push((format!("TagSpecification.1.Tag.{}.Key", i + 1), k.clone()));
            p.push((format!("TagSpecification.1.Tag.{}.Value", i + 1), v.clone()));
        }
        p
    }

    /// `aws ec2 register-image ...`; `snapshot` is the id or a `$SNAP` reference.
    pub fn cli(&self, region: Option<&str>) -> Command {
        let snap: Word = if self.snapshot_id.starts_with('$') {
            expand(self.snapshot_id.clone())
        } else {
            lit(self.snapshot_id.clone())
        };
        let mapping = format!(
            "DeviceName={ROOT_DEVICE},Ebs={{SnapshotId={},VolumeType={VOLUME_TYPE},DeleteOnTermination=true}}",
            match &snap {
                Word::Lit(s) | Word::Expand(s) => s,
            }
        );
        let mapping = match snap {
            Word::Expand(_) => expand(mapping),
            Word::Lit(_) => lit(mapping),
        };
        Command::aws("ec2", "register-image", region)
            .arg("--name", lit(self.identity.name.clone()))
            .arg("--description", lit(self.identity.description.clone()))
            .arg("--architecture", lit(ARCHITECTURE))
            .arg("--boot-mode", lit(BOOT_MODE))
            .arg("--virtualization-type", lit(VIRTUALIZATION_TYPE))
            .flag("--ena-support")
            .arg("--imds-support", lit(IMDS_SUPPORT))
            .arg("--root-device-name", lit(ROOT_DEVICE))
            .arg("--block-device-mappings", mapping)
            .arg(
                "--tag-specifications",
                lit(tag_spec("image", &self.identity.tags)),
            )
            .capture("AMI", "ImageId")
    }
}

/// `ResourceType=image,Tags=[{Key=k,Value=v},...]` in the CLI's shorthand syntax.
pub fn tag_spec(resource: &str, tags: &[(String, String)]) -> String {
    let list: Vec<String> = tags
        .iter()
        .map(|(k, v)| format!("{{Key={k},Value={v}}}"))
        .collect();
    format!("ResourceType={resource},Tags=[{}]", list.join(","))
}

/// `Key=k,Value=v Key=...` words for `--tags` of `aws ebs start-snapshot`.
pub fn tag_words(tags: &[(String, String)]) -> Vec<Word> {
    tags.iter()
        .map(|(k, v)| lit(format!("Key={k},Value={v}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::SAMPLE;
    use std::path::Path;

    fn image() -> Image {
        Image::parse(Path::new("/x"), SAMPLE).unwrap().unwrap()
    }

    #[test]
    fn name_and_description_carry_profile_version_commit_sha() {
        let id = Identity::from_image(&image(), None);
        assert_eq!(id.name, "nat-t4g-0.1.0-0123456789ab-aabbccddeeff");
        assert_eq!(
            id.description,
            "nat-t4g 0.1.0 commit 0123456789abcdef0123456789abcdef01234567 disk.raw sha256 \
             aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899"
        );
        assert!(id.tags.contains(&("Name".into(), id.name.clone())));
        assert!(
            id.tags
                .contains(&("appliance:commit".into(), image().commit))
        );
    }

    #[test]
    fn dirty_commit_and_override_are_sanitized() {
        let mut img = image();
        img.commit = "0123456789abcdef0123456789abcdef01234567-dirty".into();
        let id = Identity::from_image(&img, None);
        assert_eq!(id.name, "nat-t4g-0.1.0-0123456789ab-dirty-aabbccddeeff");
        let id = Identity::from_image(&img, Some("my ami: v1!"));
        assert_eq!(id.name, "my ami- v1-");
        assert_eq!(sanitize_name("x"), "x__");
        assert_eq!(sanitize_name(&"a".repeat(300)).len(), 128);
    }

    #[test]
    fn register_params_carry_the_graviton_flags() {
        let p = RegisterParams {
            identity: Identity::from_image(&image(), None),
            snapshot_id: "snap-1".into(),
        };
        let q = p.query_params();
        let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("Architecture"), Some("arm64"));
        assert_eq!(get("BootMode"), Some("uefi"));
        assert_eq!(get("VirtualizationType"), Some("hvm"));
        assert_eq!(get("EnaSupport"), Some("true"));
        assert_eq!(get("ImdsSupport"), Some("v2.0"));
        assert_eq!(get("RootDeviceName"), Some("/dev/xvda"));
        assert_eq!(get("BlockDeviceMapping.1.DeviceName"), Some("/dev/xvda"));
        assert_eq!(get("BlockDeviceMapping.1.Ebs.SnapshotId"), Some("snap-1"));
        assert_eq!(get("BlockDeviceMapping.1.Ebs.VolumeType"), Some("gp3"));
        assert_eq!(
            get("BlockDeviceMapping.1.Ebs.DeleteOnTermination"),
            Some("true")
        );
        assert_eq!(get("TagSpecification.1.Tag.1.Key"), Some("Name"));
    }

    #[test]
    fn register_cli_matches_the_flags() {
        let p = RegisterParams {
            identity: Identity {
                name: "n1".into(),
                description: "d 1".into(),
                tags: vec![("Name".into(), "n1".into())],
            },
            snapshot_id: "$SNAP".into(),
        };
        assert_eq!(
            p.cli(Some("us-east-1")).render(),
            "AMI=$(aws ec2 register-image --region us-east-1 --name n1 --description 'd 1' \
             --architecture arm64 --boot-mode uefi --virtualization-type hvm --ena-support \
             --imds-support v2.0 --root-device-name /dev/xvda --block-device-mappings \
             \"DeviceName=/dev/xvda,Ebs={SnapshotId=$SNAP,VolumeType=gp3,DeleteOnTermination=true}\" \
             --tag-specifications 'ResourceType=image,Tags=[{Key=Name,Value=n1}]' \
             --query ImageId --output text)"
        );
    }
}

//! Command-line flags of `cargo xtask ami`, parsed with lexopt in one place.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Result, bail};
use lexopt::prelude::*;

pub const USAGE: &str = "\
usage: cargo xtask ami [options]

Turns target/images/<profile>/disk.raw into a registered arm64 (Graviton) AMI:
an EBS snapshot, then RegisterImage (arm64, UEFI, ENA, IMDSv2 only, gp3 root /dev/xvda).

options:
  --profile NAME         image profile (default nat-t4g)
  --region R             AWS region (default: the AWS config chain)
  --aws-profile NAME     AWS shared-config profile (default: AWS_PROFILE or the chain)
  --name NAME            AMI name (default <profile>-<version>-<commit>-<sha256>)
  --via ebs-direct|s3    snapshot route (default ebs-direct: no bucket, no service role)
  --bucket B             S3 bucket for --via s3 (ImportSnapshot with the vmimport role)
  --format vmdk|raw      disk uploaded by --via s3 (default vmdk)
  --public               make the AMI public after it is available
  --jobs N               parallel PutSnapshotBlock requests (default 16)
  --dry-run              print every AWS call and the equivalent aws CLI; needs no credentials
  --print-policy         print the IAM policies (caller, vmimport role) and exit
  --endpoint-url URL     send every AWS call to URL (a local test double)
  --image-dir DIR        image directory (default target/images/<profile>)
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    EbsDirect,
    S3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Vmdk,
    Raw,
}

impl Format {
    pub fn file(self) -> &'static str {
        match self {
            Format::Vmdk => "disk.vmdk",
            Format::Raw => "disk.raw",
        }
    }

    /// ImportSnapshot's DiskContainer.Format.
    pub fn api_name(self) -> &'static str {
        match self {
            Format::Vmdk => "VMDK",
            Format::Raw => "RAW",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub profile: String,
    pub region: Option<String>,
    pub aws_profile: Option<String>,
    pub name: Option<String>,
    pub via: Via,
    pub bucket: Option<String>,
    pub format: Format,
    pub public: bool,
    pub jobs: usize,
    pub dry_run: bool,
    pub print_policy: bool,
    pub endpoint_url: Option<String>,
    pub image_dir: Option<PathBuf>,
    pub help: bool,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            profile: "nat-t4g".into(),
            region: None,
            aws_profile: None,
            name: None,
            via: Via::EbsDirect,
            bucket: None,
            format: Format::Vmdk,
            public: false,
            jobs: 16,
            dry_run: false,
            print_policy: false,
            endpoint_url: None,
            image_dir: None,
            help: false,
        }
    }
}

pub fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Args> {
    let mut a = Args::default();
    let mut p = lexopt::Parser::from_args(argv);
    while let Some(arg) = p.next()? {
        match arg {
            Long("profile") => a.profile = p.value()?.string()?,
            Long("region") => a.region = Some(p.value()?.string()?),
            Long("aws-profile") => a.aws_profile = Some(p.value()?.string()?),
            Long("name") => a.name = Some(p.value()?.string()?),
            Long("via") => {
                a.via = match p.value()?.string()?.as_str() {
                    "ebs-direct" => Via::EbsDirect,
                    "s3" => Via::S3,
                    other => bail!("--via {other}: expected ebs-direct or s3"),
                }
            }
            Long("bucket") => a.bucket = Some(p.value()?.string()?),
            Long("format") => {
                a.format = match p.value()?.string()?.as_str() {
                    "vmdk" => Format::Vmdk,
                    "raw" => Format::Raw,
                    other => bail!("--format {other}: expected vmdk or raw"),
                }
            }
            Long("public") => a.public = true,
            Long("jobs") => {
                a.jobs = p.value()?.parse()?;
                if a.jobs == 0 {
                    bail!("--jobs must be at least 1");
                }
            }
            Long("dry-run") => a.dry_run = true,
            Long("print-policy") => a.print_policy = true,
            Long("endpoint-url") => a.endpoint_url = Some(p.value()?.string()?),
            Long("image-dir") => a.image_dir = Some(p.value()?.into()),
            Long("help") | Short('h') => a.help = true,
            other => bail!("{}\n{USAGE}", other.unexpected()),
        }
    }
    match (a.via, &a.bucket) {
        (Via::S3, None) => {
            bail!("--via s3 needs --bucket B (an S3 bucket the vmimport role can read)")
        }
        (Via::EbsDirect, Some(_)) => bail!("--bucket is for --via s3 only"),
        _ => {}
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args> {
        parse(s.split_whitespace().map(OsString::from))
    }

    #[test]
    fn defaults() {
        let a = args("").unwrap();
        assert_eq!(a, Args::default());
        assert_eq!(a.via, Via::EbsDirect);
        assert_eq!(a.profile, "nat-t4g");
    }

    #[test]
    fn all_flags() {
        let a = args(
            "--profile p --region eu-west-1 --aws-profile dev --name n --via s3 --bucket b \
             --format raw --public --jobs 4 --dry-run --endpoint-url http://127.0.0.1:5 --image-dir /i",
        )
        .unwrap();
        assert_eq!(a.profile, "p");
        assert_eq!(a.region.as_deref(), Some("eu-west-1"));
        assert_eq!(a.aws_profile.as_deref(), Some("dev"));
        assert_eq!(a.via, Via::S3);
        assert_eq!(a.bucket.as_deref(), Some("b"));
        assert_eq!(a.format, Format::Raw);
        assert!(a.public && a.dry_run);
        assert_eq!(a.jobs, 4);
        assert_eq!(a.endpoint_url.as_deref(), Some("http://127.0.0.1:5"));
        assert_eq!(a.image_dir, Some(PathBuf::from("/i")));
    }

    #[test]
    fn bad_combinations_are_refused() {
        assert!(
            args("--via s3")
                .unwrap_err()
                .to_string()
                .contains("--bucket")
        );
        assert!(args("--bucket b").is_err());
        assert!(args("--via ftp").is_err());
        assert!(args("--jobs 0").is_err());
        assert!(args("--frobnicate").is_err());
    }
}

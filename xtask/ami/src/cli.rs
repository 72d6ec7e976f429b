//! Command-line flags of `cargo xtask ami`, declared once with argh: `--help` prints usage
//! generated from these declarations. [`parse`] also checks what they cannot (`--via s3`
//! needs `--bucket`).

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use argh::{FromArgValue, FromArgs};

use crate::deprecation::{self, Deprecation};
use crate::outputs;
use crate::regions::{self, Regions};

/// What `usage:` lines and `--help` call this program: `cargo xtask ami` runs it.
const PROGRAM: &str = "cargo xtask ami";

#[derive(Debug, Clone, Copy, PartialEq, Eq, FromArgValue)]
pub enum Via {
    #[argh(name = "ebs-direct")]
    EbsDirect,
    #[argh(name = "s3")]
    S3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, FromArgValue)]
pub enum Format {
    #[argh(name = "vmdk")]
    Vmdk,
    #[argh(name = "raw")]
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

/// Turns target/images/<profile>/disk.raw into a registered arm64 (Graviton) AMI: an EBS
/// snapshot, then RegisterImage (arm64, UEFI, ENA, IMDSv2 only, gp3 root /dev/xvda).
#[derive(FromArgs, Debug, Clone, PartialEq, Eq)]
#[argh(help_triggers("-h", "--help", "help"))]
pub struct Args {
    /// image profile (default nat-t4g)
    #[argh(option, arg_name = "NAME", default = "\"nat-t4g\".into()")]
    pub profile: String,
    /// AWS region (default: the AWS config chain)
    #[argh(option, arg_name = "R")]
    pub region: Option<String>,
    /// AWS shared-config profile (default: AWS_PROFILE or the chain)
    #[argh(option, arg_name = "NAME")]
    pub aws_profile: Option<String>,
    /// AMI name (default <profile>-<version>-<commit>-<sha256>)
    #[argh(option, arg_name = "NAME")]
    pub name: Option<String>,
    /// snapshot route (default ebs-direct: no bucket, no service role)
    #[argh(option, arg_name = "ebs-direct|s3", default = "Via::EbsDirect")]
    pub via: Via,
    /// S3 bucket for --via s3 (ImportSnapshot with the vmimport role)
    #[argh(option, arg_name = "B")]
    pub bucket: Option<String>,
    /// disk uploaded by --via s3 (default vmdk)
    #[argh(option, arg_name = "vmdk|raw", default = "Format::Vmdk")]
    pub format: Format,
    /// also copy the AMI to these regions (R1,R2,...), or to every region enabled for the
    /// account (all); it is registered in --region, else in the first listed
    #[argh(option, arg_name = "R1,R2,...|all", from_str_fn(parse_regions))]
    pub regions: Option<Regions>,
    /// make the AMI (and every copy) public after it is available
    #[argh(switch)]
    pub public: bool,
    /// deprecate the AMI (and every copy) DAYS days from now, or at an RFC 3339 TIME
    #[argh(option, arg_name = "DAYS|TIME", from_str_fn(parse_deprecation))]
    pub deprecate_in: Option<Deprecation>,
    /// store each region's AMI id in this SSM parameter there (e.g.
    /// /nat-appliance/nat-t4g/latest/arm64; String, data type aws:ec2:image)
    #[argh(option, arg_name = "NAME", from_str_fn(parse_parameter))]
    pub ssm_parameter: Option<String>,
    /// where to write the region -> AMI map (default <image dir>/amis.json)
    #[argh(option, arg_name = "FILE")]
    pub amis_json: Option<PathBuf>,
    /// minutes to wait for each copy to become available (default 60)
    #[argh(option, arg_name = "MIN", default = "60", from_str_fn(at_least_one))]
    pub copy_timeout: usize,
    /// parallel PutSnapshotBlock requests (default 16)
    #[argh(option, arg_name = "N", default = "16", from_str_fn(at_least_one))]
    pub jobs: usize,
    /// print every AWS call and the equivalent aws CLI; needs no credentials
    #[argh(switch)]
    pub dry_run: bool,
    /// print the IAM policies (caller, vmimport role) and exit
    #[argh(switch)]
    pub print_policy: bool,
    /// send every AWS call to URL (a local test double)
    #[argh(option, arg_name = "URL")]
    pub endpoint_url: Option<String>,
    /// image directory (default target/images/<profile>)
    #[argh(option, arg_name = "DIR")]
    pub image_dir: Option<PathBuf>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Boxed: the flags outweigh the usage text many times.
    Run(Box<Args>),
    /// `--help`: print this generated usage and stop.
    Usage(String),
}

/// Parses the words after `cargo xtask ami`.
pub fn parse<S: AsRef<std::ffi::OsStr>>(argv: &[S]) -> Result<Parsed> {
    let words = argv
        .iter()
        .map(|a| {
            let a = a.as_ref();
            a.to_str()
                .ok_or_else(|| anyhow!("argument {a:?} is not valid UTF-8"))
        })
        .collect::<Result<Vec<&str>>>()?;
    let a = match Args::from_args(&[PROGRAM], &words) {
        Ok(a) => a,
        Err(exit) if exit.status.is_ok() => return Ok(Parsed::Usage(exit.output)),
        Err(exit) => bail!("{}\nsee `{PROGRAM} --help`", exit.output.trim_end()),
    };
    match (a.via, &a.bucket) {
        (Via::S3, None) => {
            bail!("--via s3 needs --bucket B (an S3 bucket the vmimport role can read)")
        }
        (Via::EbsDirect, Some(_)) => bail!("--bucket is for --via s3 only"),
        _ => {}
    }
    Ok(Parsed::Run(Box::new(a)))
}

// argh's from_str_fn wants these exact signatures; the logic lives in the pure modules.
fn parse_regions(s: &str) -> Result<Regions, String> {
    regions::parse_regions(s)
}

fn parse_deprecation(s: &str) -> Result<Deprecation, String> {
    deprecation::parse(s)
}

fn parse_parameter(s: &str) -> Result<String, String> {
    outputs::parse_parameter_name(s)
}

/// `--jobs`, `--copy-timeout`: argh prefixes the error with the flag and the value.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args> {
        match parse(&s.split_whitespace().collect::<Vec<_>>())? {
            Parsed::Run(a) => Ok(*a),
            Parsed::Usage(u) => bail!("usage: {u}"),
        }
    }

    #[test]
    fn defaults() {
        let a = args("").unwrap();
        assert_eq!(
            a,
            Args {
                profile: "nat-t4g".into(),
                region: None,
                aws_profile: None,
                name: None,
                via: Via::EbsDirect,
                bucket: None,
                format: Format::Vmdk,
                regions: None,
                public: false,
                deprecate_in: None,
                ssm_parameter: None,
                amis_json: None,
                copy_timeout: 60,
                jobs: 16,
                dry_run: false,
                print_policy: false,
                endpoint_url: None,
                image_dir: None,
            }
        );
        assert_eq!(a.via, Via::EbsDirect);
        assert_eq!(a.profile, "nat-t4g");
    }

    #[test]
    fn help_is_generated() {
        for h in ["--help", "-h", "help"] {
            let Parsed::Usage(u) = parse(&[h]).unwrap() else {
                panic!("{h}: no usage")
            };
            assert!(
                u.starts_with("Usage: cargo xtask ami [--profile <NAME>]"),
                "{u}"
            );
            for flag in ["--via <ebs-direct|s3>", "--bucket <B>", "--print-policy"] {
                assert!(u.contains(flag), "{flag} missing from {u}");
            }
        }
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
    fn multi_region_flags() {
        let a = args(
            "--regions us-east-1,eu-west-1 --deprecate-in 90 --ssm-parameter /nat-appliance/p/latest/arm64 \
             --amis-json /o/amis.json --copy-timeout 5",
        )
        .unwrap();
        assert_eq!(
            a.regions,
            Some(Regions::List(vec!["us-east-1".into(), "eu-west-1".into()]))
        );
        assert_eq!(a.deprecate_in, Some(Deprecation::Days(90)));
        assert_eq!(
            a.ssm_parameter.as_deref(),
            Some("/nat-appliance/p/latest/arm64")
        );
        assert_eq!(a.amis_json, Some(PathBuf::from("/o/amis.json")));
        assert_eq!(a.copy_timeout, 5);
        assert_eq!(args("--regions all").unwrap().regions, Some(Regions::All));
        assert_eq!(
            args("--deprecate-in 2030-01-01T00:00:00Z")
                .unwrap()
                .deprecate_in,
            Some(Deprecation::At(1_893_456_000))
        );
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
        let e = args("--via ftp").unwrap_err().to_string();
        assert!(e.contains("--via") && e.contains("ftp"), "{e}");
        let e = args("--format qcow2").unwrap_err().to_string();
        assert!(e.contains("--format") && e.contains("qcow2"), "{e}");
        let e = args("--jobs 0").unwrap_err().to_string();
        assert!(e.contains("--jobs") && e.contains("at least 1"), "{e}");
        let e = args("--regions eu-west-1,all").unwrap_err().to_string();
        assert!(e.contains("--regions") && e.contains("all"), "{e}");
        let e = args("--deprecate-in later").unwrap_err().to_string();
        assert!(
            e.contains("--deprecate-in") && e.contains("RFC 3339"),
            "{e}"
        );
        let e = args("--ssm-parameter aws/x").unwrap_err().to_string();
        assert!(e.contains("--ssm-parameter"), "{e}");
        let e = args("--copy-timeout 0").unwrap_err().to_string();
        assert!(e.contains("--copy-timeout"), "{e}");
        let e = args("--frobnicate").unwrap_err().to_string();
        assert!(e.contains("--frobnicate"), "{e}");
    }
}

//! Command-line flags of `cargo xtask ami`, declared once with argh: `--help` prints usage
//! generated from these declarations. [`parse`] also checks what they cannot (`--via s3`
//! needs `--bucket`).

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use argh::{FromArgValue, FromArgs};

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
    /// make the AMI public after it is available
    #[argh(switch)]
    pub public: bool,
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
    Run(Args),
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
    Ok(Parsed::Run(a))
}

/// `--jobs`: argh prefixes the error with the flag and the value.
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
            Parsed::Run(a) => Ok(a),
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
                public: false,
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
        let e = args("--frobnicate").unwrap_err().to_string();
        assert!(e.contains("--frobnicate"), "{e}");
    }
}

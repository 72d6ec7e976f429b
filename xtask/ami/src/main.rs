//! xtask-ami: publishes the disk image `cargo xtask image` built as a registered arm64 AMI
//! (`cargo xtask ami`). `aws ec2 import-image` refuses arm64, so the disk becomes an EBS
//! snapshot (EBS direct APIs, or S3 + ImportSnapshot) and RegisterImage makes it an AMI.
//! `--regions` copies it to more regions, and the results go to a table, a region → AMI map
//! for the deploy templates and, optionally, an SSM parameter per region.
//! A crate of its own so the AWS SDK never slows down `cargo xtask image`.

mod awscli;
mod blocks;
mod checksum;
mod cli;
mod copies;
mod deprecation;
mod diagnose;
mod launch;
mod manifest;
mod outputs;
mod plan;
mod policy;
mod publish;
mod regions;
mod register;
mod retry;
mod wait;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::{Args, Via};
use crate::manifest::Image;
use crate::register::Identity;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `target/images/<profile>` of this workspace (or of CARGO_TARGET_DIR).
fn default_image_dir(profile: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // xtask/ami -> workspace root
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
        });
    target.join("images").join(profile)
}

fn run() -> Result<()> {
    let argv: Vec<_> = std::env::args_os().skip(1).collect();
    let args = match cli::parse(&argv)? {
        cli::Parsed::Run(args) => args,
        cli::Parsed::Usage(text) => {
            println!("{text}");
            return Ok(());
        }
    };
    if args.print_policy {
        print!("{}", policy::render_all(args.bucket.as_deref()));
        return Ok(());
    }
    let dir = args
        .image_dir
        .clone()
        .unwrap_or_else(|| default_image_dir(&args.profile));
    let image = Image::load(&dir, &args.profile)?;
    let identity = Identity::from_image(&image, args.name.as_deref());
    if args.dry_run {
        return dry_run(&args, &image, &identity);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(publish::run(&args, &image, &identity))
}

/// Prints the plan; reads the image but touches no network and needs no credentials.
fn dry_run(args: &Args, image: &Image, identity: &Identity) -> Result<()> {
    let env_region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|k| std::env::var(k).ok());
    let region = regions::home_region(args.region.as_deref(), args.regions.as_ref()).or(env_region);
    let deprecate_at = match args.deprecate_in {
        Some(d) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("the system clock is before 1970")?
                .as_secs();
            let now = i64::try_from(now).context("the system clock is out of range")?;
            let at = deprecation::deprecate_at(d, now, args.public)
                .map_err(|e| anyhow::anyhow!("--deprecate-in: {e}"))?;
            Some(deprecation::format(at))
        }
        None => None,
    };
    let raw = image.raw_path();
    let mut out = format!(
        "dry run: no AWS call is made and no credentials are needed.\n\
         image: {} ({} bytes, sha256 {})\n\
         profile {}, version {}, commit {}\n\
         region: {}\n\
         AMI name: {}\n",
        raw.display(),
        image.raw.size,
        image.raw.sha256,
        image.profile,
        image.version,
        image.commit,
        region
            .as_deref()
            .unwrap_or("(from the AWS config chain at run time)"),
        identity.name,
    );
    let scan;
    let raw_text = raw.display().to_string();
    let upload_text = image.dir.join(args.format.file()).display().to_string();
    let route = match args.via {
        Via::EbsDirect => {
            scan = blocks::scan(&raw, blocks::AWS_BLOCK_SIZE)?;
            out.push_str(&format!(
                "block size: {} (AWS's; the real one comes from StartSnapshot's answer)\n",
                blocks::AWS_BLOCK_SIZE
            ));
            plan::Route::EbsDirect {
                scan: &scan,
                raw_file: &raw_text,
                jobs: args.jobs,
            }
        }
        Via::S3 => {
            let file = args.format.file();
            let upload = upload_text.as_str();
            let art = match args.format {
                cli::Format::Vmdk => image.vmdk.as_ref(),
                cli::Format::Raw => Some(&image.raw),
            }
            .with_context(|| {
                format!(
                    "the manifest lists no {file}: run `cargo xtask image --profile {}` first",
                    image.profile
                )
            })?;
            plan::Route::S3 {
                bucket: args.bucket.as_deref().context("--via s3 needs --bucket")?,
                key: plan::s3_key(identity, args.format),
                format: args.format,
                file: upload,
                size: art.size,
            }
        }
    };
    out.push_str("\nAWS calls, each with the equivalent aws CLI command:\n");
    let input = plan::Input {
        identity,
        region: region.as_deref(),
        route,
        public: args.public,
        regions: args.regions.as_ref(),
        deprecate_at,
        ssm_parameter: args.ssm_parameter.as_deref(),
    };
    out.push_str(&plan::render(&input));
    out.push_str(&format!(
        "\nThe region -> AMI map goes to {}; the SSM parameter name README suggests: {}\n",
        args.amis_json
            .clone()
            .unwrap_or_else(|| image.dir.join("amis.json"))
            .display(),
        outputs::suggested_parameter(&image.profile)
    ));
    out.push_str("\nThen:\n");
    out.push_str(&launch::render("$AMI", region.as_deref()).replace("AMI: $AMI\n\n", ""));
    print!("{out}");
    Ok(())
}

//! The per-region side of `cargo xtask ami`: after the home region has registered the AMI,
//! every other region of the plan gets a CopyImage of it, at most [`COPY_PARALLEL`] at a time.
//! Each copy is tagged like the source, waited for until `available`, then finished like the
//! home AMI: public, deprecation time, SSM parameter. A region that fails becomes a failed row
//! of the results, never the loss of the others'. The decisions (plan, waits, output) are in
//! the pure modules; this is the SDK edge.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_ec2::types::{
    Image, LaunchPermission, LaunchPermissionModifications, PermissionGroup, ResourceType,
    TagSpecification,
};
use aws_sdk_ssm::types::ParameterType;
use aws_smithy_types::DateTime;

use crate::outputs::RegionResult;
use crate::publish::{POLL, call, call_failure, client_token, ec2_tags};
use crate::register::Identity;
use crate::wait::{self, Poll};

/// Copies in flight at once. CopyImage has a per-region limit of concurrent copies, and each
/// region is a different endpoint, so this bounds only our own polling and connections.
pub const COPY_PARALLEL: usize = 8;

/// SSM's data type that makes PutParameter check the value is an AMI id of that region, and
/// lets CloudFormation's `AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>` accept it.
pub const SSM_DATA_TYPE: &str = "aws:ec2:image";

/// What every region's available AMI gets, the home one included.
#[derive(Debug, Clone)]
pub struct Finish {
    pub identity: Identity,
    pub public: bool,
    /// Unix seconds.
    pub deprecate_at: Option<i64>,
    pub ssm_parameter: Option<String>,
}

/// The clients for one region, from the run's shared configuration.
pub struct Regional {
    pub region: String,
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
}

impl Regional {
    pub fn new(config: &aws_config::SdkConfig, region: &str) -> Regional {
        let r = aws_config::Region::new(region.to_string());
        Regional {
            region: region.to_string(),
            ec2: aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::config::Builder::from(config)
                    .region(r.clone())
                    .build(),
            ),
            ssm: aws_sdk_ssm::Client::from_conf(
                aws_sdk_ssm::config::Builder::from(config).region(r).build(),
            ),
        }
    }
}

/// Polls DescribeImages until the AMI is `available`; returns what it last described.
pub async fn wait_available(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    ami: &str,
    timeout: Duration,
) -> Result<Image> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let answer = call_failure("DescribeImages", || {
            ec2.describe_images().image_ids(ami).send()
        })
        .await;
        let image = match answer {
            Ok(out) => out.images().first().cloned(),
            // Just after CopyImage the new id may not be visible yet (eventual consistency).
            Err(f) if f.code.as_deref() == Some("InvalidAMIID.NotFound") => None,
            Err(f) => bail!(f.explain()),
        };
        let state = image
            .as_ref()
            .and_then(|i| i.state())
            .map(|s| s.as_str().to_string());
        let reason = image
            .as_ref()
            .and_then(|i| i.state_reason())
            .and_then(|r| r.message());
        match wait::judge(
            region,
            ami,
            state.as_deref(),
            reason,
            start.elapsed(),
            timeout,
        ) {
            Poll::Done => {
                return image.with_context(|| format!("DescribeImages lost {ami}"));
            }
            Poll::Failed(m) => bail!(m),
            Poll::Wait => {}
        }
        let now = state.unwrap_or_else(|| "not visible yet".into());
        if now != last {
            eprintln!("{region}: {ami} {now}");
            last = now;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Public, deprecation, SSM parameter, in that order, for an available AMI.
pub async fn finish(rc: &Regional, ami: &str, f: &Finish) -> Result<()> {
    let region = rc.region.as_str();
    if f.public {
        call("ModifyImageAttribute", || {
            rc.ec2
                .modify_image_attribute()
                .image_id(ami)
                .launch_permission(
                    LaunchPermissionModifications::builder()
                        .add(
                            LaunchPermission::builder()
                                .group(PermissionGroup::All)
                                .build(),
                        )
                        .build(),
                )
                .send()
        })
        .await
        .with_context(|| {
            format!(
                "making {ami} public (the account's block public access for AMIs must allow it in \
                 {region}: `aws ec2 disable-image-block-public-access --region {region}`)"
            )
        })?;
        eprintln!("{region}: {ami} is public");
    }
    if let Some(at) = f.deprecate_at {
        call("EnableImageDeprecation", || {
            rc.ec2
                .enable_image_deprecation()
                .image_id(ami)
                .deprecate_at(DateTime::from_secs(at))
                .send()
        })
        .await
        .with_context(|| format!("setting the deprecation time of {ami}"))?;
        eprintln!(
            "{region}: {ami} deprecates at {}",
            crate::deprecation::format(at)
        );
    }
    if let Some(name) = &f.ssm_parameter {
        call("PutParameter", || {
            rc.ssm
                .put_parameter()
                .name(name)
                .value(ami)
                .r#type(ParameterType::String)
                .data_type(SSM_DATA_TYPE)
                .overwrite(true)
                .send()
        })
        .await
        .with_context(|| format!("storing {ami} in the SSM parameter {name}"))?;
        eprintln!("{region}: SSM parameter {name} = {ami}");
    }
    Ok(())
}

/// Copies `source` from `home` into each region, in parallel; results in `regions`' order.
pub async fn copy_all(
    config: &aws_config::SdkConfig,
    home: &str,
    source: &str,
    regions: &[String],
    finish: &Finish,
    timeout: Duration,
) -> Vec<RegionResult> {
    let permits = Arc::new(tokio::sync::Semaphore::new(COPY_PARALLEL));
    let finish = Arc::new(finish.clone());
    let handles: Vec<_> = regions
        .iter()
        .map(|region| {
            let rc = Regional::new(config, region);
            let (permits, finish) = (permits.clone(), finish.clone());
            let (home, source) = (home.to_string(), source.to_string());
            let task = tokio::spawn(async move {
                // The semaphore is never closed, so acquiring cannot fail.
                let _permit = permits.acquire_owned().await.ok();
                copy_one(rc, &home, &source, &finish, timeout).await
            });
            (region.clone(), task)
        })
        .collect();
    let mut out = Vec::new();
    for (region, task) in handles {
        out.push(match task.await {
            Ok(r) => r,
            Err(e) => RegionResult::failed(&region, format!("the copy task ended abnormally: {e}")),
        });
    }
    out
}

async fn copy_one(
    rc: Regional,
    home: &str,
    source: &str,
    f: &Finish,
    timeout: Duration,
) -> RegionResult {
    let region = rc.region.clone();
    let started = start_copy(&rc, home, source, &f.identity).await;
    let ami = match started {
        Ok(ami) => ami,
        Err(e) => return RegionResult::failed(&region, format!("{e:#}")),
    };
    eprintln!("{region}: copying {home}/{source} as {ami}");
    let rest = async {
        let image = wait_available(&rc.ec2, &region, &ami, timeout).await?;
        retag(&rc.ec2, &ami, &image, &f.identity).await?;
        eprintln!("{region}: {ami} available");
        finish(&rc, &ami, f).await
    }
    .await;
    RegionResult {
        region,
        ami: Some(ami),
        home: false,
        error: rest.err().map(|e| format!("{e:#}")),
    }
}

/// CopyImage, asking for the source's tags on the copy and its snapshots.
async fn start_copy(
    rc: &Regional,
    home: &str,
    source: &str,
    identity: &Identity,
) -> Result<String> {
    // One token per copy, so our own retries cannot start two copies.
    let token = client_token();
    let spec = |t: ResourceType| {
        TagSpecification::builder()
            .resource_type(t)
            .set_tags(Some(ec2_tags(identity)))
            .build()
    };
    let out = call("CopyImage", || {
        rc.ec2
            .copy_image()
            .source_region(home)
            .source_image_id(source)
            .name(&identity.name)
            .description(&identity.description)
            .client_token(&token)
            .tag_specifications(spec(ResourceType::Image))
            .tag_specifications(spec(ResourceType::Snapshot))
            .send()
    })
    .await?;
    out.image_id()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("CopyImage answered without an image id"))
}

/// Tags an available AMI (registered or copied) with the identity's tags if it lacks any.
/// RegisterImage's and CopyImage's TagSpecifications normally carry them all; an endpoint that
/// ignores them (moto does) still ends up with every region's AMI tagged alike.
pub async fn retag(
    ec2: &aws_sdk_ec2::Client,
    ami: &str,
    image: &Image,
    identity: &Identity,
) -> Result<()> {
    let has = |k: &str, v: &str| {
        image
            .tags()
            .iter()
            .any(|t| t.key() == Some(k) && t.value() == Some(v))
    };
    if identity.tags.iter().all(|(k, v)| has(k, v)) {
        return Ok(());
    }
    call("CreateTags", || {
        ec2.create_tags()
            .resources(ami)
            .set_tags(Some(ec2_tags(identity)))
            .send()
    })
    .await
    .with_context(|| format!("tagging {ami}"))?;
    Ok(())
}

//! The AWS side of `cargo xtask ami`: the region plan (DescribeRegions), snapshot (EBS direct
//! APIs or S3 + ImportSnapshot), RegisterImage, the waits between them, then the copies to the
//! other regions (`copies`), the table and the map. Everything here talks to AWS; the decisions
//! it follows (regions, blocks, checksums, retries, parameters, messages, outputs) live in the
//! pure modules.

use std::fs::File;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ebs::config::ProvideCredentials;
use aws_sdk_ebs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm};
use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, ImdsSupportValues,
    ResourceType, SnapshotDiskContainer, SnapshotState, Tag, TagSpecification, UserBucket,
    VolumeType,
};
use aws_smithy_http_client::tls;

use crate::blocks::{self, Scan, human_bytes};
use crate::checksum;
use crate::cli::{Args, Format, Via};
use crate::copies::{self, Finish, Regional};
use crate::deprecation;
use crate::diagnose::{self, Failure};
use crate::manifest::Image;
use crate::outputs::{self, MapInfo, RegionResult};
use crate::plan::{self, SNAPSHOT_TIMEOUT_MINUTES};
use crate::regions::{self, Described, Plan};
use crate::register::{self, Identity, RegisterParams};
use crate::retry::{self, Policy};

/// How often the waits poll, and for how long at most.
pub const POLL: Duration = Duration::from_secs(5);
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60 * 60);
const IMAGE_WAIT: Duration = Duration::from_secs(30 * 60);
const IMPORT_WAIT: Duration = Duration::from_secs(3 * 60 * 60);

struct Clients {
    ebs: aws_sdk_ebs::Client,
    ec2: aws_sdk_ec2::Client,
    s3: aws_sdk_s3::Client,
    /// The home region's; the copies derive theirs from it.
    config: aws_config::SdkConfig,
    region: String,
}

/// Loads the standard credential/region chain, and fails early with a clear message when it
/// yields no region or no credentials.
async fn clients(args: &Args) -> Result<Clients> {
    // One retry layer: ours (retry.rs). The SDK's would multiply the attempts.
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(120))
                .build(),
        );
    if let Some(r) = regions::home_region(args.region.as_deref(), args.regions.as_ref()) {
        loader = loader.region(aws_config::Region::new(r));
    }
    if let Some(p) = &args.aws_profile {
        loader = loader.profile_name(p);
    }
    if let Some(u) = &args.endpoint_url {
        loader = loader.endpoint_url(u);
    }
    let config = loader.load().await;
    let region = config
        .region()
        .map(|r| r.to_string())
        .ok_or_else(|| anyhow!(diagnose::NO_REGION))?;
    let provider = config.credentials_provider().ok_or_else(|| {
        anyhow!(diagnose::no_credentials(
            "no credentials provider configured"
        ))
    })?;
    if let Err(e) = provider.provide_credentials().await {
        bail!(diagnose::no_credentials(
            &aws_sdk_ebs::error::DisplayErrorContext(&e).to_string()
        ));
    }
    let s3_conf = aws_sdk_s3::config::Builder::from(&config)
        // A local stand-in serves every bucket on one host.
        .force_path_style(args.endpoint_url.is_some())
        // One PutObject carries the whole disk: no per-attempt time limit.
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .build(),
        )
        .build();
    Ok(Clients {
        ebs: aws_sdk_ebs::Client::new(&config),
        ec2: aws_sdk_ec2::Client::new(&config),
        s3: aws_sdk_s3::Client::from_conf(s3_conf),
        config,
        region,
    })
}

/// Runs one API call under the retry policy; a final failure becomes the explained message.
pub async fn call<T, E, F, Fut>(op: &str, f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    call_failure(op, f).await.map_err(|f| anyhow!(f.explain()))
}

/// [`call`], with the final failure as data, for callers that treat some codes as answers.
pub async fn call_failure<T, E, F, Fut>(op: &str, mut f: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    retry::run(
        &Policy::DEFAULT,
        |_| f(),
        |e| Failure::of(op, e).class(),
        |attempt, e, wait| {
            let f = Failure::of(op, e);
            let code = match (f.code, f.status) {
                (Some(c), _) => c,
                (None, Some(s)) => format!("HTTP {s}"),
                (None, None) => "no answer".to_string(),
            };
            eprintln!(
                "{op}: attempt {attempt} failed ({code}); retrying in {:.1}s",
                wait.as_secs_f64()
            );
        },
    )
    .await
    .map_err(|e| Failure::of(op, &e))
}

/// Which regions to publish to: asks DescribeRegions only when `--regions` is given.
async fn region_plan(c: &Clients, args: &Args) -> Result<Plan> {
    let described = match &args.regions {
        None => Vec::new(),
        Some(_) => {
            let out = call("DescribeRegions", || {
                c.ec2.describe_regions().all_regions(true).send()
            })
            .await
            .context("listing the account's regions for --regions")?;
            out.regions()
                .iter()
                .filter_map(|r| {
                    Some(Described {
                        name: r.region_name()?.to_string(),
                        opt_in: r.opt_in_status().unwrap_or_default().to_string(),
                    })
                })
                .collect()
        }
    };
    regions::plan(&c.region, args.regions.as_ref(), &described).map_err(|e| anyhow!(e))
}

fn unix_now() -> Result<i64> {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    i64::try_from(d.as_secs()).context("the system clock is out of range")
}

/// Publishes the image to every region of the plan; prints the region table, writes the map,
/// prints the home AMI's next steps, and fails naming the regions that failed.
pub async fn run(args: &Args, image: &Image, identity: &Identity) -> Result<()> {
    let c = clients(args).await?;
    let plan = region_plan(&c, args).await?;
    // One time for every region, fixed before the upload so a bad value costs nothing.
    let deprecate_at = match args.deprecate_in {
        Some(d) => Some(
            deprecation::deprecate_at(d, unix_now()?, args.public)
                .map_err(|e| anyhow!("--deprecate-in: {e}"))?,
        ),
        None => None,
    };
    eprintln!("region {}, AMI name {}", c.region, identity.name);
    if !plan.copies.is_empty() {
        eprintln!("then copied to {}", plan.copies.join(", "));
    }
    for (r, why) in &plan.refused {
        eprintln!("skipping {r}: it {why}");
    }
    let snapshot_id = match args.via {
        Via::EbsDirect => snapshot_ebs_direct(&c, args, image, identity).await?,
        Via::S3 => {
            let bucket = args.bucket.as_deref().context("--via s3 needs --bucket")?;
            snapshot_s3(&c, bucket, args.format, image, identity).await?
        }
    };
    let ami = register(&c, identity, &snapshot_id).await?;
    let finish = Finish {
        identity: identity.clone(),
        public: args.public,
        deprecate_at,
        ssm_parameter: args.ssm_parameter.clone(),
    };
    let home = copies::finish(&Regional::new(&c.config, &c.region), &ami, &finish).await;
    let mut results = vec![RegionResult {
        region: c.region.clone(),
        ami: Some(ami.clone()),
        home: true,
        error: home.err().map(|e| format!("{e:#}")),
    }];
    let minutes = u64::try_from(args.copy_timeout).unwrap_or(u64::MAX);
    let timeout = Duration::from_secs(minutes.saturating_mul(60));
    let copied = copies::copy_all(&c.config, &c.region, &ami, &plan.copies, &finish, timeout);
    results.extend(tokio::select! {
        r = copied => r,
        _ = tokio::signal::ctrl_c() => bail!(
            "interrupted: the copies started above go on in AWS; deregister unwanted ones with \
             `aws ec2 deregister-image --region R --image-id ID`"
        ),
    });
    results.extend(
        plan.refused
            .iter()
            .map(|(r, why)| RegionResult::failed(r, format!("{r} {why}"))),
    );

    print!("{}", outputs::table(&results));
    let map_path = args
        .amis_json
        .clone()
        .unwrap_or_else(|| image.dir.join("amis.json"));
    let info = MapInfo {
        name: &identity.name,
        profile: &image.profile,
        version: &image.version,
        commit: &image.commit,
        home_region: &c.region,
        public: args.public,
        deprecation_time: deprecate_at.map(deprecation::format),
        ssm_parameter: args.ssm_parameter.as_deref(),
    };
    write_atomically(&map_path, &outputs::map_json(&info, &results))?;
    println!("map: {}", map_path.display());
    println!();
    print!("{}", crate::launch::render(&ami, Some(&c.region)));
    let failed = outputs::failed_regions(&results);
    if failed.is_empty() {
        return Ok(());
    }
    for r in results.iter().filter(|r| !r.ok()) {
        eprintln!("{}: {}", r.region, r.error.as_deref().unwrap_or("no AMI"));
    }
    bail!(
        "{} of {} regions failed: {} (the others are in the table and in {})",
        failed.len(),
        results.len(),
        failed.join(", "),
        map_path.display()
    )
}

/// Writes through a temporary file beside `path`, so a reader never sees half a map.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Scans the image at `block_size` and checks it against the manifest's sha256.
fn scan_checked(image: &Image, block_size: u64) -> Result<Scan> {
    let scan = blocks::scan(&image.raw_path(), block_size)?;
    if scan.file_sha256 != image.raw.sha256 {
        bail!(
            "{} does not match its manifest (sha256 {} != {}): rebuild with `cargo xtask image --profile {}`",
            image.raw_path().display(),
            scan.file_sha256,
            image.raw.sha256,
            image.profile
        );
    }
    Ok(scan)
}

fn ebs_tags(identity: &Identity) -> Vec<aws_sdk_ebs::types::Tag> {
    identity
        .tags
        .iter()
        .map(|(k, v)| aws_sdk_ebs::types::Tag::builder().key(k).value(v).build())
        .collect()
}

pub fn ec2_tags(identity: &Identity) -> Vec<Tag> {
    identity
        .tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// A fresh idempotency token for StartSnapshot, so our own retries cannot start two snapshots.
pub fn client_token() -> String {
    let nonce = (retry::jitter() * (1u64 << 53) as f64) as u64;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("xtask-ami-{nanos:016x}-{nonce:014x}")
}

async fn snapshot_ebs_direct(
    c: &Clients,
    args: &Args,
    image: &Image,
    identity: &Identity,
) -> Result<String> {
    eprintln!("scanning {}", image.raw_path().display());
    let mut scan = scan_checked(image, blocks::AWS_BLOCK_SIZE)?;
    let size = blocks::volume_size_gib(scan.image_bytes);
    let token = client_token();
    let started = call("StartSnapshot", || {
        c.ebs
            .start_snapshot()
            .volume_size(size as i64)
            .timeout(SNAPSHOT_TIMEOUT_MINUTES)
            .description(&identity.description)
            .set_tags(Some(ebs_tags(identity)))
            .client_token(&token)
            .send()
    })
    .await?;
    let snap = started
        .snapshot_id()
        .context("StartSnapshot answered without a snapshot id")?
        .to_string();
    eprintln!("snapshot {snap} started ({size} GiB)");

    let work = async {
        let block_size = started
            .block_size()
            .map(|b| b as u64)
            .unwrap_or(blocks::AWS_BLOCK_SIZE);
        if block_size != scan.block_size {
            // A local stand-in uses another block size than AWS; the service's answer wins.
            eprintln!(
                "block size {block_size} (not {}): scanning again",
                scan.block_size
            );
            scan = scan_checked(image, block_size)?;
        }
        upload_blocks(c, &snap, image, &scan, args.jobs).await?;
        let changed = i32::try_from(scan.blocks.len()).context("too many blocks")?;
        call("CompleteSnapshot", || {
            c.ebs
                .complete_snapshot()
                .snapshot_id(&snap)
                .changed_blocks_count(changed)
                .checksum(&scan.linear_checksum)
                .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear)
                .send()
        })
        .await?;
        wait_snapshot(c, &snap).await
    };
    let outcome = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if let Err(e) = outcome {
        discard_snapshot(c, &snap).await;
        return Err(e);
    }
    Ok(snap)
}

/// Deletes a snapshot that will never be used, or says how to.
async fn discard_snapshot(c: &Clients, snap: &str) {
    eprintln!("deleting the unfinished snapshot {snap}");
    match c.ec2.delete_snapshot().snapshot_id(snap).send().await {
        Ok(_) => eprintln!("deleted {snap}"),
        Err(e) => eprintln!(
            "could not delete {snap} ({}); delete it with:\n  aws ec2 delete-snapshot --region {} --snapshot-id {snap}\n\
             (an EBS-direct snapshot never completed also turns to `error` after {SNAPSHOT_TIMEOUT_MINUTES} minutes)",
            Failure::of("DeleteSnapshot", &e).explain(),
            c.region
        ),
    }
}

/// Progress counters shared by the upload workers.
struct Progress {
    blocks: AtomicUsize,
    bytes: AtomicU64,
}

async fn upload_blocks(
    c: &Clients,
    snap: &str,
    image: &Image,
    scan: &Scan,
    jobs: usize,
) -> Result<()> {
    let path = image.raw_path();
    let file = Arc::new(File::open(&path).with_context(|| format!("opening {}", path.display()))?);
    let scan = Arc::new(scan.clone());
    let next = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Progress {
        blocks: AtomicUsize::new(0),
        bytes: AtomicU64::new(0),
    });
    let total = scan.blocks.len();
    let total_bytes = human_bytes(scan.bytes_to_send());
    eprintln!(
        "uploading {total} non-zero blocks of {} ({total_bytes}), {jobs} at a time",
        scan.total_blocks
    );

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..jobs.min(total.max(1)) {
        let (ebs, snap, file, scan, next, progress) = (
            c.ebs.clone(),
            snap.to_string(),
            file.clone(),
            scan.clone(),
            next.clone(),
            progress.clone(),
        );
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(b) = scan.blocks.get(i) else {
                    return Ok::<(), anyhow::Error>(());
                };
                // A blocking read, but of one block from the page cache: not worth spawn_blocking.
                let data = blocks::read_block_at(&file, b.index, scan.block_size)
                    .with_context(|| format!("reading block {}", b.index))?;
                if checksum::block_digest(&data) != b.digest {
                    bail!(
                        "disk.raw changed during the upload (block {}); rebuild and publish again",
                        b.index
                    );
                }
                let sum = checksum::base64(&b.digest);
                let index = i32::try_from(b.index).context("block index out of range")?;
                let len = i32::try_from(data.len()).context("block too large")?;
                call("PutSnapshotBlock", || {
                    ebs.put_snapshot_block()
                        .snapshot_id(&snap)
                        .block_index(index)
                        .data_length(len)
                        .block_data(ByteStream::from(data.clone()))
                        .checksum(&sum)
                        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                        .send()
                })
                .await?;
                progress.blocks.fetch_add(1, Ordering::Relaxed);
                progress
                    .bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        });
    }
    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    ticker.tick().await;
    let report = |p: &Progress| {
        let bytes = p.bytes.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64().max(0.001);
        eprintln!(
            "upload: {}/{total} blocks, {}/{total_bytes}, {}/s",
            p.blocks.load(Ordering::Relaxed),
            human_bytes(bytes),
            human_bytes((bytes as f64 / secs) as u64)
        );
    };
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => return Err(anyhow!("upload worker failed: {e}")),
            },
            _ = ticker.tick() => report(&progress),
        }
    }
    report(&progress);
    Ok(())
}

async fn wait_snapshot(c: &Clients, snap: &str) -> Result<()> {
    let deadline = Instant::now() + SNAPSHOT_WAIT;
    let mut last = String::new();
    loop {
        let out = call("DescribeSnapshots", || {
            c.ec2.describe_snapshots().snapshot_ids(snap).send()
        })
        .await?;
        let s = out
            .snapshots()
            .first()
            .with_context(|| format!("DescribeSnapshots does not know {snap}"))?;
        match s.state() {
            Some(SnapshotState::Completed) => {
                eprintln!("snapshot {snap} completed");
                return Ok(());
            }
            Some(SnapshotState::Error) => {
                bail!(
                    "snapshot {snap} failed: {}",
                    s.state_message().unwrap_or("no reason given")
                )
            }
            _ => {}
        }
        let p = s.progress().unwrap_or("").to_string();
        if p != last {
            eprintln!(
                "snapshot {snap}: {}",
                if p.is_empty() { "pending" } else { &p }
            );
            last = p;
        }
        if Instant::now() > deadline {
            bail!(
                "snapshot {snap} still not completed after {} minutes",
                SNAPSHOT_WAIT.as_secs() / 60
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn snapshot_s3(
    c: &Clients,
    bucket: &str,
    format: Format,
    image: &Image,
    identity: &Identity,
) -> Result<String> {
    let path = image.dir.join(format.file());
    if !path.exists() {
        bail!(
            "{} is missing: run `cargo xtask image --profile {}` first (or pass --format raw)",
            path.display(),
            image.profile
        );
    }
    let key = plan::s3_key(identity, format);
    eprintln!("uploading {} to s3://{bucket}/{key}", path.display());
    call("PutObject", || {
        let (s3, path, key) = (c.s3.clone(), path.clone(), key.clone());
        async move {
            let body = ByteStream::from_path(&path)
                .await
                .map_err(SdkError::construction_failure)?;
            s3.put_object()
                .bucket(bucket)
                .key(key)
                .body(body)
                .send()
                .await
        }
    })
    .await?;
    let task = call("ImportSnapshot", || {
        c.ec2
            .import_snapshot()
            .description(&identity.description)
            .disk_container(
                SnapshotDiskContainer::builder()
                    .format(format.api_name())
                    .user_bucket(UserBucket::builder().s3_bucket(bucket).s3_key(&key).build())
                    .build(),
            )
            .role_name("vmimport")
            .send()
    })
    .await?;
    let task_id = task
        .import_task_id()
        .context("ImportSnapshot answered without a task id")?
        .to_string();
    eprintln!("import task {task_id} started");
    let wait = async {
        let deadline = Instant::now() + IMPORT_WAIT;
        let mut last = String::new();
        loop {
            let out = call("DescribeImportSnapshotTasks", || {
                c.ec2
                    .describe_import_snapshot_tasks()
                    .import_task_ids(&task_id)
                    .send()
            })
            .await?;
            let detail = out
                .import_snapshot_tasks()
                .first()
                .and_then(|t| t.snapshot_task_detail())
                .with_context(|| format!("no details for import task {task_id}"))?;
            let status = detail.status().unwrap_or("");
            match status {
                "completed" => {
                    return detail
                        .snapshot_id()
                        .map(str::to_string)
                        .context("import completed without a snapshot id");
                }
                "deleting" | "deleted" => bail!(
                    "import task {task_id} failed: {} (check the vmimport role: `cargo xtask ami --print-policy`)",
                    detail.status_message().unwrap_or(status)
                ),
                _ => {}
            }
            let line = format!(
                "{status} {}",
                detail
                    .progress()
                    .map(|p| format!("{p}%"))
                    .unwrap_or_default()
            );
            if line != last {
                eprintln!("import {task_id}: {line}");
                last = line;
            }
            if Instant::now() > deadline {
                bail!(
                    "import task {task_id} not done after {} hours",
                    IMPORT_WAIT.as_secs() / 3600
                );
            }
            tokio::time::sleep(POLL).await;
        }
    };
    let snap = tokio::select! {
        r = wait => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let snap = match snap {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "the import task may still run; cancel it with:\n  aws ec2 cancel-import-task --region {} --import-task-id {task_id}",
                c.region
            );
            return Err(e);
        }
    };
    call("CreateTags", || {
        c.ec2
            .create_tags()
            .resources(&snap)
            .set_tags(Some(ec2_tags(identity)))
            .send()
    })
    .await?;
    eprintln!(
        "snapshot {snap} imported; s3://{bucket}/{key} can go: aws s3 rm s3://{bucket}/{key}"
    );
    wait_snapshot(c, &snap).await?;
    Ok(snap)
}

async fn register(c: &Clients, identity: &Identity, snap: &str) -> Result<String> {
    let params = RegisterParams {
        identity: identity.clone(),
        snapshot_id: snap.to_string(),
    };
    let out = call("RegisterImage", || {
        c.ec2
            .register_image()
            .name(&params.identity.name)
            .description(&params.identity.description)
            .architecture(ArchitectureValues::Arm64)
            .boot_mode(BootModeValues::Uefi)
            .virtualization_type(register::VIRTUALIZATION_TYPE)
            .ena_support(true)
            .imds_support(ImdsSupportValues::V20)
            .root_device_name(register::ROOT_DEVICE)
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(register::ROOT_DEVICE)
                    .ebs(
                        EbsBlockDevice::builder()
                            .snapshot_id(&params.snapshot_id)
                            .volume_type(VolumeType::Gp3)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Image)
                    .set_tags(Some(ec2_tags(&params.identity)))
                    .build(),
            )
            .send()
    })
    .await?;
    let ami = out
        .image_id()
        .context("RegisterImage answered without an image id")?
        .to_string();
    eprintln!("registered {ami}; waiting until it is available");
    let image = copies::wait_available(&c.ec2, &c.region, &ami, IMAGE_WAIT).await?;
    copies::retag(&c.ec2, &ami, &image, identity).await?;
    Ok(ami)
}

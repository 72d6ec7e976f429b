//! The sequence of AWS calls a publication makes, with their parameters and the equivalent
//! `aws` CLI commands: what `--dry-run` prints. Pure: built from the manifest and a local scan.

use crate::awscli::{Command, Word, expand, lit};
use crate::blocks::Scan;
use crate::cli::Format;
use crate::copies::{COPY_PARALLEL, SSM_DATA_TYPE};
use crate::regions::Regions;
use crate::register::{Identity, RegisterParams, tag_spec, tag_words};

/// StartSnapshot's Timeout, minutes: a snapshot left pending this long goes to `error`, so an
/// interrupted upload cannot linger forever.
pub const SNAPSHOT_TIMEOUT_MINUTES: i32 = 60;

pub enum Route<'a> {
    EbsDirect {
        scan: &'a Scan,
        raw_file: &'a str,
        jobs: usize,
    },
    S3 {
        bucket: &'a str,
        key: String,
        format: Format,
        file: &'a str,
        size: u64,
    },
}

pub struct Input<'a> {
    pub identity: &'a Identity,
    /// The home region, when known.
    pub region: Option<&'a str>,
    pub route: Route<'a>,
    pub public: bool,
    /// `--regions`.
    pub regions: Option<&'a Regions>,
    /// `--deprecate-in`, already turned into the RFC 3339 time.
    pub deprecate_at: Option<String>,
    pub ssm_parameter: Option<&'a str>,
}

/// One AWS API call (or a poll loop over one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `ebs:StartSnapshot`, `ec2:RegisterImage`, ...
    pub api: String,
    pub params: Vec<(String, String)>,
    /// Shell lines doing the same with the `aws` CLI.
    pub cli: Vec<String>,
    pub note: Option<String>,
}

fn call(api: &str, params: &[(&str, String)], cli: Vec<String>) -> Call {
    Call {
        api: api.to_string(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        cli,
        note: None,
    }
}

fn tags_text(tags: &[(String, String)]) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn s3_key(identity: &Identity, format: Format) -> String {
    format!("{}/{}", identity.name, format.file())
}

/// A shell word for an id or a region that may still be a `$VAR`.
fn word(s: &str) -> Word {
    if s.starts_with('$') {
        expand(s)
    } else {
        lit(s)
    }
}

/// `aws <service> <operation> --region R`, where R may be `$REGION`.
fn aws_in(service: &str, operation: &str, region: Option<&str>) -> Command {
    let mut c = Command::aws(service, operation, None);
    if let Some(r) = region {
        c = c.arg("--region", word(r));
    }
    c
}

/// What every region's available AMI gets (`ami` is `$AMI` or `$COPY`): public, deprecation,
/// SSM parameter.
fn finish_calls(input: &Input, region: Option<&str>, ami: &str) -> Vec<Call> {
    let mut out = Vec::new();
    if input.public {
        let modify = aws_in("ec2", "modify-image-attribute", region)
            .arg("--image-id", word(ami))
            .arg("--launch-permission", lit("Add=[{Group=all}]"));
        let mut c = call(
            "ec2:ModifyImageAttribute",
            &[
                ("ImageId", ami.into()),
                ("LaunchPermission.Add.1.Group", "all".into()),
            ],
            vec![modify.render()],
        );
        c.note = Some("the account's block public access for AMIs must allow it".into());
        out.push(c);
    }
    if let Some(at) = &input.deprecate_at {
        let dep = aws_in("ec2", "enable-image-deprecation", region)
            .arg("--image-id", word(ami))
            .arg("--deprecate-at", lit(at.clone()));
        out.push(call(
            "ec2:EnableImageDeprecation",
            &[("ImageId", ami.into()), ("DeprecateAt", at.clone())],
            vec![dep.render()],
        ));
    }
    if let Some(name) = input.ssm_parameter {
        let put = aws_in("ssm", "put-parameter", region)
            .arg("--name", lit(name))
            .arg("--value", word(ami))
            .arg("--type", lit("String"))
            .arg("--data-type", lit(SSM_DATA_TYPE))
            .flag("--overwrite");
        out.push(call(
            "ssm:PutParameter",
            &[
                ("Name", name.into()),
                ("Value", ami.into()),
                ("Type", "String".into()),
                ("DataType", SSM_DATA_TYPE.into()),
                ("Overwrite", "true".into()),
            ],
            vec![put.render()],
        ));
    }
    out
}

/// CopyImage from the home region into `region`, the wait, the tags and the finish.
fn copy_calls(input: &Input, region: &str) -> Vec<Call> {
    let home = input.region.unwrap_or("$HOME_REGION");
    let id = input.identity;
    let mut copy = aws_in("ec2", "copy-image", Some(region))
        .arg("--source-region", word(home))
        .arg("--source-image-id", expand("$AMI"))
        .arg("--name", lit(id.name.clone()))
        .arg("--description", lit(id.description.clone()))
        .arg("--tag-specifications", lit(tag_spec("image", &id.tags)));
    copy.words.push(lit(tag_spec("snapshot", &id.tags)));
    let copy = copy.capture("COPY", "ImageId");
    let mut copy = call(
        "ec2:CopyImage",
        &[
            ("SourceRegion", home.into()),
            ("SourceImageId", "$AMI".into()),
            ("Name", id.name.clone()),
            ("Description", id.description.clone()),
            ("TagSpecification.1", tag_spec("image", &id.tags)),
            ("TagSpecification.2", tag_spec("snapshot", &id.tags)),
            ("ClientToken", "<random, per copy>".into()),
        ],
        vec![copy.render()],
    );
    copy.note = Some(format!(
        "in {region}, up to {COPY_PARALLEL} regions at a time"
    ));
    let mut c = Command::ec2_wait("image-available", None);
    c = c
        .arg("--region", word(region))
        .arg("--image-ids", expand("$COPY"));
    let mut wait = call(
        "ec2:DescribeImages",
        &[("ImageIds", "$COPY".into())],
        vec![c.render()],
    );
    wait.note = Some(
        "polled until State is available (--copy-timeout); then ec2:CreateTags if the copy \
         lacks any of the tags"
            .into(),
    );
    let mut out = vec![copy, wait];
    out.extend(finish_calls(input, Some(region), "$COPY"));
    out
}

pub fn calls(input: &Input) -> Vec<Call> {
    let region = input.region;
    let snap = "$SNAP".to_string();
    let mut out = Vec::new();
    if input.regions.is_some() {
        let list = Command::aws("ec2", "describe-regions", region).flag("--all-regions");
        let mut c = call(
            "ec2:DescribeRegions",
            &[("AllRegions", "true".into())],
            vec![list.render()],
        );
        c.note = Some(
            "enabled regions: opt-in-not-required or opted-in; any other region named is \
             skipped and reported as failed"
                .into(),
        );
        out.push(c);
    }
    match &input.route {
        Route::EbsDirect {
            scan,
            raw_file,
            jobs,
        } => {
            let size = crate::blocks::volume_size_gib(scan.image_bytes);
            let mut start = Command::aws("ebs", "start-snapshot", region)
                .arg("--volume-size", lit(size.to_string()))
                .arg("--timeout", lit(SNAPSHOT_TIMEOUT_MINUTES.to_string()))
                .arg("--description", lit(input.identity.description.clone()))
                .flag("--tags");
            start.words.extend(tag_words(&input.identity.tags));
            out.push(call(
                "ebs:StartSnapshot",
                &[
                    ("VolumeSize", size.to_string()),
                    ("Timeout", SNAPSHOT_TIMEOUT_MINUTES.to_string()),
                    ("Description", input.identity.description.clone()),
                    ("Tags", tags_text(&input.identity.tags)),
                    ("ClientToken", "<random, per run>".into()),
                ],
                vec![start.capture("SNAP", "SnapshotId").render()],
            ));
            for (n, b) in scan.blocks.iter().enumerate() {
                let checksum = crate::checksum::base64(&b.digest);
                let dd = format!(
                    "dd if={} of=block bs={} skip={} count=1 conv=sync status=none",
                    crate::awscli::quote(&lit(*raw_file)),
                    scan.block_size,
                    b.index
                );
                let put = Command::aws("ebs", "put-snapshot-block", region)
                    .arg("--snapshot-id", expand(snap.clone()))
                    .arg("--block-index", lit(b.index.to_string()))
                    .arg("--data-length", lit(scan.block_size.to_string()))
                    .arg("--block-data", lit("fileb://block"))
                    .arg("--checksum", lit(checksum.clone()))
                    .arg("--checksum-algorithm", lit("SHA256"));
                let mut c = call(
                    "ebs:PutSnapshotBlock",
                    &[
                        ("SnapshotId", snap.clone()),
                        ("BlockIndex", b.index.to_string()),
                        ("DataLength", scan.block_size.to_string()),
                        (
                            "BlockData",
                            format!("{raw_file} bytes {}..", b.index * scan.block_size),
                        ),
                        ("Checksum", checksum),
                        ("ChecksumAlgorithm", "SHA256".into()),
                    ],
                    vec![dd, put.render()],
                );
                if n == 0 {
                    c.note = Some(format!(
                        "{} non-zero blocks of {} ({} bytes), up to {jobs} at a time, each retried on throttling/5xx",
                        scan.blocks.len(),
                        scan.total_blocks,
                        scan.bytes_to_send()
                    ));
                }
                out.push(c);
            }
            let complete = Command::aws("ebs", "complete-snapshot", region)
                .arg("--snapshot-id", expand(snap.clone()))
                .arg("--changed-blocks-count", lit(scan.blocks.len().to_string()))
                .arg("--checksum", lit(scan.linear_checksum.clone()))
                .arg("--checksum-algorithm", lit("SHA256"))
                .arg("--checksum-aggregation-method", lit("LINEAR"));
            out.push(call(
                "ebs:CompleteSnapshot",
                &[
                    ("SnapshotId", snap.clone()),
                    ("ChangedBlocksCount", scan.blocks.len().to_string()),
                    ("Checksum", scan.linear_checksum.clone()),
                    ("ChecksumAlgorithm", "SHA256".into()),
                    ("ChecksumAggregationMethod", "LINEAR".into()),
                ],
                vec![complete.render()],
            ));
        }
        Route::S3 {
            bucket,
            key,
            format,
            file,
            size,
        } => {
            let put = Command::aws("s3api", "put-object", region)
                .arg("--bucket", lit(*bucket))
                .arg("--key", lit(key.clone()))
                .arg("--body", lit(*file));
            out.push(call(
                "s3:PutObject",
                &[
                    ("Bucket", bucket.to_string()),
                    ("Key", key.clone()),
                    ("Body", format!("{file} ({size} bytes)")),
                ],
                vec![put.render()],
            ));
            let container = format!(
                "Format={},UserBucket={{S3Bucket={bucket},S3Key={key}}}",
                format.api_name()
            );
            let import = Command::aws("ec2", "import-snapshot", region)
                .arg("--description", lit(input.identity.description.clone()))
                .arg("--disk-container", lit(container))
                .arg("--role-name", lit("vmimport"))
                .capture("TASK", "ImportTaskId");
            out.push(call(
                "ec2:ImportSnapshot",
                &[
                    ("Description", input.identity.description.clone()),
                    ("DiskContainer.Format", format.api_name().into()),
                    ("DiskContainer.UserBucket.S3Bucket", bucket.to_string()),
                    ("DiskContainer.UserBucket.S3Key", key.clone()),
                    ("RoleName", "vmimport".into()),
                ],
                vec![import.render()],
            ));
            let wait = Command::ec2_wait("snapshot-imported", region)
                .arg("--import-task-ids", expand("$TASK"));
            let get = Command::aws("ec2", "describe-import-snapshot-tasks", region)
                .arg("--import-task-ids", expand("$TASK"))
                .capture(
                    "SNAP",
                    "ImportSnapshotTasks[0].SnapshotTaskDetail.SnapshotId",
                );
            let mut c = call(
                "ec2:DescribeImportSnapshotTasks",
                &[("ImportTaskIds", "$TASK".into())],
                vec![wait.render(), get.render()],
            );
            c.note = Some("polled until SnapshotTaskDetail.Status is completed".into());
            out.push(c);
            let mut tags = Command::aws("ec2", "create-tags", region)
                .arg("--resources", expand(snap.clone()))
                .flag("--tags");
            tags.words.extend(tag_words(&input.identity.tags));
            out.push(call(
                "ec2:CreateTags",
                &[
                    ("Resources", snap.clone()),
                    ("Tags", tags_text(&input.identity.tags)),
                ],
                vec![tags.render()],
            ));
        }
    }
    let wait_snap =
        Command::ec2_wait("snapshot-completed", region).arg("--snapshot-ids", expand(snap.clone()));
    let mut c = call(
        "ec2:DescribeSnapshots",
        &[("SnapshotIds", snap.clone())],
        vec![wait_snap.render()],
    );
    c.note = Some("polled until State is completed".into());
    out.push(c);

    let reg = RegisterParams {
        identity: input.identity.clone(),
        snapshot_id: snap,
    };
    let params: Vec<(&str, String)> = Vec::new();
    let mut c = call("ec2:RegisterImage", &params, vec![reg.cli(region).render()]);
    c.params = reg.query_params();
    out.push(c);

    let wait_ami = Command::ec2_wait("image-available", region).arg("--image-ids", expand("$AMI"));
    let mut c = call(
        "ec2:DescribeImages",
        &[("ImageIds", "$AMI".into())],
        vec![wait_ami.render()],
    );
    c.note = Some(
        "polled until State is available; then ec2:CreateTags if it lacks any of the tags".into(),
    );
    out.push(c);

    out.extend(finish_calls(input, region, "$AMI"));
    match input.regions {
        None => {}
        Some(Regions::All) => out.extend(copy_calls(input, "$REGION")),
        Some(Regions::List(list)) => {
            for r in list.iter().filter(|r| Some(r.as_str()) != input.region) {
                out.extend(copy_calls(input, r));
            }
        }
    }
    out
}

/// The dry-run text.
pub fn render(input: &Input) -> String {
    let mut out = String::new();
    for (i, c) in calls(input).iter().enumerate() {
        out.push_str(&format!("{}. {}\n", i + 1, c.api));
        if let Some(note) = &c.note {
            out.push_str(&format!("   # {note}\n"));
        }
        for (k, v) in &c.params {
            out.push_str(&format!("   {k} = {v}\n"));
        }
        for line in &c.cli {
            out.push_str(&format!("   $ {line}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::ScannedBlock;

    fn identity() -> Identity {
        Identity {
            name: "nat-t4g-0.1.0-abc-def".into(),
            description: "nat-t4g 0.1.0 commit abc disk.raw sha256 def".into(),
            tags: vec![("Name".into(), "nat-t4g-0.1.0-abc-def".into())],
        }
    }

    fn scan() -> Scan {
        Scan {
            block_size: 524288,
            image_bytes: 1 << 30,
            total_blocks: 2048,
            blocks: vec![
                ScannedBlock {
                    index: 0,
                    digest: [1; 32],
                },
                ScannedBlock {
                    index: 7,
                    digest: [2; 32],
                },
            ],
            linear_checksum: "LIN=".into(),
            file_sha256: "def".into(),
        }
    }

    #[test]
    fn ebs_direct_plan_lists_every_call_in_order() {
        let id = identity();
        let s = scan();
        let input = Input {
            identity: &id,
            region: Some("eu-west-1"),
            route: Route::EbsDirect {
                scan: &s,
                raw_file: "target/images/nat-t4g/disk.raw",
                jobs: 16,
            },
            public: true,
            regions: None,
            deprecate_at: None,
            ssm_parameter: None,
        };
        let apis: Vec<String> = calls(&input).into_iter().map(|c| c.api).collect();
        assert_eq!(
            apis,
            [
                "ebs:StartSnapshot",
                "ebs:PutSnapshotBlock",
                "ebs:PutSnapshotBlock",
                "ebs:CompleteSnapshot",
                "ec2:DescribeSnapshots",
                "ec2:RegisterImage",
                "ec2:DescribeImages",
                "ec2:ModifyImageAttribute"
            ]
        );
        let text = render(&input);
        assert!(text.contains("   VolumeSize = 1\n"), "{text}");
        assert!(text.contains(
            "$ SNAP=$(aws ebs start-snapshot --region eu-west-1 --volume-size 1 --timeout 60 \
             --description 'nat-t4g 0.1.0 commit abc disk.raw sha256 def' --tags Key=Name,Value=nat-t4g-0.1.0-abc-def \
             --query SnapshotId --output text)"
        ));
        assert!(text.contains("   BlockIndex = 7\n"));
        assert!(text.contains(
            "$ dd if=target/images/nat-t4g/disk.raw of=block bs=524288 skip=7 count=1 conv=sync status=none"
        ));
        assert!(text.contains("--block-index 7 --data-length 524288 --block-data fileb://block"));
        assert!(text.contains(
            "$ aws ebs complete-snapshot --region eu-west-1 --snapshot-id \"$SNAP\" --changed-blocks-count 2 \
             --checksum LIN= --checksum-algorithm SHA256 --checksum-aggregation-method LINEAR"
        ));
        assert!(text.contains("   ChecksumAggregationMethod = LINEAR\n"));
        assert!(text.contains("   Architecture = arm64\n"));
        assert!(
            text.contains("$ aws ec2 wait image-available --region eu-west-1 --image-ids \"$AMI\"")
        );
        assert!(text.contains("--launch-permission 'Add=[{Group=all}]'"));
        // Deterministic: the same input renders the same bytes.
        assert_eq!(text, render(&input));
    }

    #[test]
    fn s3_plan_uploads_imports_and_registers() {
        let id = identity();
        let input = Input {
            identity: &id,
            region: None,
            route: Route::S3 {
                bucket: "b1",
                key: s3_key(&id, Format::Vmdk),
                format: Format::Vmdk,
                file: "disk.vmdk",
                size: 10,
            },
            public: false,
            regions: None,
            deprecate_at: None,
            ssm_parameter: None,
        };
        let apis: Vec<String> = calls(&input).into_iter().map(|c| c.api).collect();
        assert_eq!(
            apis,
            [
                "s3:PutObject",
                "ec2:ImportSnapshot",
                "ec2:DescribeImportSnapshotTasks",
                "ec2:CreateTags",
                "ec2:DescribeSnapshots",
                "ec2:RegisterImage",
                "ec2:DescribeImages"
            ]
        );
        let text = render(&input);
        assert!(text.contains(
            "--disk-container 'Format=VMDK,UserBucket={S3Bucket=b1,S3Key=nat-t4g-0.1.0-abc-def/disk.vmdk}' \
             --role-name vmimport"
        ));
        assert!(!text.contains("--region"));
    }

    #[test]
    fn regions_plan_copies_and_finishes_everywhere() {
        let id = identity();
        let s = scan();
        let regions = Regions::List(vec!["us-east-1".into(), "eu-west-1".into()]);
        let input = Input {
            identity: &id,
            region: Some("us-east-1"),
            route: Route::EbsDirect {
                scan: &s,
                raw_file: "disk.raw",
                jobs: 16,
            },
            public: true,
            regions: Some(&regions),
            deprecate_at: Some("2027-01-01T00:00:00Z".into()),
            ssm_parameter: Some("/nat-appliance/nat-t4g/latest/arm64"),
        };
        let apis: Vec<String> = calls(&input).into_iter().map(|c| c.api).collect();
        let finish = [
            "ec2:ModifyImageAttribute",
            "ec2:EnableImageDeprecation",
            "ssm:PutParameter",
        ];
        assert_eq!(apis[0], "ec2:DescribeRegions");
        let at = apis.iter().position(|a| a == "ec2:RegisterImage").unwrap();
        assert_eq!(apis[at + 1], "ec2:DescribeImages");
        assert_eq!(apis[at + 2..at + 5], finish);
        assert_eq!(
            apis[at + 5..at + 7],
            ["ec2:CopyImage", "ec2:DescribeImages"]
        );
        assert_eq!(apis[at + 7..], finish);
        let text = render(&input);
        assert!(
            text.contains(
                "$ COPY=$(aws ec2 copy-image --region eu-west-1 --source-region us-east-1 \
             --source-image-id \"$AMI\" --name nat-t4g-0.1.0-abc-def"
            ),
            "{text}"
        );
        assert!(text.contains(
            "$ aws ssm put-parameter --region eu-west-1 --name /nat-appliance/nat-t4g/latest/arm64 \
             --value \"$COPY\" --type String --data-type aws:ec2:image --overwrite"
        ), "{text}");
        assert!(
            text.contains(
                "$ aws ec2 enable-image-deprecation --region us-east-1 --image-id \"$AMI\" \
             --deprecate-at 2027-01-01T00:00:00Z"
            ),
            "{text}"
        );
        assert!(text.contains("$ aws ec2 describe-regions --region us-east-1 --all-regions"));

        // `all`: one generic copy for $REGION.
        let input = Input {
            regions: Some(&Regions::All),
            public: false,
            deprecate_at: None,
            ssm_parameter: None,
            ..input
        };
        let text = render(&input);
        assert_eq!(text.matches(". ec2:CopyImage\n").count(), 1, "{text}");
        assert!(text.contains("copy-image --region \"$REGION\""), "{text}");
        assert!(!text.contains("put-parameter") && !text.contains("modify-image-attribute"));
    }
}

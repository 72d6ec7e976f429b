//! End-to-end tests of `xtask-ami` against moto, a local stand-in for AWS, run by this test as
//! `moto_server` on 127.0.0.1 at a free port. Nothing here contacts anything but 127.0.0.1
//! (IMDS is disabled and the endpoint is overridden).
//!
//! moto is not AWS: it stores few of RegisterImage's parameters (so the request is checked
//! through its recorder, `/moto-api/recorder/*`, which keeps every request verbatim), it does
//! not verify checksums, and its EBS block size is 512 bytes where AWS's is 512 KiB. The
//! uploader takes the block size from StartSnapshot's answer, so here it sends 512-byte blocks.
//!
//! For `--regions`, moto 5.2.5 does CopyImage (into the request's region, from SourceRegion),
//! CreateTags, ModifyImageAttribute, DescribeRegions and SSM PutParameter with DataType, but it
//! ignores RegisterImage's and CopyImage's TagSpecifications (the tool then tags with
//! CreateTags), does not filter DescribeRegions by opt-in status (the
//! tool filters itself) and does not implement EnableImageDeprecation (HTTP 500). Those tests
//! run moto through [`SHIM`], which adds a stand-in EnableImageDeprecation that checks the image
//! exists and stores the time for DescribeImages, and can make copies into one region end
//! `failed`; what moto lacks is also checked as the raw request in its recorder.

// The helpers below (moto's lifecycle, HTTP to it) are not #[test]s, so allow-unwrap-in-tests
// does not reach them: a panic in them is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const MOTO_VERSION: &str = "5.2.5";
const MOTO_BLOCK: usize = 512;
/// Any key works with moto unless IAM enforcement is on.
const TEST_CREDS: (&str, &str) = ("testing", "testing");

/// The `moto_server` to run: host setup (`cargo xtask test`) installs the pinned moto into a
/// virtual environment and names it in XTASK_MOTO_SERVER; tests install nothing themselves.
fn moto_server() -> PathBuf {
    static FOUND: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FOUND.get_or_init(find_moto).clone()
}

fn find_moto() -> PathBuf {
    let server = std::env::var_os("XTASK_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("moto_server"));
    // The venv's python sits beside its moto_server; a moto_server on PATH uses python3.
    let python = server
        .parent()
        .map(|d| d.join("python3"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("python3"));
    let version = Command::new(&python)
        .args(["-c", "import moto; print(moto.__version__)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    assert!(
        version.as_deref() == Some(MOTO_VERSION),
        "these tests need moto {MOTO_VERSION} (found {version:?} through {}); run them with \
         `cargo xtask test`, which installs it, or set XTASK_MOTO_SERVER to a moto_server of \
         that version",
        python.display()
    );
    server
}

/// The SDK has no default HTTP client here (see the workspace's Cargo.toml): the same one the
/// binary builds. Plain HTTP to moto on loopback; TLS is never negotiated.
fn http_client() -> aws_sdk_ec2::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// moto_server on loopback; killed when dropped.
struct Moto {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// moto_server with what the multi-region tests need and moto 5.2.5 lacks (see the module doc).
/// `XTASK_TEST_COPY_FAILS_IN=R` makes every CopyImage into region R produce a `failed` image.
const SHIM: &str = r#"
import os, sys
from moto.core.responses import ActionResult
from moto.ec2.models.amis import AmiBackend
from moto.ec2.responses import EC2Response

def enable_image_deprecation(self):
    ami = self.ec2_backend.describe_images(ami_ids=[self._get_param("ImageId")])[0]
    ami.deprecation_time = self._get_param("DeprecateAt")
    return ActionResult({"Return": True})

EC2Response.enable_image_deprecation = enable_image_deprecation
copy_image = AmiBackend.copy_image

def failing_copy_image(self, *args, **kwargs):
    ami = copy_image(self, *args, **kwargs)
    if self.region_name == os.environ.get("XTASK_TEST_COPY_FAILS_IN"):
        ami.state = "failed"
    return ami

AmiBackend.copy_image = failing_copy_image
from moto.server import main
main(sys.argv[1:])
"#;

/// The python of moto's virtual environment (beside its moto_server), else python3.
fn moto_python() -> PathBuf {
    moto_server()
        .parent()
        .map(|d| d.join("python3"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("python3"))
}

impl Moto {
    fn start(name: &str) -> Moto {
        Moto::start_with_env(name, &[])
    }

    fn start_with_env(name: &str, env: &[(&str, &str)]) -> Moto {
        let mut c = Command::new(moto_server());
        c.envs(env.iter().copied());
        Moto::spawn(name, c)
    }

    /// moto through [`SHIM`].
    fn start_shimmed(name: &str, env: &[(&str, &str)]) -> Moto {
        let mut c = Command::new(moto_python());
        c.args(["-c", SHIM]).envs(env.iter().copied());
        Moto::spawn(name, c)
    }

    fn spawn(name: &str, mut command: Command) -> Moto {
        let dir = std::env::temp_dir().join(format!("xtask-ami-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("moto.log")).unwrap();
        let child = command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_RECORDER_FILEPATH", dir.join("recording.jsonl"))
            .current_dir(&dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting moto_server");
        let moto = Moto { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = moto.http("GET", "/moto-api/data.json") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not come up; log:\n{}",
                moto.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        moto
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("moto.log")).unwrap_or_default()
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A minimal HTTP/1.1 exchange for moto's own API; an HTTP client crate is not worth a
    /// dependency for three GETs to loopback.
    fn http(&self, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((status, body.to_string()))
    }

    fn recorder(&self, action: &str) -> String {
        let (status, body) = self
            .http("GET", &format!("/moto-api/recorder/{action}"))
            .unwrap();
        assert_eq!(status, 200, "recorder {action}: {body}");
        body
    }
}

/// A small raw image whose non-zero 512-byte blocks are known; the last block is partial.
struct TestImage {
    dir: PathBuf,
    data: Vec<u8>,
    sha256: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn b64(b: &[u8]) -> String {
    aws_smithy_types::base64::encode(b)
}

const NONZERO: &[usize] = &[0, 1, 7, 64, 100, 136];

fn test_image(root: &Path) -> TestImage {
    let dir = root.join("images").join("t1");
    std::fs::create_dir_all(&dir).unwrap();
    let mut data = vec![0u8; 136 * MOTO_BLOCK + 100];
    for &i in NONZERO {
        let start = i * MOTO_BLOCK;
        let end = (start + MOTO_BLOCK).min(data.len());
        for (k, b) in data[start..end].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(k as u8) | 1;
        }
    }
    std::fs::write(dir.join("disk.raw"), &data).unwrap();
    let sha256 = hex(&Sha256::digest(&data));
    let manifest = format!(
        r#"{{
  "profile": {{ "name": "t1", "path": "images/t1.toml", "sha256": "00", "description": "test" }},
  "version": "0.1.0",
  "commit": "0123456789abcdef0123456789abcdef01234567",
  "cargo_features": {{ "init": [], "nat-init": [] }},
  "artifacts": [
    {{ "file": "disk.raw", "size": {}, "sha256": "{sha256}" }}
  ]
}}
"#,
        data.len()
    );
    std::fs::write(dir.join("manifest.json"), manifest).unwrap();
    TestImage { dir, data, sha256 }
}

/// The block as AWS and moto receive it: zero-padded to the block size.
fn block(data: &[u8], i: usize) -> Vec<u8> {
    let mut b = data[i * MOTO_BLOCK..((i + 1) * MOTO_BLOCK).min(data.len())].to_vec();
    b.resize(MOTO_BLOCK, 0);
    b
}

/// Runs xtask-ami with static test credentials and nothing from the user's AWS setup.
fn xtask_ami(args: &[&str], creds: Option<(&str, &str)>, scratch: &Path) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask-ami"));
    c.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    c.env("AWS_CONFIG_FILE", scratch.join("no-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            scratch.join("no-credentials"),
        )
        // Never ask the instance metadata service (a non-loopback address) for credentials.
        .env("AWS_EC2_METADATA_DISABLED", "true");
    if let Some((key, secret)) = creds {
        c.env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[derive(Debug)]
struct Recorded {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn parse_recording(text: &str) -> Vec<Recorded> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let url = v["url"].as_str().unwrap_or_default();
            let path = url
                .splitn(4, '/')
                .nth(3)
                .map(|p| format!("/{p}"))
                .unwrap_or_default();
            let headers = v["headers"]
                .as_object()
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| {
                            (
                                k.to_ascii_lowercase(),
                                v.as_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let body = v["body"].as_str().unwrap_or_default();
            let body = if v["body_encoded"].as_bool() == Some(true) {
                aws_smithy_types::base64::decode(body).unwrap()
            } else {
                body.as_bytes().to_vec()
            };
            Recorded {
                method: v["method"].as_str().unwrap_or_default().to_string(),
                path,
                headers,
                body,
            }
        })
        .collect()
}

/// Decodes an application/x-www-form-urlencoded body.
fn form(body: &[u8]) -> BTreeMap<String, String> {
    fn unescape(s: &str) -> String {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(h, 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

#[test]
fn ebs_direct_upload_and_register_against_moto() {
    let moto = Moto::start("ebs");
    let img = test_image(&moto.dir);
    moto.recorder("reset-recording");
    moto.recorder("start-recording");

    let started = Instant::now();
    let out = xtask_ami(
        &[
            "--image-dir",
            img.dir.to_str().unwrap(),
            "--profile",
            "t1",
            "--region",
            "us-east-1",
            "--endpoint-url",
            &moto.endpoint(),
            "--jobs",
            "3",
        ],
        Some(TEST_CREDS),
        &moto.dir,
    );
    moto.recorder("stop-recording");
    assert!(
        out.status.success(),
        "{}\nmoto log:\n{}",
        text(&out),
        moto.log()
    );
    eprintln!("publish took {:?}", started.elapsed());

    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let ami = stdout
        .lines()
        .find_map(|l| l.strip_prefix("AMI: "))
        .unwrap_or_else(|| panic!("no AMI line\n{}", text(&out)))
        .to_string();
    assert!(ami.starts_with("ami-"), "{ami}");
    assert!(
        stdout.contains(&format!("--image-id {ami} --instance-type t4g.nano")),
        "{stdout}"
    );
    // The appliance does its AWS part itself: the launch gives it a role and user-data.
    assert!(
        stdout.contains("--iam-instance-profile \"Name=$NAT_PROFILE\" --user-data file://nat.toml"),
        "{stdout}"
    );
    assert!(
        stdout.contains("--iam-policy --user-data nat.toml"),
        "{stdout}"
    );
    assert!(!stdout.contains("aws ec2 create-route"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        stderr.contains(&format!("upload: {n}/{n} blocks", n = NONZERO.len())),
        "{stderr}"
    );

    let rec = parse_recording(&moto.recorder("download-recording"));

    // StartSnapshot: 1 GiB (the smallest EBS volume) for a 68 KiB image.
    let start = rec
        .iter()
        .find(|r| r.method == "POST" && r.path == "/snapshots")
        .expect("StartSnapshot recorded");
    let start: serde_json::Value = serde_json::from_slice(&start.body).unwrap();
    assert_eq!(start["VolumeSize"], 1);
    assert_eq!(start["Timeout"], 60);

    // Only the non-zero blocks were sent, each once, with its data and SHA-256.
    let puts: Vec<&Recorded> = rec
        .iter()
        .filter(|r| {
            r.method == "PUT" && r.path.starts_with("/snapshots/") && r.path.contains("/blocks/")
        })
        .collect();
    let mut sent = BTreeSet::new();
    let snap = puts
        .first()
        .expect("no PutSnapshotBlock")
        .path
        .split('/')
        .nth(2)
        .unwrap()
        .to_string();
    for p in &puts {
        let idx: usize = p.path.rsplit('/').next().unwrap().parse().unwrap();
        assert!(sent.insert(idx), "block {idx} sent twice");
        let want = block(&img.data, idx);
        assert_eq!(p.body, want, "block {idx} data");
        assert_eq!(
            p.headers.get("x-amz-checksum"),
            Some(&b64(&Sha256::digest(&want))),
            "block {idx}"
        );
        assert_eq!(
            p.headers
                .get("x-amz-checksum-algorithm")
                .map(String::as_str),
            Some("SHA256")
        );
        assert_eq!(
            p.headers.get("x-amz-data-length"),
            Some(&MOTO_BLOCK.to_string())
        );
    }
    assert_eq!(sent, NONZERO.iter().copied().collect::<BTreeSet<_>>());

    // CompleteSnapshot carries the LINEAR checksum, computed here independently.
    let complete = rec
        .iter()
        .find(|r| r.method == "POST" && r.path.starts_with("/snapshots/completion/"))
        .expect("CompleteSnapshot recorded");
    let mut concat = Vec::new();
    for &i in NONZERO {
        concat.extend_from_slice(&Sha256::digest(block(&img.data, i)));
    }
    assert_eq!(
        complete.headers.get("x-amz-checksum"),
        Some(&b64(&Sha256::digest(&concat)))
    );
    assert_eq!(
        complete
            .headers
            .get("x-amz-checksum-aggregation-method")
            .map(String::as_str),
        Some("LINEAR")
    );
    assert_eq!(
        complete.headers.get("x-amz-changedblockscount"),
        Some(&NONZERO.len().to_string())
    );

    // RegisterImage carries exactly these flags.
    let regs: Vec<BTreeMap<String, String>> = rec
        .iter()
        .filter(|r| {
            r.headers
                .get("content-type")
                .is_some_and(|c| c.contains("x-www-form-urlencoded"))
        })
        .map(|r| form(&r.body))
        .filter(|f| f.get("Action").map(String::as_str) == Some("RegisterImage"))
        .collect();
    assert_eq!(regs.len(), 1, "one RegisterImage");
    let name = format!("t1-0.1.0-0123456789ab-{}", &img.sha256[..12]);
    let description = format!(
        "t1 0.1.0 commit 0123456789abcdef0123456789abcdef01234567 disk.raw sha256 {}",
        img.sha256
    );
    let mut want: BTreeMap<String, String> = [
        ("Action", "RegisterImage"),
        ("Version", "2016-11-15"),
        ("Name", name.as_str()),
        ("Description", description.as_str()),
        ("Architecture", "arm64"),
        ("BootMode", "uefi"),
        ("VirtualizationType", "hvm"),
        ("EnaSupport", "true"),
        ("ImdsSupport", "v2.0"),
        ("RootDeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.Ebs.SnapshotId", snap.as_str()),
        ("BlockDeviceMapping.1.Ebs.VolumeType", "gp3"),
        ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"),
        ("TagSpecification.1.ResourceType", "image"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let tags = [
        ("Name", name.as_str()),
        ("appliance:profile", "t1"),
        ("appliance:version", "0.1.0"),
        (
            "appliance:commit",
            "0123456789abcdef0123456789abcdef01234567",
        ),
        ("appliance:disk-sha256", img.sha256.as_str()),
    ];
    for (i, (k, v)) in tags.iter().enumerate() {
        want.insert(
            format!("TagSpecification.1.Tag.{}.Key", i + 1),
            k.to_string(),
        );
        want.insert(
            format!("TagSpecification.1.Tag.{}.Value", i + 1),
            v.to_string(),
        );
    }
    assert_eq!(regs[0], want);

    // moto's own state: the snapshot completed and holds exactly the non-zero blocks.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http_client())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(moto.endpoint())
            .credentials_provider(aws_sdk_ebs::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await;
        let ec2 = aws_sdk_ec2::Client::new(&conf);
        let snaps = ec2
            .describe_snapshots()
            .snapshot_ids(&snap)
            .send()
            .await
            .unwrap();
        assert_eq!(
            snaps.snapshots()[0].state(),
            Some(&aws_sdk_ec2::types::SnapshotState::Completed)
        );
        let ebs = aws_sdk_ebs::Client::new(&conf);
        let listed = ebs
            .list_snapshot_blocks()
            .snapshot_id(&snap)
            .send()
            .await
            .unwrap();
        let idx: BTreeSet<usize> = listed
            .blocks()
            .iter()
            .filter_map(|b| b.block_index())
            .map(|i| i as usize)
            .collect();
        assert_eq!(idx, NONZERO.iter().copied().collect::<BTreeSet<_>>());
        let images = ec2.describe_images().image_ids(&ami).send().await.unwrap();
        let image = &images.images()[0];
        assert_eq!(
            image.state(),
            Some(&aws_sdk_ec2::types::ImageState::Available)
        );
        assert_eq!(image.name(), Some(name.as_str()));
    });
}

#[test]
fn missing_credentials_are_named_with_the_fix() {
    let moto = Moto::start("nocreds");
    let img = test_image(&moto.dir);
    let out = xtask_ami(
        &[
            "--image-dir",
            img.dir.to_str().unwrap(),
            "--profile",
            "t1",
            "--region",
            "us-east-1",
            "--endpoint-url",
            &moto.endpoint(),
        ],
        None,
        &moto.dir,
    );
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no AWS credentials found"), "{err}");
    assert!(err.contains("aws sso login"), "{err}");
    // Nothing reached the service.
    assert!(!moto.log().contains("POST /snapshots"), "{}", moto.log());
}

#[test]
fn dry_run_prints_every_call_without_credentials() {
    let scratch = std::env::temp_dir().join(format!("xtask-ami-dry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let img = test_image(&scratch);
    let out = xtask_ami(
        &[
            "--image-dir",
            img.dir.to_str().unwrap(),
            "--profile",
            "t1",
            "--dry-run",
            "--public",
        ],
        None,
        &scratch,
    );
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    for api in [
        "ebs:StartSnapshot",
        "ebs:PutSnapshotBlock",
        "ebs:CompleteSnapshot",
        "ec2:DescribeSnapshots",
        "ec2:RegisterImage",
        "ec2:DescribeImages",
        "ec2:ModifyImageAttribute",
    ] {
        assert!(s.contains(&format!(". {api}\n")), "{api} missing:\n{s}");
    }
    // At AWS's 512 KiB the whole 68 KiB test image is one non-zero block.
    assert_eq!(s.matches(". ebs:PutSnapshotBlock\n").count(), 1, "{s}");
    assert!(s.contains("$ SNAP=$(aws ebs start-snapshot"), "{s}");
    assert!(s.contains("--checksum-aggregation-method LINEAR"), "{s}");
    assert!(s.contains("--architecture arm64 --boot-mode uefi"), "{s}");
    assert!(s.contains("aws ec2 run-instances"), "{s}");
    std::fs::remove_dir_all(&scratch).unwrap();
}

#[test]
fn missing_image_names_the_command_that_builds_it() {
    let scratch = std::env::temp_dir().join(format!("xtask-ami-noimg-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let out = xtask_ami(
        &[
            "--image-dir",
            scratch.join("none").to_str().unwrap(),
            "--profile",
            "p9",
            "--dry-run",
        ],
        None,
        &scratch,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("run `cargo xtask image --profile p9` first"),
        "{err}"
    );
    std::fs::remove_dir_all(&scratch).unwrap();
}

#[test]
fn interrupted_upload_deletes_its_snapshot() {
    use std::io::BufRead;
    let moto = Moto::start("interrupt");
    // Enough 512-byte blocks that one-at-a-time uploading takes seconds.
    let dir = moto.dir.join("images").join("big");
    std::fs::create_dir_all(&dir).unwrap();
    let data = vec![0x5au8; 8 * 1024 * 1024];
    std::fs::write(dir.join("disk.raw"), &data).unwrap();
    let manifest = format!(
        r#"{{"profile": {{"name": "big"}}, "version": "0.1.0", "commit": "unknown",
            "cargo_features": {{"init": []}},
            "artifacts": [{{"file": "disk.raw", "size": {}, "sha256": "{}"}}]}}"#,
        data.len(),
        hex(&Sha256::digest(&data))
    );
    std::fs::write(dir.join("manifest.json"), manifest).unwrap();

    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask-ami"));
    c.args([
        "--image-dir",
        dir.to_str().unwrap(),
        "--profile",
        "big",
        "--region",
        "us-east-1",
    ])
    .args(["--endpoint-url", &moto.endpoint(), "--jobs", "1"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    let mut child = c
        .env("AWS_CONFIG_FILE", moto.dir.join("no-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            moto.dir.join("no-credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut snap = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if let Some(rest) = line.strip_prefix("snapshot ") {
            snap = rest.split_whitespace().next().map(str::to_string);
        }
        if line.starts_with("uploading ") {
            break;
        }
    }
    let snap = snap.unwrap_or_else(|| panic!("no snapshot started:\n{}", seen.join("\n")));
    // Let a few blocks go, then press Ctrl-C.
    std::thread::sleep(Duration::from_millis(500));
    // The shell's builtin `kill`: no unsafe libc call, and no procps needed.
    let kill = Command::new("sh")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .unwrap();
    assert!(kill.success());
    seen.extend(lines.map(|l| l.unwrap()));
    let status = child.wait().unwrap();
    let err = seen.join("\n");
    assert!(!status.success(), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(err.contains(&format!("deleted {snap}")), "{err}");
    assert!(
        !err.contains("upload: 16384/16384"),
        "the upload finished before the interrupt:\n{err}"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http_client())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(moto.endpoint())
            .credentials_provider(aws_sdk_ebs::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await;
        let ec2 = aws_sdk_ec2::Client::new(&conf);
        let found = ec2.describe_snapshots().snapshot_ids(&snap).send().await;
        let code = found
            .as_ref()
            .err()
            .and_then(aws_sdk_ec2::error::ProvideErrorMetadata::code);
        assert_eq!(
            code,
            Some("InvalidSnapshot.NotFound"),
            "{snap} still exists: {found:?}"
        );
    });
}

/// Creates, through moto's IAM, a user allowed `ec2:*` only, and returns its access key.
/// boto3 comes with moto; IAM enforcement starts after these three unauthenticated calls.
const IAM_SETUP: &str = r#"
import boto3, json, sys
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
iam.create_user(UserName="ec2-only")
key = iam.create_access_key(UserName="ec2-only")["AccessKey"]
iam.put_user_policy(UserName="ec2-only", PolicyName="ec2-only", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["ec2:*"], "Resource": "*"}]}))
print(key["AccessKeyId"], key["SecretAccessKey"])
"#;

#[test]
fn missing_permission_is_named_and_not_retried() {
    let moto = Moto::start_with_env("denied", &[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
    let img = test_image(&moto.dir);
    let setup = Command::new("python3")
        .args(["-c", IAM_SETUP, &moto.endpoint()])
        .output()
        .unwrap();
    assert!(setup.status.success(), "{}", text(&setup));
    let keys = String::from_utf8(setup.stdout).unwrap();
    let (key, secret) = keys.trim().split_once(' ').unwrap();
    let out = xtask_ami(
        &[
            "--image-dir",
            img.dir.to_str().unwrap(),
            "--region",
            "us-east-1",
            "--endpoint-url",
            &moto.endpoint(),
        ],
        Some((key, secret)),
        &moto.dir,
    );
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing permission ebs:StartSnapshot"),
        "{err}"
    );
    assert!(err.contains("--print-policy"), "{err}");
    // A denial is final: no retries.
    assert!(!err.contains("retrying"), "{err}");
}

/// The region a recorded request was signed for (SigV4's credential scope).
fn signed_region(r: &Recorded) -> String {
    r.headers
        .get("authorization")
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(2))
        .unwrap_or_default()
        .to_string()
}

/// The EC2 Query requests of one action, with the region each was sent to.
fn ec2_actions(rec: &[Recorded], action: &str) -> Vec<(String, BTreeMap<String, String>)> {
    rec.iter()
        .filter(|r| {
            r.headers
                .get("content-type")
                .is_some_and(|c| c.contains("x-www-form-urlencoded"))
        })
        .map(|r| (signed_region(r), form(&r.body)))
        .filter(|(_, f)| f.get("Action").map(String::as_str) == Some(action))
        .collect()
}

/// The table's rows: region → (AMI, state).
fn table_rows(stdout: &str) -> BTreeMap<String, (String, String)> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("REGION "));
    assert!(lines.next().is_some(), "no table in\n{stdout}");
    lines
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("map: "))
        .map(|l| {
            let mut w = l.split_whitespace();
            let region = w.next().unwrap().to_string();
            let ami = w.next().unwrap().to_string();
            (region, (ami, w.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

fn sdk_conf(moto: &Moto, region: &str) -> aws_config::SdkConfig {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http_client())
            .region(aws_config::Region::new(region.to_string()))
            .endpoint_url(moto.endpoint())
            .credentials_provider(aws_sdk_ebs::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load(),
    )
}

/// Runs xtask-ami against `moto` with `extra` flags, recording every request.
fn publish(moto: &Moto, img: &TestImage, extra: &[&str]) -> (Output, Vec<Recorded>) {
    moto.recorder("reset-recording");
    moto.recorder("start-recording");
    let mut args = vec![
        "--image-dir",
        img.dir.to_str().unwrap(),
        "--profile",
        "t1",
        "--endpoint-url",
    ];
    let endpoint = moto.endpoint();
    args.push(&endpoint);
    args.extend_from_slice(extra);
    let out = xtask_ami(&args, Some(TEST_CREDS), &moto.dir);
    moto.recorder("stop-recording");
    let rec = parse_recording(&moto.recorder("download-recording"));
    (out, rec)
}

const PARAM: &str = "/nat-appliance/t1/latest/arm64";

#[test]
fn regions_get_tagged_public_deprecated_copies_and_ssm_parameters() {
    let moto = Moto::start_shimmed("regions", &[]);
    let img = test_image(&moto.dir);
    let map_path = moto.dir.join("out").join("amis.json");
    let (out, rec) = publish(
        &moto,
        &img,
        &[
            "--region",
            "us-east-1",
            "--regions",
            "eu-west-1,us-east-1,ap-southeast-2,us-west-2",
            "--public",
            "--deprecate-in",
            "30",
            "--ssm-parameter",
            PARAM,
            "--amis-json",
            map_path.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}\nmoto log:\n{}",
        text(&out),
        moto.log()
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();

    // The table: home first, then the copies, each available.
    let rows = table_rows(&stdout);
    let regions = ["us-east-1", "eu-west-1", "ap-southeast-2", "us-west-2"];
    assert_eq!(
        rows.keys().collect::<BTreeSet<_>>(),
        regions
            .iter()
            .map(|r| r.to_string())
            .collect::<BTreeSet<_>>()
            .iter()
            .collect(),
        "{stdout}"
    );
    assert_eq!(rows["us-east-1"].1, "available (registered)", "{stdout}");
    for r in &regions[1..] {
        assert_eq!(rows[*r].1, "available (copied)", "{stdout}");
    }
    let home_ami = rows["us-east-1"].0.clone();
    let ids: BTreeSet<&String> = rows.values().map(|(a, _)| a).collect();
    assert_eq!(ids.len(), 4, "four distinct AMIs: {stdout}");
    assert!(stdout.contains(&format!("AMI: {home_ami}")), "{stdout}");

    // The map: every region with its id, nothing failed.
    let map: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&map_path).unwrap()).unwrap();
    assert!(
        stdout.contains(&format!("map: {}", map_path.display())),
        "{stdout}"
    );
    for r in regions {
        assert_eq!(map["regions"][r]["ImageId"], rows[r].0.as_str(), "{map}");
    }
    assert_eq!(map["regions"].as_object().unwrap().len(), 4, "{map}");
    assert_eq!(map["failed"].as_object().unwrap().len(), 0, "{map}");
    assert_eq!(map["home_region"], "us-east-1");
    assert_eq!(map["ssm_parameter"], PARAM);
    assert_eq!(map["public"], true);
    let deprecate = map["deprecation_time"].as_str().unwrap().to_string();
    // Whole minutes, UTC.
    assert!(
        deprecate.ends_with(":00Z") && deprecate.len() == 20,
        "{deprecate}"
    );

    // The requests: one DescribeRegions; one CopyImage into each other region, from the home
    // AMI, asking for the source's tags (moto ignores TagSpecifications, so only the recording
    // shows them).
    assert_eq!(ec2_actions(&rec, "DescribeRegions").len(), 1);
    let copies = ec2_actions(&rec, "CopyImage");
    assert_eq!(
        copies
            .iter()
            .map(|(r, _)| r.as_str())
            .collect::<BTreeSet<_>>(),
        regions[1..].iter().copied().collect::<BTreeSet<_>>()
    );
    assert_eq!(copies.len(), 3);
    let name = format!("t1-0.1.0-0123456789ab-{}", &img.sha256[..12]);
    for (_, c) in &copies {
        assert_eq!(c["SourceRegion"], "us-east-1");
        assert_eq!(c["SourceImageId"], home_ami);
        assert_eq!(c["Name"], name);
        assert!(c.contains_key("ClientToken"), "{c:?}");
        assert_eq!(c["TagSpecification.1.ResourceType"], "image");
        assert_eq!(c["TagSpecification.1.Tag.3.Key"], "appliance:version");
        assert_eq!(c["TagSpecification.2.ResourceType"], "snapshot");
    }
    // EnableImageDeprecation, which moto lacks: one per region, each the map's time.
    let deps = ec2_actions(&rec, "EnableImageDeprecation");
    assert_eq!(deps.len(), 4, "{deps:?}");
    for r in regions {
        let (_, d) = deps.iter().find(|(reg, _)| reg == r).unwrap();
        assert_eq!(d["ImageId"], rows[r].0);
        assert_eq!(d["DeprecateAt"], deprecate);
    }

    // moto's state in each region: the image, its tags, public, deprecation, the parameter.
    let tags = [
        ("Name", name.as_str()),
        ("appliance:profile", "t1"),
        ("appliance:version", "0.1.0"),
        (
            "appliance:commit",
            "0123456789abcdef0123456789abcdef01234567",
        ),
        ("appliance:disk-sha256", img.sha256.as_str()),
    ];
    for r in regions {
        let conf = sdk_conf(&moto, r);
        let ami = rows[r].0.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let ec2 = aws_sdk_ec2::Client::new(&conf);
            let images = ec2.describe_images().image_ids(&ami).send().await.unwrap();
            let image = &images.images()[0];
            assert_eq!(
                image.state(),
                Some(&aws_sdk_ec2::types::ImageState::Available),
                "{r}"
            );
            assert_eq!(image.name(), Some(name.as_str()), "{r}");
            let have: BTreeSet<(&str, &str)> = image
                .tags()
                .iter()
                .map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")))
                .collect();
            for t in tags {
                assert!(have.contains(&t), "{r}: {t:?} missing from {have:?}");
            }
            assert_eq!(image.public(), Some(true), "{r}");
            // The shim stores what it was sent; moto renders it without the T and Z.
            assert!(
                image
                    .deprecation_time()
                    .is_some_and(|t| t.starts_with(&deprecate[..10])),
                "{r}: {:?}",
                image.deprecation_time()
            );
            let perms = ec2
                .describe_image_attribute()
                .image_id(&ami)
                .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
                .send()
                .await
                .unwrap();
            assert_eq!(
                perms.launch_permissions()[0].group(),
                Some(&aws_sdk_ec2::types::PermissionGroup::All),
                "{r}"
            );
            let ssm = aws_sdk_ssm::Client::new(&conf);
            let p = ssm.get_parameter().name(PARAM).send().await.unwrap();
            let p = p.parameter().unwrap();
            assert_eq!(p.value(), Some(ami.as_str()), "{r}");
            assert_eq!(p.data_type(), Some("aws:ec2:image"), "{r}");
            assert_eq!(
                p.r#type(),
                Some(&aws_sdk_ssm::types::ParameterType::String),
                "{r}"
            );
        });
    }
}

#[test]
fn a_failing_region_is_named_and_the_others_are_kept() {
    let moto = Moto::start_shimmed("regionfail", &[("XTASK_TEST_COPY_FAILS_IN", "eu-west-1")]);
    let img = test_image(&moto.dir);
    let (out, rec) = publish(
        &moto,
        &img,
        &[
            "--regions",
            "us-east-1,eu-west-1,xx-nowhere-1,us-west-2",
            "--ssm-parameter",
            PARAM,
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        stderr.contains("2 of 4 regions failed: eu-west-1, xx-nowhere-1"),
        "{}",
        text(&out)
    );

    let rows = table_rows(&stdout);
    assert_eq!(rows["us-east-1"].1, "available (registered)", "{stdout}");
    assert_eq!(rows["us-west-2"].1, "available (copied)", "{stdout}");
    let failed_copy = &rows["eu-west-1"];
    assert!(failed_copy.0.starts_with("ami-"), "{stdout}");
    assert_eq!(
        failed_copy.1,
        format!("FAILED: AMI {} is failed: no reason given", failed_copy.0),
        "{stdout}"
    );
    assert_eq!(rows["xx-nowhere-1"].0, "-", "{stdout}");
    assert!(
        rows["xx-nowhere-1"]
            .1
            .starts_with("FAILED: xx-nowhere-1 is not a region"),
        "{stdout}"
    );

    // The map (default place: beside the image) keeps the good regions only.
    let map: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(img.dir.join("amis.json")).unwrap()).unwrap();
    let good: BTreeSet<&String> = map["regions"].as_object().unwrap().keys().collect();
    assert_eq!(
        good,
        ["us-east-1", "us-west-2"]
            .map(String::from)
            .iter()
            .collect(),
        "{map}"
    );
    assert_eq!(
        map["regions"]["us-west-2"]["ImageId"],
        rows["us-west-2"].0.as_str()
    );
    let failed: BTreeSet<&String> = map["failed"].as_object().unwrap().keys().collect();
    assert_eq!(
        failed,
        ["eu-west-1", "xx-nowhere-1"]
            .map(String::from)
            .iter()
            .collect(),
        "{map}"
    );

    // The unknown region was refused before any request went there; the failed copy got no
    // parameter, the good ones did.
    assert!(
        rec.iter().all(|r| signed_region(r) != "xx-nowhere-1"),
        "a request went to xx-nowhere-1"
    );
    let puts: BTreeSet<String> = rec
        .iter()
        .filter(|r| {
            r.headers
                .get("x-amz-target")
                .is_some_and(|t| t.ends_with(".PutParameter"))
        })
        .map(signed_region)
        .collect();
    assert_eq!(puts, ["us-east-1", "us-west-2"].map(String::from).into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conf = sdk_conf(&moto, "us-west-2");
    rt.block_on(async {
        let ssm = aws_sdk_ssm::Client::new(&conf);
        let p = ssm.get_parameter().name(PARAM).send().await.unwrap();
        assert_eq!(
            p.parameter().unwrap().value(),
            Some(rows["us-west-2"].0.as_str())
        );
    });
}

#[test]
fn all_regions_means_every_enabled_one() {
    let moto = Moto::start_shimmed("allregions", &[]);
    let img = test_image(&moto.dir);
    let (out, rec) = publish(&moto, &img, &["--region", "eu-west-1", "--regions", "all"]);
    assert!(
        out.status.success(),
        "{}\nmoto log:\n{}",
        text(&out),
        moto.log()
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let rows = table_rows(&stdout);

    // What moto's DescribeRegions calls enabled, asked independently.
    let conf = sdk_conf(&moto, "eu-west-1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (enabled, disabled): (BTreeSet<String>, BTreeSet<String>) = rt.block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&conf);
        let out = ec2
            .describe_regions()
            .all_regions(true)
            .send()
            .await
            .unwrap();
        let mut on = BTreeSet::new();
        let mut off = BTreeSet::new();
        for r in out.regions() {
            let name = r.region_name().unwrap().to_string();
            match r.opt_in_status() {
                Some("opt-in-not-required" | "opted-in") => on.insert(name),
                _ => off.insert(name),
            };
        }
        (on, off)
    });
    assert!(!disabled.is_empty() && enabled.len() > 4);
    assert_eq!(
        rows.keys().cloned().collect::<BTreeSet<_>>(),
        enabled,
        "{stdout}"
    );
    assert!(
        rows.values()
            .all(|(a, s)| a.starts_with("ami-") && s.starts_with("available"))
    );
    let copied: BTreeSet<String> = ec2_actions(&rec, "CopyImage")
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert_eq!(copied.len(), enabled.len() - 1);
    assert!(!copied.contains("eu-west-1") && copied.is_disjoint(&disabled));
}

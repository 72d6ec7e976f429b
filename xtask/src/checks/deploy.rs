//! Deploy checks: the CloudFormation template and the Terraform module of `deploy/`, without an
//! AWS account. cfn-lint on the template; the template deployed into moto's CloudFormation (a
//! local stand-in for AWS: `moto_server` on 127.0.0.1 at a free port, nothing else contacted)
//! and every resource read back (roles and their policy against `nat-init --iam-policy`, the
//! launch templates' user-data through nat-init's own loader, security group, Auto Scaling
//! groups, Elastic IPs, alarms, outputs); the Terraform module parsed and checked by checkov
//! (Terraform and its providers cannot be downloaded here); and the two kept alike.
//!
//! The checks themselves are Python (`deploy/tests/`), because the tools are: boto3, cfn-lint,
//! checkov and the HCL2 parser, installed by `hostdeps::ensure_deploy_tools` into
//! `target/host/deploy`. This module installs, builds nat-init for the host, starts and stops
//! moto, and runs one script subcommand per named check.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::hostdeps;
use crate::report::Report;

const GENERATED: &str = "deploy-cfn-generated";
const CFN_LINT: &str = "deploy-cfn-lint";
const CFN_DEPLOY: &str = "deploy-cfn-moto-create";
const CFN_IAM: &str = "deploy-cfn-iam-policy-is-nat-inits";
const CFN_USER_DATA: &str = "deploy-cfn-user-data-loads";
const CFN_NETWORK: &str = "deploy-cfn-network-and-groups";
const CFN_ALARMS: &str = "deploy-cfn-alarms";
const CFN_OUTPUTS: &str = "deploy-cfn-outputs";
const TF_PARSE: &str = "deploy-terraform-parses";
const TF_CHECKOV: &str = "deploy-terraform-checkov";
const PARITY: &str = "deploy-cfn-terraform-parity";

pub const CHECKS: &[&str] = &[
    GENERATED,
    CFN_LINT,
    CFN_DEPLOY,
    CFN_IAM,
    CFN_USER_DATA,
    CFN_NETWORK,
    CFN_ALARMS,
    CFN_OUTPUTS,
    TF_PARSE,
    TF_CHECKOV,
    PARITY,
];

/// `moto_server`, stopped (by its pid) when dropped.
struct Moto {
    child: duct::Handle,
    endpoint: String,
    log: PathBuf,
}

impl Moto {
    fn start(bin: &Path, dir: &Path) -> Result<Self> {
        // A free loopback port: bound, read, released, then given to moto.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port on 127.0.0.1")?
            .port();
        let log = dir.join("moto.log");
        let child = duct::cmd(
            bin.join("moto_server"),
            ["-H", "127.0.0.1", "-p", &port.to_string()],
        )
        .stderr_to_stdout()
        .stdout_path(&log)
        .unchecked()
        .start()
        .context("starting moto_server")?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                bail!(
                    "moto_server did not listen on {endpoint} within 30 s; its log: {}",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self {
            child,
            endpoint,
            log,
        })
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Runs `python SCRIPT ARGS...` from the deploy venv; its output is shown, and a non-zero exit
/// is the check's failure with the script's message.
fn script(bin: &Path, root: &Path, script: &str, args: &[&str]) -> Result<()> {
    let path = root.join("deploy").join("tests").join(script);
    let out = duct::cmd(
        bin.join("python3"),
        std::iter::once(path.as_os_str()).chain(args.iter().map(std::ffi::OsStr::new)),
    )
    .dir(root)
    .stderr_to_stdout()
    .stdout_capture()
    .unchecked()
    .run()
    .with_context(|| format!("running {}", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("{script} {}: {}", args.first().unwrap_or(&""), text.trim());
    }
    crate::report::say(text.trim());
    Ok(())
}

/// Builds nat-init for the host and returns its binary (the loader and `--iam-policy`).
fn nat_init(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec!["build", "-q", "-p", "nat-init"];
    if std::env::var_os("CI").is_some() {
        args.push("--locked");
    }
    let out = duct::cmd(&cargo, &args)
        .dir(root)
        .unchecked()
        .run()
        .with_context(|| format!("running {cargo}"))?;
    if !out.status.success() {
        bail!("cargo {} failed (see above)", args.join(" "));
    }
    let bin = crate::target_dir(root).join("debug").join("nat-init");
    if !bin.is_file() {
        bail!("{} missing after the build", bin.display());
    }
    Ok(bin)
}

pub fn run(root: &Path, report: &mut Report) -> Result<()> {
    let target = crate::target_dir(root);
    let bin = hostdeps::ensure_deploy_tools(&target)?;
    let nat_init = nat_init(root)?;
    let nat_init = nat_init.to_string_lossy();
    let work = tempfile::Builder::new()
        .prefix("xtask-deploy-")
        .tempdir()
        .context("creating a temporary directory")?;

    report.check(GENERATED, || {
        script(&bin, root, "static.py", &["generated"])
    });
    report.check(CFN_LINT, || {
        let template = root.join("deploy/cloudformation/nat.yaml");
        let out = duct::cmd(bin.join("cfn-lint"), [template.as_os_str()])
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
            .context("running cfn-lint")?;
        let text = String::from_utf8_lossy(&out.stdout);
        // Clean means no finding at all, warnings included.
        if !out.status.success() || !text.trim().is_empty() {
            bail!("cfn-lint {}:\n{}", template.display(), text.trim());
        }
        Ok(())
    });

    let moto = Moto::start(&bin, work.path())?;
    let ep = moto.endpoint.as_str();
    let log = moto.log.to_string_lossy();
    report.check(CFN_DEPLOY, || {
        script(&bin, root, "cfn_moto.py", &["deploy", ep, &log])
    });
    let catalogue = root.join("nat-init/src/metrics/catalogue.rs");
    let catalogue = catalogue.to_string_lossy();
    let read_back: [(&str, &[&str]); 5] = [
        (CFN_IAM, &["iam", ep, &nat_init]),
        (CFN_USER_DATA, &["userdata", ep, &nat_init]),
        (CFN_NETWORK, &["network", ep]),
        (CFN_ALARMS, &["alarms", ep, &catalogue]),
        (CFN_OUTPUTS, &["outputs", ep]),
    ];
    for (name, args) in read_back {
        report.check_after(CFN_DEPLOY, name, || script(&bin, root, "cfn_moto.py", args));
    }
    drop(moto);

    report.check(TF_PARSE, || script(&bin, root, "static.py", &["terraform"]));
    report.check(TF_CHECKOV, || {
        let dir = root.join("deploy/terraform");
        // --skip-download and BC_SKIP_MAPPING: checkov fetches nothing (tests reach only
        // loopback). Skips are inline in main.tf, each with its reason.
        let out = duct::cmd(
            bin.join("checkov"),
            [
                "-d",
                &dir.to_string_lossy(),
                "--framework",
                "terraform",
                "--quiet",
                "--compact",
                "--skip-download",
            ],
        )
        .env("BC_SKIP_MAPPING", "TRUE")
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .context("running checkov")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !text.contains("Failed checks: 0") {
            bail!("checkov on {}:\n{}", dir.display(), text.trim());
        }
        Ok(())
    });
    report.check(PARITY, || script(&bin, root, "static.py", &["parity"]));
    Ok(())
}

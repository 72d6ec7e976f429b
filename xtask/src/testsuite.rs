//! `cargo xtask test`: every test of the project in one command. First the workspace's own
//! tests (`cargo test --workspace`: unit tests and root network-namespace tests), then checks
//! of the built image's artifacts, then boot tests of the real disk image under UEFI in QEMU.
//! It ends with a `N passed, M failed` line.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::image;
use crate::qemu::{Net, Vm, VmConfig};
use crate::report::{Report, say};
use crate::{digest, hostdeps};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Host,
    Image,
    Boot,
    E2e,
    /// The bench's smoke test: only with `--only bench`, never in the default run.
    Bench,
}

impl Part {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "host" => Self::Host,
            "image" => Self::Image,
            "boot" => Self::Boot,
            "e2e" => Self::E2e,
            "bench" => Self::Bench,
            _ => bail!("--only {s:?}: expected host, image, boot, e2e or bench"),
        })
    }
}

pub fn run(root: &Path, only: Option<Part>) -> Result<()> {
    let want = |p: Part| only.is_none_or(|o| o == p);
    let mut report = Report::default();
    if want(Part::Host) {
        hostdeps::ensure(hostdeps::QEMU)?;
        hostdeps::ensure(hostdeps::DISK_TOOLS)?;
        hostdeps::ensure(hostdeps::NET)?;
        report.check("cargo-test-workspace", || cargo_test(root));
    }
    if want(Part::Image) {
        hostdeps::ensure(hostdeps::QEMU)?;
        hostdeps::ensure(hostdeps::DISK_TOOLS)?;
        image_checks(root, &mut report)?;
    }
    if want(Part::Boot) {
        hostdeps::ensure(hostdeps::QEMU)?;
        boot_checks(root, &mut report)?;
    }
    if want(Part::E2e) {
        hostdeps::ensure(hostdeps::QEMU)?;
        hostdeps::ensure(hostdeps::NET)?;
        crate::e2e::run(root, &mut report)?;
    }
    if want(Part::Bench) {
        crate::bench::smoke(root, &mut report)?;
    }
    report.finish()
}

fn cargo_test(root: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = duct::cmd(cargo, ["test", "--workspace"])
        .dir(root)
        .unchecked()
        .run()?;
    if !out.status.success() {
        bail!("cargo test --workspace failed (see above)");
    }
    Ok(())
}

fn run_tool(program: &str, args: &[&str]) -> Result<String> {
    let out = duct::cmd(program, args)
        .stderr_to_stdout()
        .unchecked()
        .stdout_capture()
        .run()
        .with_context(|| format!("running {program}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("{program} {} failed: {text}", args.join(" "));
    }
    Ok(text)
}

fn image_checks(root: &Path, report: &mut Report) -> Result<()> {
    let built = image::run(
        root,
        &image::Args {
            profile: "nat-t4g".into(),
            ..Default::default()
        },
    )
    .context("building the nat-t4g image")?;
    let dir = built.dir.clone();
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let raw_sha = built.manifest["artifacts"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["file"] == "disk.raw"))
        .and_then(|x| x["sha256"].as_str())
        .unwrap_or_default()
        .to_string();

    report.check("image-sha256sums-match-files", || {
        let sums = std::fs::read_to_string(dir.join("SHA256SUMS"))?;
        let mut n = 0;
        for line in sums.lines() {
            let (sha, file) = line.split_once("  ").context("malformed SHA256SUMS line")?;
            let actual = digest::sha256_file(&dir.join(file))?;
            if actual != sha {
                bail!("{file}: SHA256SUMS says {sha}, file hashes to {actual}");
            }
            n += 1;
        }
        if n != image::ARTIFACTS.len() {
            bail!(
                "SHA256SUMS lists {n} files, expected {}",
                image::ARTIFACTS.len()
            );
        }
        Ok(())
    });
    report.check("image-raw-is-whole-gib-gpt", || {
        let len = std::fs::metadata(dir.join("disk.raw"))?.len();
        if len == 0 || len % (1 << 30) != 0 {
            bail!("disk.raw is {len} bytes, not a whole number of GiB");
        }
        let v = run_tool("sgdisk", &["-v", &p("disk.raw")])?;
        if !v.contains("No problems found") {
            bail!("sgdisk -v: {v}");
        }
        let info = run_tool("sgdisk", &["-p", &p("disk.raw")])?;
        if !info.contains("EF00") {
            bail!("no EFI System Partition (EF00) in:\n{info}");
        }
        Ok(())
    });
    for (file, fmt, want) in [
        ("disk.vhd", "vpc", "vpc"),
        ("disk.vmdk", "vmdk", "streamOptimized"),
    ] {
        report.check(&format!("image-{fmt}-check-and-roundtrip"), || {
            if fmt == "vmdk" {
                run_tool("qemu-img", &["check", "-f", fmt, &p(file)])?;
            } else {
                // qemu-img has no consistency check for VHD ("does not support checks"):
                // compare it with the raw disk instead.
                let c = run_tool(
                    "qemu-img",
                    &["compare", "-f", fmt, "-F", "raw", &p(file), &p("disk.raw")],
                )?;
                if !c.contains("Images are identical") {
                    bail!("qemu-img compare: {c}");
                }
            }
            let info = run_tool("qemu-img", &["info", "-f", fmt, &p(file)])?;
            if !info.contains(want) {
                bail!("qemu-img info does not say {want}:\n{info}");
            }
            if !info.contains("virtual size: 1 GiB") {
                bail!("virtual size is not 1 GiB:\n{info}");
            }
            let tmp = tempfile::Builder::new()
                .prefix("xtask-roundtrip-")
                .tempdir()
                .context("creating a temporary directory")?;
            let back = tmp.path().join("back.raw");
            run_tool(
                "qemu-img",
                &[
                    "convert",
                    "-f",
                    fmt,
                    "-O",
                    "raw",
                    &p(file),
                    &back.to_string_lossy(),
                ],
            )?;
            let sha = digest::sha256_file(&back)?;
            if sha != raw_sha {
                bail!("{file} converted back to raw hashes to {sha}, disk.raw is {raw_sha}");
            }
            Ok(())
        });
    }
    report.check("image-reproducible", || {
        let tmp = tempfile::Builder::new()
            .prefix("xtask-repro-")
            .tempdir()
            .context("creating a temporary directory")?;
        let again = image::run(
            root,
            &image::Args {
                profile: "nat-t4g".into(),
                out: Some(tmp.path().join("nat-t4g")),
                ..Default::default()
            },
        )?;
        if again.up_to_date {
            bail!("the second build reused the first instead of building");
        }
        let a = std::fs::read_to_string(dir.join("SHA256SUMS"))?;
        let b = std::fs::read_to_string(again.dir.join("SHA256SUMS"))?;
        if a != b {
            bail!("two builds differ:\n--- first\n{a}--- second\n{b}");
        }
        Ok(())
    });
    report.check("image-warm-rebuild-is-up-to-date", || {
        let again = image::run(
            root,
            &image::Args {
                profile: "nat-t4g".into(),
                ..Default::default()
            },
        )?;
        if !again.up_to_date {
            bail!("an unchanged rebuild wrote the image again");
        }
        Ok(())
    });
    Ok(())
}

fn boot_checks(root: &Path, report: &mut Report) -> Result<()> {
    let built = image::run(
        root,
        &image::Args {
            profile: "test-boot".into(),
            ..Default::default()
        },
    )
    .context("building the test-boot image")?;
    let mut cfg = VmConfig::new(built.dir.join("disk.raw"));
    cfg.net = Net::User;
    let mut vm = Vm::start(&cfg)?;
    let boot = Duration::from_secs(240);
    let ok = report.check("boot-uefi-init-up", || {
        let line = vm.wait_for("init: up in", boot)?;
        say(&format!(
            "{line} (wall {:.1} s from QEMU start)",
            vm.elapsed().as_secs_f64()
        ));
        Ok(())
    }) && report.check("boot-service-killed-and-restarted", || {
        let (i, first) = vm.wait_for_from(0, "heartbeat: started pid=", Duration::from_secs(60))?;
        let (j, _) = vm.wait_for_from(
            i,
            "init: heartbeat killed by signal SIGKILL",
            Duration::from_secs(60),
        )?;
        let (k, _) =
            vm.wait_for_from(j, "init: restarting heartbeat in", Duration::from_secs(30))?;
        let (_, second) =
            vm.wait_for_from(k, "heartbeat: started pid=", Duration::from_secs(60))?;
        if first == second {
            bail!("the restarted service has the same pid: {second}");
        }
        Ok(())
    }) && report.check("boot-acpi-powerdown-within-15s", || {
        let t = Instant::now();
        vm.qmp("system_powerdown")?;
        vm.wait_for("init: shutting down", Duration::from_secs(15))?;
        vm.wait_for("init: powering off", Duration::from_secs(15))?;
        let left = Duration::from_secs(15).saturating_sub(t.elapsed());
        let st = vm.wait_exit(left)?;
        if !st.success() {
            bail!("QEMU exited with {st}");
        }
        say(&format!(
            "powered off {:.1} s after the power button",
            t.elapsed().as_secs_f64()
        ));
        Ok(())
    });
    if !ok {
        say(&format!("serial console of the failed boot:\n{}", vm.log()));
    }
    Ok(())
}

//! Boot tests of the real disk image (`test-boot` profile) through UEFI firmware in QEMU's
//! current `virt` machine (PL011 console, power button through the ACPI GED): init comes up
//! having loaded every module of the image, supervises a service killed by a real SIGKILL, and
//! powers off on the ACPI power button. The Graviton-like variants (the `virt-4.1` GPIO power
//! button, the PCI 16550 console, other NIC placements) are booted by `e2e`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::kmod;
use crate::qemu::{self, Net, Nic, Vm, VmConfig};
use crate::report::{Report, say};
use crate::{hostdeps, image};

const INIT_UP: &str = "boot-uefi-init-up";
const MODULES: &str = "boot-init-loaded-every-module";
const SERVICE_RESTART: &str = "boot-service-killed-and-restarted";
const POWERDOWN: &str = "boot-acpi-powerdown-within-15s";
pub const CHECKS: &[&str] = &[INIT_UP, MODULES, SERVICE_RESTART, POWERDOWN];

pub fn run(root: &Path, report: &mut Report) -> Result<()> {
    hostdeps::ensure(hostdeps::QEMU)?;
    let built = image::run(
        root,
        &image::Args {
            profile: "test-boot".into(),
            ..Default::default()
        },
    )
    .context("building the test-boot image")?;
    let mut cfg = VmConfig::new(built.dir.join("disk.raw"));
    cfg.nics = vec![Nic::slot5(Net::User, qemu::DEFAULT_MAC)];
    let mut vm = Vm::start(&cfg)?;
    let boot = Duration::from_secs(240);
    let mut ok = report.check(INIT_UP, || {
        let line = vm.wait_for("init: up in", boot)?;
        say(&format!(
            "{line} (wall {:.1} s from QEMU start)",
            vm.elapsed().as_secs_f64()
        ));
        Ok(())
    });
    // Under TCG a boot that never came up would make each later check wait out its timeout.
    ok &= report.check_after(INIT_UP, MODULES, || {
        kmod::modules_loaded(&vm, &built.manifest, Duration::from_secs(1))
    });
    ok &= report.check_after(INIT_UP, SERVICE_RESTART, || {
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
    });
    ok &= report.check_after(INIT_UP, POWERDOWN, || {
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

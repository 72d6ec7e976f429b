//! Kernel modules, checked two ways. In every boot of our images: init's
//! `init: loaded N modules in M ms (F failed)` line must count every module of the image's
//! list and no failure (a driver that does not load, `ena` say, is otherwise noticed only when
//! an instance has no network). Without booting: every module's `vermagic=` must be one the
//! kernel on the disk accepts (its release, and the very string the kernel was built with).

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::modules;
use crate::qemu::Vm;

/// init's summary line after it loaded /etc/init/modules.list.
const LOADED: &str = "init: loaded ";
/// init's line for each module that failed.
const FAILED: &str = "init: module ";

/// How many modules the image's load list has: the manifest's `modules`.
pub fn expected_modules(manifest: &Value) -> Result<usize> {
    manifest["modules"]
        .as_array()
        .map(Vec::len)
        .context("the manifest has no modules list")
}

/// N and F of `init: loaded N modules in M ms (F failed)`.
fn parse_loaded(line: &str) -> Option<(usize, usize)> {
    let rest = &line[line.find(LOADED)? + LOADED.len()..];
    let (n, rest) = rest.split_once(" modules in ")?;
    let (_, rest) = rest.split_once(" ms (")?;
    let f = rest.strip_suffix(" failed)")?;
    Some((n.parse().ok()?, f.parse().ok()?))
}

/// The summary line against the image's module count; init's lines about the modules that
/// failed (from the console `log`) are quoted.
fn judge_loaded(line: &str, expected: usize, log: &str) -> Result<()> {
    let (loaded, failed) =
        parse_loaded(line).with_context(|| format!("cannot read the module counts in {line:?}"))?;
    if failed == 0 && loaded == expected {
        return Ok(());
    }
    // Each once: without `quiet` the kernel echoes init's /dev/kmsg copy with a timestamp.
    let mut why: Vec<&str> = Vec::new();
    for l in log.lines().filter(|l| l.contains(" failed: ")) {
        if let Some(i) = l.find(FAILED)
            && !why.contains(&&l[i..])
        {
            why.push(&l[i..]);
        }
    }
    bail!(
        "{line:?}: want {expected} loaded (the image's list) and 0 failed{}",
        if why.is_empty() {
            String::new()
        } else {
            format!("; init said:\n{}", why.join("\n"))
        }
    )
}

/// Waits up to `timeout` for init's module line on the console of `vm`, booted from the image
/// whose manifest is `manifest`, and checks that every module loaded.
pub fn modules_loaded(vm: &Vm, manifest: &Value, timeout: Duration) -> Result<()> {
    let expected = expected_modules(manifest)?;
    let (_, line) = vm.wait_for_from(0, LOADED, timeout)?;
    judge_loaded(&line, expected, &vm.log())
}

/// The release in the kernel Image's banner, `Linux version <release> (...`.
fn kernel_release(image: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    let at = image.windows(BANNER.len()).position(|w| w == BANNER)? + BANNER.len();
    let end = image[at..].iter().position(|&b| b == b' ' || b == 0)?;
    String::from_utf8(image[at..at + end].to_vec()).ok()
}

/// Checks every module's `vermagic=` against the kernel Image: present, for the kernel's
/// release, and exactly a NUL-terminated string of the Image (the kernel compiles its own
/// `VERMAGIC_STRING` in and refuses modules whose options differ). Returns the release and how
/// many modules were checked.
pub fn check_vermagic(kernel: &[u8], modules: &[(String, Vec<u8>)]) -> Result<(String, usize)> {
    let release = kernel_release(kernel).context("no `Linux version` banner in the kernel")?;
    let mut bad = Vec::new();
    for (name, elf) in modules {
        let info = modules::modinfo_of(elf).with_context(|| format!("module {name}"))?;
        let Some(vm) = info.vermagic else {
            bad.push(format!("{name}: no vermagic="));
            continue;
        };
        let mut needle = Vec::with_capacity(vm.len() + 2);
        needle.push(0);
        needle.extend_from_slice(vm.as_bytes());
        needle.push(0);
        if vm.split(' ').next() != Some(release.as_str()) {
            bad.push(format!(
                "{name}: vermagic {vm:?} is not for kernel {release}"
            ));
        } else if !kernel.windows(needle.len()).any(|w| w == needle) {
            bad.push(format!(
                "{name}: vermagic {vm:?} is not the kernel's own (its build options differ)"
            ));
        }
    }
    if !bad.is_empty() {
        bail!(
            "{} of {} modules do not match the kernel:\n{}",
            bad.len(),
            modules.len(),
            bad.join("\n")
        );
    }
    if modules.is_empty() {
        bail!("no modules to check");
    }
    Ok((release, modules.len()))
}

/// What a disk boots.
pub struct Booted {
    /// `/vmlinuz` on the ESP.
    pub kernel: Vec<u8>,
    /// The `.ko` files in the initramfs (`/initrd`): file name without `.ko`, bytes.
    pub modules: Vec<(String, Vec<u8>)>,
}

/// The kernel and modules the disk boots, read back from its ESP.
pub fn booted(disk: &Path) -> Result<Booted> {
    let mut files = crate::disk::read_esp_files(disk, &["vmlinuz", "initrd"])?.into_iter();
    let (Some(kernel), Some(initrd)) = (files.next(), files.next()) else {
        bail!("internal: the ESP reader returned fewer files than asked");
    };
    // Gzipped or plain, as the profile chose.
    let mut r: Box<dyn std::io::Read> = if initrd.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(std::io::Cursor::new(initrd)))
    } else {
        Box::new(std::io::Cursor::new(initrd))
    };
    let mut modules = Vec::new();
    loop {
        let mut e = cpio::NewcReader::new(r).context("reading the initramfs (newc cpio)")?;
        if e.entry().is_trailer() {
            break;
        }
        let name = e.entry().name().to_string();
        if name.starts_with("lib/modules/") && name.ends_with(".ko") {
            let mut data = Vec::new();
            e.read_to_end(&mut data)
                .with_context(|| format!("reading {name} from the initramfs"))?;
            let file = name.rsplit('/').next().unwrap_or(&name);
            modules.push((file.trim_end_matches(".ko").to_string(), data));
        }
        r = e.finish().context("reading the initramfs (newc cpio)")?;
    }
    Ok(Booted { kernel, modules })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::tests::elf;

    #[test]
    fn the_module_line_must_count_every_module_and_no_failure() {
        let ok = "[    2.1] init: loaded 23 modules in 140 ms (0 failed)";
        assert_eq!(parse_loaded(ok), Some((23, 0)));
        assert_eq!(parse_loaded("init: loaded 23 modules in 140 ms"), None);
        judge_loaded(ok, 23, "").unwrap();
        let log = "init: module /lib/modules/6.1.0-56-cloud-arm64/kernel/drivers/input/evdev.ko failed: finit_module: Operation not permitted (1)\n\
                   [    1.2] init: module /lib/modules/6.1.0-56-cloud-arm64/kernel/drivers/input/evdev.ko failed: finit_module: Operation not permitted (1)\n\
                   init: loaded 8 modules in 30 ms (1 failed)";
        let e = format!(
            "{:#}",
            judge_loaded("init: loaded 8 modules in 30 ms (1 failed)", 9, log).unwrap_err()
        );
        assert!(e.contains("want 9 loaded"), "{e}");
        assert_eq!(e.matches("evdev.ko failed: finit_module").count(), 1, "{e}");
        // Fewer modules than the image lists, none failed (a list cut short): also wrong.
        let e = format!("{:#}", judge_loaded(ok, 24, "").unwrap_err());
        assert!(
            e.contains("want 24 loaded (the image's list) and 0 failed"),
            "{e}"
        );
        assert!(judge_loaded("init: loaded x modules in 1 ms (0 failed)", 1, "").is_err());
        let m = serde_json::json!({"modules": [{"name": "a"}, {"name": "b"}]});
        assert_eq!(expected_modules(&m).unwrap(), 2);
        assert!(expected_modules(&serde_json::json!({})).is_err());
    }

    const VM: &str = "6.1.0-56-cloud-arm64 SMP mod_unload modversions aarch64";

    fn kernel() -> Vec<u8> {
        let mut k =
            b"\0\0Linux version 6.1.0-56-cloud-arm64 (debian-kernel@lists.debian.org) #1 SMP\0"
                .to_vec();
        k.extend_from_slice(format!("\0{VM}\0more").as_bytes());
        k
    }

    fn module(name: &str, vermagic: Option<&str>) -> (String, Vec<u8>) {
        let vm = vermagic.map(|v| format!("vermagic={v}"));
        let mut entries = vec!["license=GPL"];
        entries.extend(vm.as_deref());
        (name.to_string(), elf(&entries, true))
    }

    #[test]
    fn vermagic_must_be_the_kernels_own() {
        let k = kernel();
        assert_eq!(kernel_release(&k).as_deref(), Some("6.1.0-56-cloud-arm64"));
        let good = [module("ena", Some(VM)), module("evdev", Some(VM))];
        assert_eq!(
            check_vermagic(&k, &good).unwrap(),
            ("6.1.0-56-cloud-arm64".to_string(), 2)
        );
        let other_release = VM.replace("-56-", "-57-");
        let other_options = VM.replace("SMP", "SMP preempt");
        let bad = [
            module("ena", Some(VM)),
            module("nf_tables", Some(&other_release)),
            module("evdev", Some(&other_options)),
            module("virtio", None),
        ];
        let e = format!("{:#}", check_vermagic(&k, &bad).unwrap_err());
        assert!(
            e.starts_with("3 of 4 modules do not match the kernel"),
            "{e}"
        );
        assert!(
            e.contains("nf_tables: vermagic \"6.1.0-57-cloud-arm64 SMP mod_unload modversions aarch64\" is not for kernel 6.1.0-56-cloud-arm64"),
            "{e}"
        );
        assert!(e.contains("evdev: vermagic"), "{e}");
        assert!(e.contains("is not the kernel's own"), "{e}");
        assert!(e.contains("virtio: no vermagic="), "{e}");
        assert!(!e.contains("ena:"), "{e}");
        // A prefix of the kernel's string is not the string.
        let short = [module("ena", Some("6.1.0-56-cloud-arm64 SMP"))];
        assert!(check_vermagic(&k, &short).is_err());
        assert!(check_vermagic(b"no banner", &good).is_err());
        assert!(check_vermagic(&k, &[]).is_err());
    }
}

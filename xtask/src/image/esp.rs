//! Stage 6, disk: the EFI system partition's files (systemd-boot, its loader.conf and Boot
//! Loader Specification entry, the kernel and the initramfs) on a GPT disk.

use std::path::Path;

use anyhow::Result;

use super::debian::BootFiles;
use super::say;
use crate::buildinfo::BuildFacts;
use crate::disk;
use crate::profile::Loaded;

const ESP_KERNEL: &str = "vmlinuz";
const ESP_INITRD: &str = "initrd";

/// Writes `work/disk.raw`.
pub fn write_disk(
    loaded: &Loaded,
    facts: &BuildFacts,
    cmdline: &str,
    boot: BootFiles,
    initrd: Vec<u8>,
    seed: [u8; 32],
    work: &Path,
) -> Result<disk::DiskReport> {
    let name = loaded.name();
    let profile = &loaded.profile;
    let esp = vec![
        disk::EspFile {
            path: "EFI/BOOT/BOOTAA64.EFI".into(),
            data: boot.loader,
        },
        disk::EspFile {
            path: "loader/loader.conf".into(),
            data: loader_conf(name).into_bytes(),
        },
        disk::EspFile {
            path: format!("loader/entries/{name}.conf"),
            data: boot_entry(&profile.image.description, facts, cmdline).into_bytes(),
        },
        disk::EspFile {
            path: ESP_KERNEL.into(),
            data: boot.vmlinuz,
        },
        disk::EspFile {
            path: ESP_INITRD.into(),
            data: initrd,
        },
    ];
    say(&format!(
        "writing a {} GiB GPT disk with an EFI system partition",
        profile.image.disk_size_gib
    ));
    disk::write_disk(
        &disk::DiskLayout {
            size_bytes: profile.image.disk_size_gib << 30,
            seed,
            volume_label: "NATBOOT".into(),
        },
        &esp,
        &work.join("disk.raw"),
    )
}

fn loader_conf(name: &str) -> String {
    // No menu, no editing the command line from the console, straight to the one entry.
    format!("timeout 0\ndefault {name}.conf\neditor no\nauto-entries no\nauto-firmware no\n")
}

fn boot_entry(description: &str, facts: &BuildFacts, cmdline: &str) -> String {
    format!(
        "title {description}\nversion {} ({})\nlinux /{ESP_KERNEL}\ninitrd /{ESP_INITRD}\noptions {cmdline}\n",
        facts.version,
        facts.commit_short()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_entry_names_kernel_initrd_and_cmdline() {
        let facts = BuildFacts {
            version: "0.1.0".into(),
            commit: "abc".into(),
            source_date_epoch: 1,
        };
        let e = boot_entry("NAT", &facts, "console=ttyS0 panic=10");
        assert!(e.contains("linux /vmlinuz\n"));
        assert!(e.contains("initrd /initrd\n"));
        assert!(e.contains("options console=ttyS0 panic=10\n"));
        assert!(loader_conf("nat-t4g").starts_with("timeout 0\n"));
        assert!(loader_conf("nat-t4g").contains("editor no"));
    }
}

//! The end-to-end test: the real disk image, booted through UEFI firmware in QEMU with its NIC
//! on the public subnet of an emulated VPC (see `vpc`), NATs a private subnet to the
//! "internet". Every boot is as Graviton-like as QEMU gets: the `virt-4.1` machine (its ACPI
//! power button is a PL061 GPIO line, as EC2's stop and terminate press it) and the console on
//! a PCI 16550 (Graviton's `ttyS0`, which `aws ec2 get-console-output` shows). Each boot must
//! show init loading every module of the image.
//!
//! The main boot serves most assertions, in an order that lets later ones build on earlier
//! state (renewal after traffic, supervision after renewal, power-off last). Two short boots
//! follow on the same VPC: two NICs in slots 5 and 6 with IMDS naming the slot-6 one the
//! primary ENI (first naming a MAC no NIC has, which must keep nat-init from being ready), and
//! the NIC on the root bus at 00:05.0 without a hotplug slot (`enp0s5`), with an IMDS that
//! answers 503 for its first 10 s and then names a secondary VPC CIDR outside the defaults.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

mod aws;

use super::kmod;
use crate::qemu::{Console, Machine, Net, Nic, PciPlace, Vm, VmConfig};
use crate::report::{Report, say};
use crate::vpc::{self, Vpc};
use crate::{hostdeps, image};

/// The DHCP lease the VPC hands out: short, so that renewal (at half of it) happens within
/// the test. dnsmasq's minimum is 120 s.
const LEASE_SECS: u32 = 120;
const PORTS: &[u16] = &[22, 53, 80, 443, 2222, 3128, 8080, 8443];
const VALID_USER_DATA: &str = "# nat-init user-data\nhealth_interval = 5\n";
const INVALID_USER_DATA: &str = "health_interval = 5\nprivate_ranges = [\"10.0.0.1/16\"]\n";

/// A MAC that no NIC of the VM has, for IMDS to name as the primary ENI.
const ABSENT_MAC: &str = "0a:00:00:00:00:99";
/// How long a boot may take to print a line: the firmware alone takes seconds under TCG.
pub const BOOT: Duration = Duration::from_secs(240);

const READY: &str = "e2e-boot-ready-with-leased-address-on-ens5";
const MODULES: &str = "e2e-init-loaded-every-module";
const CONSOLE: &str = "e2e-console-on-pci-16550-ttyS0";
const PRIVATE_RANGES: &str = "e2e-private-ranges-from-imds-vpc-cidr";
const USER_DATA: &str = "e2e-user-data-changes-health-interval";
const TRAFFIC: &str = "e2e-tcp-udp-icmp-through-the-nat";
const DECIDED: &str = "e2e-ipv6-off-rfc-timeouts-ct-stats-no-ena-fields-on-virtio";
const MTU: &str = "e2e-mtu-9001-upload-across-1500-black-hole";
const NO_REDIRECTS: &str = "e2e-no-icmp-redirects";
const CLOSED: &str = "e2e-nothing-open-and-no-inbound-to-private";
const FLOWTABLE: &str = "e2e-flowtable-offload-in-guest-kernel";
const RENEWAL: &str = "e2e-dhcp-renewal-across-dnsmasq-restart";
const SUPERVISION: &str = "e2e-supervision-and-invalid-user-data";
const WATCHDOG: &str = "e2e-hung-nat-init-restarted-by-init-watchdog";
/// nat-init's `watchdog_ms` in images/nat-t4g.toml.
const NAT_INIT_WATCHDOG_MS: u64 = 30_000;
const POWERDOWN: &str = "e2e-virt-4.1-gpio-power-button-off-within-15s";
const ABSENT_PRIMARY: &str = "e2e-two-nics-imds-primary-absent-not-ready";
const SLOT6_PRIMARY: &str = "e2e-two-nics-imds-primary-in-slot-6-ready-on-ens6";
const ROOT_BUS: &str = "e2e-nic-on-root-bus-00-05-ready-on-enp0s5";
const IMDS_SLOW: &str = "e2e-imds-503-for-10s-nat-works-on-defaults";
const IMDS_LATE: &str = "e2e-imds-late-answer-applies-vpc-cidr-and-user-data";
const FLOOD: &str = "e2e-syn-flood-from-one-host-capped-another-host-connects";
/// The per-source cap on tracked flows in the root-bus boot's user-data, and the table size.
const FLOOD_LIMIT: u64 = 1000;
const FLOOD_CT_MAX: u64 = 4096;
/// More SYNs than the table holds.
const FLOOD_SYNS: usize = 5000;
/// How long the IMDS double answers 503 in the root-bus boot.
const IMDS_DOWN: Duration = Duration::from_secs(10);
/// The user-data of that boot: health lines every 2 s instead of 60 once it is applied, and a
/// small conntrack table with a per-source cap for the SYN flood.
const LATE_USER_DATA: &str = "# nat-init user-data\nhealth_interval = 2\nconntrack_max = 4096\nper_source_conntrack_limit = 1000\n";
pub const CHECKS: &[&str] = &[
    READY,
    MODULES,
    CONSOLE,
    PRIVATE_RANGES,
    USER_DATA,
    DECIDED,
    TRAFFIC,
    MTU,
    NO_REDIRECTS,
    CLOSED,
    FLOWTABLE,
    RENEWAL,
    SUPERVISION,
    WATCHDOG,
    POWERDOWN,
    ABSENT_PRIMARY,
    SLOT6_PRIMARY,
    ROOT_BUS,
    IMDS_SLOW,
    IMDS_LATE,
    FLOOD,
    aws::DENIED,
    aws::CLOCK,
    aws::ONLINE,
    aws::TWO_EIPS,
    aws::MOVED,
    aws::CREDS,
    aws::METRICS,
    aws::METRICS_ERRORS,
];

pub fn run(root: &Path, report: &mut Report) -> Result<()> {
    hostdeps::ensure(hostdeps::QEMU)?;
    hostdeps::ensure(hostdeps::NET)?;
    let built = image::run(
        root,
        &image::Args {
            profile: "nat-t4g-e2e".into(),
            ..Default::default()
        },
    )
    .context("building the nat-t4g-e2e image")?;
    let mut vpc = Vpc::build(LEASE_SECS, Some(VALID_USER_DATA.to_string()))
        .context("building the emulated VPC")?;
    let disk = built.dir.join("disk.raw");
    let cfg = graviton_like(&disk, &vpc, vec![Nic::slot5(tap(vpc::TAP), vpc::NAT_MAC)]);
    {
        let mut vm = Vm::start(&cfg)?;
        let ok = assertions(&mut vm, &mut vpc, &built.manifest, report);
        if !ok {
            diagnose(&vm, &vpc);
        }
        // Dropped here: a QEMU still running is killed before the next boot takes its tap.
    }
    vpc.set_user_data(None);
    two_nics(&disk, &built.manifest, &mut vpc, report);
    root_bus(&disk, &built.manifest, &mut vpc, report);
    // Last: its control plane makes the VPC's routing follow the AWS double from here on.
    aws::run(&disk, root, &mut vpc, report);
    Ok(())
}

fn tap(name: &str) -> Net {
    Net::Tap(name.to_string())
}

/// A VM on the VPC as Graviton boots: `virt-4.1` (GPIO power button), console on a PCI
/// 16550, with these NICs.
fn graviton_like(disk: &Path, vpc: &Vpc, nics: Vec<Nic>) -> VmConfig {
    let mut cfg = VmConfig::new(disk.to_path_buf());
    cfg.machine = Machine::Virt41;
    cfg.console = Console::PciSerial;
    cfg.nics = nics;
    cfg.netns = Some(vpc.ns.name("vpc"));
    cfg
}

/// After a failed check: the console, the PL011's output, the namespaces and dnsmasq's log.
fn diagnose(vm: &Vm, vpc: &Vpc) {
    say(&format!("serial console (PCI 16550):\n{}", vm.log()));
    match vm.pl011_log() {
        Ok(l) => say(&format!("PL011:\n{l}")),
        Err(e) => say(&format!("PL011: {e:#}")),
    }
    say(&format!("namespaces:\n{}", vpc.dump()));
    say(&format!("dnsmasq log:\n{}", vpc.dnsmasq_log()));
}

pub(crate) fn curl(vpc: &Vpc, ns: &str, args: &[&str]) -> Result<String> {
    let mut v = vec!["-sS", "--max-time", "60"];
    v.extend_from_slice(args);
    vpc.ns.exec(ns, "curl", &v)
}

/// Downloads `bytes` from the internet server through the NAT, from the private client.
fn download(vpc: &Vpc, bytes: u64) -> Result<()> {
    let got = curl(
        vpc,
        "private",
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &format!("http://{}/bytes/{bytes}", vpc::SERVER),
        ],
    )?;
    if got.trim() != bytes.to_string() {
        bail!("got {got} of {bytes} bytes");
    }
    Ok(())
}

/// That a server in the internet namespace saw at least `at_least` clients (each datagram or
/// connection counts), every one of them the NAT's public address.
fn only_from_nat(server: &str, seen: &[Ipv4Addr], at_least: usize) -> Result<()> {
    if seen.len() < at_least.max(1) {
        bail!(
            "the {server} server saw {} clients, want at least {}",
            seen.len(),
            at_least.max(1)
        );
    }
    if let Some(ip) = seen.iter().find(|ip| **ip != vpc::NAT_PUBLIC) {
        bail!(
            "the {server} server saw {ip} among {seen:?}, want only the NAT's public address {}",
            vpc::NAT_PUBLIC
        );
    }
    Ok(())
}

fn ready_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// That the ready line has each of `want`'s `key=value`.
fn ready_has(line: &str, want: &[(&str, String)]) -> Result<()> {
    for (k, v) in want {
        if ready_field(line, k) != Some(v.as_str()) {
            bail!(
                "ready line has {k}={:?}, want {v}: {line}",
                ready_field(line, k)
            );
        }
    }
    Ok(())
}

/// The first line of a file under /proc or /sys in the guest, through init's test console.
fn guest_read(vm: &mut Vm, path: &str) -> Result<String> {
    let mark = vm.line_count();
    vm.send(&format!("init-test read {path}\n"))?;
    let needle = format!("test console: read {path}");
    let (_, line) = vm.wait_for_from(mark, &needle, Duration::from_secs(10))?;
    let rest = line.split_once(&needle).map_or("", |(_, r)| r);
    match rest.strip_prefix(" = ") {
        Some(v) => Ok(v.trim_end().to_string()),
        None if rest == " =" || rest.is_empty() => Ok(String::new()),
        None => bail!("the guest could not read {path}: {line}"),
    }
}

/// UDP echoes from the private client through the NAT, all seen by the server from the NAT's
/// public address.
fn echoes_through_nat(vpc: &Vpc, count: usize) -> Result<()> {
    echoes_from(vpc, "private", count)
}

/// [`echoes_through_nat`] from the client in namespace `ns`.
fn echoes_from(vpc: &Vpc, ns: &str, count: usize) -> Result<()> {
    let before = vpc.seen()?.udp_clients.len();
    let echoed = vpc::udp_echo(&vpc.ns.name(ns), count)?;
    if echoed != count {
        bail!("{echoed} of {count} UDP datagrams echoed through the NAT");
    }
    let udp = vpc.seen()?.udp_clients[before..].to_vec();
    only_from_nat("UDP", &udp, echoed)
}

fn assertions(vm: &mut Vm, vpc: &mut Vpc, manifest: &Value, report: &mut Report) -> bool {
    let ns_private = vpc.ns.name("private");
    let mut ready_at = 0usize;
    let ok = report.check(READY, || {
        let (i, line) = vm.wait_for_from(0, "nat-init: ready ", BOOT)?;
        ready_at = i;
        say(&format!(
            "{line} (wall {:.1} s from QEMU start)",
            vm.elapsed().as_secs_f64()
        ));
        ready_has(
            &line,
            &[
                ("iface", "ens5".to_string()),
                ("addr", format!("{}/24", vpc::NAT_ADDR)),
                ("gw", vpc::ROUTER.to_string()),
                ("mtu", "9001".to_string()),
            ],
        )?;
        let ms: u64 = ready_field(&line, "elapsed_ms")
            .and_then(|v| v.parse().ok())
            .context("no elapsed_ms")?;
        say(&format!(
            "boot to NAT ready: {ms} ms of guest time since kernel start"
        ));
        Ok(())
    });
    // Independent of READY: a driver that failed to load is the likelier reason it failed.
    let mut all = ok;
    all &= report.check(MODULES, || {
        kmod::modules_loaded(vm, manifest, Duration::from_secs(1))
    });
    // What QEMU logged of the 16550's output to its own file: the lines EC2's console output
    // shows. Independent of READY, which reads the same UART: when nothing reaches it, this
    // says so.
    all &= report.check(CONSOLE, || {
        let text = vm.console_file()?;
        for want in ["init: up in ", "nat-init: ready "] {
            if !text.lines().any(|l| l.starts_with(want)) {
                bail!(
                    "no line starting {want:?} in the PCI 16550's output ({} lines)",
                    text.lines().count()
                );
            }
        }
        let pl011 = vm.pl011_log()?;
        say(&format!(
            "PCI 16550: {} lines with init's and nat-init's; PL011: {} lines",
            text.lines().count(),
            pl011.lines().count()
        ));
        Ok(())
    });
    // Every later check needs the NAT up; the report says they were not run.
    all &= report.check_after(READY, PRIVATE_RANGES, || {
        let (_, line) = vm.wait_for_from(ready_at, "nat-init: ready ", Duration::from_secs(1))?;
        if ready_field(&line, "private") != Some(vpc::VPC_CIDR) {
            bail!(
                "want private={} (IMDS's vpc-ipv4-cidr-blocks): {line}",
                vpc::VPC_CIDR
            );
        }
        let asked = vpc.imds_state()?.requests.clone();
        if !asked.iter().any(|r| r.starts_with("PUT /latest/api/token")) {
            bail!("nat-init never asked IMDS for a token: {asked:?}");
        }
        Ok(())
    });
    all &= report.check_after(READY, USER_DATA, || {
        // health_interval = 5 from user-data: two health lines within 15 s (the baked
        // default is 60 s).
        let (i, _) = vm.wait_for_from(ready_at, "nat-init: health ", Duration::from_secs(15))?;
        vm.wait_for_from(i + 1, "nat-init: health ", Duration::from_secs(10))?;
        Ok(())
    });
    all &= report.check_after(READY, DECIDED, || {
        for (path, want) in [
            ("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1"),
            ("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1"),
            ("/proc/sys/net/ipv6/conf/ens5/disable_ipv6", "1"),
            // No IPv6 address at all, not even link-local.
            ("/proc/net/if_inet6", ""),
            ("/proc/sys/net/netfilter/nf_conntrack_udp_timeout", "120"),
            (
                "/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream",
                "350",
            ),
            (
                "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established",
                "7440",
            ),
            (
                "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_syn_sent",
                "240",
            ),
        ] {
            let got = guest_read(vm, path)?;
            say(&format!("guest {path} = {got:?}"));
            if got != want {
                bail!("{path} is {got:?} in the guest, want {want:?}");
            }
        }
        let (_, health) =
            vm.wait_for_from(ready_at, "nat-init: health ", Duration::from_secs(15))?;
        say(&health);
        for key in ["ct_drop", "ct_early_drop", "ct_insert_failed"] {
            if ready_field(&health, key).is_none() {
                bail!("the health line has no {key}: {health}");
            }
        }
        if health.contains("allowance") {
            bail!("ENA allowance fields on a virtio NIC: {health}");
        }
        Ok(())
    });
    all &= report.check_after(READY, TRAFFIC, || {
        let before = vpc.seen()?.http_clients.len();
        download(vpc, 4194304).context("download of 4 MiB")?;
        let http = vpc.seen()?.http_clients[before..].to_vec();
        only_from_nat("HTTP", &http, 1)?;
        let before = vpc.seen()?.udp_clients.len();
        let echoed = vpc::udp_echo(&ns_private, 5)?;
        if echoed != 5 {
            bail!("{echoed} of 5 UDP datagrams echoed");
        }
        let udp = vpc.seen()?.udp_clients[before..].to_vec();
        only_from_nat("UDP", &udp, echoed)?;
        vpc.ns.exec(
            "private",
            "ping",
            &["-c", "3", "-W", "2", &vpc::SERVER.to_string()],
        )?;
        Ok(())
    });
    all &= report.check_after(READY, MTU, || {
        let file = vpc.dir().join("upload.bin");
        std::fs::write(&file, vec![0x5a; 4 << 20])?;
        let body = format!("@{}", file.display());
        let got = curl(vpc, "private", &["--data-binary", &body, &format!("http://{}/upload", vpc::SERVER)])?;
        if got.trim() != (4u64 << 20).to_string() {
            bail!("the server received {got} bytes of 4 MiB");
        }
        // The same upload from a public-subnet host through a plain Linux forwarder (no MSS
        // clamping) stalls: the black hole is real.
        vpc.ns.ip("internet", "route replace 10.0.0.0/24 via 192.0.2.1")?;
        let control = vpc.ns.exec(
            "pubhost2",
            "curl",
            &["-sS", "--max-time", "8", "--data-binary", &body, &format!("http://{}/upload", vpc::SERVER)],
        );
        if let Ok(out) = control {
            bail!("control: an unclamped 9001-MTU upload got through the black hole ({out}); the MTU test proves nothing");
        }
        Ok(())
    });
    all &= report.check_after(READY, NO_REDIRECTS, || {
        // To the internet: the NAT forwards it back out of the interface it came in on, to the
        // VPC router on the same subnet, which is when Linux sends a redirect. (Not to the private
        // client: private to private is not the NAT's to forward.)
        vpc.ns.exec("pubhost", "ping", &["-c", "5", "-i", "0.2", "-W", "2", &vpc::SERVER.to_string()])?;
        let ours = vpc.redirects("pubhost")?;
        if ours != 0 {
            bail!("the NAT sent {ours} ICMP redirects");
        }
        let _ = vpc.ns.exec("pubhost2", "ping", &["-c", "5", "-i", "0.2", "-W", "2", &vpc::SERVER.to_string()]);
        let control = vpc.redirects("pubhost2")?;
        if control == 0 {
            bail!("control: a forwarder with send_redirects=1 sent no redirects; the check proves nothing");
        }
        say(&format!("redirects: NAT 0, control forwarder {control}"));
        Ok(())
    });
    all &= report.check_after(READY, CLOSED, || {
        for (ns, addr) in [
            ("internet", vpc::NAT_PUBLIC),
            ("vpc", vpc::NAT_ADDR),
            ("pubhost", vpc::NAT_ADDR),
        ] {
            let open = vpc::open_ports(&vpc.ns.name(ns), addr, PORTS)?;
            if !open.is_empty() {
                bail!("from {ns}, ports {open:?} on {addr} accepted a connection");
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let hit = vpc::listen_flag(&ns_private, vpc::CLIENT, 9000, Arc::clone(&stop))?;
        let open = vpc::open_ports(&vpc.ns.name("internet"), vpc::CLIENT, &[9000])?;
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        if !open.is_empty() || hit.load(Ordering::Relaxed) {
            bail!("a new connection from the internet reached the private client");
        }
        Ok(())
    });
    all &= report.check_after(READY, FLOWTABLE, || {
        vm.wait_for_from(
            0,
            "nat-init: flowtable ft on ens5 active",
            Duration::from_secs(1),
        )?;
        // A download held open across health ticks: its flow must show up as offloaded.
        let mark = vm.line_count();
        let slow = duct::cmd(
            "ip",
            [
                "netns",
                "exec",
                &ns_private,
                "curl",
                "-sS",
                "--max-time",
                "40",
                "--limit-rate",
                "100k",
                "-o",
                "/dev/null",
                &format!("http://{}/bytes/2097152", vpc::SERVER),
            ],
        )
        .stdout_null()
        .stderr_null()
        .unchecked()
        .start()?;
        let seen = (|| -> Result<String> {
            let mut from = mark;
            loop {
                let (i, line) =
                    vm.wait_for_from(from, "nat-init: health ", Duration::from_secs(30))?;
                let n: u64 = ready_field(&line, "offloaded")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if n > 0 {
                    return Ok(line);
                }
                from = i + 1;
            }
        })();
        let _ = slow.kill();
        let line =
            seen.context("no health line showed an offloaded flow while a download was open")?;
        say(&format!("flowtable in use: {line}"));
        Ok(())
    });
    all &= report.check_after(READY, RENEWAL, || {
        vpc.restart_dnsmasq()?;
        let t = Instant::now();
        // UDP echoes every half second from before the renewal until after it.
        let stop = Arc::new(AtomicBool::new(false));
        let pinger = {
            let (stop, ns) = (Arc::clone(&stop), ns_private.clone());
            std::thread::spawn(move || {
                let (mut ok, mut sent) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    sent += 1;
                    ok += vpc::udp_echo(&ns, 1).unwrap_or(0);
                    std::thread::sleep(Duration::from_millis(500));
                }
                (ok, sent)
            })
        };
        let renewed = vm.wait_for_from(
            ready_at,
            "nat-init: dhcp renewed",
            Duration::from_secs(u64::from(LEASE_SECS)),
        );
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        let (ok, sent) = pinger
            .join()
            .map_err(|_| anyhow::anyhow!("echo thread panicked"))?;
        let (i, line) = renewed?;
        say(&format!(
            "{line} ({:.0} s after the dnsmasq restart; {ok}/{sent} UDP echoes across it)",
            t.elapsed().as_secs_f64()
        ));
        if sent < 6 || ok * 10 < sent * 9 {
            bail!("only {ok} of {sent} UDP echoes came back across the renewal");
        }
        ready_at = ready_at.max(i);
        vpc.ns.exec(
            "private",
            "ping",
            &["-c", "3", "-W", "2", &vpc::SERVER.to_string()],
        )?;
        download(vpc, 1048576).context("download after renewal")?;
        if !vpc.dnsmasq_log().contains("DHCPACK") {
            bail!("dnsmasq logged no DHCPACK after its restart");
        }
        Ok(())
    });
    all &= report.check_after(READY, SUPERVISION, || {
        vpc.set_user_data(Some(INVALID_USER_DATA.to_string()));
        let mark = vm.line_count();
        vm.send("init-test kill nat-init\n")?;
        vm.wait_for_from(
            mark,
            "init: nat-init killed by signal SIGKILL",
            Duration::from_secs(20),
        )?;
        // The ruleset outlives the process: traffic flows while nat-init is down or restarting.
        let echoed = vpc::udp_echo(&ns_private, 3)?;
        if echoed == 0 {
            bail!("no UDP echo right after nat-init was killed: the NAT depends on the process");
        }
        let (e, err) = vm.wait_for_from(mark, "nat-init: error config", Duration::from_secs(60))?;
        if !(err.contains("private_ranges") && err.contains("line 2")) {
            bail!("the config error does not name the key and line: {err}");
        }
        let (_, line) = vm.wait_for_from(e, "nat-init: ready ", Duration::from_secs(60))?;
        if ready_field(&line, "private") != Some(vpc::VPC_CIDR) {
            bail!(
                "after invalid user-data, want the defaults' private={}: {line}",
                vpc::VPC_CIDR
            );
        }
        download(vpc, 65536).context("download after the restart")?;
        Ok(())
    });
    all &= report.check_after(READY, WATCHDOG, || {
        hung_nat_init_is_restarted(vm, &ns_private)
    });
    all &= report.check_after(READY, POWERDOWN, || {
        let t = Instant::now();
        vm.qmp("system_powerdown")?;
        vm.wait_for(
            "init: shutting down (power button)",
            Duration::from_secs(15),
        )?;
        vm.wait_for("init: powering off", Duration::from_secs(15))?;
        let st = vm.wait_exit(Duration::from_secs(15).saturating_sub(t.elapsed()))?;
        if !st.success() {
            bail!("QEMU exited with {st}");
        }
        say(&format!(
            "powered off {:.1} s after the power button (PL061 GPIO)",
            t.elapsed().as_secs_f64()
        ));
        Ok(())
    });
    all
}

/// A hung nat-init (SIGSTOP through the test console) is noticed by init's watchdog: after
/// `watchdog_ms` of silence, and not much later, init names it and how long it was silent,
/// SIGKILLs it and restarts it, and nat-init gets ready again. The NAT forwards throughout:
/// the ruleset is the kernel's, not the process's.
fn hung_nat_init_is_restarted(vm: &mut Vm, ns_private: &str) -> Result<()> {
    let mark = vm.line_count();
    vm.send("init-test stop nat-init\n")?;
    let (s, stop) = vm.wait_for_from(
        mark,
        "init: test console: sending SIGSTOP to nat-init pid=",
        Duration::from_secs(20),
    )?;
    let pid = stop
        .rsplit("pid=")
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let stopped_at = Instant::now();
    if vpc::udp_echo(ns_private, 3)? == 0 {
        bail!("no UDP echo while nat-init is stopped: the NAT depends on the process");
    }
    let limit = Duration::from_millis(NAT_INIT_WATCHDOG_MS);
    let (w, line) = vm.wait_for_from(
        s,
        "init: watchdog: nat-init pid=",
        limit + Duration::from_secs(30),
    )?;
    say(&format!(
        "{line} ({:.1} s after the SIGSTOP)",
        stopped_at.elapsed().as_secs_f64()
    ));
    if !line.contains(&format!("pid={pid} ")) {
        bail!("the watchdog line names another pid than the stopped one ({pid}): {line}");
    }
    let silent: u64 = line
        .split("silent for ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no `silent for N ms` in {line}"))?;
    // Silent at least the limit (init is not early), at most a ping interval and a few
    // seconds more (its loop woke for the deadline).
    if !(NAT_INIT_WATCHDOG_MS..=NAT_INIT_WATCHDOG_MS * 3 / 2 + 5000).contains(&silent) {
        bail!("silent for {silent} ms does not fit the {NAT_INIT_WATCHDOG_MS} ms limit: {line}");
    }
    if !line.contains(&format!("(limit {NAT_INIT_WATCHDOG_MS} ms)")) || !line.contains("SIGKILL") {
        bail!("the watchdog line does not give the limit and the SIGKILL: {line}");
    }
    let (k, _) = vm.wait_for_from(
        w,
        "init: nat-init killed by signal SIGKILL",
        Duration::from_secs(10),
    )?;
    vm.wait_for_from(k, "init: restarting nat-init in ", Duration::from_secs(5))?;
    if vpc::udp_echo(ns_private, 3)? == 0 {
        bail!("no UDP echo while nat-init restarts after the watchdog");
    }
    let (_, ready) = vm.wait_for_from(k, "nat-init: ready ", Duration::from_secs(60))?;
    say(&ready);
    if vpc::udp_echo(ns_private, 3)? == 0 {
        bail!("no UDP echo after the restarted nat-init is ready");
    }
    Ok(())
}

/// Two NICs: slot 5 (`TAP2`, the second ENI) and slot 6 (`TAP`, the primary), so the first in
/// PCI order is the wrong one. IMDS first names a MAC neither has: nat-init must refuse, loudly
/// and again on retry, and never get ready. Then IMDS names the slot-6 NIC: nat-init must
/// switch to it, get ready on `ens6` with the primary's address and forward there, and, when
/// killed, come back on `ens6` without going through `ens5` again.
fn two_nics(disk: &Path, manifest: &Value, vpc: &mut Vpc, report: &mut Report) {
    vpc.set_imds_mac(ABSENT_MAC);
    let cfg = graviton_like(
        disk,
        vpc,
        vec![
            Nic::slot5(tap(vpc::TAP2), vpc::SECOND_MAC),
            Nic {
                net: tap(vpc::TAP),
                mac: vpc::NAT_MAC.to_string(),
                place: PciPlace::RootPort { slot: 6 },
            },
        ],
    );
    let mut vm: Option<Vm> = None;
    let mut ok = report.check(ABSENT_PRIMARY, || {
        let v = vm.insert(Vm::start(&cfg)?);
        let (i, err) = v.wait_for_from(0, "nat-init: error imds", BOOT)?;
        for mac in [ABSENT_MAC, vpc::SECOND_MAC, vpc::NAT_MAC] {
            if !err.contains(mac) {
                bail!("the error line does not name {mac}: {err}");
            }
        }
        // Retried, and still refused.
        v.wait_for_from(
            i + 1,
            "nat-init: error imds IMDS names",
            Duration::from_secs(10),
        )?;
        if let Ok((_, line)) = v.wait_for_from(0, "nat-init: ready ", Duration::ZERO) {
            bail!("ready while IMDS names a MAC no NIC has: {line}");
        }
        if let Ok((_, line)) = v.wait_for_from(0, "nat-init: nft table", Duration::ZERO) {
            bail!("a ruleset was installed on the wrong interface: {line}");
        }
        say(&format!("refused: {err}"));
        kmod::modules_loaded(v, manifest, Duration::from_secs(1))
    });
    vpc.set_imds_mac(vpc::NAT_MAC);
    ok &= report.check(SLOT6_PRIMARY, || {
        let v = vm.as_mut().context("the VM did not start")?;
        let (s, switch) = v.wait_for_from(0, "switching to it", Duration::from_secs(60))?;
        let (r, ready) = v.wait_for_from(s, "nat-init: ready ", Duration::from_secs(60))?;
        say(&format!("{switch}\n{ready}"));
        ready_has(
            &ready,
            &[
                ("iface", "ens6".to_string()),
                ("addr", format!("{}/24", vpc::NAT_ADDR)),
            ],
        )?;
        if v.wait_for_from(0, "nat-init: ready ", Duration::ZERO)?.0 != r {
            bail!("ready before the switch to the primary");
        }
        v.wait_for_from(s, "nat-init: flowtable ft on ens6 active", Duration::ZERO)?;
        echoes_through_nat(vpc, 3)?;
        // Restarted, nat-init goes straight to the primary it was told about.
        let mark = v.line_count();
        v.send("init-test kill nat-init\n")?;
        let (k, _) = v.wait_for_from(
            mark,
            "init: nat-init killed by signal SIGKILL",
            Duration::from_secs(20),
        )?;
        let (_, again) = v.wait_for_from(k, "nat-init: ready ", Duration::from_secs(60))?;
        ready_has(&again, &[("iface", "ens6".to_string())])?;
        if let Some(l) = v.log().lines().skip(k).find(|l| l.contains("ens5")) {
            bail!("the restarted nat-init went through ens5 again: {l}");
        }
        echoes_through_nat(vpc, 3)
    });
    if !ok && let Some(v) = &vm {
        diagnose(v, vpc);
    }
}

/// The NIC on the root bus at 00:05.0, without a root port or hotplug slot, as other instance
/// types have it: named `enp0s5`, and the NAT works all the same. In the same boot IMDS answers
/// 503 for its first [`IMDS_DOWN`]: the NAT must be ready on the default ranges meanwhile, and
/// once IMDS answers, apply the VPC's secondary CIDR (outside the defaults: its client gets NAT
/// only then) and the user-data.
fn root_bus(disk: &Path, manifest: &Value, vpc: &mut Vpc, report: &mut Report) {
    let cfg = graviton_like(
        disk,
        vpc,
        vec![Nic {
            net: tap(vpc::TAP),
            mac: vpc::NAT_MAC.to_string(),
            place: PciPlace::RootBus { addr: 5 },
        }],
    );
    vpc.set_user_data(Some(LATE_USER_DATA.to_string()));
    vpc.set_imds_vpc_cidrs(&[vpc::VPC_CIDR, vpc::CIDR2]);
    vpc.set_imds_unavailable_for(IMDS_DOWN);
    let mut vm: Option<Vm> = None;
    let mut ok = report.check(ROOT_BUS, || {
        let v = vm.insert(Vm::start(&cfg)?);
        let (_, line) = v.wait_for_from(0, "nat-init: ready ", BOOT)?;
        say(&line);
        ready_has(
            &line,
            &[
                ("iface", "enp0s5".to_string()),
                ("addr", format!("{}/24", vpc::NAT_ADDR)),
            ],
        )?;
        kmod::modules_loaded(v, manifest, Duration::from_secs(1))?;
        echoes_through_nat(vpc, 3)
    });
    ok &= report.check_after(ROOT_BUS, IMDS_SLOW, || {
        let v = vm.as_mut().context("the VM did not start")?;
        let (u, unavailable) = v.wait_for_from(0, "nat-init: imds unavailable", Duration::ZERO)?;
        let (r, ready) = v.wait_for_from(0, "nat-init: ready ", Duration::ZERO)?;
        say(&format!("{unavailable}\n{ready}"));
        if r < u {
            bail!("ready before IMDS was found unavailable");
        }
        ready_has(
            &ready,
            &[(
                "private",
                "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10".to_string(),
            )],
        )?;
        let refused = vpc.imds_state()?.refused;
        if refused == 0 {
            bail!("the IMDS double refused nothing: the test did not test a slow IMDS");
        }
        if let Ok((_, l)) = v.wait_for_from(0, "nat-init: imds answered", Duration::ZERO) {
            bail!("IMDS answered before the private2 check could run: {l}");
        }
        // The control: not private yet, so not NATed (no open relay for unknown sources).
        let echoed = vpc::udp_echo(&vpc.ns.name("private2"), 2)?;
        if echoed != 0 {
            bail!(
                "{echoed} datagrams from {} NATed before IMDS named its CIDR",
                vpc::CLIENT2
            );
        }
        Ok(())
    });
    ok &= report.check_after(IMDS_SLOW, IMDS_LATE, || {
        let v = vm.as_mut().context("the VM did not start")?;
        let (a, answered) =
            v.wait_for_from(0, "nat-init: imds answered", Duration::from_secs(90))?;
        say(&answered);
        for want in [vpc::CIDR2, "health_interval"] {
            if !answered.contains(want) {
                bail!("the late IMDS line does not name {want}: {answered}");
            }
        }
        let (r, ready) = v.wait_for_from(a, "nat-init: ready ", Duration::from_secs(30))?;
        say(&ready);
        ready_has(
            &ready,
            &[("private", format!("{},{}", vpc::VPC_CIDR, vpc::CIDR2))],
        )?;
        echoes_from(vpc, "private2", 3)?;
        echoes_through_nat(vpc, 3)?;
        // user-data's health_interval = 2: two health lines within seconds, not a minute.
        let (h, _) = v.wait_for_from(r, "nat-init: health ", Duration::from_secs(20))?;
        v.wait_for_from(h + 1, "nat-init: health ", Duration::from_secs(10))
            .context("user-data's health_interval = 2 is not in effect")?;
        Ok(())
    });
    ok &= report.check_after(IMDS_LATE, FLOOD, || {
        let v = vm.as_mut().context("the VM did not start")?;
        let sent = vpc::syn_flood(&vpc.ns.name("private"), FLOOD_SYNS)?;
        let tracked: u64 = guest_read(v, "/proc/sys/net/netfilter/nf_conntrack_count")?
            .parse()
            .context("nf_conntrack_count")?;
        say(&format!(
            "{sent} SYNs from {} to a silent port: {tracked} flows tracked (cap {FLOOD_LIMIT} per source, table {FLOOD_CT_MAX})",
            vpc::CLIENT
        ));
        // The cap, plus the few flows of the other clients and the test itself.
        if tracked > FLOOD_LIMIT + 50 {
            bail!("{tracked} flows tracked after {sent} SYNs from one host: the per-source cap of {FLOOD_LIMIT} did not hold");
        }
        // Another private host still gets through, from the NAT's address.
        let before = vpc.seen()?.http_clients.len();
        let got = curl(
            vpc,
            "private2",
            &["-o", "/dev/null", "-w", "%{size_download}", &format!("http://{}/bytes/65536", vpc::SERVER)],
        )?;
        if got.trim() != "65536" {
            bail!("{} got {got} of 65536 bytes during the flood", vpc::CLIENT2);
        }
        let http = vpc.seen()?.http_clients[before..].to_vec();
        only_from_nat("HTTP", &http, 1)?;
        // The health line says what was refused.
        let mark = v.line_count();
        let (_, health) = v.wait_for_from(mark, "nat-init: health ", Duration::from_secs(10))?;
        say(&health);
        let table = format!("/{FLOOD_CT_MAX}");
        if !ready_field(&health, "conntrack").is_some_and(|c| c.ends_with(&table)) {
            bail!("the health line does not show the {FLOOD_CT_MAX}-flow table: {health}");
        }
        let refused: u64 = ready_field(&health, "per_source_dropped")
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no per_source_dropped in the health line: {health}"))?;
        if refused == 0 {
            bail!("per_source_dropped=0 after {sent} SYNs from one host: {health}");
        }
        Ok(())
    });
    vpc.set_imds_unavailable_for(Duration::ZERO);
    vpc.set_imds_vpc_cidrs(&[vpc::VPC_CIDR]);
    vpc.set_user_data(None);
    if !ok && let Some(v) = &vm {
        diagnose(v, vpc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_must_be_seen_and_only_from_the_nat() {
        let nat = vpc::NAT_PUBLIC;
        only_from_nat("UDP", &[nat; 5], 5).unwrap();
        only_from_nat("HTTP", &[nat], 1).unwrap();
        let e = format!("{:#}", only_from_nat("UDP", &[], 0).unwrap_err());
        assert!(e.contains("saw 0 clients, want at least 1"), "{e}");
        assert!(only_from_nat("UDP", &[nat; 4], 5).is_err());
        let e = format!(
            "{:#}",
            only_from_nat("UDP", &[nat, vpc::CLIENT], 1).unwrap_err()
        );
        assert!(e.contains("saw 10.0.1.10 among"), "{e}");
    }
}

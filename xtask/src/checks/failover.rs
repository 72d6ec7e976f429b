//! Failover end to end: two NAT guests (QEMU, one vCPU each) in the emulated VPC whose control
//! plane is the local AWS double (moto, see `vpc::aws`), each a member of the failover group
//! `e2e` by its user-data alone: nat-a owns private table `a` (the client 10.0.1.10) and its
//! Elastic IP, nat-b owns table `b` and its own. A private client's UDP echoes (one socket,
//! every 100 ms) and paced TCP downloads (every byte checked) run across each fault:
//! - a partition between the peers while both reach the internet: no route moves;
//! - nat-a's internet path cut while it stays up: nat-b takes over, the download goes on;
//! - the path restored: nat-a takes its table back after the hold time, within a packet or two;
//! - nat-a powered off (the power button): it hands over before it stops;
//! - nat-a booted again (as a replacement on its ENI): it rejoins and reclaims after the hold;
//! - nat-a killed (QEMU SIGKILLed): nat-b takes over; a download whose connection was
//!   replicated completes, and the control, a download started after replication between the
//!   peers was blocked, breaks.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::checks::e2e::BOOT;
use crate::qemu::Vm;
use crate::report::{Report, say};
use crate::vpc::meters::{Download, DownloadReport, EchoGaps, EchoReport, Ended};
use crate::vpc::{self, Vpc, aws};
use crate::{hostdeps, image, target_dir};

pub const FORMED: &str = "failover-pair-formed-each-owns-its-table-heard-on-both-paths";
pub const PARTITION: &str = "failover-partition-between-healthy-peers-moves-no-route";
pub const EGRESS: &str = "failover-peer-alive-internet-cut-taken-over-download-kept";
pub const RECLAIM: &str = "failover-owner-reclaims-after-hold-packet-or-two";
pub const CLEAN: &str = "failover-power-button-hands-over-before-stopping";
pub const REJOIN: &str = "failover-restarted-member-rejoins-and-reclaims";
pub const KILL: &str = "failover-hard-kill-replicated-download-completes";
pub const CONTROL: &str = "failover-control-unreplicated-download-breaks";

pub const CHECKS: &[&str] = &[
    FORMED, PARTITION, EGRESS, RECLAIM, CLEAN, REJOIN, KILL, CONTROL,
];

/// The hold time in the members' user-data (seconds).
pub const HOLD_S: u64 = 10;
/// How long the AWS side may take to settle after a boot under TCG.
pub const SETTLE: Duration = Duration::from_secs(180);
/// A takeover's limit in the checks (the bench measures it; this only says it happened).
pub const TAKEOVER: Duration = Duration::from_secs(30);
/// Paced downloads: 3 MB at 200 kB/s, about 15 s, so each spans its fault.
pub const DL_BYTES: u64 = 3 << 20;
pub const DL_RATE: u64 = 200 << 10;
/// A download with no data for this long has stalled.
pub const DL_STALL: Duration = Duration::from_secs(25);
pub const ECHO_EVERY: Duration = Duration::from_millis(100);
/// The echoes at the end of a meter that must all be answered for the path to count as back
/// (how long it was gone is the bench's figure, not a check's).
pub const RESUMED_TAIL: u64 = 10;

/// Every action a member needs, on `*` (moto checks actions only).
const ACTIONS: &[&str] = &[
    "ec2:DescribeInstances",
    "ec2:DescribeSubnets",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeRouteTables",
    "ec2:DescribeAddresses",
    "ec2:ModifyNetworkInterfaceAttribute",
    "ec2:AssignPrivateIpAddresses",
    "ec2:AssociateAddress",
    "ec2:CreateRoute",
    "ec2:ReplaceRoute",
];

/// A member's user-data: the pair seed's (its table and Elastic IP) and the failover keys,
/// probing the internet's HTTP server.
pub fn member_user_data(seed: &aws::Seed, name: &str) -> Result<String> {
    Ok(format!(
        "{}health_interval = 2\nfailover_group = \"{}\"\nfailover_hold = {HOLD_S}\nfailover_probes = [\"{}:{}\"]\n",
        seed.pair_user_data(name)?
            .replace("health_interval = 5\n", ""),
        aws::FAILOVER_GROUP,
        vpc::SERVER,
        vpc::HTTP_PORT
    ))
}

/// The e2e image, the pair's VPC and its control plane, with both members' user-data.
pub fn setup(root: &Path) -> Result<(std::path::PathBuf, Vpc)> {
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
    let mut vpc = Vpc::build(3600, None).context("building the emulated VPC")?;
    let moto = hostdeps::ensure_moto(&target_dir(root))?;
    vpc.start_aws_pair(root, &moto)?;
    let seed = vpc.aws()?.seed().clone();
    vpc.aws()?.set_role_policy(&json!({
        "Version": "2012-10-17",
        "Statement": [{ "Effect": "Allow", "Action": ACTIONS, "Resource": "*" }]
    }))?;
    for name in ["nat-a", "nat-b"] {
        vpc.set_instance_user_data(name, Some(member_user_data(&seed, name)?))?;
    }
    Ok((built.dir.join("disk.raw"), vpc))
}

/// Waits until both members are settled: AWS side ready, each hearing the other on both paths.
pub fn wait_formed(vpc: &Vpc, a: &Vm, b: &Vm, from: (usize, usize)) -> Result<()> {
    let seed = vpc.aws()?.seed().clone();
    for (vm, at, peer) in [(a, from.0, "nat-b"), (b, from.1, "nat-a")] {
        vm.wait_for_from(at, "nat-init: ready ", BOOT)?;
        let (_, line) = vm.wait_for_from(at, "nat-init: aws ready ", SETTLE)?;
        say(&line);
        let peer_id = &seed.instance(peer)?.instance_id;
        let (_, h) = vm.wait_for_from(at, &format!("{peer_id}:alive:both"), SETTLE)?;
        say(&h);
    }
    Ok(())
}

/// The route table `table`'s target in the data plane now.
fn route_of(vpc: &Vpc, table: &str) -> Result<Option<String>> {
    Ok(vpc
        .aws()?
        .data_plane()?
        .routes
        .get(table)
        .and_then(|t| t.target_id.clone()))
}

/// Waits until `table` points at `name`'s ENI.
pub fn wait_route(vpc: &Vpc, table: &str, name: &str, limit: Duration) -> Result<()> {
    let eni = vpc.aws()?.seed().instance(name)?.eni_id.clone();
    vpc.aws()?
        .wait_for(&format!("{table} -> {name}"), limit, |p| {
            p.routes
                .get(table)
                .is_some_and(|t| t.target_id.as_deref() == Some(eni.as_str()))
        })?;
    Ok(())
}

pub fn private(vpc: &Vpc) -> String {
    vpc.ns.name("private")
}

/// Starts the echo meter and a paced download from the private client (table `a`).
fn meters(vpc: &Vpc, stall: Duration) -> Result<(EchoGaps, Download)> {
    let echo = EchoGaps::start(&private(vpc), ECHO_EVERY)?;
    let dl = Download::start(&private(vpc), DL_BYTES, DL_RATE, stall)?;
    Ok((echo, dl))
}

fn complete(what: &str, d: &DownloadReport) -> Result<()> {
    say(&format!("{what}: {d:?}"));
    if d.ended != Ended::Complete || d.received != d.bytes {
        bail!("{what} did not complete with every byte right: {d:?}");
    }
    Ok(())
}

fn echo_said(what: &str, e: &EchoReport) {
    say(&format!(
        "{what}: echoes {}/{} answered, lost {:?}, longest gap {} ms",
        e.answered, e.sent, e.lost, e.longest_gap_ms
    ));
}

/// The lines of `vm` from `from` on that contain `needle`.
fn lines_since(vm: &Vm, from: usize, needle: &str) -> Vec<String> {
    vm.lines_with_arrivals()
        .into_iter()
        .skip(from)
        .map(|(l, _)| l)
        .filter(|l| l.contains(needle))
        .collect()
}

pub fn run(root: &Path, report: &mut Report) -> Result<()> {
    let (disk, vpc) = setup(root)?;
    let seed = vpc.aws()?.seed().clone();
    let table_a = seed.route_table("a")?.to_string();
    let table_b = seed.route_table("b")?.to_string();
    let b_id = seed.instance("nat-b")?.instance_id.clone();
    let (a, b) = vpc.boot_pair(&disk, |_, _| {})?;
    let mut a = Some(a);
    let b = b;
    let mut ok = report.check(FORMED, || {
        let av = a.as_ref().context("nat-a is not running")?;
        wait_formed(&vpc, av, &b, (0, 0))?;
        wait_route(&vpc, &table_a, "nat-a", SETTLE)?;
        wait_route(&vpc, &table_b, "nat-b", SETTLE)?;
        for (vm, want) in [(av, "owner"), (&b, "standby")] {
            let (_, roles) = vm.wait_for_from(0, &format!("{table_a}:{want}"), SETTLE)?;
            say(&roles);
        }
        let plane = vpc.aws()?.data_plane()?;
        say(&format!("mappings: {:?}", plane.mappings));
        if vpc::udp_echo(&private(&vpc), 3)? != 3 {
            bail!("the private client's echoes through nat-a did not come back");
        }
        Ok(())
    });
    ok &= report.check_after(FORMED, PARTITION, || {
        let av = a.as_ref().context("nat-a is not running")?;
        let marks = (av.line_count(), b.line_count());
        let echo = EchoGaps::start(&private(&vpc), ECHO_EVERY)?;
        vpc.partition_nats(true)?;
        // Only the hairpin path through the gateway still carries heartbeats.
        let (_, h) = av.wait_for_from(
            marks.0,
            &format!("{b_id}:alive:hairpin"),
            Duration::from_secs(20),
        )?;
        say(&h);
        std::thread::sleep(Duration::from_secs(5));
        let (dropped, _) = vpc.fault_drops()?;
        vpc.partition_nats(false)?;
        let e = echo.finish()?;
        echo_said("partition", &e);
        if dropped == 0 {
            bail!("the partition dropped nothing: the test would not see a fight");
        }
        for (vm, mark) in [(av, marks.0), (&b, marks.1)] {
            let moves: Vec<String> = lines_since(vm, mark, "failover taking")
                .into_iter()
                .chain(lines_since(vm, mark, "failed: silent"))
                .collect();
            if !moves.is_empty() {
                bail!("a partition of one path moved something: {moves:?}");
            }
        }
        if route_of(&vpc, &table_a)? != Some(seed.instance("nat-a")?.eni_id.clone()) {
            bail!("table a moved during the partition");
        }
        if e.lost.len() > 2 {
            bail!(
                "echoes were lost during a partition that must not touch the data path: {:?}",
                e.lost
            );
        }
        Ok(())
    });
    let mut gaps: Vec<(&str, u64)> = Vec::new();
    ok &= report.check_after(FORMED, EGRESS, || {
        let (echo, dl) = meters(&vpc, DL_STALL)?;
        std::thread::sleep(Duration::from_secs(3));
        let mark = b.line_count();
        vpc.cut_internet("nat-a", true)?;
        let (_, took) = b.wait_for_from(
            mark,
            &format!("nat-init: failover took {table_a}"),
            TAKEOVER,
        )?;
        say(&took);
        wait_route(&vpc, &table_a, "nat-b", TAKEOVER)?;
        let d = dl.finish()?;
        let e = echo.finish()?;
        echo_said("internet cut", &e);
        gaps.push(("internet cut", e.longest_gap_ms));
        complete("download across the internet cut", &d)?;
        if !e.resumed(RESUMED_TAIL) {
            bail!("echoes did not resume through nat-b: {e:?}");
        }
        Ok(())
    });
    ok &= report.check_after(EGRESS, RECLAIM, || {
        let av = a.as_ref().context("nat-a is not running")?;
        let (echo, dl) = meters(&vpc, DL_STALL)?;
        let mark = av.line_count();
        let restored = Instant::now();
        vpc.cut_internet("nat-a", false)?;
        let (_, took) = av.wait_for_from(
            mark,
            &format!("nat-init: failover took {table_a}"),
            Duration::from_secs(HOLD_S) + TAKEOVER,
        )?;
        let after = restored.elapsed();
        say(&format!(
            "{took}\n(reclaimed {} ms after the path came back)",
            after.as_millis()
        ));
        if after < Duration::from_secs(HOLD_S - 1) {
            bail!("reclaimed after {after:?}, before the hold of {HOLD_S} s");
        }
        if !took.contains(&b_id) {
            bail!("the reclaim does not say it took the table from nat-b: {took}");
        }
        wait_route(&vpc, &table_a, "nat-a", TAKEOVER)?;
        let d = dl.finish()?;
        let e = echo.finish()?;
        echo_said("reclaim", &e);
        gaps.push(("reclaim", e.longest_gap_ms));
        complete("download across the reclaim", &d)?;
        if e.lost.len() > 3 {
            bail!("the reclaim lost more than a packet or two: {:?}", e.lost);
        }
        Ok(())
    });
    ok &= report.check_after(RECLAIM, CLEAN, || {
        let av = a.as_mut().context("nat-a is not running")?;
        let (echo, dl) = meters(&vpc, DL_STALL)?;
        std::thread::sleep(Duration::from_secs(3));
        let mark = (av.line_count(), b.line_count());
        av.qmp("system_powerdown")?;
        let (_, took) = b.wait_for_from(
            mark.1,
            &format!("nat-init: failover took {table_a}"),
            TAKEOVER,
        )?;
        say(&took);
        av.wait_exit(Duration::from_secs(60))?;
        let (_, stopped) =
            av.wait_for_from(mark.0, "nat-init: failover stopped after", Duration::ZERO)?;
        say(&stopped);
        if !stopped.contains("a peer holds everything") {
            bail!("nat-a stopped before the handover finished: {stopped}");
        }
        let d = dl.finish()?;
        let e = echo.finish()?;
        echo_said("clean stop", &e);
        gaps.push(("clean stop", e.longest_gap_ms));
        complete("download across the clean stop", &d)?;
        if e.lost.len() > 3 {
            bail!(
                "the clean stop lost more than a packet or two: {:?}",
                e.lost
            );
        }
        Ok(())
    });
    // The stopped guest's console, for the diagnosis at the end.
    let stopped_a = a.take();
    ok &= report.check_after(CLEAN, REJOIN, || {
        let cfg = vpc.pair_vm_config(&disk, "nat-a")?;
        let av = a.insert(Vm::start(&cfg)?);
        av.wait_for_from(0, "nat-init: ready ", BOOT)?;
        let (_, lent) = av.wait_for_from(0, "aws_lent=", SETTLE)?;
        say(&lent);
        let echo = EchoGaps::start(&private(&vpc), ECHO_EVERY)?;
        let (_, took) =
            av.wait_for_from(0, &format!("nat-init: failover took {table_a}"), SETTLE)?;
        say(&took);
        wait_route(&vpc, &table_a, "nat-a", TAKEOVER)?;
        std::thread::sleep(Duration::from_secs(2));
        let e = echo.finish()?;
        echo_said("rejoin", &e);
        if e.lost.len() > 3 {
            bail!(
                "the rejoin's reclaim lost more than a packet or two: {:?}",
                e.lost
            );
        }
        Ok(())
    });
    let mut unreplicated: Option<DownloadReport> = None;
    ok &= report.check_after(REJOIN, KILL, || {
        let av = a.as_mut().context("nat-a is not running")?;
        wait_formed(&vpc, av, &b, (0, 0))?;
        let (echo, replicated) = meters(&vpc, DL_STALL)?;
        // Long enough for the new connection's entry to reach nat-b.
        std::thread::sleep(Duration::from_secs(3));
        vpc.block_replication(true)?;
        let control = Download::start(&private(&vpc), DL_BYTES, DL_RATE, Duration::from_secs(15))?;
        std::thread::sleep(Duration::from_secs(3));
        let mark = b.line_count();
        let killed = Instant::now();
        av.kill()?;
        let (_, took) = b.wait_for_from(
            mark,
            &format!("nat-init: failover took {table_a}"),
            TAKEOVER,
        )?;
        say(&format!(
            "{took}\n({} ms after the kill)",
            killed.elapsed().as_millis()
        ));
        let d = replicated.finish()?;
        unreplicated = Some(control.finish()?);
        vpc.block_replication(false)?;
        let e = echo.finish()?;
        echo_said("hard kill", &e);
        gaps.push(("hard kill", e.longest_gap_ms));
        complete("replicated download across the hard kill", &d)?;
        if !e.resumed(RESUMED_TAIL) {
            bail!("echoes did not resume through nat-b after the kill: {e:?}");
        }
        Ok(())
    });
    ok &= report.check_after(KILL, CONTROL, || {
        let d = unreplicated.as_ref().context("no control download")?;
        say(&format!("unreplicated download: {d:?}"));
        if d.ended == Ended::Complete {
            bail!("a download whose connection was never replicated survived the kill: replication is not what kept the other one");
        }
        Ok(())
    });
    say(&format!("failover gaps (ms): {gaps:?}"));
    if !ok {
        for (name, vm) in [
            ("nat-a (first boot)", stopped_a.as_ref()),
            ("nat-a", a.as_ref()),
            ("nat-b", Some(&b)),
        ] {
            if let Some(vm) = vm {
                say(&format!("{name} console:\n{}", vm.log()));
            }
        }
        say(&format!("namespaces:\n{}", vpc.dump()));
        if let Ok(x) = vpc.aws() {
            say(&format!("AWS double log:\n{}", x.log()));
        }
    }
    Ok(())
}

//! Root test of the `SIOCETHTOOL` path on a real device: a veth pair in a network namespace
//! made here. veth has driver statistics (`peer_ifindex`, per-queue XDP counters) and none of
//! ENA's allowance counters, so the health line would carry none. The namespace is removed in
//! `Drop`, also when the test fails.
#![allow(clippy::unwrap_used)]

mod common;
use common::{sh, spawn_in_ns};

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .output();
    }
}

#[test]
fn veth_statistics_come_through_the_ioctl_without_ena_allowances() {
    let ns = Netns(format!("natinit-eth-{}", std::process::id()));
    sh("ip", &["netns", "add", &ns.0]);
    sh(
        "ip",
        &[
            "-n", &ns.0, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ],
    );
    let peer = sh("ip", &["-n", &ns.0, "-o", "link", "show", "veth1"]);
    let peer_index: u64 = peer.split(':').next().unwrap().trim().parse().unwrap();

    let (stats, lo) = spawn_in_ns(&ns.0, || {
        (
            nat_init::ethtool::stats("veth0").unwrap(),
            nat_init::ethtool::stats("lo").unwrap(),
        )
    })
    .join()
    .unwrap();
    assert_eq!(
        stats.iter().find(|(n, _)| n == "peer_ifindex"),
        Some(&("peer_ifindex".to_string(), peer_index)),
        "{stats:?}"
    );
    assert!(
        stats.iter().any(|(n, _)| n == "rx_queue_0_xdp_packets"),
        "{stats:?}"
    );
    assert!(
        stats.iter().all(|(n, _)| !n.is_empty() && n.is_ascii()),
        "{stats:?}"
    );
    assert_eq!(nat_init::plan::ena_allowances(&stats), []);
    assert_eq!(lo, [], "lo has no driver statistics");

    // A device that is not in this namespace is an error naming it.
    let e = spawn_in_ns(&ns.0, || nat_init::ethtool::stats("eth9").unwrap_err())
        .join()
        .unwrap();
    assert!(e.to_string().contains("on eth9: "), "{e}");
}

//! The failover rules, scenario by scenario, on a fake clock.

use super::*;

const A: &str = "i-0aaaaaaaaaaaaaaaa";
const B: &str = "i-0bbbbbbbbbbbbbbbb";
const C: &str = "i-0cccccccccccccccc";

fn egress(alloc: &str, last: u8) -> Egress {
    Egress {
        alloc: alloc.into(),
        ip: Ipv4Addr::new(10, 0, 0, last),
    }
}

fn held<T>(item: T, since_ms: u64) -> Holding<T> {
    Holding { item, since_ms }
}

/// A's heartbeat: owns and holds rtb-a and eipalloc-a on 10.0.0.40.
fn hb_a(seq: u64, via: Path, health: Health) -> Heartbeat {
    Heartbeat {
        v: 1,
        group: "g".into(),
        instance: A.into(),
        boot: 7,
        seq,
        via,
        health,
        primary: Ipv4Addr::new(10, 0, 0, 10),
        public: Some(Ipv4Addr::new(198, 51, 100, 10)),
        owns: vec!["rtb-a".into()],
        owns_egress: vec!["eipalloc-a".into()],
        holds: vec![held("rtb-a".into(), 1000)],
        holds_egress: vec![held(egress("eipalloc-a", 40), 1000)],
    }
}

/// B, healthy, owning and holding rtb-b and eipalloc-b on 10.0.0.41.
fn me_b() -> Me {
    Me {
        instance: B.into(),
        healthy: true,
        healthy_since_ms: Some(0),
        stopping: false,
        owns: vec!["rtb-b".into()],
        owns_egress: vec!["eipalloc-b".into()],
        holds: vec![held("rtb-b".into(), 1000)],
        holds_egress: vec![held(egress("eipalloc-b", 41), 1000)],
    }
}

fn takes(d: &[Decision]) -> Vec<&Decision> {
    d.iter()
        .filter(|d| matches!(d, Decision::Take { .. }))
        .collect()
}

/// B hears A on both paths every 200 ms from 0 to `until` (exclusive).
fn hear_a_until(g: &mut Group, me: &Me, until: u64) {
    let mut seq = 0;
    let mut t = 0;
    while t < until {
        seq += 1;
        g.heard(hb_a(seq, Path::Direct, Health::Healthy), t);
        seq += 1;
        g.heard(hb_a(seq, Path::Hairpin, Health::Healthy), t);
        assert!(takes(&g.tick(me, t)).is_empty(), "no takeover at {t} ms");
        t += 200;
    }
}

#[test]
fn a_peer_silent_on_both_paths_is_taken_over_once() {
    let me = me_b();
    let mut g = Group::new(1000, 60_000);
    hear_a_until(&mut g, &me, 2000);
    // Last heard at 1800: still alive at 2799.
    assert!(g.tick(&me, 2799).is_empty());
    let d = g.tick(&me, 2800);
    assert!(
        matches!(&d[0], Decision::PeerFailed { peer, why } if peer == A && why.contains("silent on both paths")),
        "{d:?}"
    );
    assert_eq!(
        takes(&d),
        [&Decision::Take {
            from: A.into(),
            from_addr: Ipv4Addr::new(10, 0, 0, 10),
            tables: vec!["rtb-a".into()],
            egress: vec![egress("eipalloc-a", 40)],
            why: format!("{A} failed: silent on both paths for 1000 ms"),
        }]
    );
    assert!(g.tick(&me, 5000).is_empty(), "taken once");
}

#[test]
fn a_partition_of_one_path_moves_nothing() {
    let me = me_b();
    let mut g = Group::new(1000, 60_000);
    hear_a_until(&mut g, &me, 1000);
    // From now on only the hairpin path delivers.
    let mut seq = 100;
    for t in (1000..20_000).step_by(200) {
        seq += 1;
        g.heard(hb_a(seq, Path::Hairpin, Health::Healthy), t);
        assert!(g.tick(&me, t).is_empty(), "nothing at {t} ms");
    }
    assert_eq!(g.paths(A, 19_900), "hairpin");
}

#[test]
fn a_peer_whose_egress_fails_is_taken_over_at_once() {
    let me = me_b();
    let mut g = Group::new(1000, 60_000);
    hear_a_until(&mut g, &me, 1000);
    g.heard(hb_a(500, Path::Direct, Health::EgressFailed), 1000);
    let d = g.tick(&me, 1000);
    assert!(matches!(&d[0], Decision::PeerFailed { why, .. } if why.contains("egress")));
    assert_eq!(takes(&d).len(), 1);
}

#[test]
fn a_stopping_peer_hands_over_at_once() {
    let me = me_b();
    let mut g = Group::new(1000, 60_000);
    hear_a_until(&mut g, &me, 1000);
    g.heard(hb_a(500, Path::Direct, Health::Stopping), 1000);
    assert_eq!(takes(&g.tick(&me, 1000)).len(), 1);
}

#[test]
fn an_unhealthy_or_stopping_member_takes_nothing() {
    for me in [
        Me {
            healthy: false,
            ..me_b()
        },
        Me {
            stopping: true,
            ..me_b()
        },
    ] {
        let mut g = Group::new(1000, 60_000);
        hear_a_until(&mut g, &me, 1000);
        let d = g.tick(&me, 5000);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(matches!(d[0], Decision::PeerFailed { .. }));
        // Healthy again later: the failure was seen without a takeover, so it takes now.
        let d = g.tick(&me_b(), 6000);
        assert_eq!(takes(&d).len(), 1, "{d:?}");
    }
}

#[test]
fn a_peer_never_heard_is_never_taken_over() {
    let me = me_b();
    let mut g = Group::new(1000, 60_000);
    assert!(g.tick(&me, 100_000).is_empty());
}

#[test]
fn the_lowest_id_healthy_member_takes_over() {
    let hb_c = |seq| Heartbeat {
        instance: C.into(),
        boot: 9,
        owns: vec![],
        owns_egress: vec![],
        holds: vec![],
        holds_egress: vec![],
        ..hb_a(seq, Path::Direct, Health::Healthy)
    };
    // B sees A and C; C sees A and B.
    let me_c = Me {
        instance: C.into(),
        ..me_b()
    };
    let hb_b = |seq| Heartbeat {
        instance: B.into(),
        boot: 8,
        ..hb_c(seq)
    };
    let mut at_b = Group::new(1000, 60_000);
    let mut at_c = Group::new(1000, 60_000);
    for t in (0..1000).step_by(200) {
        at_b.heard(hb_a(t + 1, Path::Direct, Health::Healthy), t);
        at_b.heard(hb_c(t + 1), t);
        at_c.heard(hb_a(t + 1, Path::Direct, Health::Healthy), t);
        at_c.heard(hb_b(t + 1), t);
    }
    // A fails; B and C keep hearing each other.
    at_b.heard(hb_c(2000), 1900);
    at_c.heard(hb_b(2000), 1900);
    assert_eq!(takes(&at_b.tick(&me_b(), 2000)).len(), 1, "B < C takes");
    assert!(
        takes(&at_c.tick(&me_c, 2000)).is_empty(),
        "C leaves it to B"
    );
}

#[test]
fn the_owner_reclaims_after_the_hold_time_and_not_before() {
    // A (me) is back; B holds rtb-a and A's egress since its takeover.
    let me_a = Me {
        instance: A.into(),
        healthy: true,
        healthy_since_ms: Some(1000),
        stopping: false,
        owns: vec!["rtb-a".into()],
        owns_egress: vec!["eipalloc-a".into()],
        holds: vec![],
        holds_egress: vec![],
    };
    let hb_b = |seq| Heartbeat {
        instance: B.into(),
        boot: 8,
        primary: Ipv4Addr::new(10, 0, 0, 12),
        owns: vec!["rtb-b".into()],
        owns_egress: vec!["eipalloc-b".into()],
        holds: vec![held("rtb-b".into(), 1000), held("rtb-a".into(), 5000)],
        holds_egress: vec![
            held(egress("eipalloc-b", 41), 1000),
            held(egress("eipalloc-a", 40), 5000),
        ],
        ..hb_a(seq, Path::Direct, Health::Healthy)
    };
    let mut g = Group::new(1000, 30_000);
    let mut reclaims = Vec::new();
    for (i, t) in (1000..60_000).step_by(200).enumerate() {
        g.heard(hb_b(i as u64 + 1), t);
        for d in g.tick(&me_a, t) {
            if let Decision::Take {
                from,
                tables,
                egress,
                ..
            } = d
            {
                reclaims.push((t, from, tables, egress));
            }
        }
    }
    assert_eq!(reclaims[0].0, 31_000, "healthy since 1000 + hold 30000");
    assert_eq!(reclaims[0].1, B);
    assert_eq!(reclaims[0].2, ["rtb-a"], "only its own table");
    assert_eq!(reclaims[0].3, [egress("eipalloc-a", 40)]);
    // Not carried out (B still says it holds them): asked again every 10 s, not every tick.
    let times: Vec<u64> = reclaims.iter().map(|r| r.0).collect();
    assert_eq!(times, [31_000, 41_000, 51_000]);
}

#[test]
fn a_later_claim_by_a_live_peer_is_released_here() {
    let me = me_b();
    let mut me_holding = me.clone();
    me_holding.holds.push(held("rtb-a".into(), 5000));
    me_holding
        .holds_egress
        .push(held(egress("eipalloc-a", 40), 5000));
    let mut g = Group::new(1000, 60_000);
    // A reclaimed at 9000.
    let mut hb = hb_a(1, Path::Direct, Health::Healthy);
    hb.holds = vec![held("rtb-a".into(), 9000)];
    hb.holds_egress = vec![held(egress("eipalloc-a", 40), 9000)];
    g.heard(hb.clone(), 10_000);
    let d = g.tick(&me_holding, 10_000);
    assert!(
        d.contains(&Decision::Release {
            to: A.into(),
            tables: vec!["rtb-a".into()],
            egress: vec![egress("eipalloc-a", 40)],
        }),
        "{d:?}"
    );
    // An older claim of A's is not a reason to let go.
    let mut stale = hb.clone();
    stale.seq = 2;
    stale.holds = vec![held("rtb-a".into(), 4000)];
    stale.holds_egress = vec![];
    let mut g = Group::new(1000, 60_000);
    g.heard(stale, 10_000);
    assert!(
        g.tick(&me_holding, 10_000)
            .iter()
            .all(|d| !matches!(d, Decision::Release { .. }))
    );
    // Equal claims: the lower id (A) keeps it.
    let mut tie = hb;
    tie.holds = vec![held("rtb-a".into(), 5000)];
    let mut g = Group::new(1000, 60_000);
    g.heard(tie, 10_000);
    assert!(
        g.tick(&me_holding, 10_000)
            .iter()
            .any(|d| matches!(d, Decision::Release { tables, .. } if tables == &["rtb-a"]))
    );
}

#[test]
fn a_full_partition_takes_once_each_way_then_settles_when_healed() {
    // Seen from B: A is cut off on both paths for a minute, then heard again.
    let mut me = me_b();
    let mut g = Group::new(1000, 60_000);
    hear_a_until(&mut g, &me, 1000);
    let mut taken = 0;
    for t in (1000..61_000).step_by(200) {
        taken += takes(&g.tick(&me, t)).len();
    }
    assert_eq!(taken, 1, "one takeover for the whole partition");
    me.holds.push(held("rtb-a".into(), 2100));
    // Healed: A, which took rtb-b meanwhile (later than B's own claim), is heard again.
    let mut hb = hb_a(10_000, Path::Direct, Health::Healthy);
    hb.holds = vec![held("rtb-a".into(), 1000), held("rtb-b".into(), 2050)];
    let alive = g.heard(hb, 61_000);
    assert!(matches!(alive, Some(Decision::PeerAlive { .. })));
    let d = g.tick(&me, 61_000);
    // B lets go of rtb-b (A's claim is later) and keeps rtb-a (its own claim is later).
    assert!(
        d.contains(&Decision::Release {
            to: A.into(),
            tables: vec!["rtb-b".into()],
            egress: vec![],
        }),
        "{d:?}"
    );
    assert!(takes(&d).is_empty(), "{d:?}");
    // Its own rtb-b comes back once A has been heard for the hold time.
    me.holds.retain(|h| h.item != "rtb-b");
    let mut first = None;
    for (i, t) in (61_200..130_000).step_by(200).enumerate() {
        let mut hb = hb_a(10_001 + i as u64, Path::Direct, Health::Healthy);
        hb.holds = vec![held("rtb-b".into(), 2050)];
        g.heard(hb, t);
        if let Some(Decision::Take { tables, .. }) = takes(&g.tick(&me, t)).first() {
            assert_eq!(tables, &["rtb-b"]);
            first.get_or_insert(t);
        }
    }
    assert_eq!(first, Some(121_000), "healed at 61 s + hold 60 s");
}

#[test]
fn a_restarted_peer_is_a_new_life() {
    let me = me_b();
    let mut g = Group::new(1000, 60_000);
    hear_a_until(&mut g, &me, 1000);
    assert_eq!(takes(&g.tick(&me, 3000)).len(), 1);
    let mut hb = hb_a(1, Path::Direct, Health::Healthy);
    hb.boot = 8;
    hb.holds = vec![];
    hb.holds_egress = vec![];
    assert!(matches!(
        g.heard(hb.clone(), 4000),
        Some(Decision::PeerAlive { .. })
    ));
    assert!(g.peers[A].failed.is_none());
    // It fails again (holding nothing): no takeover of nothing, but a failure line.
    let d = g.tick(&me, 6000);
    assert!(matches!(d[..], [Decision::PeerFailed { .. }]), "{d:?}");
}

#[test]
fn roles_of_the_tables() {
    let me = Me {
        holds: vec![held("rtb-b".into(), 1), held("rtb-c".into(), 2)],
        owns: vec!["rtb-b".into(), "rtb-d".into()],
        ..me_b()
    };
    let mut g = Group::new(1000, 60_000);
    g.heard(hb_a(1, Path::Direct, Health::Healthy), 0);
    let roles = g.roles(&me);
    assert_eq!(
        roles.into_iter().collect::<Vec<_>>(),
        [
            ("rtb-a".to_string(), "standby"),
            ("rtb-b".to_string(), "owner"),
            ("rtb-c".to_string(), "taken-over"),
            ("rtb-d".to_string(), "unheld"),
        ]
    );
}

#[test]
fn heartbeats_round_trip_and_refuse_what_is_not_ours() {
    let hb = hb_a(3, Path::Hairpin, Health::Healthy);
    let bytes = hb.encode().unwrap();
    assert_eq!(Heartbeat::decode(&bytes, "g").unwrap(), hb);
    assert_eq!(
        Heartbeat::decode(&bytes, "other").unwrap_err(),
        HeartbeatError::OtherGroup("g".into())
    );
    let v2 = String::from_utf8(bytes.clone())
        .unwrap()
        .replace("\"v\":1", "\"v\":2");
    assert_eq!(
        Heartbeat::decode(v2.as_bytes(), "g").unwrap_err(),
        HeartbeatError::Version(2)
    );
    assert!(matches!(
        Heartbeat::decode(b"\x00\xffgarbage", "g"),
        Err(HeartbeatError::Malformed(_))
    ));
    assert!(matches!(
        Heartbeat::decode(&bytes[..bytes.len() / 2], "g"),
        Err(HeartbeatError::Malformed(_))
    ));
    assert_eq!(
        Heartbeat::decode(&vec![b' '; MAX_HEARTBEAT + 1], "g").unwrap_err(),
        HeartbeatError::TooLong(MAX_HEARTBEAT + 1)
    );
    // The most a member can hold (50 addresses, 20 tables) still fits one datagram? No: say so.
    let mut big = hb;
    big.holds = (0..20)
        .map(|i| held(format!("rtb-0123456789abcde{i:02}"), 1_700_000_000_000))
        .collect();
    assert!(matches!(big.encode(), Err(HeartbeatError::TooLong(_))));
}

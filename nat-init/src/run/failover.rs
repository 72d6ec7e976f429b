//! A failover group member's own thread: heartbeats to every peer on two paths (direct to
//! its private address, hairpinned to its public address), the egress probes that say
//! whether this member's internet path works, the decisions of `nat_init::failover::Group`
//! and their execution: the failed peer's replicated connections committed here (`ctsync`),
//! then its addresses and routes moved through the AWS worker. On SIGTERM it says
//! `stopping`, waits (at most [`HANDOVER_LIMIT`]) until a peer holds what it held, and exits.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nat_init::config::FailoverConfig;
use nat_init::failover::{self, Decision, Egress, Group, Health, Heartbeat, INTERVAL_MS, Me, Path};

use nat_init::dhcp::Random;
use nat_init::plan::Throttle;

use super::aws::{Command, Commander, Facts};
use super::console::{error, info, now_ms};
use super::ctsync::CtSync;

/// Probes go out this often (to each target in turn until one answers).
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// One probe's connect limit.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);
/// The egress has failed when no probe succeeded for this long.
const EGRESS_FAILED_AFTER_MS: u64 = 2000;
/// The longest a stop waits for a peer to take over.
pub const HANDOVER_LIMIT: Duration = Duration::from_secs(5);
/// An unknown sender asks for the group's members again at most this often.
const REFRESH_MS: u64 = 5000;
/// A release still seen after this long is sent again.
const RELEASE_REPEAT_MS: u64 = 2000;
/// The thread's step: receive, decide, send.
const STEP: Duration = Duration::from_millis(50);

/// Set by SIGTERM while a failover thread runs: hand over, then exit.
pub static STOP: AtomicBool = AtomicBool::new(false);
/// Whether SIGTERM should wait for the handover (a failover thread runs).
pub static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The main loop's end: the fields of the health line.
pub struct Failover {
    status: Arc<Mutex<String>>,
}

impl Failover {
    pub fn start(
        cfg: FailoverConfig,
        aws: Commander,
        primary: Ipv4Addr,
        ct: Arc<CtSync>,
        metrics: super::metrics::Handle,
    ) -> Failover {
        let status = Arc::new(Mutex::new("failover=starting".to_string()));
        let st = Arc::clone(&status);
        let spawned = std::thread::Builder::new()
            .name("failover".into())
            .spawn(move || {
                match Member::new(cfg, aws, primary, ct, st, metrics) {
                    Ok(mut m) => m.run(),
                    Err(e) => error("failover", format_args!("cannot start: {e}")),
                }
                ACTIVE.store(false, Ordering::SeqCst);
            });
        match spawned {
            Ok(_) => ACTIVE.store(true, Ordering::SeqCst),
            Err(e) => error("failover", format_args!("cannot start the thread: {e}")),
        }
        Failover { status }
    }

    /// `failover=rtb-a:owner,rtb-b:standby failover_peers=i-b:alive:both failover_health=ok`.
    pub fn fields(&self) -> String {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|_| "failover=unknown".into())
    }
}

struct Member {
    cfg: FailoverConfig,
    aws: Commander,
    primary: Ipv4Addr,
    ct: Arc<CtSync>,
    status: Arc<Mutex<String>>,
    socket: UdpSocket,
    group: Group,
    boot: u64,
    seq: u64,
    probe_ok_ms: Arc<AtomicU64>,
    healthy_since_ms: Option<u64>,
    egress_said: Option<bool>,
    roles_said: String,
    /// The roles at the last report, and the changes counted since start (the metrics).
    roles_last: BTreeMap<String, &'static str>,
    role_changes: u64,
    metrics: super::metrics::Handle,
    peers_sent: Vec<Ipv4Addr>,
    stopping_since: Option<Instant>,
    /// Releases sent, so that one is not repeated while the worker carries it out.
    released: BTreeMap<String, u64>,
    /// The last members refresh asked for an unknown sender.
    refreshed_ms: u64,
    refused: Throttle,
}

fn ip_of(a: SocketAddr) -> Ipv4Addr {
    match a {
        SocketAddr::V4(v4) => *v4.ip(),
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

impl Member {
    fn new(
        cfg: FailoverConfig,
        aws: Commander,
        primary: Ipv4Addr,
        ct: Arc<CtSync>,
        status: Arc<Mutex<String>>,
        metrics: super::metrics::Handle,
    ) -> std::io::Result<Member> {
        let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, failover::PORT))?;
        socket.set_read_timeout(Some(STEP))?;
        // A new value each start: peers tell a restart from a member that kept running.
        let mut r = nat_init::dhcp::KernelRandom::new();
        let boot = (u64::from(r.next_u32()) << 32) | u64::from(r.next_u32());
        let probe_ok_ms = Arc::new(AtomicU64::new(now_ms()));
        start_probes(&cfg, aws.clone(), Arc::clone(&probe_ok_ms));
        info(format_args!(
            "failover group {} on udp/{} (timeout {} ms, hold {} s)",
            cfg.group,
            failover::PORT,
            cfg.timeout_ms,
            cfg.hold_secs
        ));
        Ok(Member {
            group: Group::new(u64::from(cfg.timeout_ms), u64::from(cfg.hold_secs) * 1000),
            cfg,
            aws,
            primary,
            ct,
            status,
            socket,
            boot,
            seq: 0,
            probe_ok_ms,
            healthy_since_ms: None,
            egress_said: None,
            roles_said: String::new(),
            roles_last: BTreeMap::new(),
            role_changes: 0,
            metrics,
            peers_sent: Vec::new(),
            stopping_since: None,
            released: BTreeMap::new(),
            refreshed_ms: 0,
            refused: Throttle::default(),
        })
    }

    fn run(&mut self) {
        let mut next_send = 0;
        let mut buf = [0u8; failover::MAX_HEARTBEAT + 1];
        loop {
            // Everything that arrived, then the decisions, then the heartbeats when due.
            while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
                self.hear(&buf[..n], from);
                self.socket.set_nonblocking(true).ok();
            }
            self.socket.set_nonblocking(false).ok();
            let now = now_ms();
            let facts = self.aws.facts();
            let me = self.me(&facts, now);
            for d in self.group.tick(&me, now) {
                self.act(d, &facts);
            }
            if now >= next_send {
                self.send(&facts, &me);
                next_send = now + INTERVAL_MS;
            }
            self.report(&me, now);
            if STOP.load(Ordering::SeqCst) {
                self.stop_step(&facts);
            }
        }
    }

    fn hear(&mut self, bytes: &[u8], from: SocketAddr) {
        match Heartbeat::decode(bytes, &self.cfg.group) {
            Ok(hb) => {
                let facts = self.aws.facts();
                if facts.instance.as_deref() == Some(hb.instance.as_str()) {
                    return;
                }
                // Only from the address EC2 gives the member it names, on the path it names:
                // a heartbeat is what keeps a route where it is, so a forged one must not count.
                let member = facts.members.iter().find(|m| m.id == hb.instance);
                let from_ip = ip_of(from);
                // The hairpin path's sender is the primary's public address: the appliance's own
                // traffic is never translated to its Elastic IPs (see `nft::policy`).
                let expected = member.is_some_and(|m| match hb.via {
                    Path::Direct => m.private_ip == Some(from_ip),
                    Path::Hairpin => m.public_ip == Some(from_ip),
                });
                if !expected {
                    let now = now_ms();
                    if now.saturating_sub(self.refreshed_ms) >= REFRESH_MS {
                        // A new member (an Auto Scaling replacement), or an address that moved,
                        // before the next API pass.
                        self.refreshed_ms = now;
                        self.aws.send(Command::Refresh);
                    }
                    // Before the first API pass every sender is unknown: not worth a line.
                    if !facts.members.is_empty()
                        && self.refused.should_print(&hb.instance, now, 60_000)
                    {
                        error(
                            "failover",
                            format_args!(
                                "heartbeat naming {} from {from} ({:?}) refused: not that member's address",
                                hb.instance, hb.via
                            ),
                        );
                    }
                    return;
                }
                if let Some(Decision::PeerAlive { peer, paths }) = self.group.heard(hb, now_ms()) {
                    info(format_args!(
                        "failover peer {peer} heard ({paths}, from {from})"
                    ));
                }
            }
            Err(e) => error("failover", format_args!("from {from}: {e}")),
        }
    }

    fn me(&mut self, facts: &Facts, now: u64) -> Me {
        let last_ok = self.probe_ok_ms.load(Ordering::SeqCst);
        let healthy = now.saturating_sub(last_ok) < EGRESS_FAILED_AFTER_MS;
        if healthy {
            self.healthy_since_ms.get_or_insert(now);
        } else {
            self.healthy_since_ms = None;
        }
        if self.egress_said != Some(healthy) {
            if healthy {
                if self.egress_said.is_some() {
                    info("failover egress probes pass again");
                }
            } else {
                error(
                    "failover",
                    format_args!(
                        "egress probes failing for {} ms: a peer takes over",
                        now.saturating_sub(last_ok)
                    ),
                );
            }
            self.egress_said = Some(healthy);
        }
        Me {
            instance: facts.instance.clone().unwrap_or_default(),
            healthy,
            healthy_since_ms: self.healthy_since_ms,
            stopping: self.stopping_since.is_some(),
            owns: facts.owns.clone(),
            owns_egress: facts.owns_egress.clone(),
            holds: facts.holds.clone(),
            holds_egress: facts.holds_egress.clone(),
        }
    }

    fn act(&mut self, d: Decision, facts: &Facts) {
        match d {
            Decision::PeerFailed { peer, why } => {
                error("failover", format_args!("peer {peer} failed: {why}"));
            }
            Decision::PeerAlive { peer, paths } => {
                info(format_args!("failover peer {peer} alive ({paths})"));
            }
            Decision::Take {
                from,
                from_addr,
                tables,
                egress,
                why,
            } => {
                let ips: Vec<Ipv4Addr> = egress.iter().map(|e| e.ip).collect();
                // Before the addresses move: the first packet back finds its mapping here.
                let committed = if ips.is_empty() {
                    "no addresses to carry them".to_string()
                } else {
                    let r = self.ct.commit_from(from_addr, &ips);
                    if let Some(e) = &r.first_error {
                        error(
                            "failover",
                            format_args!("committing {from}'s connections: {e}"),
                        );
                    }
                    format!(
                        "{} committed, {} already here, {} refused",
                        r.committed, r.already_present, r.failed
                    )
                };
                info(format_args!(
                    "failover taking {} from {from} ({why}); connections: {committed}",
                    items(&tables, &egress)
                ));
                let _ = facts;
                self.aws.send(Command::Take {
                    from,
                    tables,
                    egress,
                });
            }
            Decision::Release { to, tables, egress } => {
                let key = format!("{to} {}", items(&tables, &egress));
                let now = now_ms();
                self.released
                    .retain(|_, t| now.saturating_sub(*t) < RELEASE_REPEAT_MS);
                if self.released.insert(key, now).is_some() {
                    return;
                }
                info(format_args!(
                    "failover {to} holds {} now (a later claim)",
                    items(&tables, &egress)
                ));
                self.aws.send(Command::Release { tables, egress });
            }
        }
    }

    fn send(&mut self, facts: &Facts, me: &Me) {
        let Some(instance) = facts.instance.clone() else {
            return;
        };
        let health = if me.stopping {
            Health::Stopping
        } else if me.healthy {
            Health::Healthy
        } else {
            Health::EgressFailed
        };
        // Members from the API, and peers heard (a new member before the next API pass).
        let mut targets: BTreeMap<String, (Option<Ipv4Addr>, Option<Ipv4Addr>)> = BTreeMap::new();
        for m in &facts.members {
            if m.id != instance {
                targets.insert(m.id.clone(), (m.private_ip, m.public_ip));
            }
        }
        for (id, p) in &self.group.peers {
            let t = targets.entry(id.clone()).or_default();
            t.0 = t.0.or(Some(p.last.primary));
            t.1 = t.1.or(p.last.public);
        }
        let peers: Vec<Ipv4Addr> = targets.values().filter_map(|t| t.0).collect();
        if peers != self.peers_sent {
            self.ct.set_peers(peers.clone());
            self.peers_sent = peers;
        }
        for (direct, hairpin) in targets.values() {
            for (addr, via) in [(direct, Path::Direct), (hairpin, Path::Hairpin)] {
                let Some(addr) = addr else { continue };
                self.seq += 1;
                let hb = Heartbeat {
                    v: 1,
                    group: self.cfg.group.clone(),
                    instance: instance.clone(),
                    boot: self.boot,
                    seq: self.seq,
                    via,
                    health,
                    primary: self.primary,
                    public: facts.public,
                    owns: me.owns.clone(),
                    owns_egress: me.owns_egress.clone(),
                    holds: me.holds.clone(),
                    holds_egress: me.holds_egress.clone(),
                };
                match hb.encode() {
                    Ok(bytes) => {
                        let _ = self
                            .socket
                            .send_to(&bytes, SocketAddrV4::new(*addr, failover::PORT));
                    }
                    Err(e) => error("failover", format_args!("heartbeat: {e}")),
                }
            }
        }
    }

    /// The health fields, and a line whenever a table's role changes.
    fn report(&mut self, me: &Me, now: u64) {
        let roles = self.group.roles(me);
        // A table seen for the first time is no change of role.
        self.role_changes += roles
            .iter()
            .filter(|(t, r)| self.roles_last.get(*t).is_some_and(|old| old != *r))
            .count() as u64;
        self.roles_last.clone_from(&roles);
        if let Ok(mut m) = self.metrics.lock() {
            let gauges = roles
                .iter()
                .filter_map(|(t, r)| {
                    nat_init::metrics::catalogue::Role::from_name(r).map(|r| (t.clone(), r))
                })
                .collect();
            m.failover = Some((gauges, self.role_changes));
        }
        let roles_text = roles
            .iter()
            .map(|(t, r)| format!("{t}:{r}"))
            .collect::<Vec<_>>()
            .join(",");
        if roles_text != self.roles_said {
            info(format_args!(
                "failover roles {}",
                if roles_text.is_empty() {
                    "none"
                } else {
                    &roles_text
                }
            ));
            self.roles_said.clone_from(&roles_text);
        }
        let peers = self
            .group
            .peers
            .iter()
            .map(|(id, p)| {
                format!(
                    "{id}:{}:{}",
                    if p.failed.is_some() {
                        "failed"
                    } else {
                        "alive"
                    },
                    self.group.paths(id, now)
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let st = self.ct.stats();
        let synced = st
            .inbound
            .iter()
            .map(|p| {
                format!(
                    "{}:{}{}",
                    p.peer,
                    p.cached,
                    if p.connected { "" } else { ":closed" }
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let text = format!(
            "failover={} failover_peers={} failover_egress={} ct_local={} ct_from={}",
            if roles_text.is_empty() {
                "-"
            } else {
                &roles_text
            },
            if peers.is_empty() { "-" } else { &peers },
            if me.healthy { "ok" } else { "failed" },
            st.local,
            if synced.is_empty() { "-" } else { &synced }
        );
        if let Ok(mut s) = self.status.lock() {
            *s = text;
        }
    }

    /// Stopping: say so until a peer holds everything, then exit.
    fn stop_step(&mut self, facts: &Facts) {
        let since = *self.stopping_since.get_or_insert_with(|| {
            info("failover stopping: handing over to a peer");
            Instant::now()
        });
        let alive = self
            .group
            .peers
            .values()
            .any(|p| p.failed.is_none() && p.last.health == Health::Healthy);
        let empty = facts.holds.is_empty() && facts.holds_egress.is_empty();
        if empty || !alive || since.elapsed() >= HANDOVER_LIMIT {
            info(format_args!(
                "failover stopped after {} ms: {}",
                since.elapsed().as_millis(),
                if empty {
                    "a peer holds everything"
                } else if !alive {
                    "no healthy peer to hand over to"
                } else {
                    "the handover did not finish in time"
                }
            ));
            std::process::exit(0);
        }
    }
}

fn items(tables: &[String], egress: &[Egress]) -> String {
    tables
        .iter()
        .cloned()
        .chain(egress.iter().map(|e| format!("{}({})", e.alloc, e.ip)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The probe thread: TCP connects to the configured targets (or the EC2 endpoint, port 443),
/// in turn until one answers, every [`PROBE_EVERY`]; the last success's time in `ok_ms`.
fn start_probes(cfg: &FailoverConfig, aws: Commander, ok_ms: Arc<AtomicU64>) {
    let configured = cfg.probes.clone();
    let spawned = std::thread::Builder::new()
        .name("probes".into())
        .spawn(move || {
            loop {
                let targets: Vec<SocketAddr> = if configured.is_empty() {
                    aws.facts()
                        .endpoint
                        .map(|e| SocketAddr::new(e.ip(), 443))
                        .into_iter()
                        .collect()
                } else {
                    configured.iter().map(|a| SocketAddr::V4(*a)).collect()
                };
                let started = Instant::now();
                if targets.is_empty() {
                    // Nothing to probe yet (the endpoint is not resolved): count as passing.
                    ok_ms.store(now_ms(), Ordering::SeqCst);
                }
                for t in &targets {
                    if TcpStream::connect_timeout(t, PROBE_TIMEOUT).is_ok() {
                        ok_ms.store(now_ms(), Ordering::SeqCst);
                        break;
                    }
                }
                std::thread::sleep(PROBE_EVERY.saturating_sub(started.elapsed()));
            }
        });
    if let Err(e) = spawned {
        error("failover", format_args!("cannot start the probes: {e}"));
    }
}

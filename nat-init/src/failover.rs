//! Failover between the members of a group (`failover_group`), pure: the heartbeat every member
//! sends its peers, and the decisions taken from what was heard. `run::failover` sends, hears,
//! probes the internet path and carries the decisions out through the AWS side (`run::aws`),
//! after committing the peer's replicated connections (`run::ctsync`).
//!
//! Each member owns the route tables and Elastic IPs of its own configuration and holds them
//! while it is healthy. A member takes over what a failed peer held; an owner takes its own back
//! once it has been healthy for `failover_hold`.
//!
//! The split-brain rule: a member takes over from a peer only when (1) it has heard the peer
//! (the peer was alive since this member started), (2) the peer then fell silent on BOTH
//! paths for `failover_timeout_ms` (direct over the VPC, and hairpinned through the internet
//! gateway to the peer's public address), or said itself that its egress failed or that it is
//! stopping, (3) this member's own egress probes pass, and (4) it is the lowest-id healthy
//! member alive. It does so once per peer boot. A partition of one path never moves a route,
//! since the peer is still heard on the other; a member whose internet is down takes nothing
//! (no flapping when the outage is everyone's); and when both paths between two healthy members
//! are cut, each takes the other's tables once and then nothing more until they hear each other
//! again (the later claim wins, as [`Holding::since_ms`] says), so routes never ping-pong.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The heartbeats' UDP port.
pub const PORT: u16 = 7471;
/// Connection replication's TCP port.
pub const CTSYNC_PORT: u16 = crate::conntrack::sync::PORT;
/// A heartbeat never exceeds this (one unfragmented datagram on any VPC path).
pub const MAX_HEARTBEAT: usize = 1400;
/// Heartbeats go out this often, on each path.
pub const INTERVAL_MS: u64 = 200;
/// The wire format's version.
const VERSION: u8 = 1;
/// A decision not yet seen carried out is taken again after this long.
const RETRY_MS: u64 = 10_000;

/// How a heartbeat travelled, as its sender addressed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Path {
    /// To the peer's private address, over the VPC.
    Direct,
    /// To the peer's public address, out through the internet gateway and back in.
    Hairpin,
}

/// What a member says of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    Healthy,
    /// Its egress probes have failed: take over from it.
    EgressFailed,
    /// It is shutting down: take over from it now.
    Stopping,
}

/// An Elastic IP and the private address it is associated with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Egress {
    pub alloc: String,
    pub ip: Ipv4Addr,
}

/// A route table or an egress address a member holds, since when (unix ms, its verified
/// change): when two members claim the same, the later claim wins, ties to the lower id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Holding<T> {
    pub item: T,
    pub since_ms: u64,
}

/// One heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub v: u8,
    pub group: String,
    pub instance: String,
    /// Random per start: a new value is a new life of the member.
    pub boot: u64,
    pub seq: u64,
    pub via: Path,
    pub health: Health,
    /// Its private (primary) address: where replicated connections come from.
    pub primary: Ipv4Addr,
    /// Its primary address's public address: the hairpin path's destination.
    pub public: Option<Ipv4Addr>,
    /// Its own configuration's route tables and Elastic IPs.
    pub owns: Vec<String>,
    pub owns_egress: Vec<String>,
    /// What it holds now (its own and what it took over).
    pub holds: Vec<Holding<String>>,
    pub holds_egress: Vec<Holding<Egress>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    #[error("heartbeat of {0} bytes, more than {MAX_HEARTBEAT}")]
    TooLong(usize),
    #[error("not a heartbeat: {0}")]
    Malformed(String),
    #[error("heartbeat version {0}, expected {VERSION}")]
    Version(u8),
    #[error("heartbeat of group {0:?}, not ours")]
    OtherGroup(String),
}

impl Heartbeat {
    pub fn encode(&self) -> Result<Vec<u8>, HeartbeatError> {
        let bytes =
            serde_json::to_vec(self).map_err(|e| HeartbeatError::Malformed(e.to_string()))?;
        if bytes.len() > MAX_HEARTBEAT {
            return Err(HeartbeatError::TooLong(bytes.len()));
        }
        Ok(bytes)
    }

    /// A heartbeat of `group`, or why not.
    pub fn decode(bytes: &[u8], group: &str) -> Result<Heartbeat, HeartbeatError> {
        if bytes.len() > MAX_HEARTBEAT {
            return Err(HeartbeatError::TooLong(bytes.len()));
        }
        let hb: Heartbeat = serde_json::from_slice(bytes)
            .map_err(|e| HeartbeatError::Malformed(e.to_string().chars().take(120).collect()))?;
        if hb.v != VERSION {
            return Err(HeartbeatError::Version(hb.v));
        }
        if hb.group != group {
            return Err(HeartbeatError::OtherGroup(
                hb.group.chars().take(64).collect(),
            ));
        }
        Ok(hb)
    }
}

/// What this member knows of itself when it decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Me {
    pub instance: String,
    /// Its egress probes pass.
    pub healthy: bool,
    /// Healthy without a break since (ms of the caller's clock).
    pub healthy_since_ms: Option<u64>,
    pub stopping: bool,
    pub owns: Vec<String>,
    pub owns_egress: Vec<String>,
    pub holds: Vec<Holding<String>>,
    pub holds_egress: Vec<Holding<Egress>>,
}

/// A peer as heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub last: Heartbeat,
    pub last_direct_ms: Option<u64>,
    pub last_hairpin_ms: Option<u64>,
    /// Heard, without a failure, since.
    pub alive_since_ms: u64,
    /// Why it is considered failed, when it is.
    pub failed: Option<String>,
    /// Its holdings were taken over in this life (`last.boot`).
    pub taken: bool,
}

impl Peer {
    fn last_heard(&self) -> u64 {
        self.last_direct_ms
            .max(self.last_hairpin_ms)
            .unwrap_or(self.alive_since_ms)
    }
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A peer failed (a console line; a takeover may follow).
    PeerFailed { peer: String, why: String },
    /// A peer is heard again, or for the first time.
    PeerAlive { peer: String, paths: String },
    /// Move these here: the peer's (`from` failed) or this member's own (`from` holds them
    /// and this member has been healthy for the hold time). Commit the connections replicated
    /// from `from_addr` for `egress` first.
    Take {
        from: String,
        from_addr: Ipv4Addr,
        tables: Vec<String>,
        egress: Vec<Egress>,
        why: String,
    },
    /// A peer holds these now, with a later claim: stop holding them here.
    Release {
        to: String,
        tables: Vec<String>,
        egress: Vec<Egress>,
    },
}

/// The group as this member sees it.
#[derive(Debug, Clone)]
pub struct Group {
    pub timeout_ms: u64,
    pub hold_ms: u64,
    pub peers: BTreeMap<String, Peer>,
    /// Take decisions not yet seen carried out: key -> when taken.
    pending: BTreeMap<String, u64>,
}

impl Group {
    pub fn new(timeout_ms: u64, hold_ms: u64) -> Self {
        Self {
            timeout_ms,
            hold_ms,
            peers: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// A heartbeat arrived at `now_ms`. Returns a `PeerAlive` when the peer is new, back, or
    /// restarted.
    pub fn heard(&mut self, hb: Heartbeat, now_ms: u64) -> Option<Decision> {
        let via = hb.via;
        let id = hb.instance.clone();
        let mut news = None;
        let peer = self.peers.entry(id.clone()).or_insert_with(|| {
            news = Some(());
            Peer {
                last: hb.clone(),
                last_direct_ms: None,
                last_hairpin_ms: None,
                alive_since_ms: now_ms,
                failed: None,
                taken: false,
            }
        });
        if peer.last.boot != hb.boot {
            peer.taken = false;
            peer.failed = None;
            peer.alive_since_ms = now_ms;
            news = Some(());
        }
        if peer.failed.is_some() && hb.health == Health::Healthy && hb.seq > peer.last.seq {
            // Heard healthy again after a failure (a healed partition, a fixed path): a new
            // failure may be taken over again.
            peer.failed = None;
            peer.taken = false;
            peer.alive_since_ms = now_ms;
            news = Some(());
        }
        match via {
            Path::Direct => peer.last_direct_ms = Some(now_ms),
            Path::Hairpin => peer.last_hairpin_ms = Some(now_ms),
        }
        if hb.seq >= peer.last.seq || peer.last.boot != hb.boot {
            peer.last = hb;
        }
        news.map(|()| Decision::PeerAlive {
            peer: id,
            paths: format!("{via:?}").to_lowercase(),
        })
    }

    /// Which paths a peer was heard on within the timeout.
    pub fn paths(&self, peer: &str, now_ms: u64) -> &'static str {
        let Some(p) = self.peers.get(peer) else {
            return "none";
        };
        let fresh = |t: Option<u64>| t.is_some_and(|t| now_ms.saturating_sub(t) < self.timeout_ms);
        match (fresh(p.last_direct_ms), fresh(p.last_hairpin_ms)) {
            (true, true) => "both",
            (true, false) => "direct",
            (false, true) => "hairpin",
            (false, false) => "none",
        }
    }

    /// The decisions at `now_ms`.
    pub fn tick(&mut self, me: &Me, now_ms: u64) -> Vec<Decision> {
        let mut out = Vec::new();
        // Failures.
        for (id, p) in &mut self.peers {
            if p.failed.is_some() {
                continue;
            }
            let silent = now_ms.saturating_sub(p.last_heard()) >= self.timeout_ms;
            let why = if silent {
                Some(format!(
                    "silent on both paths for {} ms",
                    now_ms.saturating_sub(p.last_heard())
                ))
            } else {
                match p.last.health {
                    Health::Healthy => None,
                    Health::EgressFailed => Some("its egress probes fail".to_string()),
                    Health::Stopping => Some("it is stopping".to_string()),
                }
            };
            if let Some(why) = why {
                p.failed = Some(why.clone());
                out.push(Decision::PeerFailed {
                    peer: id.clone(),
                    why,
                });
            }
        }
        let able = me.healthy && !me.stopping;
        // The lowest-id healthy member alive takes over.
        let taker = self
            .peers
            .iter()
            .filter(|(_, p)| p.failed.is_none() && p.last.health == Health::Healthy)
            .map(|(id, _)| id.as_str())
            .chain(able.then_some(me.instance.as_str()))
            .min()
            .map(str::to_string);
        let i_take = able && taker.as_deref() == Some(me.instance.as_str());
        for (id, p) in &mut self.peers {
            if p.failed.is_none() || p.taken || !i_take {
                continue;
            }
            let tables: Vec<String> = p.last.holds.iter().map(|h| h.item.clone()).collect();
            let egress: Vec<Egress> = p.last.holds_egress.iter().map(|h| h.item.clone()).collect();
            p.taken = true;
            if tables.is_empty() && egress.is_empty() {
                continue;
            }
            out.push(Decision::Take {
                from: id.clone(),
                from_addr: p.last.primary,
                tables,
                egress,
                why: format!("{id} failed: {}", p.failed.clone().unwrap_or_default()),
            });
        }
        // Reclaim: own things a live, healthy peer holds, once this member has been healthy,
        // and the holder heard, for the hold time (a flapping partition does not bounce them).
        let held_enough =
            |since: Option<u64>| since.is_some_and(|t| now_ms.saturating_sub(t) >= self.hold_ms);
        if able && held_enough(me.healthy_since_ms) {
            for (id, p) in &self.peers {
                if p.failed.is_some()
                    || p.last.health != Health::Healthy
                    || !held_enough(Some(p.alive_since_ms))
                {
                    continue;
                }
                let tables: Vec<String> = p
                    .last
                    .holds
                    .iter()
                    .filter(|h| me.owns.contains(&h.item))
                    .map(|h| h.item.clone())
                    .collect();
                let egress: Vec<Egress> = p
                    .last
                    .holds_egress
                    .iter()
                    .filter(|h| me.owns_egress.contains(&h.item.alloc))
                    .map(|h| h.item.clone())
                    .collect();
                if tables.is_empty() && egress.is_empty() {
                    continue;
                }
                let key = format!("reclaim {id} {tables:?} {egress:?}");
                if self
                    .pending
                    .get(&key)
                    .is_some_and(|t| now_ms.saturating_sub(*t) < RETRY_MS)
                {
                    continue;
                }
                self.pending.insert(key, now_ms);
                out.push(Decision::Take {
                    from: id.clone(),
                    from_addr: p.last.primary,
                    tables,
                    egress,
                    why: format!("own, healthy for {} s, held by {id}", self.hold_ms / 1000),
                });
            }
        }
        self.pending
            .retain(|_, t| now_ms.saturating_sub(*t) < RETRY_MS);
        // Release what a live peer claimed later.
        for (id, p) in &self.peers {
            if p.failed.is_some() {
                continue;
            }
            let later = |mine: u64, theirs: u64| {
                theirs > mine || (theirs == mine && id.as_str() < me.instance.as_str())
            };
            let tables: Vec<String> = me
                .holds
                .iter()
                .filter(|h| {
                    p.last
                        .holds
                        .iter()
                        .any(|t| t.item == h.item && later(h.since_ms, t.since_ms))
                })
                .map(|h| h.item.clone())
                .collect();
            let egress: Vec<Egress> = me
                .holds_egress
                .iter()
                .filter(|h| {
                    p.last
                        .holds_egress
                        .iter()
                        .any(|t| t.item.ip == h.item.ip && later(h.since_ms, t.since_ms))
                })
                .map(|h| h.item.clone())
                .collect();
            if !tables.is_empty() || !egress.is_empty() {
                out.push(Decision::Release {
                    to: id.clone(),
                    tables,
                    egress,
                });
            }
        }
        out
    }

    /// The role of each route table this member knows of: `owner` (its own, held here),
    /// `taken-over` (a peer's, held here), `standby` (a live peer's own, held there),
    /// `lent` (its own, held by a peer), `unheld` (its own, held by nobody heard).
    pub fn roles(&self, me: &Me) -> BTreeMap<String, &'static str> {
        let mut out = BTreeMap::new();
        let held_here: BTreeSet<&str> = me.holds.iter().map(|h| h.item.as_str()).collect();
        for p in self.peers.values() {
            for t in &p.last.owns {
                if !held_here.contains(t.as_str()) && p.failed.is_none() {
                    out.insert(t.clone(), "standby");
                }
            }
        }
        for t in &held_here {
            let role = if me.owns.iter().any(|o| o == t) {
                "owner"
            } else {
                "taken-over"
            };
            out.insert((*t).to_string(), role);
        }
        for t in &me.owns {
            if held_here.contains(t.as_str()) {
                continue;
            }
            let lent = self
                .peers
                .values()
                .any(|p| p.failed.is_none() && p.last.holds.iter().any(|h| &h.item == t));
            out.insert(t.clone(), if lent { "lent" } else { "unheld" });
        }
        out
    }
}

#[cfg(test)]
mod tests;

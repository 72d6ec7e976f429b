//! [`CtSync`]: the replication's threads. One follows this namespace's conntrack (a dump, then
//! events; a dump again after an overrun and every [`RESYNC`]) and keeps the local copy of the
//! source-NATed entries. One sender per peer connects to the peer's [`PORT`] (retrying with
//! back-off), sends a snapshot of that copy, then streams its changes. One listener accepts the
//! peers' streams and keeps a [`Cache`] per peer address; a peer whose connection closed keeps
//! its cache until the entries expire, because a takeover happens exactly when the peer is gone.
//! [`CtSync::commit_from`] writes a peer's cached entries into this kernel.
//!
//! Streams are accepted only from the peers [`CtSync::set_peers`] names (the same list it
//! streams to), since a stream becomes conntrack entries at a takeover. A worker thread does
//! what the methods ask (start or stop senders, commit), so every thread and socket is made
//! in the network namespace `start` was called in, whichever thread calls the methods.
//!
//! It lives in the library, not in the binary's `run/`, so that the namespace tests run the
//! very code nat-init runs. Nothing here panics or exits: every failure goes to the `report`
//! callback (nat-init prints it as an `error` line) and is retried.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::cache::Cache;
use super::ctnetlink::Event;
use super::socket::{CommitReport, Ctnl, CtnlError};
use super::wire::{self, Record};
use super::{Entry, Tuple};

/// The TCP port peers stream to.
pub const PORT: u16 = 7472;
/// How often the local copy is dumped again and sent as a new snapshot: conntrack sends no
/// event when a packet only refreshes a timeout, so without it a peer's copy of a busy UDP
/// flow (120 s stream timeout) would expire while the flow lives.
pub const RESYNC: Duration = Duration::from_secs(30);
/// An idle sender writes a heartbeat this often.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A receiver that hears nothing for this long drops the connection (the peer is gone).
const SILENCE: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A connection attempt to a peer that does not answer gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Records queued for one sender; a sender this far behind is dropped and reconnects with a
/// fresh snapshot rather than holding events without bound.
const QUEUE: usize = 65_536;
/// Longest wait of the threads' loops, so they notice [`CtSync`] being dropped.
const TICK: Duration = Duration::from_millis(500);
/// Repeated failures of one kind are reported at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Where failures go: `(what, why)`, as in an `error` line.
pub type Report = Arc<dyn Fn(&str, String) + Send + Sync>;

/// One peer we receive from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundStats {
    pub peer: Ipv4Addr,
    pub cached: usize,
    pub connected: bool,
    pub received: u64,
}

/// One peer we send to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundStats {
    pub peer: Ipv4Addr,
    pub connected: bool,
    pub sent: u64,
}

/// The replication's state at a glance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Source-NATed entries in this kernel, as last seen.
    pub local: usize,
    pub inbound: Vec<InboundStats>,
    pub outbound: Vec<OutboundStats>,
}

#[derive(Default)]
struct Local {
    entries: BTreeMap<Tuple, Entry>,
    subscribers: Vec<SyncSender<Record>>,
}

impl Local {
    /// Sends `r` to every sender; one that is full or gone is dropped (it reconnects and
    /// starts over from a snapshot).
    fn broadcast(&mut self, r: Record) {
        self.subscribers.retain(|tx| match tx.try_send(r) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        });
    }

    fn apply(&mut self, ev: Event) {
        match ev {
            Event::Upsert(e) => {
                self.entries.insert(e.orig, e);
                self.broadcast(Record::Upsert(e));
            }
            Event::Remove(t) => {
                if self.entries.remove(&t).is_some() {
                    self.broadcast(Record::Remove(t));
                }
            }
        }
    }

    fn replace(&mut self, entries: Vec<Entry>) {
        self.entries = entries.into_iter().map(|e| (e.orig, e)).collect();
        let count = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        self.broadcast(Record::SnapshotBegin);
        let all: Vec<Entry> = self.entries.values().copied().collect();
        for e in all {
            self.broadcast(Record::Upsert(e));
        }
        self.broadcast(Record::SnapshotEnd { count });
    }
}

struct Inbound {
    cache: Cache,
    /// The connection that feeds the cache; an older one from the same peer is ignored.
    owner: Option<u64>,
    received: u64,
}

struct Outbound {
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
}

struct Shared {
    port: u16,
    report: Report,
    stop: AtomicBool,
    next_conn: AtomicU64,
    local: Mutex<Local>,
    inbound: Mutex<BTreeMap<Ipv4Addr, Inbound>>,
    outbound: Mutex<BTreeMap<Ipv4Addr, Outbound>>,
}

/// A poisoned lock only means another replication thread panicked mid-update; the maps stay
/// usable, and the NAT must not stop for it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sleeps `d` in ticks, returning early when `stop` is set.
fn nap(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        thread::sleep(left.min(TICK));
    }
}

/// Reports the first failure of a streak, then at most every [`REPORT_EVERY`].
struct Throttled {
    last: Option<Instant>,
}

impl Throttled {
    fn new() -> Self {
        Self { last: None }
    }
    fn report(&mut self, r: &Report, what: &str, why: String) {
        let now = Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= REPORT_EVERY)
        {
            self.last = Some(now);
            r(what, why);
        }
    }
    fn clear(&mut self) {
        self.last = None;
    }
}

/// What [`CtSync`]'s methods ask of its worker thread.
enum Command {
    Peers(Vec<Ipv4Addr>),
    Commit {
        peer: Ipv4Addr,
        nat_addrs: Vec<Ipv4Addr>,
        reply: mpsc::Sender<CommitReport>,
    },
}

/// The replication: see the module documentation. Dropping it stops its threads within a
/// half a second or so (a receiver within the 10 s it waits for a silent peer).
///
/// Every thread and socket is made by the threads [`CtSync::start`] spawns, so they all live
/// in the network namespace of the thread that called `start`, whichever thread calls the
/// methods afterwards.
pub struct CtSync {
    shared: Arc<Shared>,
    commands: Mutex<mpsc::Sender<Command>>,
}

impl CtSync {
    /// Starts the conntrack follower, the listener on [`PORT`] and the worker that starts
    /// senders and commits.
    pub fn start(report: Report) -> CtSync {
        Self::start_on(PORT, report)
    }

    /// [`CtSync::start`] with another port (tests that share a namespace).
    pub fn start_on(port: u16, report: Report) -> CtSync {
        let shared = Arc::new(Shared {
            port,
            report,
            stop: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
            local: Mutex::new(Local::default()),
            inbound: Mutex::new(BTreeMap::new()),
            outbound: Mutex::new(BTreeMap::new()),
        });
        let (tx, rx) = mpsc::channel();
        let mut rx = Some(rx);
        for name in ["ctsync-events", "ctsync-listen", "ctsync-work"] {
            let s = Arc::clone(&shared);
            let rx = if name == "ctsync-work" {
                rx.take()
            } else {
                None
            };
            let spawned = thread::Builder::new()
                .name(name.into())
                .spawn(move || match rx {
                    Some(rx) => work(&s, &rx),
                    None if name == "ctsync-events" => follow(s),
                    None => listen(s),
                });
            if let Err(e) = spawned {
                (shared.report)("conntrack sync", format!("starting {name}: {e}"));
            }
        }
        CtSync {
            shared,
            commands: Mutex::new(tx),
        }
    }

    fn command(&self, c: Command) -> bool {
        let sent = lock(&self.commands).send(c).is_ok();
        if !sent {
            (self.shared.report)("conntrack sync", "its worker thread is gone".into());
        }
        sent
    }

    /// Streams to exactly `peers` from now on: senders to new peers start, senders to peers no
    /// longer listed stop.
    pub fn set_peers(&self, peers: Vec<Ipv4Addr>) {
        self.command(Command::Peers(peers));
    }

    /// Commits the cached entries received from `peer` whose source-NAT address is in
    /// `nat_addrs`, each with the timeout it has left; returns when the kernel answered for
    /// all of them. Refusals are counted and reported.
    pub fn commit_from(&self, peer: Ipv4Addr, nat_addrs: &[Ipv4Addr]) -> CommitReport {
        let (reply, answer) = mpsc::channel();
        let asked = self.command(Command::Commit {
            peer,
            nat_addrs: nat_addrs.to_vec(),
            reply,
        });
        match answer.recv() {
            Ok(r) if asked => r,
            _ => CommitReport {
                first_error: Some("the conntrack sync worker is gone".into()),
                ..CommitReport::default()
            },
        }
    }

    /// Per peer: entries cached, connected, records sent and received. Peers whose connection
    /// closed and whose entries all expired are forgotten here.
    pub fn stats(&self) -> SyncStats {
        let now = Instant::now();
        let mut inbound = lock(&self.shared.inbound);
        inbound.retain(|_, p| {
            p.cache.expire(now);
            p.owner.is_some() || !p.cache.is_empty()
        });
        SyncStats {
            local: lock(&self.shared.local).entries.len(),
            inbound: inbound
                .iter()
                .map(|(peer, p)| InboundStats {
                    peer: *peer,
                    cached: p.cache.len(),
                    connected: p.owner.is_some(),
                    received: p.received,
                })
                .collect(),
            outbound: lock(&self.shared.outbound)
                .iter()
                .map(|(peer, o)| OutboundStats {
                    peer: *peer,
                    connected: o.connected.load(Ordering::Relaxed),
                    sent: o.sent.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }
}

impl Drop for CtSync {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for o in lock(&self.shared.outbound).values() {
            o.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// The worker's thread: peer lists and commits, in the order asked.
fn work(s: &Arc<Shared>, rx: &mpsc::Receiver<Command>) {
    while !s.stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(TICK) {
            Ok(Command::Peers(peers)) => set_peers(s, &peers),
            Ok(Command::Commit {
                peer,
                nat_addrs,
                reply,
            }) => {
                let _ = reply.send(commit_from(s, peer, &nat_addrs));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn set_peers(s: &Arc<Shared>, peers: &[Ipv4Addr]) {
    let mut out = lock(&s.outbound);
    out.retain(|peer, o| {
        let keep = peers.contains(peer);
        if !keep {
            o.stop.store(true, Ordering::Relaxed);
        }
        keep
    });
    for &peer in peers {
        if out.contains_key(&peer) {
            continue;
        }
        let o = Outbound {
            stop: Arc::new(AtomicBool::new(false)),
            connected: Arc::new(AtomicBool::new(false)),
            sent: Arc::new(AtomicU64::new(0)),
        };
        let (s2, stop, connected, sent) = (
            Arc::clone(s),
            Arc::clone(&o.stop),
            Arc::clone(&o.connected),
            Arc::clone(&o.sent),
        );
        match thread::Builder::new()
            .name(format!("ctsync-to-{peer}"))
            .spawn(move || send_to(s2, peer, &stop, &connected, &sent))
        {
            Ok(_) => {
                out.insert(peer, o);
            }
            Err(e) => (s.report)(
                "conntrack sync",
                format!("starting the sender to {peer}: {e} (retried at the next peer list)"),
            ),
        }
    }
}

fn commit_from(s: &Shared, peer: Ipv4Addr, nat_addrs: &[Ipv4Addr]) -> CommitReport {
    let now = Instant::now();
    let entries = match lock(&s.inbound).get_mut(&peer) {
        Some(p) => {
            p.cache.expire(now);
            p.cache.entries_for(nat_addrs, now)
        }
        None => Vec::new(),
    };
    if entries.is_empty() {
        return CommitReport::default();
    }
    let result = Ctnl::open(Duration::from_secs(5)).and_then(|mut c| c.commit(&entries));
    let what = "conntrack commit";
    match result {
        Ok(r) => {
            if let Some(first) = &r.first_error {
                (s.report)(
                    what,
                    format!(
                        "{} of {} entries from {peer} refused, first: {first}",
                        r.failed,
                        entries.len()
                    ),
                );
            }
            r
        }
        Err(e) => {
            (s.report)(what, format!("entries from {peer}: {e}"));
            CommitReport {
                failed: entries.len(),
                first_error: Some(e.to_string()),
                ..CommitReport::default()
            }
        }
    }
}

/// Dumps the kernel's entries into the local copy and sends them to every sender as a
/// snapshot. Returns whether it worked.
fn resync(s: &Shared, throttle: &mut Throttled) -> bool {
    let dumped = Ctnl::open(Duration::from_secs(5)).and_then(|mut c| c.dump());
    match dumped {
        Ok((entries, bad)) => {
            if let Some(first) = bad.first() {
                throttle.report(
                    &s.report,
                    "conntrack dump",
                    format!("{} entries skipped, first: {first}", bad.len()),
                );
            }
            lock(&s.local).replace(entries);
            true
        }
        Err(e) => {
            throttle.report(&s.report, "conntrack dump", e.to_string());
            false
        }
    }
}

/// The conntrack follower's thread.
fn follow(s: Arc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    let mut throttle = Throttled::new();
    while !s.stop.load(Ordering::Relaxed) {
        // Subscribed before the dump, so no change falls between the two.
        let mut events = match Ctnl::subscribe(TICK) {
            Ok(e) => e,
            Err(e) => {
                throttle.report(&s.report, "conntrack events", e.to_string());
                nap(backoff, &s.stop);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let mut synced = resync(&s, &mut throttle);
        let mut last_sync = Instant::now();
        // The wait before the next dump while the copy is stale: none after an overrun, more
        // after each failed dump.
        let mut retry = if synced { Duration::ZERO } else { BACKOFF_MIN };
        while !s.stop.load(Ordering::Relaxed) {
            match events.events() {
                Ok((evs, bad)) => {
                    if let Some(first) = bad.first() {
                        throttle.report(&s.report, "conntrack events", first.to_string());
                    }
                    if !evs.is_empty() {
                        let mut local = lock(&s.local);
                        for ev in evs {
                            local.apply(ev);
                        }
                    }
                }
                Err(CtnlError::Overrun) => {
                    throttle.report(
                        &s.report,
                        "conntrack events",
                        CtnlError::Overrun.to_string() + "; resyncing",
                    );
                    synced = false;
                    retry = Duration::ZERO;
                }
                Err(e) => {
                    throttle.report(&s.report, "conntrack events", e.to_string());
                    break;
                }
            }
            let due = if synced { RESYNC } else { retry };
            if last_sync.elapsed() >= due {
                synced = resync(&s, &mut throttle);
                last_sync = Instant::now();
                retry = if synced {
                    throttle.clear();
                    backoff = BACKOFF_MIN;
                    Duration::ZERO
                } else {
                    (retry * 2).clamp(BACKOFF_MIN, BACKOFF_MAX)
                };
            }
        }
        nap(backoff, &s.stop);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One sender's thread: connect, snapshot, stream; again with back-off after a failure.
fn send_to(
    s: Arc<Shared>,
    peer: Ipv4Addr,
    stop: &AtomicBool,
    connected: &AtomicBool,
    sent: &AtomicU64,
) {
    let mut backoff = BACKOFF_MIN;
    let mut throttle = Throttled::new();
    let what = format!("conntrack sync to {peer}");
    let addr = SocketAddr::V4(SocketAddrV4::new(peer, s.port));
    let stopped = || stop.load(Ordering::Relaxed) || s.stop.load(Ordering::Relaxed);
    while !stopped() {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(conn) => {
                connected.store(true, Ordering::Relaxed);
                let result = stream(&s, conn, &stopped, sent);
                connected.store(false, Ordering::Relaxed);
                match result {
                    // Dropped for falling behind: start over at once with a snapshot.
                    Ok(()) => continue,
                    Err(e) => throttle.report(&s.report, &what, e.to_string()),
                }
            }
            Err(e) => throttle.report(&s.report, &what, format!("connecting: {e}")),
        }
        nap(backoff, stop);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Streams to one connected peer until a write fails (`Err`), the sender fell behind or was
/// stopped (`Ok`).
fn stream(
    s: &Shared,
    conn: TcpStream,
    stopped: &dyn Fn() -> bool,
    sent: &AtomicU64,
) -> io::Result<()> {
    conn.set_nodelay(true)?;
    conn.set_write_timeout(Some(SILENCE))?;
    let mut out = BufWriter::new(conn);
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    // Registered under the lock the follower applies events with, so the snapshot and the
    // changes after it meet without a gap.
    let snapshot: Vec<Entry> = {
        let mut local = lock(&s.local);
        local.subscribers.push(tx);
        local.entries.values().copied().collect()
    };
    let mut buf = Vec::with_capacity(64 * 1024);
    buf.extend_from_slice(&wire::HELLO);
    wire::encode(&Record::SnapshotBegin, &mut buf);
    for e in &snapshot {
        wire::encode(&Record::Upsert(*e), &mut buf);
        if buf.len() >= 60 * 1024 {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    let count = u32::try_from(snapshot.len()).unwrap_or(u32::MAX);
    wire::encode(&Record::SnapshotEnd { count }, &mut buf);
    out.write_all(&buf)?;
    out.flush()?;
    sent.fetch_add(u64::from(count) + 2, Ordering::Relaxed);
    while !stopped() {
        let first = match rx.recv_timeout(HEARTBEAT) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Record::Heartbeat,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        buf.clear();
        wire::encode(&first, &mut buf);
        let mut n = 1;
        while buf.len() < 60 * 1024 {
            match rx.try_recv() {
                Ok(r) => {
                    wire::encode(&r, &mut buf);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        out.write_all(&buf)?;
        out.flush()?;
        sent.fetch_add(n, Ordering::Relaxed);
    }
    Ok(())
}

/// The listener's thread: accepts peers' streams, one receiver thread each.
fn listen(s: Arc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    let mut throttle = Throttled::new();
    let what = "conntrack sync listener";
    let mut refused: BTreeMap<Ipv4Addr, Throttled> = BTreeMap::new();
    while !s.stop.load(Ordering::Relaxed) {
        let listener = match TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, s.port)) {
            Ok(l) => l,
            Err(e) => {
                throttle.report(&s.report, what, format!("binding port {}: {e}", s.port));
                nap(backoff, &s.stop);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        while !s.stop.load(Ordering::Relaxed) {
            let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            let tick = PollTimeout::try_from(TICK.as_millis() as i32).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, tick) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => {
                    throttle.report(&s.report, what, format!("poll: {e}"));
                    break;
                }
            }
            match listener.accept() {
                Ok((conn, SocketAddr::V4(from))) => {
                    let peer = *from.ip();
                    // A stream becomes conntrack entries on a takeover: only the peers this
                    // instance was told about may send one.
                    if !lock(&s.outbound).contains_key(&peer) {
                        // Throttled per address, so one stranger does not hide another.
                        if refused.len() >= 1024 {
                            refused.clear();
                        }
                        refused.entry(peer).or_insert_with(Throttled::new).report(
                            &s.report,
                            what,
                            format!("refused {from}: not a peer"),
                        );
                        drop(conn);
                        continue;
                    }
                    let s2 = Arc::clone(&s);
                    if let Err(e) = thread::Builder::new()
                        .name(format!("ctsync-from-{peer}"))
                        .spawn(move || receive(&s2, peer, conn))
                    {
                        throttle.report(&s.report, what, format!("receiver for {peer}: {e}"));
                    }
                }
                Ok((_, from)) => {
                    throttle.report(&s.report, what, format!("refused non-IPv4 peer {from}"))
                }
                Err(e) => throttle.report(&s.report, what, format!("accept: {e}")),
            }
        }
        nap(backoff, &s.stop);
    }
}

/// One receiver's thread: reads `peer`'s stream into its cache until it ends.
fn receive(s: &Shared, peer: Ipv4Addr, mut conn: TcpStream) {
    let id = s.next_conn.fetch_add(1, Ordering::Relaxed);
    let result = read_stream(s, peer, id, &mut conn);
    let mut inbound = lock(&s.inbound);
    if let Some(p) = inbound.get_mut(&peer)
        && p.owner == Some(id)
    {
        p.owner = None;
        p.cache.abandon_snapshot();
    }
    drop(inbound);
    if let Err(e) = result {
        (s.report)(&format!("conntrack sync from {peer}"), e);
    }
}

/// Reads records until the peer closes (`Ok`), falls silent or sends garbage (`Err`).
fn read_stream(s: &Shared, peer: Ipv4Addr, id: u64, conn: &mut TcpStream) -> Result<(), String> {
    conn.set_read_timeout(Some(SILENCE))
        .map_err(|e| e.to_string())?;
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    let mut hello = false;
    while !s.stop.load(Ordering::Relaxed) {
        let n = match conn.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "silent for {} s, connection dropped",
                    SILENCE.as_secs()
                ));
            }
            Err(e) => return Err(format!("reading: {e}")),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        if !hello {
            if !wire::check_hello(&buf).map_err(|e| e.to_string())? {
                continue;
            }
            hello = true;
            at = wire::HELLO.len();
            // Only a stream that opens right takes over the peer's cache.
            lock(&s.inbound)
                .entry(peer)
                .or_insert_with(|| Inbound {
                    cache: Cache::new(),
                    owner: None,
                    received: 0,
                })
                .owner = Some(id);
        }
        let now = Instant::now();
        let mut inbound = lock(&s.inbound);
        let Some(p) = inbound.get_mut(&peer).filter(|p| p.owner == Some(id)) else {
            return Err("a newer connection from the same peer took over".into());
        };
        while let Some((r, used)) = wire::decode(&buf[at..]).map_err(|e| e.to_string())? {
            p.cache.apply(&r, now);
            p.received += 1;
            at += used;
        }
        drop(inbound);
        buf.drain(..at);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::PROTO_UDP;

    fn entry(sport: u16) -> Entry {
        Entry {
            orig: Tuple {
                proto: PROTO_UDP,
                src: Ipv4Addr::new(10, 0, 1, 2),
                dst: Ipv4Addr::new(198, 51, 100, 2),
                sport,
                dport: 53,
            },
            nat_addr: Ipv4Addr::new(198, 51, 100, 1),
            nat_port: sport,
            tcp_state: None,
            status: 6,
            timeout: 30,
        }
    }

    #[test]
    fn local_copy_fans_out_changes_and_snapshots() {
        let mut local = Local::default();
        let (tx, rx) = mpsc::sync_channel(16);
        local.subscribers.push(tx);
        local.apply(Event::Upsert(entry(1)));
        local.apply(Event::Remove(entry(2).orig)); // not held: nothing to tell
        local.apply(Event::Remove(entry(1).orig));
        local.replace(vec![entry(3), entry(4)]);
        let got: Vec<Record> = rx.try_iter().collect();
        assert_eq!(
            got,
            vec![
                Record::Upsert(entry(1)),
                Record::Remove(entry(1).orig),
                Record::SnapshotBegin,
                Record::Upsert(entry(3)),
                Record::Upsert(entry(4)),
                Record::SnapshotEnd { count: 2 },
            ]
        );
        assert_eq!(local.entries.len(), 2);
    }

    #[test]
    fn a_sender_that_falls_behind_is_dropped() {
        let mut local = Local::default();
        let (slow, _slow_rx) = mpsc::sync_channel(1);
        let (gone, gone_rx) = mpsc::sync_channel(8);
        let (fine, fine_rx) = mpsc::sync_channel(8);
        local.subscribers = vec![slow, gone, fine];
        drop(gone_rx);
        local.apply(Event::Upsert(entry(1)));
        assert_eq!(local.subscribers.len(), 2);
        local.apply(Event::Upsert(entry(2)));
        assert_eq!(local.subscribers.len(), 1);
        assert_eq!(fine_rx.try_iter().count(), 2);
    }
}

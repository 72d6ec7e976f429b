//! The ctnetlink socket, the edge between the replication and the kernel: a full dump of the
//! source-NATed entries, the event subscription that follows their changes, and the commit
//! that recreates a peer's entries here.

use std::io;
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr, protocols};

use super::Entry;
use super::ctnetlink::{self, CodecError, Event, NLMSG_DONE, NLMSG_ERROR};

/// NFNLGRP_CONNTRACK_NEW, _UPDATE and _DESTROY.
const GROUPS: [u32; 3] = [1, 2, 3];
/// NFNLGRP_CONNTRACK_DESTROY alone: a flow's last counts, for the metrics.
const DESTROY_GROUP: [u32; 1] = [3];
/// A dump datagram is at most a page or two; events come one to a datagram.
const RECV_BUF: usize = 64 * 1024;
/// The event socket's kernel buffer: room for a burst of events before an overrun (ENOBUFS),
/// which costs a full resync.
const EVENT_RCVBUF: usize = 8 * 1024 * 1024;
/// Requests a commit sends before reading their ACKs: the ACKs must fit the receive buffer.
const COMMIT_BATCH: usize = 64;
const EEXIST: i32 = 17;
const EBUSY: i32 = 16;
const ENOBUFS: i32 = 105;

/// A failed ctnetlink exchange, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum CtnlError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{what}: kernel answered errno {errno} ({})", crate::netlink::errno_text(*errno))]
    Kernel { what: &'static str, errno: i32 },
    #[error("{what}: {source}")]
    Codec {
        what: &'static str,
        #[source]
        source: CodecError,
    },
    /// The kernel dropped events (ENOBUFS): the caller's copy is stale until a new dump.
    #[error("conntrack events: the kernel dropped events (receive buffer overrun)")]
    Overrun,
}

pub type Result<T, E = CtnlError> = std::result::Result<T, E>;

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> CtnlError {
    move |source| CtnlError::Io { what, source }
}

fn codec(what: &'static str) -> impl FnOnce(CodecError) -> CtnlError {
    move |source| CtnlError::Codec { what, source }
}

/// What one commit did, entry by entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Entries the kernel created.
    pub committed: usize,
    /// Entries the kernel already had (EEXIST), left as they were.
    pub already_present: usize,
    /// Entries the kernel refused otherwise.
    pub failed: usize,
    /// The first refusal, for the error line.
    pub first_error: Option<String>,
}

/// A ctnetlink socket, for requests or (after [`Ctnl::subscribe`]) events.
pub struct Ctnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Ctnl {
    /// A request socket; its receives time out after `timeout`.
    pub fn open(timeout: Duration) -> Result<Self> {
        let what = "opening ctnetlink socket";
        let mut sock = Socket::new(protocols::NETLINK_NETFILTER).map_err(io_err(what))?;
        sock.bind(&SocketAddr::new(0, 0)).map_err(io_err(what))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(io_err(what))?;
        // Errors then carry only the request's header, so a batch's ACKs stay small.
        let _ = sock.set_cap_ack(true);
        let tv = nix::sys::time::TimeVal::new(
            i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            i64::from(timeout.subsec_micros()),
        );
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
            .map_err(|e| io_err(what)(io::Error::from(e)))?;
        Ok(Self {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// An event socket: joins the conntrack groups with a large receive buffer. Receives time
    /// out after `timeout`, so the caller's loop can do its periodic work.
    pub fn subscribe(timeout: Duration) -> Result<Self> {
        Self::subscribe_to(timeout, &GROUPS)
    }

    /// An event socket for DESTROY events only (see [`Ctnl::subscribe`]).
    pub fn subscribe_destroy(timeout: Duration) -> Result<Self> {
        Self::subscribe_to(timeout, &DESTROY_GROUP)
    }

    fn subscribe_to(timeout: Duration, groups: &[u32]) -> Result<Self> {
        let what = "subscribing to conntrack events";
        let s = Self::open(timeout)?;
        // As root the forced size ignores rmem_max; otherwise the plain one is capped by it.
        let size = libc::c_int::try_from(EVENT_RCVBUF).unwrap_or(libc::c_int::MAX);
        let forced = nix::sys::socket::setsockopt(
            &s.sock,
            nix::sys::socket::sockopt::RcvBufForce,
            &EVENT_RCVBUF,
        );
        if forced.is_err() {
            s.sock.set_rx_buf_sz(size).map_err(io_err(what))?;
        }
        for &g in groups {
            s.sock.add_membership(g).map_err(io_err(what))?;
        }
        Ok(s)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn send(&mut self, bytes: &[u8], what: &'static str) -> Result<()> {
        let n = self.sock.send(bytes, 0).map_err(io_err(what))?;
        if n != bytes.len() {
            return Err(io_err(what)(io::Error::other(format!(
                "short send: {n} of {} bytes",
                bytes.len()
            ))));
        }
        Ok(())
    }

    /// One datagram into `self.buf`; `Ok(false)` when the receive timed out.
    fn recv(&mut self, what: &'static str) -> Result<bool> {
        self.buf.clear();
        self.buf.reserve(RECV_BUF);
        match self.sock.recv(&mut self.buf, libc::MSG_TRUNC) {
            Ok(n) if n > self.buf.len() => Err(io_err(what)(io::Error::other(format!(
                "datagram of {n} bytes truncated"
            )))),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.raw_os_error() == Some(ENOBUFS) => Err(CtnlError::Overrun),
            Err(e) => Err(io_err(what)(e)),
        }
    }

    /// Sends a dump `request` (made for a sequence number) and hands each reply message's
    /// type and payload to `each` until the kernel says it is done; what `each` could not
    /// decode it returns as an error, collected beside the others.
    fn dump_each(
        &mut self,
        request: impl FnOnce(u32) -> Vec<u8>,
        what: &'static str,
        mut each: impl FnMut(u16, &[u8]) -> Result<(), CodecError>,
    ) -> Result<Vec<CodecError>> {
        let seq = self.next_seq();
        self.send(&request(seq), what)?;
        let mut bad = Vec::new();
        loop {
            if !self.recv(what)? {
                return Err(io_err(what)(io::Error::from(io::ErrorKind::TimedOut)));
            }
            for m in ctnetlink::split(&self.buf).map_err(codec(what))? {
                if m.seq != seq {
                    continue;
                }
                match m.kind {
                    NLMSG_DONE => return Ok(bad),
                    NLMSG_ERROR => {
                        let errno = ctnetlink::error_code(m.payload).map_err(codec(what))?;
                        return Err(CtnlError::Kernel { what, errno });
                    }
                    kind => {
                        if let Err(e) = each(kind, m.payload) {
                            bad.push(e);
                        }
                    }
                }
            }
        }
    }

    /// Every source-NATed IPv4 entry of this namespace. Entries that do not decode are
    /// returned as errors beside the others, which still count.
    pub fn dump(&mut self) -> Result<(Vec<Entry>, Vec<CodecError>)> {
        let mut entries = Vec::new();
        let bad = self.dump_each(
            ctnetlink::dump_request,
            "dumping conntrack entries",
            |kind, payload| {
                if let Some(Event::Upsert(e)) = ctnetlink::parse(kind, payload)? {
                    entries.push(e);
                }
                Ok(())
            },
        )?;
        Ok((entries, bad))
    }

    /// Every source-NATed IPv4 entry's traffic since the previous such dump (or since the
    /// entry began), zeroing the counters as it reads them; each entry is handed to `each`
    /// as it arrives, so a large table is never held. Returns the entries that did not decode.
    pub fn traffic_dump_zero(
        &mut self,
        mut each: impl FnMut(ctnetlink::Traffic),
    ) -> Result<Vec<CodecError>> {
        self.dump_each(
            ctnetlink::ctrzero_dump_request,
            "dumping conntrack counters",
            |kind, payload| {
                if let Some(t) = ctnetlink::parse_traffic(kind, payload)? {
                    each(t);
                }
                Ok(())
            },
        )
    }

    /// The traffic in the events of one datagram (`Ok(false)` when the wait timed out), each
    /// handed to `each`; malformed messages are pushed to `bad`.
    pub fn traffic_events(
        &mut self,
        bad: &mut Vec<CodecError>,
        mut each: impl FnMut(ctnetlink::Traffic),
    ) -> Result<bool> {
        let what = "reading conntrack events";
        if !self.recv(what)? {
            return Ok(false);
        }
        for m in ctnetlink::split(&self.buf).map_err(codec(what))? {
            match ctnetlink::parse_traffic(m.kind, m.payload) {
                Ok(Some(t)) => each(t),
                Ok(None) => {}
                Err(e) => bad.push(e),
            }
        }
        Ok(true)
    }

    /// The events of one datagram (an empty list when the wait timed out). Malformed messages
    /// are returned beside the others.
    pub fn events(&mut self) -> Result<(Vec<Event>, Vec<CodecError>)> {
        let what = "reading conntrack events";
        let (mut events, mut bad) = (Vec::new(), Vec::new());
        if !self.recv(what)? {
            return Ok((events, bad));
        }
        for m in ctnetlink::split(&self.buf).map_err(codec(what))? {
            match ctnetlink::parse(m.kind, m.payload) {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => {}
                Err(e) => bad.push(e),
            }
        }
        Ok((events, bad))
    }

    /// Creates `entries` in the kernel, each with its own timeout; an entry the kernel already
    /// has is counted, not an error, and one refusal does not stop the others. Only the
    /// socket itself failing is an `Err`.
    pub fn commit(&mut self, entries: &[Entry]) -> Result<CommitReport> {
        let mut report = CommitReport::default();
        let refused = self.create(entries, true, &mut report)?;
        if !refused.is_empty() {
            // A kernel that checks CTA_STATUS before it marks the entry confirmed: without the
            // status the entry is still created, and its first reply sets SEEN_REPLY again.
            let again: Vec<Entry> = refused.iter().map(|&i| entries[i]).collect();
            self.create(&again, false, &mut report)?;
        }
        Ok(report)
    }

    /// One pass of [`Ctnl::commit`]; with `with_status`, the EBUSY refusals are not counted
    /// but returned (their indexes) for a pass without CTA_STATUS.
    fn create(
        &mut self,
        entries: &[Entry],
        with_status: bool,
        report: &mut CommitReport,
    ) -> Result<Vec<usize>> {
        let what = "committing conntrack entries";
        let mut busy = Vec::new();
        for (n, chunk) in entries.chunks(COMMIT_BATCH).enumerate() {
            let mut bytes = Vec::with_capacity(chunk.len() * 200);
            let mut pending = Vec::with_capacity(chunk.len());
            for (i, e) in chunk.iter().enumerate() {
                let seq = self.next_seq();
                bytes.extend(ctnetlink::new_request(
                    e,
                    e.timeout.max(1),
                    seq,
                    with_status,
                ));
                pending.push((seq, n * COMMIT_BATCH + i));
            }
            self.send(&bytes, what)?;
            while !pending.is_empty() {
                if !self.recv(what)? {
                    return Err(io_err(what)(io::Error::from(io::ErrorKind::TimedOut)));
                }
                for m in ctnetlink::split(&self.buf).map_err(codec(what))? {
                    if m.kind != NLMSG_ERROR {
                        continue;
                    }
                    let Some(at) = pending.iter().position(|(s, _)| *s == m.seq) else {
                        continue;
                    };
                    let (_, index) = pending.swap_remove(at);
                    match ctnetlink::error_code(m.payload).map_err(codec(what))? {
                        0 => report.committed += 1,
                        EEXIST => report.already_present += 1,
                        EBUSY if with_status => busy.push(index),
                        errno => {
                            report.failed += 1;
                            report.first_error.get_or_insert_with(|| {
                                CtnlError::Kernel { what, errno }.to_string()
                            });
                        }
                    }
                }
            }
        }
        Ok(busy)
    }
}

//! The DHCP client's I/O edge. Until bound: an AF_PACKET datagram socket on the interface
//! (the client has no address to send from), with a BPF filter so only UDP to port 68 is copied
//! to us. Once bound: an ordinary UDP socket on port 68 tied to the interface. [`Client`] owns
//! the [`Machine`] and whichever socket its state needs, and runs one step at a time so the
//! caller's loop can do other periodic work.

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
};

use super::frame::{self, CLIENT_PORT, SERVER_PORT};
use super::machine::{self, Action, Event, Lease, Machine, State, Transmit};
use super::random::KernelRandom;

/// Receive buffer: a full Ethernet frame's IP packet.
const RECV_BUF: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("opening the raw DHCP socket on ifindex {ifindex}: {source}")]
    RawSocket { ifindex: u32, source: io::Error },
    #[error("opening the UDP DHCP socket on {ifname}: {source}")]
    UdpSocket { ifname: String, source: io::Error },
    #[error("sending DHCP {what}: {source}")]
    Send {
        what: &'static str,
        source: io::Error,
    },
    #[error("receiving DHCP: {source}")]
    Recv { source: io::Error },
    #[error("reading the clock: {0}")]
    Clock(nix::Error),
    #[error("reading the kernel's random source (getrandom): {0}; xids come from the clock")]
    Random(io::Error),
}

/// A lease change for the caller to carry out on the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    /// Add (or refresh) the address, prefix route, default route, MTU.
    Apply(Lease),
    /// Remove the address and what came with it.
    Drop(Lease),
}

/// What one [`Client::step`] did. Errors do not stop the client: it retransmits on its own
/// schedule; the caller logs them.
#[derive(Debug, Default)]
pub struct Step {
    pub changes: Vec<LeaseChange>,
    pub errors: Vec<DhcpError>,
}

/// Classic BPF over the IP packet (SOCK_DGRAM packet sockets start at the network header):
/// accept unfragmented UDP to port 68, drop the rest. Without it every forwarded packet would
/// be copied to this socket.
fn dhcp_filter() -> [libc::sock_filter; 9] {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    [
        op(0x30, 0, 0, 9),                      // ldb [9]            protocol
        op(0x15, 0, 6, 17),                     // jeq #17 ? next : drop
        op(0x28, 0, 0, 6),                      // ldh [6]            flags + fragment offset
        op(0x45, 4, 0, 0x1fff),                 // jset #0x1fff ? drop : next
        op(0xb1, 0, 0, 0),                      // ldxb 4*([0]&0xf)   IP header length
        op(0x48, 0, 0, 2),                      // ldh [x+2]          UDP destination port
        op(0x15, 0, 1, u32::from(CLIENT_PORT)), // jeq #68 ? accept : drop
        op(0x06, 0, 0, 0xffff),                 // accept
        op(0x06, 0, 0, 0),                      // drop
    ]
}

/// The AF_PACKET socket used before the client has an address.
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: u32,
}

fn sockaddr_ll(ifindex: u32, broadcast: bool) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    sa.sll_ifindex = ifindex as i32;
    if broadcast {
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    }
    sa
}

impl RawSocket {
    pub fn open(ifindex: u32) -> io::Result<RawSocket> {
        let proto = i32::from((libc::ETH_P_IP as u16).to_be());
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                proto,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let filter = dhcp_filter();
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `filter`, both alive for the call; the kernel copies them.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&raw const prog).cast(),
                size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let sa = sockaddr_ll(ifindex, false);
        // SAFETY: `sa` is a valid sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sa).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawSocket { fd, ifindex })
    }

    /// Sends `payload` from 0.0.0.0:68 to 255.255.255.255:67 in an Ethernet broadcast.
    pub fn send_broadcast(&self, payload: &[u8]) -> io::Result<()> {
        let packet = frame::build(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            CLIENT_PORT,
            SERVER_PORT,
            payload,
        )
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "DHCP message too large"))?;
        let sa = sockaddr_ll(self.ifindex, true);
        // SAFETY: `packet` and `sa` are valid for the lengths passed.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const sa).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One received IP packet addressed to this host or broadcast (not our own transmissions),
    /// or `None` when nothing is queued.
    pub fn recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<Option<&'b [u8]>> {
        loop {
            // SAFETY: as for `sockaddr_ll`: zero is valid.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut sa_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `buf`, `sa` and `sa_len` are valid for writing for the sizes passed.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&raw mut sa).cast(),
                    &raw mut sa_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            if sa.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let n = (n as usize).min(buf.len());
            return Ok(Some(&buf[..n]));
        }
    }
}

/// The UDP socket on port 68 used once bound: wildcard address (so broadcast replies while
/// rebinding arrive too) tied to the interface, sending from the leased address.
fn open_udp(ifname: &str) -> io::Result<UdpSocket> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::Broadcast, &true)?;
    setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(ifname),
    )?;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT)),
    )?;
    Ok(UdpSocket::from(fd))
}

/// A DHCP client on one interface: the machine plus its sockets.
pub struct Client {
    ifname: String,
    ifindex: u32,
    machine: Machine<KernelRandom>,
    raw: Option<RawSocket>,
    udp: Option<UdpSocket>,
    buf: Vec<u8>,
}

impl Client {
    /// A client for interface `ifname` (its final name: the UDP socket binds to it by name)
    /// with index `ifindex` and MAC `mac`; xids and jitter come from the kernel.
    pub fn new(ifname: &str, ifindex: u32, mac: [u8; 6]) -> Client {
        Client {
            ifname: ifname.to_string(),
            ifindex,
            machine: Machine::new(mac, KernelRandom::new()),
            raw: None,
            udp: None,
            buf: vec![0; RECV_BUF],
        }
    }

    pub fn machine(&self) -> &Machine<KernelRandom> {
        &self.machine
    }

    /// Starts a renewal at once if bound (after a link flap, say).
    pub fn renew_now(&mut self) -> Step {
        let mut step = Step::default();
        match now_ms() {
            Ok(now) => {
                let actions = self.machine.renew_now(now);
                self.ensure_sockets(&mut step);
                self.perform(actions, &mut step);
            }
            Err(e) => step.errors.push(e),
        }
        step
    }

    /// Runs due timers, then waits up to `max_wait` for a reply or the next deadline, then
    /// feeds what arrived. Returns lease changes to apply, in order.
    pub fn step(&mut self, max_wait: Duration) -> Step {
        let mut step = Step::default();
        if let Err(e) = self.step_inner(max_wait, &mut step) {
            step.errors.push(e);
        }
        step
    }

    fn step_inner(&mut self, max_wait: Duration, step: &mut Step) -> Result<(), DhcpError> {
        self.ensure_sockets(step);
        let now = now_ms()?;
        if now >= self.machine.deadline_ms() {
            let actions = self.machine.handle(now, Event::Timer);
            self.ensure_sockets(step);
            self.perform(actions, step);
        }
        let now = now_ms()?;
        let until_deadline = self.machine.deadline_ms().saturating_sub(now);
        let max_wait_ms = u64::try_from(max_wait.as_millis()).unwrap_or(u64::MAX);
        let wait_ms = until_deadline.min(max_wait_ms).min(i32::MAX as u64);
        let timeout = PollTimeout::try_from(wait_ms as i32).unwrap_or(PollTimeout::MAX);
        let readable = {
            let mut fds: Vec<PollFd<'_>> = Vec::new();
            if let Some(r) = &self.raw {
                fds.push(PollFd::new(r.fd.as_fd(), PollFlags::POLLIN));
            }
            if let Some(u) = &self.udp {
                fds.push(PollFd::new(u.as_fd(), PollFlags::POLLIN));
            }
            if fds.is_empty() {
                // No socket could be opened: just wait, the next step retries.
                std::thread::sleep(Duration::from_millis(wait_ms));
                false
            } else {
                match poll(&mut fds, timeout) {
                    Ok(n) => n > 0,
                    Err(nix::errno::Errno::EINTR) => false,
                    Err(e) => return Err(DhcpError::Recv { source: e.into() }),
                }
            }
        };
        if readable {
            self.drain(step)?;
        }
        Ok(())
    }

    /// Feeds every queued packet to the machine.
    fn drain(&mut self, step: &mut Step) -> Result<(), DhcpError> {
        loop {
            let msg = if let Some(raw) = &self.raw {
                match raw.recv(&mut self.buf) {
                    Ok(Some(p)) => frame::parse(p, CLIENT_PORT)
                        .and_then(|d| machine::decode(d.payload))
                        .map(Some),
                    Ok(None) => None,
                    Err(source) => return Err(DhcpError::Recv { source }),
                }
            } else if let Some(udp) = &self.udp {
                match udp.recv_from(&mut self.buf) {
                    Ok((n, _)) => Some(self.buf.get(..n).and_then(machine::decode)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => Some(None),
                    Err(source) => return Err(DhcpError::Recv { source }),
                }
            } else {
                None
            };
            // None: queue empty. Some(None): something that was not for us.
            let Some(msg) = msg else { return Ok(()) };
            let Some(msg) = msg else { continue };
            let now = now_ms()?;
            let actions = self.machine.handle(now, Event::Packet(&msg));
            self.ensure_sockets(step);
            self.perform(actions, step);
        }
    }

    /// Opens the socket the state needs and closes the other.
    fn ensure_sockets(&mut self, step: &mut Step) {
        let bound = matches!(
            self.machine.state(),
            State::Bound | State::Renewing | State::Rebinding
        );
        if bound {
            self.raw = None;
            if self.udp.is_none() {
                match open_udp(&self.ifname) {
                    Ok(u) => self.udp = Some(u),
                    Err(source) => step.errors.push(DhcpError::UdpSocket {
                        ifname: self.ifname.clone(),
                        source,
                    }),
                }
            }
        } else {
            self.udp = None;
            if self.raw.is_none() {
                match RawSocket::open(self.ifindex) {
                    Ok(r) => self.raw = Some(r),
                    Err(source) => step.errors.push(DhcpError::RawSocket {
                        ifindex: self.ifindex,
                        source,
                    }),
                }
            }
        }
    }

    fn perform(&mut self, actions: Vec<Action>, step: &mut Step) {
        if let Some(e) = self.machine.random_mut().take_failure() {
            step.errors.push(DhcpError::Random(e));
        }
        for a in actions {
            match a {
                Action::Apply(l) => step.changes.push(LeaseChange::Apply(l)),
                Action::Drop(l) => step.changes.push(LeaseChange::Drop(l)),
                Action::Send(Transmit::Raw(payload)) => {
                    let r = match &self.raw {
                        Some(raw) => raw.send_broadcast(&payload),
                        None => Err(io::Error::new(io::ErrorKind::NotConnected, "no raw socket")),
                    };
                    if let Err(source) = r {
                        step.errors.push(DhcpError::Send {
                            what: "broadcast",
                            source,
                        });
                    }
                }
                Action::Send(Transmit::Udp { dst, payload }) => {
                    let r = match &self.udp {
                        Some(u) => u
                            .send_to(&payload, SocketAddrV4::new(dst, SERVER_PORT))
                            .map(|_| ()),
                        None => Err(io::Error::new(io::ErrorKind::NotConnected, "no UDP socket")),
                    };
                    if let Err(source) = r {
                        step.errors.push(DhcpError::Send {
                            what: "renewal",
                            source,
                        });
                    }
                }
            }
        }
    }
}

/// The machine's clock: milliseconds of CLOCK_BOOTTIME, which keeps counting across suspend
/// so lease times stay true.
pub fn now_ms() -> Result<u64, DhcpError> {
    crate::report::boot_elapsed_ms().map_err(DhcpError::Clock)
}

#[cfg(test)]
mod tests;

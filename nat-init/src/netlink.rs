//! Netlink at the edge: a small synchronous request/ACK transport shared by rtnetlink and
//! nf_tables, and [`Rtnl`], which lists and configures links, IPv4 addresses and routes.
//! No `ip` binary exists on the appliance, so this is the only way the interface gets set up.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkDeserializable,
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, CacheInfo};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols};

use crate::cidr::Ipv4Cidr;

/// Replies larger than this would be truncated; the kernel's dump chunks are far smaller.
const RECV_BUF: usize = 256 * 1024;
/// A healthy kernel answers in microseconds; this only stops a wedged socket from hanging the service.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed netlink exchange, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{what}: kernel answered errno {errno} ({}){}",
        errno_text(*errno),
        message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
    )]
    Kernel {
        what: String,
        errno: i32,
        /// The kernel's extended-ACK text, when it gave one.
        message: Option<String>,
    },
    #[error("{what}: cannot decode reply: {detail}")]
    Decode { what: String, detail: String },
}

impl NetlinkError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            Self::Io { source, .. } => source.raw_os_error(),
            Self::Decode { .. } => None,
        }
    }
}

pub type Result<T, E = NetlinkError> = std::result::Result<T, E>;

fn io_err(what: &str) -> impl FnOnce(io::Error) -> NetlinkError + '_ {
    move |source| NetlinkError::Io {
        what: what.to_string(),
        source,
    }
}

/// strerror() text of an errno, without std's " (os error N)" suffix.
pub(crate) fn errno_text(errno: i32) -> String {
    let s = io::Error::from_raw_os_error(errno).to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The NLMSGERR_ATTR_MSG text of an error's payload (after the error code). The socket sets
/// NETLINK_CAP_ACK, so the payload is the request's 16-byte header followed by the TLVs.
pub(crate) fn extack_message(payload: &[u8]) -> Option<String> {
    const NLMSGERR_ATTR_MSG: u16 = 1;
    let mut off = 16;
    while off + 4 <= payload.len() {
        let len = usize::from(u16::from_ne_bytes([payload[off], payload[off + 1]]));
        let kind = u16::from_ne_bytes([payload[off + 2], payload[off + 3]]) & 0x3fff;
        if len < 4 || off + len > payload.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let v = &payload[off + 4..off + len];
            let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
            return Some(String::from_utf8_lossy(&v[..end]).into_owned());
        }
        off += (len + 3) & !3;
    }
    None
}

/// Splits one datagram into its netlink messages (each padded to 4 bytes, as the kernel packs
/// them); the error says what did not fit.
pub(crate) fn split<T>(buf: &[u8]) -> std::result::Result<Vec<NetlinkMessage<T>>, String>
where
    T: NetlinkDeserializable,
{
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < 16 || off + len > buf.len() {
            return Err(format!("bad message length {len} at offset {off}"));
        }
        out.push(
            NetlinkMessage::<T>::deserialize(&buf[off..off + len]).map_err(|e| e.to_string())?,
        );
        off += (len + 3) & !3;
    }
    Ok(out)
}

/// One netlink socket with its own sequence numbers. Requests are strictly one at a time.
pub(crate) struct Transport {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Transport {
    pub(crate) fn open(protocol: isize, what: &str) -> Result<Self> {
        let mut sock = Socket::new(protocol).map_err(io_err(what))?;
        sock.bind(&SocketAddr::new(0, 0)).map_err(io_err(what))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(io_err(what))?;
        // Errors then carry only the request's header plus the kernel's explanation; both
        // options exist since Linux 4.12, and failing to set them only loses the text.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        let tv = nix::sys::time::TimeVal::new(RECV_TIMEOUT.as_secs() as i64, 0);
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
            .map_err(|e| io_err(what)(io::Error::from(e)))?;
        Ok(Self {
            sock,
            seq: 1,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    pub(crate) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Serialises one message with the given flags and sequence number.
    pub(crate) fn frame<T>(payload: T, flags: u16, seq: u32) -> Vec<u8>
    where
        T: NetlinkSerializable,
    {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
        msg.finalize();
        let mut out = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut out);
        out
    }

    pub(crate) fn send(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        let n = self.sock.send(bytes, 0).map_err(io_err(what))?;
        if n != bytes.len() {
            return Err(NetlinkError::Io {
                what: what.to_string(),
                source: io::Error::other(format!("short send: {n} of {} bytes", bytes.len())),
            });
        }
        Ok(())
    }

    /// Receives one datagram and splits it into messages.
    pub(crate) fn recv<T>(
        &mut self,
        nonblocking: bool,
        what: &str,
    ) -> Result<Vec<NetlinkMessage<T>>>
    where
        T: NetlinkDeserializable,
    {
        self.buf.clear();
        self.buf.reserve(RECV_BUF);
        let flags = if nonblocking { libc::MSG_DONTWAIT } else { 0 } | libc::MSG_TRUNC;
        let n = self.sock.recv(&mut self.buf, flags).map_err(io_err(what))?;
        if n > self.buf.len() {
            return Err(NetlinkError::Decode {
                what: what.to_string(),
                detail: format!("datagram of {n} bytes truncated"),
            });
        }
        split(&self.buf).map_err(|detail| NetlinkError::Decode {
            what: what.to_string(),
            detail,
        })
    }

    /// Sends one request and collects the replies: for a dump every message up to DONE, otherwise
    /// the ACK (and any message echoed before it). Replies are parsed as `R`, which need not be
    /// the request's type (nf_tables replies are kept as raw attributes).
    pub(crate) fn request<Q, R>(&mut self, payload: Q, flags: u16, what: &str) -> Result<Vec<R>>
    where
        Q: NetlinkSerializable,
        R: NetlinkDeserializable,
    {
        let seq = self.next_seq();
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        let bytes = Self::frame(payload, flags, seq);
        self.send(&bytes, what)?;
        let mut out = Vec::new();
        loop {
            for msg in self.recv::<R>(false, what)? {
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(code) => Err(NetlinkError::Kernel {
                                what: what.to_string(),
                                errno: -code.get(),
                                message: extack_message(&e.header),
                            }),
                        };
                    }
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
        }
    }

    /// Drains every reply already queued, without waiting. Used after a netfilter batch: the
    /// kernel processes the whole batch inside `send`, so its answers are all queued by then.
    pub(crate) fn drain<T>(&mut self, what: &str) -> Result<Vec<NetlinkMessage<T>>>
    where
        T: NetlinkDeserializable,
    {
        let mut out = Vec::new();
        loop {
            match self.recv::<T>(true, what) {
                Ok(msgs) => out.extend(msgs),
                Err(NetlinkError::Io { source, .. })
                    if source.kind() == io::ErrorKind::WouldBlock =>
                {
                    return Ok(out);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub up: bool,
    pub carrier: bool,
    pub is_ether: bool,
}

/// An IPv4 route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub dst: Ipv4Cidr,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub src: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
    pub table: u32,
}

/// An rtnetlink socket.
pub struct Rtnl {
    t: Transport,
}

fn link_from(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        carrier: msg.header.flags.contains(LinkFlags::LowerUp),
        is_ether: msg.header.link_layer_type == LinkLayerType::Ether,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Mtu(m) => link.mtu = m,
            LinkAttribute::Address(a) => link.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            LinkAttribute::Carrier(c) => link.carrier = c != 0,
            _ => {}
        }
    }
    // IFLA_CARRIER is reported even for a down link; only trust it while the link is up. Not
    // combined with the operstate: the kernel's linkwatch updates that up to a second late,
    // which cost every boot that second before DHCP started.
    link.carrier = link.carrier && link.up;
    link
}

fn link_msg(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

fn addr_msg(index: u32, addr: Ipv4Addr, prefix_len: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.prefix_len = prefix_len;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(IpAddr::V4(addr)));
    m.attributes
        .push(AddressAttribute::Address(IpAddr::V4(addr)));
    m
}

fn route_msg(dst: Ipv4Cidr) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = dst.prefix_len();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Static;
    m.header.kind = RouteType::Unicast;
    m.header.scope = RouteScope::Universe;
    if dst.prefix_len() > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst.addr())));
    }
    m
}

impl Rtnl {
    pub fn open() -> Result<Self> {
        Ok(Self {
            t: Transport::open(protocols::NETLINK_ROUTE, "opening rtnetlink socket")?,
        })
    }

    fn req(
        &mut self,
        m: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.t.request(m, flags, what)
    }

    pub fn links(&mut self) -> Result<Vec<Link>> {
        let replies = self.req(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
            "listing links",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_from(l)),
                _ => None,
            })
            .collect())
    }

    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }

    fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        Ok(self.links()?.into_iter().find(|l| l.index == index))
    }

    fn set_flags(&mut self, index: u32, up: bool, what: &str) -> Result<()> {
        let mut m = link_msg(index);
        m.header.change_mask = LinkFlags::Up;
        if up {
            m.header.flags = LinkFlags::Up;
        }
        self.req(RouteNetlinkMessage::SetLink(m), 0, what)?;
        Ok(())
    }

    /// Renames a link; the kernel refuses renaming an up link, so it is set down first and the
    /// caller brings it up again.
    pub fn rename(&mut self, index: u32, new_name: &str) -> Result<()> {
        let what = format!("renaming link {index} to {new_name}");
        if let Some(l) = self.link_by_index(index)? {
            if l.name == new_name {
                return Ok(());
            }
            if l.up {
                self.set_flags(index, false, &what)?;
            }
        }
        let mut m = link_msg(index);
        m.attributes
            .push(LinkAttribute::IfName(new_name.to_string()));
        self.req(RouteNetlinkMessage::SetLink(m), 0, &what)?;
        Ok(())
    }

    pub fn set_up(&mut self, index: u32) -> Result<()> {
        self.set_flags(index, true, &format!("setting link {index} up"))
    }

    pub fn set_down(&mut self, index: u32) -> Result<()> {
        self.set_flags(index, false, &format!("setting link {index} down"))
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Mtu(mtu));
        self.req(
            RouteNetlinkMessage::SetLink(m),
            0,
            &format!("setting MTU {mtu} on link {index}"),
        )?;
        Ok(())
    }

    /// Adds or refreshes an address (with its broadcast address and lifetimes); the kernel drops
    /// it when `valid_lft_s` runs out, so an expired lease cannot linger.
    pub fn replace_address(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
        valid_lft_s: u32,
        preferred_lft_s: u32,
    ) -> Result<()> {
        let mut m = addr_msg(index, addr, prefix_len);
        if prefix_len < 31 {
            let net = Ipv4Cidr::containing(addr, prefix_len);
            m.attributes.push(AddressAttribute::Broadcast(net.last()));
        }
        let mut ci = CacheInfo::default();
        ci.ifa_valid = valid_lft_s;
        ci.ifa_preferred = preferred_lft_s.min(valid_lft_s);
        m.attributes.push(AddressAttribute::CacheInfo(ci));
        self.req(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_REPLACE,
            &format!("setting address {addr}/{prefix_len} on link {index}"),
        )?;
        Ok(())
    }

    pub fn addresses(&mut self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        let mut q = AddressMessage::default();
        q.header.family = AddressFamily::Inet;
        let replies = self.req(
            RouteNetlinkMessage::GetAddress(q),
            NLM_F_DUMP,
            "listing addresses",
        )?;
        let mut out = Vec::new();
        for m in replies {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            if a.header.index != index || a.header.family != AddressFamily::Inet {
                continue;
            }
            let local = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(IpAddr::V4(v)) => Some(*v),
                _ => None,
            });
            let addr = local.or_else(|| {
                a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(IpAddr::V4(v)) => Some(*v),
                    _ => None,
                })
            });
            if let Some(v) = addr {
                out.push((v, a.header.prefix_len));
            }
        }
        Ok(out)
    }

    pub fn delete_address(&mut self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
        self.req(
            RouteNetlinkMessage::DelAddress(addr_msg(index, addr, prefix_len)),
            0,
            &format!("deleting address {addr}/{prefix_len} from link {index}"),
        )?;
        Ok(())
    }

    pub fn flush_addresses(&mut self, index: u32) -> Result<()> {
        for (a, l) in self.addresses(index)? {
            match self.delete_address(index, a, l) {
                // A secondary goes away with its primary.
                Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => {}
                r => r?,
            }
        }
        Ok(())
    }

    /// Adds or replaces a main-table route. Without a gateway the route is link scope (on-link).
    pub fn replace_route(
        &mut self,
        dst: Ipv4Cidr,
        gateway: Option<Ipv4Addr>,
        oif: u32,
        src: Option<Ipv4Addr>,
        mtu: Option<u32>,
    ) -> Result<()> {
        let mut m = route_msg(dst);
        match gateway {
            Some(gw) => m
                .attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw))),
            None => m.header.scope = RouteScope::Link,
        }
        m.attributes.push(RouteAttribute::Oif(oif));
        if let Some(s) = src {
            m.attributes
                .push(RouteAttribute::PrefSource(RouteAddress::Inet(s)));
        }
        if let Some(mtu) = mtu {
            m.attributes
                .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        }
        self.req(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
            &format!("setting route {dst} via {gateway:?} dev {oif}"),
        )?;
        Ok(())
    }

    pub fn delete_route(
        &mut self,
        dst: Ipv4Cidr,
        gateway: Option<Ipv4Addr>,
        oif: Option<u32>,
    ) -> Result<()> {
        let mut m = route_msg(dst);
        // Match any protocol, so routes the kernel or DHCP added can be removed too.
        m.header.protocol = RouteProtocol::Unspec;
        m.header.scope = RouteScope::NoWhere;
        if let Some(gw) = gateway {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        if let Some(o) = oif {
            m.attributes.push(RouteAttribute::Oif(o));
        }
        self.req(
            RouteNetlinkMessage::DelRoute(m),
            0,
            &format!("deleting route {dst}"),
        )?;
        Ok(())
    }

    /// IPv4 unicast routes of the main table.
    pub fn routes(&mut self) -> Result<Vec<RouteInfo>> {
        let mut q = RouteMessage::default();
        q.header.address_family = AddressFamily::Inet;
        let replies = self.req(
            RouteNetlinkMessage::GetRoute(q),
            NLM_F_DUMP,
            "listing routes",
        )?;
        let mut out = Vec::new();
        for m in replies {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            if r.header.address_family != AddressFamily::Inet || r.header.kind != RouteType::Unicast
            {
                continue;
            }
            let mut info = RouteInfo {
                dst: Ipv4Cidr::containing(Ipv4Addr::UNSPECIFIED, 0),
                gateway: None,
                oif: None,
                src: None,
                mtu: None,
                table: u32::from(r.header.table),
            };
            let mut dst_addr = Ipv4Addr::UNSPECIFIED;
            for a in r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst_addr = d,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => info.gateway = Some(g),
                    RouteAttribute::PrefSource(RouteAddress::Inet(s)) => info.src = Some(s),
                    RouteAttribute::Oif(o) => info.oif = Some(o),
                    RouteAttribute::Table(t) => info.table = t,
                    RouteAttribute::Metrics(ms) => {
                        for x in ms {
                            if let RouteMetric::Mtu(v) = x {
                                info.mtu = Some(v);
                            }
                        }
                    }
                    _ => {}
                }
            }
            if info.table != u32::from(RouteHeader::RT_TABLE_MAIN) {
                continue;
            }
            info.dst = Ipv4Cidr::containing(dst_addr, r.header.destination_prefix_length);
            out.push(info);
        }
        Ok(out)
    }

    /// Polls until the link reports carrier, or the timeout passes. Polling (every 100 ms) keeps
    /// this free of a second, multicast socket and of missed-event races.
    pub fn wait_for_carrier(&mut self, index: u32, timeout: Duration) -> Result<bool> {
        let start = Instant::now();
        loop {
            if self.link_by_index(index)?.is_some_and(|l| l.carrier) {
                return Ok(true);
            }
            if start.elapsed() >= timeout {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

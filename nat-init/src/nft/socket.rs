//! The kernel side: an nfnetlink socket ([`Nfnl`]) and what the service does with it. [`apply`]
//! replaces the table in one atomic batch, [`read_back`] dumps it into the model, [`verify`]
//! compares, [`counters`] sums the rules' counters, [`flowtable_supported`] probes the kernel.

use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST, NetlinkPayload,
};
use netlink_packet_netfilter::nftables::NfTablesMessage;
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::protocols;

use super::decode::{DecodeError, Reply, attrs, decode, get, string};
use super::encode::{encode, flowtable_flags, hook_attrs, ipv4, nla_str, other, table_msg};
use super::model::{Counters, Ruleset};
use super::policy::FLOWTABLE;
use super::uapi::{
    FLOWTABLE_COUNTER, HOOK_NETDEV_INGRESS, MSG_DELTABLE, MSG_GETCHAIN, MSG_GETFLOWTABLE,
    MSG_GETRULE, MSG_GETSET, MSG_GETSETELEM, MSG_GETTABLE, MSG_NEWTABLE,
};
use crate::netlink::{NetlinkError, Transport};

/// A failed nf_tables operation, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("{what}: {source}")]
    Decode {
        what: String,
        #[source]
        source: DecodeError,
    },
    #[error(
        "the kernel refused `{what}`: errno {errno} ({}){}",
        crate::netlink::errno_text(*errno),
        message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
    )]
    Refused {
        what: String,
        errno: i32,
        message: Option<String>,
    },
    #[error("batch: {0}")]
    Batch(String),
    #[error("table {table} differs from what was installed:\n  {}", differences.join("\n  "))]
    Differs {
        table: String,
        differences: Vec<String>,
    },
}

impl NftError {
    /// The kernel's errno, if the kernel refused something.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Netlink(e) => e.errno(),
            Self::Refused { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

pub type Result<T, E = NftError> = std::result::Result<T, E>;

/// An nfnetlink socket.
pub struct Nfnl {
    t: Transport,
}

impl Nfnl {
    pub fn open() -> Result<Self> {
        Ok(Self {
            t: Transport::open(protocols::NETLINK_NETFILTER, "opening nfnetlink socket")?,
        })
    }

    /// Sends `msgs` between BATCH_BEGIN and BATCH_END in one datagram: the kernel applies all or
    /// nothing. Every message asks for an ACK; the first refusal is reported with its description.
    fn batch(&mut self, msgs: Vec<(NetfilterMessage, u16, String)>) -> Result<()> {
        let what = "sending nf_tables batch";
        let ctl = |m: ControlMessage| {
            NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 10),
                NetfilterMessageInner::from(m),
            )
        };
        let mut bytes = Vec::new();
        let begin = self.t.next_seq();
        bytes.extend(Transport::frame(
            ctl(ControlMessage::BatchBegin),
            NLM_F_REQUEST,
            begin,
        ));
        let mut pending: Vec<(u32, String)> = Vec::new();
        for (m, flags, desc) in msgs {
            let seq = self.t.next_seq();
            bytes.extend(Transport::frame(m, NLM_F_REQUEST | NLM_F_ACK | flags, seq));
            pending.push((seq, desc));
        }
        let end = self.t.next_seq();
        bytes.extend(Transport::frame(
            ctl(ControlMessage::BatchEnd),
            NLM_F_REQUEST,
            end,
        ));
        self.t.send(&bytes, what)?;
        let mut first_err: Option<NftError> = None;
        for reply in self.t.drain::<Reply>(what)? {
            let seq = reply.header.sequence_number;
            if let NetlinkPayload::Error(e) = reply.payload {
                let desc = pending
                    .iter()
                    .position(|(s, _)| *s == seq)
                    .map(|i| pending.remove(i).1);
                if let Some(code) = e.code {
                    first_err.get_or_insert(NftError::Refused {
                        what: desc.unwrap_or_else(|| format!("batch message {seq}")),
                        errno: -code.get(),
                        message: crate::netlink::extack_message(&e.header),
                    });
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if !pending.is_empty() {
            return Err(NftError::Batch(format!(
                "no answer for {} of the messages, first: {}",
                pending.len(),
                pending[0].1
            )));
        }
        Ok(())
    }

    fn dump(&mut self, kind: u8, attrs: Vec<DefaultNla>, what: &str) -> Result<Vec<Reply>> {
        Ok(self.t.request(ipv4(other(kind, attrs)), NLM_F_DUMP, what)?)
    }
}

/// Replaces the appliance's table atomically: one batch adds the table (a no-op if it exists),
/// deletes it with everything in it, and adds it again with the new content.
pub fn apply(sock: &mut Nfnl, r: &Ruleset) -> Result<()> {
    let t = r.table.as_str();
    let mut msgs = vec![
        (
            table_msg(MSG_NEWTABLE, t),
            NLM_F_CREATE,
            format!("add table ip {t}"),
        ),
        (
            table_msg(MSG_DELTABLE, t),
            0,
            format!("delete table ip {t}"),
        ),
    ];
    msgs.extend(encode(r));
    sock.batch(msgs)
}

/// Reads `table` back from the kernel.
pub fn read_back(sock: &mut Nfnl, table: &str) -> Result<Ruleset> {
    let what = |x: &str| format!("reading back table {table}: {x}");
    let mut msgs: Vec<Reply> = sock
        .t
        .request(table_msg(MSG_GETTABLE, table), 0, &what("table"))?;
    let sets = sock.dump(MSG_GETSET, vec![nla_str(1, table)], &what("sets"))?;
    let mut names = Vec::new();
    for s in &sets {
        let l = attrs(&s.attrs).map_err(|source| NftError::Decode {
            what: what("sets"),
            source,
        })?;
        // A dynamic set's elements are whatever the traffic put there: not read.
        let dynamic = get(&l, 3)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .is_some_and(|f| u32::from_be_bytes(f) & super::uapi::SET_EVAL != 0);
        if get(&l, 1).map(string).as_deref() == Some(table)
            && !dynamic
            && let Some(n) = get(&l, 2)
        {
            names.push(string(n));
        }
    }
    msgs.extend(sets);
    for n in names {
        msgs.extend(sock.dump(
            MSG_GETSETELEM,
            vec![nla_str(1, table), nla_str(2, &n)],
            &what(&format!("elements of set {n}")),
        )?);
    }
    msgs.extend(sock.dump(
        MSG_GETFLOWTABLE,
        vec![nla_str(1, table)],
        &what("flowtables"),
    )?);
    msgs.extend(sock.dump(MSG_GETCHAIN, vec![nla_str(1, table)], &what("chains"))?);
    msgs.extend(sock.dump(MSG_GETRULE, vec![nla_str(1, table)], &what("rules"))?);
    decode(table, &msgs).map_err(|source| NftError::Decode {
        what: what("decoding"),
        source,
    })
}

/// Reads the table back and compares it with `r`; the error lists every difference.
pub fn verify(sock: &mut Nfnl, r: &Ruleset) -> Result<()> {
    let got = read_back(sock, &r.table)?;
    let differences = r.differences(&got);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(NftError::Differs {
            table: r.table.clone(),
            differences,
        })
    }
}

/// Reads the counters of the table's rules.
pub fn counters(sock: &mut Nfnl, table: &str) -> Result<Counters> {
    Ok(Counters::of(&read_back(sock, table)?))
}

/// Whether the kernel can add a flowtable to an ip table (nf_flow_table and its ip type), with
/// the `counter` flag the appliance's has (5.7 on). Probes with one batch that adds a scratch
/// table with a flowtable on `lo` and deletes it again: the kernel either applies both or
/// neither, so nothing is left behind either way.
pub fn flowtable_supported(sock: &mut Nfnl) -> bool {
    let t = format!("nat_init_probe_{}", std::process::id());
    let msgs = vec![
        (
            table_msg(MSG_NEWTABLE, &t),
            NLM_F_CREATE,
            format!("add table ip {t}"),
        ),
        (
            ipv4(NfTablesMessage::NewFlowTable(vec![
                nla_str(1, &t),
                nla_str(2, FLOWTABLE),
                hook_attrs(3, HOOK_NETDEV_INGRESS, 0, &["lo".to_string()]),
                flowtable_flags(FLOWTABLE_COUNTER),
            ])),
            NLM_F_CREATE,
            "add probe flowtable".into(),
        ),
        (
            table_msg(MSG_DELTABLE, &t),
            0,
            format!("delete table ip {t}"),
        ),
    ];
    sock.batch(msgs).is_ok()
}

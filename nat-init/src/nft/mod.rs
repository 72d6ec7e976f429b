//! The appliance's nftables table: masquerade outbound traffic from the private ranges (or
//! spread it across several outside addresses with source NAT), forward only flows those ranges
//! start, and drop unsolicited input. [`build`] makes a pure model of the table (comparable,
//! printable in nft syntax); [`apply`] installs it over netlink in one atomic batch, [`verify`]
//! reads it back and compares, [`counters`] reports the named rules' counters.
//!
//! One layer a file, pure until the socket:
//! - `policy`: the ruleset we want, built from a [`RulesetSpec`] (the configuration's view),
//!   with the rule names the counters go by;
//! - `model`: the table as data ([`Ruleset`], [`Expr`], ...), its comparison and [`Counters`];
//! - `print`: the model in nft syntax (`Display`), for messages and tests;
//! - `encode`: the model as nf_tables netlink messages;
//! - `decode`: dump replies back into the model;
//! - `socket`: [`Nfnl`], the nfnetlink socket, and the operations on it;
//! - `uapi`: the kernel's numbers all of them use.
//!
//! The wire codec (`encode`, `decode`) is ours. What netlink-packet-netfilter 0.4 gives us is
//! the sending side's framing: the nfnetlink header, batch begin/end, and the rule message's
//! table, chain, user-data and expression-list attributes. Its typed expressions stop at bitwise,
//! cmp, immediate, lookup, meta and payload: masq, nat, numgen, counter, ct, limit, byteorder,
//! exthdr, rt and flow_offload exist only as raw attributes, and flowtables only as raw attribute lists. So
//! every expression, and every message but the rule, is written as raw attributes through its
//! escape hatches (`Expressions::Other`, `NfTablesMessage::Other`, `NewFlowTable`), in one
//! layout that `decode` reads back exactly. Replies skip its typed parse altogether ([`Reply`]
//! keeps their raw attributes): that parse panics on a nested attribute longer than its parent,
//! which the nft_decode fuzz target found at once.
//!
//! The alternatives fit worse: rustables is GPL-3.0-or-later (the binary would be GPL) and runs
//! bindgen on kernel headers at build time; nftnl binds libnftnl/libmnl (C), a painful static
//! aarch64-musl build; the nftables crate drives an `nft` binary the image does not have.

mod decode;
mod encode;
mod model;
mod policy;
mod print;
mod socket;
mod uapi;

pub use decode::{DecodeError, Reply, decode, decode_replies};
pub use encode::encode;
pub use model::{Chain, ChainType, Counters, Expr, Flowtable, Rule, Ruleset, Set};
pub use policy::{
    FLOWTABLE, MasqueradePorts, PER_SOURCE_SET, PRIVATE_SET, RULE_FWD_DROP, RULE_FWD_ESTABLISHED,
    RULE_FWD_FIRST_REPLY, RULE_FWD_INVALID, RULE_FWD_MSS, RULE_FWD_NEW, RULE_FWD_OFFLOAD,
    RULE_FWD_PER_SOURCE, RULE_IN_CTSYNC, RULE_IN_DHCP, RULE_IN_DROP, RULE_IN_ESTABLISHED,
    RULE_IN_HEARTBEAT, RULE_IN_ICMP, RULE_IN_ICMP_LIMIT, RULE_IN_INVALID, RULE_IN_LO, RULE_MASQ,
    RULE_MASQ_TRAFFIC, RULE_RAW_DHCP, RULE_SNAT_PREFIX, RulesetSpec, TABLE, build, snat_rule_name,
};
pub use socket::{Nfnl, NftError, Result, apply, counters, flowtable_supported, read_back, verify};

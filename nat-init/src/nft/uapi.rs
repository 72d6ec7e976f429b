//! The numbers the kernel and nft agree on: registers, verdicts, hooks, expression keys and
//! message types from include/uapi/linux/netfilter/nf_tables.h and netfilter.h, the IP, ICMP and
//! TCP numbers the rules match, and nft's datatype for address sets. Every layer speaks in
//! these; only `encode` and `decode` know how they sit in attributes.

pub(super) const REG_VERDICT: u32 = 0;
pub(super) const REG_1: u32 = 1;
pub(super) const REG_2: u32 = 2;
pub(super) const NF_DROP: i32 = 0;
pub(super) const NF_ACCEPT: i32 = 1;
pub(super) const HOOK_PRE_ROUTING: u32 = 0;
pub(super) const HOOK_LOCAL_IN: u32 = 1;
pub(super) const HOOK_FORWARD: u32 = 2;
pub(super) const HOOK_POST_ROUTING: u32 = 4;
pub(super) const HOOK_NETDEV_INGRESS: u32 = 0;
pub(super) const META_IIFNAME: u32 = 6;
pub(super) const META_OIFNAME: u32 = 7;
pub(super) const META_L4PROTO: u32 = 16;
pub(super) const BASE_NETWORK: u32 = 1;
pub(super) const BASE_TRANSPORT: u32 = 2;
pub(super) const CMP_EQ: u32 = 0;
pub(super) const CMP_NEQ: u32 = 1;
pub(super) const CT_STATE: u32 = 0;
pub(super) const CT_STATUS: u32 = 2;
/// NFT_CT_MARK: the flow's 32-bit mark, host byte order in a register.
pub(super) const CT_MARK: u32 = 3;
/// NFT_CT_DIRECTION: the packet's direction in its flow, one byte (IP_CT_DIR_*). 1, not 4
/// (NFT_CT_SECMARK): the enum runs state, direction, status, mark, secmark.
pub(super) const CT_DIRECTION: u32 = 1;
/// IP_CT_DIR_REPLY: a packet going back to the flow's originator.
pub(super) const CT_DIR_REPLY: u8 = 1;
/// IPS_SRC_NAT in the ct status bits: the flow's source was translated.
pub(super) const CT_STATUS_SRC_NAT: u32 = 1 << 4;
pub(super) const CT_INVALID: u32 = 1;
pub(super) const CT_ESTABLISHED: u32 = 1 << 1;
pub(super) const CT_RELATED: u32 = 1 << 2;
pub(super) const CT_NEW: u32 = 1 << 3;
pub(super) const LIMIT_PKTS: u32 = 0;
pub(super) const LIMIT_F_INV: u32 = 1;
pub(super) const BYTEORDER_HTON: u32 = 1;
pub(super) const EXTHDR_OP_TCPOPT: u32 = 1;
pub(super) const TCPOPT_MAXSEG: u8 = 2;
pub(super) const RT_TCPMSS: u32 = 3;
/// NFT_FLOWTABLE_HW_OFFLOAD: the flowtable is pushed down to the NIC.
pub(super) const FLOWTABLE_HW_OFFLOAD: u32 = 0x1;
/// NFT_FLOWTABLE_COUNTER: the flowtable updates conntrack's byte and packet counters of the
/// flows it carries (`counter;`); without it offloaded packets are not counted anywhere.
pub(super) const FLOWTABLE_COUNTER: u32 = 0x2;
/// NFTA_FLOWTABLE_FLAGS. 7, after NFTA_FLOWTABLE_PAD (6), as `nft --debug=mnl` sends it.
pub(super) const NFTA_FLOWTABLE_FLAGS: u16 = 7;
pub(super) const SET_INTERVAL: u32 = 0x4;
/// NFT_SET_EVAL: a set rules add to (`flags dynamic`).
pub(super) const SET_EVAL: u32 = 0x20;
pub(super) const DYNSET_OP_ADD: u32 = 0;
/// NFT_CONNLIMIT_F_INV: `ct count over N`.
pub(super) const CONNLIMIT_F_INV: u32 = 1;
pub(super) const SET_ELEM_INTERVAL_END: u32 = 0x1;
/// nft's `ipv4_addr` datatype, so `nft list` prints the set's elements as addresses.
pub(super) const TYPE_IPADDR: u32 = 7;
pub(super) const IPPROTO_ICMP: u8 = 1;
pub(super) const IPPROTO_TCP: u8 = 6;
pub(super) const IPPROTO_UDP: u8 = 17;
pub(super) const ICMP_DEST_UNREACH: u8 = 3;
pub(super) const ICMP_ECHO_REQUEST: u8 = 8;
pub(super) const TCP_SYN: u8 = 0x02;
pub(super) const IFNAMSIZ: usize = 16;
/// NF_NAT_RANGE_PROTO_RANDOM and _RANDOM_FULLY (linux/netfilter/nf_nat.h): NFTA_MASQ_FLAGS
/// and NFTA_NAT_FLAGS.
pub(super) const NAT_RANGE_PROTO_RANDOM: u32 = 1 << 2;
pub(super) const NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 1 << 4;
/// NF_NAT_RANGE_PROTO_SPECIFIED: the source port comes from the range in the proto registers.
pub(super) const NAT_RANGE_PROTO_SPECIFIED: u32 = 1 << 1;
/// NF_NAT_RANGE_MAP_IPS: the kernel adds it to a nat expression given an address register, and
/// dumps it back.
pub(super) const NAT_RANGE_MAP_IPS: u32 = 1;
/// NFT_NAT_SNAT: the `nat` expression's type for source NAT.
pub(super) const NAT_SNAT: u32 = 0;
/// NFPROTO_IPV4: the `nat` expression's address family.
pub(super) const NFPROTO_IPV4: u32 = 2;
/// NFT_NG_RANDOM: `numgen random` (NFT_NG_INCREMENTAL, 0, counts up).
pub(super) const NG_RANDOM: u32 = 1;

/// nfnetlink's subsystem number for nf_tables: the high byte of a netlink message type.
pub(super) const NFNL_SUBSYS_NFTABLES: u8 = 10;
/// struct nfgenmsg, before a message's attributes: family, version, resource id.
pub(super) const NFGENMSG_LEN: usize = 4;

// NFT_MSG_* message types: the low byte.
pub(super) const MSG_NEWTABLE: u8 = 0;
pub(super) const MSG_GETTABLE: u8 = 1;
pub(super) const MSG_DELTABLE: u8 = 2;
pub(super) const MSG_NEWCHAIN: u8 = 3;
pub(super) const MSG_GETCHAIN: u8 = 4;
pub(super) const MSG_NEWRULE: u8 = 6;
pub(super) const MSG_GETRULE: u8 = 7;
pub(super) const MSG_NEWSET: u8 = 9;
pub(super) const MSG_GETSET: u8 = 10;
pub(super) const MSG_NEWSETELEM: u8 = 12;
pub(super) const MSG_GETSETELEM: u8 = 13;
pub(super) const MSG_NEWFLOWTABLE: u8 = 22;
pub(super) const MSG_GETFLOWTABLE: u8 = 23;

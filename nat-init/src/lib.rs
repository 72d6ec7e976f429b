//! nat-init: the NAT service that init starts and supervises. It names and brings up the primary
//! interface, leases its address over DHCP, sets the forwarding sysctls, installs and verifies the
//! appliance's nftables table over netlink, and keeps all of that working. It knows nothing about
//! PID 1 duties; `init` owns those.
//!
//! The library is everything that can be tested without the machine, and the thin edges that
//! talk to it:
//! - [`plan`]: the service's decisions (stage order and retries, what a lease becomes on the
//!   interface, which configuration wins, what the health line says), all pure;
//! - [`nft`]: the nftables table, from the policy through the nft-syntax printer and the netlink
//!   codec to the socket;
//! - [`dhcp`]: the DHCPv4 client (pure state machine, framing, sockets);
//! - [`naming`]: which interface is the primary one and its udev-style name;
//! - [`config`]: the TOML configuration and its layering; [`imds`]: the IMDSv2 client;
//! - [`http`]: HTTP/1.1 requests and responses (IMDS, AWS); [`https`]: the TLS client for AWS
//!   calls; [`dns`]: the stub resolver that asks the lease's DNS server; [`ntp`]: the SNTP
//!   client and the clock step; [`udp`]: a receive bounded by a deadline, for both;
//! - [`sysctl`]: the kernel settings, planned then written and read back;
//! - [`ethtool`]: a device's driver statistics (ENA's allowance counters);
//! - [`failover`]: the heartbeat between a failover group's members and the takeover rules;
//! - [`netlink`]: the netlink transport and rtnetlink (links, addresses, routes);
//! - [`aws`]: the appliance's own AWS calls (SigV4, role credentials, EC2 Query API,
//!   CloudWatch PutMetricData, IAM policy), pure;
//! - [`metrics`]: what the appliance publishes to CloudWatch (the catalogue, counter deltas
//!   across resets, one period's datums, the monthly cost), pure;
//! - [`conntrack`]: conntrack replication between peers, for failover (codec, wire format,
//!   cache, ctnetlink socket, and the sync threads the namespace tests also run);
//! - [`cidr`]: IPv4 prefixes; [`report`]: the shape of every console line.
//!
//! The binary (`main.rs` and its `run/` module) is the I/O of the service: one file per stage,
//! named like the `plan` file that decides what it does, and the loop that drives them.

pub mod aws;
pub mod cidr;
pub mod config;
pub mod conntrack;
pub mod dhcp;
pub mod dns;
pub mod ethtool;
pub mod failover;
pub mod http;
pub mod https;
pub mod imds;
pub mod metrics;
pub mod naming;
pub mod netlink;
pub mod nft;
pub mod ntp;
pub mod plan;
pub mod report;
pub mod sysctl;
pub mod udp;

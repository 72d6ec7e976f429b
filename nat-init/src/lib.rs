//! nat-init: the NAT service that init starts and supervises. It names and brings up the primary
//! interface, leases its address over DHCP, sets the forwarding sysctls, installs and verifies the
//! appliance's nftables table over netlink, and keeps all of that working. It knows nothing about
//! PID 1 duties; `init` owns those. The binary in `main.rs` wires these modules together.

pub mod cidr;
pub mod config;
pub mod dhcp;
pub mod imds;
pub mod naming;
pub mod netlink;
pub mod nft;
pub mod plan;
pub mod report;
pub mod sysctl;

//! Conntrack replication for failover, at the service's edge: starts
//! [`nat_init::conntrack::sync::CtSync`] (its threads follow this kernel's conntrack, stream it
//! to the peers on TCP 7472 and keep what the peers stream here) with every failure printed as
//! an `error` line; the threads retry on their own, so nothing here stops the NAT. The
//! failover thread (`failover`) decides when: `set_peers` whom to stream to, `commit_from`
//! when this instance takes over a peer's addresses, `stats` for the health line.

use std::sync::Arc;

pub use nat_init::conntrack::sync::CtSync;

use super::console;

/// Starts the replication; its failures become `nat-init: error conntrack ...` lines.
pub fn start() -> CtSync {
    CtSync::start(Arc::new(|what: &str, why: String| {
        console::error(what, why)
    }))
}

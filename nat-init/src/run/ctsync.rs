//! Conntrack replication for failover, at the service's edge: starts
//! [`nat_init::conntrack::sync::CtSync`] (its threads follow this kernel's conntrack, stream it
//! to the peers on [`PORT`] and keep what the peers stream here) with every failure printed as
//! an `error` line; the threads retry on their own, so nothing here stops the NAT.
//!
//! The main loop's failover logic decides when: `set_peers` whom to stream to, `commit_from`
//! when this instance takes over a peer's addresses, `stats` for the health line. The table
//! must accept TCP [`PORT`] from the peers in its input chain.
// Not yet called: the failover wiring of the main loop (issue 12) starts it.
#![allow(dead_code, unused_imports)]

use std::sync::Arc;

pub use nat_init::conntrack::socket::CommitReport;
pub use nat_init::conntrack::sync::{CtSync, PORT, SyncStats};

use super::console;

/// Starts the replication; its failures become `nat-init: error conntrack ...` lines.
pub fn start() -> CtSync {
    CtSync::start(Arc::new(|what: &str, why: String| {
        console::error(what, why)
    }))
}

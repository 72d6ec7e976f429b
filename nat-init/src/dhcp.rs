//! DHCPv4 client for the primary interface (RFC 2131): a pure state machine
//! ([`machine`]), the IPv4/UDP framing it needs before it has an address ([`frame`]), and the
//! sockets that carry it ([`socket`]).

pub mod frame;
pub mod machine;
pub mod socket;

pub use machine::{Action, Event, Lease, Machine, State, Transmit, seed};
pub use socket::{Client, DhcpError, LeaseChange, Step};

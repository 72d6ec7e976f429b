//! DHCPv4 client for the primary interface (RFC 2131): a pure state machine
//! ([`machine`]), the IPv4/UDP framing it needs before it has an address ([`frame`]), and the
//! sockets that carry it ([`socket`]), with the kernel's randomness for its xids ([`random`]).

pub mod frame;
pub mod machine;
pub mod random;
pub mod socket;

pub use machine::{Action, Event, Lease, MIN_LEASE_S, Machine, State, Transmit};
pub use random::{KernelRandom, Random};
pub use socket::{Client, DhcpError, LeaseChange, Step};

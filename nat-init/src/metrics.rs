//! The pure middle of publishing the appliance's metrics to CloudWatch: between the readers of
//! the kernel's counters (nftables, conntrack, ethtool; not here) and the PutMetricData requests
//! of [`crate::aws::cloudwatch`]. No I/O, no clock, no threads: the worker passes the sample
//! time and the values in.
//!
//! - [`deltas`]: per-period increases of counters that restart (a baseline first, resets
//!   reported, never a doubled or negative count).

pub mod deltas;

//! The service's decisions, kept pure so they are unit-tested. The binary's `run` module does the
//! I/O they call for, in files of the same names:
//! - `stages`: which [`Stage`] runs next, when a failed one is retried, when `ready` is printed;
//! - `retry`: the [`Backoff`] of failures and the [`Throttle`] of repeating error lines;
//! - `link`: which interface nat-init drives and what it should be called;
//! - `primary`: whether that is the primary ENI IMDS names, or which one to switch to;
//! - `lease`: what a DHCP lease becomes on the interface, and whether that still holds;
//! - `config`: whether user-data is ours, and where the private ranges come from;
//! - `ruleset`: the table the configuration asks for, and what to say about the flowtable;
//! - `sysctl`: the conntrack sizing (checked against RAM) and the line saying what was set;
//! - `health`: what the `health` line says, and when conntrack dropping flows is an error;
//! - `aws`: the AWS side: endpoints, what to do with each claimed route table, how Elastic IPs
//!   pair with the ENI's addresses, and the `aws_*` fields of the console lines;
//! - `args`: the command line (the service, or the IAM policy a configuration needs).

mod args;
pub mod aws;
mod config;
mod health;
mod lease;
mod link;
mod primary;
mod retry;
mod ruleset;
mod stages;
mod sysctl;

pub use args::{Command, PolicyArgs, parse_args};
pub use config::{
    IMDS_RETRY_MAX, IMDS_RETRY_MIN, RangesFrom, UserData, classify_user_data, imds_backoff,
    late_imds_changes, private_ranges, usable_vpc,
};
pub use health::{
    ConntrackStatError, PROC_CONNTRACK, PROC_CONNTRACK_STAT, conntrack_drops, count_offloaded,
    ena_allowances, health, parse_conntrack_stat,
};
pub use lease::{
    Current, DEFAULT_MTU, LeaseError, LeasePlan, LeaseProblem, RouteSpec, lease_mtu, plan_lease,
};
pub use link::{Interface, resolve_interface};
pub use primary::{Primary, PrimaryMissing, decide_primary};
pub use retry::{Backoff, RETRY_MAX, RETRY_MIN, Throttle};
pub use ruleset::{flowtable_line, ruleset_spec};
pub use stages::{Stage, Stages};
pub use sysctl::{
    CONNTRACK_BUCKET_BYTES, CONNTRACK_RAM_SHARE, ConntrackSizing, conntrack_sizing, sysctl_line,
};

//! The pure middle of publishing the appliance's metrics to CloudWatch: between the readers of
//! the kernel's counters (nftables, conntrack, ethtool; not here) and the PutMetricData requests
//! of [`crate::aws::cloudwatch`]. No I/O, no clock, no threads: the worker passes the sample
//! time and the values in.
//!
//! - [`catalogue`]: every metric's name, unit, kind and meaning (NAT Gateway's set and the
//!   instance's own);
//! - [`deltas`]: per-period increases of counters that restart (a baseline first, resets
//!   reported, never a doubled or negative count);
//! - [`datums`] (here): one period's deltas and gauges to CloudWatch datums with the instance's
//!   dimensions, in a fixed order;
//! - [`cost`]: what a configuration costs a month in requests and custom metrics.

pub mod catalogue;
pub mod cost;
pub mod deltas;
pub mod sample;
pub mod traffic;

use std::collections::BTreeMap;

use crate::aws::cloudwatch::{Datum, Dimension};
use catalogue::{CATALOGUE, Kind, Metric};

/// One period's values as the sampler hands them to the publisher, which adds the
/// instance's dimensions ([`datums`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When the period closed (Unix seconds); its datums carry [`period_start`] of it.
    pub unix_s: u64,
    pub period_s: u64,
    pub counters: BTreeMap<&'static str, u64>,
    pub gauges: Vec<Gauge>,
}

/// Why values cannot become datums (or a cost): each a bug in the caller, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("metric {0:?} is not in the catalogue")]
    Unknown(String),
    #[error("metric {name:?} is a {kind:?} in the catalogue, given as the other kind")]
    WrongKind { name: String, kind: Kind },
    #[error("metric {name:?}: {why}")]
    Per { name: String, why: &'static str },
    #[error("metric {name:?}{per}: given twice in one sample")]
    Duplicate { name: String, per: String },
    #[error("period of {0} s: CloudWatch's are 1, 5, 10, 30 or a multiple of 60")]
    Period(u64),
    #[error("cost: {0}")]
    Cost(&'static str),
}

/// The instance's identity on every datum: `InstanceId`, and `NatName` and
/// `AutoScalingGroupName` when set. CloudWatch keeps each combination of dimensions as a
/// metric of its own and does not aggregate across them, so these are the dimensions every
/// query and alarm must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dimensions {
    pub instance_id: String,
    pub nat_name: Option<String>,
    pub asg: Option<String>,
}

impl Dimensions {
    fn list(&self) -> Vec<Dimension> {
        let mut out = vec![Dimension::new("InstanceId", self.instance_id.clone())];
        if let Some(n) = &self.nat_name {
            out.push(Dimension::new("NatName", n.clone()));
        }
        if let Some(a) = &self.asg {
            out.push(Dimension::new("AutoScalingGroupName", a.clone()));
        }
        out
    }
}

/// A gauge's value at the sample. `per` is the value of the metric's [`Metric::per`]
/// dimension (the route table id of a `FailoverRole`), `None` for the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gauge {
    pub name: String,
    pub per: Option<String>,
    pub value: u64,
}

impl Gauge {
    pub fn new(name: impl Into<String>, value: u64) -> Self {
        Self {
            name: name.into(),
            per: None,
            value,
        }
    }

    pub fn per(name: impl Into<String>, per: impl Into<String>, value: u64) -> Self {
        Self {
            name: name.into(),
            per: Some(per.into()),
            value,
        }
    }
}

/// Whether CloudWatch can store a period: 1, 5, 10 and 30 s are high resolution, and
/// multiples of 60 standard (the periods its statistics come in).
pub fn valid_period(period_s: u64) -> bool {
    matches!(period_s, 1 | 5 | 10 | 30) || (period_s >= 60 && period_s.is_multiple_of(60))
}

/// The timestamp of the period a sample at `sample_unix_s` closes: the start of the period
/// that holds the sample time minus half a period. A sampler that runs just after each period
/// boundary (or up to half a period early or late) labels its deltas with the period they
/// counted, as NAT Gateway labels its data points.
pub fn period_start(sample_unix_s: u64, period_s: u64) -> u64 {
    let p = period_s.max(1);
    sample_unix_s.saturating_sub(p / 2) / p * p
}

/// One period's datums: a datum per counter in `deltas` (from [`deltas::Deltas`]) and per
/// gauge, with `dimensions` (and a gauge's `per` dimension last), all at [`period_start`], and
/// high resolution (`StorageResolution=1`) when the period is under a minute. In the
/// catalogue's order, a per-table gauge's series by their `per` value. Counters without a
/// delta (baselines) and gauges not given are left out, not sent as zeros.
///
/// Values are u64 and become doubles: exact up to 2^53 (9 PB in one period), far above what
/// one period can count.
pub fn datums<K: AsRef<str> + Ord>(
    sample_unix_s: u64,
    period_s: u64,
    deltas: &BTreeMap<K, u64>,
    gauges: &[Gauge],
    dimensions: &Dimensions,
) -> Result<Vec<Datum>, Error> {
    if !valid_period(period_s) {
        return Err(Error::Period(period_s));
    }
    let find = |name: &str, kind: Kind| -> Result<&'static Metric, Error> {
        let m = catalogue::find(name).ok_or_else(|| Error::Unknown(name.to_string()))?;
        if m.kind != kind {
            return Err(Error::WrongKind {
                name: name.to_string(),
                kind: m.kind,
            });
        }
        Ok(m)
    };
    for name in deltas.keys() {
        let m = find(name.as_ref(), Kind::Counter)?;
        if m.per.is_some() {
            // No counter is per-table yet; a map keyed by name could not carry one.
            return Err(Error::Per {
                name: m.name.to_string(),
                why: "a per-dimension counter needs a per value",
            });
        }
    }
    // By name, then per value: the output's order within a metric, and the duplicate check.
    let mut by_series: BTreeMap<(&str, Option<&str>), u64> = BTreeMap::new();
    for g in gauges {
        let m = find(&g.name, Kind::Gauge)?;
        match (m.per, &g.per) {
            (Some(_), None) => {
                return Err(Error::Per {
                    name: g.name.clone(),
                    why: "needs the value of its per-series dimension",
                });
            }
            (None, Some(_)) => {
                return Err(Error::Per {
                    name: g.name.clone(),
                    why: "has no per-series dimension",
                });
            }
            _ => {}
        }
        if by_series
            .insert((m.name, g.per.as_deref()), g.value)
            .is_some()
        {
            return Err(Error::Duplicate {
                name: g.name.clone(),
                per: g
                    .per
                    .as_ref()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default(),
            });
        }
    }

    let timestamp_unix_s = period_start(sample_unix_s, period_s);
    let storage_resolution = (period_s < 60).then_some(1);
    let base = dimensions.list();
    let datum = |m: &Metric, per: Option<&str>, value: u64| {
        let mut dims = base.clone();
        if let (Some(dim), Some(v)) = (m.per, per) {
            dims.push(Dimension::new(dim, v));
        }
        Datum {
            name: m.name.to_string(),
            unit: m.unit,
            value: value as f64,
            dimensions: dims,
            timestamp_unix_s,
            storage_resolution,
        }
    };
    let mut out = Vec::new();
    for m in &CATALOGUE {
        match m.kind {
            Kind::Counter => {
                if let Some((_, v)) = deltas.iter().find(|(k, _)| k.as_ref() == m.name) {
                    out.push(datum(m, None, *v));
                }
            }
            Kind::Gauge => {
                for ((_, per), v) in by_series
                    .range((m.name, None)..)
                    .take_while(|((n, _), _)| *n == m.name)
                {
                    out.push(datum(m, *per, *v));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

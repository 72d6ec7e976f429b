//! Tests of one period's datums: order, dimensions, timestamps, resolution and the caller's
//! mistakes; and the whole path from snapshots to request bodies.

use super::*;
use crate::aws::cloudwatch::{self, Unit};
use crate::aws::utc;
use catalogue::Role;
use deltas::Deltas;

/// 2026-12-06T20:45:00Z, just after a minute's boundary.
const SAMPLE: u64 = 1_796_589_900;
/// 2026-12-06T20:44:00Z, the minute it closes.
const MINUTE: u64 = 1_796_589_840;

fn dims() -> Dimensions {
    Dimensions {
        instance_id: "i-0123456789abcdef0".into(),
        nat_name: Some("nat-a".into()),
        asg: None,
    }
}

fn names(data: &[Datum]) -> Vec<&str> {
    data.iter().map(|d| d.name.as_str()).collect()
}

#[test]
fn periods() {
    for p in [1, 5, 10, 30, 60, 120, 300, 3600] {
        assert!(valid_period(p), "{p}");
    }
    for p in [0, 2, 15, 45, 90, 61] {
        assert!(!valid_period(p), "{p}");
    }
    assert_eq!(utc::iso8601(MINUTE as i64), "2026-12-06T20:44:00Z");
    // Half a period of jitter either side labels the same minute.
    assert_eq!(period_start(SAMPLE, 60), MINUTE);
    assert_eq!(period_start(SAMPLE + 29, 60), MINUTE);
    assert_eq!(period_start(SAMPLE - 29, 60), MINUTE);
    assert_eq!(period_start(SAMPLE + 30, 60), MINUTE + 60);
    assert_eq!(period_start(SAMPLE - 31, 60), MINUTE - 60);
    assert_eq!(period_start(SAMPLE + 3, 10), SAMPLE - 10);
    assert_eq!(period_start(SAMPLE + 7, 1), SAMPLE + 7);
    assert_eq!(period_start(10, 60), 0);
    assert_eq!(period_start(0, 0), 0);
}

#[test]
fn one_period_in_the_catalogue_s_order() {
    let deltas = BTreeMap::from([
        ("PacketsDropCount", 0),
        ("BytesOutToDestination", 1_500_000),
        ("ConnectionAttemptCount", 12),
    ]);
    let gauges = [
        Gauge::per("FailoverRole", "rtb-b", Role::Standby.value()),
        Gauge::new("MemAvailableBytes", 812_000_000),
        Gauge::per("FailoverRole", "rtb-a", Role::Owner.value()),
        Gauge::new("ActiveConnectionCount", 42),
    ];
    let data = datums(SAMPLE, 60, &deltas, &gauges, &dims()).unwrap();
    assert_eq!(
        names(&data),
        [
            "ActiveConnectionCount",
            "ConnectionAttemptCount",
            "BytesOutToDestination",
            "PacketsDropCount",
            "MemAvailableBytes",
            "FailoverRole",
            "FailoverRole",
        ]
    );
    let base = [
        Dimension::new("InstanceId", "i-0123456789abcdef0"),
        Dimension::new("NatName", "nat-a"),
    ];
    assert_eq!(
        data[2],
        Datum {
            name: "BytesOutToDestination".into(),
            unit: Unit::Bytes,
            value: 1_500_000.0,
            dimensions: base.to_vec(),
            timestamp_unix_s: MINUTE,
            storage_resolution: None,
        }
    );
    // A zero delta is published.
    assert_eq!(data[3].value, 0.0);
    assert_eq!(data[0].unit, Unit::Count);
    assert_eq!(data[4].unit, Unit::Bytes);
    // Per-table series by table id, its dimension last.
    let role = |d: &Datum| (d.dimensions[2].value.clone(), d.value, d.unit);
    assert_eq!(role(&data[5]), ("rtb-a".into(), 1.0, Unit::None));
    assert_eq!(role(&data[6]), ("rtb-b".into(), 2.0, Unit::None));
    assert_eq!(data[5].dimensions[2].name, "RouteTableId");
    assert_eq!(data[5].dimensions[..2], base);
    assert!(data.iter().all(|d| d.timestamp_unix_s == MINUTE));
    // The same inputs in another order give the same datums.
    let mut shuffled = gauges.to_vec();
    shuffled.reverse();
    assert_eq!(datums(SAMPLE, 60, &deltas, &shuffled, &dims()), Ok(data));
}

#[test]
fn dimensions_only_those_set() {
    let deltas = BTreeMap::from([("IdleTimeoutCount", 3)]);
    let one = |d: Dimensions| {
        datums(SAMPLE, 60, &deltas, &[], &d).unwrap()[0]
            .dimensions
            .iter()
            .map(|d| format!("{}={}", d.name, d.value))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        one(Dimensions {
            instance_id: "i-1".into(),
            nat_name: None,
            asg: None
        }),
        ["InstanceId=i-1"]
    );
    assert_eq!(
        one(Dimensions {
            instance_id: "i-1".into(),
            nat_name: Some("nat-a".into()),
            asg: Some("nat-asg".into())
        }),
        [
            "InstanceId=i-1",
            "NatName=nat-a",
            "AutoScalingGroupName=nat-asg"
        ]
    );
    assert_eq!(
        one(Dimensions {
            instance_id: "i-1".into(),
            nat_name: None,
            asg: Some("nat-asg".into())
        }),
        ["InstanceId=i-1", "AutoScalingGroupName=nat-asg"]
    );
}

#[test]
fn high_resolution_under_a_minute() {
    let deltas = BTreeMap::from([("PacketsInFromSource", 7)]);
    let d = datums(SAMPLE + 2, 10, &deltas, &[], &dims()).unwrap();
    assert_eq!(d[0].storage_resolution, Some(1));
    assert_eq!(d[0].timestamp_unix_s, SAMPLE - 10);
    let d = datums(SAMPLE, 300, &deltas, &[], &dims()).unwrap();
    assert_eq!(d[0].storage_resolution, None);
    assert_eq!(
        datums(SAMPLE, 45, &deltas, &[], &dims()),
        Err(Error::Period(45))
    );
}

#[test]
fn nothing_in_nothing_out() {
    let none: BTreeMap<&str, u64> = BTreeMap::new();
    assert_eq!(datums(SAMPLE, 60, &none, &[], &dims()), Ok(vec![]));
}

#[test]
fn the_caller_s_mistakes_are_named() {
    let none: BTreeMap<String, u64> = BTreeMap::new();
    assert_eq!(
        datums(SAMPLE, 60, &BTreeMap::from([("BytesOut", 1)]), &[], &dims()),
        Err(Error::Unknown("BytesOut".into()))
    );
    assert_eq!(
        datums(
            SAMPLE,
            60,
            &BTreeMap::from([("ActiveConnectionCount", 1)]),
            &[],
            &dims()
        ),
        Err(Error::WrongKind {
            name: "ActiveConnectionCount".into(),
            kind: Kind::Gauge
        })
    );
    assert_eq!(
        datums(
            SAMPLE,
            60,
            &none,
            &[Gauge::new("BytesInFromSource", 1)],
            &dims()
        ),
        Err(Error::WrongKind {
            name: "BytesInFromSource".into(),
            kind: Kind::Counter
        })
    );
    assert!(matches!(
        datums(SAMPLE, 60, &none, &[Gauge::new("FailoverRole", 1)], &dims()),
        Err(Error::Per { .. })
    ));
    assert!(matches!(
        datums(
            SAMPLE,
            60,
            &none,
            &[Gauge::per("ConntrackEntries", "rtb-a", 1)],
            &dims()
        ),
        Err(Error::Per { .. })
    ));
    let twice = [
        Gauge::per("FailoverRole", "rtb-a", 1),
        Gauge::per("FailoverRole", "rtb-a", 3),
    ];
    let err = datums(SAMPLE, 60, &none, &twice, &dims()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "metric \"FailoverRole\" (rtb-a): given twice in one sample"
    );
    assert!(matches!(
        datums(
            SAMPLE,
            60,
            &none,
            &[Gauge::new("ConntrackMax", 1), Gauge::new("ConntrackMax", 1)],
            &dims()
        ),
        Err(Error::Duplicate { .. })
    ));
}

#[test]
fn snapshots_to_request_bodies() {
    let mut tracker: Deltas<&'static str> = Deltas::new();
    let snapshot = |bytes: u64, drops: u64| {
        BTreeMap::from([("BytesOutToDestination", bytes), ("ConntrackDrops", drops)])
    };
    let gauges = [Gauge::new("ConntrackEntries", 3_000)];
    // The first sample: a baseline, so only the gauge goes out.
    let first = tracker.update(1, snapshot(10_000_000, 4));
    let data = datums(SAMPLE - 60, 60, &first.deltas, &gauges, &dims()).unwrap();
    assert_eq!(names(&data), ["ConntrackEntries"]);
    // The next minute: both counters' increases.
    let next = tracker.update(1, snapshot(12_500_000, 6));
    let data = datums(SAMPLE, 60, &next.deltas, &gauges, &dims()).unwrap();
    assert_eq!(
        names(&data),
        [
            "BytesOutToDestination",
            "ConntrackEntries",
            "ConntrackDrops"
        ]
    );
    let requests = cloudwatch::batches("NatAppliance", &data).unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].body,
        "Action=PutMetricData&Version=2010-08-01&Namespace=NatAppliance\
         &MetricData.member.1.MetricName=BytesOutToDestination\
         &MetricData.member.1.Unit=Bytes\
         &MetricData.member.1.Value=2500000\
         &MetricData.member.1.Timestamp=2026-12-06T20%3A44%3A00Z\
         &MetricData.member.1.Dimensions.member.1.Name=InstanceId\
         &MetricData.member.1.Dimensions.member.1.Value=i-0123456789abcdef0\
         &MetricData.member.1.Dimensions.member.2.Name=NatName\
         &MetricData.member.1.Dimensions.member.2.Value=nat-a\
         &MetricData.member.2.MetricName=ConntrackEntries\
         &MetricData.member.2.Unit=Count\
         &MetricData.member.2.Value=3000\
         &MetricData.member.2.Timestamp=2026-12-06T20%3A44%3A00Z\
         &MetricData.member.2.Dimensions.member.1.Name=InstanceId\
         &MetricData.member.2.Dimensions.member.1.Value=i-0123456789abcdef0\
         &MetricData.member.2.Dimensions.member.2.Name=NatName\
         &MetricData.member.2.Dimensions.member.2.Value=nat-a\
         &MetricData.member.3.MetricName=ConntrackDrops\
         &MetricData.member.3.Unit=Count\
         &MetricData.member.3.Value=2\
         &MetricData.member.3.Timestamp=2026-12-06T20%3A44%3A00Z\
         &MetricData.member.3.Dimensions.member.1.Name=InstanceId\
         &MetricData.member.3.Dimensions.member.1.Value=i-0123456789abcdef0\
         &MetricData.member.3.Dimensions.member.2.Name=NatName\
         &MetricData.member.3.Dimensions.member.2.Value=nat-a"
    );
}

#[test]
fn a_full_instance_fits_one_request() {
    // Every catalogue metric, three route tables, the longest ids: one request, small.
    let counters: BTreeMap<&str, u64> = catalogue::CATALOGUE
        .iter()
        .filter(|m| m.kind == Kind::Counter)
        .map(|m| (m.name, u64::from(u32::MAX)))
        .collect();
    let mut gauges: Vec<Gauge> = catalogue::CATALOGUE
        .iter()
        .filter(|m| m.kind == Kind::Gauge && m.per.is_none())
        .map(|m| Gauge::new(m.name, u64::from(u32::MAX)))
        .collect();
    for t in [
        "rtb-0123456789abcdef0",
        "rtb-0123456789abcdef1",
        "rtb-0123456789abcdef2",
    ] {
        gauges.push(Gauge::per("FailoverRole", t, Role::TakenOver.value()));
    }
    let d = Dimensions {
        instance_id: "i-0123456789abcdef0".into(),
        nat_name: Some("n".repeat(255)),
        asg: Some("a".repeat(255)),
    };
    let data = datums(SAMPLE, 60, &counters, &gauges, &d).unwrap();
    assert_eq!(data.len(), catalogue::series_per_instance(3));
    let requests = cloudwatch::batches("NatAppliance", &data).unwrap();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].body.len() < 40_000,
        "{}",
        requests[0].body.len()
    );
}

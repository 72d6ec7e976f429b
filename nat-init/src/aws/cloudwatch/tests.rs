//! Tests of the PutMetricData builder, batching, gzip, parsers and classifier. The XML bodies are
//! shaped after the CloudWatch API reference's Query answers.

use std::io::Read;

use super::*;
use crate::aws::sigv4::{self, Credentials, Request};

const NS: &str = "NatAppliance";
/// 2026-12-06T20:44:00Z.
const T: u64 = 1_796_589_840;

fn datum(name: &str, value: f64) -> Datum {
    Datum {
        name: name.into(),
        unit: Unit::Count,
        value,
        dimensions: vec![Dimension::new("InstanceId", "i-0123456789abcdef0")],
        timestamp_unix_s: T,
        storage_resolution: None,
    }
}

fn body(data: &[Datum]) -> String {
    put_metric_data(NS, data).unwrap().body
}

#[test]
fn the_timestamp_constant_is_the_instant_it_names() {
    assert_eq!(utc::iso8601(T as i64), "2026-12-06T20:44:00Z");
}

#[test]
fn one_datum_body() {
    let mut d = datum("BytesOutToDestination", 1_500_000.0);
    d.unit = Unit::Bytes;
    d.dimensions.push(Dimension::new("NatName", "nat a/b"));
    assert_eq!(
        body(&[d]),
        "Action=PutMetricData&Version=2010-08-01&Namespace=NatAppliance\
         &MetricData.member.1.MetricName=BytesOutToDestination\
         &MetricData.member.1.Unit=Bytes\
         &MetricData.member.1.Value=1500000\
         &MetricData.member.1.Timestamp=2026-12-06T20%3A44%3A00Z\
         &MetricData.member.1.Dimensions.member.1.Name=InstanceId\
         &MetricData.member.1.Dimensions.member.1.Value=i-0123456789abcdef0\
         &MetricData.member.1.Dimensions.member.2.Name=NatName\
         &MetricData.member.1.Dimensions.member.2.Value=nat%20a%2Fb"
    );
}

#[test]
fn members_are_numbered_in_order_with_their_options() {
    let mut a = datum("FailoverRole", 1.0);
    a.unit = Unit::None;
    a.dimensions.clear();
    a.storage_resolution = Some(1);
    let mut b = datum("ConntrackEntries", 7.0);
    b.storage_resolution = Some(60);
    b.timestamp_unix_s = T + 60;
    assert_eq!(
        body(&[a, b]),
        "Action=PutMetricData&Version=2010-08-01&Namespace=NatAppliance\
         &MetricData.member.1.MetricName=FailoverRole\
         &MetricData.member.1.Unit=None\
         &MetricData.member.1.Value=1\
         &MetricData.member.1.Timestamp=2026-12-06T20%3A44%3A00Z\
         &MetricData.member.1.StorageResolution=1\
         &MetricData.member.2.MetricName=ConntrackEntries\
         &MetricData.member.2.Unit=Count\
         &MetricData.member.2.Value=7\
         &MetricData.member.2.Timestamp=2026-12-06T20%3A45%3A00Z\
         &MetricData.member.2.Dimensions.member.1.Name=InstanceId\
         &MetricData.member.2.Dimensions.member.1.Value=i-0123456789abcdef0\
         &MetricData.member.2.StorageResolution=60"
    );
}

#[test]
fn namespaces_are_encoded_and_checked() {
    let d = [datum("X", 1.0)];
    let b = put_metric_data("Nat/Appliance #1", &d).unwrap().body;
    assert!(
        b.starts_with("Action=PutMetricData&Version=2010-08-01&Namespace=Nat%2FAppliance%20%231&")
    );
    for (ns, why) in [
        ("", "is empty"),
        ("AWS/NATGateway", "AWS/ is reserved for AWS services"),
        ("caf\u{e9}", "is not ASCII"),
        ("a\nb", "has a control character"),
        ("   ", "is only white space"),
    ] {
        assert_eq!(
            put_metric_data(ns, &d),
            Err(Error::Namespace {
                namespace: ns.into(),
                why
            }),
            "{ns:?}"
        );
    }
    assert!(put_metric_data(&"n".repeat(255), &d).is_ok());
    assert!(matches!(
        put_metric_data(&"n".repeat(256), &d),
        Err(Error::Namespace {
            why: "is too long",
            ..
        })
    ));
}

#[test]
fn unit_names_are_cloudwatch_s() {
    let names: Vec<&str> = [
        Unit::Count,
        Unit::Bytes,
        Unit::Bits,
        Unit::Percent,
        Unit::Seconds,
        Unit::Milliseconds,
        Unit::Microseconds,
        Unit::CountPerSecond,
        Unit::BytesPerSecond,
        Unit::BitsPerSecond,
        Unit::None,
    ]
    .iter()
    .map(|u| u.name())
    .collect();
    assert_eq!(
        names,
        [
            "Count",
            "Bytes",
            "Bits",
            "Percent",
            "Seconds",
            "Milliseconds",
            "Microseconds",
            "Count/Second",
            "Bytes/Second",
            "Bits/Second",
            "None"
        ]
    );
}

#[test]
fn values_print_exactly_without_exponents() {
    let cases: [(f64, &str); 15] = [
        (2f64.powi(100), "1267650600228229401496703205376"),
        (-2f64.powi(126), "-85070591730234615865843651857942052864"),
        (2f64.powi(127), "170141183460469230000000000000000000000"),
        (0.0, "0"),
        (-0.0, "0"),
        (1.0, "1"),
        (42.0, "42"),
        (1e6, "1000000"),
        (1e15, "1000000000000000"),
        (9_007_199_254_740_992.0, "9007199254740992"),
        (u64::MAX as f64, "18446744073709551616"),
        (-3.0, "-3"),
        (0.1, "0.1"),
        (99.5, "99.5"),
        (1.5e-7, "0.00000015"),
    ];
    for (v, text) in cases {
        assert_eq!(format_value(v), Ok(text.to_string()), "{v:e}");
        // What is sent reads back as the same double.
        assert_eq!(text.parse::<f64>().unwrap(), v);
    }
}

#[test]
fn the_range_is_two_to_the_360() {
    assert_eq!(MAX_MAGNITUDE, 2f64.powi(360));
    assert_eq!(MIN_MAGNITUDE, 2f64.powi(-360));
    assert!(format_value(MAX_MAGNITUDE).is_ok());
    assert!(format_value(-MAX_MAGNITUDE).is_ok());
    assert!(format_value(MIN_MAGNITUDE).is_ok());
    assert_eq!(format_value(MAX_MAGNITUDE * 2.0), Err(BadValue::OutOfRange));
    assert_eq!(
        format_value(-MAX_MAGNITUDE * 2.0),
        Err(BadValue::OutOfRange)
    );
    assert_eq!(format_value(MIN_MAGNITUDE / 2.0), Err(BadValue::OutOfRange));
    assert_eq!(format_value(f64::MIN_POSITIVE), Err(BadValue::OutOfRange));
}

#[test]
fn non_finite_values_are_refused_naming_the_metric() {
    for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let err =
            put_metric_data(NS, &[datum("ok", 1.0), datum("BytesInFromSource", v)]).unwrap_err();
        assert_eq!(
            err,
            Error::NotFinite {
                metric: "BytesInFromSource".into(),
                value: v.to_string()
            }
        );
        assert!(err.to_string().contains("\"BytesInFromSource\""), "{err}");
    }
    let err = put_metric_data(NS, &[datum("Big", 1e300)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "metric \"Big\": value 1e300 is outside CloudWatch's range (2^-360 to 2^360)"
    );
}

#[test]
fn dimensions_are_limited_and_checked() {
    let mut d = datum("M", 1.0);
    d.dimensions = (1..=30)
        .map(|i| Dimension::new(format!("D{i}"), "v"))
        .collect();
    let b = body(std::slice::from_ref(&d));
    assert!(b.ends_with("&MetricData.member.1.Dimensions.member.30.Value=v"));
    d.dimensions.push(Dimension::new("D31", "v"));
    assert_eq!(
        put_metric_data(NS, &[d]),
        Err(Error::TooManyDimensions {
            metric: "M".into(),
            count: 31
        })
    );

    let mut d = datum("M", 1.0);
    d.dimensions.push(Dimension::new("InstanceId", "i-other"));
    assert_eq!(
        put_metric_data(NS, &[d]),
        Err(Error::DuplicateDimension {
            metric: "M".into(),
            name: "InstanceId".into()
        })
    );

    let bad = |name: &str, value: &str| {
        let mut d = datum("M", 1.0);
        d.dimensions = vec![Dimension::new(name, value)];
        put_metric_data(NS, &[d]).unwrap_err()
    };
    assert!(matches!(
        bad("", "v"),
        Error::Text {
            field: "dimension name",
            why: "is empty",
            ..
        }
    ));
    assert!(matches!(
        bad(":x", "v"),
        Error::Text {
            field: "dimension name",
            why: "starts with a colon",
            ..
        }
    ));
    assert!(matches!(
        bad("n", ""),
        Error::Text {
            field: "dimension value",
            why: "is empty",
            ..
        }
    ));
    assert!(matches!(
        bad("n", "\u{e9}t\u{e9}"),
        Error::Text {
            field: "dimension value",
            why: "is not ASCII",
            ..
        }
    ));
    assert!(matches!(
        bad(&"n".repeat(256), "v"),
        Error::Text {
            field: "dimension name",
            why: "is too long",
            ..
        }
    ));
    assert!(matches!(
        bad("n", &"v".repeat(1025)),
        Error::Text {
            field: "dimension value",
            why: "is too long",
            ..
        }
    ));
    let mut d = datum("M", 1.0);
    d.dimensions = vec![Dimension::new("n".repeat(255), "v".repeat(1024))];
    assert!(put_metric_data(NS, &[d]).is_ok());
}

#[test]
fn names_resolutions_and_timestamps_are_checked() {
    assert!(matches!(
        put_metric_data(NS, &[datum("", 1.0)]),
        Err(Error::Text {
            field: "name",
            why: "is empty",
            ..
        })
    ));
    assert!(put_metric_data(NS, &[datum(&"m".repeat(255), 1.0)]).is_ok());
    assert!(matches!(
        put_metric_data(NS, &[datum(&"m".repeat(256), 1.0)]),
        Err(Error::Text {
            field: "name",
            why: "is too long",
            ..
        })
    ));

    let mut d = datum("M", 1.0);
    d.storage_resolution = Some(5);
    assert_eq!(
        put_metric_data(NS, &[d]),
        Err(Error::StorageResolution {
            metric: "M".into(),
            value: 5
        })
    );

    let mut d = datum("M", 1.0);
    d.timestamp_unix_s = YEAR_10000_UNIX_S - 1;
    assert!(body(std::slice::from_ref(&d)).contains("Timestamp=9999-12-31T23%3A59%3A59Z"));
    d.timestamp_unix_s = YEAR_10000_UNIX_S;
    assert!(matches!(
        put_metric_data(NS, &[d]),
        Err(Error::Timestamp { .. })
    ));
    let mut d = datum("M", 1.0);
    d.timestamp_unix_s = u64::MAX;
    assert!(matches!(
        put_metric_data(NS, &[d]),
        Err(Error::Timestamp { .. })
    ));
}

#[test]
fn one_request_holds_one_to_a_thousand_datums() {
    assert_eq!(put_metric_data(NS, &[]), Err(Error::Empty));
    let data: Vec<Datum> = (0..1001).map(|i| datum(&format!("M{i}"), 1.0)).collect();
    let full = put_metric_data(NS, &data[..1000]).unwrap();
    assert_eq!(full.datums, 1000);
    assert!(
        full.body
            .contains("&MetricData.member.1000.MetricName=M999&")
    );
    assert_eq!(
        put_metric_data(NS, &data),
        Err(Error::TooManyDatums { count: 1001 })
    );
}

/// Each batch is what `put_metric_data` makes of its slice, and the slices cover `data` in
/// order.
fn check_batches(data: &[Datum], got: &[PutMetricData]) {
    let mut at = 0;
    for b in got {
        let slice = &data[at..at + b.datums];
        assert_eq!(put_metric_data(NS, slice).as_ref(), Ok(b));
        at += b.datums;
    }
    assert_eq!(at, data.len());
}

#[test]
fn batches_split_at_a_thousand_datums_in_order() {
    assert_eq!(batches(NS, &[]), Ok(vec![]));
    let data: Vec<Datum> = (0..2500)
        .map(|i| datum(&format!("M{i}"), i as f64))
        .collect();
    let got = batches(NS, &data).unwrap();
    assert_eq!(
        got.iter().map(|b| b.datums).collect::<Vec<_>>(),
        [1000, 1000, 500]
    );
    check_batches(&data, &got);
    assert!(
        got[1]
            .body
            .contains("&MetricData.member.1.MetricName=M1000&")
    );
    assert!(
        got[2]
            .body
            .contains("&MetricData.member.500.MetricName=M2499&")
    );
}

#[test]
fn batches_split_at_the_body_size_and_are_full() {
    // About 31 kB a datum: 30 dimensions with the longest values.
    let big = |i: usize| {
        let mut d = datum(&format!("M{i}"), 1.0);
        d.dimensions = (1..=30)
            .map(|j| {
                Dimension::new(
                    format!("D{j}"),
                    format!("{i}-").repeat(1024)[..1024].to_string(),
                )
            })
            .collect();
        d
    };
    let data: Vec<Datum> = (0..100).map(big).collect();
    let got = batches(NS, &data).unwrap();
    assert!(got.len() >= 3, "{}", got.len());
    check_batches(&data, &got);
    let mut at = 0;
    for b in &got {
        assert!(b.body.len() <= MAX_BODY_BYTES);
        at += b.datums;
        if let Some(next) = data.get(at) {
            // Full: the next datum, where it would have gone, does not fit.
            let part = member(b.datums + 1, next).unwrap();
            assert!(b.body.len() + part.len() > MAX_BODY_BYTES);
        }
    }
}

#[test]
fn batches_within_exact_limits() {
    let data: Vec<Datum> = (0..5).map(|i| datum(&format!("M{i}"), 1.0)).collect();
    let one = put_metric_data(NS, &data[..1]).unwrap().body.len();
    let two = put_metric_data(NS, &data[..2]).unwrap().body.len();
    // A limit of exactly two datums' body: pairs.
    let got = batches_within(NS, &data, 1000, two).unwrap();
    assert_eq!(got.iter().map(|b| b.datums).collect::<Vec<_>>(), [2, 2, 1]);
    check_batches(&data, &got);
    // One byte less: singles.
    let got = batches_within(NS, &data, 1000, two - 1).unwrap();
    assert_eq!(got.len(), 5);
    // The count limit alone.
    let got = batches_within(NS, &data, 3, usize::MAX).unwrap();
    assert_eq!(got.iter().map(|b| b.datums).collect::<Vec<_>>(), [3, 2]);
    // A datum that cannot fit even alone.
    assert_eq!(
        batches_within(NS, &data, 1000, one - 1),
        Err(Error::TooLarge { size: one })
    );
}

#[test]
fn batches_report_the_first_bad_datum() {
    let data = [datum("a", 1.0), datum("b", f64::NAN)];
    assert!(matches!(
        batches(NS, &data),
        Err(Error::NotFinite { metric, .. }) if metric == "b"
    ));
    assert!(matches!(
        batches("AWS/NATGateway", &data),
        Err(Error::Namespace { .. })
    ));
}

#[test]
fn gzip_is_deterministic_and_decompresses_back() {
    let data: Vec<Datum> = (0..200)
        .map(|i| datum(&format!("M{i}"), i as f64))
        .collect();
    let req = put_metric_data(NS, &data).unwrap();
    let a = req.gzip().unwrap();
    let b = req.clone().gzip().unwrap();
    assert_eq!(a, b);
    // Magic, deflate, no flags (so no file name or comment), mtime 0, "unknown" OS.
    assert_eq!(&a[..4], &[0x1f, 0x8b, 8, 0]);
    assert_eq!(&a[4..8], &[0, 0, 0, 0]);
    assert_eq!(a[9], 255);
    assert!(
        a.len() * 5 < req.body.len(),
        "{} of {}",
        a.len(),
        req.body.len()
    );

    let mut back = String::new();
    flate2::read::GzDecoder::new(&a[..])
        .read_to_string(&mut back)
        .unwrap();
    assert_eq!(back, req.body);

    // A short body too (one deflate block, stored or fixed).
    let other = PutMetricData {
        body: "Action=PutMetricData".into(),
        datums: 0,
    };
    let z = other.gzip().unwrap();
    let mut back = Vec::new();
    flate2::read::GzDecoder::new(&z[..])
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, b"Action=PutMetricData");
    assert_eq!(z, other.gzip().unwrap());
}

#[test]
fn signed_for_monitoring() {
    let req = put_metric_data(NS, &[datum("M", 1.0)]).unwrap();
    let creds = Credentials {
        access_key_id: "ASIAEXAMPLEKEYID1234".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY".into(),
        session_token: None,
        expiration_unix_s: None,
    };
    let signed = |body: &[u8], encoding: Option<&str>| {
        let mut headers = vec![("Content-Type", CONTENT_TYPE)];
        if let Some(e) = encoding {
            headers.push(("Content-Encoding", e));
        }
        let r = Request {
            method: "POST",
            host: "monitoring.eu-west-1.amazonaws.com",
            path: "/",
            query: &[],
            headers: &headers,
            body,
        };
        sigv4::sign(&r, &creds, "eu-west-1", SERVICE, T as i64)
    };
    let plain = signed(req.body.as_bytes(), None);
    assert!(
        plain[1]
            .1
            .contains("Credential=ASIAEXAMPLEKEYID1234/20261206/eu-west-1/monitoring/aws4_request"),
        "{}",
        plain[1].1
    );
    let gz = req.gzip().unwrap();
    let zipped = signed(&gz, Some(CONTENT_ENCODING_GZIP));
    assert!(
        zipped[1]
            .1
            .contains("SignedHeaders=content-encoding;content-type;host;x-amz-date")
    );
    assert_ne!(plain[1].1, zipped[1].1);
}

const THROTTLED: &str = r#"<ErrorResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/">
  <Error>
    <Type>Sender</Type>
    <Code>Throttling</Code>
    <Message>Rate exceeded</Message>
  </Error>
  <RequestId>2f85f68d-980b-11e7-a296-21716fd2d2e3</RequestId>
</ErrorResponse>"#;

fn error_doc(kind: &str, code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"http://monitoring.amazonaws.com/doc/2010-08-01/\"><Error>\
         <Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>\
         <RequestId>req-1</RequestId></ErrorResponse>"
    )
}

#[test]
fn error_documents_parse() {
    assert_eq!(
        parse_error(THROTTLED),
        Ok(ApiError {
            code: "Throttling".into(),
            message: "Rate exceeded".into(),
            request_id: Some("2f85f68d-980b-11e7-a296-21716fd2d2e3".into()),
        })
    );
    assert!(matches!(
        parse_error("<PutMetricDataResponse/>"),
        Err(ParseError::Root { .. })
    ));
    assert!(matches!(
        parse_error("<ErrorResponse><RequestId>x</RequestId></ErrorResponse>"),
        Err(ParseError::Missing { .. })
    ));
    assert!(matches!(parse_error("not xml"), Err(ParseError::Xml(_))));
}

#[test]
fn errors_classify() {
    let class = |status, kind, code: &str, message| {
        let e = parse_error(&error_doc(kind, code, message)).unwrap();
        classify_error(status, &e)
    };
    assert_eq!(
        class(400, "Sender", "Throttling", "Rate exceeded"),
        ErrorClass::Retry
    );
    assert_eq!(
        class(400, "Sender", "ThrottlingException", "Rate exceeded"),
        ErrorClass::Retry
    );
    assert_eq!(
        class(500, "Receiver", "InternalServiceFault", "oops"),
        ErrorClass::Retry
    );
    // The code decides even on an odd status.
    assert_eq!(
        class(400, "Receiver", "InternalServiceFault", "oops"),
        ErrorClass::Retry
    );
    assert_eq!(
        class(503, "Receiver", "ServiceUnavailable", "later"),
        ErrorClass::Retry
    );
    assert_eq!(class(502, "Receiver", "Whatever", ""), ErrorClass::Retry);
    assert_eq!(classify(503), ErrorClass::Retry);
    assert_eq!(classify(429), ErrorClass::Retry);
    assert_eq!(classify(400), ErrorClass::Fatal);

    for code in [
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
    ] {
        assert_eq!(
            class(403, "Sender", code, "token"),
            ErrorClass::Credentials,
            "{code}"
        );
    }
    for code in ["AccessDenied", "AccessDeniedException", "NotAuthorized"] {
        assert_eq!(
            class(403, "Sender", code, "no"),
            ErrorClass::Denied,
            "{code}"
        );
    }
    assert_eq!(
        class(400, "Sender", "RequestExpired", "Request has expired."),
        ErrorClass::Clock
    );
    assert_eq!(
        class(
            403,
            "Sender",
            "SignatureDoesNotMatch",
            "Signature expired: 20261206T200000Z is now earlier than 20261206T203944Z"
        ),
        ErrorClass::Clock
    );
    for code in [
        "InvalidParameterValue",
        "InvalidParameterCombination",
        "MissingParameter",
        "SignatureDoesNotMatch",
    ] {
        assert_eq!(
            class(400, "Sender", code, "bad"),
            ErrorClass::Fatal,
            "{code}"
        );
    }
    // A bug stays a bug even if the status says otherwise.
    assert_eq!(
        class(500, "Sender", "InvalidParameterValue", "bad"),
        ErrorClass::Fatal
    );
}

#[test]
fn success_answers_parse() {
    let ok = r#"<PutMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/">
  <ResponseMetadata>
    <RequestId>e16fc4d3-9a04-11e0-9362-093a1cae5385</RequestId>
  </ResponseMetadata>
</PutMetricDataResponse>"#;
    assert_eq!(
        parse_put_metric_data(ok),
        Ok(Some("e16fc4d3-9a04-11e0-9362-093a1cae5385".into()))
    );
    assert_eq!(
        parse_put_metric_data("<PutMetricDataResponse><ResponseMetadata/></PutMetricDataResponse>"),
        Ok(None)
    );
    assert!(matches!(
        parse_put_metric_data(THROTTLED),
        Err(ParseError::Root { .. })
    ));
    assert!(matches!(
        parse_put_metric_data("<PutMetricDataResponse>"),
        Err(ParseError::Xml(_))
    ));
    // No DTD, so no entity expansion from the network.
    assert!(matches!(
        parse_put_metric_data(
            "<!DOCTYPE x [<!ENTITY a \"b\">]><PutMetricDataResponse>&a;</PutMetricDataResponse>"
        ),
        Err(ParseError::Xml(_))
    ));
}

#[test]
fn the_signed_request_carries_every_header_the_signature_names() {
    let creds = Credentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: Some("token".into()),
        expiration_unix_s: None,
    };
    let body = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0];
    let req = signed_request(
        "monitoring.us-east-1.amazonaws.com",
        "us-east-1",
        &creds,
        body.clone(),
        1_700_000_000,
    );
    let bytes = req.to_bytes("monitoring.us-east-1.amazonaws.com").unwrap();
    let wire = String::from_utf8_lossy(&bytes).into_owned();
    let head = wire.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    let signed = head
        .split("signedheaders=")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap()
        .to_string();
    for h in signed.split(';') {
        assert!(
            head.contains(&format!("\r\n{h}: ")),
            "{h} is signed but not sent:\n{head}"
        );
    }
    assert!(signed.contains("content-encoding"), "{signed}");
    assert!(head.contains("\r\ncontent-encoding: gzip"), "{head}");
    assert!(bytes.ends_with(&body));
}

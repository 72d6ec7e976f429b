//! CloudWatch's Query API for the one call the appliance makes, `PutMetricData` (service
//! `monitoring`, `Version=2010-08-01`, form-encoded POST, XML answers): datums to request bodies
//! split within CloudWatch's limits, the optional gzip of a body, the answer and error parsers,
//! and the error classifier. Pure like [`super::ec2`]: the worker that signs and sends these (and
//! [`crate::metrics`], which decides what to publish) lives elsewhere.
//!
//! A sibling of [`super::ec2::Call`], not a generalisation of it: `Call` carries an
//! [`super::ec2::Action`] that the worker and [`super::iam`] key permissions and resource hints
//! on, while a PutMetricData body has one action, its own version, and must be measured while it
//! is built (the size limit below). What the two share is reused: the form encoding
//! ([`uri_encode`]), the content type, the error document ([`ec2::parse_error`]) and the error
//! classes ([`ErrorClass`]).
//!
//! Limits (Amazon CloudWatch API Reference, `PutMetricData`, `MetricDatum` and `Dimension`, as
//! read in December 2026): a request carries at most 1000 metrics and is at most 1 MB for HTTP
//! POST (a gzip-compressed payload is accepted); a datum has at most 30 dimensions; metric and
//! dimension names are 1-255 characters, dimension values 1-1024, namespaces 1-255, all ASCII
//! without control characters; a value is finite and within -2^360..2^360 (NaN and infinities
//! are refused); `StorageResolution` is 1 or 60. Timestamps more than two weeks old or two hours
//! ahead are refused too, but that needs the clock: the caller's check, not this module's.

use std::io::Write;

use flate2::{Compression, GzBuilder};

use super::ec2::{self, ApiError, ErrorClass, ParseError};
use super::sigv4::uri_encode;
use super::utc;

/// The SigV4 service name, also the endpoint's first label.
pub const SERVICE: &str = "monitoring";
/// The API version every request names.
pub const API_VERSION: &str = "2010-08-01";
/// The one action this module builds.
pub const ACTION: &str = "PutMetricData";
/// The IAM permission it needs (no resource-level permissions: `Resource: *`; the condition
/// key `cloudwatch:namespace` can narrow it).
pub const PERMISSION: &str = "cloudwatch:PutMetricData";
/// The request body's content type, EC2's.
pub const CONTENT_TYPE: &str = ec2::CONTENT_TYPE;
/// The `Content-Encoding` of a body from [`PutMetricData::gzip`].
pub const CONTENT_ENCODING_GZIP: &str = "gzip";

/// Datums in one request.
pub const MAX_DATUMS: usize = 1000;
/// Dimensions on one datum.
pub const MAX_DIMENSIONS: usize = 30;
/// Bytes of one (uncompressed) request body. The reference says "1 MB" without saying which
/// one; 10^6 is within it under either reading, leaves the headers room under 2^20, and is
/// about 100 times what the appliance sends in a period.
pub const MAX_BODY_BYTES: usize = 1_000_000;
/// Characters of a namespace, a metric name or a dimension name.
pub const MAX_NAME_LEN: usize = 255;
/// Characters of a dimension value.
pub const MAX_DIMENSION_VALUE_LEN: usize = 1024;
/// The largest magnitude CloudWatch takes, 2^360 (exponent field 1023 + 360), and the smallest
/// non-zero one, 2^-360.
const MAX_MAGNITUDE: f64 = f64::from_bits((1023 + 360) << 52);
const MIN_MAGNITUDE: f64 = f64::from_bits((1023 - 360) << 52);
/// 2^127: every integral double below it in magnitude fits an i128.
const I128_LIMIT: f64 = f64::from_bits((1023 + 127) << 52);
/// 9999-12-31T23:59:59Z + 1: past it an ISO 8601 year has five digits.
const YEAR_10000_UNIX_S: u64 = 253_402_300_800;
/// Fixed, so the same body always compresses to the same bytes (flate2's default level).
const GZIP_LEVEL: u32 = 6;

/// The units the appliance's metrics use, by their CloudWatch names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    Count,
    Bytes,
    Bits,
    Percent,
    Seconds,
    Milliseconds,
    Microseconds,
    CountPerSecond,
    BytesPerSecond,
    BitsPerSecond,
    /// A value with no unit (a code, such as a failover role).
    None,
}

impl Unit {
    /// The `Unit=` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Bytes => "Bytes",
            Self::Bits => "Bits",
            Self::Percent => "Percent",
            Self::Seconds => "Seconds",
            Self::Milliseconds => "Milliseconds",
            Self::Microseconds => "Microseconds",
            Self::CountPerSecond => "Count/Second",
            Self::BytesPerSecond => "Bytes/Second",
            Self::BitsPerSecond => "Bits/Second",
            Self::None => "None",
        }
    }
}

/// One name/value pair of a metric's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dimension {
    pub name: String,
    pub value: String,
}

impl Dimension {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// One data point.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub name: String,
    pub unit: Unit,
    pub value: f64,
    pub dimensions: Vec<Dimension>,
    pub timestamp_unix_s: u64,
    /// `Some(1)` for a high-resolution metric; `None` is CloudWatch's default, 60.
    pub storage_resolution: Option<u32>,
}

/// Why datums cannot become a request. Each names what is wrong and, for a datum, its metric.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("namespace {namespace:?}: {why}")]
    Namespace {
        namespace: String,
        why: &'static str,
    },
    #[error("metric {metric:?}: {field} {value:?}: {why}")]
    Text {
        metric: String,
        field: &'static str,
        value: String,
        why: &'static str,
    },
    #[error(
        "metric {metric:?}: value {value} is not finite; CloudWatch refuses NaN and infinities"
    )]
    NotFinite { metric: String, value: String },
    #[error("metric {metric:?}: value {value} is outside CloudWatch's range (2^-360 to 2^360)")]
    OutOfRange { metric: String, value: String },
    #[error("metric {metric:?}: {count} dimensions, CloudWatch takes at most {MAX_DIMENSIONS}")]
    TooManyDimensions { metric: String, count: usize },
    #[error("metric {metric:?}: dimension {name:?} given twice")]
    DuplicateDimension { metric: String, name: String },
    #[error("metric {metric:?}: storage resolution {value} is neither 1 nor 60")]
    StorageResolution { metric: String, value: u32 },
    #[error("metric {metric:?}: timestamp {unix_s} is past the year 9999")]
    Timestamp { metric: String, unix_s: u64 },
    #[error("a request needs at least one datum")]
    Empty,
    #[error("{count} datums in one request, CloudWatch takes at most {MAX_DATUMS}")]
    TooManyDatums { count: usize },
    #[error("request body of {size} bytes, over the {MAX_BODY_BYTES} this module sends")]
    TooLarge { size: usize },
    #[error("gzip: {0}")]
    Gzip(String),
}

/// One PutMetricData request: its form body and how many datums it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutMetricData {
    pub body: String,
    pub datums: usize,
}

impl PutMetricData {
    /// The body gzip-compressed, for `Content-Encoding: gzip` (sign the compressed bytes: they
    /// are the payload). The same body always gives the same bytes: a fixed level, and a header
    /// with no time, no file name and the "unknown" OS byte.
    pub fn gzip(&self) -> Result<Vec<u8>, Error> {
        let mut encoder = GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(Vec::new(), Compression::new(GZIP_LEVEL));
        encoder
            .write_all(self.body.as_bytes())
            .map_err(|e| Error::Gzip(e.to_string()))?;
        encoder.finish().map_err(|e| Error::Gzip(e.to_string()))
    }
}

/// The signed HTTP request for one gzip-compressed PutMetricData body to `host`: every header
/// the signature names is on the request (`Content-Encoding` too, or the service cannot read the
/// body and the signature does not match).
pub fn signed_request(
    host: &str,
    region: &str,
    creds: &super::sigv4::Credentials,
    gzip_body: Vec<u8>,
    unix_time_s: i64,
) -> crate::http::Request {
    let headers = [
        ("Content-Encoding", CONTENT_ENCODING_GZIP),
        ("Content-Type", CONTENT_TYPE),
    ];
    let signed = super::sigv4::sign(
        &super::sigv4::Request {
            method: "POST",
            host,
            path: "/",
            query: &[],
            headers: &headers,
            body: &gzip_body,
        },
        creds,
        region,
        SERVICE,
        unix_time_s,
    );
    let mut req =
        crate::http::Request::new("POST", "/").header("Content-Encoding", CONTENT_ENCODING_GZIP);
    for (k, v) in &signed {
        req = req.header(k, v);
    }
    req.body(CONTENT_TYPE, gzip_body)
}

/// One request for all of `data`, in order; an error if they do not fit in one (see
/// [`batches`] to split them).
pub fn put_metric_data(namespace: &str, data: &[Datum]) -> Result<PutMetricData, Error> {
    if data.is_empty() {
        return Err(Error::Empty);
    }
    if data.len() > MAX_DATUMS {
        return Err(Error::TooManyDatums { count: data.len() });
    }
    let mut body = prefix(namespace)?;
    for (i, datum) in data.iter().enumerate() {
        body.push_str(&member(i + 1, datum)?);
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(Error::TooLarge { size: body.len() });
    }
    Ok(PutMetricData {
        body,
        datums: data.len(),
    })
}

/// `data` as few requests as the limits allow, in order: each as full as it can be before the
/// next datum would pass [`MAX_DATUMS`] or [`MAX_BODY_BYTES`]. No datums, no requests.
pub fn batches(namespace: &str, data: &[Datum]) -> Result<Vec<PutMetricData>, Error> {
    batches_within(namespace, data, MAX_DATUMS, MAX_BODY_BYTES)
}

fn batches_within(
    namespace: &str,
    data: &[Datum],
    max_datums: usize,
    max_bytes: usize,
) -> Result<Vec<PutMetricData>, Error> {
    let head = prefix(namespace)?;
    let mut out = Vec::new();
    let mut body = head.clone();
    let mut count = 0;
    for datum in data {
        // A member's length depends on its index, so it is encoded for the place it takes.
        let mut part = member(count + 1, datum)?;
        if count > 0 && (count == max_datums || body.len() + part.len() > max_bytes) {
            out.push(PutMetricData {
                body: std::mem::replace(&mut body, head.clone()),
                datums: count,
            });
            count = 0;
            part = member(1, datum)?;
        }
        if body.len() + part.len() > max_bytes {
            return Err(Error::TooLarge {
                size: body.len() + part.len(),
            });
        }
        body.push_str(&part);
        count += 1;
    }
    if count > 0 {
        out.push(PutMetricData {
            body,
            datums: count,
        });
    }
    Ok(out)
}

/// `Action=PutMetricData&Version=2010-08-01&Namespace=...`.
fn prefix(namespace: &str) -> Result<String, Error> {
    let bad = |why| Error::Namespace {
        namespace: namespace.chars().take(80).collect(),
        why,
    };
    if let Err(why) = check_text(namespace, MAX_NAME_LEN) {
        return Err(bad(why));
    }
    // AWS's own namespaces: publishing into one would pass our data off as the service's.
    if namespace.starts_with("AWS/") {
        return Err(bad("AWS/ is reserved for AWS services"));
    }
    Ok(format!(
        "Action={ACTION}&Version={API_VERSION}&Namespace={}",
        uri_encode(namespace, false)
    ))
}

/// `&MetricData.member.N.…` for one datum, validated.
fn member(n: usize, d: &Datum) -> Result<String, Error> {
    let metric = || d.name.chars().take(80).collect::<String>();
    let text = |field, value: &str, max| {
        check_text(value, max).map_err(|why| Error::Text {
            metric: metric(),
            field,
            value: value.chars().take(80).collect(),
            why,
        })
    };
    text("name", &d.name, MAX_NAME_LEN)?;
    let value = format_value(d.value).map_err(|bad| match bad {
        BadValue::NotFinite => Error::NotFinite {
            metric: metric(),
            value: d.value.to_string(),
        },
        BadValue::OutOfRange => Error::OutOfRange {
            metric: metric(),
            value: format!("{:e}", d.value),
        },
    })?;
    if d.dimensions.len() > MAX_DIMENSIONS {
        return Err(Error::TooManyDimensions {
            metric: metric(),
            count: d.dimensions.len(),
        });
    }
    if d.timestamp_unix_s >= YEAR_10000_UNIX_S {
        return Err(Error::Timestamp {
            metric: metric(),
            unix_s: d.timestamp_unix_s,
        });
    }
    // Below YEAR_10000_UNIX_S, so within i64.
    let timestamp = utc::iso8601(i64::try_from(d.timestamp_unix_s).unwrap_or(i64::MAX));

    let key = format!("MetricData.member.{n}");
    let mut out = String::new();
    let mut param = |k: &str, v: &str| {
        out.push('&');
        out.push_str(&uri_encode(k, false));
        out.push('=');
        out.push_str(&uri_encode(v, false));
    };
    param(&format!("{key}.MetricName"), &d.name);
    param(&format!("{key}.Unit"), d.unit.name());
    param(&format!("{key}.Value"), &value);
    param(&format!("{key}.Timestamp"), &timestamp);
    for (i, dim) in d.dimensions.iter().enumerate() {
        text("dimension name", &dim.name, MAX_NAME_LEN)?;
        if dim.name.starts_with(':') {
            return Err(Error::Text {
                metric: metric(),
                field: "dimension name",
                value: dim.name.chars().take(80).collect(),
                why: "starts with a colon",
            });
        }
        text("dimension value", &dim.value, MAX_DIMENSION_VALUE_LEN)?;
        if d.dimensions[..i].iter().any(|o| o.name == dim.name) {
            return Err(Error::DuplicateDimension {
                metric: metric(),
                name: dim.name.chars().take(80).collect(),
            });
        }
        let dk = format!("{key}.Dimensions.member.{}", i + 1);
        param(&format!("{dk}.Name"), &dim.name);
        param(&format!("{dk}.Value"), &dim.value);
    }
    match d.storage_resolution {
        None => {}
        Some(r @ (1 | 60)) => param(&format!("{key}.StorageResolution"), &r.to_string()),
        Some(value) => {
            return Err(Error::StorageResolution {
                metric: metric(),
                value,
            });
        }
    }
    Ok(out)
}

/// CloudWatch's rule for names and values: 1 to `max` ASCII characters, no control character,
/// at least one that is not white space.
fn check_text(s: &str, max: usize) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("is empty");
    }
    if s.len() > max {
        return Err("is too long");
    }
    if !s.is_ascii() {
        return Err("is not ASCII");
    }
    if s.bytes().any(|b| b.is_ascii_control()) {
        return Err("has a control character");
    }
    if s.bytes().all(|b| b == b' ') {
        return Err("is only white space");
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BadValue {
    NotFinite,
    OutOfRange,
}

/// A value as sent, always reading back as the same double and never with an exponent
/// (`1000000`, not `1e6`): an integral value below 2^127 as its exact digits (so 2^64 is
/// `18446744073709551616`, not Rust's shortest `18446744073709552000`), `-0` as `0`, and any
/// other as Rust's shortest round-trip decimal.
fn format_value(v: f64) -> Result<String, BadValue> {
    if !v.is_finite() {
        return Err(BadValue::NotFinite);
    }
    let m = v.abs();
    if m > MAX_MAGNITUDE || (m != 0.0 && m < MIN_MAGNITUDE) {
        return Err(BadValue::OutOfRange);
    }
    if v == 0.0 {
        return Ok("0".to_string());
    }
    if v.fract() == 0.0 && m < I128_LIMIT {
        // Integral and below 2^127 in magnitude, so the conversion is exact.
        return Ok((v as i128).to_string());
    }
    Ok(v.to_string())
}

/// A failed call's error document. CloudWatch's is `<ErrorResponse><Error><Type>`, `<Code>`,
/// `<Message></Error><RequestId>`, which EC2's parser already reads (the `Type`, `Sender` or
/// `Receiver`, adds nothing the status does not say).
pub fn parse_error(body: &str) -> Result<ApiError, ParseError> {
    ec2::parse_error(body)
}

/// What to do about a failed PutMetricData, on EC2's classes:
/// - throttling and server faults (5xx, `InternalServiceFault`): [`ErrorClass::Retry`] with
///   back-off;
/// - expired or unknown credentials: [`ErrorClass::Credentials`], refresh then retry;
/// - `AccessDenied`, `NotAuthorized`: [`ErrorClass::Denied`], the line naming [`PERMISSION`];
/// - a skewed clock: [`ErrorClass::Clock`];
/// - `InvalidParameterValue`, `InvalidParameterCombination`, `MissingParameter` and any other
///   4xx: [`ErrorClass::Fatal`]. Here that is a bug in this module's requests (every input is
///   checked before sending), so the same request must not be sent again.
pub fn classify_error(http_status: u16, error: &ApiError) -> ErrorClass {
    match error.code.as_str() {
        "InternalServiceFault" | "InternalServiceError" => ErrorClass::Retry,
        "NotAuthorized" => ErrorClass::Denied,
        "InvalidParameterValue" | "InvalidParameterCombination" | "MissingParameter" => {
            ErrorClass::Fatal
        }
        _ => ec2::classify_error(http_status, error),
    }
}

/// [`classify_error`] for an answer without a readable error document.
pub fn classify(http_status: u16) -> ErrorClass {
    ec2::classify(http_status, None)
}

/// A successful answer, `<PutMetricDataResponse><ResponseMetadata><RequestId>`: its request
/// id, when there is one. HTTP 200 is the success; a body that does not parse is an error to
/// log, never a reason to send the datums again (CloudWatch would count them twice).
pub fn parse_put_metric_data(body: &str) -> Result<Option<String>, ParseError> {
    // roxmltree refuses DTDs by default, so no entity expansion from the network.
    let doc = roxmltree::Document::parse(body).map_err(|e| ParseError::Xml(e.to_string()))?;
    let root = doc.root_element();
    let expected = format!("{ACTION}Response");
    if root.tag_name().name() != expected {
        return Err(ParseError::Root {
            expected,
            found: root.tag_name().name().chars().take(80).collect(),
        });
    }
    let id = child(root, "ResponseMetadata")
        .and_then(|m| child(m, "RequestId"))
        .and_then(|r| r.text())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    Ok(id)
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

#[cfg(test)]
mod tests;

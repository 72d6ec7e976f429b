//! Fuzzes the HTTP/1.1 response parser with the AWS limit (chunked bodies, trailers, headers):
//! no panic, a decoded body never larger than its input, and a complete answer stays the same
//! answer when more bytes follow it, or when it is cut anywhere before its end (incomplete).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nat_init::http::{ResponseError, parse_response_max};

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(r) = parse_response_max(data, false, MAX) else {
        let _ = parse_response_max(data, true, MAX);
        return;
    };
    assert!(r.body.len() <= data.len());
    // Without EOF an answer is only complete when its framing says so: more bytes change nothing.
    let mut more = data.to_vec();
    more.extend_from_slice(b"0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n");
    if more.len() <= MAX {
        assert_eq!(parse_response_max(&more, false, MAX), Ok(r.clone()));
    }
    if let Some(last) = data.len().checked_sub(1) {
        let cut = parse_response_max(&data[..last], false, MAX);
        assert!(
            cut == Err(ResponseError::Incomplete) || cut == Ok(r),
            "{cut:?}"
        );
    }
});

//! Fuzzes the IMDS HTTP response parser and the document parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nat_init::http::parse_response;
use nat_init::imds::{parse_cidr_lines, parse_mac};

fuzz_target!(|data: &[u8]| {
    for eof in [false, true] {
        if let Ok(r) = parse_response(data, eof) {
            assert!(r.body.len() <= data.len());
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_mac(text);
        let _ = parse_cidr_lines(text);
    }
});

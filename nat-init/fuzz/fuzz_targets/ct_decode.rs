//! Fuzzes the conntrack replication's decoders on arbitrary bytes: the peers' record stream
//! (hello, frames, records) and the kernel's ctnetlink messages (framing, attributes, entries).
//! Whatever decodes is encoded again and must decode to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nat_init::conntrack::{ctnetlink, wire};

fuzz_target!(|data: &[u8]| {
    let _ = wire::check_hello(data);
    if let Ok((records, _)) = wire::decode_all(data) {
        let mut again = Vec::new();
        for r in &records {
            wire::encode(r, &mut again);
        }
        assert_eq!(wire::decode_all(&again), Ok((records, 0)));
    }
    if let Ok(msgs) = ctnetlink::split(data) {
        for m in msgs {
            if let Ok(Some(ctnetlink::Event::Upsert(e))) = ctnetlink::parse(m.kind, m.payload) {
                let _ = ctnetlink::new_request(&e, e.timeout, 1, true);
            }
        }
    }
});

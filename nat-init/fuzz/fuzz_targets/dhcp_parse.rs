//! Fuzzes the DHCP receive path: IPv4/UDP framing, dhcproto decoding, and the state machine in
//! every state fed the decoded message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nat_init::dhcp::frame;
use nat_init::dhcp::Random;
use nat_init::dhcp::machine::{Event, Machine, decode};

/// Every xid is the message's, so the machine takes it in each state.
struct Fixed(u32);

impl Random for Fixed {
    fn next_u32(&mut self) -> u32 {
        self.0
    }
}

fuzz_target!(|data: &[u8]| {
    // As a raw IP packet from the packet socket.
    if let Some(d) = frame::parse(data, frame::CLIENT_PORT) {
        let _ = decode(d.payload);
    }
    let Some(msg) = decode(data) else { return };
    // Drive a machine whose xid and chaddr match the message into each state and feed it.
    let mut mac = [0u8; 6];
    if let Some(c) = msg.chaddr().get(..6) {
        mac.copy_from_slice(c);
    }
    for steps in 0..6u64 {
        let mut m = Machine::new(mac, Fixed(msg.xid()));
        let mut now = 0;
        m.handle(now, Event::Timer);
        for _ in 0..steps {
            let _ = m.handle(now, Event::Packet(&msg));
            now = m.deadline_ms().min(now + 1_000_000);
            let _ = m.handle(now, Event::Timer);
        }
        let _ = m.handle(now, Event::Packet(&msg));
    }
});

//! Fuzzes the EC2 Query API answer parsers: any bytes give typed answers or an error, and a
//! parsed error document always classifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nat_init::aws::ec2::{self, Action};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tables) = ec2::parse_describe_route_tables(text) {
        for t in &tables {
            assert!(!t.id.is_empty() && !t.vpc_id.is_empty());
            let _ = t.route(ec2::DEFAULT_ROUTE);
        }
    }
    if let Ok(enis) = ec2::parse_describe_network_interfaces(text) {
        assert!(enis.iter().all(|e| !e.id.is_empty() && !e.mac.is_empty()));
    }
    let _ = ec2::parse_describe_addresses(text);
    let _ = ec2::parse_assign_private_ip_addresses(text);
    let _ = ec2::parse_associate_address(text);
    for action in [
        Action::ModifyNetworkInterfaceAttribute,
        Action::ReplaceRoute,
        Action::CreateRoute,
    ] {
        let _ = ec2::parse_ok(action, text).map_err(|e| e.to_string());
    }
    if let Ok(e) = ec2::parse_error(text) {
        assert!(!e.code.is_empty());
        let _ = ec2::classify_error(400, &e);
    }
});

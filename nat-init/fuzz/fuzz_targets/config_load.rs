//! Fuzzes config parsing and layering: any text must give a config or a located error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nat_init::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_toml(text, "fuzz").map_err(|e| e.to_string());
    let l = Config::layered(Some((text, "baked")), Some(text));
    let _ = l.errors.iter().map(ToString::to_string).count();
});

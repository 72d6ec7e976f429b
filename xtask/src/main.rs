//! placeholder
#[allow(dead_code)]
mod disk;

fn main() {}

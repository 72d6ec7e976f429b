//! placeholder
#[allow(dead_code)]
mod disk;
#[allow(dead_code)]
mod formats;

fn main() {}

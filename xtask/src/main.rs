//! placeholder
#[allow(dead_code)]
mod deb;
#[allow(dead_code)]
mod modules;
#[allow(dead_code)]
mod packages;

fn main() {}

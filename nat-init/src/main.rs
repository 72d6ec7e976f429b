//! nat-init binary entry point (wired up by the nat-init issue).
fn main() {}

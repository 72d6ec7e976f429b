//! test-support: helpers shared by the workspace's tests and its dev tooling, and by nothing
//! that goes on the image.
//!
//! nat-init takes it as a dev-dependency (its root network-namespace tests) and xtask as a
//! normal one (xtask is dev tooling itself: its VPC double and benchmarks run servers inside
//! namespaces). `init` and nat-init must never list it under `[dependencies]`: `cargo xtask
//! image` builds their binaries without dev-dependencies, so it stays off the image.

pub mod netns;

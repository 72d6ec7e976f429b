//! The checks `cargo xtask test` runs, one module per part: `host` (the workspace's tests),
//! `deploy` (the CloudFormation and Terraform templates, against moto and statically),
//! `vpc` (the emulated VPC's control plane),
//! `image` (the built artifacts), `boot` (init under UEFI in QEMU), `e2e` (the NAT on an
//! emulated VPC) and `failover` (two NAT guests in a failover group on that VPC). Each module runs its own setup (image build, VM) and records its checks in
//! the `Report`; `testsuite` decides which modules run. The bench's smoke test is
//! `bench::smoke`. `kmod` holds the kernel-module assertions the image check and every boot
//! share.

pub mod boot;
pub mod deploy;
pub mod e2e;
pub mod failover;
pub mod host;
pub mod image;
pub mod kmod;
pub mod vpc;

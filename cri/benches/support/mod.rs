//! What the CRI benchmarks (`pods`, `lifecycle`, `stats`) share: the runtime series' setup and
//! teardown, the kubelet-like pod request and its CNI network, CPU and memory accounting,
//! and the statistics and log helpers of their reports. Each bench includes it with
//! `#[path = "support/mod.rs"] mod support;` next to `mod common;`.
#![allow(dead_code)] // each bench uses its own part

pub mod cri;
pub mod kubelet;
pub mod meter;
pub mod report;
pub mod series;
pub mod setup;

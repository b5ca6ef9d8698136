//! Shared helpers of the node tests: the agent under test, the registry fixture and the
//! test images.
#![allow(dead_code)]

pub mod agent;
pub mod containerd;
pub mod images;
pub mod network;
pub mod pod;
pub mod proxy;
pub mod registry;

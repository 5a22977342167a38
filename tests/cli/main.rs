//! End-to-end tests of the `ferry` binary on the embedded local target.

mod support;

mod agent;
mod apply;
mod approve;
#[cfg(feature = "aws")]
mod buckets;
mod completions;
mod crash;
mod dibr;
#[cfg(feature = "docker")]
mod docker;
mod ecrnow;
mod examples;
mod gates;
mod guarantees;
#[cfg(feature = "kubernetes")]
mod kubectl;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod ledger;
mod lines;
mod migrate;
mod plan;
#[cfg(feature = "aws")]
mod rds;
mod security;
#[cfg(feature = "ssh")]
mod ssh;
mod state;
#[cfg(feature = "ssh")]
mod versions;
mod windows;

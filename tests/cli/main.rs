//! End-to-end tests of the `ferry` binary on the embedded local target.

mod support;

mod apply;
mod approve;
mod crash;
mod dibr;
mod docker;
mod guarantees;
mod kubernetes;
mod ledger;
mod plan;
mod rds;
mod security;
mod ssh;

//! ferry: plan, apply and audit deployments to regulated sites.
//!
//! Pure core: `model`, `load`, `validate`, `plan`, `render`, `target` (values in, values out).
//! Edge: `workspace` (files), `drivers` (targets), `ledger`, `lock`; `executor` orchestrates;
//! `cli` parses arguments and prints. See ARCHITECTURE.md.

pub mod approval;
pub mod artifact;
pub mod cli;
pub mod dibr;
pub mod drivers;
pub mod executor;
pub mod exit;
pub mod ledger;
pub mod load;
pub mod lock;
pub mod model;
pub mod plan;
pub mod readiness;
pub mod render;
pub mod secret;
pub mod target;
pub mod validate;
pub mod workspace;

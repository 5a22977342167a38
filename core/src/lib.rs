//! ferry's pure core: values in, values out.
//!
//! `model` (inventory, release plan and runbook formats), `load` (YAML with located errors),
//! `validate`, `plan` (the saved plan and the planner), `render` (sandboxed Tera), `target`,
//! `ops` and `runbook` (operation steps), `kubernetes` (manifests, diffs, rollout rules, release
//! records), `dibr`, `approval`, `readiness`, `secret` (references and the redacting value),
//! `container` (Docker port and volume syntax) and `ledger` (the entry format, its hash chain
//! and verification). This crate knows nothing of tokio, SSH, Docker, Kubernetes clients, AWS
//! or any network: ci/test.sh checks its dependency tree. See ARCHITECTURE.md.

pub mod approval;
pub mod container;
pub mod dibr;
pub mod gate;
pub mod hooks;
pub mod kubernetes;
pub mod ledger;
pub mod load;
pub mod migrate;
pub mod model;
pub mod ops;
pub mod plan;
pub mod readiness;
pub mod render;
pub mod runbook;
pub mod secret;
pub mod target;
pub mod validate;
pub mod versions;
pub mod window;

//! ferry: plan, apply and audit deployments to regulated sites.
//!
//! The pure core is the `ferry-core` crate (re-exported here under the same module names:
//! `model`, `load`, `validate`, `plan`, `render`, `target`, `ops`, `runbook`, `kubernetes`,
//! `dibr`, `approval`, `readiness`, `secret`, `container`). This crate is the edge: `workspace`
//! (files), `artifact`, `durable`, `drivers` (targets), `ledger` (the handle) and `state` (the backends of the ledger and the lock), `lock`; `executor`
//! orchestrates; `engine` is the library API over them; `printer` shows results (text or
//! JSON); `cli` parses arguments, calls the engine and picks a printer. See ARCHITECTURE.md.

pub use ferry_core::{
    approval, container, dibr, gate, hooks, kubernetes, load, migrate, model, ops, plan, readiness,
    render, runbook, secret, target, validate, versions, window,
};

pub mod artifact;
pub(crate) mod blocking;
pub mod channel;
pub mod cli;
pub mod collect;
pub mod drivers;
pub mod durable;
pub mod engine;
pub mod executor;
pub mod exit;
#[cfg(test)]
mod fuzz_corpora;
pub mod ledger;
pub mod lock;
pub mod pgmigrate;
pub mod printer;
pub mod probe;
#[cfg(feature = "aws")]
pub mod s3move;
pub mod state;
pub mod workspace;

/// Chooses the process-wide rustls crypto provider (ring). The binary links rustls with both
/// ring (SSH, Docker TLS) and aws-lc-rs (the AWS SDK's HTTPS client) enabled, so rustls cannot
/// pick one by itself and a client built without an explicit choice panics. Called first thing
/// in `main` and by every client constructor (tests use the library without `main`).
pub fn install_crypto_provider() {
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // Err means another provider was installed first, which is just as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
    }
}

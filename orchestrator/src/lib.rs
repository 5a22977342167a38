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
pub mod durable;
pub mod executor;
pub mod exit;
pub mod kubernetes;
pub mod ledger;
pub mod load;
pub mod lock;
pub mod model;
pub mod ops;
pub mod plan;
pub mod readiness;
pub mod render;
pub mod runbook;
pub mod secret;
pub mod target;
pub mod validate;
pub mod workspace;

/// Chooses the process-wide rustls crypto provider (ring). The binary links rustls with both
/// ring (SSH, Docker TLS) and aws-lc-rs (the AWS SDK's HTTPS client) enabled, so rustls cannot
/// pick one by itself and a client built without an explicit choice panics. Called first thing
/// in `main` and by every client constructor (tests use the library without `main`).
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

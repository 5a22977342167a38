//! `ferry approve` (a signed approval of a plan's gate, into the ledger) and `ferry keygen`.

use std::path::Path;

use super::{CliError, Ctx};
use crate::engine::approve;
use crate::exit;

pub fn approve(
    ctx: &Ctx,
    plan_path: &Path,
    gate: &str,
    person: &str,
    comment: Option<&str>,
) -> Result<u8, CliError> {
    let a = approve::approve(&ctx.state(), plan_path, gate, person, comment)?;
    ctx.out().approved(&a, gate, person, plan_path);
    Ok(exit::OK)
}

/// Writes a new Ed25519 signing key (base64 seed, mode 0600) and prints its public key.
pub fn keygen(ctx: &Ctx, out: &Path) -> Result<u8, CliError> {
    let public = approve::keygen(out)?;
    ctx.out().key_made(&public, out);
    Ok(exit::OK)
}

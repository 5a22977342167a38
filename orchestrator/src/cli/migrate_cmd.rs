//! `ferry migrate verify`, `ferry migrate report` and `ferry migrate manifest`.

use std::path::Path;

use super::{CliError, Ctx};
use crate::exit;

/// Verifies again and prints the report; exit 5 when a difference no rule allows is found.
pub async fn verify(ctx: &Ctx, plan: &Path) -> Result<u8, CliError> {
    let report = crate::engine::migrate::verify_again(&ctx.state(), plan).await?;
    let id = crate::workspace::read_plan(plan)?.id;
    ctx.out().migration_verified(&id, &report);
    Ok(if report.passed() {
        exit::OK
    } else {
        exit::FAILED
    })
}

pub fn report(ctx: &Ctx, plan: &Path) -> Result<u8, CliError> {
    let r = crate::engine::migrate::report(&ctx.state(), plan)?;
    ctx.out().migration_report(&r);
    Ok(exit::OK)
}

/// A bucket copy's manifest as the ledger's records make it (its SHA-256 is the recorded root).
pub fn manifest(ctx: &Ctx, plan: &Path, copy: &str) -> Result<u8, CliError> {
    let m = crate::engine::migrate::manifest(&ctx.state(), plan, copy)?;
    ctx.out().bucket_manifest(copy, &m);
    Ok(exit::OK)
}

//! `ferry migrate verify` and `ferry migrate report`.

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

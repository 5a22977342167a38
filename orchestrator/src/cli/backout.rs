//! `ferry backout`, `ferry rollback` and `ferry history`: the engine plans the back-out and
//! applies it; this prints.

use std::path::Path;

use super::apply::{apply_plan, print_apply};
use super::{CliError, Ctx};
use crate::exit;

pub use crate::engine::backout::Request;

pub async fn backout(
    ctx: &Ctx,
    inventory: &Path,
    app: &str,
    site: &str,
    req: Request<'_>,
) -> Result<u8, CliError> {
    let (saved, path) =
        crate::engine::backout::plan(&ctx.state(), inventory, app, site, &req).await?;
    if req.dry_run {
        ctx.out().plan(&saved, &path, &[]);
        return Ok(exit::CHANGES);
    }
    ctx.out().preview(&saved);
    let r = apply_plan(ctx, &path, super::apply::Options::fresh(&[])).await?;
    print_apply(ctx, &r, &path);
    Ok(r.code)
}

/// `ferry history APP --site SITE`: the release records a Kubernetes app has in its cluster.
pub async fn history(ctx: &Ctx, inventory: &Path, app: &str, site: &str) -> Result<u8, CliError> {
    let targets = crate::engine::backout::history(inventory, app, site).await?;
    ctx.out().history(app, site, &targets);
    Ok(exit::OK)
}

//! `ferry snapshot list|create|prune` and `ferry runbook list|show|run`: the engine plans and acts
//! (`engine::snapshot`, `engine::runbook`); this prints.

use std::path::Path;

use super::apply::Lines;
use super::{CliError, Ctx};
use crate::engine::{runbook, snapshot};
use crate::exit;

pub async fn snapshot_list(
    ctx: &Ctx,
    inventory: &Path,
    database: &str,
    aws_backup: bool,
) -> Result<u8, CliError> {
    let (inv, db) = snapshot::database(inventory, database)?;
    let list = snapshot::list(&inv, database, aws_backup, &Lines).await?;
    ctx.out().snapshots(&db, &list);
    Ok(exit::OK)
}

pub async fn snapshot_prune(
    ctx: &Ctx,
    inventory: &Path,
    database: &str,
    keep: Option<u32>,
    dry_run: bool,
) -> Result<u8, CliError> {
    let (inv, db) = snapshot::database(inventory, database)?;
    let pruned = snapshot::prune(&ctx.state(), &inv, &db, keep, dry_run, &Lines).await?;
    ctx.out().snapshots_pruned(database, &pruned);
    Ok(exit::OK)
}

pub async fn snapshot_create(
    ctx: &Ctx,
    inventory: &Path,
    database: &str,
    id: Option<&str>,
    timeout_seconds: u64,
) -> Result<u8, CliError> {
    let (inv, db) = snapshot::database(inventory, database)?;
    let state = ctx.state();
    let detail = snapshot::create(&state, &inv, &db, id, timeout_seconds, &Lines).await?;
    ctx.out().snapshot_created(database, &detail);
    Ok(exit::OK)
}

pub fn runbook_list(ctx: &Ctx, dir: &Path) -> Result<u8, CliError> {
    let list = runbook::list(dir)?;
    ctx.out().runbooks(&list);
    Ok(exit::OK)
}

pub fn runbook_show(ctx: &Ctx, dir: &Path, name: &str) -> Result<u8, CliError> {
    let rb = runbook::load(dir, name)?;
    ctx.out().runbook(&rb);
    Ok(exit::OK)
}

pub struct RunArgs<'a> {
    pub dir: &'a Path,
    pub name: &'a str,
    pub inventory: &'a Path,
    pub params: &'a [String],
    pub out: Option<&'a Path>,
    pub plan_only: bool,
    pub confirm: &'a [String],
}

/// Plans the runbook (observing the cloud for what the plan must name), writes and prints the
/// plan, and unless `--plan-only` applies it through the same engine as a release.
pub async fn runbook_run(ctx: &Ctx, a: RunArgs<'_>) -> Result<u8, CliError> {
    let inv = crate::workspace::load(a.inventory, &[])
        .map_err(CliError::Invalid)?
        .0;
    let rb = runbook::load(a.dir, a.name)?;
    let args = runbook::parse_params(a.params)?;
    let state = ctx.state();
    let planned = runbook::plan(&state, &inv, &rb, &args, &Lines).await?;
    let out = a
        .out
        .map_or_else(|| runbook::default_path(&state, &planned), Path::to_owned);
    crate::workspace::write_plan(&out, &planned.plan)?;
    crate::engine::plan::record_created(&state, &planned.plan, &out)?;
    if a.plan_only || ctx.output == super::OutputFormat::Human {
        ctx.out().plan(&planned.plan, &out, &[]);
    }
    ctx.out().runbook_params(&planned.params);
    if a.plan_only {
        return Ok(exit::CHANGES);
    }
    let r = super::apply::apply_plan(ctx, &out, super::apply::Options::fresh(a.confirm)).await?;
    super::apply::print_apply(ctx, &r, &out);
    Ok(r.code)
}

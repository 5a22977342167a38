//! `ferry validate`, `ferry schema` and `ferry plan`.

use std::path::{Path, PathBuf};

use super::{CliError, Ctx, SchemaWhich};
use crate::drivers::Drivers;
use crate::model::{Inventory, ReleasePlan};
use crate::{exit, workspace};

pub fn validate(ctx: &Ctx, inventory: &Path, plans: &[PathBuf]) -> Result<u8, CliError> {
    let (migrations, releases): (Vec<PathBuf>, Vec<PathBuf>) = plans
        .iter()
        .cloned()
        .partition(|p| workspace::plan_kind(p) == "migration");
    let mut diags = crate::load::Diagnostics::default();
    if let Err(d) = workspace::load(inventory, &releases) {
        diags.extend(d);
    }
    for m in &migrations {
        if let Err(d) = workspace::load_migration(inventory, m) {
            diags.extend(d);
        }
    }
    diags.into_result().map_err(CliError::Invalid)?;
    ctx.out().validated(inventory, plans.len());
    Ok(exit::OK)
}

pub fn schema(which: Option<SchemaWhich>) -> Result<u8, CliError> {
    let inventory = schemars::schema_for!(Inventory);
    let plan = schemars::schema_for!(ReleasePlan);
    let migration = schemars::schema_for!(crate::model::MigrationPlan);
    let doc = match which {
        Some(SchemaWhich::Inventory) => serde_json::to_value(inventory),
        Some(SchemaWhich::Plan) => serde_json::to_value(plan),
        Some(SchemaWhich::Migration) => serde_json::to_value(migration),
        None => serde_json::to_value(serde_json::json!({
            "inventory": inventory,
            "release_plan": plan,
            "migration_plan": migration,
        })),
    }
    .expect("schemas serialize");
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).expect("schemas serialize")
    );
    Ok(exit::OK)
}

/// Makes, writes, records and prints the plan; exit 2 when it has changes.
pub async fn plan(
    ctx: &Ctx,
    inventory: &Path,
    plan_path: &Path,
    out: &Path,
) -> Result<u8, CliError> {
    plan_with(ctx, inventory, plan_path, out, &Drivers::standard(), true).await
}

/// [`plan`] through the given drivers (`ferry apply --auto-approve` applies through them
/// next); the plan is printed when `print`.
pub async fn plan_with(
    ctx: &Ctx,
    inventory: &Path,
    plan_path: &Path,
    out: &Path,
    drivers: &Drivers,
    print: bool,
) -> Result<u8, CliError> {
    if workspace::plan_kind(plan_path) == "migration" {
        return migration(ctx, inventory, plan_path, out, print).await;
    }
    let (inv, plans) =
        workspace::load(inventory, &[plan_path.to_owned()]).map_err(CliError::Invalid)?;
    let state = ctx.state();
    let saved =
        crate::engine::plan::make_with(&state, &inv, &plans[0], &super::apply::Lines, drivers)
            .await?;
    if let Err(e) = crate::engine::plan::refuse_unready(&saved) {
        ctx.out().preview(&saved);
        return Err(e);
    }
    workspace::write_plan(out, &saved)?;
    crate::engine::plan::record_created(&state, &saved, out)?;
    if print {
        let windows = crate::window::of_plan(&inv.value, &saved.body, chrono::Utc::now());
        ctx.out().plan(&saved, out, &windows);
    }
    Ok(if saved.has_changes() {
        exit::CHANGES
    } else {
        exit::OK
    })
}

/// `ferry plan` of a migration plan: the preflight runs now; the plan is written only when it
/// finds nothing.
async fn migration(
    ctx: &Ctx,
    inventory: &Path,
    plan_path: &Path,
    out: &Path,
    print: bool,
) -> Result<u8, CliError> {
    let (inv, mp) = workspace::load_migration(inventory, plan_path).map_err(CliError::Invalid)?;
    let state = ctx.state();
    let saved = crate::engine::migrate::make(&state, &inv, &mp).await?;
    workspace::write_plan(out, &saved)?;
    crate::engine::plan::record_created(&state, &saved, out)?;
    if print {
        let windows = crate::window::of_plan(&inv.value, &saved.body, chrono::Utc::now());
        ctx.out().plan(&saved, out, &windows);
    }
    Ok(exit::CHANGES)
}

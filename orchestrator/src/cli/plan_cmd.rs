//! `ferry validate`, `ferry schema` and `ferry plan`.

use std::path::{Path, PathBuf};

use super::output::{JSON_VERSION, OutputFormat, PlanReport, PlanStepReport, ValidateReport};
use super::{CliError, Ctx, SchemaWhich};
use crate::load::Loaded;
use crate::model::{Inventory, ReleasePlan};
use crate::plan::{self, SavedPlan};
use crate::{exit, workspace};

pub fn validate(ctx: &Ctx, inventory: &Path, plans: &[PathBuf]) -> Result<u8, CliError> {
    match workspace::load(inventory, plans) {
        Ok(_) => {
            match ctx.output {
                OutputFormat::Human => println!(
                    "ok: {} and {} plan file(s) are valid",
                    inventory.display(),
                    plans.len()
                ),
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::to_string(&ValidateReport {
                        format: "ferry.validate",
                        version: JSON_VERSION,
                        valid: true,
                        problems: &[]
                    })
                    .expect("serializes")
                ),
            }
            Ok(exit::OK)
        }
        Err(d) => Err(CliError::Invalid(d)),
    }
}

pub fn schema(which: Option<SchemaWhich>) -> Result<u8, CliError> {
    let inventory = schemars::schema_for!(Inventory);
    let plan = schemars::schema_for!(ReleasePlan);
    let doc = match which {
        Some(SchemaWhich::Inventory) => serde_json::to_value(inventory),
        Some(SchemaWhich::Plan) => serde_json::to_value(plan),
        None => serde_json::to_value(
            serde_json::json!({ "inventory": inventory, "release_plan": plan }),
        ),
    }
    .expect("schemas serialize");
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).expect("schemas serialize")
    );
    Ok(exit::OK)
}

pub async fn plan(
    ctx: &Ctx,
    inventory: &Path,
    plan_path: &Path,
    out: &Path,
) -> Result<u8, CliError> {
    let (inv, plans) =
        workspace::load(inventory, &[plan_path.to_owned()]).map_err(CliError::Invalid)?;
    let saved = make_plan(ctx, &inv, &plans[0]).await?;
    refuse_unready(ctx, &saved)?;
    workspace::write_plan(out, &saved)?;
    record_plan_created(ctx, &saved, out)?;
    print_plan(ctx, &saved, out);
    Ok(if saved.has_changes() {
        exit::CHANGES
    } else {
        exit::OK
    })
}

/// An endpoint short of its hardware requirements blocks the plan unless the plan waives it.
pub fn refuse_unready(ctx: &Ctx, saved: &SavedPlan) -> Result<(), CliError> {
    let blocked: Vec<&str> = saved
        .body
        .readiness
        .iter()
        .filter(|r| r.blocks())
        .map(|r| r.endpoint.as_str())
        .collect();
    if blocked.is_empty() {
        return Ok(());
    }
    if ctx.output == OutputFormat::Human {
        print!("{}", plan::render_diff(&saved.body));
    }
    Err(CliError::Refused(format!(
        "plan blocked: {} fall(s) short of the inventory's hardware requirements; fix the endpoint(s), or waive them in the plan (`waivers: [{{endpoint, reason}}]`)",
        blocked.join(", ")
    )))
}

/// Records the plan's creation (with the digest of the file's bytes, its seal) in the ledger.
pub fn record_plan_created(ctx: &Ctx, saved: &SavedPlan, out: &Path) -> Result<(), CliError> {
    crate::engine::plan::record_created(&ctx.state(), saved, out)
}

/// Observes the plan's targets and computes the saved plan (not yet written).
pub async fn make_plan(
    ctx: &Ctx,
    inv: &Loaded<Inventory>,
    rp: &Loaded<ReleasePlan>,
) -> Result<SavedPlan, CliError> {
    crate::engine::plan::make(&ctx.state(), inv, rp, &super::apply::Lines).await
}

pub fn print_plan(ctx: &Ctx, saved: &SavedPlan, out: &Path) {
    if ctx.markdown {
        print!(
            "{}",
            plan::render_markdown(saved, &out.display().to_string())
        );
        return;
    }
    match ctx.output {
        OutputFormat::Human => {
            print!("{}", plan::render_diff(&saved.body));
            if saved.has_changes() {
                println!(
                    "Saved plan {} to {}.\nApply it with: ferry apply {}",
                    saved.id,
                    out.display(),
                    out.display()
                );
            } else {
                println!("No changes. Saved plan {} to {}.", saved.id, out.display());
            }
        }
        OutputFormat::Json => {
            let steps = saved
                .body
                .steps
                .iter()
                .map(|s| PlanStepReport {
                    id: &s.id,
                    wave: &saved.body.waves[s.wave].name,
                    target: &s.target.id,
                    from: s.from.as_deref(),
                    to: &s.to,
                    depends_on: &s.depends_on,
                    objects: saved.body.objects.get(&s.id).map(Vec::as_slice),
                })
                .collect();
            let report = PlanReport {
                format: "ferry.plan-report",
                version: JSON_VERSION,
                plan_id: &saved.id,
                plan_file: out.display().to_string(),
                name: &saved.body.name,
                changes: saved.body.steps.len(),
                unchanged: saved.body.unchanged.len(),
                steps,
            };
            println!(
                "{}",
                serde_json::to_string(&report).expect("reports serialize")
            );
        }
    }
}

//! Making a saved plan, as a library call: observe the targets, plan, hash the inputs, locate
//! images, preview object changes; and record its creation (the digest that seals it).

use std::path::Path;

use super::{Error, State};
use crate::drivers::Drivers;
use crate::executor::Progress;
use crate::ledger::{Event, NewEntry};
use crate::load::Loaded;
use crate::model::{Inventory, ReleasePlan};
use crate::plan::{self, SavedPlan};
use crate::workspace;

/// Observes the plan's targets and computes the saved plan (not yet written).
/// Lines of what it does while it waits on a cloud (retries) go to `progress`.
pub async fn make(
    state: &State,
    inv: &Loaded<Inventory>,
    rp: &Loaded<ReleasePlan>,
    progress: &dyn Progress,
) -> Result<SavedPlan, Error> {
    make_with(state, inv, rp, progress, &Drivers::standard()).await
}

/// [`make`] through the given drivers: a caller that applies the plan in the same process
/// hands the same drivers to the apply, which then reuses their connections.
pub async fn make_with(
    state: &State,
    inv: &Loaded<Inventory>,
    rp: &Loaded<ReleasePlan>,
    progress: &dyn Progress,
    drivers: &Drivers,
) -> Result<SavedPlan, Error> {
    let base = workspace::base_dir(&inv.source.path);
    let targets = plan::targets_of(&inv.value, &rp.value);
    let specs = workspace::target_specs(&inv.value, &base, &targets, false)?;
    let observed = workspace::observe_all(drivers, &specs).await?;
    let body = plan::plan_release(&inv.value, &rp.value, &observed)?;
    let problems = snapshot_problems(inv, &base, &body, progress).await;
    if !problems.is_empty() {
        return Err(Error::Refused(format!(
            "plan not written:\n  - {}",
            problems.join("\n  - ")
        )));
    }
    let mut inputs = workspace::hash_inputs(inv, &[&rp.source], &body.steps)?;
    inputs.extend(workspace::locate_images(drivers, &specs, &body.steps).await?);
    let versions = catalogued(state, &inv.value, &base, &body, &inputs)?;
    let mut saved = workspace::new_saved_plan(&state.actor, inputs, body);
    saved.body.versions = versions;
    workspace::preview_objects(drivers, &specs, &mut saved, &inv.value, &base).await?;
    Ok(saved)
}

/// Every version the plan deploys of an app with a `lifecycle` is in the ledger's catalog,
/// active, and one of its revisions: all refusals at once.
fn catalogued(
    state: &State,
    inv: &Inventory,
    base: &Path,
    body: &plan::PlanBody,
    inputs: &[plan::InputFile],
) -> Result<Vec<plan::CatalogedVersion>, Error> {
    if !super::versions::any_catalogued(inv, &body.steps) {
        return Ok(vec![]);
    }
    let known = super::versions::catalog(state)?;
    let (out, problems) = super::versions::check_steps(&known, inv, base, &body.steps, inputs);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(Error::Refused(format!(
            "plan not written:\n  - {}",
            problems.join("\n  - ")
        )))
    }
}

/// A pre-change snapshot needs its database reachable with working credentials: say so now,
/// not when the wave is about to start.
#[cfg(feature = "aws")]
async fn snapshot_problems(
    inv: &Loaded<Inventory>,
    base: &Path,
    body: &plan::PlanBody,
    progress: &dyn Progress,
) -> Vec<String> {
    let rds = crate::drivers::rds::RdsOps::new(&inv.value, base);
    let mut problems = Vec::new();
    for step in &body.steps {
        if let Some(crate::ops::Op::RdsSnapshot { database, .. }) = step.op.as_ref().map(|o| &o.op)
            && let Err(e) = rds.describe(database, &|l| progress.line(&l)).await
        {
            problems.push(format!("pre-change snapshot {}: {e}", step.id));
        }
    }
    problems
}

/// Without the `aws` feature a plan that needs a pre-change snapshot cannot be carried out.
#[cfg(not(feature = "aws"))]
async fn snapshot_problems(
    _inv: &Loaded<Inventory>,
    _base: &Path,
    body: &plan::PlanBody,
    _progress: &dyn Progress,
) -> Vec<String> {
    body.steps
        .iter()
        .filter(|s| s.op.is_some())
        .map(|s| {
            format!(
                "step {}: operation steps need a build with the `aws` feature",
                s.id
            )
        })
        .collect()
}

/// An endpoint short of its hardware requirements blocks the plan unless the plan waives it.
pub fn refuse_unready(saved: &SavedPlan) -> Result<(), Error> {
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
    Err(Error::Refused(format!(
        "plan blocked: {} fall(s) short of the inventory's hardware requirements; fix the endpoint(s), or waive them in the plan (`waivers: [{{endpoint, reason}}]`)",
        blocked.join(", ")
    )))
}

/// Records the plan's creation in the ledger, with the SHA-256 of the file's bytes (its seal).
pub fn record_created(state: &State, saved: &SavedPlan, out: &Path) -> Result<(), Error> {
    let plan_sha = std::fs::read(out)
        .map(|b| crate::load::sha256_hex(&b))
        .unwrap_or_default();
    let mut e = NewEntry::new(&state.actor, Event::PlanCreated)
        .plan(&saved.id)
        .message(format!(
            "plan `{}`: {} step(s)",
            saved.body.name,
            saved.body.steps.len()
        ));
    e.detail = Some(serde_json::json!({
        "name": saved.body.name,
        "kind": saved.body.kind,
        "plan_file": out.display().to_string(),
        "plan_sha256": plan_sha,
        "steps": saved.body.steps.len(),
        "unchanged": saved.body.unchanged.len(),
        "inputs": saved.inputs,
        "waivers": saved.body.readiness.iter().filter(|r| r.waived.is_some()).map(|r| serde_json::json!({ "endpoint": r.endpoint, "reason": r.waived, "checks": r.checks })).collect::<Vec<_>>(),
    }));
    state.ledger.append(e)?;
    Ok(())
}

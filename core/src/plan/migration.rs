//! A migration plan's steps: preflight, (a confirmation to replace the target's contents), the
//! `before` steps (the write fence), schema, copy, indexes, verify, sequences, then the `after`
//! steps (cut-over, resume, drain). One wave per step, each waiting for the one before; any
//! failure halts with a resumable record. Pure: the same plan file gives the same steps.

use super::{PlanBody, PlanError, SavedPlanKind, StepOp, plan_runbook};
use crate::migrate::{MigrationSpec, Phase};
use crate::model::{Hook, Inventory, MigrationMode, MigrationPlan, TargetKind};
use crate::ops::Op;
use crate::target::TargetRef;

/// What a migration's steps carry out, from the plan file.
pub fn migration_spec(mp: &MigrationPlan) -> MigrationSpec {
    MigrationSpec {
        source: mp.source.clone(),
        target: mp.target.clone(),
        mode: mp.mode,
        max_parallel: mp.max_parallel,
        chunk_rows: mp.chunk_rows,
        exclude: mp.exclude.clone(),
        rules: mp.rules.clone(),
    }
}

pub fn plan_migration(inv: &Inventory, mp: &MigrationPlan) -> Result<PlanBody, PlanError> {
    let target_db = inv
        .database(&mp.target)
        .ok_or_else(|| PlanError::UnknownDatabase(mp.target.clone()))?;
    inv.database(&mp.source)
        .ok_or_else(|| PlanError::UnknownDatabase(mp.source.clone()))?;
    let site = target_db.site.clone().unwrap_or_else(|| "-".into());
    let spec = migration_spec(mp);
    let on = |name: &str| TargetRef::new(&site, "-", name, TargetKind::Local);
    let phase = |p: Phase| {
        (
            p.name().trim_start_matches("migrate.").to_owned(),
            on(&mp.target),
            StepOp {
                title: format!("{} {} -> {}", p.name(), mp.source, mp.target),
                op: Op::Migrate {
                    phase: p,
                    spec: spec.clone(),
                },
                on_failure: Some(advice(p)),
            },
        )
    };
    let mut steps = vec![phase(Phase::Preflight)];
    if mp.mode == MigrationMode::Replace {
        steps.push((
            "confirm-replace".into(),
            on(&mp.target),
            StepOp {
                title: format!("confirm: replace the contents of `{}`", mp.target),
                op: Op::Manual {
                    instructions: format!(
                        "The source's tables, sequences and views replace those of the same name in database `{}` (dropped first). Confirm with `ferry apply --confirm STEP` once its contents may be lost.",
                        mp.target
                    ),
                },
                on_failure: None,
            },
        ));
    }
    steps.extend(hooks(inv, &mp.before, &on)?);
    for p in [
        Phase::Schema,
        Phase::Copy,
        Phase::Indexes,
        Phase::Verify,
        Phase::Sequences,
    ] {
        steps.push(phase(p));
    }
    steps.extend(hooks(inv, &mp.after, &on)?);
    let mut body = plan_runbook(&mp.name, steps);
    body.kind = SavedPlanKind::Migration;
    Ok(body)
}

fn hooks(
    inv: &Inventory,
    list: &[Hook],
    on: &dyn Fn(&str) -> TargetRef,
) -> Result<Vec<(String, TargetRef, StepOp)>, PlanError> {
    list.iter()
        .map(|h| {
            let op = crate::hooks::compile(h, inv).map_err(|p| {
                let msg = p.into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("; ");
                PlanError::InvalidStep(h.name.clone(), msg)
            })?;
            Ok((
                h.name.clone(),
                on(&h.name),
                StepOp {
                    title: h.name.clone(),
                    op,
                    on_failure: None,
                },
            ))
        })
        .collect()
}

/// What on-call does when a phase fails (the ledger records it with the failure).
fn advice(p: Phase) -> String {
    match p {
        Phase::Preflight => "fix each finding (or set `mode: replace` for a target that is not empty), then `ferry apply --resume`".into(),
        Phase::Schema => "read the statement psql refused; fix the target (roles, extensions) and `ferry apply --resume`: the load is one transaction, nothing of it was kept".into(),
        Phase::Indexes => "read the statement pg_restore refused (a key or constraint the copied rows break names the row); fix the cause and `ferry apply --resume`: each index and constraint is dropped if present and built again".into(),
        Phase::Copy => "`ferry apply --resume` copies only the chunks not recorded as copied; the source is unchanged".into(),
        Phase::Verify => "read `ferry migrate report PLAN`: every difference is named by key; fix the cause (or add a rule with its reason to the plan) and re-run `ferry migrate verify PLAN`".into(),
        Phase::Sequences => "`ferry apply --resume` sets the sequences again from the source".into(),
    }
}

//! Migration plans as library calls: make one (the preflight run at plan time, so problems show
//! before anything is saved), re-run its verification alone (`ferry migrate verify`), and the
//! report an auditor reads (`ferry migrate report`), built from the ledger alone.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::{Error, State};
use crate::ledger::{Event, NewEntry, Outcome};
use crate::load::Loaded;
pub use crate::migrate::evidence::MigrationReport;
use crate::migrate::{MigrationSpec, VerifyReport};
use crate::model::{Inventory, MigrationPlan};
use crate::ops::Op;
use crate::pgmigrate::{Migration, preflight, verify};
use crate::plan::{SavedPlan, SavedPlanKind};
use crate::probe::Probes;
use crate::workspace;

/// The saved plan of a migration; refused when the preflight finds anything.
pub async fn make(
    state: &State,
    inv: &Loaded<Inventory>,
    mp: &Loaded<MigrationPlan>,
) -> Result<SavedPlan, Error> {
    let body = crate::plan::plan_migration(&inv.value, &mp.value)?;
    let spec = crate::plan::migration_spec(&mp.value);
    let probes = probes(inv);
    let m = Migration {
        probes: &probes,
        spec: &spec,
        plan_id: "",
    };
    let (findings, _) = preflight::run(&m).await.map_err(Error::Refused)?;
    if !findings.is_empty() {
        return Err(Error::Refused(format!(
            "plan not written: {}",
            crate::migrate::catalog::findings_text("the preflight", &findings)
        )));
    }
    let inputs = vec![
        workspace::input("inventory", &inv.source),
        workspace::input("migration", &mp.source),
    ];
    Ok(workspace::new_saved_plan(&state.actor, inputs, body))
}

/// What SQL steps connect with: the inventory's databases, secrets relative to its directory.
fn probes(inv: &Loaded<Inventory>) -> Probes {
    Probes::new(
        Arc::new(inv.value.clone()),
        workspace::base_dir(&inv.source.path),
    )
}

/// The migration a saved plan carries out (its verify step's spec).
pub fn spec_of(plan: &SavedPlan) -> Result<MigrationSpec, Error> {
    if plan.body.kind != SavedPlanKind::Migration {
        return Err(Error::Refused(format!(
            "plan {} is a {:?} plan, not a migration",
            plan.id, plan.body.kind
        )));
    }
    plan.body
        .steps
        .iter()
        .find_map(|s| match s.op.as_ref().map(|o| &o.op) {
            Some(Op::Migrate { spec, .. }) => Some(spec.clone()),
            _ => None,
        })
        .ok_or_else(|| Error::Refused(format!("plan {} has no migration step", plan.id)))
}

/// Verifies again, outside any apply (read-only on both databases), and records the report.
pub async fn verify_again(state: &State, plan_path: &Path) -> Result<VerifyReport, Error> {
    let plan = workspace::read_plan(plan_path)?;
    let spec = spec_of(&plan)?;
    let inv = workspace::plan_inventory(&plan)?;
    let probes = probes(&inv);
    let m = Migration {
        probes: &probes,
        spec: &spec,
        plan_id: &plan.id,
    };
    let report = verify::run(&m, None, &Default::default())
        .await
        .map_err(Error::Refused)?;
    let e = NewEntry::new(&state.actor, Event::MigrationVerified)
        .plan(&plan.id)
        .outcome(if report.passed() {
            Outcome::Ok
        } else {
            Outcome::Failed
        })
        .message(format!("`ferry migrate verify`: {}", report.verdict()))
        .detail(json!({ "report": report }));
    state.ledger.append(e)?;
    Ok(report)
}

/// The report of a migration plan from the ledger's entries.
pub fn report(state: &State, plan_path: &Path) -> Result<MigrationReport, Error> {
    let plan = workspace::read_plan(plan_path)?;
    let spec = spec_of(&plan)?;
    let entries = super::audit::Filter {
        plan: Some(plan.id.clone()),
        ..Default::default()
    }
    .select(&state.ledger)?;
    Ok(crate::migrate::evidence::report_of(&plan, &spec, &entries))
}

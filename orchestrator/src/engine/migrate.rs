//! Migration plans as library calls: make one (the preflight run at plan time, so problems show
//! before anything is saved), re-run its verification alone (`ferry migrate verify`), and the
//! report an auditor reads (`ferry migrate report`), built from the ledger alone.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::{Error, State};
use crate::ledger::{Event, NewEntry, Outcome};
use crate::load::Loaded;
use crate::migrate::bucket::{BucketReport, BucketSpec, Manifest};
pub use crate::migrate::evidence::MigrationReport;
use crate::migrate::{MigrationSpec, VerifyReport};
use crate::model::{Inventory, MigrationPlan};
use crate::ops::Op;
use crate::pgmigrate::{Migration, preflight, verify};
use crate::plan::{SavedPlan, SavedPlanKind};
use crate::probe::Probes;
use crate::workspace;

/// The saved plan of a migration; refused when the preflight finds anything or a bucket
/// cannot be listed (every bucket problem named at once).
pub async fn make(
    state: &State,
    inv: &Loaded<Inventory>,
    mp: &Loaded<MigrationPlan>,
) -> Result<SavedPlan, Error> {
    let body = crate::plan::plan_migration(&inv.value, &mp.value)?;
    let probes = probes(inv);
    if let Some(spec) = crate::plan::migration_spec(&mp.value) {
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
    }
    let buckets = crate::plan::bucket_specs(&inv.value, &mp.value)?;
    let problems = check_buckets(&probes, &buckets).await;
    if !problems.is_empty() {
        return Err(Error::Refused(format!(
            "plan not written: {} bucket problem(s):\n{}",
            problems.len(),
            problems
                .iter()
                .map(|p| format!("  - {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        )));
    }
    let inputs = vec![
        workspace::input("inventory", &inv.source),
        workspace::input("migration", &mp.source),
    ];
    Ok(workspace::new_saved_plan(&state.actor, inputs, body))
}

/// Each side of each bucket copy: credentials resolved, the bucket listed (one key).
#[cfg(feature = "aws")]
async fn check_buckets(probes: &Probes, buckets: &[BucketSpec]) -> Vec<String> {
    let (inv, base) = probes.inventory();
    let mut out = Vec::new();
    for b in buckets {
        for (side, end) in [("source", &b.source), ("target", &b.target)] {
            let checked = match crate::s3move::Side::connect(inv, base, end) {
                Ok(s) => s.check().await,
                Err(e) => Err(e),
            };
            if let Err(e) = checked {
                out.push(format!(
                    "copy `{}`, {side} bucket `{}`: {e}",
                    b.name, end.bucket
                ));
            }
        }
    }
    out
}

#[cfg(not(feature = "aws"))]
async fn check_buckets(_probes: &Probes, buckets: &[BucketSpec]) -> Vec<String> {
    buckets
        .iter()
        .map(|b| {
            format!(
                "copy `{}`: this ferry was built without the `aws` feature",
                b.name
            )
        })
        .collect()
}

/// What SQL steps connect with: the inventory's databases, secrets relative to its directory.
fn probes(inv: &Loaded<Inventory>) -> Probes {
    Probes::new(
        Arc::new(inv.value.clone()),
        workspace::base_dir(&inv.source.path),
    )
}

/// The database migration a saved plan carries out (none for a plan of bucket copies only).
pub fn spec_of(plan: &SavedPlan) -> Result<Option<MigrationSpec>, Error> {
    if plan.body.kind != SavedPlanKind::Migration {
        return Err(Error::Refused(format!(
            "plan {} is a {:?} plan, not a migration",
            plan.id, plan.body.kind
        )));
    }
    Ok(plan
        .body
        .steps
        .iter()
        .find_map(|s| match s.op.as_ref().map(|o| &o.op) {
            Some(Op::Migrate { spec, .. }) => Some(spec.clone()),
            _ => None,
        }))
}

/// A verification run again: the database's report and each bucket copy's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub database: Option<VerifyReport>,
    pub buckets: Vec<BucketReport>,
}

impl Verification {
    pub fn passed(&self) -> bool {
        self.database.as_ref().is_none_or(VerifyReport::passed)
            && self.buckets.iter().all(BucketReport::passed)
    }
}

/// Verifies again, outside any apply (read-only on both sides), and records each report.
pub async fn verify_again(state: &State, plan_path: &Path) -> Result<Verification, Error> {
    let plan = workspace::read_plan(plan_path)?;
    let spec = spec_of(&plan)?;
    let inv = workspace::plan_inventory(&plan)?;
    let probes = probes(&inv);
    let database = match &spec {
        Some(spec) => Some(verify_database(state, &plan, spec, &probes).await?),
        None => None,
    };
    let buckets = verify_buckets(state, &plan, &probes).await?;
    Ok(Verification { database, buckets })
}

#[cfg(feature = "aws")]
async fn verify_buckets(
    state: &State,
    plan: &SavedPlan,
    probes: &Probes,
) -> Result<Vec<BucketReport>, Error> {
    let specs = crate::migrate::evidence::bucket_specs(plan);
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let entries = plan_entries(state, plan)?;
    let prior = crate::migrate::bucket::replay(&entries);
    let (inv, base) = probes.inventory();
    let mut out = Vec::new();
    for spec in &specs {
        let mine = prior.get(&spec.name).cloned().unwrap_or_default();
        let manifest = mine.checked_manifest(&spec.name).map_err(Error::Refused)?;
        let source =
            crate::s3move::Side::connect(inv, base, &spec.source).map_err(Error::Refused)?;
        let target =
            crate::s3move::Side::connect(inv, base, &spec.target).map_err(Error::Refused)?;
        let report = crate::s3move::verify::run(spec, &source, &target, &manifest, &|_, _| {})
            .await
            .map_err(Error::Refused)?;
        let detail = json!({ "copy": spec.name, "report": report });
        let e = verified(
            state,
            plan,
            Event::BucketVerified,
            report.passed(),
            &report.verdict(),
        );
        state.ledger.append(e.detail(detail))?;
        out.push(report);
    }
    Ok(out)
}

#[cfg(not(feature = "aws"))]
async fn verify_buckets(
    _state: &State,
    plan: &SavedPlan,
    _probes: &Probes,
) -> Result<Vec<BucketReport>, Error> {
    if crate::migrate::evidence::bucket_specs(plan).is_empty() {
        return Ok(Vec::new());
    }
    Err(Error::Refused(
        "this ferry was built without the `aws` feature: bucket copies need aws-sdk-s3".into(),
    ))
}

/// The manifest of one bucket copy as the ledger's records make it (`ferry migrate manifest`):
/// its text, whose SHA-256 is the root the copy recorded.
pub fn manifest(state: &State, plan_path: &Path, copy: &str) -> Result<Manifest, Error> {
    let plan = workspace::read_plan(plan_path)?;
    spec_of(&plan)?;
    let entries = plan_entries(state, &plan)?;
    let prior = crate::migrate::bucket::replay(&entries);
    let mine = prior.get(copy).ok_or_else(|| {
        Error::Refused(format!(
            "plan {} has no record of bucket copy `{copy}`",
            plan.id
        ))
    })?;
    mine.checked_manifest(copy).map_err(Error::Refused)
}

async fn verify_database(
    state: &State,
    plan: &SavedPlan,
    spec: &MigrationSpec,
    probes: &Probes,
) -> Result<VerifyReport, Error> {
    let m = Migration {
        probes,
        spec,
        plan_id: &plan.id,
    };
    let report = verify::run(&m, None, &Default::default())
        .await
        .map_err(Error::Refused)?;
    let detail = json!({ "report": report });
    let e = verified(
        state,
        plan,
        Event::MigrationVerified,
        report.passed(),
        &report.verdict(),
    );
    state.ledger.append(e.detail(detail))?;
    Ok(report)
}

/// The ledger entry of a verification run by `ferry migrate verify` (its detail to add).
fn verified(
    state: &State,
    plan: &SavedPlan,
    event: Event,
    passed: bool,
    verdict: &str,
) -> NewEntry {
    NewEntry::new(&state.actor, event)
        .plan(&plan.id)
        .outcome(if passed { Outcome::Ok } else { Outcome::Failed })
        .message(format!("`ferry migrate verify`: {verdict}"))
}

/// Every ledger entry of a plan.
fn plan_entries(state: &State, plan: &SavedPlan) -> Result<Vec<crate::ledger::Entry>, Error> {
    super::audit::Filter {
        plan: Some(plan.id.clone()),
        ..Default::default()
    }
    .select(&state.ledger)
}

/// The report of a migration plan from the ledger's entries.
pub fn report(state: &State, plan_path: &Path) -> Result<MigrationReport, Error> {
    let plan = workspace::read_plan(plan_path)?;
    let spec = spec_of(&plan)?;
    let entries = plan_entries(state, &plan)?;
    Ok(crate::migrate::evidence::report_of(
        &plan,
        spec.as_ref(),
        &entries,
    ))
}

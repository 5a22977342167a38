//! A migration plan's steps: preflight, (a confirmation to replace the target's contents, one
//! to delete a bucket's extra objects), the `before` steps (the write fence), schema, copy, the
//! bucket copies, indexes, verify, the bucket verifications, sequences, then the `after` steps
//! (cut-over, resume, drain). One wave per step, each waiting for the one before; any failure
//! halts with a resumable record. Pure: the same plan file gives the same steps.

use super::{PlanBody, PlanError, SavedPlanKind, StepOp, plan_runbook};
use crate::migrate::bucket::{BucketEnd, BucketPhase, BucketSpec, MIB};
use crate::migrate::{MigrationSpec, Phase};
use crate::model::{BucketCopy, Hook, Inventory, MigrationMode, MigrationPlan, TargetKind};
use crate::ops::Op;
use crate::target::TargetRef;

type PlanStep = (String, TargetRef, StepOp);

/// What a migration's database steps carry out, from the plan file (none when it moves only
/// buckets).
pub fn migration_spec(mp: &MigrationPlan) -> Option<MigrationSpec> {
    Some(MigrationSpec {
        source: mp.source.clone()?,
        target: mp.target.clone()?,
        mode: mp.mode,
        max_parallel: mp.max_parallel,
        chunk_rows: mp.chunk_rows,
        exclude: mp.exclude.clone(),
        rules: mp.rules.clone(),
    })
}

/// What each bucket copy's steps carry out: the plan's copy with its buckets looked up.
pub fn bucket_specs(inv: &Inventory, mp: &MigrationPlan) -> Result<Vec<BucketSpec>, PlanError> {
    mp.buckets.iter().map(|b| bucket_spec(inv, b)).collect()
}

fn bucket_spec(inv: &Inventory, b: &BucketCopy) -> Result<BucketSpec, PlanError> {
    let end = |id: &str, prefix: &str| {
        let bucket = inv.bucket(id).ok_or_else(|| {
            PlanError::InvalidStep(
                format!("bucket-copy-{}", b.name),
                format!("bucket `{id}` is not in the inventory"),
            )
        })?;
        Ok::<_, PlanError>(BucketEnd {
            bucket: id.to_owned(),
            cloud: bucket.cloud.clone(),
            name: bucket.name.clone(),
            prefix: prefix.to_owned(),
        })
    };
    let source = end(&b.source, &b.prefix)?;
    let target = end(&b.target, b.target_prefix.as_deref().unwrap_or(&b.prefix))?;
    Ok(BucketSpec {
        name: b.name.clone(),
        same_storage: same_storage(inv, &source.cloud, &target.cloud),
        source,
        target,
        delete_extra: b.delete_extra,
        max_parallel: b.max_parallel,
        part_size: b.part_size_mib * MIB,
    })
}

/// Two clouds are one storage: the same endpoint (or both AWS's own), account and region.
fn same_storage(inv: &Inventory, a: &str, b: &str) -> bool {
    let aws = |id: &str| inv.cloud(id).and_then(|c| c.aws.as_ref());
    match (aws(a), aws(b)) {
        (Some(x), Some(y)) => {
            (&x.endpoint_url, &x.account, &x.region) == (&y.endpoint_url, &y.account, &y.region)
        }
        _ => false,
    }
}

pub fn plan_migration(inv: &Inventory, mp: &MigrationPlan) -> Result<PlanBody, PlanError> {
    let buckets = bucket_specs(inv, mp)?;
    let db = database_steps(inv, mp)?;
    let site = match (&mp.target, buckets.first()) {
        (Some(t), _) => inv.database(t).and_then(|d| d.site.clone()),
        (None, Some(b)) => inv.bucket(&b.target.bucket).and_then(|b| b.site.clone()),
        (None, None) => None,
    }
    .unwrap_or_else(|| "-".into());
    let on = |name: &str| TargetRef::new(&site, "-", name, TargetKind::Local);
    let bucket = |p: BucketPhase, b: &BucketSpec| {
        let id = format!("{}-{}", p.name().replace('.', "-"), b.name);
        let title = format!(
            "{} {}: {} -> {}",
            p.name(),
            b.name,
            b.source.url(),
            b.target.url()
        );
        let op = Op::Bucket {
            phase: p,
            spec: b.clone(),
        };
        (id.clone(), on(&id), step(title, op, Some(bucket_advice(p))))
    };
    let mut steps = db.take(&[Phase::Preflight]);
    steps.extend(db.confirm.clone());
    for b in buckets.iter().filter(|b| b.delete_extra) {
        let id = format!("confirm-delete-{}", b.name);
        let op = Op::Manual {
            instructions: format!(
                "Objects under {} that {} does not have are deleted by copy `{}`. Confirm with `ferry apply --confirm STEP` once they may be lost.",
                b.target.url(),
                b.source.url(),
                b.name
            ),
        };
        let title = format!("confirm: delete objects only on {}", b.target.url());
        steps.push((id.clone(), on(&id), step(title, op, None)));
    }
    steps.extend(hooks(inv, &mp.before, &on)?);
    steps.extend(db.take(&[Phase::Schema, Phase::Copy]));
    steps.extend(buckets.iter().map(|b| bucket(BucketPhase::Copy, b)));
    steps.extend(db.take(&[Phase::Indexes, Phase::Verify]));
    steps.extend(buckets.iter().map(|b| bucket(BucketPhase::Verify, b)));
    steps.extend(db.take(&[Phase::Sequences]));
    steps.extend(hooks(inv, &mp.after, &on)?);
    let mut body = plan_runbook(&mp.name, steps);
    body.kind = SavedPlanKind::Migration;
    Ok(body)
}

fn step(title: String, op: Op, on_failure: Option<String>) -> StepOp {
    StepOp {
        title,
        op,
        on_failure,
    }
}

/// The database's phases (none without a database), to be placed among the bucket steps.
struct DatabaseSteps {
    phases: Vec<(Phase, PlanStep)>,
    confirm: Vec<PlanStep>,
}

impl DatabaseSteps {
    fn take(&self, which: &[Phase]) -> Vec<PlanStep> {
        self.phases
            .iter()
            .filter(|(p, _)| which.contains(p))
            .map(|(_, s)| s.clone())
            .collect()
    }
}

fn database_steps(inv: &Inventory, mp: &MigrationPlan) -> Result<DatabaseSteps, PlanError> {
    let Some(spec) = migration_spec(mp) else {
        return Ok(DatabaseSteps {
            phases: Vec::new(),
            confirm: Vec::new(),
        });
    };
    let target_db = inv
        .database(&spec.target)
        .ok_or_else(|| PlanError::UnknownDatabase(spec.target.clone()))?;
    inv.database(&spec.source)
        .ok_or_else(|| PlanError::UnknownDatabase(spec.source.clone()))?;
    let site = target_db.site.clone().unwrap_or_else(|| "-".into());
    let on = |name: &str| TargetRef::new(&site, "-", name, TargetKind::Local);
    let phases = [
        Phase::Preflight,
        Phase::Schema,
        Phase::Copy,
        Phase::Indexes,
        Phase::Verify,
        Phase::Sequences,
    ]
    .into_iter()
    .map(|p| {
        let title = format!("{} {} -> {}", p.name(), spec.source, spec.target);
        let op = Op::Migrate {
            phase: p,
            spec: spec.clone(),
        };
        let id = p.name().trim_start_matches("migrate.").to_owned();
        (p, (id, on(&spec.target), step(title, op, Some(advice(p)))))
    })
    .collect();
    let mut confirm = Vec::new();
    if mp.mode == MigrationMode::Replace {
        let op = Op::Manual {
            instructions: format!(
                "The source's tables, sequences and views replace those of the same name in database `{}` (dropped first). Confirm with `ferry apply --confirm STEP` once its contents may be lost.",
                spec.target
            ),
        };
        let title = format!("confirm: replace the contents of `{}`", spec.target);
        confirm.push((
            "confirm-replace".into(),
            on(&spec.target),
            step(title, op, None),
        ));
    }
    Ok(DatabaseSteps { phases, confirm })
}

fn hooks(
    inv: &Inventory,
    list: &[Hook],
    on: &dyn Fn(&str) -> TargetRef,
) -> Result<Vec<PlanStep>, PlanError> {
    list.iter()
        .map(|h| {
            let op = crate::hooks::compile(h, inv).map_err(|p| {
                let msg = p.into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("; ");
                PlanError::InvalidStep(h.name.clone(), msg)
            })?;
            Ok((h.name.clone(), on(&h.name), step(h.name.clone(), op, None)))
        })
        .collect()
}

/// What on-call does when a phase fails (the ledger records it with the failure).
fn advice(p: Phase) -> String {
    match p {
        Phase::Preflight => "fix each finding (or set `mode: replace` for a target that is not empty), then `ferry apply --resume`".into(),
        Phase::Schema => "read the statement psql refused; fix the target (roles, extensions) and `ferry apply --resume`: the load is one transaction, nothing of it was kept".into(),
        Phase::Indexes => "read the statement pg_restore refused (a key or constraint the copied rows break names the row); fix the cause and `ferry apply --resume`: the indexes and constraints already there as the source has them are kept, the rest dropped if present and built again".into(),
        Phase::Copy => "`ferry apply --resume` copies only the chunks not recorded as copied; the source is unchanged".into(),
        Phase::Verify => "read `ferry migrate report PLAN`: every difference is named by key; fix the cause (or add a rule with its reason to the plan) and re-run `ferry migrate verify PLAN`".into(),
        Phase::Sequences => "`ferry apply --resume` sets the sequences again from the source".into(),
    }
}

fn bucket_advice(p: BucketPhase) -> String {
    match p {
        BucketPhase::Copy => "`ferry apply --resume` lists both sides again, keeps every object recorded as copied and unchanged since, continues each multipart upload from its next part and aborts the uploads it no longer needs; the source is unchanged".into(),
        BucketPhase::Verify => "read `ferry migrate report PLAN`: every missing, extra or different key is named; fix the cause (copy again with a new plan, or remove the extra object) and re-run `ferry migrate verify PLAN`".into(),
    }
}

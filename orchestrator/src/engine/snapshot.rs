//! RDS snapshots of an inventory database, as library calls: list them, or take one now and
//! wait until it is available (recorded in the ledger, started and finished).

use std::path::Path;

use super::{Error, State};
use crate::drivers::OpContext;
use crate::drivers::OpRunner;
use crate::drivers::rds::{Pruned, RdsOps};
use crate::executor::Progress;
use crate::ledger::{Event, NewEntry, Outcome};
use crate::load::Loaded;
use crate::model::{Database, Inventory};
use crate::ops::{Op, SnapshotInfo};
use crate::{plan, workspace};

/// The inventory at `path` and its database `database` (refused by name if it has none such).
pub fn database(path: &Path, database: &str) -> Result<(Loaded<Inventory>, Database), Error> {
    let inv = workspace::load(path, &[]).map_err(Error::Invalid)?.0;
    let Some(db) = inv.value.database(database).cloned() else {
        return Err(Error::Refused(format!(
            "database `{database}` is not in the inventory (it has: {})",
            inv.value
                .databases
                .iter()
                .map(|d| d.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    Ok((inv, db))
}

/// A driver failure answering a request that is not a plan step: the command is refused.
pub(crate) fn refused(e: crate::drivers::DriverError) -> Error {
    Error::Refused(e.to_string())
}

/// Every snapshot of the database's instance, oldest first; with `aws_backup`, AWS Backup's
/// recovery points of it too.
pub async fn list(
    inv: &Loaded<Inventory>,
    database: &str,
    aws_backup: bool,
    progress: &dyn Progress,
) -> Result<Vec<SnapshotInfo>, Error> {
    let rds = RdsOps::new(&inv.value, &workspace::base_dir(&inv.source.path));
    let say = |l: String| progress.line(&l);
    let mut list = rds.snapshots(database, None, &say).await.map_err(refused)?;
    if aws_backup {
        list.extend(
            rds.snapshots(database, Some("awsbackup"), &say)
                .await
                .map_err(refused)?,
        );
        list.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    }
    Ok(list)
}

/// Deletes ferry's own snapshots of the database beyond the newest `keep` (or the database's
/// `snapshot_retention`), recorded as an operation with what was deleted and kept.
pub async fn prune(
    state: &State,
    inv: &Loaded<Inventory>,
    db: &Database,
    keep: Option<u32>,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<Pruned, Error> {
    let Some(keep) = keep.or(db.snapshot_retention) else {
        return Err(Error::Refused(format!(
            "how many of ferry's snapshots of `{}` to keep: say --keep N, or set `snapshot_retention` on the database in {}",
            db.id,
            inv.source.path.display()
        )));
    };
    if keep == 0 {
        return Err(Error::Refused(
            "--keep 0 would delete every snapshot ferry took: keep at least 1".into(),
        ));
    }
    let rds = RdsOps::new(&inv.value, &workspace::base_dir(&inv.source.path));
    let say = |l: String| progress.line(&l);
    if dry_run {
        return rds
            .prune(&db.id, keep as usize, true, &say)
            .await
            .map_err(refused);
    }
    let target = plan::database_target(&inv.value, &db.id)?;
    let operation = format!("prune-{}", uuid::Uuid::new_v4());
    let entry = |event| operation_entry(state, &target, db, &operation, "rds.prune", event);
    state
        .ledger
        .append(entry(Event::OperationStarted).message(format!(
            "delete ferry's snapshots of {} beyond the newest {keep}",
            db.identifier
        )))?;
    let result = rds.prune(&db.id, keep as usize, false, &say).await;
    let done = match &result {
        Ok(p) => entry(Event::OperationFinished)
            .outcome(Outcome::Ok)
            .message(format!(
                "deleted {} snapshot(s), kept {}",
                p.deleted.len(),
                p.kept.len()
            ))
            .detail(serde_json::to_value(p).expect("prunes serialize")),
        Err(e) => entry(Event::OperationFinished)
            .outcome(Outcome::Failed)
            .message(e.to_string()),
    };
    state.ledger.append(done)?;
    result.map_err(refused)
}

/// Takes snapshot `id` (default `ferry-INSTANCE-YYYYMMDD-HHMMSS`) of the database now and
/// waits until it is available; `operation_started` and `operation_finished` are recorded.
/// Returns what AWS says of the snapshot.
pub async fn create(
    state: &State,
    inv: &Loaded<Inventory>,
    db: &Database,
    id: Option<&str>,
    timeout_seconds: u64,
    progress: &dyn Progress,
) -> Result<serde_json::Value, Error> {
    let id = id.map_or_else(
        || {
            format!(
                "ferry-{}-{}",
                db.identifier,
                chrono::Utc::now().format("%Y%m%d-%H%M%S")
            )
        },
        str::to_owned,
    );
    let target = plan::database_target(&inv.value, &db.id)?;
    let op = Op::RdsSnapshot {
        database: db.id.clone(),
        identifier: db.identifier.clone(),
        snapshot_id: Some(id.clone()),
        timeout_seconds,
    };
    let operation = format!("snapshot-{}", uuid::Uuid::new_v4());
    let entry = |event| operation_entry(state, &target, db, &operation, op.name(), event);
    state
        .ledger
        .append(entry(Event::OperationStarted).message(op.describe()))?;
    let rds = RdsOps::new(&inv.value, &workspace::base_dir(&inv.source.path));
    let say = |l: String| progress.line(&l);
    let cx = OpContext {
        plan_id: &operation,
        step_id: "create",
        say: &say,
    };
    let result = rds.run(&cx, &op).await;
    let (outcome, message) = match &result {
        Ok(_) => (Outcome::Ok, format!("snapshot {id} available")),
        Err(e) => (Outcome::Failed, e.to_string()),
    };
    let mut done = entry(Event::OperationFinished)
        .outcome(outcome)
        .message(message);
    if let Ok(detail) = &result {
        done = done.detail(detail.clone());
    }
    state.ledger.append(done)?;
    result.map_err(refused)
}

/// An entry of an operation outside any plan on a database (started, finished).
fn operation_entry(
    state: &State,
    target: &crate::target::TargetRef,
    db: &Database,
    operation: &str,
    name: &str,
    event: Event,
) -> NewEntry {
    let mut e = NewEntry::new(&state.actor, event);
    e.target = Some(target.id.clone());
    e.site = Some(target.site.clone());
    e.app = Some(db.id.clone());
    e.step = Some(operation.to_owned());
    e.to = Some(name.to_owned());
    e
}

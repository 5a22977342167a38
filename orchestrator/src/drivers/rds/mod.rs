//! AWS RDS operations: snapshots, restores, waits, verification, renames, deletion.
//!
//! Every call goes through [`RdsOps::call`], which retries throttling, 5xx and connection
//! failures with exponential backoff (jittered) and reports each retry; every wait is a bounded
//! poll of our own (the SDK's waiters poll no faster than every 30 s and cannot report
//! progress). Every operation is idempotent for a given plan and step: what it creates is
//! tagged `ferry:plan`/`ferry:step`, and a re-run (a resumed apply) adopts what it finds
//! instead of making a second one.

pub mod api;
#[cfg(test)]
pub mod fake;
pub mod sdk;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use self::api::{AwsError, AwsErrorKind, InstanceInfo, InstanceSettings, RdsApi, SnapshotInfo};
use super::{DriverError, OpContext, OpRunner};
use crate::model::{AwsCloud, Database, Inventory};
use crate::ops::{self, Op};

pub const TAG_PLAN: &str = "ferry:plan";
pub const TAG_STEP: &str = "ferry:step";
pub const TAG_DATABASE: &str = "ferry:database";

/// Instance states from which `available` does not come by waiting.
const INSTANCE_FAILED: &[&str] = &[
    "failed",
    "incompatible-restore",
    "incompatible-parameters",
    "incompatible-network",
    "incompatible-option-group",
    "storage-full",
    "inaccessible-encryption-credentials",
    "restore-error",
];
const SNAPSHOT_FAILED: &[&str] = &["failed", "error"];

type Factory = dyn Fn(&str, &AwsCloud) -> Result<Arc<dyn RdsApi>, AwsError> + Send + Sync;

/// Carries out RDS operations for the databases of one inventory.
pub struct RdsOps {
    inv: Inventory,
    clients: Mutex<BTreeMap<String, Arc<dyn RdsApi>>>,
    factory: Box<Factory>,
    /// Time between two looks at a resource being waited for.
    pub poll: Duration,
    /// First retry delay; doubled on each attempt, capped at 20 s, fully jittered.
    pub backoff: Duration,
}

impl RdsOps {
    /// Real clients (aws-sdk-rds), one per AWS cloud, made on first use.
    pub fn new(inv: &Inventory, base: &Path) -> Self {
        let base: PathBuf = base.to_owned();
        let poll = std::env::var("FERRY_RDS_POLL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(5), Duration::from_millis);
        Self {
            inv: inv.clone(),
            clients: Mutex::new(BTreeMap::new()),
            factory: Box::new(move |id, aws| {
                Ok(Arc::new(sdk::SdkRds::new(id, aws, &base)?) as Arc<dyn RdsApi>)
            }),
            poll,
            backoff: Duration::from_millis(500),
        }
    }

    /// Every cloud answered by `api` (tests).
    pub fn with_api(inv: &Inventory, api: Arc<dyn RdsApi>) -> Self {
        Self {
            inv: inv.clone(),
            clients: Mutex::new(BTreeMap::new()),
            factory: Box::new(move |_, _| Ok(api.clone())),
            poll: Duration::from_millis(1),
            backoff: Duration::from_millis(1),
        }
    }

    fn database(&self, id: &str) -> Result<(&Database, &AwsCloud, String), DriverError> {
        let db = self.inv.database(id).ok_or_else(|| DriverError::Failed {
            target: format!("database {id}"),
            action: "look up",
            message: "not in the inventory's `databases`".into(),
        })?;
        let aws = self
            .inv
            .cloud(&db.cloud)
            .and_then(|c| c.aws.as_ref())
            .ok_or_else(|| DriverError::Failed {
                target: format!("database {id}"),
                action: "look up",
                message: format!("cloud `{}` has no `aws` section", db.cloud),
            })?;
        let place = format!(
            "cloud `{}` (account {}, region {})",
            db.cloud, aws.account, aws.region
        );
        Ok((db, aws, place))
    }

    fn api(&self, db: &Database, aws: &AwsCloud) -> Result<Arc<dyn RdsApi>, DriverError> {
        let mut clients = self.clients.lock().expect("clients lock");
        if let Some(c) = clients.get(&db.cloud) {
            return Ok(c.clone());
        }
        let c = (self.factory)(&db.cloud, aws).map_err(|e| DriverError::Failed {
            target: format!("rds {}", db.cloud),
            action: "connect",
            message: e.to_string(),
        })?;
        clients.insert(db.cloud.clone(), c.clone());
        Ok(c)
    }

    /// One API call, retried with backoff while AWS throttles or cannot be reached.
    async fn call<T, F, Fut>(&self, cx: &Call<'_>, what: &str, f: F) -> Result<T, DriverError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AwsError>>,
    {
        self.attempts(cx, what, f)
            .await
            .map_err(|(e, _, attempt)| cx.fail(what, &e, attempt))
    }

    /// A call that changes something (create, restore, rename, delete). When an attempt got no
    /// answer (a timeout, a 5xx: it may have been carried out) and the retry is refused as
    /// already done (AlreadyExists, NotFound, an invalid state), None: the caller looks at what
    /// is there and decides, by ferry's tags, whether it was this run's call.
    async fn mutate<T, F, Fut>(
        &self,
        cx: &Call<'_>,
        what: &str,
        f: F,
    ) -> Result<Option<T>, DriverError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AwsError>>,
    {
        match self.attempts(cx, what, f).await {
            Ok(v) => Ok(Some(v)),
            Err((e, true, _))
                if matches!(
                    e.kind,
                    AwsErrorKind::AlreadyExists
                        | AwsErrorKind::NotFound
                        | AwsErrorKind::InvalidState
                ) =>
            {
                (cx.say)(format!(
                    "  check   {what} on {}: an earlier attempt got no answer and the retry says {e}; looking at what is there",
                    cx.place
                ));
                Ok(None)
            }
            Err((e, _, attempt)) => Err(cx.fail(what, &e, attempt)),
        }
    }

    /// Attempts of one call: the error, whether an earlier attempt went unanswered, and how
    /// many attempts were made.
    async fn attempts<T, F, Fut>(
        &self,
        cx: &Call<'_>,
        what: &str,
        mut f: F,
    ) -> Result<T, (AwsError, bool, u32)>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AwsError>>,
    {
        let attempts = cx.aws.max_attempts.max(1);
        let mut attempt = 1;
        let mut unanswered = false;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() && attempt < attempts => {
                    unanswered |= e.maybe_done();
                    let delay = crate::drivers::backoff_delay(self.backoff, attempt);
                    (cx.say)(format!(
                        "  retry   {what} on {}: {e}; attempt {}/{attempts} in {} ms",
                        cx.place,
                        attempt + 1,
                        delay.as_millis()
                    ));
                    *cx.retries.lock().expect("retries lock") += 1;
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err((e, unanswered, attempt)),
            }
        }
    }

    /// Polls `look` until what it looks at is `available`; fails at once on a `failed` state or
    /// when it is gone, and with a timeout naming the last state when the deadline passes.
    async fn wait_available<T, F, Fut>(
        &self,
        cx: &Call<'_>,
        what: &str,
        failed: &[&str],
        timeout: u64,
        status: fn(&T) -> &str,
        mut look: F,
    ) -> Result<T, DriverError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, DriverError>>,
    {
        let deadline = Instant::now() + Duration::from_secs(timeout);
        let mut last = String::new();
        loop {
            let Some(now) = look().await? else {
                return Err(cx.error("wait", format!("{what} does not exist in {}", cx.place)));
            };
            let state = status(&now);
            if state == "available" {
                return Ok(now);
            }
            if failed.contains(&state) {
                return Err(cx.error(
                    "wait",
                    format!("{what} is `{state}`: it will not become available by waiting"),
                ));
            }
            if state != last {
                (cx.say)(format!("  ...     {what} is `{state}`"));
                state.clone_into(&mut last);
            }
            if Instant::now() >= deadline {
                return Err(DriverError::Timeout {
                    target: cx.target.clone(),
                    what: format!(
                        "waiting for {what} to be `available` (still `{last}`; the work goes on at AWS: `ferry apply --resume PLAN` waits again, it does not start it again)"
                    ),
                    seconds: timeout,
                });
            }
            tokio::time::sleep(
                self.poll
                    .min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
        }
    }

    async fn wait_instance(
        &self,
        cx: &Call<'_>,
        api: &Arc<dyn RdsApi>,
        id: &str,
        timeout: u64,
    ) -> Result<InstanceInfo, DriverError> {
        let what = format!("instance {id}");
        self.wait_available(
            cx,
            &what,
            INSTANCE_FAILED,
            timeout,
            |i: &InstanceInfo| &i.status,
            || self.call(cx, "DescribeDBInstances", || api.instance(id)),
        )
        .await
    }

    async fn wait_snapshot(
        &self,
        cx: &Call<'_>,
        api: &Arc<dyn RdsApi>,
        id: &str,
        timeout: u64,
    ) -> Result<SnapshotInfo, DriverError> {
        let what = format!("snapshot {id}");
        self.wait_available(
            cx,
            &what,
            SNAPSHOT_FAILED,
            timeout,
            |s: &SnapshotInfo| &s.status,
            || self.call(cx, "DescribeDBSnapshots", || api.snapshot(id, None)),
        )
        .await
    }

    /// The instance of a database as it is now (plan time: it must exist).
    pub async fn describe(
        &self,
        database: &str,
        say: &(dyn Fn(String) + Send + Sync),
    ) -> Result<InstanceInfo, DriverError> {
        let (db, aws, place) = self.database(database)?;
        let api = self.api(db, aws)?;
        let cx = Call::new(db, aws, place, "describe", say);
        match self
            .call(&cx, "DescribeDBInstances", || api.instance(&db.identifier))
            .await?
        {
            Some(i) => Ok(i),
            None => Err(cx.error(
                "describe",
                format!(
                    "instance {} of database `{}` does not exist in {}",
                    db.identifier, db.id, cx.place
                ),
            )),
        }
    }

    /// Whether an instance id is in use in the database's cloud, and by which plan.
    pub async fn instance(
        &self,
        database: &str,
        id: &str,
        say: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Option<InstanceInfo>, DriverError> {
        let (db, aws, place) = self.database(database)?;
        let api = self.api(db, aws)?;
        let cx = Call::new(db, aws, place, "describe", say);
        self.call(&cx, "DescribeDBInstances", || api.instance(id))
            .await
    }

    /// Every snapshot of the database's instance, oldest first: manual and automated, or of
    /// one `SnapshotType` (`awsbackup`: AWS Backup's recovery points).
    pub async fn snapshots(
        &self,
        database: &str,
        kind: Option<&str>,
        say: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Vec<SnapshotInfo>, DriverError> {
        let (db, aws, place) = self.database(database)?;
        let api = self.api(db, aws)?;
        let cx = Call::new(db, aws, place, "list snapshots", say);
        let mut list = self
            .call(&cx, "DescribeDBSnapshots", || {
                api.snapshots(&db.identifier, kind)
            })
            .await?;
        list.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(list)
    }

    /// Deletes ferry's own manual snapshots of the database's instance (those carrying
    /// `ferry:plan`) beyond the newest `keep` available ones; snapshots of anyone else,
    /// automated ones and AWS Backup's are never touched. With `dry_run` nothing is deleted.
    pub async fn prune(
        &self,
        database: &str,
        keep: usize,
        dry_run: bool,
        say: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Pruned, DriverError> {
        let (db, aws, place) = self.database(database)?;
        let api = self.api(db, aws)?;
        let cx = Call::new(db, aws, place, "prune snapshots", say);
        let mut ours = Vec::new();
        let mut others = 0;
        for s in self.snapshots(database, None, say).await? {
            if s.kind != "manual" || s.status != "available" {
                others += 1;
                continue;
            }
            let tags = self
                .call(&cx, "DescribeDBSnapshots", || {
                    api.snapshot_tags(&s.id, None)
                })
                .await?;
            if tags.contains_key(TAG_PLAN) {
                ours.push(s.id);
            } else {
                others += 1;
            }
        }
        // Oldest first: the newest `keep` are the last ones.
        let cut = ours.len().saturating_sub(keep);
        let (old, kept) = ours.split_at(cut);
        for id in old.iter().filter(|_| !dry_run) {
            (cx.say)(format!("  delete  snapshot {id}"));
            self.mutate(&cx, "DeleteDBSnapshot", || api.delete_snapshot(id))
                .await?;
        }
        Ok(Pruned {
            deleted: old.to_vec(),
            kept: kept.to_vec(),
            others,
            dry_run,
        })
    }

    async fn snapshot_op(
        &self,
        cx: &Call<'_>,
        api: &Arc<dyn RdsApi>,
        run: &OpContext<'_>,
        identifier: &str,
        id: &str,
        timeout: u64,
    ) -> Result<Value, DriverError> {
        let mut adopted = false;
        match self
            .call(cx, "DescribeDBSnapshots", || api.snapshot(id, None))
            .await?
        {
            Some(_) => {
                let tags = self
                    .call(cx, "DescribeDBSnapshots", || api.snapshot_tags(id, None))
                    .await?;
                if !ours(&tags, run) {
                    return Err(cx.error(
                        "snapshot",
                        format!(
                            "snapshot id {id} is already taken by a snapshot this plan did not make"
                        ),
                    ));
                }
                (cx.say)(format!(
                    "  found   snapshot {id}, started by this plan before: waiting for it, not taking another"
                ));
                adopted = true;
            }
            None => {
                self.wait_snapshottable(cx, api, identifier, timeout)
                    .await?;
                let tags = tags(run, cx.database);
                let made = self
                    .mutate(cx, "CreateDBSnapshot", || {
                        api.create_snapshot(identifier, id, &tags)
                    })
                    .await?;
                if made.is_none() {
                    // A lost answer: the snapshot there must be this plan's.
                    let theirs = self
                        .call(cx, "DescribeDBSnapshots", || api.snapshot_tags(id, None))
                        .await?;
                    if !ours(&theirs, run) {
                        return Err(cx.error(
                            "snapshot",
                            format!(
                                "snapshot id {id} is taken by a snapshot this plan did not make"
                            ),
                        ));
                    }
                    adopted = true;
                }
            }
        }
        let s = self.wait_snapshot(cx, api, id, timeout).await?;
        Ok(json!({
            "snapshot": s.id,
            "instance": s.instance,
            "status": s.status,
            "created": s.created,
            "adopted": adopted,
        }))
    }
}

/// What a prune deleted (or would have, with `dry_run`) and kept.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pruned {
    pub deleted: Vec<String>,
    pub kept: Vec<String>,
    /// Snapshots left alone: not ferry's, automated, or not available.
    pub others: usize,
    pub dry_run: bool,
}

/// Tags on what a plan's step creates.
fn tags(run: &OpContext<'_>, database: &str) -> BTreeMap<String, String> {
    [
        (TAG_PLAN.to_owned(), run.plan_id.to_owned()),
        (TAG_STEP.to_owned(), run.step_id.to_owned()),
        (TAG_DATABASE.to_owned(), database.to_owned()),
    ]
    .into()
}

fn ours(tags: &BTreeMap<String, String>, run: &OpContext<'_>) -> bool {
    tags.get(TAG_PLAN).map(String::as_str) == Some(run.plan_id)
}

/// One operation's context for calls: where, for messages, and how many retries it took.
struct Call<'a> {
    database: &'a str,
    cloud: &'a str,
    aws: &'a AwsCloud,
    place: String,
    target: String,
    action: &'static str,
    say: &'a (dyn Fn(String) + Send + Sync),
    retries: Mutex<u32>,
}

impl<'a> Call<'a> {
    fn new(
        db: &'a Database,
        aws: &'a AwsCloud,
        place: String,
        action: &'static str,
        say: &'a (dyn Fn(String) + Send + Sync),
    ) -> Self {
        Self {
            database: &db.id,
            cloud: &db.cloud,
            aws,
            target: format!("database {} ({})", db.id, place),
            place,
            action,
            say,
            retries: Mutex::new(0),
        }
    }

    fn error(&self, action: &'static str, message: String) -> DriverError {
        DriverError::Failed {
            target: self.target.clone(),
            action,
            message,
        }
    }

    fn fail(&self, what: &str, e: &AwsError, attempts: u32) -> DriverError {
        let message = match e.kind {
            AwsErrorKind::Credentials if e.code.starts_with("AccessDenied") => format!(
                "{what}: the credentials of cloud `{}` are valid but not allowed to {}: {e}",
                self.cloud,
                api::denied_permission(&e.message).map_or_else(
                    || "do this".to_owned(),
                    |p| format!("`{p}` (grant it to them)")
                )
            ),
            AwsErrorKind::Credentials => format!(
                "{what}: AWS refused the credentials of cloud `{}`: {e}",
                self.cloud
            ),
            AwsErrorKind::Throttled | AwsErrorKind::Unreachable => {
                format!("{what}: {e} (gave up after {attempts} attempts)")
            }
            _ => format!("{what}: {e}"),
        };
        self.error(self.action, message)
    }
}

#[async_trait]
impl OpRunner for RdsOps {
    async fn run(&self, run: &OpContext<'_>, op: &Op) -> Result<Value, DriverError> {
        let Some(database) = op.database() else {
            return Err(DriverError::Failed {
                target: "operation".into(),
                action: "run",
                message: format!("`{}` is not an RDS operation", op.name()),
            });
        };
        let (db, aws, place) = self.database(database)?;
        let api = self.api(db, aws)?;
        let action: &'static str = op.name();
        let cx = Call::new(db, aws, place, action, run.say);
        let o = OpCx {
            cx: &cx,
            api: &api,
            run,
        };
        let mut out = match op {
            Op::Manual { .. }
            | Op::WaitUntil { .. }
            | Op::Call { .. }
            | Op::Record { .. }
            | Op::Migrate { .. }
            | Op::Bucket { .. } => {
                unreachable!(
                    "the executor runs manual steps, gates, calls, records, migrations and bucket copies itself"
                )
            }
            Op::RdsSnapshot {
                identifier,
                snapshot_id,
                timeout_seconds,
                ..
            } => {
                let id = snapshot_id
                    .clone()
                    .unwrap_or_else(|| ops::snapshot_id(identifier, run.plan_id, run.step_id));
                self.snapshot_op(&cx, &api, run, identifier, &id, *timeout_seconds)
                    .await?
            }
            Op::RdsRestore {
                snapshot_id,
                snapshot_type,
                new_identifier,
                instance_class,
                chosen,
                settings,
                ..
            } => {
                let adopted = self
                    .restore_op(
                        &o,
                        database,
                        (snapshot_id, snapshot_type.as_deref()),
                        new_identifier,
                        instance_class.as_deref(),
                        settings.as_ref(),
                    )
                    .await?;
                json!({ "instance": new_identifier, "snapshot": snapshot_id, "chosen": chosen, "adopted": adopted })
            }
            Op::RdsWait {
                identifier,
                timeout_seconds,
                ..
            } => {
                let started = Instant::now();
                let i = self
                    .wait_instance(&cx, &api, identifier, *timeout_seconds)
                    .await?;
                json!({ "instance": i.identifier, "status": i.status, "waited_ms": started.elapsed().as_millis() as u64 })
            }
            Op::RdsVerify {
                identifier,
                engine,
                engine_version,
                probe,
                timeout_seconds,
                settings,
                ..
            } => {
                let expect = Expect {
                    engine,
                    engine_version: engine_version.as_deref(),
                    settings: settings.as_ref(),
                };
                let checks = self
                    .verify_op(&o, identifier, &expect, probe, *timeout_seconds)
                    .await?;
                json!({ "instance": identifier, "checks": checks })
            }
            Op::RdsRename {
                from,
                to,
                timeout_seconds,
                ..
            } => {
                let (i, already) = self.rename_op(&o, from, to, *timeout_seconds).await?;
                json!({ "from": from, "to": i.identifier, "already_renamed": already })
            }
            Op::RdsDelete {
                identifier,
                timeout_seconds,
                ..
            } => {
                let final_id = ops::final_snapshot_id(identifier, run.plan_id);
                let already = self
                    .delete_op(&o, identifier, &final_id, *timeout_seconds)
                    .await?;
                json!({ "instance": identifier, "final_snapshot": final_id, "already_deleted": already })
            }
        };
        if let Some(o) = out.as_object_mut() {
            o.insert("database".into(), json!(database));
            o.insert("cloud".into(), json!(db.cloud));
            o.insert("account".into(), json!(aws.account));
            o.insert("region".into(), json!(aws.region));
            o.insert(
                "retries".into(),
                json!(*cx.retries.lock().expect("retries lock")),
            );
        }
        Ok(out)
    }
}

/// The states in which AWS accepts CreateDBSnapshot: "The source DB instance must be in the
/// `available` or `storage-optimization` state" (RDS API reference, CreateDBSnapshot). Any
/// other (`backing-up`, `modifying`, `rebooting`...) is waited out.
const SNAPSHOTTABLE: &[&str] = &["available", "storage-optimization"];

impl RdsOps {
    /// Waits, within the snapshot's own deadline, until the instance is in a state AWS takes a
    /// snapshot of; an instance that does not exist, or stays in another state, fails the step
    /// with what it saw.
    async fn wait_snapshottable(
        &self,
        cx: &Call<'_>,
        api: &Arc<dyn RdsApi>,
        identifier: &str,
        timeout: u64,
    ) -> Result<(), DriverError> {
        let deadline = Instant::now() + Duration::from_secs(timeout);
        let mut said = String::new();
        loop {
            let Some(i) = self
                .call(cx, "DescribeDBInstances", || api.instance(identifier))
                .await?
            else {
                return Err(cx.error(
                    "snapshot",
                    format!("instance {identifier} does not exist in {}", cx.place),
                ));
            };
            if SNAPSHOTTABLE.contains(&i.status.as_str()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DriverError::Timeout {
                    target: cx.target.clone(),
                    what: format!(
                        "instance {identifier} to be `available` for a snapshot (it is `{}`)",
                        i.status
                    ),
                    seconds: timeout,
                });
            }
            if said != i.status {
                (cx.say)(format!(
                    "  waiting instance {identifier} is `{}`; RDS snapshots an `available` (or `storage-optimization`) instance",
                    i.status
                ));
                said.clone_from(&i.status);
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

/// What `rds.verify` expects of an instance.
struct Expect<'a> {
    engine: &'a str,
    engine_version: Option<&'a str>,
    settings: Option<&'a InstanceSettings>,
}

/// What every operation of one step calls with: the reporting call context, the database's
/// client, and the step it runs for.
struct OpCx<'c> {
    cx: &'c Call<'c>,
    api: &'c Arc<dyn RdsApi>,
    run: &'c OpContext<'c>,
}

impl RdsOps {
    /// Restores `new_identifier` from the snapshot, or adopts the instance this plan restored
    /// before (an instance of that id that is not this plan's is refused). True if adopted.
    async fn restore_op(
        &self,
        o: &OpCx<'_>,
        database: &str,
        (snapshot_id, snapshot_type): (&str, Option<&str>),
        new_identifier: &str,
        instance_class: Option<&str>,
        settings: Option<&InstanceSettings>,
    ) -> Result<bool, DriverError> {
        let (cx, api) = (o.cx, o.api);
        let existing = self
            .call(cx, "DescribeDBInstances", || api.instance(new_identifier))
            .await?;
        match existing {
            Some(i) if ours(&i.tags, o.run) => {
                (cx.say)(format!(
                    "  found   instance {new_identifier}, restored by this plan before: adopting it, not restoring again"
                ));
                return Ok(true);
            }
            Some(_) => {
                return Err(cx.error(
                    "rds.restore",
                    format!("instance id {new_identifier} is already taken in {} by an instance this plan did not restore; choose another (--param new_identifier=...)", cx.place),
                ));
            }
            None => {}
        }
        if self
            .call(cx, "DescribeDBSnapshots", || {
                api.snapshot(snapshot_id, snapshot_type)
            })
            .await?
            .is_none()
        {
            return Err(cx.error(
                "rds.restore",
                format!("snapshot {snapshot_id} does not exist in {}", cx.place),
            ));
        }
        // The current instance's settings and tags, ferry's tags merged in (ferry's win).
        let mut carried = settings.cloned().unwrap_or_default();
        carried.tags.extend(tags(o.run, database));
        // The engine's default groups (`default.postgres15`, `default:postgres-15`) are what
        // the restore gets when none is named, and naming them can be refused (moto does not
        // register its default option groups): only custom groups are passed.
        carried.parameter_group = carried
            .parameter_group
            .filter(|g| !g.starts_with("default."));
        carried.option_group = carried.option_group.filter(|g| !g.starts_with("default:"));
        let made = self
            .mutate(cx, "RestoreDBInstanceFromDBSnapshot", || {
                api.restore(snapshot_id, new_identifier, instance_class, &carried)
            })
            .await?;
        if made.is_some() {
            return Ok(false);
        }
        // A lost answer: the instance there must be this plan's restore.
        match self
            .call(cx, "DescribeDBInstances", || api.instance(new_identifier))
            .await?
        {
            Some(i) if ours(&i.tags, o.run) => Ok(true),
            _ => Err(cx.error(
                "rds.restore",
                format!("the restore of {new_identifier} got no answer and no instance of this plan has that id"),
            )),
        }
    }

    /// Checks the instance is available with the inventory's engine (and version), then runs
    /// the probe; returns what was checked.
    async fn verify_op(
        &self,
        o: &OpCx<'_>,
        identifier: &str,
        expect: &Expect<'_>,
        probe: &[String],
        timeout: u64,
    ) -> Result<Vec<String>, DriverError> {
        let (engine, engine_version) = (expect.engine, expect.engine_version);
        let (cx, api) = (o.cx, o.api);
        let i = self
            .call(cx, "DescribeDBInstances", || api.instance(identifier))
            .await?
            .ok_or_else(|| {
                cx.error(
                    "rds.verify",
                    format!("instance {identifier} does not exist in {}", cx.place),
                )
            })?;
        let mut wrong = Vec::new();
        if i.status != "available" {
            wrong.push(format!("status is `{}`, not `available`", i.status));
        }
        if !i.engine.starts_with(engine) {
            wrong.push(format!(
                "engine is `{}`, the inventory says `{engine}`",
                i.engine
            ));
        }
        if let Some(v) = engine_version
            && i.engine_version != v
        {
            wrong.push(format!(
                "engine version is {}, expected {v}",
                i.engine_version
            ));
        }
        if let Some(want) = expect.settings {
            wrong.extend(want.differences(&i.carried()));
        }
        if !wrong.is_empty() {
            return Err(cx.error(
                "rds.verify",
                format!("instance {identifier}: {}", wrong.join("; ")),
            ));
        }
        let mut checks = vec![
            "status available".to_owned(),
            format!("engine {} {}", i.engine, i.engine_version),
        ];
        if let Some(want) = expect.settings {
            checks.push(format!("settings as the source's: {}", want.describe()));
        }
        if !probe.is_empty() {
            checks.push(run_probe(cx, probe, &i, timeout).await?);
        }
        Ok(checks)
    }

    /// Renames `from` to `to` (already done if only `to` exists) and waits for it; the
    /// instance and whether it was already renamed.
    async fn rename_op(
        &self,
        o: &OpCx<'_>,
        from: &str,
        to: &str,
        timeout: u64,
    ) -> Result<(InstanceInfo, bool), DriverError> {
        let (cx, api) = (o.cx, o.api);
        let src = self
            .call(cx, "DescribeDBInstances", || api.instance(from))
            .await?;
        let dst = self
            .call(cx, "DescribeDBInstances", || api.instance(to))
            .await?;
        let already = match (src, dst) {
            (None, Some(_)) => true,
            (Some(_), Some(_)) => {
                return Err(cx.error(
                    "rds.rename",
                    format!("cannot rename {from} to {to}: instance id {to} is taken"),
                ));
            }
            (None, None) => {
                return Err(cx.error(
                    "rds.rename",
                    format!("instance {from} does not exist in {}", cx.place),
                ));
            }
            (Some(_), None) => {
                // A lost answer whose retry is refused: the wait below finds `to` or says why.
                self.mutate(cx, "ModifyDBInstance", || api.rename(from, to))
                    .await?
                    .is_none()
            }
        };
        let i = self.wait_renamed(cx, api, to, timeout).await?;
        Ok((i, already))
    }

    /// Waits, within `timeout`, until a rename to `to` has taken effect
    /// (`InstanceInfo::renamed_to`); meanwhile the new id not being found yet is "still
    /// renaming", not a failure.
    async fn wait_renamed(
        &self,
        cx: &Call<'_>,
        api: &Arc<dyn RdsApi>,
        to: &str,
        timeout: u64,
    ) -> Result<InstanceInfo, DriverError> {
        let deadline = Instant::now() + Duration::from_secs(timeout);
        let mut last = String::new();
        loop {
            let now = self
                .call(cx, "DescribeDBInstances", || api.instance(to))
                .await?;
            let waiting = match &now {
                Some(i) if INSTANCE_FAILED.contains(&i.status.as_str()) => {
                    return Err(cx.error(
                        "rds.rename",
                        format!("instance {to} is {} after the rename", i.status),
                    ));
                }
                Some(i) => match i.renamed_to(to) {
                    Ok(()) => return Ok(i.clone()),
                    Err(why) => why,
                },
                None => format!("{to} not visible yet (renaming)"),
            };
            if waiting != last {
                (cx.say)(format!("  wait    {}: {waiting}", cx.place));
                last = waiting;
            }
            if Instant::now() >= deadline {
                return Err(cx.error(
                    "rds.rename",
                    format!(
                        "the rename to {to} did not take effect within {timeout}s: {last} (AWS says a new DNS name takes about 10 minutes)"
                    ),
                ));
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Deletes the instance with this plan's final snapshot and waits until it is gone; an
    /// instance already gone counts only if that final snapshot exists. True if already gone.
    async fn delete_op(
        &self,
        o: &OpCx<'_>,
        identifier: &str,
        final_id: &str,
        timeout: u64,
    ) -> Result<bool, DriverError> {
        let (cx, api) = (o.cx, o.api);
        let exists = self
            .call(cx, "DescribeDBInstances", || api.instance(identifier))
            .await?;
        if exists.is_none() {
            if self
                .call(cx, "DescribeDBSnapshots", || api.snapshot(final_id, None))
                .await?
                .is_none()
            {
                return Err(cx.error(
                    "rds.delete",
                    format!("instance {identifier} does not exist and this plan's final snapshot {final_id} does not either: it was not deleted by ferry"),
                ));
            }
            return Ok(true);
        }
        // A lost answer whose retry is refused (already deleting, or gone): the wait below
        // decides.
        self.mutate(cx, "DeleteDBInstance", || api.delete(identifier, final_id))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(timeout);
        while self
            .call(cx, "DescribeDBInstances", || api.instance(identifier))
            .await?
            .is_some()
        {
            if Instant::now() >= deadline {
                return Err(DriverError::Timeout {
                    target: cx.target.clone(),
                    what: format!("waiting for instance {identifier} to be deleted"),
                    seconds: timeout,
                });
            }
            tokio::time::sleep(self.poll).await;
        }
        Ok(false)
    }
}

/// Runs a verification probe here (not on the instance), with the endpoint in its environment.
async fn run_probe(
    cx: &Call<'_>,
    probe: &[String],
    i: &InstanceInfo,
    timeout: u64,
) -> Result<String, DriverError> {
    let (host, port) = i.endpoint.clone().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&probe[0]);
    cmd.args(&probe[1..])
        .env("FERRY_DB_HOST", &host)
        .env("FERRY_DB_PORT", port.to_string())
        .env("FERRY_DB_INSTANCE", &i.identifier)
        .env("FERRY_DB_ENGINE_VERSION", &i.engine_version)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(timeout), cmd.output())
        .await
        .map_err(|_| DriverError::Timeout {
            target: cx.target.clone(),
            what: format!("probe `{}`", probe.join(" ")),
            seconds: timeout,
        })?
        .map_err(|e| {
            cx.error(
                "rds.verify",
                format!("probe `{}` cannot run: {e}", probe[0]),
            )
        })?;
    if out.status.success() {
        Ok(format!("probe `{}` passed", probe.join(" ")))
    } else {
        let text = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        Err(cx.error(
            "rds.verify",
            format!(
                "probe `{}` failed ({}): {}",
                probe.join(" "),
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests;

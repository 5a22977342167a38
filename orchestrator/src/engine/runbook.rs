//! On-call runbooks as library calls: find and load them, and plan one (its parameters
//! checked, what only the cloud can say decided now and named in the plan for review). The
//! plan is then applied like any other (`engine::apply`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::snapshot::refused;
use super::{Error, State};
use crate::drivers::rds::RdsOps;
use crate::drivers::rds::api::InstanceInfo;
use crate::executor::Progress;
use crate::load::{self, Loaded};
use crate::model::{Inventory, Runbook};
use crate::ops::{self, Op};
use crate::plan::{self, SavedPlan, StepOp};
use crate::target::TargetRef;
use crate::{runbook, workspace};

/// `NAME` is `DIR/NAME.yaml`; a path to a YAML file is taken as it is.
fn path_of(dir: &Path, name: &str) -> PathBuf {
    if name.ends_with(".yaml") || name.ends_with(".yml") {
        PathBuf::from(name)
    } else {
        dir.join(format!("{name}.yaml"))
    }
}

/// The runbook `name` of `dir` (or the YAML file `name`), parsed; located errors if not.
pub fn load(dir: &Path, name: &str) -> Result<Loaded<Runbook>, Error> {
    let path = path_of(dir, name);
    let src = load::read_source(&path).map_err(|mut p| {
        if !path.exists() {
            p.message = format!(
                "no runbook `{name}` in {} (see `ferry runbook list`)",
                dir.display()
            );
        }
        Error::Invalid(vec![p].into())
    })?;
    load::parse_runbook(src).map_err(Error::Invalid)
}

/// Every runbook of `dir` (`*.yaml`, `*.yml`), by file name.
pub fn list(dir: &Path) -> Result<Vec<Loaded<Runbook>>, Error> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Refused(format!("cannot read {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let src = load::read_source(&p).map_err(|p| Error::Invalid(vec![p].into()))?;
            load::parse_runbook(src).map_err(Error::Invalid)
        })
        .collect()
}

/// `NAME=VALUE` arguments, each name once.
pub fn parse_params(params: &[String]) -> Result<BTreeMap<String, String>, Error> {
    let mut args = BTreeMap::new();
    for p in params {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| Error::Refused(format!("--param `{p}`: write it as NAME=VALUE")))?;
        if args.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(Error::Refused(format!("--param {k} is given twice")));
        }
    }
    Ok(args)
}

/// A planned runbook: the saved plan (not yet written) and the parameters it was planned with.
pub struct Planned {
    pub plan: SavedPlan,
    pub params: BTreeMap<String, serde_json::Value>,
}

/// Plans runbook `rb` with `args` against the inventory: parameters typed and checked, each
/// step's operation completed from the cloud (the snapshot a restore uses, the engine version
/// a verify expects, the instances that must exist or must not), every problem at once.
pub async fn plan(
    state: &State,
    inv: &Loaded<Inventory>,
    rb: &Loaded<Runbook>,
    args: &BTreeMap<String, String>,
    progress: &dyn Progress,
) -> Result<Planned, Error> {
    let compiled = runbook::compile(rb, &inv.value, args).map_err(Error::Invalid)?;
    let rds = RdsOps::new(&inv.value, &workspace::base_dir(&inv.source.path));
    let mut cloud = Cloud {
        rds: &rds,
        progress,
        described: BTreeMap::new(),
        restored_at: BTreeMap::new(),
        problems: Vec::new(),
    };
    let default_db = compiled
        .steps
        .iter()
        .find_map(|d| d.op.database())
        .map(str::to_owned);
    let mut steps = Vec::new();
    for d in compiled.steps {
        let mut op = d.op;
        cloud.complete(&d.id, &mut op, d.choose.as_ref()).await?;
        let hook = matches!(
            op,
            Op::WaitUntil { .. } | Op::Call { .. } | Op::Record { .. }
        );
        let target = match op.database().or(default_db.as_deref()) {
            // A gate, call or record is named by its step (its database may not be RDS).
            _ if hook => {
                let site = op
                    .database()
                    .and_then(|db| inv.value.database(db)?.site.clone())
                    .unwrap_or_else(|| "-".into());
                TargetRef::new(&site, "-", &d.id, crate::model::TargetKind::Local)
            }
            Some(db) => plan::database_target(&inv.value, db)?,
            None => TargetRef::new("-", "-", "operator", crate::model::TargetKind::Rds),
        };
        let title = d.title;
        let on_failure = d.on_failure;
        steps.push((
            d.id,
            target,
            StepOp {
                title,
                op,
                on_failure,
            },
        ));
    }
    if !cloud.problems.is_empty() {
        return Err(Error::Refused(format!(
            "runbook `{}` cannot be planned:\n  - {}",
            rb.value.name,
            cloud.problems.join("\n  - ")
        )));
    }
    let body = plan::plan_runbook(&rb.value.name, steps);
    let inputs = vec![
        workspace::input("inventory", &inv.source),
        workspace::input("runbook", &rb.source),
    ];
    Ok(Planned {
        plan: workspace::new_saved_plan(&state.actor, inputs, body),
        params: compiled.params,
    })
}

/// Where a runbook plan goes unless the caller says: `STATE_DIR/runbooks/NAME-ID8.json`.
pub fn default_path(state: &State, planned: &Planned) -> PathBuf {
    state.state_dir.join("runbooks").join(format!(
        "{}-{}.json",
        planned.plan.body.name,
        &planned.plan.id[..8]
    ))
}

/// What planning asks of the cloud, each database described once however many steps ask.
struct Cloud<'a> {
    rds: &'a RdsOps,
    progress: &'a dyn Progress,
    described: BTreeMap<String, InstanceInfo>,
    /// Per database, the engine version of the snapshot an earlier step restores: what the
    /// restored instance comes up at (older than the current one after a minor upgrade).
    restored_at: BTreeMap<String, String>,
    problems: Vec<String>,
}

impl Cloud<'_> {
    /// Decides now what only the cloud can say, so that the plan names it for review.
    async fn complete(
        &mut self,
        step: &str,
        op: &mut Op,
        choose: Option<&runbook::Choose>,
    ) -> Result<(), Error> {
        match op {
            Op::RdsRestore {
                database,
                snapshot_id,
                snapshot_type,
                chosen,
                new_identifier,
                settings,
                ..
            } => {
                // The new instance stands in for the current one: its network, groups,
                // availability, protection and tags, read now and shown in the plan.
                if settings.is_none() {
                    *settings = Some(self.current(database).await?.carried());
                }
                let say = |l: String| self.progress.line(&l);
                let list = self
                    .rds
                    .snapshots(database, None, &say)
                    .await
                    .map_err(refused)?;
                let (named, before) =
                    choose.map_or((None, None), |c| (c.named.as_deref(), c.before.as_deref()));
                match ops::choose_snapshot(&list, named, before) {
                    Ok((s, why)) => {
                        *snapshot_id = s.id.clone();
                        *snapshot_type = (s.kind != "manual").then(|| s.kind.clone());
                        *chosen = format!("{why}; created {}", s.created);
                        if !s.engine_version.is_empty() {
                            self.restored_at
                                .insert(database.clone(), s.engine_version.clone());
                        }
                    }
                    Err(e) => self
                        .problems
                        .push(format!("step `{step}`: {e} for database `{database}`")),
                }
                let taken = self.rds.instance(database, new_identifier, &say).await;
                if let Some(i) = taken.map_err(refused)? {
                    self.problems.push(format!(
                        "step `{step}`: instance id {new_identifier} is already taken (status `{}`); choose another with --param new_identifier=...",
                        i.status
                    ));
                }
            }
            Op::RdsVerify {
                database,
                engine_version,
                settings,
                ..
            } => {
                let now = self.current(database).await?.clone();
                if engine_version.is_none() {
                    *engine_version = Some(
                        self.restored_at
                            .get(database.as_str())
                            .cloned()
                            .unwrap_or_else(|| now.engine_version.clone()),
                    );
                }
                if settings.is_none() {
                    *settings = Some(now.carried());
                }
            }
            Op::RdsDelete {
                database,
                identifier,
                ..
            } => {
                let say = |l: String| self.progress.line(&l);
                let target = self.rds.instance(database, identifier, &say).await;
                // Not there yet: the database's current instance, renamed by an earlier step.
                let (protected, which) = match target.map_err(refused)? {
                    Some(i) => (i.settings.deletion_protection, i.identifier),
                    None => {
                        let now = self.current(database).await?;
                        (now.settings.deletion_protection, now.identifier.clone())
                    }
                };
                if protected {
                    self.problems.push(format!(
                        "step `{step}`: instance {which} (deleted as {identifier}) has deletion protection, so the delete would fail after the steps before it ran; turn it off first (aws rds modify-db-instance --db-instance-identifier {which} --no-deletion-protection --apply-immediately)"
                    ));
                }
            }
            Op::RdsSnapshot { database, .. } => {
                self.current(database).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The database's instance now (it must exist).
    async fn current(&mut self, database: &str) -> Result<&InstanceInfo, Error> {
        if !self.described.contains_key(database) {
            let say = |l: String| self.progress.line(&l);
            let now = self.rds.describe(database, &say).await.map_err(refused)?;
            self.described.insert(database.to_owned(), now);
        }
        Ok(&self.described[database])
    }
}

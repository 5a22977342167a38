//! The saved plan: steps with dependencies and undo, input hashes and observed fingerprints;
//! and the pure planner that computes it from desired state and observations.
//!
//! The planner never performs IO: it takes the inventory, the release plan and what the
//! drivers observed, and returns a [`PlanBody`]. Same inputs, same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::model::{Inventory, OnFailure, ReleasePlan, TargetKind};
use crate::ops::Op;
use crate::readiness::{self, Readiness};
use crate::target::{Observed, TargetRef, resolve};

mod migration;
mod waves;
pub use waves::RETIRED;

pub use migration::{bucket_specs, migration_spec, plan_migration};

pub const PLAN_FORMAT: &str = "ferry.plan";
pub const PLAN_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SavedPlanKind {
    Release,
    Backout,
    /// A runbook run (`ferry runbook run`): operations, one wave per runbook step.
    Runbook,
    /// A database moved to another (`kind: migration`): one wave per step.
    Migration,
}

/// A file the plan was computed from, with its digest at planning time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InputFile {
    /// `inventory`, `plan`, `template` or `artifact`.
    pub role: String,
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetObservation {
    pub target: TargetRef,
    pub fingerprint: String,
    pub observed: Observed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WavePlan {
    pub name: String,
    pub sites: Vec<String>,
    pub max_parallel: u32,
    pub failure_threshold: u32,
}

/// One change to one target, and how to undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// `s001`, `s002`... in plan order.
    pub id: String,
    /// Index into `waves`; a wave starts only when the previous one has finished.
    pub wave: usize,
    pub target: TargetRef,
    /// Release serving before the step (`None`: first install).
    pub from: Option<String>,
    pub to: String,
    /// What the step does to the target.
    #[serde(default)]
    pub action: StepAction,
    /// What undoing this step does: return to `from`, or uninstall when `from` is `None`.
    pub undo: Undo,
    /// Steps (same site) that must have succeeded first.
    pub depends_on: Vec<String>,
    /// Set for operation steps (a snapshot, a restore, a manual confirmation...): what the
    /// step does instead of deploying `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<StepOp>,
    /// Switch steps on Kubernetes: the release revision to return to (`ferry rollback --to`);
    /// without it, the newest rolled-out revision of `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
}

/// An operation step's operation and the words around it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOp {
    pub title: String,
    #[serde(flatten)]
    pub op: Op,
    /// What to do when the step fails (shown and recorded with the failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
}

/// How a step reaches `to`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepAction {
    /// Put the release artifact on the target (if not there yet), switch to it, verify.
    #[default]
    Deploy,
    /// Switch to a release already on the target, verify (back-out).
    Switch,
    /// Remove the app from the target (cleaning up a first install that failed).
    Uninstall,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Undo {
    SwitchTo {
        version: String,
        /// A Kubernetes release revision (rollback to an exact revision).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<u32>,
    },
    Uninstall,
    /// Nothing to undo: what the step made (a snapshot) is kept, it is what a back-out needs.
    Keep,
}

/// A target the plan leaves alone because it already runs the wanted version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unchanged {
    pub wave: usize,
    pub target: TargetRef,
    pub version: String,
}

/// Everything the planner decides; the saved plan wraps it with ids, times and input hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanBody {
    pub name: String,
    pub kind: SavedPlanKind,
    pub on_failure: OnFailure,
    pub waves: Vec<WavePlan>,
    pub targets: Vec<TargetObservation>,
    pub steps: Vec<Step>,
    pub unchanged: Vec<Unchanged>,
    /// Hardware readiness of every SSH endpoint the plan touches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readiness: Vec<Readiness>,
    /// Approval gates, each before a wave.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GatePlan>,
    /// Kubernetes steps: what each changes, object by object (observed at plan time by the
    /// driver; filled in at the edge, not by the planner).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub objects: BTreeMap<String, Vec<crate::kubernetes::diff::ObjectChange>>,
    /// Versions of catalogued apps (`lifecycle`) the plan deploys, with their state and
    /// revision at plan time (checked at the edge against the ledger's catalog).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<CatalogedVersion>,
}

/// A deployed version of a catalogued app, as the catalog held it when the plan was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogedVersion {
    pub app: String,
    /// The catalog it is kept in (`lifecycle.catalog`, or the app's id).
    pub catalog: String,
    pub id: String,
    pub state: String,
    /// The revision the artifact is (none for images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// An approval gate: wave `wave` does not start until `role` has approved the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatePlan {
    pub name: String,
    pub wave: usize,
    pub role: String,
}

/// The file `ferry plan -o` writes and `ferry apply` reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format: String,
    pub format_version: u32,
    pub id: String,
    pub created_at: String,
    pub ferry_version: String,
    pub actor: String,
    pub inputs: Vec<InputFile>,
    #[serde(flatten)]
    pub body: PlanBody,
}

impl SavedPlan {
    /// Parses a saved plan's text: JSON whose `format` is ferry's and whose format version
    /// this build reads; the reason when it is not.
    pub fn parse(text: &str) -> Result<SavedPlan, String> {
        let head: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if head.get("format").and_then(|f| f.as_str()) != Some(PLAN_FORMAT) {
            return Err("no `format: ferry.plan`".into());
        }
        let v = head
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if v > u64::from(PLAN_FORMAT_VERSION) {
            return Err(format!(
                "written by a newer ferry (plan format {v}; this build reads {PLAN_FORMAT_VERSION})"
            ));
        }
        serde_json::from_value(head).map_err(|e| e.to_string())
    }

    pub fn has_changes(&self) -> bool {
        !self.body.steps.is_empty()
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.body.steps.iter().find(|s| s.id == id)
    }

    pub fn observation(&self, target_id: &str) -> Option<&TargetObservation> {
        self.body.targets.iter().find(|t| t.target.id == target_id)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("no observation for target `{0}`: its driver did not report it")]
    NotObserved(String),
    #[error("release plan names app `{0}`, which is not in the inventory")]
    UnknownApp(String),
    #[error("release plan names database `{0}`, which is not in the inventory")]
    UnknownDatabase(String),
    #[error("step `{0}`: {1}")]
    InvalidStep(String, String),
}

/// The target an operation on database `db` acts on: `SITE/CLOUD/DB` (site `-` when the
/// database belongs to no site).
pub fn database_target(inv: &Inventory, db: &str) -> Result<TargetRef, PlanError> {
    let d = inv
        .database(db)
        .ok_or_else(|| PlanError::UnknownDatabase(db.to_owned()))?;
    Ok(TargetRef::new(
        d.site.as_deref().unwrap_or("-"),
        &d.cloud,
        &d.id,
        TargetKind::Rds,
    ))
}

/// An operation step (no release moves): undo keeps what it made.
pub fn op_step(
    id: String,
    wave: usize,
    target: TargetRef,
    op: StepOp,
    depends_on: Vec<String>,
) -> Step {
    Step {
        id,
        wave,
        target,
        from: None,
        to: op.op.name().into(),
        action: StepAction::Deploy,
        undo: Undo::Keep,
        depends_on,
        op: Some(op),
        revision: None,
    }
}

/// Whether a target needs a step to run `version`.
fn needs_change(obs: &Observed, version: &str) -> bool {
    obs.current.as_deref() != Some(version) || !obs.drift.is_empty()
}

/// The targets a release plan touches, in plan order: what drivers must observe.
pub fn targets_of(inv: &Inventory, rp: &ReleasePlan) -> Vec<TargetRef> {
    let mut out = Vec::new();
    for wave in &rp.waves {
        for site in &wave.sites {
            let apps = rp.releases.iter().map(|r| &r.app);
            for a in apps.chain(rp.retire.iter().map(|r| &r.app)) {
                if let Some(app) = inv.app(a) {
                    out.extend(resolve(inv, app, site));
                }
            }
        }
    }
    out
}

/// Desired (inventory + release plan) x observed -> steps.
pub fn plan_release(
    inv: &Inventory,
    rp: &ReleasePlan,
    observed: &BTreeMap<String, Observed>,
) -> Result<PlanBody, PlanError> {
    let order = release_order(inv, rp)?;
    let mut p = Planner {
        inv,
        observed,
        steps: Vec::new(),
        unchanged: Vec::new(),
        targets: Vec::new(),
    };
    let mut waves = Vec::new();
    for (w, wave) in rp.waves.iter().enumerate() {
        waves.push(WavePlan {
            name: wave.name.clone(),
            sites: wave.sites.clone(),
            max_parallel: wave.max_parallel,
            failure_threshold: wave.failure_threshold,
        });
        // Pre-change snapshots of this wave come first, then its `before` steps (quiesce,
        // record, wait until...) one after another; every release and retirement of the wave
        // waits for them, and the `after` steps wait for all of those. A wave that changes
        // nothing takes no snapshot and runs none of its steps.
        let changes = p.wave_changes(wave, &order) || p.wave_retires(rp, wave);
        if !changes {
            for site in &wave.sites {
                p.site_steps(w, site, &order, &[])?;
                p.retire_steps(w, site, rp, &[])?;
            }
            continue;
        }
        let snapshots = p.snapshot_steps(rp, w)?;
        let mut prereq = p.hook_steps(w, wave, &wave.before, snapshots.clone())?;
        prereq.splice(0..0, snapshots);
        let first = p.steps.len();
        for site in &wave.sites {
            p.site_steps(w, site, &order, &prereq)?;
            p.retire_steps(w, site, rp, &prereq)?;
        }
        let changed: Vec<String> = p.steps[first..].iter().map(|s| s.id.clone()).collect();
        p.hook_steps(w, wave, &wave.after, changed)?;
    }
    Ok(PlanBody {
        name: rp.name.clone(),
        kind: SavedPlanKind::Release,
        on_failure: rp.on_failure,
        waves,
        readiness: readiness_of(inv, rp, &p.targets),
        targets: p.targets,
        steps: p.steps,
        unchanged: p.unchanged,
        objects: BTreeMap::new(),
        versions: vec![],
        gates: gates_of(rp),
    })
}

/// What planning a release accumulates, wave by wave and site by site.
struct Planner<'a> {
    inv: &'a Inventory,
    observed: &'a BTreeMap<String, Observed>,
    steps: Vec<Step>,
    unchanged: Vec<Unchanged>,
    targets: Vec<TargetObservation>,
}

impl<'a> Planner<'a> {
    fn next_id(&self) -> String {
        format!("s{:03}", self.steps.len() + 1)
    }

    /// What the drivers observed on `target`, recorded among the plan's targets.
    fn observe(&mut self, target: &TargetRef) -> Result<&'a Observed, PlanError> {
        let obs = self
            .observed
            .get(&target.id)
            .ok_or_else(|| PlanError::NotObserved(target.id.clone()))?;
        self.targets.push(TargetObservation {
            target: target.clone(),
            fingerprint: obs.fingerprint(),
            observed: obs.clone(),
        });
        Ok(obs)
    }
}

impl Planner<'_> {
    /// Whether any target of the wave needs a change (unobserved ones count as needing one).
    fn wave_changes(&self, wave: &crate::model::Wave, order: &[&crate::model::Release]) -> bool {
        wave.sites.iter().any(|site| {
            order.iter().any(|r| {
                self.inv.app(&r.app).is_some_and(|app| {
                    resolve(self.inv, app, site).iter().any(|t| {
                        self.observed
                            .get(&t.id)
                            .is_none_or(|o| needs_change(o, &r.version))
                    })
                })
            })
        })
    }

    /// The pre-change snapshot steps of wave `w`; returns their ids.
    fn snapshot_steps(&mut self, rp: &ReleasePlan, w: usize) -> Result<Vec<String>, PlanError> {
        let inv = self.inv;
        let mut ids = Vec::new();
        for req in rp
            .snapshots
            .iter()
            .filter(|r| snapshot_wave(inv, rp, r) == Some(w))
        {
            let db = inv
                .database(&req.database)
                .ok_or_else(|| PlanError::UnknownDatabase(req.database.clone()))?;
            let id = self.next_id();
            ids.push(id.clone());
            self.steps.push(op_step(
                id,
                w,
                database_target(inv, &db.id)?,
                StepOp {
                    title: format!("pre-change snapshot of database `{}`", db.id),
                    op: Op::RdsSnapshot {
                        database: db.id.clone(),
                        identifier: db.identifier.clone(),
                        snapshot_id: None,
                        timeout_seconds: req.timeout_seconds,
                    },
                    on_failure: Some(
                        "the release did not start: no step of this wave runs without its snapshot; fix the cause and `ferry apply --resume`".into(),
                    ),
                },
                vec![],
            ));
        }
        Ok(ids)
    }

    /// A step for each target of `site` that needs a change, in release order; an app's step
    /// waits for the wave's snapshots and `before` steps and for the steps of the apps it depends on at the site.
    fn site_steps(
        &mut self,
        w: usize,
        site: &str,
        order: &[&crate::model::Release],
        prereq: &[String],
    ) -> Result<(), PlanError> {
        // app id -> step ids on this site, for same-site dependencies.
        let mut site_steps: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for release in order {
            let app = self
                .inv
                .app(&release.app)
                .ok_or_else(|| PlanError::UnknownApp(release.app.clone()))?;
            for target in resolve(self.inv, app, site) {
                let obs = self.observe(&target)?;
                // A drifted target is repaired even when it runs the wanted version.
                if !needs_change(obs, &release.version) {
                    self.unchanged.push(Unchanged {
                        wave: w,
                        target,
                        version: release.version.clone(),
                    });
                    continue;
                }
                let depends_on = prereq
                    .iter()
                    .cloned()
                    .chain(
                        app.depends_on
                            .iter()
                            .flat_map(|d| site_steps.get(d.as_str()).cloned().unwrap_or_default()),
                    )
                    .collect();
                let id = self.next_id();
                site_steps
                    .entry(app.id.as_str())
                    .or_default()
                    .push(id.clone());
                self.steps.push(deploy_step(
                    id,
                    w,
                    target,
                    obs,
                    &release.version,
                    depends_on,
                ));
            }
        }
        Ok(())
    }
}

/// A deploy step from what the target serves now to `version`; its undo switches back, or
/// uninstalls a first install.
fn deploy_step(
    id: String,
    wave: usize,
    target: TargetRef,
    obs: &Observed,
    version: &str,
    depends_on: Vec<String>,
) -> Step {
    let undo = match &obs.current {
        Some(v) => Undo::SwitchTo {
            version: v.clone(),
            revision: None,
        },
        None => Undo::Uninstall,
    };
    Step {
        id,
        wave,
        target,
        from: obs.current.clone(),
        to: version.to_owned(),
        action: StepAction::Deploy,
        undo,
        depends_on,
        op: None,
        revision: None,
    }
}

/// Readiness of each SSH endpoint the plan touches, once per endpoint.
fn readiness_of(
    inv: &Inventory,
    rp: &ReleasePlan,
    targets: &[TargetObservation],
) -> Vec<Readiness> {
    let mut readiness: Vec<Readiness> = Vec::new();
    for t in targets.iter().filter(|t| t.target.kind == TargetKind::Ssh) {
        if readiness.iter().any(|r| r.endpoint == t.target.host) {
            continue;
        }
        if let Some(ep) = inv.endpoint(&t.target.host) {
            readiness.push(readiness::assess(
                &ep.id,
                &t.target.site,
                &ep.hardware,
                &t.observed.facts,
                rp,
            ));
        }
    }
    readiness
}

/// The plan's gates, each before the wave it names.
fn gates_of(rp: &ReleasePlan) -> Vec<GatePlan> {
    rp.gates
        .iter()
        .filter_map(|g| {
            let wave = rp.waves.iter().position(|w| w.name == g.before_wave)?;
            Some(GatePlan {
                name: g.name.clone(),
                wave,
                role: g.role.clone(),
            })
        })
        .collect()
}

/// The wave a snapshot requirement precedes: the named one, or the first holding the
/// database's site (validation makes sure there is one).
pub fn snapshot_wave(
    inv: &Inventory,
    rp: &ReleasePlan,
    req: &crate::model::SnapshotRequirement,
) -> Option<usize> {
    match &req.before_wave {
        Some(name) => rp.waves.iter().position(|w| &w.name == name),
        None => {
            let site = inv.database(&req.database)?.site.as_deref()?;
            rp.waves
                .iter()
                .position(|w| w.sites.iter().any(|s| s == site))
        }
    }
}

/// The plan's releases, dependencies first (stable: plan order among independent apps).
fn release_order<'a>(
    inv: &Inventory,
    rp: &'a ReleasePlan,
) -> Result<Vec<&'a crate::model::Release>, PlanError> {
    let in_plan: BTreeSet<&str> = rp.releases.iter().map(|r| r.app.as_str()).collect();
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    while out.len() < rp.releases.len() {
        let before = out.len();
        for r in &rp.releases {
            if placed.contains(r.app.as_str()) {
                continue;
            }
            let app = inv
                .app(&r.app)
                .ok_or_else(|| PlanError::UnknownApp(r.app.clone()))?;
            let ready = app
                .depends_on
                .iter()
                .all(|d| !in_plan.contains(d.as_str()) || placed.contains(d.as_str()));
            if ready {
                placed.insert(r.app.as_str());
                out.push(r);
            }
        }
        if out.len() == before {
            // A cycle: validation reports it; keep the remaining order as written.
            out.extend(
                rp.releases
                    .iter()
                    .filter(|r| !placed.contains(r.app.as_str())),
            );
        }
    }
    Ok(out)
}

/// A back-out plan: return each target to an earlier release (`to`), from what it runs now.
pub fn plan_backout(name: &str, changes: Vec<(TargetRef, Observed, String)>) -> PlanBody {
    let mut steps = Vec::new();
    let mut targets = Vec::new();
    let mut sites = Vec::new();
    for (target, obs, to) in changes {
        if !sites.contains(&target.site) {
            sites.push(target.site.clone());
        }
        targets.push(TargetObservation {
            target: target.clone(),
            fingerprint: obs.fingerprint(),
            observed: obs.clone(),
        });
        let undo = match &obs.current {
            Some(v) => Undo::SwitchTo {
                version: v.clone(),
                revision: None,
            },
            None => Undo::Uninstall,
        };
        steps.push(Step {
            id: format!("s{:03}", steps.len() + 1),
            wave: 0,
            target,
            from: obs.current.clone(),
            to,
            action: StepAction::Switch,
            undo,
            depends_on: vec![],
            op: None,
            revision: None,
        });
    }
    PlanBody {
        name: name.to_owned(),
        kind: SavedPlanKind::Backout,
        on_failure: OnFailure::Halt,
        waves: vec![WavePlan {
            name: "backout".into(),
            sites,
            max_parallel: 1,
            failure_threshold: 0,
        }],
        targets,
        steps,
        unchanged: vec![],
        readiness: vec![],
        gates: vec![],
        objects: BTreeMap::new(),
        versions: vec![],
    }
}

/// A runbook run: one wave per runbook step (named after it), in order, each step on its
/// target; any failure halts with a resumable record.
pub fn plan_runbook(name: &str, steps: Vec<(String, TargetRef, StepOp)>) -> PlanBody {
    let mut waves = Vec::new();
    let mut out: Vec<Step> = Vec::new();
    for (w, (wave_name, target, op)) in steps.into_iter().enumerate() {
        waves.push(WavePlan {
            name: wave_name,
            sites: vec![target.site.clone()],
            max_parallel: 1,
            failure_threshold: 0,
        });
        let depends_on = out.last().map(|s| vec![s.id.clone()]).unwrap_or_default();
        out.push(op_step(format!("s{:03}", w + 1), w, target, op, depends_on));
    }
    PlanBody {
        name: name.to_owned(),
        kind: SavedPlanKind::Runbook,
        on_failure: OnFailure::Halt,
        waves,
        targets: vec![],
        steps: out,
        unchanged: vec![],
        readiness: vec![],
        gates: vec![],
        objects: BTreeMap::new(),
        versions: vec![],
    }
}

/// The human-readable diff `ferry plan` prints.
/// The saved plan as a Markdown summary, for a pull-request comment or a CI job summary (what
/// Atlantis or tfcmt give Terraform users): counts, a table of steps per wave, gates, readiness,
/// Kubernetes object changes and inputs, and the command that applies it.
pub fn render_markdown(saved: &SavedPlan, plan_file: &str) -> String {
    let body = &saved.body;
    let cell = |s: &str| s.replace('|', "\\|").replace(['\n', '\r'], " ");
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### ferry plan `{}`: {} change(s), {} unchanged\n",
        cell(&body.name),
        body.steps.len(),
        body.unchanged.len()
    );
    let _ = writeln!(
        s,
        "Plan `{}` ({:?}, on failure: {:?}), made by {} at {}; saved to `{}`.\n",
        saved.id,
        body.kind,
        body.on_failure,
        cell(&saved.actor),
        saved.created_at,
        cell(plan_file)
    );
    if body.steps.is_empty() {
        let _ = writeln!(s, "No changes: every target already runs its version.");
        return s;
    }
    let _ = writeln!(s, "| wave | step | target | from | to | after |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for step in &body.steps {
        let wave = body.waves.get(step.wave).map_or("?", |w| w.name.as_str());
        let to = match &step.op {
            Some(op) => op.title.clone(),
            None => step.to.clone(),
        };
        let _ = writeln!(
            s,
            "| {} `{}` | {} | `{}` | {} | {} | {} |",
            step.wave + 1,
            cell(wave),
            step.id,
            cell(&step.target.id),
            step.from.as_deref().map_or("(none)".to_owned(), cell),
            cell(&to),
            step.depends_on.join(", ")
        );
    }
    for g in &body.gates {
        let wave = body.waves.get(g.wave).map_or("?", |w| w.name.as_str());
        let _ = writeln!(
            s,
            "\n**Gate** `{}` before wave {} `{}`: needs an approval by role `{}` (`ferry approve {} --gate {} --as NAME`).",
            cell(&g.name),
            g.wave + 1,
            cell(wave),
            cell(&g.role),
            cell(plan_file),
            cell(&g.name)
        );
    }
    for r in body
        .readiness
        .iter()
        .filter(|r| r.blocks() || r.waived.is_some())
    {
        let what = match &r.waived {
            Some(why) => format!("short of its requirements, waived: {}", cell(why)),
            None => "short of its requirements: blocks the plan".to_owned(),
        };
        let _ = writeln!(s, "\n**Readiness** `{}`: {what}.", cell(&r.endpoint));
    }
    if !body.objects.is_empty() {
        let _ = writeln!(
            s,
            "\n<details><summary>Kubernetes object changes</summary>\n"
        );
        for (step, changes) in &body.objects {
            let _ = writeln!(
                s,
                "{step}:\n```\n{}```",
                crate::kubernetes::diff::render(changes)
            );
        }
        let _ = writeln!(s, "\n</details>");
    }
    let _ = writeln!(
        s,
        "\n<details><summary>Inputs ({})</summary>\n",
        saved.inputs.len()
    );
    let _ = writeln!(s, "| role | path | sha256 |");
    let _ = writeln!(s, "|---|---|---|");
    for i in &saved.inputs {
        let _ = writeln!(s, "| {} | `{}` | `{}` |", i.role, cell(&i.path), i.sha256);
    }
    let _ = writeln!(
        s,
        "\n</details>\n\nApply with `ferry apply {}`.",
        cell(plan_file)
    );
    s
}

pub fn render_diff(body: &PlanBody) -> String {
    let mut s = String::new();
    let kind = match body.kind {
        SavedPlanKind::Release => "release",
        SavedPlanKind::Backout => "backout",
        SavedPlanKind::Runbook => "runbook",
        SavedPlanKind::Migration => "migration",
    };
    let policy = match body.on_failure {
        OnFailure::Halt => "halt",
        OnFailure::Backout => "backout",
    };
    let _ = writeln!(s, "Plan `{}` ({kind}, on_failure: {policy})", body.name);
    for (w, wave) in body.waves.iter().enumerate() {
        let _ = writeln!(
            s,
            "\nwave {} `{}` (max_parallel {}, failure_threshold {})",
            w + 1,
            wave.name,
            wave.max_parallel,
            wave.failure_threshold
        );
        for g in body.gates.iter().filter(|g| g.wave == w) {
            let _ = writeln!(
                s,
                "  || gate `{}`: waits for approval by role `{}` (ferry approve PLAN --gate {} --as NAME)",
                g.name, g.role, g.name
            );
        }
        let mut any = false;
        for step in body.steps.iter().filter(|st| st.wave == w) {
            any = true;
            if let Some(op) = &step.op {
                let _ = writeln!(s, "  * {}   [{}]", op.title, step.id);
                let _ = writeln!(s, "      {}", op.op.describe());
                if let Op::Manual { instructions } = &op.op {
                    for line in instructions.lines().skip(1) {
                        let _ = writeln!(s, "      {line}");
                    }
                    let _ = writeln!(
                        s,
                        "      (apply stops here until run with --confirm {})",
                        step.id
                    );
                }
                if let Some(f) = &op.on_failure {
                    let _ = writeln!(s, "      on failure: {f}");
                }
                continue;
            }
            let (mark, from) = match &step.from {
                Some(f) => ("~", f.as_str()),
                None => ("+", "(none)"),
            };
            let _ = write!(
                s,
                "  {mark} {}  {from} -> {}   [{}]",
                step.target.id, step.to, step.id
            );
            if !step.depends_on.is_empty() {
                let _ = write!(s, " after {}", step.depends_on.join(", "));
            }
            s.push('\n');
            if let Some(changes) = body.objects.get(&step.id) {
                s.push_str(&crate::kubernetes::diff::render(changes));
            }
            if let Some(t) = body.targets.iter().find(|t| t.target == step.target) {
                for d in &t.observed.drift {
                    let _ = writeln!(s, "      ! drift: {d}");
                }
            }
        }
        for u in body.unchanged.iter().filter(|u| u.wave == w) {
            any = true;
            let _ = writeln!(s, "  = {}  {} (unchanged)", u.target.id, u.version);
        }
        if !any {
            let _ = writeln!(s, "  (no targets)");
        }
    }
    if !body.readiness.is_empty() {
        s.push_str(&readiness::render(&body.readiness));
    }
    let _ = writeln!(
        s,
        "\nPlan: {} to change, {} unchanged.",
        body.steps.len(),
        body.unchanged.len()
    );
    s
}

/// How a saved plan's body differs from the body its inputs produce, one line per
/// difference (empty: the same). `objects` (the Kubernetes preview, filled in at the edge from
/// the cluster's dry-run, shown but never acted on) is left out. Apply refuses any difference,
/// so a hand-edited plan cannot drop a gate, a wave or a step, or change a step's target or
/// version, even where every input file still hashes the same.
pub fn body_differences(saved: &PlanBody, derived: &PlanBody) -> Vec<String> {
    let mut out = Vec::new();
    let show = |v: &serde_json::Value| serde_json::to_string(v).expect("values serialize");
    let (a, b) = (
        serde_json::to_value(saved).expect("bodies serialize"),
        serde_json::to_value(derived).expect("bodies serialize"),
    );
    let (serde_json::Value::Object(a), serde_json::Value::Object(b)) = (a, b) else {
        return out;
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let null = serde_json::Value::Null;
    // Filled in at the edge, not by the planner: object previews, and the catalog's versions
    // (which apply checks against the ledger again).
    for key in keys
        .into_iter()
        .filter(|k| *k != "objects" && *k != "versions")
    {
        let (x, y) = (a.get(key).unwrap_or(&null), b.get(key).unwrap_or(&null));
        if x == y {
            continue;
        }
        match (key.as_str(), x, y) {
            ("gates", _, _) => {
                let (x, y) = (&saved.gates, &derived.gates);
                for g in y.iter().filter(|g| !x.contains(g)) {
                    out.push(format!(
                        "gate `{}` (role `{}`, before wave {}) is missing from the saved plan",
                        g.name,
                        g.role,
                        g.wave + 1
                    ));
                }
                for g in x.iter().filter(|g| !y.contains(g)) {
                    out.push(format!(
                        "gate `{}` is in the saved plan but not in its inputs",
                        g.name
                    ));
                }
            }
            ("steps", _, _) => out.extend(step_differences(&saved.steps, &derived.steps)),
            _ => out.push(format!(
                "`{key}`: the saved plan has {}, its inputs give {}",
                clip(&show(x)),
                clip(&show(y))
            )),
        }
    }
    out
}

fn step_differences(saved: &[Step], derived: &[Step]) -> Vec<String> {
    let mut out = Vec::new();
    let ids: BTreeSet<&str> = saved.iter().chain(derived).map(|s| s.id.as_str()).collect();
    for id in ids {
        let find = |l: &[Step]| l.iter().position(|s| s.id == id);
        match (
            find(saved).map(|i| &saved[i]),
            find(derived).map(|i| &derived[i]),
        ) {
            (Some(_), None) => out.push(format!("step {id} is not what the inputs produce")),
            (None, Some(d)) => out.push(format!(
                "step {id} ({} -> {}) is missing from the saved plan",
                d.target.id, d.to
            )),
            (Some(x), Some(y)) if x != y => {
                let (vx, vy) = (
                    serde_json::to_value(x).expect("steps serialize"),
                    serde_json::to_value(y).expect("steps serialize"),
                );
                let fields: Vec<String> = vx
                    .as_object()
                    .into_iter()
                    .flat_map(|o| o.keys())
                    .chain(vy.as_object().into_iter().flat_map(|o| o.keys()))
                    .filter(|k| vx.get(*k) != vy.get(*k))
                    .map(|k| {
                        format!(
                            "{k} {} (inputs give {})",
                            clip(&vx.get(k).map(ToString::to_string).unwrap_or_default()),
                            clip(&vy.get(k).map(ToString::to_string).unwrap_or_default())
                        )
                    })
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                out.push(format!("step {id} differs: {}", fields.join("; ")));
            }
            _ => {}
        }
    }
    out
}

fn clip(s: &str) -> String {
    if s.chars().count() <= 160 {
        s.to_owned()
    } else {
        format!("{}...", s.chars().take(160).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{self, SourceFile};

    const INV: &str = r#"version: 1
sites:
  - { id: a, tier: sqa, clouds: [l] }
  - { id: b, tier: prod, clouds: [l] }
  - { id: c, tier: prod, clouds: [l] }
clouds: [{ id: l, kind: local, local: { root: r } }]
apps:
  - { id: db-migrate, version: "1", artifact: x, target: local, sites: [a, b, c], health_check: { command: [t] } }
  - { id: web, version: "1", artifact: x, target: local, sites: [a, b, c], health_check: { command: [t] }, depends_on: [db-migrate] }
"#;

    const PLAN: &str = r#"version: 1
kind: release
name: r2
releases:
  - { app: web, version: "2" }
  - { app: db-migrate, version: "2" }
waves:
  - { name: canary, sites: [a] }
  - { name: rest, sites: [b, c], max_parallel: 2, failure_threshold: 1 }
on_failure: halt
"#;

    fn obs(current: Option<&str>) -> Observed {
        Observed {
            current: current.map(str::to_owned),
            releases: current.into_iter().map(str::to_owned).collect(),
            facts: Default::default(),
            drift: vec![],
        }
    }

    fn inputs() -> (Inventory, ReleasePlan) {
        let inv = load::parse_inventory(SourceFile::new("i.yaml", INV))
            .unwrap()
            .value;
        let rp = load::parse_release_plan(SourceFile::new("p.yaml", PLAN))
            .unwrap()
            .value;
        (inv, rp)
    }

    fn body(observed: &[(&str, Option<&str>)]) -> PlanBody {
        let (inv, rp) = inputs();
        let mut map = BTreeMap::new();
        for t in targets_of(&inv, &rp) {
            let o = observed
                .iter()
                .find(|(id, _)| *id == t.id)
                .map_or_else(|| obs(Some("1")), |(_, c)| obs(*c));
            map.insert(t.id, o);
        }
        plan_release(&inv, &rp, &map).unwrap()
    }

    #[test]
    fn upgrade_everywhere_orders_dependencies_first() {
        insta::assert_snapshot!(render_diff(&body(&[])));
    }

    #[test]
    fn first_install_is_a_plan_against_empty_observations() {
        let b = body(&[("a/l/web", None), ("a/l/db-migrate", None)]);
        let s = &b.steps[0];
        assert_eq!((s.from.as_deref(), s.to.as_str()), (None, "2"));
        assert_eq!(s.undo, Undo::Uninstall);
        insta::assert_snapshot!(render_diff(&b));
    }

    #[test]
    fn targets_already_at_the_version_are_unchanged() {
        let b = body(&[("b/l/web", Some("2")), ("b/l/db-migrate", Some("2"))]);
        assert_eq!(b.unchanged.len(), 2);
        assert!(b.steps.iter().all(|s| s.target.site != "b"));
        // web on c depends only on db-migrate on c.
        let web_c = b.steps.iter().find(|s| s.target.id == "c/l/web").unwrap();
        let dep = b
            .steps
            .iter()
            .find(|s| s.target.id == "c/l/db-migrate")
            .unwrap();
        assert_eq!(web_c.depends_on, vec![dep.id.clone()]);
    }

    #[test]
    fn a_drifted_target_at_the_wanted_version_is_repaired_and_the_diff_says_why() {
        let (inv, rp) = inputs();
        let mut map = BTreeMap::new();
        for t in targets_of(&inv, &rp) {
            let mut o = obs(Some("2"));
            if t.id == "b/l/web" {
                o.drift = vec!["container web-2 was stopped outside ferry".into()];
            }
            map.insert(t.id, o);
        }
        let b = plan_release(&inv, &rp, &map).unwrap();
        assert_eq!(b.steps.len(), 1, "{b:#?}");
        let s = &b.steps[0];
        assert_eq!(s.target.id, "b/l/web");
        assert_eq!((s.from.as_deref(), s.to.as_str()), (Some("2"), "2"));
        let diff = render_diff(&b);
        assert!(
            diff.contains("! drift: container web-2 was stopped outside ferry"),
            "{diff}"
        );
        // Drift changes the fingerprint: a plan made before it is stale.
        assert_ne!(map["b/l/web"].fingerprint(), obs(Some("2")).fingerprint());
    }

    #[test]
    fn an_edited_body_is_named_difference_by_difference() {
        let b = body(&[]);
        assert!(body_differences(&b, &b).is_empty());
        let mut edited = b.clone();
        edited.gates.clear();
        edited.steps[1].to = "9".into();
        edited.steps.pop();
        edited.waves[1].failure_threshold = 5;
        edited.objects.insert("s001".into(), vec![]);
        let mut derived = b.clone();
        derived.gates.push(GatePlan {
            name: "go".into(),
            wave: 1,
            role: "cab".into(),
        });
        let d = body_differences(&edited, &derived);
        let text = d.join("\n");
        assert!(
            text.contains("gate `go` (role `cab`, before wave 2) is missing"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "step {} differs: to \"9\" (inputs give \"2\")",
                b.steps[1].id
            )),
            "{text}"
        );
        let last = b.steps.last().unwrap();
        assert!(
            text.contains(&format!(
                "step {} ({} -> 2) is missing",
                last.id, last.target.id
            )),
            "{text}"
        );
        assert!(text.contains("`waves`"), "{text}");
        assert!(
            !text.contains("objects"),
            "the preview is not compared: {text}"
        );
        assert_eq!(d.len(), 4, "{text}");
    }

    #[test]
    fn the_markdown_summary_has_a_row_per_step_and_the_apply_command() {
        let b = body(&[]);
        let saved = SavedPlan {
            format: PLAN_FORMAT.into(),
            format_version: PLAN_FORMAT_VERSION,
            id: "p-1".into(),
            created_at: "2026-12-01T00:00:00Z".into(),
            ferry_version: "0".into(),
            actor: "ci|bot".into(),
            inputs: vec![],
            body: b.clone(),
        };
        let md = render_markdown(&saved, "plan.json");
        assert!(
            md.starts_with(&format!("### ferry plan `r2`: {} change(s)", b.steps.len())),
            "{md}"
        );
        let rows = md
            .lines()
            .filter(|l| l.starts_with("| ") && l.contains("`a/l/"))
            .count();
        assert_eq!(
            rows,
            b.steps.iter().filter(|s| s.target.site == "a").count(),
            "{md}"
        );
        assert!(md.contains("ci\\|bot"), "pipes are escaped: {md}");
        assert!(
            md.trim_end()
                .ends_with("Apply with `ferry apply plan.json`."),
            "{md}"
        );
    }

    #[test]
    fn planning_is_deterministic() {
        let a = serde_json::to_vec(&body(&[])).unwrap();
        let b = serde_json::to_vec(&body(&[])).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn a_target_nobody_observed_is_an_error() {
        let (inv, rp) = inputs();
        let e = plan_release(&inv, &rp, &BTreeMap::new()).unwrap_err();
        assert!(matches!(e, PlanError::NotObserved(_)), "{e}");
    }
}

//! Carrying out a saved plan: waves in order, sites of a wave concurrently up to
//! `max_parallel`, every step verified, every event recorded in the ledger before it is
//! reported. The only module (with the drivers) that runs async code.

#[cfg(feature = "aws")]
mod bucket;
mod gates;
mod migrate;
mod resume;
mod window;
// The executor's tests drive operation steps through the RDS fake.
#[cfg(all(test, feature = "aws"))]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

pub use resume::{PriorRun, prior_run};

use crate::drivers::{DriverError, Drivers, OpContext, OpRunner, ReleaseBundle, TargetSpec};
use crate::ledger::{Event, Ledger, LedgerError, NewEntry, Outcome};
use crate::model::OnFailure;
use crate::ops::Op;
use crate::plan::{SavedPlan, Step, StepAction, Undo};

pub use gates::WaitingGate;
#[cfg(test)]
pub(crate) use window::FakeClock;
pub use window::{Clock, SystemClock, Windows};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("failed to record in the ledger; stopped before acting further")]
    Ledger(#[from] LedgerError),
    #[error("no target spec for `{0}`")]
    NoSpec(String),
    #[error("no release bundle for step `{0}`")]
    NoBundle(String),
    #[error(transparent)]
    Driver(#[from] DriverError),
}

/// What a run reports while it goes, as events; the caller draws them (the CLI: a progress
/// bar and lines on stderr), so the executor knows nothing of terminals.
pub trait Progress: Send + Sync {
    /// How many steps this run has to do (before the first one starts).
    fn start(&self, _steps: u64) {}
    /// One line of what happened: a wave starting, a step's result, a gate, a back-out.
    fn line(&self, line: &str);
    /// One more step reached an end state.
    fn step_done(&self) {}
    /// Data moved by a migration's copy: items (`unit`: rows of a table, objects of a bucket
    /// copy) and bytes since the last report, for `what` (the table or copy).
    fn transfer(&self, _what: &str, _unit: &str, _items: u64, _bytes: u64) {}
    /// The run ended (whatever the outcome).
    fn finish(&self) {}
}

/// Progress kept in memory (tests, and callers that report it their own way).
#[derive(Debug, Default)]
pub struct Recorded {
    pub lines: Mutex<Vec<String>>,
    pub steps_done: AtomicU32,
}

impl Progress for Recorded {
    fn line(&self, line: &str) {
        self.lines.lock().expect("lines lock").push(line.to_owned());
    }
    fn step_done(&self) {
        self.steps_done.fetch_add(1, Ordering::SeqCst);
    }
}

/// How an apply ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ApplyOutcome {
    Completed,
    /// Every wave ran; some targets failed within their wave's tolerance.
    CompletedWithFailures {
        failed: Vec<String>,
    },
    /// A wave crossed its threshold under `halt`: the rest is left for `--resume`.
    Halted {
        failed: Vec<String>,
        pending: Vec<String>,
    },
    /// A wave crossed its threshold under `backout`: completed steps were undone.
    BackedOut {
        failed: Vec<String>,
        undone: Vec<String>,
        undo_failed: Vec<String>,
    },
    /// Ctrl-C: stopped at a safe point; `--resume` finishes.
    Interrupted {
        pending: Vec<String>,
    },
    /// Stopped before a wave whose approval gate is not approved; `--resume` after approval.
    AwaitingApproval {
        gate: String,
        role: String,
        pending: Vec<String>,
    },
    /// Stopped before a manual step nobody confirmed; `--resume --confirm STEP` continues.
    AwaitingConfirmation {
        step: String,
        title: String,
        instructions: String,
        pending: Vec<String>,
    },
    /// Held the steps of sites whose maintenance window is closed; `--resume` inside the
    /// window (or `--wait`, or `--outside-window --reason`) continues.
    OutsideWindow {
        sites: Vec<ClosedWindow>,
        pending: Vec<String>,
    },
    /// Condition gates do not hold yet (their last values recorded); `--resume` evaluates
    /// them again, `--wait` polls until they hold or their deadlines pass.
    AwaitingCondition {
        gates: Vec<WaitingGate>,
        pending: Vec<String>,
    },
}

/// A site whose steps were held, and when its window opens next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClosedWindow {
    pub site: String,
    /// RFC 3339, UTC.
    pub opens_at: String,
    /// The same instant in UTC and the site's own time, for people.
    pub opens: String,
}

/// The status of each step at the end, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Skipped,
    Succeeded,
    /// Completed by an earlier run (resume).
    AlreadyDone,
    /// Not started: its site's maintenance window is closed, or a step it depends on was
    /// held or is a condition gate still waiting.
    Held,
    /// A condition gate that does not hold yet.
    Waiting,
    Failed,
    BackedOut,
    UndoFailed,
}

pub struct Executor {
    /// The inventory's approvers: gates accept approvals they signed in a role they hold.
    pub approvers: Vec<crate::model::Approver>,
    pub plan: Arc<SavedPlan>,
    pub specs: BTreeMap<String, TargetSpec>,
    pub bundles: BTreeMap<String, ReleaseBundle>,
    pub drivers: Drivers,
    pub ledger: Ledger,
    pub actor: String,
    /// Where progress goes (a terminal's bar, plain lines, a test's recorder): the executor
    /// only reports it.
    pub progress: Arc<dyn Progress>,
    pub cancel: watch::Receiver<bool>,
    /// Carries out operation steps (snapshots, restores...).
    pub ops: Arc<dyn OpRunner>,
    /// Manual steps confirmed for this run (`--confirm STEP`).
    pub confirmed: BTreeSet<String>,
    /// The sites' maintenance windows and what to do when one is closed.
    pub windows: Windows,
    /// Observes and acts for condition gates, calls and records.
    pub probes: Arc<crate::probe::Probes>,
    /// `--wait`: a gate that does not hold is polled in process until it does or its deadline
    /// passes (instead of recording it as waiting and stopping).
    pub wait_conditions: bool,
    /// The run's hold on the apply lock, for actions that are not a target's (a migration's
    /// chunk commits); `None` outside an apply (tests).
    pub fence: Option<crate::lock::Fence>,
}

struct Shared {
    exec: Executor,
    status: Mutex<BTreeMap<String, StepStatus>>,
    /// Step ids in the order they completed (for back-out in reverse).
    completed: Mutex<Vec<String>>,
    abort: AtomicBool,
    /// Woken whenever a step reaches an end state, or the run is stopping.
    changed: tokio::sync::Notify,
    /// Sites whose steps were held because their window is closed, with its next opening.
    held: Mutex<BTreeMap<String, crate::window::Opening>>,
    /// Condition gates left waiting by this run, with their clocks.
    waiting: Mutex<BTreeMap<String, crate::gate::GateClock>>,
    /// Gate clocks recorded by earlier runs of the plan.
    prior_gates: BTreeMap<String, crate::gate::GateClock>,
    /// Migration copy chunks recorded by earlier runs of the plan.
    prior_chunks: BTreeMap<String, crate::pgmigrate::PriorChunks>,
    /// The migration copy's chunks once decided (by this run or an earlier one): the
    /// verification checks the same ranges.
    migration_chunks: Mutex<Option<Vec<crate::migrate::Chunk>>>,
    /// Source rows and hashes the copy computed from its stream, by chunk id (earlier runs'
    /// and this one's).
    migration_hashes: Mutex<BTreeMap<String, (i64, String)>>,
    /// Each bucket copy's records (earlier runs', then this run's): the verification's
    /// manifest.
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    bucket_objects: Mutex<BTreeMap<String, crate::migrate::bucket::PriorObjects>>,
    /// Set by a gate whose deadline passed: its `on_timeout` decides the run, not the plan's
    /// `on_failure`.
    on_timeout: Mutex<Option<crate::model::OnTimeout>>,
}

impl Shared {
    fn set(&self, step: &str, s: StepStatus) {
        self.status
            .lock()
            .expect("status lock")
            .insert(step.to_owned(), s);
    }
    fn get(&self, step: &str) -> StepStatus {
        self.status
            .lock()
            .expect("status lock")
            .get(step)
            .copied()
            .unwrap_or(StepStatus::Pending)
    }
    /// Waits until every dependency of `step` has ended (or the run is stopping).
    async fn wait_for_dependencies(&self, step: &Step) {
        let mut cancel = self.exec.cancel.clone();
        loop {
            let woken = self.changed.notified();
            let pending = step
                .depends_on
                .iter()
                .any(|d| matches!(self.get(d), StepStatus::Pending));
            if !pending || self.abort.load(Ordering::SeqCst) || self.cancelled() {
                return;
            }
            tokio::select! {
                () = woken => {}
                _ = cancel.changed() => {}
            }
        }
    }

    fn cancelled(&self) -> bool {
        *self.exec.cancel.borrow()
    }
    fn say(&self, line: String) {
        tracing::debug!(plan = %self.exec.plan.id, "{line}");
        self.exec.progress.line(&line);
    }

    fn entry(&self, event: Event, step: &Step) -> NewEntry {
        let mut e = NewEntry::new(&self.exec.actor, event).plan(&self.exec.plan.id);
        e.step = Some(step.id.clone());
        e.target = Some(step.target.id.clone());
        e.site = Some(step.target.site.clone());
        e.app = Some(step.target.app.clone());
        e.from.clone_from(&step.from);
        e.to = Some(step.to.clone());
        e
    }

    async fn record(&self, e: NewEntry) -> Result<(), ExecError> {
        let ledger = self.exec.ledger.clone();
        tokio::task::spawn_blocking(move || ledger.append(e))
            .await
            .map_err(|j| {
                ExecError::Ledger(LedgerError::Write {
                    path: self.exec.ledger.location().into(),
                    source: std::io::Error::other(j),
                })
            })??;
        Ok(())
    }

    /// Runs one step: recorded start, act, verify, recorded result. Returns whether it succeeded.
    async fn run_step(&self, step: &Step) -> Result<bool, ExecError> {
        if step.op.is_some() {
            return self.run_op_step(step).await;
        }
        let spec = self
            .exec
            .specs
            .get(&step.target.id)
            .ok_or_else(|| ExecError::NoSpec(step.target.id.clone()))?;
        let driver = self.exec.drivers.get(step.target.kind)?;
        self.record(self.entry(Event::StepStarted, step)).await?;
        let span =
            tracing::info_span!("step", id = %step.id, target = %step.target.id, to = %step.to);
        let _g = span.enter();
        let started = Instant::now();
        let result = match step.action {
            StepAction::Deploy => match self.exec.bundles.get(&step.id) {
                Some(bundle) => match driver.apply(spec, bundle).await {
                    Ok(()) => driver.verify(spec, &step.to).await,
                    Err(e) => Err(e),
                },
                None => return Err(ExecError::NoBundle(step.id.clone())),
            },
            StepAction::Switch => {
                driver
                    .undo_leaving(
                        spec,
                        &Undo::SwitchTo {
                            version: step.to.clone(),
                            revision: step.revision,
                        },
                        step.from.as_deref(),
                    )
                    .await
            }
            StepAction::Uninstall => driver.undo(spec, &Undo::Uninstall).await,
        };
        let ms = started.elapsed().as_millis() as u64;
        // What the step left on the target, for the ledger (a Kubernetes release record).
        let receipt = match step.action {
            StepAction::Uninstall => None,
            _ => driver.receipt(spec, &step.to).await,
        };
        match result {
            Ok(()) => {
                let mut entry = self.entry(Event::StepSucceeded, step).duration_ms(ms);
                if let Some(r) = &receipt {
                    entry = entry.detail(serde_json::json!({ "release": r }));
                }
                self.succeeded(
                    step,
                    entry,
                    format!(
                        "  ok      {} {} -> {} ({ms} ms) [{}]",
                        step.target.id,
                        step.from.as_deref().unwrap_or("(none)"),
                        step.to,
                        step.id
                    ),
                )
                .await?;
                Ok(true)
            }
            Err(e) => {
                // Record what the target serves after the failure: back-out and auditors need
                // to know whether the switch happened.
                let serving_after = match tokio::time::timeout(
                    crate::workspace::OBSERVE_TIMEOUT,
                    driver.observe(spec),
                )
                .await
                {
                    Ok(Ok(o)) => serde_json::json!(o.current),
                    _ => serde_json::json!("unknown"),
                };
                // Drivers redact what they relay; this is the last line of defence.
                let message = crate::drivers::redact(
                    &e.to_string(),
                    spec.secrets.iter().map(|(_, s)| s.expose()),
                );
                let failed = self
                    .entry(Event::StepFailed, step)
                    .outcome(Outcome::Failed)
                    .duration_ms(ms)
                    .message(message);
                let mut detail = serde_json::json!({ "serving_after": serving_after });
                if let Some(r) = receipt {
                    detail["release"] = r;
                }
                self.record(failed.detail(detail)).await?;
                self.set(&step.id, StepStatus::Failed);
                self.exec.progress.step_done();
                self.say(format!(
                    "  FAILED  {} -> {}: {e} [{}]",
                    step.target.id, step.to, step.id
                ));
                Ok(false)
            }
        }
    }

    /// Records a step's success (durably, before anything depends on it), then reports it.
    async fn succeeded(&self, step: &Step, entry: NewEntry, line: String) -> Result<(), ExecError> {
        self.record(entry.outcome(Outcome::Ok)).await?;
        self.set(&step.id, StepStatus::Succeeded);
        self.exec.progress.step_done();
        self.completed
            .lock()
            .expect("completed lock")
            .push(step.id.clone());
        self.say(line);
        Ok(())
    }

    /// Runs an operation step: recorded start, the operation, recorded result with what it
    /// made (snapshot id, instance...) and, on failure, the runbook's advice.
    async fn run_op_step(&self, step: &Step) -> Result<bool, ExecError> {
        let op = step.op.as_ref().expect("an operation step");
        self.record(
            self.entry(Event::StepStarted, step)
                .message(op.title.clone()),
        )
        .await?;
        let started = Instant::now();
        // A failure of a step ferry carries out itself (not through a driver).
        let failed = |message| DriverError::Failed {
            target: step.target.id.clone(),
            action: op.op.name(),
            message,
        };
        let result = match &op.op {
            Op::Manual { instructions } => Ok(serde_json::json!({
                "confirmed_by": self.exec.actor,
                "instructions": instructions,
            })),
            Op::WaitUntil { .. } => {
                let end = self.run_gate(step, &op.op).await?;
                return self.finish_gate(step, end, started).await;
            }
            Op::Migrate { phase, spec } => {
                self.run_migrate(step, *phase, spec).await.map_err(failed)
            }
            Op::Bucket { phase, spec } => self.run_bucket(step, *phase, spec).await.map_err(failed),
            Op::Call { .. } | Op::Record { .. } => self.run_hook(&op.op).await.map_err(failed),
            other => {
                let say = |line: String| self.say(line);
                let cx = OpContext {
                    plan_id: &self.exec.plan.id,
                    step_id: &step.id,
                    say: &say,
                };
                self.exec.ops.run(&cx, other).await
            }
        };
        let ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(detail) => {
                let summary = op_summary(&op.op, &detail);
                self.succeeded(
                    step,
                    self.entry(Event::StepSucceeded, step)
                        .duration_ms(ms)
                        .message(summary.clone())
                        .detail(detail),
                    format!("  ok      {}: {summary} ({ms} ms) [{}]", op.title, step.id),
                )
                .await?;
                Ok(true)
            }
            Err(e) => {
                let mut failed = self
                    .entry(Event::StepFailed, step)
                    .outcome(Outcome::Failed)
                    .duration_ms(ms)
                    .message(e.to_string());
                if let Some(advice) = &op.on_failure {
                    failed = failed.detail(serde_json::json!({ "on_failure": advice }));
                }
                self.record(failed).await?;
                self.set(&step.id, StepStatus::Failed);
                self.exec.progress.step_done();
                self.say(format!("  FAILED  {}: {e} [{}]", op.title, step.id));
                if let Some(advice) = &op.on_failure {
                    self.say(format!("          on failure: {advice}"));
                }
                Ok(false)
            }
        }
    }

    /// Undoes one step and verifies the earlier release is back.
    async fn undo_step(&self, step: &Step) -> Result<bool, ExecError> {
        if let Some(crate::plan::StepOp {
            op: Op::Call {
                undo: Some(undo), ..
            },
            ..
        }) = &step.op
        {
            return self.undo_call_step(step, undo).await;
        }
        if let Some(op) = &step.op {
            // What an operation made (a snapshot) is what a back-out may need: kept.
            self.record(
                self.entry(Event::StepBackedOut, step)
                    .outcome(Outcome::BackedOut)
                    .message(format!("nothing to undo: {} kept", op.title)),
            )
            .await?;
            self.set(&step.id, StepStatus::BackedOut);
            return Ok(true);
        }
        let spec = self
            .exec
            .specs
            .get(&step.target.id)
            .ok_or_else(|| ExecError::NoSpec(step.target.id.clone()))?;
        let driver = self.exec.drivers.get(step.target.kind)?;
        let back_to = match &step.undo {
            Undo::SwitchTo { version, .. } => version.clone(),
            Undo::Uninstall => "(uninstalled)".into(),
            Undo::Keep => "(kept)".into(),
        };
        self.record(
            self.entry(Event::UndoStarted, step)
                .message(format!("back to {back_to}")),
        )
        .await?;
        let started = Instant::now();
        let result = driver
            .undo_leaving(spec, &step.undo, Some(step.to.as_str()))
            .await;
        let ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(()) => {
                self.record(
                    self.entry(Event::StepBackedOut, step)
                        .outcome(Outcome::BackedOut)
                        .duration_ms(ms)
                        .message(format!("back to {back_to}, verified")),
                )
                .await?;
                self.set(&step.id, StepStatus::BackedOut);
                self.say(format!(
                    "  undone  {} -> {back_to} [{}]",
                    step.target.id, step.id
                ));
                Ok(true)
            }
            Err(e) => {
                self.record(
                    self.entry(Event::UndoFailed, step)
                        .outcome(Outcome::Failed)
                        .duration_ms(ms)
                        .message(e.to_string()),
                )
                .await?;
                self.set(&step.id, StepStatus::UndoFailed);
                self.say(format!(
                    "  UNDO FAILED {}: {e} [{}]",
                    step.target.id, step.id
                ));
                Ok(false)
            }
        }
    }
}

impl Shared {
    /// Undoes a call step with its undo (resumes what it quiesced), recorded like any undo.
    async fn undo_call_step(
        &self,
        step: &Step,
        undo: &crate::ops::Action,
    ) -> Result<bool, ExecError> {
        self.record(
            self.entry(Event::UndoStarted, step)
                .message(format!("undo: {}", undo.describe())),
        )
        .await?;
        let started = Instant::now();
        let result = self.undo_call(undo).await;
        let ms = started.elapsed().as_millis() as u64;
        let (event, outcome, status, message, ok) = match result {
            Ok(_) => (
                Event::StepBackedOut,
                Outcome::BackedOut,
                StepStatus::BackedOut,
                format!("undone: {}", undo.describe()),
                true,
            ),
            Err(e) => (
                Event::UndoFailed,
                Outcome::Failed,
                StepStatus::UndoFailed,
                e,
                false,
            ),
        };
        self.record(
            self.entry(event, step)
                .outcome(outcome)
                .duration_ms(ms)
                .message(message.clone()),
        )
        .await?;
        self.set(&step.id, status);
        self.say(format!(
            "  {} {}: {message} [{}]",
            if ok { "undone " } else { "UNDO FAILED" },
            step.target.app,
            step.id
        ));
        Ok(ok)
    }
}

/// What a run returns: how it ended and every step's status.
type RunResult = Result<(ApplyOutcome, BTreeMap<String, StepStatus>), ExecError>;

impl Executor {
    /// Runs the plan; `prior` says what an earlier, interrupted run already did.
    pub async fn run(self, prior: &PriorRun) -> RunResult {
        let plan = self.plan.clone();
        let shared = Shared::start(self, prior);
        let mut start = NewEntry::new(&shared.exec.actor, Event::ApplyStarted).plan(&plan.id);
        start.detail = Some(
            serde_json::json!({ "resumed": prior.started, "already_done": prior.done.len(), "steps": plan.body.steps.len() }),
        );
        shared.record(start).await?;
        let mut failed_all: Vec<String> = Vec::new();
        for (w, wave) in plan.body.waves.iter().enumerate() {
            if let Some(end) = run_wave(&shared, w, wave, prior, &mut failed_all).await? {
                return Ok(end);
            }
        }
        finish_completed(&shared, failed_all).await
    }
}

impl Shared {
    /// The run's shared state: every step pending but those an earlier run completed.
    fn start(exec: Executor, prior: &PriorRun) -> Arc<Self> {
        let status = exec
            .plan
            .body
            .steps
            .iter()
            .map(|s| {
                let st = if prior.done.contains(&s.id) {
                    StepStatus::AlreadyDone
                } else {
                    StepStatus::Pending
                };
                (s.id.clone(), st)
            })
            .collect();
        let completed: Vec<String> = prior
            .done_in_order
            .iter()
            .filter(|s| prior.done.contains(*s))
            .cloned()
            .collect();
        Arc::new(Shared {
            exec,
            status: Mutex::new(status),
            completed: Mutex::new(completed),
            abort: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
            held: Mutex::new(BTreeMap::new()),
            waiting: Mutex::new(BTreeMap::new()),
            prior_gates: prior.gates.clone(),
            prior_chunks: prior.chunks.clone(),
            migration_chunks: Mutex::new(prior.chunks.values().find_map(|p| p.planned.clone())),
            migration_hashes: Mutex::new(
                prior
                    .chunks
                    .values()
                    .flat_map(|p| p.hashes.clone())
                    .collect(),
            ),
            bucket_objects: Mutex::new(prior.objects.clone()),
            on_timeout: Mutex::new(None),
        })
    }
}

/// Runs wave `w`'s steps that are not done yet: its gates and manual steps first, then one
/// lane per host. `Some` when the run ends here (interrupted, at a gate or a manual step,
/// halted or backed out); `None` to go on with the next wave.
async fn run_wave(
    shared: &Arc<Shared>,
    w: usize,
    wave: &crate::plan::WavePlan,
    prior: &PriorRun,
    failed_all: &mut Vec<String>,
) -> Result<Option<(ApplyOutcome, BTreeMap<String, StepStatus>)>, ExecError> {
    let plan = shared.exec.plan.clone();
    let steps: Vec<&Step> = plan
        .body
        .steps
        .iter()
        .filter(|s| s.wave == w && !prior.done.contains(&s.id))
        .collect();
    if steps.is_empty() {
        return Ok(None);
    }
    if shared.cancelled() {
        return finish_interrupted(shared).await.map(Some);
    }
    for gate in plan.body.gates.iter().filter(|g| g.wave == w) {
        if !gate_approved(shared, gate)? {
            return finish_at_gate(shared, gate).await.map(Some);
        }
        shared.say(format!("gate `{}` approved", gate.name));
    }
    for step in &steps {
        if let Some(crate::plan::StepOp {
            title,
            op: Op::Manual { instructions },
            ..
        }) = &step.op
            && !shared.exec.confirmed.contains(&step.id)
        {
            return finish_unconfirmed(shared, step, title, instructions)
                .await
                .map(Some);
        }
    }
    shared.say(format!(
        "wave {} `{}`: {} step(s), max_parallel {}",
        w + 1,
        wave.name,
        steps.len(),
        wave.max_parallel
    ));
    let wave_run = WaveRun {
        sem: Arc::new(Semaphore::new(wave.max_parallel.max(1) as usize)),
        failures: Arc::new(AtomicU32::new(0)),
        threshold: wave.failure_threshold,
    };
    let mut set: JoinSet<Result<Vec<String>, ExecError>> = JoinSet::new();
    for lane in lanes(steps) {
        set.spawn(run_lane(shared.clone(), lane, wave_run.clone()));
    }
    failed_all.extend(join_lanes(shared, set).await?);
    failed_all.sort();
    if shared.abort.load(Ordering::SeqCst) {
        shared.say(format!(
            "wave `{}` crossed its failure threshold ({} failed, {} tolerated)",
            wave.name,
            wave_run.failures.load(Ordering::SeqCst),
            wave_run.threshold
        ));
        let failed = std::mem::take(failed_all);
        let policy = match *shared.on_timeout.lock().expect("on_timeout lock") {
            Some(crate::model::OnTimeout::Halt) => OnFailure::Halt,
            Some(crate::model::OnTimeout::Backout) => OnFailure::Backout,
            None => plan.body.on_failure,
        };
        return match policy {
            OnFailure::Halt => finish_halted(shared, failed).await.map(Some),
            OnFailure::Backout => finish_backed_out(shared, failed).await.map(Some),
        };
    }
    if shared.cancelled() {
        return finish_interrupted(shared).await.map(Some);
    }
    if shared.get_any_held() {
        return finish_outside_window(shared).await.map(Some);
    }
    if !shared.waiting.lock().expect("waiting lock").is_empty() {
        return finish_waiting(shared).await.map(Some);
    }
    Ok(None)
}

/// One lane per host (site + cloud or endpoint), in plan order: a host's steps run one after
/// another; lanes run concurrently.
fn lanes(steps: Vec<&Step>) -> Vec<Vec<Step>> {
    let mut lanes: Vec<((String, String), Vec<Step>)> = Vec::new();
    for s in steps {
        let key = (s.target.site.clone(), s.target.host.clone());
        match lanes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(s.clone()),
            None => lanes.push((key, vec![s.clone()])),
        }
    }
    lanes.into_iter().map(|(_, v)| v).collect()
}

/// What the lanes of one wave share: the `max_parallel` slots and the failure count.
#[derive(Clone)]
struct WaveRun {
    sem: Arc<Semaphore>,
    failures: Arc<AtomicU32>,
    threshold: u32,
}

/// Runs a lane's steps in order; returns the ones that failed. A step waits for its
/// dependencies (on any host) before it takes a slot, so waiting never holds a slot; after a
/// failure the lane's later steps are skipped (they need a healthy host).
async fn run_lane(
    sh: Arc<Shared>,
    lane: Vec<Step>,
    wave: WaveRun,
) -> Result<Vec<String>, ExecError> {
    let mut failed = Vec::new();
    let mut lane_broken = false;
    for step in lane {
        if lane_broken {
            let after_hold = sh.get_held(&step.target.site)
                || step
                    .depends_on
                    .iter()
                    .any(|d| sh.get(d) == StepStatus::Waiting);
            let status = if after_hold {
                StepStatus::Held
            } else {
                StepStatus::Skipped
            };
            sh.set(&step.id, status);
            sh.changed.notify_waiters();
            continue;
        }
        sh.wait_for_dependencies(&step).await;
        if sh.abort.load(Ordering::SeqCst) || sh.cancelled() {
            break;
        }
        if step
            .depends_on
            .iter()
            .any(|d| matches!(sh.get(d), StepStatus::Held | StepStatus::Waiting))
        {
            sh.set(&step.id, StepStatus::Held);
            sh.changed.notify_waiters();
            continue;
        }
        let blocked = step
            .depends_on
            .iter()
            .any(|d| !matches!(sh.get(d), StepStatus::Succeeded | StepStatus::AlreadyDone));
        if blocked {
            sh.set(&step.id, StepStatus::Skipped);
            sh.changed.notify_waiters();
            sh.say(format!(
                "  skipped {}: a step it depends on did not succeed [{}]",
                step.target.id, step.id
            ));
            continue;
        }
        if let window::Gate::Held(next) = sh.window_gate(&step.target.site).await? {
            sh.hold(&step, next);
            lane_broken = true; // the rest of this host's steps wait with it
            continue;
        }
        let permit = wave
            .sem
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        if sh.abort.load(Ordering::SeqCst) || sh.cancelled() {
            break;
        }
        let ok = match sh.run_step(&step).await {
            Ok(ok) => ok,
            Err(e) => {
                sh.changed.notify_waiters();
                return Err(e);
            }
        };
        if ok {
            drop(permit);
            sh.changed.notify_waiters();
            continue;
        }
        // Decide on the threshold before the slot frees up, so no new step starts once the
        // wave has failed; undo while still holding it.
        failed.push(step.id.clone());
        if wave.failures.fetch_add(1, Ordering::SeqCst) + 1 > wave.threshold {
            sh.abort.store(true, Ordering::SeqCst);
        }
        if sh.exec.plan.body.on_failure == OnFailure::Backout {
            // Never leave a failed target on a broken release under `backout`.
            sh.undo_step(&step).await?;
        }
        drop(permit);
        sh.changed.notify_waiters();
        lane_broken = true;
    }
    Ok(failed)
}

/// Waits for every lane; the failed steps of all, or the first error (which aborts the rest).
async fn join_lanes(
    shared: &Shared,
    mut set: JoinSet<Result<Vec<String>, ExecError>>,
) -> Result<Vec<String>, ExecError> {
    let mut failed = Vec::new();
    let mut first_err = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(f)) => failed.extend(f),
            Ok(Err(e)) => {
                shared.abort.store(true, Ordering::SeqCst);
                first_err.get_or_insert(e);
            }
            Err(j) => {
                shared.abort.store(true, Ordering::SeqCst);
                first_err.get_or_insert(ExecError::Driver(DriverError::Failed {
                    target: "executor".into(),
                    action: "join",
                    message: j.to_string(),
                }));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(failed),
    }
}

/// Every wave ran: completed, or completed with failures its thresholds tolerated.
async fn finish_completed(shared: &Shared, failed: Vec<String>) -> RunResult {
    let (outcome, o) = if failed.is_empty() {
        (ApplyOutcome::Completed, Outcome::Ok)
    } else {
        (
            ApplyOutcome::CompletedWithFailures { failed },
            Outcome::CompletedWithFailures,
        )
    };
    shared
        .record(
            NewEntry::new(&shared.exec.actor, Event::ApplyFinished)
                .plan(&shared.exec.plan.id)
                .outcome(o),
        )
        .await?;
    Ok((outcome, take_status(shared)))
}

fn take_status(shared: &Shared) -> BTreeMap<String, StepStatus> {
    shared.status.lock().expect("status lock").clone()
}

fn pending(shared: &Shared) -> Vec<String> {
    shared
        .status
        .lock()
        .expect("status lock")
        .iter()
        .filter(|(_, s)| {
            matches!(
                s,
                StepStatus::Pending
                    | StepStatus::Skipped
                    | StepStatus::Failed
                    | StepStatus::Held
                    | StepStatus::Waiting
            )
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// A valid approval of `gate` for this plan is in the ledger: signed by an inventory approver
/// who holds the gate's role, over this plan's digest.
fn gate_approved(shared: &Shared, gate: &crate::plan::GatePlan) -> Result<bool, ExecError> {
    let plan = &shared.exec.plan;
    let digest = crate::approval::plan_digest(plan);
    let entries = shared.exec.ledger.read_verified()?;
    Ok(entries
        .iter()
        .filter(|e| e.event == Event::Approval && e.plan_id.as_deref() == Some(&plan.id))
        .filter_map(|e| {
            serde_json::from_value::<crate::approval::SignedApproval>(e.detail.clone()?).ok()
        })
        .any(|a| {
            a.payload.gate == gate.name
                && a.payload.role == gate.role
                && a.payload.plan_sha256 == digest
                && crate::approval::verify(&a, Some(&shared.exec.approvers)).is_ok()
        }))
}

/// Records a resumable stop of the run (`outcome: halted`) with its reason.
async fn record_stop(shared: &Shared, event: Event, message: String) -> Result<(), ExecError> {
    shared
        .record(
            NewEntry::new(&shared.exec.actor, event)
                .plan(&shared.exec.plan.id)
                .outcome(Outcome::Halted)
                .message(message),
        )
        .await
}

impl Shared {
    /// Holds `step`: its site's window is closed until `next`.
    fn hold(&self, step: &Step, next: crate::window::Opening) {
        self.held
            .lock()
            .expect("held lock")
            .insert(step.target.site.clone(), next);
        self.set(&step.id, StepStatus::Held);
        self.changed.notify_waiters();
    }
    fn get_held(&self, site: &str) -> bool {
        self.held.lock().expect("held lock").contains_key(site)
    }
    fn get_any_held(&self) -> bool {
        !self.held.lock().expect("held lock").is_empty()
    }
}

/// Steps were held outside their sites' windows: recorded with when each opens, resumable.
async fn finish_outside_window(shared: &Shared) -> RunResult {
    let pending = pending(shared);
    let held = shared.held.lock().expect("held lock").clone();
    let sites: Vec<ClosedWindow> = held
        .iter()
        .map(|(site, next)| {
            let tz = shared
                .exec
                .windows
                .sites
                .get(site)
                .map_or("UTC", |w| w.timezone.as_str());
            ClosedWindow {
                site: site.clone(),
                opens_at: next.start.to_rfc3339(),
                opens: crate::window::describe(next.start, tz),
            }
        })
        .collect();
    let said: Vec<String> = sites
        .iter()
        .map(|c| format!("`{}` opens {}", c.site, c.opens))
        .collect();
    shared
        .record(
            NewEntry::new(&shared.exec.actor, Event::WindowClosed)
                .plan(&shared.exec.plan.id)
                .message(format!(
                    "held the steps of sites outside their maintenance windows: {}",
                    said.join("; ")
                ))
                .detail(serde_json::json!({ "sites": sites })),
        )
        .await?;
    shared.say(format!(
        "stopped: maintenance window closed ({})",
        said.join("; ")
    ));
    record_stop(
        shared,
        Event::ApplyFinished,
        format!(
            "stopped outside a maintenance window; {} step(s) left; inside the window: ferry apply --resume",
            pending.len()
        ),
    )
    .await?;
    Ok((
        ApplyOutcome::OutsideWindow { sites, pending },
        take_status(shared),
    ))
}

async fn finish_at_gate(shared: &Shared, gate: &crate::plan::GatePlan) -> RunResult {
    let pending = pending(shared);
    let plan_id = shared.exec.plan.id.clone();
    shared
        .record(
            NewEntry::new(&shared.exec.actor, Event::GateWaiting)
                .plan(&plan_id)
                .message(format!(
                    "gate `{}` needs an approval by role `{}` before wave {}",
                    gate.name,
                    gate.role,
                    gate.wave + 1
                )),
        )
        .await?;
    record_stop(
        shared,
        Event::ApplyFinished,
        format!(
            "stopped at gate `{}`; {} step(s) left; after approval: ferry apply --resume",
            gate.name,
            pending.len()
        ),
    )
    .await?;
    Ok((
        ApplyOutcome::AwaitingApproval {
            gate: gate.name.clone(),
            role: gate.role.clone(),
            pending,
        },
        take_status(shared),
    ))
}

async fn finish_unconfirmed(
    shared: &Shared,
    step: &Step,
    title: &str,
    instructions: &str,
) -> RunResult {
    let pending = pending(shared);
    shared
        .record(
            NewEntry::new(&shared.exec.actor, Event::GateWaiting)
                .plan(&shared.exec.plan.id)
                .message(format!(
                    "manual step {} `{title}` needs a confirmation: {instructions}",
                    step.id
                )),
        )
        .await?;
    record_stop(
        shared,
        Event::ApplyFinished,
        format!(
            "stopped before manual step {} `{title}`; {} step(s) left; when done: ferry apply --resume --confirm {}",
            step.id,
            pending.len(),
            step.id
        ),
    )
    .await?;
    Ok((
        ApplyOutcome::AwaitingConfirmation {
            step: step.id.clone(),
            title: title.to_owned(),
            instructions: instructions.to_owned(),
            pending,
        },
        take_status(shared),
    ))
}

/// One line saying what an operation did, for the ledger message and the progress output.
fn op_summary(op: &Op, d: &serde_json::Value) -> String {
    let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
    let adopted = if d["adopted"] == true {
        " (found from an earlier run)"
    } else {
        ""
    };
    match op {
        Op::Manual { .. } => format!("confirmed by {}", s("confirmed_by")),
        Op::RdsSnapshot { .. } => format!("snapshot {} available{adopted}", s("snapshot")),
        Op::RdsRestore { .. } => format!(
            "restoring snapshot {} to instance {}{adopted}",
            s("snapshot"),
            s("instance")
        ),
        Op::RdsWait { .. } => format!("instance {} available", s("instance")),
        Op::RdsVerify { .. } => format!(
            "instance {} verified: {}",
            s("instance"),
            d["checks"]
                .as_array()
                .map(|c| c
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ),
        Op::RdsRename { .. } => format!("instance {} renamed to {}", s("from"), s("to")),
        Op::RdsDelete { .. } => format!(
            "instance {} deleted, final snapshot {}",
            s("instance"),
            s("final_snapshot")
        ),
        Op::WaitUntil { .. } => "condition holds".into(),
        Op::Call { call, .. } => match call {
            crate::ops::Action::Http { .. } => {
                format!("{} answered {}", call.describe(), d["status"])
            }
            crate::ops::Action::Command { .. } => format!("{} succeeded", call.describe()),
        },
        Op::Record { label, .. } => {
            format!("{label} = {}", crate::gate::text(&d["value"]))
        }
        Op::Migrate { phase, .. } => migrate::summary(*phase, d),
        Op::Bucket { phase, .. } => bucket_summary(*phase, d),
    }
}

#[cfg(not(feature = "aws"))]
impl Shared {
    async fn run_bucket(
        &self,
        _step: &Step,
        _phase: crate::migrate::bucket::BucketPhase,
        _spec: &crate::migrate::bucket::BucketSpec,
    ) -> Result<serde_json::Value, String> {
        Err("this ferry was built without the `aws` feature: bucket copies need aws-sdk-s3".into())
    }
}

/// A bucket step's one-line result.
fn bucket_summary(phase: crate::migrate::bucket::BucketPhase, d: &serde_json::Value) -> String {
    match phase {
        crate::migrate::bucket::BucketPhase::Copy => format!(
            "{} object(s), {} byte(s) in the manifest (root {}): {} copied now, {} kept, {} deleted; retries {}; {}",
            d["objects"],
            d["bytes"],
            crate::gate::text(&d["root"]),
            d["copied_now"],
            d["kept"],
            d["deleted"],
            d["retries"],
            if d["own_uploads_open"] == 0 {
                "no upload of ours left open (listed)"
            } else {
                "uploads of ours aborted by id (the store cannot list uploads)"
            }
        ),
        crate::migrate::bucket::BucketPhase::Verify => format!(
            "{} object(s), {} byte(s) read back: every one matches the manifest",
            d["objects"], d["bytes"]
        ),
    }
}

/// Condition gates do not hold yet: recorded (each gate's `condition_waiting` is already in the
/// ledger), resumable.
async fn finish_waiting(shared: &Shared) -> RunResult {
    let pending = pending(shared);
    let waiting = shared.waiting.lock().expect("waiting lock").clone();
    let gates: Vec<WaitingGate> = waiting
        .iter()
        .filter_map(|(id, clock)| {
            let step = shared.exec.plan.step(id)?;
            Some(gates::waiting_gate(step, clock))
        })
        .collect();
    let names: Vec<String> = gates
        .iter()
        .map(|g| format!("{} = {}", g.name, crate::gate::text(&g.value)))
        .collect();
    record_stop(
        shared,
        Event::ApplyInterrupted,
        format!(
            "waiting for condition(s): {}; {} step(s) left; `ferry apply --resume` evaluates again, `--wait` polls",
            names.join(", "),
            pending.len()
        ),
    )
    .await?;
    Ok((
        ApplyOutcome::AwaitingCondition { gates, pending },
        take_status(shared),
    ))
}

async fn finish_interrupted(shared: &Shared) -> RunResult {
    let pending = pending(shared);
    record_stop(
        shared,
        Event::ApplyInterrupted,
        format!(
            "interrupted; {} step(s) left; resume with `ferry apply --resume`",
            pending.len()
        ),
    )
    .await?;
    Ok((ApplyOutcome::Interrupted { pending }, take_status(shared)))
}

async fn finish_halted(shared: &Shared, failed: Vec<String>) -> RunResult {
    let pending = pending(shared);
    record_stop(
        shared,
        Event::ApplyFinished,
        format!(
            "halted: {} failed, {} left; resume with `ferry apply --resume`",
            failed.len(),
            pending.len()
        ),
    )
    .await?;
    Ok((
        ApplyOutcome::Halted { failed, pending },
        take_status(shared),
    ))
}

async fn finish_backed_out(shared: &Shared, failed: Vec<String>) -> RunResult {
    let plan = shared.exec.plan.clone();
    let order: Vec<String> = shared
        .completed
        .lock()
        .expect("completed lock")
        .iter()
        .rev()
        .cloned()
        .collect();
    shared.say(format!(
        "backing out {} completed step(s), newest first",
        order.len()
    ));
    let (mut undone, mut undo_failed) = (Vec::new(), Vec::new());
    let failed_set: BTreeSet<&String> = failed.iter().collect();
    for id in order {
        if failed_set.contains(&id) {
            continue;
        }
        let step = plan.step(&id).expect("completed steps are plan steps");
        if shared.undo_step(step).await? {
            undone.push(id);
        } else {
            undo_failed.push(id);
        }
    }
    // A failed step whose own undo failed (its target is in an unknown state) counts too.
    for (id, st) in shared.status.lock().expect("status lock").iter() {
        if *st == StepStatus::UndoFailed && !undo_failed.contains(id) {
            undo_failed.push(id.clone());
        }
    }
    undo_failed.sort();
    let outcome = if undo_failed.is_empty() {
        Outcome::BackedOut
    } else {
        Outcome::Failed
    };
    shared
        .record(
            NewEntry::new(&shared.exec.actor, Event::ApplyFinished)
                .plan(&plan.id)
                .outcome(outcome)
                .message(format!(
                    "backed out: {} undone, {} undo failures",
                    undone.len(),
                    undo_failed.len()
                )),
        )
        .await?;
    Ok((
        ApplyOutcome::BackedOut {
            failed,
            undone,
            undo_failed,
        },
        take_status(shared),
    ))
}

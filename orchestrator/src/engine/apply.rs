//! Applying a saved plan, as a library call: the checks, the lock, the executor, the record.
//! The CLI (and, later, the agent) call [`apply`] and render what it returns.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::{Error, State};
use crate::drivers::Drivers;
use crate::executor::{ApplyOutcome, Executor, PriorRun, Progress, StepStatus, prior_run};
use crate::ledger::LedgerError;
use crate::ledger::{Event, NewEntry, Outcome};
use crate::lock::Fence;
use crate::plan::SavedPlan;
use crate::state::HeldLock;
use crate::{exit, workspace};

pub struct ApplyResult {
    pub plan: SavedPlan,
    pub outcome: ApplyOutcome,
    pub status: BTreeMap<String, StepStatus>,
    pub code: u8,
}

/// How to apply a saved plan.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// Continue a run that stopped (interrupted, halted, at a gate).
    pub resume: bool,
    /// Lease of the apply lock.
    pub lease: Duration,
    /// Manual steps confirmed for this run.
    pub confirm: &'a [String],
    /// Accept a plan this ledger never recorded (recorded as `plan_trusted`).
    pub trust_plan_file: bool,
    /// What to do about a site whose maintenance window is closed.
    pub window: WindowChoice<'a>,
    /// The drivers to act through (the build's standard ones when `None`): the ones that made
    /// the plan, when it was made in this process, so their connections are reused.
    pub drivers: Option<&'a Drivers>,
    /// The plan was made in this process through `drivers`, its observation started when the
    /// ledger's last entry was this one (`Some(None)`: the ledger was empty). When nothing but
    /// the plan's own record has been appended since, up to this run's lock, no ferry run of
    /// this state has acted meanwhile, and the plan's observation stands for the stale check
    /// (`ferry apply --auto-approve`: the targets are not observed twice).
    pub observed_after: Option<Option<u64>>,
}

/// When a step's site has a closed maintenance window: stop (the default), wait for it to
/// open, or start anyway for a reason that is recorded with the actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowChoice<'a> {
    pub wait: bool,
    pub override_reason: Option<&'a str>,
    /// The clock windows are judged by (the system's when `None`).
    pub clock: Option<&'a Arc<dyn crate::executor::Clock>>,
}

impl Options<'_> {
    /// A plan ferry just made and recorded itself (demo, back-out, runbook).
    pub fn fresh(confirm: &[String]) -> Options<'_> {
        Options {
            resume: false,
            lease: Duration::from_secs(30),
            confirm,
            trust_plan_file: false,
            window: WindowChoice::default(),
            drivers: None,
            observed_after: None,
        }
    }
}

pub fn outcome_code(o: &ApplyOutcome) -> u8 {
    match o {
        ApplyOutcome::Completed => exit::OK,
        ApplyOutcome::CompletedWithFailures { .. } | ApplyOutcome::Halted { .. } => exit::FAILED,
        ApplyOutcome::BackedOut { undo_failed, .. } if undo_failed.is_empty() => exit::BACKED_OUT,
        ApplyOutcome::BackedOut { .. } => exit::ERROR,
        ApplyOutcome::Interrupted { .. } => exit::INTERRUPTED,
        ApplyOutcome::AwaitingApproval { .. } | ApplyOutcome::AwaitingConfirmation { .. } => {
            exit::AWAITING_APPROVAL
        }
        ApplyOutcome::OutsideWindow { .. } => exit::OUTSIDE_WINDOW,
        ApplyOutcome::AwaitingCondition { .. } => exit::AWAITING_CONDITION,
    }
}

/// Applies the saved plan at `plan_path`: the seal, stale and edit checks, the lock (taken,
/// renewed, fenced), the executor, and the lock released or recorded as lost. Progress goes to
/// `progress`; `cancel` turning true stops the run at the next safe point (the caller maps its
/// signals to it). Nothing is printed.
pub async fn apply(
    state: &State,
    plan_path: &Path,
    opts: Options<'_>,
    progress: Arc<dyn Progress>,
    cancel: watch::Receiver<bool>,
) -> Result<ApplyResult, Error> {
    let Options {
        resume,
        lease,
        confirm,
        trust_plan_file,
        window,
        drivers,
        observed_after,
    } = opts;
    if let Some(r) = window.override_reason
        && r.trim().chars().count() < 10
    {
        return Err(Error::Refused(
            "--outside-window --reason: say why the maintenance window is overridden (at least 10 characters): it goes into the ledger".into(),
        ));
    }
    let (plan, plan_sha256) = workspace::read_plan_with_digest(plan_path)?;
    let confirmed = confirmed_steps(&plan, confirm)?;
    let confirm = confirmed.as_slice();
    // Nothing is acted on (or recorded) on a ledger whose chain does not verify (exit 7), and
    // the plan must be the one this ledger recorded, byte for byte (exit 3).
    let entries = state.ledger.read_verified()?;
    let trusted = check_seal(
        &entries,
        &plan,
        &plan_sha256,
        plan_path,
        trust_plan_file.then_some(state.actor.as_str()),
    )?;
    let changed = workspace::changed_inputs(&plan.inputs);
    if !changed.is_empty() {
        return Err(Error::Stale(changed));
    }
    // A plan this ledger saw made, with no catalogued version in it, deploys none (a
    // `lifecycle` added since would have changed the inventory): its inventory is not read
    // again. Any other plan is checked against the catalog as it is now.
    let made_here = entries
        .iter()
        .any(|e| e.event == Event::PlanCreated && e.plan_id.as_deref() == Some(plan.id.as_str()));
    if !(made_here && plan.body.versions.is_empty()) {
        let moved = super::versions::changed_since_plan(&entries, &plan)?;
        if !moved.is_empty() {
            return Err(Error::Stale(moved));
        }
    }
    // The body is acted on, so it must be what the inputs produce (not only the inputs
    // unchanged): an edited plan cannot drop a gate or change a step.
    let edited = workspace::body_problems(&plan)?;
    if !edited.is_empty() {
        return Err(Error::Stale(
            edited
                .into_iter()
                .map(|d| format!("the saved plan was edited: {d}"))
                .collect(),
        ));
    }
    if !plan.has_changes() {
        return Ok(ApplyResult {
            plan,
            outcome: ApplyOutcome::Completed,
            status: BTreeMap::new(),
            code: exit::OK,
        });
    }
    // The lock comes first: while another apply runs, that is what the operator needs to hear.
    // It is taken and recorded as one step under the ledger's file lock, so no fenced append of
    // an earlier holder can land after the takeover's record.
    let (lock, taken) = state.ledger.take_lock(&state.actor, &plan.id, lease)?;
    let observed_now =
        observed_after.is_some_and(|after| quiet_since(&entries, after, &plan.id, taken.seq));
    let fence = lock.fence();
    let run_state = State {
        state_dir: state.state_dir.clone(),
        ledger: state.ledger.fenced(fence.clone()),
        actor: state.actor.clone(),
    };
    let lock = Arc::new(Mutex::new(lock));
    let result = match trusted.map(|e| run_state.ledger.append(e)).transpose() {
        Err(e) => Err(e.into()),
        Ok(_) => preflight(&run_state, &plan, plan_path, resume),
    };
    let result = match result {
        Ok(Some(prior)) => {
            let run = Run {
                lock: lock.clone(),
                confirm,
                fence,
                progress,
                cancel,
                window,
                drivers: drivers.cloned().unwrap_or_else(Drivers::standard),
                observed_now,
            };
            run_locked(&run_state, plan, &prior, run).await
        }
        Ok(None) => {
            let status = plan
                .body
                .steps
                .iter()
                .map(|s| (s.id.clone(), StepStatus::AlreadyDone))
                .collect();
            Ok(ApplyResult {
                plan,
                outcome: ApplyOutcome::Completed,
                status,
                code: exit::OK,
            })
        }
        Err(e) => Err(e),
    };
    let mut guard = lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let plan_id = guard.holder().plan_id.clone();
    // `lock_released` is fenced like every other entry: a run that lost the lock says so
    // instead, and leaves the new holder's lock alone.
    let released = run_state
        .ledger
        .append(NewEntry::new(&state.actor, Event::LockReleased).plan(&plan_id));
    match released {
        Ok(_) => {
            guard.release()?;
            result
        }
        Err(LedgerError::Fenced(lost)) => {
            let _ = guard.release();
            record_lock_lost(state, &plan_id, &lost, &result);
            match result {
                Err(e) => Err(e),
                Ok(_) => Err(Error::Ledger(LedgerError::Fenced(lost))),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The manual steps `confirm` names: by step id, or (runbooks) by runbook step name. A name
/// that is no manual step of the plan is refused.
fn confirmed_steps(plan: &SavedPlan, confirm: &[String]) -> Result<Vec<String>, Error> {
    let mut confirmed = Vec::new();
    for c in confirm {
        let step = plan.step(c).or_else(|| {
            let w = plan.body.waves.iter().position(|w| &w.name == c)?;
            plan.body
                .steps
                .iter()
                .find(|s| s.wave == w && s.op.is_some())
        });
        match step {
            Some(s)
                if matches!(
                    s.op.as_ref().map(|o| &o.op),
                    Some(crate::ops::Op::Manual { .. })
                ) =>
            {
                confirmed.push(s.id.clone());
            }
            Some(s) => {
                return Err(Error::Refused(format!(
                    "--confirm {c}: step {} is not a manual step of plan {}",
                    s.id, plan.id
                )));
            }
            None => {
                return Err(Error::Refused(format!(
                    "--confirm {c}: plan {} has no step {c}",
                    plan.id
                )));
            }
        }
    }
    Ok(confirmed)
}

/// The saved plan is sealed: its bytes must be those recorded (`plan_created`, or an earlier
/// `plan_trusted`) in this ledger, else it was edited (exit 3, whatever else matches). A plan
/// this ledger never recorded is refused unless `--trust-plan-file`, which returns the
/// `plan_trusted` entry to record (from then on its seal), by `trusted_by`.
fn check_seal(
    entries: &[crate::ledger::Entry],
    plan: &SavedPlan,
    sha256: &str,
    plan_path: &Path,
    trusted_by: Option<&str>,
) -> Result<Option<NewEntry>, Error> {
    let recorded = entries
        .iter()
        .rev()
        .filter(|e| e.plan_id.as_deref() == Some(plan.id.as_str()))
        .filter(|e| matches!(e.event, Event::PlanCreated | Event::PlanTrusted))
        .find_map(|e| {
            let d = e.detail.as_ref()?["plan_sha256"].as_str()?.to_owned();
            Some((e.seq, d, e.actor.clone()))
        });
    match (recorded, trusted_by) {
        (Some((_, d, _)), _) if d == sha256 => Ok(None),
        (Some((seq, d, actor)), _) => Err(Error::Stale(vec![format!(
            "{} is not the plan that was made: its SHA-256 is {sha256}, but ledger entry #{seq} ({actor}) recorded {d}; the file was edited after planning",
            plan_path.display()
        )])),
        (None, Some(by)) => Ok(Some(
            NewEntry::new(by, Event::PlanTrusted)
                .plan(&plan.id)
                .message(format!(
                    "plan {} applied with --trust-plan-file: this ledger never recorded it",
                    plan_path.display()
                ))
                .detail(serde_json::json!({
                    "plan_file": plan_path.display().to_string(),
                    "plan_sha256": sha256,
                    "made_by": plan.actor,
                    "created_at": plan.created_at,
                })),
        )),
        (None, None) => Err(Error::Stale(vec![format!(
            "plan {} ({}) was not made with this state directory: its ledger never recorded it, so its bytes cannot be checked; apply it from the state directory that made it, or pass --trust-plan-file (recorded)",
            plan.id,
            plan_path.display()
        )])),
    }
}

/// A run that found it lost the lock records that, and only that: what it was doing and who
/// holds the lock now. Its last driver action may have finished after the takeover; the entry
/// says so, so an auditor and the new holder's next plan see it.
fn record_lock_lost(
    state: &State,
    plan_id: &str,
    lost: &crate::lock::LockError,
    result: &Result<ApplyResult, Error>,
) {
    let stopped = match result {
        Err(e) => e.to_string(),
        Ok(r) => format!("{:?}", r.outcome),
    };
    let _ = state.ledger.append(
        NewEntry::new(&state.actor, Event::LockLost)
            .plan(plan_id)
            .outcome(Outcome::Failed)
            .message(format!(
                "this apply lost the apply lock ({lost}) and stopped; a step in flight when the lock was lost may have acted after the takeover: plan again before acting on this estate"
            ))
            .detail(serde_json::json!({ "stopped": stopped, "pid": std::process::id() })),
    );
}

/// What earlier runs of this plan did, checked under the lock. `None`: nothing is left to do.
fn preflight(
    state: &State,
    plan: &SavedPlan,
    plan_path: &Path,
    resume: bool,
) -> Result<Option<PriorRun>, Error> {
    let prior = prior_run(&state.ledger.read_verified()?, &plan.id);
    if prior.started && !resume {
        return Err(Error::Refused(format!(
            "plan {} was already applied (or partly applied) from this state directory; to finish an interrupted or halted run: ferry apply --resume {}",
            plan.id,
            plan_path.display()
        )));
    }
    match prior.finished {
        Some(Outcome::Ok) => Ok(None),
        Some(Outcome::BackedOut) => Err(Error::Refused(format!(
            "plan {} was backed out; make a new plan",
            plan.id
        ))),
        _ => Ok(Some(prior)),
    }
}

/// What a locked run carries besides the plan.
struct Run<'a> {
    lock: Arc<Mutex<Box<dyn HeldLock>>>,
    confirm: &'a [String],
    fence: Fence,
    progress: Arc<dyn Progress>,
    cancel: watch::Receiver<bool>,
    window: WindowChoice<'a>,
    drivers: Drivers,
    /// The plan's own observation is current: the stale check has nothing to look at.
    observed_now: bool,
}

async fn run_locked(
    state: &State,
    plan: SavedPlan,
    prior: &PriorRun,
    run: Run<'_>,
) -> Result<ApplyResult, Error> {
    let inv = workspace::plan_inventory(&plan)?;
    let plan_kind = plan.body.kind;
    // The run stops when the caller cancels or the lock is lost, whichever comes first.
    let (cancel_tx, cancel_rx) = watch::channel(*run.cancel.borrow());
    let renew = spawn_renewal(run.lock, cancel_tx.clone());
    let forward = spawn_forward(run.cancel, cancel_tx);
    let result = apply_locked(
        state,
        plan,
        &inv,
        prior,
        cancel_rx,
        run.confirm,
        run.fence,
        run.progress,
        windows(&plan_kind, &inv.value, run.window),
        (run.drivers, run.observed_now),
    )
    .await;
    renew.abort();
    forward.abort();
    let _ = renew.await;
    result
}

/// Passes the caller's cancellation on to the run's own.
fn spawn_forward(
    mut from: watch::Receiver<bool>,
    to: watch::Sender<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if *from.borrow_and_update() {
                let _ = to.send(true);
                return;
            }
            if from.changed().await.is_err() {
                return;
            }
        }
    })
}

#[expect(clippy::too_many_arguments, reason = "the run's parts, each used once")]
async fn apply_locked(
    state: &State,
    plan: SavedPlan,
    inv: &crate::load::Loaded<crate::model::Inventory>,
    prior: &PriorRun,
    cancel: watch::Receiver<bool>,
    confirm: &[String],
    fence: Fence,
    progress: Arc<dyn Progress>,
    windows: crate::executor::Windows,
    (drivers, observed_now): (Drivers, bool),
) -> Result<ApplyResult, Error> {
    let base = workspace::base_dir(&inv.source.path);
    let mut specs = BTreeMap::new();
    let targets = plan.body.targets.iter().map(|t| &t.target);
    for mut spec in workspace::target_specs(&inv.value, &base, targets, true)? {
        spec.fence = Some(fence.clone());
        specs.insert(spec.target.id.clone(), spec);
    }
    let mut stale = if observed_now {
        Vec::new()
    } else {
        stale_targets(&drivers, &specs, &plan, prior).await?
    };
    stale.extend(workspace::changed_images(&drivers, &specs, &plan).await);
    if !stale.is_empty() {
        return Err(Error::Stale(stale));
    }
    let bundles = workspace::bundles(&plan, &inv.value, &base)?;
    let todo = plan
        .body
        .steps
        .iter()
        .filter(|s| !prior.done.contains(&s.id))
        .count() as u64;
    progress.start(todo);
    let exec = Executor {
        approvers: inv.value.approvers.clone(),
        plan: Arc::new(plan.clone()),
        specs,
        bundles,
        drivers,
        ledger: state.ledger.clone(),
        actor: state.actor.clone(),
        progress: progress.clone(),
        cancel,
        ops: crate::drivers::standard_ops(&inv.value, &base),
        confirmed: confirm.iter().cloned().collect(),
        // `--wait` waits for closed windows and for gates that do not hold yet alike.
        wait_conditions: windows.wait,
        windows,
        probes: Arc::new(crate::probe::Probes::new(
            Arc::new(inv.value.clone()),
            base.clone(),
        )),
        fence: Some(fence),
    };
    let result = exec.run(prior).await;
    progress.finish();
    let (outcome, status) = result?;
    let code = outcome_code(&outcome);
    Ok(ApplyResult {
        plan,
        outcome,
        status,
        code,
    })
}

/// Targets that changed since the plan was made (observed again now): a target no step of an
/// earlier run touched must look as planned; one a step touched must serve the step's starting
/// or target release.
async fn stale_targets(
    drivers: &Drivers,
    specs: &BTreeMap<String, crate::drivers::TargetSpec>,
    plan: &SavedPlan,
    prior: &PriorRun,
) -> Result<Vec<String>, Error> {
    let list: Vec<_> = specs.values().cloned().collect();
    let observed = workspace::observe_all(drivers, &list).await?;
    let mut stale = Vec::new();
    for t in &plan.body.targets {
        let now = &observed[&t.target.id];
        let steps: Vec<_> = plan
            .body
            .steps
            .iter()
            .filter(|s| s.target.id == t.target.id)
            .collect();
        let touched = steps.iter().any(|s| prior.touched.contains(&s.id));
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        if !touched {
            if now.fingerprint() != t.fingerprint {
                stale.push(format!(
                    "target {} changed since the plan was made: it serves {} with releases [{}]; planned against {} with releases [{}]",
                    t.target.id,
                    show(&now.current),
                    now.releases.join(", "),
                    show(&t.observed.current),
                    t.observed.releases.join(", ")
                ));
            }
        } else {
            let allowed: Vec<Option<String>> = steps
                .iter()
                .flat_map(|s| [s.from.clone(), Some(s.to.clone())])
                .collect();
            if !allowed.contains(&now.current) {
                stale.push(format!("target {} serves {}, which is neither the step's starting nor its target release", t.target.id, show(&now.current)));
            }
        }
    }
    Ok(stale)
}

/// Nothing but this plan's `plan_created` was appended after entry `after` (`None`: the
/// ledger was empty), and this run's `lock_taken` (`lock_seq`) came right after it.
fn quiet_since(
    entries: &[crate::ledger::Entry],
    after: Option<u64>,
    plan_id: &str,
    lock_seq: u64,
) -> bool {
    let since: Vec<_> = entries
        .iter()
        .filter(|e| after.is_none_or(|a| e.seq > a))
        .collect();
    matches!(since.as_slice(), [e] if e.event == Event::PlanCreated
        && e.plan_id.as_deref() == Some(plan_id)
        && lock_seq == e.seq + 1)
}

/// The windows a run of this plan enforces: a release's or a migration's steps start only
/// inside their sites' maintenance windows (a migration's steps belong to its target database's
/// site). Back-out and runbook plans are how a site is rescued at any hour, so they are not held
/// (their steps are recorded with their times like any other).
fn windows(
    kind: &crate::plan::SavedPlanKind,
    inv: &crate::model::Inventory,
    choice: WindowChoice<'_>,
) -> crate::executor::Windows {
    let sites = match kind {
        crate::plan::SavedPlanKind::Release | crate::plan::SavedPlanKind::Migration => inv
            .sites
            .iter()
            .filter_map(|s| Some((s.id.clone(), s.maintenance_window.clone()?)))
            .collect(),
        _ => BTreeMap::new(),
    };
    let clock = choice
        .clock
        .cloned()
        .unwrap_or_else(|| Arc::new(crate::executor::SystemClock));
    crate::executor::Windows::new(
        sites,
        choice.override_reason.map(str::to_owned),
        choice.wait,
        clock,
    )
}

/// Renews the lock lease every third of it; losing the lock stops the apply at a safe point.
fn spawn_renewal(
    lock: Arc<Mutex<Box<dyn HeldLock>>>,
    cancel: watch::Sender<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let period = lock.lock().expect("lock mutex").lease() / 3;
        loop {
            tokio::time::sleep(period).await;
            let l = lock.clone();
            let r =
                tokio::task::spawn_blocking(move || l.lock().expect("lock mutex").renew()).await;
            if let Ok(Err(e)) = r {
                tracing::error!("{e}; stopping at the next safe point");
                let _ = cancel.send(true);
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, event: Event, plan: &str) -> crate::ledger::Entry {
        NewEntry::new("t", event)
            .plan(plan)
            .seal(seq, String::new())
    }

    /// The plan's observation stands only when nothing but its own record came between the
    /// observation's start and this run's lock.
    #[test]
    fn a_plan_observation_stands_only_while_the_ledger_was_quiet() {
        let old = entry(1, Event::LockReleased, "p0");
        let mine = entry(2, Event::PlanCreated, "p1");
        assert!(quiet_since(&[old.clone(), mine.clone()], Some(1), "p1", 3));
        assert!(quiet_since(std::slice::from_ref(&mine), None, "p1", 3));
        // Another run's entry after the observation started, before or after the record.
        let other = entry(3, Event::LockTaken, "p9");
        assert!(!quiet_since(
            &[old.clone(), mine.clone(), other],
            Some(1),
            "p1",
            4
        ));
        let before = entry(2, Event::StepSucceeded, "p9");
        let mine_late = entry(3, Event::PlanCreated, "p1");
        assert!(!quiet_since(
            &[old.clone(), before, mine_late],
            Some(1),
            "p1",
            4
        ));
        // Something appended after the ledger was read, before the lock.
        assert!(!quiet_since(&[old.clone(), mine.clone()], Some(1), "p1", 4));
        // Another plan's record.
        assert!(!quiet_since(&[old, mine], Some(1), "p2", 3));
    }
}

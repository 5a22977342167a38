//! `ferry apply`: staleness checks, the lock, the executor, and what to do next.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use super::output::{ApplyReport, ApplyStepReport, JSON_VERSION, OutputFormat};
use super::{CliError, Ctx};
use crate::drivers::Drivers;
use crate::executor::{ApplyOutcome, Executor, PriorRun, StepStatus, prior_run};
use crate::ledger::LedgerError;
use crate::ledger::{Event, NewEntry, Outcome};
use crate::lock::{Acquired, ApplyLock, Fence};
use crate::plan::SavedPlan;
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
}

impl Options<'_> {
    /// A plan ferry just made and recorded itself (demo, back-out, runbook).
    pub fn fresh(confirm: &[String]) -> Options<'_> {
        Options {
            resume: false,
            lease: Duration::from_secs(30),
            confirm,
            trust_plan_file: false,
        }
    }
}

pub async fn apply_cmd(ctx: &Ctx, plan_path: &Path, opts: Options<'_>) -> Result<u8, CliError> {
    let r = apply_plan(ctx, plan_path, opts).await?;
    print_apply(ctx, &r, plan_path);
    Ok(r.code)
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
    }
}

pub async fn apply_plan(
    ctx: &Ctx,
    plan_path: &Path,
    opts: Options<'_>,
) -> Result<ApplyResult, CliError> {
    let Options {
        resume,
        lease,
        confirm,
        trust_plan_file,
    } = opts;
    let (plan, plan_sha256) = workspace::read_plan_with_digest(plan_path)?;
    // A manual step is confirmed by its step id, or (runbooks) by its runbook step name.
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
                return Err(CliError::Refused(format!(
                    "--confirm {c}: step {} is not a manual step of plan {}",
                    s.id, plan.id
                )));
            }
            None => {
                return Err(CliError::Refused(format!(
                    "--confirm {c}: plan {} has no step {c}",
                    plan.id
                )));
            }
        }
    }
    let confirm = confirmed.as_slice();
    // Nothing is acted on (or recorded) on a ledger whose chain does not verify (exit 7), and
    // the plan must be the one this ledger recorded, byte for byte (exit 3).
    let entries = ctx.ledger.read_verified()?;
    let trusted = check_seal(
        &entries,
        &plan,
        &plan_sha256,
        plan_path,
        trust_plan_file.then_some(ctx.actor.as_str()),
    )?;
    let changed = workspace::changed_inputs(&plan.inputs);
    if !changed.is_empty() {
        return Err(CliError::Stale(changed));
    }
    // The body is acted on, so it must be what the inputs produce (not only the inputs
    // unchanged): an edited plan cannot drop a gate or change a step.
    let edited = workspace::body_problems(&plan)?;
    if !edited.is_empty() {
        return Err(CliError::Stale(
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
    let (lock, _) = ctx
        .ledger
        .append_after(|| take_lock(ctx, &plan.id, lease))?;
    let fence = lock.fence();
    let run_ctx = Ctx {
        output: ctx.output,
        markdown: ctx.markdown,
        state_dir: ctx.state_dir.clone(),
        ledger: ctx.ledger.fenced(fence.clone()),
        actor: ctx.actor.clone(),
    };
    let lock = Arc::new(Mutex::new(lock));
    let result = match trusted.map(|e| run_ctx.ledger.append(e)).transpose() {
        Err(e) => Err(e.into()),
        Ok(_) => preflight(&run_ctx, &plan, plan_path, resume),
    };
    let result = match result {
        Ok(Some(prior)) => run_locked(&run_ctx, plan, &prior, lock.clone(), confirm, fence).await,
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
    let released = run_ctx
        .ledger
        .append(NewEntry::new(&ctx.actor, Event::LockReleased).plan(&plan_id));
    match released {
        Ok(_) => {
            guard.release()?;
            result
        }
        Err(LedgerError::Fenced(lost)) => {
            let _ = guard.release();
            record_lock_lost(ctx, &plan_id, &lost, &result);
            match result {
                Err(e) => Err(e),
                Ok(_) => Err(CliError::Ledger(LedgerError::Fenced(lost))),
            }
        }
        Err(e) => Err(e.into()),
    }
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
) -> Result<Option<NewEntry>, CliError> {
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
        (Some((seq, d, actor)), _) => Err(CliError::Stale(vec![format!(
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
        (None, None) => Err(CliError::Stale(vec![format!(
            "plan {} ({}) was not made with this state directory: its ledger never recorded it, so its bytes cannot be checked; apply it from the state directory that made it, or pass --trust-plan-file (recorded)",
            plan.id,
            plan_path.display()
        )])),
    }
}

/// Takes the apply lock and says how, as the entry to record with it.
fn take_lock(ctx: &Ctx, plan_id: &str, lease: Duration) -> Result<(ApplyLock, NewEntry), CliError> {
    let (lock, how) = ApplyLock::acquire(&ctx.state_dir, &ctx.actor, plan_id, lease)?;
    let holder = serde_json::to_value(lock.holder()).expect("holder serializes");
    let entry = match how {
        Acquired::Fresh => NewEntry::new(&ctx.actor, Event::LockTaken)
            .plan(plan_id)
            .detail(holder),
        Acquired::TakenOver { previous, reason } => NewEntry::new(&ctx.actor, Event::LockBroken)
            .plan(plan_id)
            .message(format!("took over the apply lock of {previous}: {reason}"))
            .detail(
                serde_json::json!({ "previous": previous, "reason": reason, "holder": holder }),
            ),
    };
    Ok((lock, entry))
}

/// A run that found it lost the lock records that, and only that: what it was doing and who
/// holds the lock now. Its last driver action may have finished after the takeover; the entry
/// says so, so an auditor and the new holder's next plan see it.
fn record_lock_lost(
    ctx: &Ctx,
    plan_id: &str,
    lost: &crate::lock::LockError,
    result: &Result<ApplyResult, CliError>,
) {
    let stopped = match result {
        Err(e) => e.to_string(),
        Ok(r) => format!("{:?}", r.outcome),
    };
    let _ = ctx.ledger.append(
        NewEntry::new(&ctx.actor, Event::LockLost)
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
    ctx: &Ctx,
    plan: &SavedPlan,
    plan_path: &Path,
    resume: bool,
) -> Result<Option<PriorRun>, CliError> {
    let prior = prior_run(&ctx.ledger.read_verified()?, &plan.id);
    if prior.started && !resume {
        return Err(CliError::Refused(format!(
            "plan {} was already applied (or partly applied) from this state directory; to finish an interrupted or halted run: ferry apply --resume {}",
            plan.id,
            plan_path.display()
        )));
    }
    match prior.finished {
        Some(Outcome::Ok) => Ok(None),
        Some(Outcome::BackedOut) => Err(CliError::Refused(format!(
            "plan {} was backed out; make a new plan",
            plan.id
        ))),
        _ => Ok(Some(prior)),
    }
}

async fn run_locked(
    ctx: &Ctx,
    plan: SavedPlan,
    prior: &PriorRun,
    lock: Arc<Mutex<ApplyLock>>,
    confirm: &[String],
    fence: Fence,
) -> Result<ApplyResult, CliError> {
    let inv = workspace::plan_inventory(&plan)?;
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let renew = spawn_renewal(lock, cancel_tx.clone());
    let signals = spawn_signals(cancel_tx);
    let result = apply_locked(ctx, plan, &inv, prior, cancel_rx, confirm, fence).await;
    renew.abort();
    signals.abort();
    let _ = renew.await;
    result
}

async fn apply_locked(
    ctx: &Ctx,
    plan: SavedPlan,
    inv: &crate::load::Loaded<crate::model::Inventory>,
    prior: &PriorRun,
    cancel: watch::Receiver<bool>,
    confirm: &[String],
    fence: Fence,
) -> Result<ApplyResult, CliError> {
    let base = workspace::base_dir(&inv.source.path);
    let drivers = Drivers::standard();
    let mut specs = BTreeMap::new();
    let targets = plan.body.targets.iter().map(|t| &t.target);
    for mut spec in workspace::target_specs(&inv.value, &base, targets, true)? {
        spec.fence = Some(fence.clone());
        specs.insert(spec.target.id.clone(), spec);
    }
    let list: Vec<_> = specs.values().cloned().collect();
    let observed = workspace::observe_all(&drivers, &list).await?;
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
    stale.extend(workspace::changed_images(&drivers, &specs, &plan).await);
    if !stale.is_empty() {
        return Err(CliError::Stale(stale));
    }
    let bundles = workspace::bundles(&plan, &inv.value, &base)?;
    let todo = plan
        .body
        .steps
        .iter()
        .filter(|s| !prior.done.contains(&s.id))
        .count() as u64;
    let progress = if ctx.output == OutputFormat::Human {
        let pb = ProgressBar::with_draw_target(Some(todo), ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed}")
                .expect("valid template"),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let exec = Executor {
        approvers: inv.value.approvers.clone(),
        plan: Arc::new(plan.clone()),
        specs,
        bundles,
        drivers,
        ledger: ctx.ledger.clone(),
        actor: ctx.actor.clone(),
        progress: progress.clone(),
        cancel,
        ops: crate::drivers::standard_ops(&inv.value, &base),
        confirmed: confirm.iter().cloned().collect(),
    };
    let (outcome, status) = exec.run(prior).await?;
    progress.finish_and_clear();
    let code = outcome_code(&outcome);
    Ok(ApplyResult {
        plan,
        outcome,
        status,
        code,
    })
}

/// Renews the lock lease every third of it; losing the lock stops the apply at a safe point.
fn spawn_renewal(
    lock: Arc<Mutex<ApplyLock>>,
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

/// First Ctrl-C (or SIGTERM): stop at the next safe point. Second: exit now.
fn spawn_signals(cancel: watch::Sender<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        wait_signal(&mut term).await;
        // Stop first, then say so: the message means no new step will start.
        let _ = cancel.send(true);
        eprintln!(
            "ferry: stopping at the next safe point (steps in flight finish); press Ctrl-C again to exit at once"
        );
        wait_signal(&mut term).await;
        eprintln!(
            "ferry: exiting now; the ledger holds every completed step: resume with `ferry apply --resume PLAN`"
        );
        std::process::exit(i32::from(exit::INTERRUPTED));
    })
}

async fn wait_signal(term: &mut Option<tokio::signal::unix::Signal>) {
    match term {
        Some(t) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = t.recv() => {}
            }
        }
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

pub fn print_apply(ctx: &Ctx, r: &ApplyResult, plan_path: &Path) {
    let head = ctx.ledger.verify().ok().and_then(|v| v.head);
    match ctx.output {
        OutputFormat::Human => {
            let n = |s: StepStatus| r.status.values().filter(|x| **x == s).count();
            let name = &r.plan.body.name;
            let p = plan_path.display();
            match &r.outcome {
                ApplyOutcome::Completed if r.status.is_empty() => {
                    println!("Plan `{name}` ({}): no changes to apply.", r.plan.id)
                }
                ApplyOutcome::Completed => println!(
                    "Plan `{name}` ({}) completed: {} step(s) succeeded, {} already done.",
                    r.plan.id,
                    n(StepStatus::Succeeded),
                    n(StepStatus::AlreadyDone)
                ),
                ApplyOutcome::CompletedWithFailures { failed } => println!(
                    "Plan `{name}` ({}) finished with failures within tolerance: failed {}.\nRetry the failed steps with: ferry apply --resume {p}",
                    r.plan.id,
                    failed.join(", ")
                ),
                ApplyOutcome::Halted { failed, pending } => println!(
                    "Plan `{name}` ({}) HALTED: failed {}; {} step(s) not done.\nResume with: ferry apply --resume {p}\nOr back out a site with: ferry backout -i INVENTORY --app APP --site SITE",
                    r.plan.id,
                    failed.join(", "),
                    pending.len()
                ),
                ApplyOutcome::BackedOut {
                    failed,
                    undone,
                    undo_failed,
                } => {
                    println!(
                        "Plan `{name}` ({}) BACKED OUT: failed {}; undone {}.",
                        r.plan.id,
                        failed.join(", "),
                        if undone.is_empty() {
                            "nothing else".into()
                        } else {
                            undone.join(", ")
                        }
                    );
                    if !undo_failed.is_empty() {
                        println!(
                            "UNDO FAILED for {}: these targets need attention; see `ferry ledger show --plan {}`",
                            undo_failed.join(", "),
                            r.plan.id
                        );
                    }
                }
                ApplyOutcome::Interrupted { pending } => println!(
                    "Plan `{name}` ({}) interrupted at a safe point; {} step(s) left.\nResume with: ferry apply --resume {p}",
                    r.plan.id,
                    pending.len()
                ),
                ApplyOutcome::AwaitingConfirmation {
                    step,
                    title,
                    instructions,
                    pending,
                } => {
                    // Runbook steps are confirmed by their runbook name.
                    let handle = match r.plan.body.kind {
                        crate::plan::SavedPlanKind::Runbook => r
                            .plan
                            .step(step)
                            .and_then(|s| r.plan.body.waves.get(s.wave))
                            .map_or(step.as_str(), |w| w.name.as_str()),
                        _ => step.as_str(),
                    };
                    println!(
                        "Plan `{name}` ({}) stopped before manual step `{handle}` ({title}); {} step(s) left.\n{}\nWhen that is done, continue with: ferry apply --resume {p} --confirm {handle}",
                        r.plan.id,
                        pending.len(),
                        instructions.trim_end()
                    )
                }
                ApplyOutcome::AwaitingApproval {
                    gate,
                    role,
                    pending,
                } => println!(
                    "Plan `{name}` ({}) stopped at gate `{gate}`: it needs an approval by role `{role}`; {} step(s) left.\nApprove with: ferry approve {p} --gate {gate} --as NAME\nThen resume with: ferry apply --resume {p}",
                    r.plan.id,
                    pending.len()
                ),
            }
            println!(
                "Ledger: {} (head {})",
                ctx.ledger.path().display(),
                head.as_deref().unwrap_or("-")
            );
        }
        OutputFormat::Json => {
            let steps = r
                .plan
                .body
                .steps
                .iter()
                .map(|s| ApplyStepReport {
                    id: &s.id,
                    target: &s.target.id,
                    from: s.from.as_deref(),
                    to: &s.to,
                    status: r.status.get(&s.id).copied().unwrap_or(StepStatus::Pending),
                })
                .collect();
            let report = ApplyReport {
                format: "ferry.apply-report",
                version: JSON_VERSION,
                plan_id: &r.plan.id,
                exit_code: r.code,
                outcome: &r.outcome,
                steps,
                ledger: ctx.ledger.path().display().to_string(),
                ledger_head: head,
            };
            println!(
                "{}",
                serde_json::to_string(&report).expect("reports serialize")
            );
        }
    }
}

//! `ferry apply`: staleness checks, the lock, the executor, and what to do next.

use std::path::Path;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use super::output::{ApplyReport, ApplyStepReport, JSON_VERSION, OutputFormat};
use super::{CliError, Ctx};
use crate::executor::{ApplyOutcome, Progress, StepStatus};
use crate::exit;

pub use crate::engine::apply::{ApplyResult, Options, outcome_code};

pub async fn apply_cmd(ctx: &Ctx, plan_path: &Path, opts: Options<'_>) -> Result<u8, CliError> {
    let r = apply_plan(ctx, plan_path, opts).await?;
    print_apply(ctx, &r, plan_path);
    Ok(r.code)
}

/// The engine's apply with this command line's progress (a bar on a terminal, lines
/// otherwise) and signals (first Ctrl-C or SIGTERM: stop at the next safe point; second: exit).
pub async fn apply_plan(
    ctx: &Ctx,
    plan_path: &Path,
    opts: Options<'_>,
) -> Result<ApplyResult, CliError> {
    let progress: Arc<dyn Progress> = if ctx.output == OutputFormat::Human {
        Arc::new(Bar::new())
    } else {
        Arc::new(Lines)
    };
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let signals = spawn_signals(cancel_tx);
    let result =
        crate::engine::apply::apply(&ctx.state(), plan_path, opts, progress, cancel_rx).await;
    signals.abort();
    result
}

/// Progress as plain lines on stderr (non-interactive runs, `--output json`).
#[derive(Debug, Default)]
pub struct Lines;

impl Progress for Lines {
    fn line(&self, line: &str) {
        eprintln!("{line}");
    }
}

/// Progress on a terminal: a bar of steps, with the executor's lines printed above it.
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Self {
        let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed}")
                .expect("valid template"),
        );
        Self(pb)
    }
}

impl Progress for Bar {
    fn start(&self, steps: u64) {
        self.0.set_length(steps);
    }
    fn line(&self, line: &str) {
        if self.0.is_hidden() {
            eprintln!("{line}");
        } else {
            self.0.println(line);
        }
    }
    fn step_done(&self) {
        self.0.inc(1);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
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

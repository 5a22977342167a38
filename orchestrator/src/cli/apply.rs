//! `ferry apply`: the engine's apply with this terminal's progress and signals.

use std::path::Path;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use super::output::OutputFormat;
use super::{CliError, Ctx};
use crate::executor::Progress;
use crate::exit;

pub use crate::engine::apply::{ApplyResult, Options, outcome_code};

pub async fn apply_cmd(ctx: &Ctx, plan_path: &Path, opts: Options<'_>) -> Result<u8, CliError> {
    let checkpoints = checkpointer().map(Arc::new);
    let during = checkpoints
        .clone()
        .map(|c| spawn_checkpoints(ctx.state(), c));
    let r = apply_plan(ctx, plan_path, opts).await;
    if let Some(task) = during {
        task.abort();
        let _ = task.await;
    }
    let r = r?;
    print_apply(ctx, &r, plan_path);
    if let Some(c) = checkpoints
        && r.plan.has_changes()
    {
        say_checkpoint(c.make(&ctx.state()));
    }
    Ok(r.code)
}

/// `ferry apply --auto-approve`: `ferry plan` (the saved plan written to `out` and recorded,
/// printed on a terminal), then `ferry apply` of that file through the same drivers, so each
/// endpoint is connected to once; when no other run appended to the ledger in between, the
/// plan's observation serves as the stale check (the targets are observed once). A plan
/// without changes applies as done (and says so).
pub async fn plan_and_apply(
    ctx: &Ctx,
    inventory: &Path,
    plan_path: &Path,
    out: &Path,
    opts: Options<'_>,
) -> Result<u8, CliError> {
    let drivers = crate::drivers::Drivers::standard();
    let human = ctx.output == OutputFormat::Human;
    let head = ctx.state().ledger.read_verified()?.last().map(|e| e.seq);
    super::plan_cmd::plan_with(ctx, inventory, plan_path, out, &drivers, human).await?;
    let opts = Options {
        drivers: Some(&drivers),
        observed_after: Some(head),
        ..opts
    };
    apply_cmd(ctx, out, opts).await
}

/// With `FERRY_CHECKPOINT_KEY` (a secret reference to a `ferry keygen` key), every apply ends
/// with a signed checkpoint of the ledger's head, also appended to `FERRY_CHECKPOINT_FILE`
/// when set; with `FERRY_CHECKPOINT_EVERY=N`, also one each time the apply has appended N
/// entries. A checkpoint that cannot be made is said on stderr; the apply's outcome stands.
fn checkpointer() -> Option<crate::engine::audit::Checkpointer> {
    let reference = std::env::var("FERRY_CHECKPOINT_KEY").ok()?;
    let out = std::env::var_os("FERRY_CHECKPOINT_FILE").map(std::path::PathBuf::from);
    let every = std::env::var("FERRY_CHECKPOINT_EVERY")
        .ok()
        .and_then(|n| n.parse().ok());
    match super::ledger_cmd::checkpoint_key(&reference) {
        Ok(key) => Some(crate::engine::audit::Checkpointer::new(key, out, every)),
        Err(e) => {
            eprintln!("warning: no checkpoints for this apply: {e}");
            None
        }
    }
}

/// Checks twice a second whether the apply has appended enough entries for a checkpoint.
fn spawn_checkpoints(
    state: crate::engine::State,
    c: Arc<crate::engine::audit::Checkpointer>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            if c.due(&state.ledger) {
                let (c, state) = (c.clone(), state.clone());
                if let Ok(made) = tokio::task::spawn_blocking(move || c.make(&state)).await {
                    say_checkpoint(made);
                }
            }
        }
    })
}

fn say_checkpoint(made: Result<crate::ledger::checkpoint::SignedCheckpoint, CliError>) {
    match made {
        Ok(c) => eprintln!("checkpoint of ledger entry {} signed", c.payload.seq),
        Err(e) => eprintln!("warning: no checkpoint now: {e}"),
    }
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

/// Progress on a terminal: a bar of steps, with the executor's lines printed above it and,
/// while a migration copies, rows and bytes per table after it.
struct Bar(
    ProgressBar,
    std::sync::Mutex<std::collections::BTreeMap<String, (u64, u64)>>,
);

impl Bar {
    fn new() -> Self {
        let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed} {msg}")
                .expect("valid template"),
        );
        Self(pb, Default::default())
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
        self.0.set_message("");
    }
    fn transfer(&self, what: &str, unit: &str, items: u64, bytes: u64) {
        let mut seen = self.1.lock().expect("transfer counters");
        let t = seen.entry(what.to_owned()).or_default();
        t.0 += items;
        t.1 += bytes;
        let t = *t;
        let all_bytes: u64 = seen.values().map(|t| t.1).sum();
        self.0.set_message(format!(
            "copy: {what} {} {unit} {}; all {}",
            t.0,
            indicatif::HumanBytes(t.1),
            indicatif::HumanBytes(all_bytes)
        ));
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

/// Prints an apply's result with the ledger's location and head.
pub fn print_apply(ctx: &Ctx, r: &ApplyResult, plan_path: &Path) {
    let head = crate::printer::LedgerHead::of(&ctx.ledger);
    ctx.out().applied(r, plan_path, &head);
}

//! The engine as a library: a plan applied without a terminal, progress received as events,
//! the outcome returned as a value, and a cancellation honoured at a safe point.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;

use super::State;
use super::apply::{Options, apply};
use crate::executor::{ApplyOutcome, Recorded, StepStatus};
use crate::ledger::Ledger;

const INV: &str = r#"version: 1
sites:
  - { id: a, tier: sqa, clouds: [l] }
  - { id: b, tier: prod, clouds: [l] }
clouds: [{ id: l, kind: local, local: { root: targets } }]
apps:
  - id: demo
    version: 1.0.0
    artifact: "art/{version}"
    target: local
    sites: [a, b]
    health_check: { command: ["true"], timeout_seconds: 5 }
"#;

const PLAN: &str = "version: 1\nkind: release\nname: r\nreleases: [{ app: demo, version: \"1.0.0\" }]\nwaves: [{ name: canary, sites: [a] }, { name: rest, sites: [b] }]\non_failure: halt\n";

/// Writes the files and plans them through the engine (observe, plan, hash, record), as
/// `ferry plan` does; returns the engine state and the saved plan's path.
pub(crate) async fn planned(dir: &std::path::Path) -> (State, std::path::PathBuf) {
    planned_on(dir, Ledger::new(dir.join(".ferry/ledger.jsonl"))).await
}

/// The same, with the ledger and lock of any state backend.
async fn planned_on(dir: &std::path::Path, ledger: Ledger) -> (State, std::path::PathBuf) {
    planned_with(dir, ledger, INV).await
}

/// The same, with another inventory.
async fn planned_with(
    dir: &std::path::Path,
    ledger: Ledger,
    inventory: &str,
) -> (State, std::path::PathBuf) {
    std::fs::create_dir_all(dir.join("art/1.0.0")).unwrap();
    std::fs::write(dir.join("art/1.0.0/VERSION"), "1.0.0").unwrap();
    std::fs::write(dir.join("inventory.yaml"), inventory).unwrap();
    std::fs::write(dir.join("plan.yaml"), PLAN).unwrap();
    let (inv, plans) =
        crate::workspace::load(&dir.join("inventory.yaml"), &[dir.join("plan.yaml")]).unwrap();
    let state = State {
        state_dir: dir.join(".ferry"),
        ledger,
        actor: "tester".into(),
    };
    let saved = super::plan::make(&state, &inv, &plans[0], &Recorded::default())
        .await
        .unwrap();
    assert_eq!(saved.body.steps.len(), 2);
    let path = dir.join("plan.json");
    crate::workspace::write_plan(&path, &saved).unwrap();
    super::plan::record_created(&state, &saved, &path).unwrap();
    (state, path)
}

/// Applies the saved plan at `path` through the engine, cancelled from the start or never.
async fn run(
    state: &State,
    path: &std::path::Path,
    opts: Options<'_>,
    progress: Arc<Recorded>,
    cancelled: bool,
) -> super::apply::ApplyResult {
    let (_tx, cancel) = watch::channel(cancelled);
    apply(state, path, opts, progress, cancel).await.unwrap()
}

#[tokio::test]
async fn a_plan_is_applied_as_a_library_call_with_progress_as_events() {
    let dir = tempfile::tempdir().unwrap();
    let (state, path) = planned(dir.path()).await;
    let progress = Arc::new(Recorded::default());
    let r = run(&state, &path, Options::fresh(&[]), progress.clone(), false).await;
    assert_eq!(r.outcome, ApplyOutcome::Completed);
    assert_eq!(r.code, crate::exit::OK);
    assert!(r.status.values().all(|s| *s == StepStatus::Succeeded));
    assert_eq!(progress.steps_done.load(Ordering::SeqCst), 2);
    let lines = progress.lines.lock().unwrap().join("\n");
    assert!(lines.contains("wave 1 `canary`"), "{lines}");
    assert!(
        lines.contains("ok      a/l/demo (none) -> 1.0.0"),
        "{lines}"
    );
    assert!(state.ledger.verify().unwrap().tamper.is_none());
}

#[tokio::test]
async fn a_cancelled_run_stops_at_a_safe_point_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (state, path) = planned(dir.path()).await;
    let r = run(&state, &path, Options::fresh(&[]), Arc::default(), true).await;
    assert!(
        matches!(r.outcome, ApplyOutcome::Interrupted { .. }),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.code, crate::exit::INTERRUPTED);
    let mut opts = Options::fresh(&[]);
    opts.resume = true;
    let r = run(&state, &path, opts, Arc::default(), false).await;
    assert_eq!(r.outcome, ApplyOutcome::Completed);
}

/// The state seam: a backend written only for this test (in memory) carries a whole plan and
/// apply, with the executor and the engine unchanged; nothing is written to a state directory.
#[tokio::test]
async fn another_state_backend_carries_a_whole_apply() {
    let dir = tempfile::tempdir().unwrap();
    let memory = crate::state::memory_tests::Memory::default();
    let ledger = Ledger::with_backend(Arc::new(memory));
    let (state, path) = planned_on(dir.path(), ledger).await;
    let r = run(&state, &path, Options::fresh(&[]), Arc::default(), false).await;
    assert_eq!(r.outcome, ApplyOutcome::Completed);
    let events: Vec<String> = state
        .ledger
        .read_verified()
        .unwrap()
        .iter()
        .map(|e| e.event.as_str().to_owned())
        .collect();
    assert_eq!(events.first().map(String::as_str), Some("plan_created"));
    assert_eq!(events[1], "lock_taken");
    assert_eq!(events.last().map(String::as_str), Some("lock_released"));
    assert_eq!(events.iter().filter(|e| *e == "step_succeeded").count(), 2);
    assert!(!dir.path().join(".ferry/ledger.jsonl").exists());
    assert!(!dir.path().join(".ferry/apply.lock").exists());
}

use crate::executor::FakeClock;

/// `--wait`: a release whose canary site's window is closed waits for it to open (by the
/// run's clock), says so, then runs; the other site, without a window, is not held.
#[tokio::test]
async fn a_run_that_may_wait_starts_the_sites_steps_when_its_window_opens() {
    let dir = tempfile::tempdir().unwrap();
    let inv = INV.replace(
        "  - { id: a, tier: sqa, clouds: [l] }",
        "  - { id: a, tier: sqa, clouds: [l], maintenance_window: { days: [sat], start: \"22:00\", duration_minutes: 240, timezone: America/Chicago } }",
    );
    let ledger = Ledger::new(dir.path().join(".ferry/ledger.jsonl"));
    let (state, path) = planned_with(dir.path(), ledger, &inv).await;
    // Tuesday 2026-12-01 20:00 UTC; the window opens Saturday 22:00 CST = Sunday 04:00 UTC.
    let tuesday = chrono::DateTime::parse_from_rfc3339("2026-12-01T20:00:00Z").unwrap();
    let clock: Arc<dyn crate::executor::Clock> =
        Arc::new(FakeClock(std::sync::Mutex::new(tuesday.into())));
    let progress = Arc::new(Recorded::default());
    let mut opts = Options::fresh(&[]);
    opts.window.wait = true;
    opts.window.clock = Some(&clock);
    let r = run(&state, &path, opts, progress.clone(), false).await;
    assert_eq!(r.outcome, ApplyOutcome::Completed);
    let lines = progress.lines.lock().unwrap().join("\n");
    assert!(
        lines.contains("waiting a: maintenance window opens 2026-12-06 04:00 UTC (Sat 22:00 CST)"),
        "{lines}"
    );
    assert!(clock.now() >= chrono::DateTime::parse_from_rfc3339("2026-12-06T04:00:00Z").unwrap());
    // Without --wait the same plan stops (exit 9) and says when: made again, applied anew.
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::new(dir.path().join(".ferry/ledger.jsonl"));
    let (state, path) = planned_with(dir.path(), ledger, &inv).await;
    let mut opts = Options::fresh(&[]);
    let late: Arc<dyn crate::executor::Clock> =
        Arc::new(FakeClock(std::sync::Mutex::new(tuesday.into())));
    opts.window.clock = Some(&late);
    let r = run(&state, &path, opts, Arc::default(), false).await;
    assert_eq!(r.code, crate::exit::OUTSIDE_WINDOW);
    match r.outcome {
        ApplyOutcome::OutsideWindow { sites, pending } => {
            assert_eq!(sites[0].site, "a");
            assert_eq!(sites[0].opens_at, "2026-12-06T04:00:00+00:00");
            assert_eq!(
                pending.len(),
                2,
                "the canary is held, the next wave not started"
            );
        }
        other => panic!("{other:?}"),
    }
}

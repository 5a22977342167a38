//! Condition gates, calls and records on the fake driver, with command probes (real processes)
//! and a clock whose sleeps pass at once: a wait of days is a test of milliseconds.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::*;
use crate::executor::FakeClock;

const INV2: &str = r#"version: 1
sites:
  - { id: s1, tier: sqa, clouds: [l] }
  - { id: s2, tier: prod, clouds: [l] }
clouds: [{ id: l, kind: local, local: { root: r } }]
apps:
  - { id: app, version: "1", artifact: x, target: local, sites: [s1, s2], health_check: { command: [t] } }
"#;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-03T10:00:00Z")
        .unwrap()
        .into()
}

/// A probe command that prints the lines of `values` one per poll (the last one forever after).
fn sequence(dir: &std::path::Path, name: &str, values: &[&str]) -> String {
    std::fs::write(dir.join(name), values.join("\n") + "\n").unwrap();
    format!(
        "[sh, -c, 'v=$(head -n 1 {name}); n=$(wc -l < {name}); if [ \"$n\" -gt 1 ]; then tail -n +2 {name} > {name}.t && mv {name}.t {name}; fi; echo \"$v\"']"
    )
}

fn gate_plan(probe: &str, extra: &str, on_timeout: &str) -> String {
    format!(
        r#"version: 1
kind: release
name: r
releases: [{{app: app, version: '2'}}]
on_failure: halt
waves:
  - name: one
    sites: [s1]
  - name: two
    sites: [s2]
    before:
      - name: drain
        wait_until:
          command: {probe}
          equals: 0
          every: 1m
          deadline: 1h
          on_timeout: {on_timeout}
          {extra}
"#
    )
}

/// A fixture whose plan has a gate; `probe` is written into the plan after the files exist.
fn gate_fixture(values: &[&str], extra: &str, on_timeout: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let probe = sequence(dir.path(), "values", values);
    let mut f = fixture_from(INV2, &gate_plan(&probe, extra, on_timeout), 0);
    // Probes run in the fixture's directory: move the value file there.
    std::fs::copy(dir.path().join("values"), f._dir.path().join("values")).unwrap();
    f.windows = Windows::new(
        Default::default(),
        None,
        false,
        Arc::new(FakeClock(std::sync::Mutex::new(t0()))),
    );
    f
}

impl Fixture {
    async fn run_with(
        &self,
        wait: bool,
        at: DateTime<Utc>,
    ) -> (ApplyOutcome, BTreeMap<String, StepStatus>) {
        let prior = prior_run(&self.ledger.read_all().unwrap(), &self.plan.id);
        let (_tx, rx) = watch::channel(false);
        let mut exec = self.executor(rx);
        exec.wait_conditions = wait;
        exec.windows = Windows::new(
            Default::default(),
            None,
            wait,
            Arc::new(FakeClock(std::sync::Mutex::new(at))),
        );
        exec.run(&prior).await.unwrap()
    }

    fn events(&self, event: Event) -> Vec<crate::ledger::Entry> {
        self.ledger
            .read_all()
            .unwrap()
            .into_iter()
            .filter(|e| e.event == event)
            .collect()
    }
}

/// A drain that needs several polls passes under `--wait`; the ledger keeps the first
/// evaluation and each change, not every poll; the wave's release runs after it.
#[tokio::test]
async fn a_drain_passes_after_several_polls_recorded_by_change_only() {
    let f = gate_fixture(&["7", "7", "7", "7", "3", "3", "0"], "", "halt");
    let (outcome, status) = f.run_with(true, t0()).await;
    assert_eq!(outcome, ApplyOutcome::Completed, "{status:?}");
    assert_eq!(f.current("s2").as_deref(), Some("2"));
    let evals = f.events(Event::ConditionEvaluated);
    let values: Vec<String> = evals
        .iter()
        .map(|e| crate::gate::text(&e.detail.as_ref().unwrap()["clock"]["last_value"]))
        .collect();
    assert_eq!(values, ["7", "3", "0"], "7 polls, 3 entries");
    let passed = &evals[2].detail.as_ref().unwrap()["clock"];
    assert_eq!(passed["polls"], 7);
    // The release of wave two started after the gate passed.
    let entries = f.ledger.read_all().unwrap();
    let gate_ok = entries
        .iter()
        .position(|e| e.event == Event::StepSucceeded && e.to.as_deref() == Some("wait_until"))
        .unwrap();
    let s2_start = entries
        .iter()
        .position(|e| {
            e.event == Event::StepStarted
                && e.site.as_deref() == Some("s2")
                && e.to.as_deref() == Some("2")
        })
        .unwrap();
    assert!(gate_ok < s2_start);
}

/// Without `--wait` a gate that does not hold stops the run (exit 10's outcome) with its last
/// value recorded; a resume hours later counts the deadline from the first evaluation.
#[tokio::test]
async fn a_waiting_gate_stops_and_resumes_with_its_clock() {
    let f = gate_fixture(&["4", "4", "0"], "", "halt");
    let (outcome, status) = f.run_with(false, t0()).await;
    let ApplyOutcome::AwaitingCondition { gates, pending } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(gates[0].name, "drain");
    assert_eq!(gates[0].value, serde_json::json!(4));
    assert_eq!(gates[0].deadline_at, "2026-11-03T11:00:00+00:00");
    assert!(pending.contains(&"s003".to_owned()), "{pending:?}");
    assert_eq!(status["s002"], StepStatus::Waiting);
    assert_eq!(
        status["s003"],
        StepStatus::Held,
        "the release waits with its gate"
    );
    assert_eq!(f.current("s2").as_deref(), Some("1"));
    assert_eq!(f.events(Event::ConditionWaiting).len(), 1);

    // 20 minutes later: still 4, one more poll, the same first evaluation.
    let (outcome, _) = f
        .run_with(false, t0() + chrono::Duration::minutes(20))
        .await;
    let ApplyOutcome::AwaitingCondition { gates, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(gates[0].polls, 2);
    assert_eq!(gates[0].waiting_since, "2026-11-03T10:00:00+00:00");

    // 40 minutes in: 0, the gate passes and the release runs.
    let (outcome, _) = f
        .run_with(false, t0() + chrono::Duration::minutes(40))
        .await;
    assert_eq!(outcome, ApplyOutcome::Completed);
    assert_eq!(f.current("s2").as_deref(), Some("2"));
}

/// A deadline passed on resume halts with the last value recorded, whatever the plan's
/// `on_failure`; nothing after the gate ran.
#[tokio::test]
async fn a_deadline_passed_halts_with_the_last_value() {
    let f = gate_fixture(&["5"], "", "halt");
    let (outcome, _) = f.run_with(false, t0()).await;
    assert!(matches!(outcome, ApplyOutcome::AwaitingCondition { .. }));
    let (outcome, status) = f.run_with(false, t0() + chrono::Duration::hours(2)).await;
    let ApplyOutcome::Halted { failed, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(failed, &["s002".to_owned()]);
    assert_eq!(status["s003"], StepStatus::Pending, "never started");
    let failed = f.events(Event::StepFailed);
    let msg = failed[0].message.as_deref().unwrap();
    assert!(msg.contains("deadline passed: drain = 5"), "{msg}");
    assert_eq!(failed[0].detail.as_ref().unwrap()["clock"]["last_value"], 5);
}

/// `on_timeout: backout` undoes the completed steps of earlier waves.
#[tokio::test]
async fn a_deadline_passed_under_backout_undoes_the_earlier_waves() {
    let f = gate_fixture(&["5"], "", "backout");
    let (outcome, _) = f.run_with(true, t0()).await;
    let ApplyOutcome::BackedOut { failed, undone, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(failed, &["s002".to_owned()]);
    assert!(undone.contains(&"s001".to_owned()), "{undone:?}");
    assert_eq!(f.current("s1").as_deref(), Some("1"));
}

/// `stable_for`: a value that flaps back restarts the stable time; the gate passes only once
/// it held at every poll for the whole span.
#[tokio::test]
async fn stable_for_is_not_met_while_the_value_flaps() {
    let f = gate_fixture(
        &["0", "0", "1", "0", "0", "1", "0", "0", "0", "0"],
        "stable_for: 3m",
        "halt",
    );
    let (outcome, _) = f.run_with(true, t0()).await;
    assert_eq!(outcome, ApplyOutcome::Completed);
    let passed = f
        .events(Event::StepSucceeded)
        .into_iter()
        .find(|e| e.to.as_deref() == Some("wait_until"))
        .unwrap();
    let clock = &passed.detail.as_ref().unwrap()["clock"];
    assert_eq!(
        clock["polls"], 10,
        "the last flap was at poll 6; 3 min stable at poll 10"
    );
    assert_eq!(clock["holding_since"], "2026-11-03T10:06:00Z");
}

/// A probe that fails (here: a command that exits 1) never passes the gate: fails closed,
/// with the error recorded as the value.
#[tokio::test]
async fn a_failing_probe_never_passes() {
    let plan = gate_plan("[sh, -c, 'echo boom >&2; exit 1']", "", "halt");
    let f = fixture_from(INV2, &plan, 0);
    let (outcome, _) = f.run_with(false, t0()).await;
    let ApplyOutcome::AwaitingCondition { gates, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    let err = gates[0].value["error"].as_str().unwrap();
    assert!(err.contains("exit 1") && err.contains("boom"), "{err}");
}

const HOOKS: &str = r#"version: 1
kind: release
name: r
releases: [{app: app, version: '2'}]
on_failure: backout
waves:
  - name: one
    sites: [s1]
    before:
      - name: queue-before
        record: { command: [sh, -c, 'cat queue'] }
      - name: quiesce
        command: [sh, -c, 'touch quiesced']
        undo: { command: [sh, -c, 'rm quiesced'] }
    after:
      - name: queue-after
        record: { command: [sh, -c, 'cat queue'] }
"#;

/// A quiesce call runs before the release and a record notes a value before and after.
#[tokio::test]
async fn calls_and_records_run_around_the_release() {
    let f = fixture_from(INV2, HOOKS, 0);
    std::fs::write(f._dir.path().join("queue"), "3\n").unwrap();
    let (outcome, _) = f.run_with(false, t0()).await;
    assert_eq!(outcome, ApplyOutcome::Completed);
    assert!(f._dir.path().join("quiesced").exists());
    let records: Vec<String> = f
        .events(Event::StepSucceeded)
        .iter()
        .filter(|e| e.to.as_deref() == Some("record"))
        .map(|e| e.message.clone().unwrap())
        .collect();
    assert_eq!(records, ["queue-before = 3", "queue-after = 3"]);
}

/// A back-out runs a call's undo (the launches resume).
#[tokio::test]
async fn a_back_out_resumes_what_was_quiesced() {
    let f = fixture_from(INV2, HOOKS, 0);
    std::fs::write(f._dir.path().join("queue"), "3\n").unwrap();
    f.fake.fail_health("s1/l/app", "2");
    let (outcome, status) = f.run_with(false, t0()).await;
    assert!(
        matches!(outcome, ApplyOutcome::BackedOut { .. }),
        "{outcome:?}"
    );
    assert!(!f._dir.path().join("quiesced").exists(), "undo ran");
    assert_eq!(status["s002"], StepStatus::BackedOut);
    let undone = f.events(Event::StepBackedOut);
    assert!(
        undone
            .iter()
            .any(|e| e.message.as_deref() == Some("undone: command `sh -c rm quiesced`")),
        "{undone:?}"
    );
}

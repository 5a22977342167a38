//! Executor behaviour on the in-memory fake driver: waves, parallelism, policies, resume.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::*;
use crate::drivers::fake::FakeDriver;
use crate::drivers::{Drivers, ReleaseBundle};
use crate::ledger::Ledger;
use crate::load::{self, SourceFile};
use crate::model::TargetKind;
use crate::plan::{PLAN_FORMAT, PLAN_FORMAT_VERSION, SavedPlan, plan_release, targets_of};
use crate::target::Observed;

const INV: &str = r#"version: 1
sites:
  - { id: s1, tier: sqa, clouds: [l] }
  - { id: s2, tier: prod, clouds: [l] }
  - { id: s3, tier: prod, clouds: [l] }
  - { id: s4, tier: prod, clouds: [l] }
  - { id: s5, tier: prod, clouds: [l] }
clouds: [{ id: l, kind: local, local: { root: r } }]
apps:
  - { id: app, version: "1", artifact: x, target: local, sites: [s1, s2, s3, s4, s5], health_check: { command: [t] } }
"#;

struct Fixture {
    fake: Arc<FakeDriver>,
    rds: Arc<crate::drivers::rds::fake::FakeRds>,
    plan: SavedPlan,
    inv: crate::model::Inventory,
    ledger: Ledger,
    windows: Windows,
    /// `--wait` for condition gates.
    wait: bool,
    _dir: tempfile::TempDir,
}

fn fixture(on_failure: &str, max_parallel: u32, threshold: u32, delay_ms: u64) -> Fixture {
    let plan_yaml = format!(
        "version: 1\nkind: release\nname: r\nreleases: [{{app: app, version: '2'}}]\nwaves:\n  - {{name: canary, sites: [s1]}}\n  - {{name: rest, sites: [s2, s3, s4, s5], max_parallel: {max_parallel}, failure_threshold: {threshold}}}\non_failure: {on_failure}\n"
    );
    fixture_from(INV, &plan_yaml, delay_ms)
}

/// A fake world where every target of the plan runs version 1, and the saved plan for it.
fn fixture_from(inventory: &str, plan_yaml: &str, delay_ms: u64) -> Fixture {
    let inv = load::parse_inventory(SourceFile::new("i.yaml", inventory))
        .unwrap()
        .value;
    let rp = load::parse_release_plan(SourceFile::new("p.yaml", plan_yaml))
        .unwrap()
        .value;
    let fake = Arc::new(FakeDriver::with_delay(Duration::from_millis(delay_ms)));
    let mut observed = BTreeMap::new();
    for t in targets_of(&inv, &rp) {
        let o = Observed {
            current: Some("1".into()),
            releases: vec!["1".into()],
            facts: Default::default(),
            drift: vec![],
        };
        fake.set(&t.id, o.clone());
        observed.insert(t.id, o);
    }
    let body = plan_release(&inv, &rp, &observed).unwrap();
    let plan = SavedPlan {
        format: PLAN_FORMAT.into(),
        format_version: PLAN_FORMAT_VERSION,
        id: "plan-1".into(),
        created_at: "t".into(),
        ferry_version: "test".into(),
        actor: "tester".into(),
        inputs: vec![],
        body,
    };
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::new(dir.path().join("ledger.jsonl"));
    Fixture {
        fake,
        rds: Arc::new(crate::drivers::rds::fake::FakeRds::with_instance(
            "ehr-prod",
        )),
        plan,
        inv,
        ledger,
        windows: Windows::default(),
        wait: false,
        _dir: dir,
    }
}

impl Fixture {
    fn executor(&self, cancel: watch::Receiver<bool>) -> Executor {
        let mut drivers = Drivers::default();
        drivers.insert(TargetKind::Local, self.fake.clone());
        let base = std::path::Path::new(".");
        let specs = self
            .plan
            .body
            .targets
            .iter()
            .map(|t| {
                (
                    t.target.id.clone(),
                    crate::workspace::target_spec(&self.inv, base, &t.target, false).unwrap(),
                )
            })
            .collect();
        let bundles = self
            .plan
            .body
            .steps
            .iter()
            .map(|s| {
                (
                    s.id.clone(),
                    ReleaseBundle {
                        version: s.to.clone(),
                        artifact: "x".into(),
                        artifact_sha256: String::new(),
                        files: vec![],
                        plan_id: self.plan.id.clone(),
                    },
                )
            })
            .collect();
        Executor {
            approvers: vec![],
            plan: Arc::new(self.plan.clone()),
            specs,
            bundles,
            drivers,
            ledger: self.ledger.clone(),
            actor: "tester".into(),
            progress: Arc::new(super::Recorded::default()),
            cancel,
            ops: Arc::new(crate::drivers::rds::RdsOps::with_api(
                &self.inv,
                self.rds.clone(),
            )),
            confirmed: Default::default(),
            windows: self.windows.clone(),
            probes: Arc::new(crate::probe::Probes::new(
                Arc::new(self.inv.clone()),
                self._dir.path().to_owned(),
            )),
            wait_conditions: self.wait,
            fence: None,
        }
    }

    async fn run(&self) -> (ApplyOutcome, BTreeMap<String, StepStatus>) {
        let prior = prior_run(&self.ledger.read_all().unwrap(), &self.plan.id);
        let (_tx, rx) = watch::channel(false);
        self.executor(rx).run(&prior).await.unwrap()
    }

    fn current(&self, site: &str) -> Option<String> {
        self.fake.get(&format!("{site}/l/app")).current
    }
}

#[tokio::test]
async fn all_waves_succeed_canary_first() {
    let f = fixture("halt", 2, 0, 0);
    let (outcome, status) = f.run().await;
    assert_eq!(outcome, ApplyOutcome::Completed);
    assert!(status.values().all(|s| *s == StepStatus::Succeeded));
    for s in ["s1", "s2", "s3", "s4", "s5"] {
        assert_eq!(f.current(s).as_deref(), Some("2"));
    }
    let calls = f.fake.calls();
    let canary_verified = calls.iter().position(|c| c == "verify s1/l/app 2").unwrap();
    let first_rest = calls
        .iter()
        .position(|c| c.starts_with("apply s2") || c.starts_with("apply s3"))
        .unwrap();
    assert!(
        canary_verified < first_rest,
        "the canary is verified before the next wave starts: {calls:?}"
    );
    let report = f.ledger.verify().unwrap();
    assert!(report.tamper.is_none());
}

#[tokio::test]
async fn max_parallel_bounds_concurrency() {
    let f = fixture("halt", 2, 0, 30);
    f.run().await;
    assert_eq!(f.fake.max_in_flight(), 2);
    let f = fixture("halt", 4, 0, 30);
    f.run().await;
    assert_eq!(f.fake.max_in_flight(), 4);
}

#[tokio::test]
async fn halt_stops_and_leaves_the_rest_pending() {
    let f = fixture("halt", 1, 0, 0);
    f.fake.fail_health("s2/l/app", "2");
    let (outcome, status) = f.run().await;
    let ApplyOutcome::Halted { failed, pending } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(failed, vec!["s002".to_owned()]);
    assert_eq!(
        pending.len(),
        4,
        "the failed step and the three never started: {pending:?}"
    );
    assert_eq!(status["s001"], StepStatus::Succeeded);
    assert_eq!(
        f.current("s1").as_deref(),
        Some("2"),
        "halt leaves completed work in place"
    );
    assert_eq!(f.current("s3").as_deref(), Some("1"));
}

#[tokio::test]
async fn backout_undoes_completed_steps_newest_first() {
    let f = fixture("backout", 1, 0, 0);
    f.fake.fail_health("s3/l/app", "2");
    let (outcome, _) = f.run().await;
    let ApplyOutcome::BackedOut {
        failed,
        undone,
        undo_failed,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(failed, vec!["s003".to_owned()]);
    assert_eq!(undone, vec!["s002".to_owned(), "s001".to_owned()]);
    assert!(undo_failed.is_empty());
    for s in ["s1", "s2", "s3", "s4", "s5"] {
        assert_eq!(
            f.current(s).as_deref(),
            Some("1"),
            "{s} is back on the previous version"
        );
    }
    let events: Vec<_> = f
        .ledger
        .read_all()
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert!(events.contains(&Event::StepBackedOut));
    assert_eq!(events.last(), Some(&Event::ApplyFinished));
}

#[tokio::test]
async fn failures_within_the_threshold_do_not_stop_the_wave() {
    let f = fixture("backout", 1, 1, 0);
    f.fake.fail_health("s3/l/app", "2");
    let (outcome, _) = f.run().await;
    assert_eq!(
        outcome,
        ApplyOutcome::CompletedWithFailures {
            failed: vec!["s003".into()]
        }
    );
    assert_eq!(
        f.current("s3").as_deref(),
        Some("1"),
        "the failed site was backed out on its own"
    );
    assert_eq!(f.current("s5").as_deref(), Some("2"));
}

#[tokio::test]
async fn an_unreachable_target_is_a_failure_not_a_hang() {
    let f = fixture("halt", 2, 0, 0);
    f.fake.make_unreachable("s4/l/app");
    let (outcome, _) = f.run().await;
    assert!(
        matches!(outcome, ApplyOutcome::Halted { ref failed, .. } if failed == &vec!["s004".to_owned()]),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn resume_skips_completed_steps() {
    let f = fixture("halt", 1, 0, 0);
    f.fake.fail_health("s2/l/app", "2");
    let (first, _) = f.run().await;
    assert!(matches!(first, ApplyOutcome::Halted { .. }));
    // The operator fixes the target; resume finishes without touching s1 again.
    let f2 = Fixture {
        fake: Arc::new(FakeDriver::new()),
        ..f
    };
    for (id, o) in f2
        .plan
        .body
        .targets
        .iter()
        .map(|t| (t.target.id.clone(), t.observed.clone()))
    {
        f2.fake.set(&id, o);
    }
    f2.fake.set(
        "s1/l/app",
        Observed {
            current: Some("2".into()),
            releases: vec!["1".into(), "2".into()],
            facts: Default::default(),
            drift: vec![],
        },
    );
    let (second, status) = f2.run().await;
    assert_eq!(second, ApplyOutcome::Completed);
    assert_eq!(status["s001"], StepStatus::AlreadyDone);
    assert!(
        !f2.fake.calls().iter().any(|c| c.starts_with("apply s1")),
        "{:?}",
        f2.fake.calls()
    );
    let succeeded = f2
        .ledger
        .read_all()
        .unwrap()
        .iter()
        .filter(|e| e.event == Event::StepSucceeded && e.step.as_deref() == Some("s001"))
        .count();
    assert_eq!(succeeded, 1, "no completed step runs twice");
}

#[tokio::test]
async fn cancel_stops_at_a_safe_point() {
    let f = fixture("halt", 1, 0, 300);
    let (tx, rx) = watch::channel(false);
    let exec = f.executor(rx);
    let prior = PriorRun::default();
    let handle = tokio::spawn(async move { exec.run(&prior).await });
    // Once the canary has started (seen in the ledger, not guessed by a sleep: a loaded CI
    // machine started it late), cancel: it finishes, nothing new starts.
    let started = std::time::Instant::now();
    while !f
        .ledger
        .read_all()
        .unwrap()
        .iter()
        .any(|e| e.event == Event::StepStarted && e.step.as_deref() == Some("s001"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "s001 never started"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tx.send(true).unwrap();
    let (outcome, status) = handle.await.unwrap().unwrap();
    let ApplyOutcome::Interrupted { pending } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        status["s001"],
        StepStatus::Succeeded,
        "the step in flight completed"
    );
    assert_eq!(pending.len(), 4);
    let last = f.ledger.read_all().unwrap().pop().unwrap();
    assert_eq!(last.event, Event::ApplyInterrupted);
}

const MULTI_HOST: &str = r#"version: 1
sites:
  - { id: s1, tier: prod, endpoints: [e1, e2, e3, e4] }
endpoints:
  - { id: e1, address: 127.0.0.1, connection: { protocol: ssh, user: u, known_hosts: kh }, hardware: { cpus: 1, memory_mb: 1, disk_gb: 1, os: x } }
  - { id: e2, address: 127.0.0.2, connection: { protocol: ssh, user: u, known_hosts: kh }, hardware: { cpus: 1, memory_mb: 1, disk_gb: 1, os: x } }
  - { id: e3, address: 127.0.0.3, connection: { protocol: ssh, user: u, known_hosts: kh }, hardware: { cpus: 1, memory_mb: 1, disk_gb: 1, os: x } }
  - { id: e4, address: 127.0.0.4, connection: { protocol: ssh, user: u, known_hosts: kh }, hardware: { cpus: 1, memory_mb: 1, disk_gb: 1, os: x } }
apps:
  - { id: db, version: "1", artifact: x, target: ssh, sites: [s1], health_check: { command: [t] } }
  - { id: web, version: "1", artifact: x, target: ssh, sites: [s1], health_check: { command: [t] }, depends_on: [db] }
"#;

#[tokio::test]
async fn endpoints_of_one_site_fan_out_and_dependencies_wait_across_hosts() {
    let f = fixture_from(
        MULTI_HOST,
        "version: 1\nkind: release\nname: r\nreleases: [{app: web, version: '2'}, {app: db, version: '2'}]\nwaves: [{name: all, sites: [s1], max_parallel: 3}]\non_failure: halt\n",
        30,
    );
    let mut drivers = Drivers::default();
    drivers.insert(TargetKind::Ssh, f.fake.clone());
    let mut exec = f.executor(watch::channel(false).1);
    exec.drivers = drivers;
    let (outcome, _) = exec.run(&PriorRun::default()).await.unwrap();
    assert_eq!(outcome, ApplyOutcome::Completed);
    assert_eq!(
        f.fake.max_in_flight(),
        3,
        "max_parallel counts endpoints, not sites"
    );
    let calls = f.fake.calls();
    let last_db = calls
        .iter()
        .rposition(|c| c.starts_with("verify s1/e") && c.contains("/db "))
        .unwrap();
    let first_web = calls
        .iter()
        .position(|c| c.starts_with("apply s1/e") && c.contains("/web "))
        .unwrap();
    assert!(
        last_db < first_web,
        "web waits for db on every host of the site: {calls:?}"
    );
}

const INV_DB: &str = r#"version: 1
sites:
  - { id: s1, tier: sqa, clouds: [l] }
  - { id: s2, tier: prod, clouds: [l, aws1] }
clouds:
  - { id: l, kind: local, local: { root: r } }
  - { id: aws1, kind: aws, aws: { account: "123456789012", region: us-east-1, max_attempts: 2 } }
apps:
  - { id: app, version: "1", artifact: x, target: local, sites: [s1, s2], health_check: { command: [t] } }
databases: [{ id: ehr, cloud: aws1, engine: postgres, identifier: ehr-prod, site: s2 }]
"#;

const PLAN_DB: &str = "version: 1\nkind: release\nname: r\nreleases: [{app: app, version: '2'}]\nwaves:\n  - {name: canary, sites: [s1]}\n  - {name: prod, sites: [s2]}\non_failure: halt\nsnapshots: [{database: ehr}]\n";

#[tokio::test]
async fn a_pre_change_snapshot_comes_first_in_its_wave_and_is_recorded() {
    let f = fixture_from(INV_DB, PLAN_DB, 0);
    let snap = &f.plan.body.steps[1];
    assert_eq!((snap.wave, snap.target.id.as_str()), (1, "s2/aws1/ehr"));
    assert_eq!(f.plan.body.steps[2].depends_on, vec![snap.id.clone()]);
    let (outcome, _) = f.run().await;
    assert_eq!(outcome, ApplyOutcome::Completed);
    let entries = f.ledger.read_all().unwrap();
    let ok = entries
        .iter()
        .find(|e| e.event == Event::StepSucceeded && e.step.as_deref() == Some("s002"))
        .unwrap();
    let snapshot_id = "ferry-ehr-prod-plan1-s002";
    assert_eq!(ok.detail.as_ref().unwrap()["snapshot"], snapshot_id);
    assert_eq!(
        ok.message.as_deref(),
        Some(format!("snapshot {snapshot_id} available").as_str())
    );
    // The prod app step started only after the snapshot succeeded.
    let pos = |ev: Event, step: &str| {
        entries
            .iter()
            .position(|e| e.event == ev && e.step.as_deref() == Some(step))
            .unwrap()
    };
    assert!(pos(Event::StepSucceeded, "s002") < pos(Event::StepStarted, "s003"));
}

#[tokio::test]
async fn a_failed_pre_change_snapshot_keeps_the_release_from_starting() {
    let f = fixture_from(INV_DB, PLAN_DB, 0);
    f.rds.throttle(100);
    let (outcome, status) = f.run().await;
    let ApplyOutcome::Halted { failed, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(failed, vec!["s002".to_owned()]);
    assert_eq!(status["s001"], StepStatus::Succeeded, "the canary wave ran");
    assert_ne!(status["s003"], StepStatus::Succeeded);
    assert_eq!(
        f.current("s2").as_deref(),
        Some("1"),
        "prod was never touched"
    );
    assert!(
        !f.fake.calls().iter().any(|c| c.contains("s2/l/app 2")),
        "{:?}",
        f.fake.calls()
    );
    let entries = f.ledger.read_all().unwrap();
    let failed = entries
        .iter()
        .find(|e| e.event == Event::StepFailed)
        .unwrap();
    assert!(
        failed
            .message
            .as_deref()
            .unwrap()
            .contains("gave up after 2 attempts"),
        "{failed:?}"
    );
    assert!(
        failed.detail.as_ref().unwrap()["on_failure"]
            .as_str()
            .unwrap()
            .contains("the release did not start")
    );
}

#[tokio::test]
async fn a_wave_that_changes_nothing_takes_no_snapshot() {
    let f = fixture_from(
        INV_DB,
        &PLAN_DB.replace(
            "releases: [{app: app, version: '2'}]",
            "releases: [{app: app, version: '1'}]",
        ),
        0,
    );
    assert!(f.plan.body.steps.is_empty(), "{:?}", f.plan.body.steps);
}

mod gates;

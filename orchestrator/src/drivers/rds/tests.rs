//! The RDS operations against the in-memory fake: slow state transitions, throttling, waits
//! that time out, and re-runs (resume) that adopt instead of repeating.

use std::sync::{Arc, Mutex};

use super::fake::FakeRds;
use super::*;
use crate::load::{self, SourceFile};

const INV: &str = r#"version: 1
sites: [{ id: a, tier: prod }]
clouds: [{ id: aws1, kind: aws, aws: { account: "123456789012", region: us-east-1, max_attempts: 4 } }]
databases: [{ id: ehr, cloud: aws1, engine: postgres, identifier: ehr-prod, site: a }]
"#;

fn ops(fake: Arc<FakeRds>) -> RdsOps {
    let inv = load::parse_inventory(SourceFile::new("i.yaml", INV))
        .unwrap()
        .value;
    RdsOps::with_api(&inv, fake)
}

struct Said(Mutex<Vec<String>>);

impl Said {
    fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

async fn run(ops: &RdsOps, said: &Said, step: &str, op: &Op) -> Result<Value, DriverError> {
    let say = |l: String| said.0.lock().unwrap().push(l);
    let cx = OpContext {
        plan_id: "0f3a9c2e-aaaa",
        step_id: step,
        say: &say,
    };
    ops.run(&cx, op).await
}

fn snapshot_op(timeout: u64) -> Op {
    Op::RdsSnapshot {
        database: "ehr".into(),
        identifier: "ehr-prod".into(),
        snapshot_id: None,
        timeout_seconds: timeout,
    }
}

#[tokio::test]
async fn a_snapshot_is_waited_for_through_its_states_and_recorded() {
    let fake = Arc::new(FakeRds::with_transitions(&[
        "creating",
        "creating",
        "backing-up",
    ]));
    fake.add_instance("ehr-prod", "available");
    let ops = ops(fake.clone());
    let said = Said::new();
    let out = run(&ops, &said, "s001", &snapshot_op(60)).await.unwrap();
    assert_eq!(out["snapshot"], "ferry-ehr-prod-0f3a9c2e-s001");
    assert_eq!(out["status"], "available");
    assert_eq!(out["adopted"], false);
    assert_eq!(out["account"], "123456789012");
    let lines = said.lines();
    assert!(
        lines.iter().any(|l| l.contains("is `creating`")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("is `backing-up`")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_rerun_adopts_the_snapshot_it_started_instead_of_taking_another() {
    let fake = Arc::new(FakeRds::with_instance("ehr-prod"));
    let ops = ops(fake.clone());
    let said = Said::new();
    run(&ops, &said, "s001", &snapshot_op(60)).await.unwrap();
    let again = run(&ops, &said, "s001", &snapshot_op(60)).await.unwrap();
    assert_eq!(again["adopted"], true);
    let creates = fake
        .calls()
        .iter()
        .filter(|c| c.starts_with("create-snapshot"))
        .count();
    assert_eq!(creates, 1, "{:?}", fake.calls());
}

#[tokio::test]
async fn throttling_is_retried_with_backoff_and_counted() {
    let fake = Arc::new(FakeRds::with_instance("ehr-prod"));
    fake.throttle(2);
    let ops = ops(fake.clone());
    let said = Said::new();
    let out = run(&ops, &said, "s001", &snapshot_op(60)).await.unwrap();
    assert_eq!(out["retries"], 2);
    let retries: Vec<String> = said
        .lines()
        .into_iter()
        .filter(|l| l.contains("retry"))
        .collect();
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert!(
        retries[0].contains("Rate exceeded (Throttling); attempt 2/4"),
        "{retries:?}"
    );
}

#[tokio::test]
async fn throttling_beyond_the_attempts_fails_with_a_clear_message() {
    let fake = Arc::new(FakeRds::with_instance("ehr-prod"));
    fake.throttle(10);
    let ops = ops(fake.clone());
    let e = run(&ops, &Said::new(), "s001", &snapshot_op(60))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("gave up after 4 attempts"), "{e}");
    assert!(
        e.contains("database ehr (cloud `aws1` (account 123456789012, region us-east-1))"),
        "{e}"
    );
}

#[tokio::test]
async fn a_wait_that_passes_its_deadline_says_so_and_how_to_resume() {
    let fake = Arc::new(FakeRds::with_instance("ehr-prod"));
    fake.add_instance("ehr-new", "creating");
    fake.script_instance("ehr-new", &["creating"; 100_000]);
    let mut ops = ops(fake.clone());
    ops.poll = Duration::from_millis(20);
    let op = Op::RdsWait {
        database: "ehr".into(),
        identifier: "ehr-new".into(),
        timeout_seconds: 1,
    };
    let e = run(&ops, &Said::new(), "s004", &op).await.unwrap_err();
    assert!(matches!(e, DriverError::Timeout { seconds: 1, .. }), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("still `creating`") && e.contains("ferry apply --resume"),
        "{e}"
    );
}

#[tokio::test]
async fn a_failed_instance_is_not_waited_for() {
    let fake = Arc::new(FakeRds::with_instance("ehr-prod"));
    fake.add_instance("ehr-new", "creating");
    fake.script_instance("ehr-new", &["creating", "incompatible-restore"]);
    let ops = ops(fake.clone());
    let op = Op::RdsWait {
        database: "ehr".into(),
        identifier: "ehr-new".into(),
        timeout_seconds: 3600,
    };
    let e = run(&ops, &Said::new(), "s004", &op)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("is `incompatible-restore`"), "{e}");
}

fn restore_op(snapshot: &str) -> Op {
    Op::RdsRestore {
        database: "ehr".into(),
        snapshot_id: snapshot.into(),
        snapshot_type: None,
        chosen: "given".into(),
        new_identifier: "ehr-prod-restored".into(),
        instance_class: None,
        settings: None,
    }
}

#[tokio::test]
async fn a_resumed_restore_adopts_its_instance_and_never_restores_twice() {
    let fake = Arc::new(FakeRds::with_transitions(&["creating"]));
    fake.add_instance("ehr-prod", "available");
    fake.add_snapshot("snap-1", "ehr-prod", "2026-11-20T00:00:00Z");
    let ops = ops(fake.clone());
    let first = run(&ops, &Said::new(), "s003", &restore_op("snap-1"))
        .await
        .unwrap();
    assert_eq!(first["adopted"], false);
    // The process died before the result was recorded: the step runs again.
    let said = Said::new();
    let again = run(&ops, &said, "s003", &restore_op("snap-1"))
        .await
        .unwrap();
    assert_eq!(again["adopted"], true);
    assert!(said.lines()[0].contains("adopting it, not restoring again"));
    let restores = fake
        .calls()
        .iter()
        .filter(|c| c.starts_with("restore"))
        .count();
    assert_eq!(restores, 1);
    assert_eq!(fake.instance_ids(), ["ehr-prod", "ehr-prod-restored"]);
}

#[tokio::test]
async fn a_taken_instance_id_and_a_missing_snapshot_are_refused_before_any_change() {
    let fake = Arc::new(FakeRds::with_instance("ehr-prod"));
    fake.add_instance("ehr-prod-restored", "available");
    fake.add_snapshot("snap-1", "ehr-prod", "2026-11-20T00:00:00Z");
    let ops = ops(fake.clone());
    let e = run(&ops, &Said::new(), "s003", &restore_op("snap-1"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("instance id ehr-prod-restored is already taken"),
        "{e}"
    );

    let fake = Arc::new(FakeRds::with_instance("ehr-prod"));
    let ops2 = super::tests::ops(fake.clone());
    let e = run(&ops2, &Said::new(), "s003", &restore_op("gone"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("snapshot gone does not exist"), "{e}");
    assert!(!fake.calls().iter().any(|c| c.starts_with("restore")));
}

#[tokio::test]
async fn renames_and_deletes_are_idempotent() {
    let fake = Arc::new(FakeRds::with_instance("ehr-prod"));
    let ops = ops(fake.clone());
    let rename = Op::RdsRename {
        database: "ehr".into(),
        from: "ehr-prod".into(),
        to: "ehr-prod-retired".into(),
        timeout_seconds: 60,
    };
    let said = Said::new();
    assert_eq!(
        run(&ops, &said, "s006", &rename).await.unwrap()["already_renamed"],
        false
    );
    assert_eq!(
        run(&ops, &said, "s006", &rename).await.unwrap()["already_renamed"],
        true
    );
    let delete = Op::RdsDelete {
        database: "ehr".into(),
        identifier: "ehr-prod-retired".into(),
        timeout_seconds: 60,
    };
    let out = run(&ops, &said, "s010", &delete).await.unwrap();
    assert_eq!(
        out["final_snapshot"],
        "ferry-final-ehr-prod-retired-0f3a9c2e"
    );
    assert_eq!(
        run(&ops, &said, "s010", &delete).await.unwrap()["already_deleted"],
        true
    );
    // An instance that is gone without ferry's final snapshot was not deleted by this plan.
    let other = Op::RdsDelete {
        database: "ehr".into(),
        identifier: "never-existed".into(),
        timeout_seconds: 60,
    };
    let e = run(&ops, &said, "s011", &other)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("was not deleted by ferry"), "{e}");
}

#[tokio::test]
async fn verify_checks_status_engine_version_and_the_probe() {
    let fake = Arc::new(FakeRds::with_instance("ehr-prod"));
    let ops = ops(fake.clone());
    let verify = |version: &str, probe: &[&str]| Op::RdsVerify {
        database: "ehr".into(),
        identifier: "ehr-prod".into(),
        engine: "postgres".into(),
        engine_version: Some(version.into()),
        probe: probe.iter().map(|s| (*s).to_owned()).collect(),
        timeout_seconds: 10,
        settings: None,
    };
    let ok = run(
        &ops,
        &Said::new(),
        "s005",
        &verify("15.4", &["sh", "-c", "test \"$FERRY_DB_PORT\" = 5432"]),
    )
    .await
    .unwrap();
    assert_eq!(
        ok["checks"][2],
        "probe `sh -c test \"$FERRY_DB_PORT\" = 5432` passed"
    );
    let e = run(&ops, &Said::new(), "s005", &verify("16.1", &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("engine version is 15.4, expected 16.1"), "{e}");
    let e = run(
        &ops,
        &Said::new(),
        "s005",
        &verify("15.4", &["sh", "-c", "echo refused >&2; exit 3"]),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("failed (exit status: 3): refused"), "{e}");
}

/// AWS takes a snapshot only of an `available` or `storage-optimization` instance: a busy one
/// (`backing-up`, `modifying`) is waited out within the step's deadline, one that stays busy
/// fails the step naming its state, and `storage-optimization` (which can last hours) is taken
/// at once.
#[tokio::test]
async fn a_snapshot_waits_for_an_instance_aws_can_snapshot() {
    let fake = Arc::new(FakeRds::default());
    fake.add_instance("ehr-prod", "available");
    fake.script_instance(
        "ehr-prod",
        &["backing-up", "backing-up", "modifying", "available"],
    );
    let said = Said::new();
    let out = run(&ops(fake.clone()), &said, "s001", &snapshot_op(60))
        .await
        .unwrap();
    assert_eq!(out["status"], "available");
    let lines = said.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("waiting instance ehr-prod is `backing-up`")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("is `modifying`")),
        "{lines:?}"
    );

    let stuck = Arc::new(FakeRds::default());
    stuck.add_instance("ehr-prod", "modifying");
    let err = run(&ops(stuck.clone()), &Said::new(), "s002", &snapshot_op(0))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("(it is `modifying`)"), "{err}");
    assert!(
        !stuck
            .calls()
            .iter()
            .any(|c| c.starts_with("create-snapshot")),
        "no snapshot was asked of a busy instance"
    );

    let optimizing = Arc::new(FakeRds::default());
    optimizing.add_instance("ehr-prod", "storage-optimization");
    let out = run(&ops(optimizing), &Said::new(), "s003", &snapshot_op(60))
        .await
        .unwrap();
    assert_eq!(out["status"], "available");
}

#[tokio::test]
async fn a_rename_waits_until_the_new_name_answers_after_the_reboot() {
    // The fake renames as AWS documents: the new id is first not found, then `available`
    // with the old endpoint (before the reboot), then `rebooting`, then `available` with the
    // new endpoint. A cut-over that trusted the first sight would hand apps a dead name.
    let fake = Arc::new(FakeRds::with_instance("ehr-new"));
    let ops = ops(fake.clone());
    let rename = Op::RdsRename {
        database: "ehr".into(),
        from: "ehr-new".into(),
        to: "ehr-prod".into(),
        timeout_seconds: 60,
    };
    let said = Said::new();
    let out = run(&ops, &said, "s008", &rename).await.unwrap();
    assert_eq!(out["already_renamed"], false);
    let describes = fake
        .calls()
        .iter()
        .filter(|c| c.as_str() == "describe-instance ehr-prod")
        .count();
    assert!(
        describes >= 5,
        "not found, early available, rebooting, available: {describes}"
    );
    let lines = said.lines().join("\n");
    assert!(
        lines.contains("ehr-prod not visible yet (renaming)"),
        "{lines}"
    );
    assert!(lines.contains("endpoint still ehr-new.example"), "{lines}");
    assert!(lines.contains("status rebooting"), "{lines}");
}

#[tokio::test]
async fn a_restore_carries_the_source_settings_and_tags_and_verify_checks_them() {
    use crate::ops::InstanceSettings;
    let fake = Arc::new(FakeRds::with_instance("ehr-prod"));
    fake.add_snapshot("snap-1", "ehr-prod", "2026-12-01T00:00:00Z");
    let source = InstanceSettings {
        subnet_group: Some("ehr-private".into()),
        security_groups: vec!["sg-0ehr".into()],
        parameter_group: Some("ehr-pg15".into()),
        multi_az: true,
        deletion_protection: true,
        tags: [("backup-plan".to_owned(), "daily".to_owned())].into(),
        ..Default::default()
    };
    fake.set_settings("ehr-prod", source.clone());
    let ops = ops(fake.clone());
    let said = Said::new();
    let mut restore = restore_op("snap-1");
    if let Op::RdsRestore { settings, .. } = &mut restore {
        *settings = Some(source.clone());
    }
    run(&ops, &said, "s002", &restore).await.unwrap();
    let verify = |identifier: &str| Op::RdsVerify {
        database: "ehr".into(),
        identifier: identifier.into(),
        engine: "postgres".into(),
        engine_version: None,
        probe: vec![],
        timeout_seconds: 10,
        settings: Some(source.clone()),
    };
    // The fake's restored instance comes up after its transitions; wait by verifying again.
    let mut out = run(&ops, &said, "s003", &verify("ehr-prod-restored")).await;
    for _ in 0..5 {
        if out.is_ok() {
            break;
        }
        out = run(&ops, &said, "s003", &verify("ehr-prod-restored")).await;
    }
    let out = out.unwrap();
    assert!(
        out["checks"][2]
            .as_str()
            .unwrap()
            .starts_with("settings as the source's: subnet group ehr-private"),
        "{out}"
    );
    // The source's tags and ferry's, both on the new instance.
    let mut tags = fake.instance_tags("ehr-prod-restored");
    assert_eq!(tags.remove("backup-plan").as_deref(), Some("daily"));
    assert!(tags.keys().any(|k| k.starts_with("ferry")), "{tags:?}");
    // A restore that dropped them (what AWS does when the call names none) fails verify.
    fake.add_snapshot("snap-2", "ehr-prod", "2026-12-01T01:00:00Z");
    let mut bare = restore_op("snap-2");
    if let Op::RdsRestore { new_identifier, .. } = &mut bare {
        *new_identifier = "ehr-prod-bare".into();
    }
    run(&ops, &said, "s004", &bare).await.unwrap();
    let e = run(&ops, &said, "s005", &verify("ehr-prod-bare"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("subnet group is none, the source has ehr-private"),
        "{e}"
    );
    assert!(e.contains("tag backup-plan is missing"), "{e}");
}

#[tokio::test]
async fn a_change_whose_answer_was_lost_is_recognised_on_retry_not_failed() {
    // Each mutating call takes effect but its answer is lost; the retry is refused as already
    // done (AlreadyExists, NotFound) and ferry looks at what is there instead of failing.
    let fake = Arc::new(FakeRds::with_instance("ehr-prod"));
    fake.add_snapshot("snap-1", "ehr-prod", "2026-12-01T00:00:00Z");
    let ops = ops(fake.clone());
    let said = Said::new();
    let snapshot = Op::RdsSnapshot {
        database: "ehr".into(),
        identifier: "ehr-prod".into(),
        snapshot_id: Some("ferry-safety".into()),
        timeout_seconds: 30,
    };
    fake.lose_answers(1);
    let out = run(&ops, &said, "s001", &snapshot).await.unwrap();
    assert_eq!(out["adopted"], true, "{out}");
    fake.lose_answers(1);
    let out = run(&ops, &said, "s002", &restore_op("snap-1"))
        .await
        .unwrap();
    assert_eq!(out["adopted"], true, "{out}");
    let rename = Op::RdsRename {
        database: "ehr".into(),
        from: "ehr-prod".into(),
        to: "ehr-prod-retired".into(),
        timeout_seconds: 30,
    };
    fake.lose_answers(1);
    run(&ops, &said, "s003", &rename).await.unwrap();
    let delete = Op::RdsDelete {
        database: "ehr".into(),
        identifier: "ehr-prod-retired".into(),
        timeout_seconds: 30,
    };
    fake.lose_answers(1);
    run(&ops, &said, "s004", &delete).await.unwrap();
    assert!(!fake.instance_ids().contains(&"ehr-prod-retired".to_owned()));
    let lines = said.lines().join("\n");
    assert_eq!(
        lines.matches("an earlier attempt got no answer").count(),
        4,
        "{lines}"
    );
    // Each call was made twice (the lost one and its retry), never a third time.
    let creates = fake
        .calls()
        .iter()
        .filter(|c| c.starts_with("create-snapshot"))
        .count();
    assert_eq!(creates, 2);
}

/// An automated snapshot is found by id only with its SnapshotType (the fake answers as AWS
/// documents): the type recorded when the snapshot was chosen is what makes the restore work.
#[tokio::test]
async fn an_automated_snapshot_is_restored_by_the_type_recorded_when_it_was_chosen() {
    let fake = Arc::new(FakeRds::with_instance("ehr-prod"));
    let id = "rds:ehr-prod-2026-11-20-03-10";
    fake.add_snapshot_of_kind(id, "ehr-prod", "2026-11-20T03:10:00Z", "automated");
    let ops = ops(fake.clone());
    let list = ops.snapshots("ehr", None, &|_| {}).await.unwrap();
    assert_eq!(list[0].kind, "automated", "a listing without a type has it");
    let e = run(&ops, &Said::new(), "s003", &restore_op(id))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("snapshot {id} does not exist")), "{e}");
    let mut typed = restore_op(id);
    if let Op::RdsRestore { snapshot_type, .. } = &mut typed {
        *snapshot_type = Some("automated".into());
    }
    let out = run(&ops, &Said::new(), "s003", &typed).await.unwrap();
    assert_eq!(out["snapshot"], id);
    assert_eq!(fake.instance_ids(), ["ehr-prod", "ehr-prod-restored"]);
    // AWS Backup's recovery points are listed only when asked for.
    fake.add_snapshot_of_kind(
        "awsbackup:job-1",
        "ehr-prod",
        "2026-11-21T00:00:00Z",
        "awsbackup",
    );
    assert_eq!(ops.snapshots("ehr", None, &|_| {}).await.unwrap().len(), 1);
    let backups = ops
        .snapshots("ehr", Some("awsbackup"), &|_| {})
        .await
        .unwrap();
    assert_eq!(backups[0].id, "awsbackup:job-1");
}

/// A prune deletes ferry's own oldest snapshots beyond the retention, never anyone else's,
/// an automated one or AWS Backup's; a dry run deletes nothing; a lost answer is not a failure.
#[tokio::test]
async fn a_prune_deletes_only_ferrys_oldest_snapshots() {
    let fake = Arc::new(FakeRds::with_instance("ehr-prod"));
    let ops = ops(fake.clone());
    for k in 1..=4 {
        run(&ops, &Said::new(), &format!("s00{k}"), &snapshot_op(60))
            .await
            .unwrap();
    }
    fake.add_snapshot("someone-elses", "ehr-prod", "2000-01-01T00:00:00Z");
    fake.add_snapshot_of_kind(
        "rds:ehr-prod-old",
        "ehr-prod",
        "2000-01-01T00:00:00Z",
        "automated",
    );
    let dry = ops.prune("ehr", 2, true, &|_| {}).await.unwrap();
    assert_eq!(dry.deleted.len(), 2);
    assert_eq!(ops.snapshots("ehr", None, &|_| {}).await.unwrap().len(), 6);
    fake.lose_answers(1);
    let done = ops.prune("ehr", 2, false, &|_| {}).await.unwrap();
    assert_eq!(done.deleted, dry.deleted);
    assert_eq!(done.others, 2);
    let left: Vec<String> = ops
        .snapshots("ehr", None, &|_| {})
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left.len(), 4, "{left:?}");
    assert!(
        left.contains(&"someone-elses".to_owned()) && left.contains(&"rds:ehr-prod-old".to_owned())
    );
    for gone in &done.deleted {
        assert!(!left.contains(gone));
    }
    assert_eq!(
        done.kept,
        left.iter()
            .filter(|i| i.starts_with("ferry-"))
            .cloned()
            .collect::<Vec<_>>()
    );
}

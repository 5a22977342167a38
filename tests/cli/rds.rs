//! RDS snapshots and the restore runbook against moto servers (the AWS stand-in, started by
//! `ci/moto.sh` on loopback; two of them stand for two clouds). moto makes everything
//! `available` at once: slow transitions, waits that time out and throttling are covered by
//! the driver's unit tests (`drivers::rds::tests`) on an in-memory fake.

use std::time::{Duration, Instant};

use crate::support::{Moto, Run, Workspace, repo};

/// RDS calls of the tests, on a moto server.
trait Rds {
    fn create_instance(&self, id: &str);
    fn snapshot(&self, instance: &str, id: &str);
    fn instances(&self) -> Vec<(String, String, Vec<String>)>;
    fn snapshot_ids(&self) -> Vec<String>;
}

impl Rds for Moto {
    fn create_instance(&self, id: &str) {
        self.py(&format!(
            "rds.create_db_instance(DBInstanceIdentifier='{id}', Engine='postgres', EngineVersion='15.4', DBInstanceClass='db.t3.micro', AllocatedStorage=20, MasterUsername='ehr', MasterUserPassword='not-a-secret-1')"
        ));
    }

    fn snapshot(&self, instance: &str, id: &str) {
        self.py(&format!(
            "rds.create_db_snapshot(DBInstanceIdentifier='{instance}', DBSnapshotIdentifier='{id}')"
        ));
    }

    fn instances(&self) -> Vec<(String, String, Vec<String>)> {
        let out = self.py(
            "print(json.dumps([[d['DBInstanceIdentifier'], d['DBInstanceStatus'], sorted(t['Key'] + '=' + t['Value'] for t in d.get('TagList', []))] for d in rds.describe_db_instances()['DBInstances']]))",
        );
        let v: Vec<(String, String, Vec<String>)> = serde_json::from_str(out.trim()).unwrap();
        let mut v = v;
        v.sort();
        v
    }

    fn snapshot_ids(&self) -> Vec<String> {
        let out = self.py(
            "print(json.dumps(sorted(s['DBSnapshotIdentifier'] for s in rds.describe_db_snapshots()['DBSnapshots'])))",
        );
        serde_json::from_str(out.trim()).unwrap()
    }
}

/// The demo workspace plus two AWS clouds (moto servers) and a database in each; the `ehr`
/// database belongs to clinic-b.
fn workspace(east: &Moto, west: &Moto) -> Workspace {
    let ws = Workspace::new();
    let inv = Workspace::inventory("")
        .replace(
            "  - { id: clinic-b, tier: prod, clouds: [local] }",
            "  - { id: clinic-b, tier: prod, clouds: [local, aws-east] }",
        )
        .replace(
            "clouds:\n",
            &format!(
                "clouds:\n  - {{ id: aws-east, kind: aws, aws: {{ account: \"111111111111\", region: us-east-1, endpoint_url: \"{}\", max_attempts: 2, timeout_seconds: 5 }} }}\n  - {{ id: aws-west, kind: aws, aws: {{ account: \"222222222222\", region: us-west-2, endpoint_url: \"{}\", access_key_id: \"file:west.key\", secret_access_key: \"file:west.secret\", max_attempts: 2, timeout_seconds: 5 }} }}\n",
                east.url(),
                west.url()
            ),
        );
    let inv = format!(
        "{inv}databases:\n  - {{ id: ehr, cloud: aws-east, engine: postgres, identifier: ehr-prod, site: clinic-b }}\n  - {{ id: labs, cloud: aws-west, engine: postgres, identifier: labs-db }}\n"
    );
    ws.write("inventory.yaml", &inv);
    ws.write("west.key", "testing\n");
    ws.write("west.secret", "testing\n");
    ws
}

/// Two moto clouds on 127.61.NET.1 and .2 (each test its own NET), instance `ehr-prod` in the
/// east one, and the workspace that names them.
fn clouds(net: u8) -> (Moto, Moto, Workspace) {
    let east = Moto::start(&format!("127.61.{net}.1"));
    let west = Moto::start(&format!("127.61.{net}.2"));
    east.create_instance("ehr-prod");
    let ws = workspace(&east, &west);
    (east, west, ws)
}

fn with_creds(ws: &Workspace, args: &[&str]) -> Run {
    Run(ws
        .cmd(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("FERRY_RDS_POLL_MS", "50")
        .output()
        .expect("ferry runs"))
}

#[test]
fn snapshots_are_listed_and_taken_per_cloud_and_recorded() {
    let (east, west, ws) = clouds(0);
    west.create_instance("labs-db");

    let made = with_creds(
        &ws,
        &[
            "snapshot",
            "create",
            "ehr",
            "-i",
            "inventory.yaml",
            "--id",
            "before-upgrade",
        ],
    );
    made.expect_code(0)
        .stdout_has("Snapshot before-upgrade of database `ehr` is available");
    assert!(east.snapshot_ids().contains(&"before-upgrade".to_owned()));
    assert!(
        !west.snapshot_ids().contains(&"before-upgrade".to_owned()),
        "the other cloud is untouched"
    );

    // The west cloud's credentials come from files; its list does not see east's snapshot.
    let labs = with_creds(
        &ws,
        &[
            "--output",
            "json",
            "snapshot",
            "list",
            "labs",
            "-i",
            "inventory.yaml",
        ],
    );
    let ids: Vec<String> = labs.expect_code(0).json()["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!ids.contains(&"before-upgrade".to_owned()), "{ids:?}");
    with_creds(&ws, &["snapshot", "list", "ehr", "-i", "inventory.yaml"])
        .expect_code(0)
        .stdout_has("before-upgrade")
        .stdout_has("available");

    let done = ws.events("operation_finished");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["outcome"], "ok");
    assert_eq!(done[0]["detail"]["snapshot"], "before-upgrade");
    assert_eq!(done[0]["detail"]["account"], "111111111111");
    assert_eq!(done[0]["target"], "clinic-b/aws-east/ehr");

    // An id that is taken by a snapshot ferry did not make is refused, and recorded.
    east.snapshot("ehr-prod", "someone-elses");
    with_creds(
        &ws,
        &[
            "snapshot",
            "create",
            "ehr",
            "-i",
            "inventory.yaml",
            "--id",
            "someone-elses",
        ],
    )
    .expect_code(1)
    .stderr_has("snapshot id someone-elses is already taken by a snapshot this plan did not make");
    assert_eq!(ws.events("operation_finished")[1]["outcome"], "failed");

    // Retention: ferry's own snapshots beyond the newest one go; someone else's stays.
    for id in ["weekly-1", "weekly-2"] {
        let args = [
            "snapshot",
            "create",
            "ehr",
            "-i",
            "inventory.yaml",
            "--id",
            id,
        ];
        with_creds(&ws, &args).expect_code(0);
    }
    let prune = |extra: &[&str]| {
        let mut args = vec!["snapshot", "prune", "ehr", "-i", "inventory.yaml"];
        args.extend(extra);
        with_creds(&ws, &args)
    };
    prune(&[])
        .expect_code(1)
        .stderr_has("say --keep N, or set `snapshot_retention`");
    prune(&["--keep", "1", "--dry-run"])
        .expect_code(0)
        .stdout_has("would delete 2, kept 1 of ferry's, left 2 of others alone")
        .stdout_has("would delete before-upgrade");
    // moto, like AWS, took an automated snapshot when the instance was created.
    let before = east.snapshot_ids();
    assert_eq!(before.len(), 5, "{before:?}");
    assert!(before.iter().any(|i| i.starts_with("rds:")), "{before:?}");
    prune(&["--keep", "1"])
        .expect_code(0)
        .stdout_has("deleted weekly-1");
    let after = east.snapshot_ids();
    let kept: Vec<&String> = after.iter().filter(|i| !i.starts_with("rds:")).collect();
    assert_eq!(kept, ["someone-elses", "weekly-2"], "{after:?}");
    assert_eq!(after.len(), 3, "the automated snapshot stays: {after:?}");
    let pruned = ws.events("operation_finished").pop().unwrap();
    assert_eq!(pruned["to"], "rds.prune");
    assert_eq!(
        pruned["detail"]["deleted"],
        serde_json::json!(["before-upgrade", "weekly-1"])
    );
    // AWS Backup's recovery points are asked for with SnapshotType `awsbackup` (none here).
    with_creds(
        &ws,
        &[
            "snapshot",
            "list",
            "ehr",
            "-i",
            "inventory.yaml",
            "--aws-backup",
        ],
    )
    .expect_code(0)
    .stdout_has("weekly-2");
    ws.run(&["ledger", "verify"]).expect_code(0);
}

#[test]
fn missing_credentials_and_an_unreachable_cloud_are_clear_at_plan_time() {
    let (east, _west, ws) = clouds(1);
    ws.write(
        "plans/snap.yaml",
        &format!(
            "{}snapshots: [{{ database: ehr }}]\n",
            Workspace::plan("2.0.0", "halt")
        ),
    );
    let args = [
        "plan",
        "-i",
        "inventory.yaml",
        "plans/snap.yaml",
        "-o",
        "snap.json",
    ];
    ws.cmd(&args);
    let r = Run(ws
        .cmd(&args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap());
    r.expect_code(1).stderr_has(
        "no AWS credentials for cloud `aws-east`: the default chain (environment, shared config, web identity, container or instance role) found none",
    );
    assert!(!ws.path().join("snap.json").exists(), "no plan is written");

    // Nothing listens on the endpoint: named, after the configured attempts.
    drop(east);
    with_creds(&ws, &args)
        .expect_code(1)
        .stderr_has("cannot reach the AWS endpoint")
        .stderr_has("gave up after 2 attempts");
}

#[test]
fn a_release_snapshots_its_database_first_and_a_failed_snapshot_stops_it() {
    let (east, _west, ws) = clouds(2);
    ws.deploy("v1");
    ws.write(
        "plans/snap.yaml",
        &format!(
            "{}snapshots: [{{ database: ehr }}]\n",
            Workspace::plan("2.0.0", "halt")
        ),
    );
    let plan = with_creds(
        &ws,
        &[
            "plan",
            "-i",
            "inventory.yaml",
            "plans/snap.yaml",
            "-o",
            "snap.json",
        ],
    );
    let out = plan.expect_code(2).stdout();
    // First step of the wave holding clinic-b, before that wave's releases.
    let snap = out
        .find("* pre-change snapshot of database `ehr`")
        .expect("snapshot step shown");
    let clinics = out.find("wave 2 `clinics`").unwrap();
    let release_b = out.find("clinic-b/local/demo").unwrap();
    assert!(clinics < snap && snap < release_b, "{out}");

    with_creds(&ws, &["apply", "snap.json"]).expect_code(0);
    let ok = ws
        .events("step_succeeded")
        .into_iter()
        .find(|e| e["to"] == "rds.snapshot")
        .unwrap();
    let id = ok["detail"]["snapshot"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ferry-ehr-prod-"), "{id}");
    assert!(
        east.snapshot_ids().contains(&id),
        "the snapshot is in the cloud"
    );
    assert_eq!(ws.current("clinic-b").as_deref(), Some("2.0.0"));

    // The DIBR guide names the snapshot for the database's rollback.
    ws.run(&[
        "dibr",
        "-i",
        "inventory.yaml",
        "snap.json",
        "--ledger",
        ".ferry/ledger.jsonl",
        "-o",
        "dibr",
    ])
    .expect_code(0);
    let md = std::fs::read_to_string(ws.path().join("dibr/dibr.md")).unwrap();
    assert!(md.contains(&id), "{md}");

    // Next release: the database disappears between plan and apply: the snapshot fails and
    // the wave's release never starts.
    ws.write(
        "plans/snap3.yaml",
        &format!(
            "{}snapshots: [{{ database: ehr }}]\n",
            Workspace::plan("1.0.0", "halt")
        ),
    );
    with_creds(
        &ws,
        &[
            "plan",
            "-i",
            "inventory.yaml",
            "plans/snap3.yaml",
            "-o",
            "snap3.json",
        ],
    )
    .expect_code(2);
    east.py("rds.delete_db_instance(DBInstanceIdentifier='ehr-prod', SkipFinalSnapshot=True)");
    let r = with_creds(&ws, &["apply", "snap3.json"]);
    r.expect_code(5)
        .stderr_has("instance ehr-prod does not exist");
    assert_eq!(
        ws.current("clinic-a").as_deref(),
        Some("1.0.0"),
        "the canary wave ran"
    );
    assert_eq!(
        ws.current("clinic-b").as_deref(),
        Some("2.0.0"),
        "clinic-b was not touched"
    );
    assert_eq!(
        ws.current("clinic-c").as_deref(),
        Some("2.0.0"),
        "clinic-c was not touched"
    );
    let failed = ws.events("step_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["to"], "rds.snapshot");
    assert!(
        failed[0]["detail"]["on_failure"]
            .as_str()
            .unwrap()
            .contains("the release did not start")
    );
}

fn runbook(ws: &Workspace, extra: &[&str]) -> Run {
    let dir = repo().join("runbooks");
    let mut args = vec![
        "runbook",
        "run",
        "restore-rds-snapshot",
        "-i",
        "inventory.yaml",
        "--dir",
        dir.to_str().unwrap(),
        "-o",
        "restore.json",
    ];
    args.extend_from_slice(extra);
    with_creds(ws, &args)
}

#[test]
fn the_restore_runbook_restores_verifies_cuts_over_and_keeps_the_old_instance_until_decommission() {
    let (east, _west, ws) = clouds(3);
    east.snapshot("ehr-prod", "nightly");
    // Production's settings and tags, which the restored instance must carry over.
    // A minor upgrade since the snapshot: the restored instance comes up at the snapshot's
    // version (15.4), which is what verify must expect, not the current one.
    east.py(
        "rds.modify_db_instance(DBInstanceIdentifier='ehr-prod', EngineVersion='15.5', ApplyImmediately=True)",
    );
    east.py(
        "rds.modify_db_instance(DBInstanceIdentifier='ehr-prod', CopyTagsToSnapshot=True, ApplyImmediately=True); rds.add_tags_to_resource(ResourceName=rds.describe_db_instances(DBInstanceIdentifier='ehr-prod')['DBInstances'][0]['DBInstanceArn'], Tags=[{'Key': 'backup-plan', 'Value': 'daily'}])",
    );

    with_creds(
        &ws,
        &[
            "runbook",
            "list",
            "--dir",
            repo().join("runbooks").to_str().unwrap(),
        ],
    )
    .expect_code(0)
    .stdout_has("restore-rds-snapshot");

    // Planned and printed first: the snapshot is chosen now and named in the plan.
    let planned = runbook(
        &ws,
        &[
            "--param",
            "database=ehr",
            "--param",
            "snapshot=nightly",
            "--plan-only",
        ],
    );
    planned
        .expect_code(2)
        .stdout_has("restore snapshot nightly (given;")
        .stdout_has("to new instance ehr-prod-restored")
        .stdout_has("carrying over the current instance's")
        .stdout_has("tags copied to snapshots")
        .stdout_has("tags backup-plan")
        .stdout_has("(apply stops here until run with --confirm s001)");
    assert!(ws.path().join("restore.json").exists());

    // Run: it stops at the first manual step until someone confirms it.
    let stopped = with_creds(&ws, &["apply", "restore.json"]);
    stopped
        .expect_code(8)
        .stdout_has("stopped before manual step `stop-writes`")
        .stdout_has("ferry apply --resume restore.json --confirm stop-writes");
    assert_eq!(
        east.instances().len(),
        1,
        "nothing happened before the confirmation"
    );

    // Confirmed: everything up to the decommission gate.
    let r = with_creds(
        &ws,
        &[
            "apply",
            "--resume",
            "restore.json",
            "--confirm",
            "stop-writes",
        ],
    );
    r.expect_code(8)
        .stdout_has("stopped before manual step `decommission`");
    let inst = east.instances();
    let names: Vec<&str> = inst.iter().map(|(i, _, _)| i.as_str()).collect();
    assert_eq!(names, ["ehr-prod", "ehr-prod-retired"], "{inst:?}");
    let plan_id: String = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(ws.path().join("restore.json")).unwrap(),
    )
    .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let restored = &inst[0];
    assert!(
        restored.2.contains(&format!("ferry:plan={plan_id}")),
        "the database's name now points at the restored instance: {inst:?}"
    );
    assert!(
        restored.2.contains(&"backup-plan=daily".to_owned()),
        "production's tags carried over: {inst:?}"
    );
    assert!(
        inst[1].2.iter().all(|t| !t.starts_with("ferry:plan")),
        "the old instance is kept: {inst:?}"
    );
    let safety = format!("ferry-ehr-prod-{}-s002", &plan_id.replace('-', "")[..8]);
    assert!(
        east.snapshot_ids().contains(&safety),
        "{:?}",
        east.snapshot_ids()
    );

    // Decommission confirmed: the old instance goes, after a final snapshot.
    with_creds(
        &ws,
        &[
            "apply",
            "--resume",
            "restore.json",
            "--confirm",
            "decommission",
        ],
    )
    .expect_code(0);
    let names: Vec<String> = east.instances().into_iter().map(|(i, _, _)| i).collect();
    assert_eq!(names, ["ehr-prod"]);
    assert!(
        east.snapshot_ids()
            .iter()
            .any(|s| s.starts_with("ferry-final-ehr-prod-retired-"))
    );

    // Every step is in the ledger, once, with who confirmed the manual ones.
    let ok = ws.events("step_succeeded");
    assert_eq!(ok.len(), 10, "{ok:#?}");
    let confirm = ok.iter().find(|e| e["step"] == "s001").unwrap();
    assert_eq!(confirm["detail"]["confirmed_by"], "tester");
    let restore = ok.iter().find(|e| e["to"] == "rds.restore").unwrap();
    assert_eq!(restore["detail"]["snapshot"], "nightly");
    ws.run(&["ledger", "verify"]).expect_code(0);
}

#[test]
fn restore_errors_are_refused_at_plan_time_with_the_reason() {
    let (east, _west, ws) = clouds(4);
    east.create_instance("taken");
    east.snapshot("ehr-prod", "nightly");
    runbook(
        &ws,
        &[
            "--param",
            "database=ehr",
            "--param",
            "snapshot=nope",
            "--plan-only",
        ],
    )
    .expect_code(1)
    .stderr_has("step `restore`: snapshot `nope` does not exist for database `ehr`");
    runbook(
        &ws,
        &[
            "--param",
            "database=ehr",
            "--param",
            "new_identifier=taken",
            "--plan-only",
        ],
    )
    .expect_code(1)
    .stderr_has("instance id taken is already taken (status `available`)");
    runbook(
        &ws,
        &[
            "--param",
            "database=ehr",
            "--param",
            "before=2000-01-01T00:00:00Z",
            "--plan-only",
        ],
    )
    .expect_code(1)
    .stderr_has("no available snapshot was created before 2000-01-01T00:00:00Z");
    runbook(&ws, &["--param", "database=nope", "--plan-only"])
        .expect_code(1)
        .stderr_has("database `nope` is not in the inventory (it has: ehr, labs)");
    assert!(!ws.path().join("restore.json").exists());
}

/// The probe of the verify step hangs while `hang` exists, so the run can be killed there.
const PROBE: &str = "#!/bin/sh\ntouch hanging\nwhile [ -e hang ]; do sleep 0.05; done\n";

#[test]
fn an_interrupted_restore_resumes_without_a_second_instance() {
    let (east, _west, ws) = clouds(5);
    east.snapshot("ehr-prod", "nightly");
    ws.write("probe.sh", PROBE);
    ws.write("hang", "");
    runbook(
        &ws,
        &[
            "--param",
            "database=ehr",
            "--param",
            "probe=sh probe.sh",
            "--plan-only",
        ],
    )
    .expect_code(2);

    // kill -9 while the restored instance is being verified.
    let mut child = ws
        .cmd(&["apply", "restore.json", "--confirm", "stop-writes"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ws.path().join("hanging").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the probe never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_file(ws.path().join("hang")).unwrap();

    // The crash window that matters most is between the restore call and its record: cut the
    // ledger back to the restore's `step_started` (a tail cut is what a crash leaves; the hash
    // chain of what remains still verifies), so resume must find the instance it started.
    let text = std::fs::read_to_string(ws.ledger_path()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut = lines
        .iter()
        .position(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            e["event"] == "step_started" && e["to"] == "rds.restore"
        })
        .unwrap();
    std::fs::write(ws.ledger_path(), lines[..=cut].join("\n") + "\n").unwrap();
    ws.run(&["ledger", "verify"]).expect_code(0);

    let resumed = with_creds(
        &ws,
        &[
            "apply",
            "--resume",
            "restore.json",
            "--confirm",
            "stop-writes",
        ],
    );
    resumed
        .expect_code(8)
        .stdout_has("stopped before manual step `decommission`");
    let restore = ws
        .events("step_succeeded")
        .into_iter()
        .find(|e| e["to"] == "rds.restore")
        .unwrap();
    assert_eq!(restore["detail"]["adopted"], true, "{restore}");
    assert!(
        restore["message"]
            .as_str()
            .unwrap()
            .contains("found from an earlier run")
    );
    let names: Vec<String> = east.instances().into_iter().map(|(i, _, _)| i).collect();
    assert_eq!(
        names,
        ["ehr-prod", "ehr-prod-retired"],
        "one restored instance, renamed in"
    );
    assert_eq!(
        ws.events("lock_broken").len(),
        1,
        "the dead run's lock was taken over"
    );
}

/// A cloud that names no keys gets AWS's default chain: a profile of the shared credentials
/// file, or a web identity (CI OIDC, EKS IRSA) exchanged with STS (moto's, through
/// `AWS_ENDPOINT_URL_STS`); a cloud's own keys override the chain (the west cloud's files).
#[test]
fn the_default_credential_chain_reads_a_profile_and_a_web_identity() {
    let (east, _west, ws) = clouds(6);
    let list = ["snapshot", "list", "ehr", "-i", "inventory.yaml"];
    let inventory = std::fs::read_to_string(ws.path().join("inventory.yaml")).unwrap();
    let at = format!("endpoint_url: \"{}\"", east.url());
    ws.write(
        "inventory.yaml",
        &inventory.replace(&at, &format!("{at}, profile: ci")),
    );
    ws.write(
        "aws/credentials",
        "[ci]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    );
    let creds = ws.path().join("aws/credentials");
    Run(ws
        .cmd(&list)
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .output()
        .unwrap())
    .expect_code(0)
    .stdout_has("rds:ehr-prod");
    // The profile named is the one read: another is not found, and the error says which.
    ws.write(
        "aws/credentials",
        "[other]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    );
    Run(ws
        .cmd(&list)
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .output()
        .unwrap())
    .expect_code(1)
    .stderr_has("no AWS credentials for cloud `aws-east`")
    .stderr_has("profile `ci`");

    // A web identity: the token file and role a CI job's OIDC (or EKS) provides.
    ws.write("inventory.yaml", &inventory);
    ws.write("oidc-token", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2ln\n");
    let made = Run(ws
        .cmd(&[
            "snapshot",
            "create",
            "ehr",
            "-i",
            "inventory.yaml",
            "--id",
            "from-ci",
        ])
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", ws.path().join("oidc-token"))
        // moto keeps resources per account: the role is in the account the instance is in.
        .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/ferry-ci")
        .env("AWS_ROLE_SESSION_NAME", "ferry-ci")
        .env("AWS_ENDPOINT_URL_STS", east.url())
        .env("FERRY_RDS_POLL_MS", "50")
        .output()
        .unwrap());
    made.expect_code(0)
        .stdout_has("Snapshot from-ci of database `ehr` is available");
    assert!(east.snapshot_ids().contains(&"from-ci".to_owned()));
}

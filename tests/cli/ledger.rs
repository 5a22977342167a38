//! `ferry ledger verify` and `show`: tamper detection on a real ledger, filters.

use crate::support::Workspace;

fn applied() -> Workspace {
    let ws = Workspace::new();
    ws.deploy("v1");
    ws.deploy("v2");
    ws
}

fn lines(ws: &Workspace) -> Vec<String> {
    std::fs::read_to_string(ws.ledger_path())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(ws: &Workspace, lines: &[String]) {
    std::fs::write(
        ws.ledger_path(),
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

#[test]
fn an_intact_ledger_verifies() {
    let ws = applied();
    let run = ws.run(&["ledger", "verify"]);
    run.expect_code(0).stdout_has("verified:");
    let doc = ws.run(&["--output", "json", "ledger", "verify"]).json();
    assert_eq!(doc["format"], "ferry.ledger-verify");
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["entries"].as_u64().unwrap() as usize, lines(&ws).len());
}

#[test]
fn a_flipped_byte_is_detected_at_its_entry() {
    let ws = applied();
    let mut bytes = std::fs::read(ws.ledger_path()).unwrap();
    let l = lines(&ws);
    // Flip a byte inside entry #7's target/outcome text.
    let offset: usize = l[..7].iter().map(|s| s.len() + 1).sum::<usize>()
        + l[7].find("\"actor\":\"tester\"").unwrap()
        + 10;
    bytes[offset] ^= 0x01;
    std::fs::write(ws.ledger_path(), bytes).unwrap();
    ws.run(&["ledger", "verify"])
        .expect_code(7)
        .stdout_has("line 8 (entry #7): content does not match its hash: the entry was altered");
}

#[test]
fn a_dropped_line_is_detected() {
    let ws = applied();
    let mut l = lines(&ws);
    l.remove(4);
    write_lines(&ws, &l);
    ws.run(&["ledger", "verify"])
        .expect_code(7)
        .stdout_has("line 5: expected entry #4, found #5: an entry was removed here");
}

#[test]
fn swapped_lines_are_detected() {
    let ws = applied();
    let mut l = lines(&ws);
    l.swap(3, 6);
    write_lines(&ws, &l);
    let run = ws.run(&["--output", "json", "ledger", "verify"]);
    run.expect_code(7);
    let doc = run.json();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["entries"], 3);
    assert_eq!(doc["tamper"]["line"], 4);
}

#[test]
fn a_truncated_tail_is_caught_with_an_anchored_head() {
    let ws = applied();
    let head = ws.run(&["--output", "json", "ledger", "verify"]).json()["head"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut l = lines(&ws);
    l.pop();
    write_lines(&ws, &l);
    // The chain itself is still consistent; only an anchor outside the ledger shows the loss.
    ws.run(&["ledger", "verify"]).expect_code(0);
    ws.run(&["ledger", "verify", "--expect-head", &head])
        .expect_code(7)
        .stdout_has("entries were removed from the end");
}

#[test]
fn show_filters_entries() {
    let ws = applied();
    let run = ws.run(&[
        "--output",
        "json",
        "ledger",
        "show",
        "--site",
        "clinic-b",
        "--event",
        "step_succeeded",
    ]);
    run.expect_code(0);
    let entries: Vec<serde_json::Value> = run
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 2);
    assert!(
        entries
            .iter()
            .all(|e| e["site"] == "clinic-b" && e["event"] == "step_succeeded")
    );
    ws.run(&[
        "ledger",
        "show",
        "--app",
        "demo",
        "--since",
        "2000-01-01T00:00:00Z",
    ])
    .expect_code(0)
    .stdout_has("step_started");
    ws.run(&["ledger", "show", "--since", "yesterday"])
        .expect_code(1)
        .stderr_has("RFC 3339");
}

#[test]
fn export_csv_and_json_for_auditors_with_filters() {
    let ws = applied();
    let run = ws.run(&["ledger", "export", "--format", "csv", "--site", "clinic-b"]);
    run.expect_code(0);
    let mut reader = csv::Reader::from_reader(run.0.stdout.as_slice());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[0], "seq");
    assert_eq!(&headers[15], "hash");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| &r[7] == "clinic-b"),
        "only clinic-b rows"
    );
    assert!(
        rows.iter()
            .any(|r| &r[3] == "step_succeeded" && &r[9] == "1.0.0" && &r[10] == "2.0.0")
    );

    let plan_id = ws.events("apply_started")[0]["plan_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = ws.path().join("export.json");
    ws.run(&[
        "ledger",
        "export",
        "--format",
        "json",
        "--plan",
        &plan_id,
        "-o",
        out.to_str().unwrap(),
    ])
    .expect_code(0);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(doc["format"], "ferry.ledger-export");
    assert_eq!(doc["verification"]["tamper"], serde_json::Value::Null);
    assert_eq!(doc["filter"]["plan"], plan_id.as_str());
    let entries = doc["entries"].as_array().unwrap();
    assert!(entries.iter().all(|e| e["plan_id"] == plan_id.as_str()));
    assert!(entries.iter().any(|e| e["event"] == "apply_finished"));
    ws.run(&[
        "ledger",
        "export",
        "--format",
        "csv",
        "--until",
        "2000-01-01T00:00:00Z",
    ])
    .expect_code(0);
}

#[test]
fn export_of_a_tampered_ledger_says_so_and_exits_7() {
    let ws = applied();
    let mut l = lines(&ws);
    l.remove(2);
    write_lines(&ws, &l);
    let run = ws.run(&["ledger", "export", "--format", "json"]);
    run.expect_code(7).stderr_has("NOT intact");
    let doc = run.json();
    assert_eq!(doc["verification"]["tamper"]["kind"], "sequence_gap");
    assert_eq!(doc["verification"]["entries"], 2);
}

/// Whoever can write the state directory can rewrite the whole history and recompute every
/// hash: the chain alone then verifies. Signed checkpoints kept elsewhere (made after each
/// apply with FERRY_CHECKPOINT_KEY, or by `ledger checkpoint`) find it, and a truncation, and
/// a checkpoint signed by another key.
#[test]
fn a_rewritten_history_is_found_by_checkpoints_kept_elsewhere() {
    let ws = Workspace::new();
    let public = ws
        .run(&["--output", "json", "keygen", "-o", "ck.key"])
        .json()["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let outside = ws.path().join("elsewhere/checkpoints.jsonl");
    std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
    ws.plan_file("v1").expect_code(2);
    crate::support::Run(
        ws.cmd(&["apply", "v1.json"])
            .env("FERRY_CHECKPOINT_KEY", "file:ck.key")
            .env("FERRY_CHECKPOINT_FILE", &outside)
            .output()
            .unwrap(),
    )
    .expect_code(0)
    .stderr_has("checkpoint of ledger entry");
    ws.deploy("v2");
    let file = outside.display().to_string();
    ws.run(&["ledger", "checkpoint", "--key", "file:ck.key", "-o", &file])
        .expect_code(0)
        .stdout_has("checkpoint of entry");
    assert_eq!(ws.events("checkpoint").len(), 2);
    let check = |extra: &[&str]| {
        let mut args = vec!["ledger", "verify", "--checkpoints", &file];
        args.extend(extra);
        ws.run(&args)
    };
    check(&["--checkpoint-key", &public])
        .expect_code(0)
        .stdout_has("checkpoints: 2 matched");

    // The rewrite: one early entry changed, every hash after it recomputed.
    let original = lines(&ws);
    let mut entries: Vec<ferry::ledger::Entry> = original
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    entries[2].actor = "mallory".into();
    let mut prev = entries[1].hash.clone();
    for e in entries.iter_mut().skip(2) {
        e.prev = prev;
        e.hash = e.compute_hash();
        prev = e.hash.clone();
    }
    let rewritten: Vec<String> = entries
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    write_lines(&ws, &rewritten);
    ws.run(&["ledger", "verify"]).expect_code(0);
    check(&[])
        .expect_code(7)
        .stdout_has("the history up to it was rewritten");

    // Entries removed from the end, past the last checkpoint.
    let cut = original.len() - 8;
    write_lines(&ws, &original[..cut]);
    ws.run(&["ledger", "verify"]).expect_code(0);
    check(&[])
        .expect_code(7)
        .stdout_has("entries were removed from the end");

    // Checkpoints signed by another key are not the trusted ones.
    write_lines(&ws, &original);
    ws.run(&["keygen", "-o", "other.key"]).expect_code(0);
    let stranger = ws
        .run(&["--output", "json", "keygen", "-o", "third.key"])
        .json()["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    check(&["--checkpoint-key", &stranger])
        .expect_code(7)
        .stdout_has("not the trusted key");
}

/// With FERRY_CHECKPOINT_EVERY, a long apply is checkpointed as it goes, not only at its end:
/// a rewrite between two applies cannot hide behind the last checkpoint of the one before.
#[test]
fn a_long_apply_is_checkpointed_every_n_entries() {
    let ws = Workspace::new();
    ws.run(&["keygen", "-o", "ck.key"]).expect_code(0);
    let outside = ws.path().join("elsewhere.jsonl");
    ws.plan_file("v1").expect_code(2);
    crate::support::Run(
        ws.cmd(&["apply", "v1.json"])
            .env("FERRY_CHECKPOINT_KEY", "file:ck.key")
            .env("FERRY_CHECKPOINT_FILE", &outside)
            .env("FERRY_CHECKPOINT_EVERY", "4")
            .env("FERRY_IT_SLOW", "0.7")
            .output()
            .unwrap(),
    )
    .expect_code(0);
    let made = ws.events("checkpoint");
    assert!(
        made.len() >= 2,
        "checkpoints during the apply and at its end: {made:?}"
    );
    let kept = std::fs::read_to_string(&outside).unwrap();
    assert_eq!(
        kept.lines().count(),
        made.len(),
        "each one also kept elsewhere"
    );
    let file = outside.display().to_string();
    ws.run(&["ledger", "verify", "--checkpoints", &file])
        .expect_code(0)
        .stdout_has(&format!("checkpoints: {} matched", made.len()));
}

/// Checkpoints kept in S3 (moto here; with Object Lock on a real bucket nobody who keeps the
/// ledger can rewrite them): one object per checkpoint, read back by `verify --checkpoints`.
#[cfg(feature = "aws")]
#[test]
fn checkpoints_are_kept_in_s3_and_checked_from_there() {
    let moto = crate::support::Moto::start("127.62.9.1");
    moto.py("s3.create_bucket(Bucket='audit')");
    let ws = Workspace::new();
    ws.run(&["keygen", "-o", "ck.key"]).expect_code(0);
    let with_s3 = |args: &[&str]| {
        crate::support::Run(
            ws.cmd(args)
                .env("AWS_ENDPOINT_URL", moto.url())
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_REGION", "us-east-1")
                .env("FERRY_CHECKPOINT_KEY", "file:ck.key")
                .env("FERRY_CHECKPOINT_FILE", "s3://audit/estate-a/")
                .output()
                .unwrap(),
        )
    };
    ws.plan_file("v1").expect_code(2);
    with_s3(&["apply", "v1.json"]).expect_code(0);
    with_s3(&[
        "ledger",
        "checkpoint",
        "--key",
        "file:ck.key",
        "-o",
        "s3://audit/estate-a",
    ])
    .expect_code(0)
    .stdout_has("appended to s3://audit/estate-a");
    let keys = moto.py(
        "print('\\n'.join(o['Key'] for o in s3.list_objects_v2(Bucket='audit', Prefix='estate-a/')['Contents']))",
    );
    assert_eq!(keys.lines().count(), 2, "{keys}");
    assert!(
        keys.lines()
            .all(|k| k.starts_with("estate-a/000000000000000")),
        "{keys}"
    );
    with_s3(&["ledger", "verify", "--checkpoints", "s3://audit/estate-a/"])
        .expect_code(0)
        .stdout_has("checkpoints: 2 matched");
    with_s3(&[
        "ledger",
        "verify",
        "--checkpoints",
        "s3://missing-bucket/x/",
    ])
    .expect_code(1)
    .stderr_has("cannot read the checkpoints at s3://missing-bucket/x/");
}

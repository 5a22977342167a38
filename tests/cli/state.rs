//! Team state on PostgreSQL (Debian's, started by the tests): applies from separate clients
//! share one ledger and one lock; a killed holder is taken over, a paused one is fenced, a
//! database restart stops an apply safely and it resumes; signed checkpoints find a history
//! rewritten by the database's owner; a local ledger moves into the store whole.

use std::process::Child;
use std::time::Duration;

use crate::support::{Run, TeamState, Workspace};

fn team_workspace(team: &TeamState) -> Workspace {
    let mut ws = Workspace::new();
    ws.state = Some(team.url());
    ws
}

fn finish(child: Child) -> Run {
    Run(child.wait_with_output().unwrap())
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Two runners with their own state directories race for the estate: the store's lock lets
/// one apply and refuses the other, naming the holder.
#[test]
fn a_second_client_is_refused_naming_the_holder() {
    let team = TeamState::start(55462);
    let ws = team_workspace(&team);
    ws.plan_file("v1").expect_code(2);
    ws.hang("clinic-a");
    let first = ws.spawn(&["apply", "v1.json"]);
    ws.wait_hanging("clinic-a");
    let other_dir = tempfile::tempdir().unwrap();
    let second = Run(ws
        .cmd(&["apply", "v1.json"])
        .env("FERRY_STATE_DIR", other_dir.path())
        .env("FERRY_ACTOR", "ci-runner")
        .output()
        .unwrap());
    second
        .expect_code(4)
        .stderr_has("another apply holds the lock: tester (pid");
    ws.run(&["lock", "status"])
        .expect_code(0)
        .stdout_has("is held by tester");
    ws.release("clinic-a");
    finish(first).expect_code(0);
    ws.run(&["lock", "status"])
        .expect_code(0)
        .stdout_has("is free");
    assert_eq!(ws.current("clinic-c").as_deref(), Some("1.0.0"));
    let events: Vec<String> = ws
        .ledger()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events.iter().filter(|e| *e == "lock_taken").count(), 1);
    ws.run(&["ledger", "verify"]).expect_code(0);
}

/// `kill -9` of the holder: the next apply on this host sees the holder's process is gone,
/// takes over and records it.
#[test]
fn a_killed_holder_is_taken_over_and_it_is_recorded() {
    let team = TeamState::start(55463);
    let ws = team_workspace(&team);
    ws.plan_file("v1").expect_code(2);
    ws.hang("clinic-a");
    let mut first = ws.spawn(&["apply", "v1.json"]);
    ws.wait_hanging("clinic-a");
    first.kill().unwrap();
    first.wait().unwrap();
    ws.release("clinic-a");
    ws.run(&["apply", "--resume", "v1.json"]).expect_code(0);
    let broken = ws.events("lock_broken");
    assert_eq!(broken.len(), 1, "{broken:?}");
    let msg = broken[0]["message"].as_str().unwrap();
    assert!(msg.contains("is gone from this host"), "{msg}");
    assert_eq!(ws.current("clinic-c").as_deref(), Some("1.0.0"));
    ws.run(&["ledger", "verify"]).expect_code(0);
}

/// A holder stopped (SIGSTOP) past its lease is taken over; continued, it can neither act nor
/// record: its only entry after the takeover is `lock_lost`, and it exits 4.
#[test]
fn a_paused_holder_is_fenced_when_it_wakes() {
    let team = TeamState::start(55464);
    let ws = team_workspace(&team);
    ws.deploy("v1");
    ws.plan_file("v2").expect_code(2);
    ws.hang("clinic-a");
    let paused = ws.spawn(&["apply", "--lock-lease-seconds", "1", "v2.json"]);
    ws.wait_hanging("clinic-a");
    signal(&paused, libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(1600));
    ws.release("clinic-a");
    Run(ws
        .cmd(&["apply", "--resume", "v2.json"])
        .env("FERRY_ACTOR", "bob")
        .output()
        .unwrap())
    .expect_code(0);
    signal(&paused, libc::SIGCONT);
    finish(paused)
        .expect_code(4)
        .stderr_has("no longer holds the apply lock");
    let ledger = ws.ledger();
    let takeover = ledger
        .iter()
        .position(|e| e["event"] == "lock_broken")
        .expect("the takeover is recorded");
    let msg = ledger[takeover]["message"].as_str().unwrap();
    assert!(msg.contains("still running but stopped renewing"), "{msg}");
    let after: Vec<&str> = ledger[takeover..]
        .iter()
        .filter(|e| e["actor"] == "tester")
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        after,
        ["lock_lost"],
        "the paused run recorded nothing else after the takeover"
    );
    for site in ["clinic-a", "clinic-b", "clinic-c"] {
        assert_eq!(ws.current(site).as_deref(), Some("2.0.0"), "{site}");
    }
    ws.run(&["ledger", "verify"]).expect_code(0);
}

/// The database goes away in the middle of an apply: the apply stops at its next record
/// (nothing acted on without its record) and `apply --resume` finishes once it is back.
#[test]
fn a_database_restart_stops_the_apply_safely_and_it_resumes() {
    let team = TeamState::start(55465);
    let ws = team_workspace(&team);
    ws.plan_file("v1").expect_code(2);
    ws.hang("clinic-a");
    let first = ws.spawn(&["apply", "v1.json"]);
    ws.wait_hanging("clinic-a");
    team.pg.stop_now();
    ws.release("clinic-a");
    let stopped = finish(first);
    assert_ne!(stopped.code(), 0, "{}", stopped.stderr());
    stopped.stderr_has("cannot connect to PostgreSQL at 127.0.0.1:55465");
    assert_eq!(
        ws.current("clinic-b"),
        None,
        "nothing went on without its record"
    );
    team.pg.restart();
    ws.run(&["apply", "--resume", "v1.json"]).expect_code(0);
    for site in ["clinic-a", "clinic-b", "clinic-c"] {
        assert_eq!(ws.current(site).as_deref(), Some("1.0.0"), "{site}");
    }
    ws.run(&["ledger", "verify"]).expect_code(0);
}

/// The database's owner disables the triggers and rewrites the history, every hash
/// recomputed: the chain alone verifies, the signed checkpoints kept elsewhere do not.
#[test]
fn an_owner_rewrite_is_found_by_checkpoints() {
    let team = TeamState::start(55466);
    let ws = team_workspace(&team);
    ws.run(&["keygen", "-o", "ck.key"]).expect_code(0);
    let outside = ws.path().join("elsewhere.jsonl");
    ws.plan_file("v1").expect_code(2);
    Run(ws
        .cmd(&["apply", "v1.json"])
        .env("FERRY_CHECKPOINT_KEY", "file:ck.key")
        .env("FERRY_CHECKPOINT_FILE", &outside)
        .output()
        .unwrap())
    .expect_code(0);
    let file = outside.display().to_string();
    ws.run(&["ledger", "verify", "--checkpoints", &file])
        .expect_code(0);

    let lines = team.pg.sql("SELECT line FROM ferry.ledger ORDER BY seq");
    let mut entries: Vec<ferry::ledger::Entry> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    entries[1].actor = "mallory".into();
    let mut prev = entries[0].hash.clone();
    for e in entries.iter_mut().skip(1) {
        e.prev = prev;
        e.hash = e.compute_hash();
        prev = e.hash.clone();
    }
    let mut sql = String::from("ALTER TABLE ferry.ledger DISABLE TRIGGER USER;");
    for e in &entries[1..] {
        sql.push_str(&format!(
            "UPDATE ferry.ledger SET line = $l${}$l$ WHERE seq = {};",
            serde_json::to_string(e).unwrap(),
            e.seq
        ));
    }
    sql.push_str("ALTER TABLE ferry.ledger ENABLE TRIGGER USER;");
    team.pg.sql(&sql);
    ws.run(&["ledger", "verify"]).expect_code(0);
    ws.run(&["ledger", "verify", "--checkpoints", &file])
        .expect_code(7)
        .stdout_has("the history up to it was rewritten");
}

/// A state directory's ledger holding every kind of entry moves into the store byte for
/// byte, verifies there, and the move is recorded in both; a second move is refused.
#[test]
fn state_migrate_moves_every_kind_of_entry() {
    let team = TeamState::start(55467);
    let local = tempfile::tempdir().unwrap();
    let file = ferry::ledger::FileLedger::new(local.path().join("ledger.jsonl"));
    for (i, event) in ferry::ledger::Event::ALL.into_iter().enumerate() {
        let mut e = ferry::ledger::NewEntry::new("tester", event).plan("p1");
        e.detail =
            Some(serde_json::json!({ "n": i, "text": "quote \" and newline \n and ünïcode" }));
        file.append(e).unwrap();
    }
    let before = std::fs::read_to_string(local.path().join("ledger.jsonl")).unwrap();
    // An earlier run was cut short after its first batch: the store holds a prefix.
    let mut prefix = String::new();
    for (seq, line) in before.lines().take(10).enumerate() {
        prefix.push_str(&format!(
            "INSERT INTO ferry.ledger (seq, line) VALUES ({seq}, $l${line}$l$);"
        ));
    }
    team.pg.sql(&prefix);
    let ws = Workspace::new();
    let from = local.path().display().to_string();
    ws.run(&["state", "migrate", "--from", &from, "--to", &team.url()])
        .expect_code(0)
        .stdout_has(&format!(
            "{} entries copied (entries up to 9 were there from an earlier run)",
            ferry::ledger::Event::ALL.len() - 10
        ));
    let stored = team.pg.sql("SELECT line FROM ferry.ledger ORDER BY seq");
    let stored: Vec<&str> = stored.lines().collect();
    let original: Vec<&str> = before.lines().collect();
    assert_eq!(
        &stored[..original.len()],
        &original[..],
        "rows are the file's lines, byte for byte"
    );
    assert_eq!(stored.len(), original.len() + 1, "and the move's record");
    let mut team_ws = Workspace::new();
    team_ws.state = Some(team.url());
    // Both backends verify the same way: the same verdict on the same entries (these made-up
    // approval and checkpoint entries carry no signature, which both report at the same seq).
    let verdict = |run: Run, location: &str| run.stdout().replace(location, "LEDGER");
    let stored_verdict = verdict(
        team_ws.run(&["ledger", "verify"]),
        "postgres://ferry_app@127.0.0.1:55467/app (schema ferry)",
    );
    let local_ledger = local.path().join("ledger.jsonl").display().to_string();
    let local_verdict = verdict(
        ws.run(&["--state-dir", &from, "ledger", "verify"]),
        &local_ledger,
    );
    assert!(
        stored_verdict.contains("entry #13 (approval) is not valid"),
        "{stored_verdict}"
    );
    assert_eq!(stored_verdict, local_verdict);
    let moved = team_ws.events("operation_finished");
    assert!(
        moved.last().unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("ledger moved here from")
    );
    let local_after = std::fs::read_to_string(local.path().join("ledger.jsonl")).unwrap();
    assert!(
        local_after
            .lines()
            .last()
            .unwrap()
            .contains("ledger moved to postgres://ferry_app@127.0.0.1:55467/app")
    );
    ws.run(&["state", "migrate", "--from", &from, "--to", &team.url()])
        .expect_code(1)
        .stderr_has("the store holds another history; nothing was copied");
}

/// `ferry lock break` frees a held lock with a record of who and why; the run that held it
/// is fenced off.
#[test]
fn a_broken_lock_is_recorded_and_fences_its_run() {
    let team = TeamState::start(55468);
    broken_lock_fences_its_run(&team_workspace(&team));
}

/// The same with the state directory's lock file.
#[test]
fn a_broken_local_lock_is_recorded_and_fences_its_run() {
    broken_lock_fences_its_run(&Workspace::new());
}

fn broken_lock_fences_its_run(ws: &Workspace) {
    ws.plan_file("v1").expect_code(2);
    ws.hang("clinic-a");
    let first = ws.spawn(&["apply", "v1.json"]);
    ws.wait_hanging("clinic-a");
    ws.run(&["--output", "json", "lock", "status"])
        .expect_code(0)
        .stdout_has("\"held\":true");
    Run(ws
        .cmd(&["lock", "break", "--reason", "runner lost its network"])
        .env("FERRY_ACTOR", "carol")
        .output()
        .unwrap())
    .expect_code(0)
    .stdout_has("Broke the apply lock of tester");
    ws.release("clinic-a");
    finish(first).expect_code(4);
    let broken = ws.events("lock_broken");
    assert_eq!(broken[0]["detail"]["broken_by"], "carol");
    assert_eq!(broken[0]["detail"]["reason"], "runner lost its network");
    assert_eq!(ws.current("clinic-b"), None);
    ws.run(&["ledger", "verify"]).expect_code(0);
}

/// The store over TLS: the server's certificate is checked against `sslrootcert` (and the
/// system's roots); a server ferry cannot verify is refused before any credential is sent.
#[test]
fn the_store_is_reached_over_verified_tls() {
    let pg = crate::support::Postgres::start_tls(55469);
    pg.sql(
        "CREATE ROLE ferry_owner LOGIN PASSWORD 'owner-secret'; GRANT CREATE ON DATABASE app TO ferry_owner",
    );
    let ws = Workspace::new();
    ws.write("owner-pw", "owner-secret");
    let base = format!(
        "postgres://ferry_owner@127.0.0.1:55469/app?password=file:{}",
        ws.path().join("owner-pw").display()
    );
    ws.run(&["--state", &base, "state", "init"])
        .expect_code(1)
        .stderr_has("cannot connect to PostgreSQL at 127.0.0.1:55469");
    let verified = format!("{base}&sslrootcert={}", pg.ca_file().display());
    ws.run(&["--state", &verified, "state", "init"])
        .expect_code(0)
        .stdout_has("applied V1__ledger_and_lock");
    ws.run(&["--state", &verified, "ledger", "verify"])
        .expect_code(0);
    ws.run(&[
        "--state",
        "postgres://ferry_owner:hunter2@127.0.0.1:55469/app",
        "ledger",
        "verify",
    ])
    .expect_code(1)
    .stderr_has("holds a password");
}

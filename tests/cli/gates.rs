//! Condition gates against real servers: a PostgreSQL cluster from Debian's packages (made by
//! ci/postgres.sh) for SQL probes, and the test's own HTTP server as an app's admin endpoint.
//! A gate that does not hold stops the apply (exit 10) with its value recorded; a resume, even
//! after kill -9 during `--wait`, keeps the gate's clock; probes that write, return the wrong
//! shape or cannot connect never pass.

use std::time::{Duration, Instant};

use crate::support::{Admin, Postgres, Workspace};

/// The workspace's inventory with `databases` and the probe's password file.
fn workspace(pg: Option<&Postgres>) -> Workspace {
    let ws = Workspace::new();
    let mut inv = Workspace::inventory("");
    if let Some(pg) = pg {
        inv.push_str("databases:\n");
        inv.push_str(&pg.database("ecrnow-db"));
    }
    ws.write("inventory.yaml", &inv);
    ws.write("pg-password", "probe-secret\n");
    ws
}

/// A plan releasing demo 1.0.0 on clinic-a after the `before` steps given (YAML list items,
/// indented for `before:`).
fn plan_with(name: &str, before: &str, after: &str) -> String {
    format!(
        "version: 1\nkind: release\nname: {name}\nreleases: [{{ app: demo, version: \"1.0.0\" }}]\non_failure: backout\nwaves:\n  - name: only\n    sites: [clinic-a]\n    before:\n{before}    after:\n{after}"
    )
}

fn drain_gate(query: &str, every: &str) -> String {
    format!(
        "      - name: drain-2x\n        wait_until:\n          sql: {{ database: ecrnow-db, query: \"{query}\" }}\n          equals: 0\n          every: {every}\n          deadline: 14d\n"
    )
}

const DRAIN: &str = "select count(*) from scheduled_tasks where app_major = 2";

fn tasks(pg: &Postgres, n2: usize) {
    pg.sql("create table if not exists scheduled_tasks (id serial primary key, app_major int not null)");
    pg.sql("grant select on scheduled_tasks to probe");
    for _ in 0..n2 {
        pg.sql("insert into scheduled_tasks (app_major) values (2), (3)");
    }
}

/// The drain gate waits (exit 10, its value in the JSON report and the ledger) while 2.x timers
/// remain; `--wait` is killed with -9 mid-wait; the resume evaluates again with the same first
/// evaluation (the deadline's clock did not restart) and, the timers gone, releases.
#[test]
fn a_sql_drain_gate_waits_across_processes_and_a_kill_does_not_restart_its_clock() {
    let pg = Postgres::start(55431);
    tasks(&pg, 2);
    let ws = workspace(Some(&pg));
    ws.write(
        "plans/drain.yaml",
        &plan_with("drain", &drain_gate(DRAIN, "1s"), "      []\n"),
    );
    ws.plan_file("drain")
        .expect_code(2)
        .stdout_has("wait until sql on `ecrnow-db`");
    let r = ws.run(&["--output", "json", "apply", "drain.json"]);
    r.expect_code(10);
    let report = r.json();
    assert_eq!(report["outcome"], "awaiting_condition", "{report:#}");
    assert_eq!(report["gates"][0]["name"], "drain-2x");
    assert_eq!(report["gates"][0]["value"], 2);
    assert_eq!(
        ws.current("clinic-a"),
        None,
        "nothing released while draining"
    );
    let first = ws.events("condition_evaluated")[0]["detail"]["clock"]["started_at"].clone();

    // `--wait` polls every second; kill -9 it while it waits.
    let mut child = ws.spawn(&["apply", "--resume", "--wait", "drain.json"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ws.events("apply_started").len() < 2 {
        assert!(Instant::now() < deadline, "the resumed apply never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(2500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(ws.current("clinic-a"), None);

    pg.sql("delete from scheduled_tasks where app_major = 2");
    ws.run(&["apply", "--resume", "drain.json"])
        .expect_code(0)
        .stderr_has("drain-2x: 0 (want = 0): holds");
    assert_eq!(ws.current("clinic-a").as_deref(), Some("1.0.0"));
    let passed = ws
        .events("step_succeeded")
        .into_iter()
        .find(|e| e["to"] == "wait_until")
        .expect("the gate passed");
    assert_eq!(passed["detail"]["clock"]["started_at"], first, "same clock");
    // Polls of the killed `--wait` that saw no change were never recorded (by design: the
    // ledger does not grow with the poll count); the clock's start is what counts.
    assert!(passed["detail"]["clock"]["polls"].as_u64().unwrap() >= 2);
    // Recorded on change, not per poll: 2 (first), ..., 0 (passed).
    let values: Vec<String> = ws
        .events("condition_evaluated")
        .iter()
        .map(|e| e["detail"]["clock"]["last_value"].to_string())
        .collect();
    assert!(values.len() <= 4, "{values:?}");
    ws.run(&["ledger", "verify"]).expect_code(0);
}

/// Probes that write, return two columns or no row, or cannot reach their database never pass:
/// each error names the step (and for a connection, the host and port), and the data is
/// untouched.
#[test]
fn bad_probes_fail_closed_with_errors_that_name_what_failed() {
    let pg = Postgres::start(55432);
    tasks(&pg, 1);
    let ws = workspace(Some(&pg));
    let cases = [
        (
            "writes",
            "delete from scheduled_tasks returning id",
            "read-only transaction",
        ),
        (
            "two-columns",
            "select 1, 2",
            "returns 2 columns; a probe returns one value",
        ),
        (
            "no-row",
            "select id from scheduled_tasks where false",
            "returned 0 rows",
        ),
    ];
    for (name, query, error) in cases {
        ws.write(
            &format!("plans/{name}.yaml"),
            &plan_with(name, &drain_gate(query, "1m"), "      []\n"),
        );
        ws.plan_file(name).expect_code(2);
        let r = ws.run(&["--output", "json", "apply", &format!("{name}.json")]);
        r.expect_code(10);
        let value = r.json()["gates"][0]["value"]["error"].to_string();
        assert!(value.contains(error), "{name}: {value}");
        assert!(value.contains("127.0.0.1:55432"), "{name}: {value}");
    }
    assert_eq!(
        pg.sql("select count(*) from scheduled_tasks"),
        "2",
        "nothing deleted"
    );

    // The database stops: the gate fails closed, naming the host and port.
    drop(pg);
    ws.write(
        "plans/down.yaml",
        &plan_with("down", &drain_gate(DRAIN, "1m"), "      []\n"),
    );
    ws.plan_file("down").expect_code(2);
    let r = ws.run(&["apply", "down.json"]);
    r.expect_code(10)
        .stderr_has("cannot connect to PostgreSQL at 127.0.0.1:55432")
        .stderr_has("[s001]");
    assert_eq!(ws.current("clinic-a"), None);
}

/// An app's admin endpoint: 2.x launches are stopped before the release (and the queue noted),
/// a gate waits for the launches to stop and the queue is noted again after; when the release
/// fails, the back-out starts the launches again.
#[test]
fn quiesce_record_and_http_gates_around_a_release_and_their_undo() {
    let admin = Admin::start();
    admin.state.lock().unwrap().queue = 4;
    // The admin endpoint wants a token: sent from a secret reference, never recorded.
    admin.state.lock().unwrap().token = Some("Bearer t0k3n-admin".into());
    let ws = workspace(None);
    ws.write("admin-token", "Bearer t0k3n-admin\n");
    let auth = "secret_headers: { Authorization: \"file:admin-token\" }";
    let before = format!(
        "      - name: queue-before\n        record: {{ http: {{ url: \"{m}\", field: queue.depth, {auth} }} }}\n      - name: stop-2x-launches\n        http: {{ method: POST, url: \"{stop}\", {auth} }}\n        undo: {{ http: {{ method: POST, url: \"{start}\", {auth} }} }}\n      - name: no-2x-launches\n        wait_until: {{ http: {{ url: \"{m}\", field: /launches_2x, {auth} }}, equals: 0, every: 1s, deadline: 1m }}\n",
        m = admin.url("/metrics"),
        stop = admin.url("/admin/launch/stop"),
        start = admin.url("/admin/launch/start"),
    );
    let after = format!(
        "      - name: queue-after\n        record: {{ http: {{ url: \"{}\", field: queue.depth, {auth} }} }}\n",
        admin.url("/metrics")
    );
    let good = plan_with("good", &before, &after);
    ws.write("plans/good.yaml", &good);
    ws.write(
        "plans/bad.yaml",
        &good
            .replace("1.0.0", "3.0.0")
            .replace("name: good", "name: bad"),
    );
    ws.plan_file("good").expect_code(2);
    ws.run(&["apply", "good.json"])
        .expect_code(0)
        .stderr_has("queue-before = 4")
        .stderr_has("POST ")
        .stderr_has("queue-after = 4");
    assert!(
        !admin.state.lock().unwrap().launching,
        "2.x launches stopped"
    );

    // 3.0.0 fails its check under `backout`: the launches are started again.
    ws.plan_file("bad").expect_code(2);
    ws.run(&["apply", "bad.json"]).expect_code(6);
    let st = admin.state.lock().unwrap();
    assert!(
        st.launching,
        "the back-out resumed the launches: {:?}",
        st.log
    );
    assert_eq!(
        st.log
            .iter()
            .filter(|l| l.starts_with("POST /admin/launch/start"))
            .count(),
        1
    );
    drop(st);
    for file in [".ferry/ledger.jsonl", "good.json", "bad.json"] {
        let text = std::fs::read_to_string(ws.path().join(file)).unwrap();
        assert!(!text.contains("t0k3n"), "the token is in {file}");
        assert!(text.contains("file:admin-token") || file.ends_with("jsonl"));
    }
    let undone = ws.events("step_backed_out");
    assert!(
        undone.iter().any(|e| e["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("undone: POST")),
        "{undone:#?}"
    );
}

/// Every problem of the new fields at once, each located: an unknown database, a deadline
/// shorter than `every`, a negative and an unparseable duration, a literal password, a line
/// major the version does not match.
#[test]
fn gate_and_line_problems_are_reported_together_with_their_lines() {
    let ws = Workspace::new();
    let inv = Workspace::inventory(
        "  - id: ecrnow\n    version: 3.0.0\n    artifact: \"artifacts/{version}\"\n    target: local\n    sites: [clinic-a]\n    lines: [{ major: 2 }, { major: 3 }]\n    health_check: { command: [sh, bin/health] }\n",
    ) + "databases:\n  - { id: pg, engine: postgres, postgres: { host: 127.0.0.1, dbname: app, user: probe, password: hunter2 } }\n";
    ws.write("inventory.yaml", &inv);
    ws.write(
        "plans/bad.yaml",
        "version: 1\nkind: release\nname: bad\nreleases: [{ app: ecrnow@3, version: 2.9.0 }]\non_failure: halt\nwaves:\n  - name: only\n    sites: [clinic-a]\n    before:\n      - name: g1\n        wait_until: { sql: { database: nope, query: select 1 }, equals: 0, every: 10m, deadline: 5m }\n      - name: g2\n        wait_until: { command: [true], every: -5m, deadline: soon }\n      - name: g3\n        http: { url: \"http://gw/stop\", secret_headers: { Authorization: Bearer hunter2 } }\n",
    );
    let r = ws.run(&[
        "plan",
        "-i",
        "inventory.yaml",
        "plans/bad.yaml",
        "-o",
        "bad.json",
    ]);
    r.expect_code(1);
    let err = r.stderr();
    for (what, at) in [
        ("a password is a secret reference", "inventory.yaml:24:"),
        (
            "version `2.9.0` is not on line `ecrnow@3` (major 3)",
            "plans/bad.yaml:4:",
        ),
        ("unknown database `nope`", "plans/bad.yaml:11:"),
        (
            "deadline `5m` is shorter than `every` `10m`",
            "plans/bad.yaml:11:",
        ),
        ("`-5m` is negative", "plans/bad.yaml:13:"),
        ("`soon` is not a duration", "plans/bad.yaml:13:"),
        (
            "a secret header's value is a secret reference",
            "plans/bad.yaml:15:",
        ),
    ] {
        let line = err.lines().find(|l| l.contains(what));
        assert!(
            line.is_some_and(|l| l.contains(at)),
            "{what:?} not reported at {at}:\n{err}"
        );
    }
    assert!(err.contains("7 problems"), "{err}");
    assert!(!err.contains("hunter2"), "no secret echoed: {err}");
}

/// The SCOOP runbooks: a wipe of a gateway's records stops for a person's confirmation, notes
/// the count before, wipes, and waits until the count is 0; an export waits (exit 10) until the
/// clinic's backup marker exists, then runs.
#[cfg(feature = "aws")]
#[test]
fn runbooks_use_the_same_gates_calls_and_records() {
    let admin = Admin::start();
    admin.state.lock().unwrap().records = 12;
    admin.state.lock().unwrap().token = Some("Bearer gw-s3cret".into());
    let ws = workspace(None);
    ws.write("gw-token", "Bearer gw-s3cret\n");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../runbooks");
    let dir = dir.to_str().unwrap();
    let gateway = format!("gateway={}", admin.url(""));
    ws.run(&[
        "runbook",
        "run",
        "gateway-wipe-records",
        "-i",
        "inventory.yaml",
        "--dir",
        dir,
        "--param",
        &gateway,
        "--param",
        "request=REQ-1234",
        "--param",
        "auth=file:gw-token",
        "-o",
        "wipe.json",
    ])
    .expect_code(8)
    .stdout_has("Check request REQ-1234");
    assert_eq!(
        admin.state.lock().unwrap().records,
        12,
        "nothing before the confirmation"
    );
    ws.run(&[
        "apply",
        "--resume",
        "wipe.json",
        "--confirm",
        "confirm-request",
    ])
    .expect_code(0)
    .stderr_has("records-before = 12");
    assert_eq!(admin.state.lock().unwrap().records, 0);
    let wiped = ws
        .events("step_succeeded")
        .into_iter()
        .find(|e| e["to"] == "http")
        .expect("the wipe is recorded");
    assert!(
        wiped["message"]
            .as_str()
            .unwrap()
            .starts_with("DELETE http://127.0.0.1:")
    );
    let ledger = std::fs::read_to_string(ws.ledger_path()).unwrap();
    assert!(!ledger.contains("gw-s3cret"), "the token is not recorded");

    ws.run(&[
        "runbook",
        "run",
        "export-after-backup",
        "-i",
        "inventory.yaml",
        "--dir",
        dir,
        "--param",
        "marker=backup-done",
        "--param",
        "export=touch exported",
        "-o",
        "export.json",
    ])
    .expect_code(10);
    assert!(
        !ws.path().join("exported").exists(),
        "no export before the backup"
    );
    ws.write("backup-done", "");
    ws.run(&["apply", "--resume", "export.json"]).expect_code(0);
    assert!(ws.path().join("exported").exists());
}

/// A gate's probe is part of the sealed plan: a saved plan whose command was edited after it was
/// made (to run something else on the operator's machine) is refused before anything runs.
#[test]
fn an_edited_gate_command_is_refused_before_anything_runs() {
    let ws = workspace(None);
    ws.write(
        "plans/g.yaml",
        &plan_with(
            "g",
            "      - name: ready\n        wait_until: { command: [sh, -c, 'echo 0'], equals: 0, every: 1s, deadline: 1m }\n",
            "      []\n",
        ),
    );
    ws.plan_file("g").expect_code(2);
    let path = ws.path().join("g.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("echo 0"));
    std::fs::write(&path, text.replace("echo 0", "touch pwned; echo 0")).unwrap();
    // Sealed: the bytes differ from the digest `plan_created` recorded.
    ws.run(&["apply", "g.json"]).expect_code(3);
    // Even trusted as a file another state directory never saw, its body is not what its
    // inputs produce.
    ws.run(&[
        "--state-dir",
        "other",
        "apply",
        "--trust-plan-file",
        "g.json",
    ])
    .expect_code(3)
    .stderr_has("step s001 differs");
    assert!(!ws.path().join("pwned").exists());
    assert_eq!(ws.current("clinic-a"), None);
}

/// A database that takes TLS only: `verify-full` with the site's CA passes the gate; without
/// the CA the certificate is refused, and `tls: disable` is turned away by the server; both
/// fail closed, naming the host and port.
#[test]
fn a_sql_probe_over_tls_verifies_the_servers_certificate() {
    let pg = Postgres::start_tls(55434);
    tasks(&pg, 0);
    let ca = pg.ca_file();
    let cases = [
        (
            "with-ca",
            format!("tls: verify-full, ca_file: \"{}\"", ca.display()),
            0,
        ),
        ("no-ca", "tls: verify-full".to_owned(), 10),
        ("plain", "tls: disable".to_owned(), 10),
    ];
    for (name, tls, code) in cases {
        let ws = workspace(None);
        let inv = Workspace::inventory("") + "databases:\n" + &pg.database_with("ecrnow-db", &tls);
        ws.write("inventory.yaml", &inv);
        ws.write(
            "plans/t.yaml",
            &plan_with("t", &drain_gate(DRAIN, "1m"), "      []\n"),
        );
        ws.plan_file("t").expect_code(2);
        let r = ws.run(&["--output", "json", "apply", "t.json"]);
        r.expect_code(code);
        if code == 10 {
            let err = r.json()["gates"][0]["value"]["error"].to_string();
            assert!(
                err.contains("cannot connect to PostgreSQL at 127.0.0.1:55434"),
                "{name}: {err}"
            );
            let why = if name == "no-ca" {
                "certificate"
            } else {
                "no encryption"
            };
            assert!(err.contains(why), "{name}: {err}");
        }
    }
}

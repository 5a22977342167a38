//! `ferry apply` and `ferry backout`: staleness, locking, policies, secrets.

use crate::support::Workspace;

#[test]
fn apply_deploys_upgrades_and_records_every_step() {
    let ws = Workspace::new();
    ws.plan_file("v1").expect_code(2);
    ws.run(&["apply", "v1.json"])
        .expect_code(0)
        .stdout_has("completed: 3 step(s) succeeded");
    ws.plan_file("v2")
        .expect_code(2)
        .stdout_has("~ clinic-b/local/demo  1.0.0 -> 2.0.0");
    let run = ws.run(&["--output", "json", "apply", "v2.json"]);
    run.expect_code(0);
    let doc = run.json();
    assert_eq!(doc["format"], "ferry.apply-report");
    assert_eq!(doc["outcome"], "completed");
    assert!(
        doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "succeeded")
    );
    for site in ["clinic-a", "clinic-b", "clinic-c"] {
        assert_eq!(ws.current(site).as_deref(), Some("2.0.0"));
        let conf = std::fs::read_to_string(
            ws.path()
                .join(format!("targets/{site}/demo/current/app.conf")),
        )
        .unwrap();
        assert_eq!(
            conf,
            format!("site = {site}\nversion = 2.0.0\n"),
            "rendered from the template"
        );
    }
    let ok = ws.events("step_succeeded");
    assert_eq!(ok.len(), 6);
    let e = &ok[5];
    assert_eq!(e["actor"], "tester");
    assert_eq!(e["from"], "1.0.0");
    assert_eq!(e["to"], "2.0.0");
    assert_eq!(e["outcome"], "ok");
    assert!(e["duration_ms"].is_u64());
    assert!(
        e["plan_id"].is_string()
            && e["site"].is_string()
            && e["target"].is_string()
            && e["time"].is_string()
    );
    // Applying the same plan again is refused: it already ran.
    ws.run(&["apply", "v2.json"])
        .expect_code(1)
        .stderr_has("already applied");
}

#[test]
fn a_plan_whose_inputs_changed_is_refused_naming_them() {
    let ws = Workspace::new();
    ws.plan_file("v1").expect_code(2);
    ws.write(
        "inventory.yaml",
        &format!("{}# edited after planning\n", Workspace::inventory("")),
    );
    ws.run(&["apply", "v1.json"])
        .expect_code(3)
        .stderr_has("stale")
        .stderr_has("inventory")
        .stderr_has("inventory.yaml changed since the plan was made");
    assert_eq!(ws.current("clinic-a"), None, "nothing was touched");

    let ws = Workspace::new();
    ws.plan_file("v1").expect_code(2);
    ws.write("artifacts/1.0.0/extra.txt", "sneaked in");
    ws.run(&["apply", "v1.json"])
        .expect_code(3)
        .stderr_has("artifact")
        .stderr_has("artifacts/1.0.0 changed since the plan was made");
}

#[test]
fn a_plan_whose_target_changed_is_refused_naming_it() {
    let ws = Workspace::new();
    ws.deploy("v1");
    ws.plan_file("v2").expect_code(2);
    // Someone switches clinic-b by hand (a different plan) after v2 was planned.
    ws.write(
        "plans/b-only.yaml",
        &Workspace::site_plan("b", "2.0.0", "clinic-b", "halt"),
    );
    ws.deploy("b-only");
    ws.run(&["apply", "v2.json"])
        .expect_code(3)
        .stderr_has("target clinic-b/local/demo changed since the plan was made: it serves 2.0.0");
    assert_eq!(
        ws.current("clinic-a").as_deref(),
        Some("1.0.0"),
        "nothing was touched"
    );
}

#[test]
fn a_second_concurrent_apply_is_refused_naming_the_holder() {
    let ws = Workspace::new();
    ws.deploy("v1");
    ws.plan_file("v2").expect_code(2);
    ws.hang("clinic-a");
    let first = ws
        .cmd(&["--actor", "alice", "apply", "v2.json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    ws.wait_hanging("clinic-a");
    ws.run(&["apply", "v2.json"])
        .expect_code(4)
        .stderr_has("another apply holds the lock: alice (pid");
    ws.release("clinic-a");
    let out = first.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !ws.path().join(".ferry/apply.lock").exists(),
        "the lock is released"
    );
    assert_eq!(ws.events("lock_taken").len(), 2);
    assert_eq!(ws.events("lock_released").len(), 2);
}

#[test]
fn a_failed_release_is_backed_out_and_the_previous_version_verified() {
    let ws = Workspace::new();
    ws.deploy("v1");
    ws.plan_file("v3-backout").expect_code(2);
    ws.run(&["apply", "v3-backout.json"])
        .expect_code(6)
        .stdout_has("BACKED OUT: failed s001")
        .stderr_has("health check did not pass");
    for site in ["clinic-a", "clinic-b", "clinic-c"] {
        assert_eq!(ws.current(site).as_deref(), Some("1.0.0"), "{site}");
    }
    let backed = ws.events("step_backed_out");
    assert_eq!(backed.len(), 1);
    assert_eq!(backed[0]["target"], "clinic-a/local/demo");
    assert!(
        backed[0]["message"]
            .as_str()
            .unwrap()
            .contains("back to 1.0.0, verified")
    );
    assert_eq!(
        ws.events("apply_finished").last().unwrap()["outcome"],
        "backed_out"
    );
    ws.run(&["apply", "--resume", "v3-backout.json"])
        .expect_code(1)
        .stderr_has("was backed out; make a new plan");
}

#[test]
fn a_failure_in_a_later_wave_backs_out_earlier_waves_too() {
    let ws = Workspace::new();
    ws.deploy("v1");
    // 2.0.0 fails only on clinic-c: make its artifact check fail there.
    ws.write(
        "inventory.yaml",
        &Workspace::inventory("    env: { FERRY_IT_FAIL_SITE: clinic-c }\n"),
    );
    let health = std::fs::read_to_string(ws.path().join("artifacts/2.0.0/bin/health")).unwrap();
    ws.write(
        "artifacts/2.0.0/bin/health",
        &health.replace(
            "test \"$(cat VERSION)\"",
            "[ \"$FERRY_SITE\" != \"$FERRY_IT_FAIL_SITE\" ] && test \"$(cat VERSION)\"",
        ),
    );
    ws.plan_file("v2").expect_code(2);
    ws.run(&["apply", "v2.json"])
        .expect_code(6)
        .stdout_has("failed s003");
    for site in ["clinic-a", "clinic-b", "clinic-c"] {
        assert_eq!(
            ws.current(site).as_deref(),
            Some("1.0.0"),
            "{site} back on 1.0.0"
        );
    }
    let undone: Vec<String> = ws
        .events("step_backed_out")
        .iter()
        .map(|e| e["step"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        undone,
        ["s003", "s002", "s001"],
        "the failed site first, then completed steps newest first"
    );
}

#[test]
fn halt_leaves_a_resumable_record_and_backout_returns_a_site() {
    let ws = Workspace::new();
    ws.deploy("v1");
    ws.deploy("v2");
    ws.plan_file("v3-halt").expect_code(2);
    ws.run(&["apply", "v3-halt.json"])
        .expect_code(5)
        .stdout_has("HALTED")
        .stdout_has("ferry apply --resume v3-halt.json");
    assert_eq!(
        ws.current("clinic-a").as_deref(),
        Some("3.0.0"),
        "halt leaves the failed canary as it is"
    );
    assert_eq!(ws.current("clinic-b").as_deref(), Some("2.0.0"));
    // On-call returns the canary to its previous recorded release.
    ws.backout("clinic-a", &[])
        .expect_code(0)
        .stdout_has("~ clinic-a/local/demo  3.0.0 -> 2.0.0");
    assert_eq!(ws.current("clinic-a").as_deref(), Some("2.0.0"));
    // And once more: the release before 2.0.0 on record is 3.0.0 (the ledger's own history).
    let dry = ws.backout("clinic-b", &["--dry-run"]);
    dry.expect_code(2)
        .stdout_has("clinic-b/local/demo  2.0.0 -> 1.0.0");
    assert_eq!(
        ws.current("clinic-b").as_deref(),
        Some("2.0.0"),
        "a dry run changes nothing"
    );
    ws.backout("clinic-b", &["--to", "9.9.9"])
        .expect_code(1)
        .stderr_has("release 9.9.9 is no longer on clinic-b/local/demo");
}

#[test]
fn secrets_reach_the_app_but_never_plans_output_or_the_ledger() {
    const SECRET: &str = "TOPSECRET-4711";
    let ws = Workspace::new();
    ws.write(
        "inventory.yaml",
        &Workspace::inventory("    secrets: { DEMO_TOKEN: \"env:FERRY_IT_TOKEN\" }\n"),
    );
    ws.plan_file("v1").expect_code(2);
    let run = ws
        .cmd(&["apply", "v1.json"])
        .env("FERRY_IT_TOKEN", SECRET)
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // The bad release prints the token in its failing health output: it must come out redacted.
    ws.plan_file("v3-backout").expect_code(2);
    let bad = ws
        .cmd(&["apply", "v3-backout.json"])
        .env("FERRY_IT_TOKEN", SECRET)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(6));
    let mut everything = String::new();
    for out in [&run, &bad] {
        everything.push_str(&String::from_utf8_lossy(&out.stdout));
        everything.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    everything.push_str(&std::fs::read_to_string(ws.ledger_path()).unwrap());
    everything.push_str(&std::fs::read_to_string(ws.path().join("v1.json")).unwrap());
    assert!(
        everything.contains("token in use: ***"),
        "the failing check's output is shown, redacted"
    );
    assert!(!everything.contains(SECRET), "the secret leaked");
    // Missing secret: refused before anything changes.
    ws.plan_file("v2").expect_code(2);
    ws.cmd(&["apply", "v2.json"])
        .env_remove("FERRY_IT_TOKEN")
        .output()
        .map(|o| {
            assert_eq!(o.status.code(), Some(1));
            assert!(
                String::from_utf8_lossy(&o.stderr)
                    .contains("environment variable `FERRY_IT_TOKEN` is not set")
            );
        })
        .unwrap();
    assert_eq!(ws.current("clinic-a").as_deref(), Some("1.0.0"));
}

#[test]
fn ctrl_c_stops_at_a_safe_point_and_resume_finishes() {
    let ws = Workspace::new();
    ws.plan_file("v1").expect_code(2);
    ws.hang("clinic-a");
    let mut child = ws.spawn(&["apply", "v1.json"]);
    ws.wait_hanging("clinic-a");
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    // Release the held check only once ferry has taken the signal (no sleep-based guess).
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "ferry exited before acknowledging Ctrl-C:\n{seen}");
        seen.push_str(&line);
        if line.contains("stopping at the next safe point") {
            break;
        }
    }
    ws.release("clinic-a");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("interrupted at a safe point; 2 step(s) left"),
        "{stdout}"
    );
    assert!(stdout.contains("ferry apply --resume v1.json"), "{stdout}");
    assert_eq!(
        ws.current("clinic-a").as_deref(),
        Some("1.0.0"),
        "the step in flight finished"
    );
    assert_eq!(ws.current("clinic-b"), None, "nothing new started");
    ws.run(&["apply", "--resume", "v1.json"])
        .expect_code(0)
        .stdout_has("2 step(s) succeeded, 1 already done");
    assert_eq!(ws.events("apply_interrupted").len(), 1);
}

#[test]
fn a_second_ctrl_c_exits_at_once_and_resume_still_finishes() {
    let ws = Workspace::new();
    ws.plan_file("v1").expect_code(2);
    ws.hang("clinic-a");
    let mut child = ws.spawn(&["apply", "v1.json"]);
    ws.wait_hanging("clinic-a");
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    for expected in ["stopping at the next safe point", "exiting now"] {
        // SAFETY: sending SIGINT to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        loop {
            let mut line = String::new();
            let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
            assert!(n > 0, "ferry exited before saying {expected:?}:\n{seen}");
            seen.push_str(&line);
            if line.contains(expected) {
                break;
            }
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert_eq!(ws.current("clinic-b"), None, "nothing else started");
    ws.release("clinic-a");
    // The step in flight was cut off: resume runs it again (idempotent) and finishes the plan.
    ws.run(&["apply", "--resume", "v1.json"]).expect_code(0);
    for site in ["clinic-a", "clinic-b", "clinic-c"] {
        assert_eq!(ws.current(site).as_deref(), Some("1.0.0"), "{site}");
    }
    ws.run(&["ledger", "verify"]).expect_code(0);
}

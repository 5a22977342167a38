//! `kill -9` at any point of an apply, then `--resume`: the plan finishes, no completed step
//! runs twice, the lock left behind is taken over and that is recorded.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::Workspace;

fn assert_consistent_after_resume(ws: &Workspace, plan: &str, version: &str) {
    let resumed = ws.run(&["apply", "--resume", plan]);
    resumed.expect_code(0);
    for site in ["clinic-a", "clinic-b", "clinic-c"] {
        assert_eq!(
            ws.current(site).as_deref(),
            Some(version),
            "{site} after resume"
        );
    }
    let mut per_step: BTreeMap<String, usize> = BTreeMap::new();
    for e in ws.events("step_succeeded") {
        if e["to"] == version {
            *per_step
                .entry(e["step"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(per_step.len(), 3, "{per_step:?}");
    assert!(
        per_step.values().all(|n| *n == 1),
        "a completed step ran twice: {per_step:?}"
    );
    ws.run(&["ledger", "verify"]).expect_code(0);
}

#[test]
fn kill_9_mid_step_then_resume() {
    let ws = Workspace::new();
    ws.deploy("v1");
    ws.plan_file("v2").expect_code(2);
    ws.hang("clinic-b");
    let mut child = ws.spawn(&["apply", "v2.json"]);
    ws.wait_hanging("clinic-b");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    ws.release("clinic-b");
    assert!(
        ws.path().join(".ferry/apply.lock").exists(),
        "the dead process left its lock"
    );
    let done: Vec<String> = ws
        .events("step_succeeded")
        .iter()
        .filter(|e| e["to"] == "2.0.0")
        .map(|e| e["target"].as_str().unwrap().to_owned())
        .collect();
    // clinic-c runs beside the held clinic-b: it may or may not have finished when killed.
    assert!(
        done.contains(&"clinic-a/local/demo".to_owned()),
        "the canary had finished: {done:?}"
    );
    assert!(
        !done.contains(&"clinic-b/local/demo".to_owned()),
        "clinic-b was killed mid-step: {done:?}"
    );
    // Without --resume the plan is refused: it was started.
    ws.run(&["apply", "v2.json"])
        .expect_code(1)
        .stderr_has("--resume");
    assert_consistent_after_resume(&ws, "v2.json", "2.0.0");
    let broken = ws.events("lock_broken");
    assert_eq!(broken.len(), 1);
    assert!(
        broken[0]["message"]
            .as_str()
            .unwrap()
            .contains("is gone from this host"),
        "{}",
        broken[0]
    );
}

/// Kills the apply at many points in time, each followed by a resume.
#[test]
fn kill_9_at_any_point_then_resume() {
    for delay_ms in [0u64, 40, 90, 150, 220, 300, 420, 600] {
        let ws = Workspace::new();
        ws.plan_file("v1").expect_code(2);
        let mut child = ws
            .cmd(&["apply", "v1.json"])
            .env("FERRY_IT_SLOW", "0.1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        // The ledger is intact whatever the moment of the kill.
        ws.run(&["ledger", "verify"]).expect_code(0);
        let started = ws.events("apply_started").len();
        if started == 0 {
            // Killed before the apply began: a plain apply still works.
            ws.run(&["apply", "v1.json"]).expect_code(0);
            continue;
        }
        assert_consistent_after_resume(&ws, "v1.json", "1.0.0");
    }
}

#[test]
fn an_expired_lease_of_another_host_is_taken_over_and_recorded() {
    let ws = Workspace::new();
    ws.plan_file("v1").expect_code(2);
    std::fs::create_dir_all(ws.path().join(".ferry")).unwrap();
    let stale = serde_json::json!({ "actor": "bob", "host": "other-host", "pid": 4242, "plan_id": "old", "acquired_at_ms": 1, "lease_until_ms": 2 });
    std::fs::write(ws.path().join(".ferry/apply.lock"), stale.to_string()).unwrap();
    ws.run(&["apply", "v1.json"]).expect_code(0);
    let broken = ws.events("lock_broken");
    assert_eq!(broken.len(), 1);
    assert_eq!(broken[0]["detail"]["previous"]["actor"], "bob");
    assert!(
        broken[0]["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("lease expired")
    );

    // A live lease of another host is respected.
    let live = serde_json::json!({ "actor": "bob", "host": "other-host", "pid": 4242, "plan_id": "old", "acquired_at_ms": 1, "lease_until_ms": u64::MAX / 2 });
    std::fs::write(ws.path().join(".ferry/apply.lock"), live.to_string()).unwrap();
    ws.plan_file("v2").expect_code(2);
    ws.run(&["apply", "v2.json"])
        .expect_code(4)
        .stderr_has("bob (pid 4242 on other-host");
}

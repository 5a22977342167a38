//! The lock, resume and ledger guarantees under the conditions that broke them: a holder
//! paused past its lease, a back-out that failed, a second process in its own pid namespace,
//! Ctrl-C from a terminal, a torn last line and a damaged ledger. Each with the release binary.

use std::time::{Duration, Instant};

use crate::support::Workspace;

fn wait_for(path: &std::path::Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill only sends a signal to a process (group) this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

/// A good release 4.0.0 (the hotfix) and a one-wave plan of it for every site.
fn hotfix(ws: &Workspace) {
    let d = ws.path().join("artifacts/4.0.0");
    std::fs::create_dir_all(d.join("bin")).unwrap();
    std::fs::write(d.join("VERSION"), "4.0.0").unwrap();
    std::fs::copy(
        ws.path().join("artifacts/1.0.0/bin/health"),
        d.join("bin/health"),
    )
    .unwrap();
    ws.write(
        "plans/hotfix.yaml",
        "version: 1\nkind: release\nname: hotfix\nreleases: [{ app: demo, version: \"4.0.0\" }]\nwaves: [{ name: all, sites: [clinic-a, clinic-b, clinic-c], max_parallel: 3 }]\non_failure: halt\n",
    );
}

/// Apply A (2 s lease) is stopped with SIGSTOP in its first step; B takes the lock over after
/// the lease, applies the hotfix everywhere and finishes; A is continued. A must not act or
/// record anything after the takeover but that it lost the lock: the hotfix stays everywhere.
#[test]
fn a_paused_holder_that_lost_its_lock_cannot_act_or_record() {
    let ws = Workspace::new();
    hotfix(&ws);
    ws.deploy("v1");
    ws.plan_file("v2").expect_code(2);
    ws.hang("clinic-a");
    let a = ws.spawn(&["apply", "v2.json", "--lock-lease-seconds", "2"]);
    ws.wait_hanging("clinic-a");
    signal(a.id(), libc::SIGSTOP);
    // A's health check (a child of A, not stopped) may now pass: A cannot see it yet.
    ws.release("clinic-a");
    // Past A's lease (renewed at most every 2/3 s before it stopped).
    std::thread::sleep(Duration::from_millis(3500));
    ws.plan_file("hotfix").expect_code(2);
    let b = ws.run(&["apply", "hotfix.json"]);
    b.expect_code(0);
    let broken = ws.events("lock_broken");
    assert_eq!(broken.len(), 1);
    let reason = broken[0]["message"].as_str().unwrap();
    assert!(reason.contains("stopped renewing"), "{reason}");
    let b_finished = ws.ledger().len();
    signal(a.id(), libc::SIGCONT);
    let out = a.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("no longer holds the apply lock"),
        "{stderr}"
    );
    for site in ["clinic-a", "clinic-b", "clinic-c"] {
        assert_eq!(ws.current(site).as_deref(), Some("4.0.0"), "{site}");
    }
    // After B's last entry, A wrote exactly one: that it lost the lock.
    let after: Vec<_> = ws.ledger().into_iter().skip(b_finished).collect();
    let events: Vec<&str> = after.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["lock_lost"], "{after:#?}");
    ws.run(&["ledger", "verify"]).expect_code(0);
    // The next apply starts cleanly: nothing is left locked.
    ws.run(&["apply", "--resume", "hotfix.json"]).expect_code(0);
}

/// A health script that fails for `fail-SITE-VERSION` files in the workspace.
fn failing_health(ws: &Workspace) {
    for v in ["1.0.0", "2.0.0"] {
        ws.write(
            &format!("artifacts/{v}/bin/health"),
            "#!/bin/sh\n[ -e \"$FERRY_IT_HANG_DIR/fail-$FERRY_SITE-$FERRY_VERSION\" ] && exit 1\ntest \"$(cat VERSION)\" = \"$FERRY_VERSION\"\n",
        );
    }
}

/// A wave fails, the back-out of the canary fails too (its old release does not verify); after
/// the faults are gone, resume must redo the canary's step: it does not count a step whose
/// back-out began as done, and never reports success while a site serves the old release.
#[test]
fn resume_after_a_failed_back_out_redoes_the_backed_out_step() {
    let ws = Workspace::new();
    failing_health(&ws);
    ws.write(
        "inventory.yaml",
        &Workspace::inventory("").replace("timeout_seconds: 8", "timeout_seconds: 1"),
    );
    ws.deploy("v1");
    ws.plan_file("v2").expect_code(2);
    ws.write("fail-clinic-c-2.0.0", "");
    ws.write("fail-clinic-a-1.0.0", "");
    ws.run(&["apply", "v2.json"])
        .expect_code(1)
        .stdout_has("UNDO FAILED");
    assert_eq!(ws.current("clinic-a").as_deref(), Some("1.0.0"));
    std::fs::remove_file(ws.path().join("fail-clinic-c-2.0.0")).unwrap();
    std::fs::remove_file(ws.path().join("fail-clinic-a-1.0.0")).unwrap();
    let r = ws.run(&["--output", "json", "apply", "--resume", "v2.json"]);
    r.expect_code(0);
    for site in ["clinic-a", "clinic-b", "clinic-c"] {
        assert_eq!(ws.current(site).as_deref(), Some("2.0.0"), "{site}");
    }
    let report = r.json();
    let a = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["target"].as_str().unwrap().starts_with("clinic-a"))
        .unwrap()
        .clone();
    assert_eq!(a["status"], "succeeded", "{report:#}");
}

/// A second apply in its own pid namespace (same host name) sees the holder alive through the
/// holder's own lock, not its pid, and is refused naming it.
#[test]
fn a_holder_in_another_pid_namespace_is_not_mistaken_for_dead() {
    let ws = Workspace::new();
    ws.deploy("v1");
    ws.plan_file("v2").expect_code(2);
    ws.plan_file("v3-halt").expect_code(2);
    ws.hang("clinic-a");
    let mut a = ws.spawn(&["apply", "v2.json"]);
    ws.wait_hanging("clinic-a");
    // The same environment as every ferry the tests run, in a pid namespace of its own.
    let template = ws.cmd(&[]);
    let mut unshare = std::process::Command::new("unshare");
    unshare
        .args(["--pid", "--fork", "--kill-child", crate::support::BIN])
        .args(["apply", "v3-halt.json"])
        .current_dir(ws.path());
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => unshare.env(k, v),
            None => unshare.env_remove(k),
        };
    }
    let out = unshare.output().expect("unshare (util-linux) runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("another apply holds the lock: tester"),
        "{stderr}"
    );
    assert!(ws.events("lock_broken").is_empty(), "no takeover");
    ws.release("clinic-a");
    assert!(a.wait().unwrap().success());
}

/// Ctrl-C from a terminal reaches ferry's whole process group: the restart command it is
/// running must finish (its own group), and the run stop at the safe point, resumable.
#[test]
fn ctrl_c_to_the_process_group_lets_the_running_command_finish() {
    use std::os::unix::process::CommandExt;
    let ws = Workspace::new();
    ws.write(
        "inventory.yaml",
        &Workspace::inventory("    restart: [sh, bin/restart]\n"),
    );
    for v in ["1.0.0", "2.0.0"] {
        ws.write(
            &format!("artifacts/{v}/bin/restart"),
            "#!/bin/sh\ntouch \"$FERRY_IT_HANG_DIR/restarting-$FERRY_SITE-$FERRY_VERSION\"\nsleep 1.5\ntouch \"$FERRY_IT_HANG_DIR/restarted-$FERRY_SITE-$FERRY_VERSION\"\n",
        );
    }
    ws.deploy("v1");
    ws.plan_file("v2").expect_code(2);
    let mut cmd = ws.cmd(&["apply", "v2.json"]);
    cmd.process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    wait_for(
        &ws.path().join("restarting-clinic-a-2.0.0"),
        "the canary's restart",
    );
    signal(child.id(), 0); // still there
    // SAFETY: a negative pid signals the process group this test made.
    assert_eq!(
        unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGINT) },
        0
    );
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        ws.path().join("restarted-clinic-a-2.0.0").exists(),
        "the restart finished"
    );
    assert!(ws.events("step_failed").is_empty(), "nothing failed");
    assert!(
        ws.events("undo_started").is_empty(),
        "nothing was backed out"
    );
    assert_eq!(ws.current("clinic-a").as_deref(), Some("2.0.0"));
    ws.run(&["apply", "--resume", "v2.json"]).expect_code(0);
    assert_eq!(ws.current("clinic-c").as_deref(), Some("2.0.0"));
}

/// A torn last line stops appends (no entry is glued to it), `verify` says it is torn, and
/// `ferry ledger repair` mends it with a record: completing a whole entry, or setting torn
/// bytes aside.
#[test]
fn a_torn_last_line_is_never_appended_to_and_repair_is_recorded() {
    let ws = Workspace::new();
    ws.deploy("v1");
    let path = ws.ledger_path();
    let bytes = std::fs::read(&path).unwrap();
    // The newline of the last entry is missing: the entry itself is whole.
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    ws.plan_file("v2")
        .expect_code(7)
        .stderr_has("torn last line");
    ws.run(&["ledger", "verify"])
        .expect_code(7)
        .stdout_has("incomplete");
    ws.run(&["apply", "v1.json"]).expect_code(7);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        &bytes[..bytes.len() - 1],
        "nothing appended"
    );
    ws.run(&["ledger", "repair", "--reason", "power cut during apply"])
        .expect_code(0)
        .stdout_has("was whole but missing its newline");
    ws.run(&["ledger", "verify"]).expect_code(0);
    let repaired = ws.events("ledger_repaired");
    assert_eq!(repaired.len(), 1);
    assert_eq!(repaired[0]["actor"], "tester");
    // Now a real tear: 10 bytes cut off the last entry. They are kept aside.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let r = ws.run(&[
        "--output",
        "json",
        "ledger",
        "repair",
        "--reason",
        "disk full",
    ]);
    r.expect_code(0);
    let kept = r.json()["result"]["kept_at"].as_str().unwrap().to_owned();
    let torn_len = bytes[..bytes.len() - 10]
        .iter()
        .rev()
        .position(|b| *b == b'\n')
        .unwrap();
    assert_eq!(std::fs::read(&kept).unwrap().len(), torn_len);
    ws.run(&["ledger", "verify"]).expect_code(0);
    ws.deploy("v2");
}

/// A damaged entry in the middle: apply and back-out refuse to act on the ledger
/// (exit 7 naming the line), and nothing changes on the targets.
#[test]
fn nothing_acts_on_a_ledger_that_does_not_verify() {
    let ws = Workspace::new();
    ws.deploy("v1");
    ws.plan_file("v2").expect_code(2);
    let path = ws.ledger_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let k = lines.len() / 2;
    lines[k] = lines[k].replacen("\"actor\":\"tester\"", "\"actor\":\"mallory\"", 1);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let line = format!("line {}", k + 1);
    ws.run(&["apply", "v2.json"])
        .expect_code(7)
        .stderr_has("does not verify")
        .stderr_has(&line);
    ws.backout("clinic-a", &[]).expect_code(7).stderr_has(&line);
    for site in ["clinic-a", "clinic-b", "clinic-c"] {
        assert_eq!(ws.current(site).as_deref(), Some("1.0.0"));
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        lines.join("\n") + "\n"
    );
}

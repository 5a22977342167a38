//! Attacks on the release path, each tried the way an attacker would with the real binary:
//! whoever writes an inventory, a template, an artifact or a saved plan. Each is refused or
//! contained, with a clear error.

use crate::support::Workspace;

fn outside() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// An env or secret name that is shell text is a located validation error, not a command run
/// on every endpoint.
#[test]
fn env_and_secret_names_that_are_shell_text_are_refused_at_validation() {
    let ws = Workspace::new();
    let pwned = ws.path().join("pwned");
    ws.write(
        "inventory.yaml",
        &Workspace::inventory(&format!(
            "    env: {{ \"LOG=1; touch {} ; X\": \"1\", GOOD_NAME: \"2\" }}\n    secrets: {{ \"$(id)\": \"env:HOME\", \"9LIVES\": \"env:HOME\" }}\n",
            pwned.display()
        )),
    );
    let r = ws.run(&["validate", "-i", "inventory.yaml", "plans/v1.yaml"]);
    r.expect_code(1)
        .stderr_has("inventory.yaml:")
        .stderr_has("apps[0].env.LOG=1; touch")
        .stderr_has("is not an environment variable name")
        .stderr_has("apps[0].secrets.$(id)")
        .stderr_has("apps[0].secrets.9LIVES");
    assert!(!r.stderr().contains("GOOD_NAME"), "{}", r.stderr());
    ws.plan_file("v1").expect_code(1);
    assert!(!pwned.exists());
}

/// A template cannot read ferry's environment (another app's secret, cloud credentials):
/// neither into a rendered file nor into an error message.
#[test]
fn a_template_cannot_read_the_operators_environment() {
    let ws = Workspace::new();
    ws.write(
        "templates/app.conf.tera",
        "site = {{ site }}\nleak = {{ get_env(name=\"FERRY_IT_OTHER_SECRET\") }}\n",
    );
    let leak = "aws-secret-7f3a9c";
    let mut plan = ws.cmd(&[
        "plan",
        "-i",
        "inventory.yaml",
        "plans/v1.yaml",
        "-o",
        "v1.json",
    ]);
    plan.env("FERRY_IT_OTHER_SECRET", leak);
    let out = plan.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let mut apply = ws.cmd(&["apply", "v1.json"]);
    apply.env("FERRY_IT_OTHER_SECRET", leak);
    let out = apply.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("get_env is not available"), "{text}");
    assert!(!text.contains(leak), "{text}");
    let ledger = std::fs::read_to_string(ws.ledger_path()).unwrap_or_default();
    assert!(!ledger.contains(leak));
    assert_eq!(ws.current("clinic-a"), None, "nothing was deployed");
    // `throw` with it is refused the same way.
    ws.write(
        "templates/app.conf.tera",
        "{{ throw(message=get_env(name=\"FERRY_IT_OTHER_SECRET\")) }}\n",
    );
    ws.plan_file("v1").expect_code(2);
    let mut apply = ws.cmd(&["apply", "v1.json"]);
    apply.env("FERRY_IT_OTHER_SECRET", leak);
    let out = apply.output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!text.contains(leak) && text.contains("get_env"), "{text}");
}

/// A symlink in an artifact never makes ferry write outside the release: a link that leaves
/// the tree, a config `dest` through a link, and the marker as a link are refused at plan time,
/// naming the entry; nothing outside is touched.
#[test]
fn artifact_symlinks_cannot_redirect_writes_outside_the_release() {
    let ws = Workspace::new();
    let out = outside();
    let victim = out.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let art = ws.path().join("artifacts/2.0.0");
    // conf -> outside, config written to conf/app.conf.
    std::os::unix::fs::symlink(out.path(), art.join("conf")).unwrap();
    ws.write(
        "inventory.yaml",
        &Workspace::inventory("").replace("dest: app.conf", "dest: conf/app.conf"),
    );
    ws.plan_file("v2")
        .expect_code(1)
        .stderr_has("conf: symlink to")
        .stderr_has("leads outside the artifact");
    // The same link but the config elsewhere: the link alone is refused.
    ws.write("inventory.yaml", &Workspace::inventory(""));
    ws.plan_file("v2")
        .expect_code(1)
        .stderr_has("leads outside the artifact");
    // A link inside the tree, and the config written through it.
    std::fs::remove_file(art.join("conf")).unwrap();
    std::fs::create_dir(art.join("etc")).unwrap();
    std::os::unix::fs::symlink("etc", art.join("conf")).unwrap();
    ws.write(
        "inventory.yaml",
        &Workspace::inventory("").replace("dest: app.conf", "dest: conf/app.conf"),
    );
    ws.plan_file("v2")
        .expect_code(1)
        .stderr_has("configuration file `conf/app.conf`")
        .stderr_has("is a symlink");
    // The release marker as a link to a file outside.
    std::fs::remove_file(art.join("conf")).unwrap();
    ws.write("inventory.yaml", &Workspace::inventory(""));
    std::os::unix::fs::symlink(&victim, art.join(".ferry-release.json")).unwrap();
    ws.plan_file("v2")
        .expect_code(1)
        .stderr_has("ferry's release marker");
    std::fs::remove_file(art.join(".ferry-release.json")).unwrap();
    // Clean again: deploys, and nothing outside changed.
    ws.deploy("v2");
    assert_eq!(ws.current("clinic-c").as_deref(), Some("2.0.0"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);
}

/// The gated plan of the approval tests, planned: `gated.json`.
fn gated_plan(ws: &Workspace) {
    let r = ws.run(&["--output", "json", "keygen", "-o", "dana.key"]);
    let key = r.json()["public_key"].as_str().unwrap().to_owned();
    ws.write(
        "inventory.yaml",
        &format!(
            "{}approvers:\n  - {{ name: Dana Whitfield, roles: [change-board], public_key: \"{key}\", signing_key: \"file:dana.key\" }}\n",
            Workspace::inventory("")
        ),
    );
    ws.write(
        "plans/gated.yaml",
        &format!(
            "{}gates:\n  - {{ name: production-go, before_wave: clinics, role: change-board }}\n",
            Workspace::plan("2.0.0", "halt")
        ),
    );
    ws.plan_file("gated").expect_code(2);
}

fn edit_plan(ws: &Workspace, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = ws.path().join("gated.json");
    let mut plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut plan);
    std::fs::write(&path, serde_json::to_string_pretty(&plan).unwrap()).unwrap();
}

/// `ferry ARGS` with another state directory of the workspace (`STATE`, made on first use).
fn with_state(ws: &Workspace, state: &str, args: &[&str]) -> crate::support::Run {
    let mut c = ws.cmd(args);
    c.env("FERRY_STATE_DIR", ws.path().join(state));
    crate::support::Run(c.output().unwrap())
}

/// `ferry apply gated.json --trust-plan-file` from a second state directory.
fn apply_elsewhere(ws: &Workspace) -> crate::support::Run {
    with_state(
        ws,
        ".ferry-elsewhere",
        &["apply", "gated.json", "--trust-plan-file"],
    )
}

/// A saved plan is sealed by the digest its `plan_created` entry recorded: any edit is refused
/// (exit 3). And where the ledger cannot vouch for it (another state directory, so
/// `--trust-plan-file`), the body is re-derived from the inputs: removing a gate, changing a
/// step's version or a wave, or turning it into a back-out plan, is refused and named.
#[test]
fn an_edited_saved_plan_cannot_skip_its_gate_or_change_a_step() {
    let ws = Workspace::new();
    gated_plan(&ws);
    let original = std::fs::read_to_string(ws.path().join("gated.json")).unwrap();
    edit_plan(&ws, |p| {
        p.as_object_mut().unwrap().remove("gates");
    });
    ws.run(&["apply", "gated.json"])
        .expect_code(3)
        .stderr_has("is not the plan that was made")
        .stderr_has("the file was edited after planning");
    ws.run(&["apply", "gated.json", "--trust-plan-file"])
        .expect_code(3)
        .stderr_has("is not the plan that was made");
    apply_elsewhere(&ws)
        .expect_code(3)
        .stderr_has("the saved plan was edited")
        .stderr_has("gate `production-go` (role `change-board`, before wave 2) is missing");
    assert_eq!(ws.current("clinic-a"), None, "nothing ran");
    // After a first, honest run stopped at the gate, an edit before resume is refused too.
    std::fs::write(ws.path().join("gated.json"), &original).unwrap();
    ws.run(&["apply", "gated.json"]).expect_code(8);
    edit_plan(&ws, |p| {
        p.as_object_mut().unwrap().remove("gates");
    });
    ws.run(&["apply", "--resume", "gated.json"])
        .expect_code(3)
        .stderr_has("is not the plan that was made");
    assert_eq!(
        ws.current("clinic-b").as_deref(),
        None,
        "the gated wave did not run"
    );
    // A step's version, a wave, the kind changed to escape the check: each named.
    std::fs::write(ws.path().join("gated.json"), &original).unwrap();
    edit_plan(&ws, |p| {
        p["steps"][1]["to"] = "1.0.0".into();
        p["waves"][1]["failure_threshold"] = 9.into();
    });
    apply_elsewhere(&ws)
        .expect_code(3)
        .stderr_has("step s002 differs: to \"1.0.0\" (inputs give \"2.0.0\")")
        .stderr_has("`waves`");
    std::fs::write(ws.path().join("gated.json"), &original).unwrap();
    edit_plan(&ws, |p| {
        p["kind"] = "backout".into();
        p.as_object_mut().unwrap().remove("gates");
    });
    apply_elsewhere(&ws)
        .expect_code(3)
        .stderr_has("made from release plan");
    assert_eq!(ws.current("clinic-b").as_deref(), None);
}

/// A plan made with one state directory is refused by another unless trusted; trusting it is
/// recorded, and from then on its digest seals it there too.
#[test]
fn a_plan_from_another_state_directory_needs_trust_which_is_recorded() {
    let ws = Workspace::new();
    ws.plan_file("v1").expect_code(2);
    let elsewhere = |args: &[&str]| with_state(&ws, ".ferry-b", args);
    elsewhere(&["apply", "v1.json"])
        .expect_code(3)
        .stderr_has("was not made with this state directory")
        .stderr_has("--trust-plan-file");
    assert_eq!(ws.current("clinic-a"), None);
    elsewhere(&["apply", "v1.json", "--trust-plan-file"]).expect_code(0);
    let ledger = std::fs::read_to_string(ws.path().join(".ferry-b/ledger.jsonl")).unwrap();
    let trusted: Vec<serde_json::Value> = ledger
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "plan_trusted")
        .collect();
    assert_eq!(trusted.len(), 1, "{ledger}");
    assert_eq!(trusted[0]["actor"], "tester", "who trusted it");
    assert_eq!(ws.current("clinic-c").as_deref(), Some("1.0.0"));
    // Now sealed there: an edited copy is refused even with --trust-plan-file.
    let text = std::fs::read_to_string(ws.path().join("v1.json")).unwrap();
    std::fs::write(ws.path().join("v1.json"), format!("{text}\n")).unwrap();
    elsewhere(&["apply", "--resume", "v1.json", "--trust-plan-file"])
        .expect_code(3)
        .stderr_has("is not the plan that was made");
}

/// A secret whose value contains another's is hidden whole in the output and the ledger.
#[test]
fn a_secret_inside_another_is_never_shown_in_part() {
    let ws = Workspace::new();
    ws.write(
        "inventory.yaml",
        &Workspace::inventory(
            "    secrets: { DEMO_TOKEN: \"env:IT_TOKEN\", DEMO_PIN: \"env:IT_PIN\" }\n",
        )
        .replace("timeout_seconds: 8", "timeout_seconds: 1"),
    );
    ws.write(
        "artifacts/3.0.0/bin/health",
        "#!/bin/sh\necho \"pin $DEMO_PIN token $DEMO_TOKEN\" >&2\nexit 1\n",
    );
    ws.plan_file("v3-halt").expect_code(2);
    let mut apply = ws.cmd(&["apply", "v3-halt.json"]);
    apply
        .env("IT_TOKEN", "4711-9f8e7d6c5b4a")
        .env("IT_PIN", "4711");
    let out = apply.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert!(text.contains("pin *** token ***"), "{text}");
    let ledger = std::fs::read_to_string(ws.ledger_path()).unwrap();
    for part in ["4711", "9f8e7d6c5b4a"] {
        assert!(!text.contains(part), "{part} in {text}");
        assert!(!ledger.contains(part), "{part} in the ledger");
    }
    assert!(ledger.contains("pin *** token ***"));
}

//! `ferry validate`, `schema` and `plan`: exit codes, JSON, determinism, located errors.

use crate::support::Workspace;

#[test]
fn plan_exit_codes_follow_terraform_detailed_exitcode() {
    let ws = Workspace::new();
    ws.plan_file("v1")
        .expect_code(2)
        .stdout_has("+ clinic-a/local/demo  (none) -> 1.0.0")
        .stdout_has("Plan: 3 to change, 0 unchanged.");
    ws.run(&["apply", "v1.json"]).expect_code(0);
    ws.plan_file("v1")
        .expect_code(0)
        .stdout_has("Plan: 0 to change, 3 unchanged.");
    ws.write(
        "plans/broken.yaml",
        "version: 1\nkind: release\nname: x\nreleases: []\nwaves: []\non_failure: halt\n",
    );
    ws.plan_file("broken")
        .expect_code(1)
        .stderr_has("plans/broken.yaml");
}

#[test]
fn plan_json_is_a_stable_versioned_document() {
    let ws = Workspace::new();
    let run = ws.run(&[
        "--output",
        "json",
        "plan",
        "-i",
        "inventory.yaml",
        "plans/v1.yaml",
        "-o",
        "p.json",
    ]);
    run.expect_code(2);
    let doc = run.json();
    assert_eq!(doc["format"], "ferry.plan-report");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["changes"], 3);
    assert_eq!(doc["steps"][0]["target"], "clinic-a/local/demo");
    assert_eq!(doc["steps"][0]["wave"], "canary");
    assert!(doc["steps"][0]["from"].is_null());
    assert_eq!(doc["steps"][0]["to"], "1.0.0");
}

#[test]
fn the_same_inputs_give_the_same_plan_bytes_but_for_id_and_time() {
    let ws = Workspace::new();
    ws.run(&[
        "plan",
        "-i",
        "inventory.yaml",
        "plans/v1.yaml",
        "-o",
        "a.json",
    ])
    .expect_code(2);
    ws.run(&[
        "plan",
        "-i",
        "inventory.yaml",
        "plans/v1.yaml",
        "-o",
        "b.json",
    ])
    .expect_code(2);
    let read = |f: &str| {
        let text = std::fs::read_to_string(ws.path().join(f)).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v["id"].as_str().is_some_and(|s| !s.is_empty()));
        v["id"] = "ID".into();
        v["created_at"] = "TIME".into();
        serde_json::to_string_pretty(&v).unwrap()
    };
    assert_eq!(read("a.json"), read("b.json"));
    // The saved plan records every input with its digest, and each target's fingerprint.
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path().join("a.json")).unwrap()).unwrap();
    let roles: Vec<&str> = v["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["inventory", "plan", "artifact", "template"]);
    assert_eq!(v["targets"].as_array().unwrap().len(), 3);
    assert!(v["targets"][0]["fingerprint"].as_str().unwrap().len() == 64);
    assert_eq!(v["steps"][0]["undo"]["action"], "uninstall");
}

#[test]
fn validate_reports_every_problem_of_every_file_at_once() {
    let ws = Workspace::new();
    ws.write(
        "bad-inventory.yaml",
        &Workspace::inventory("    depends_on: [ghost]\n").replace(
            "clouds: [local] }\n  - { id: clinic-b",
            "clouds: [nope] }\n  - { id: clinic-b",
        ),
    );
    ws.write("plans/bad.yaml", "version: 1\nkind: release\nname: x\nreleases: [{ app: demo, version: \"2.0.0\" }]\nwaves:\n  - { name: w, sites: [clinic-a, atlantis], max_parallel: 0 }\non_failure: halt\n");
    let run = ws.run(&[
        "validate",
        "-i",
        "bad-inventory.yaml",
        "plans/bad.yaml",
        "plans/v1.yaml",
    ]);
    run.expect_code(1)
        .stderr_has("bad-inventory.yaml:3:41: sites[0].clouds[0]: site `clinic-a` names cloud `nope`")
        .stderr_has("bad-inventory.yaml:16:18: apps[0].depends_on[0]: app `demo` depends on `ghost`")
        .stderr_has("plans/bad.yaml:6:34: waves[0].sites[1]: site `atlantis` is not in the inventory's `sites`")
        .stderr_has("plans/bad.yaml:6:59: waves[0].max_parallel: must be at least 1");
    let json = ws.run(&[
        "--output",
        "json",
        "validate",
        "-i",
        "bad-inventory.yaml",
        "plans/bad.yaml",
    ]);
    json.expect_code(1);
    let doc = json.json();
    assert_eq!(doc["format"], "ferry.error");
    let problems = doc["problems"].as_array().unwrap();
    assert!(problems.len() >= 5, "{problems:?}");
    assert!(
        problems
            .iter()
            .all(|p| p["line"].as_u64().unwrap() > 0 && !p["path"].as_str().unwrap().is_empty())
    );
    ws.run(&[
        "validate",
        "-i",
        "inventory.yaml",
        "plans/v1.yaml",
        "plans/v2.yaml",
    ])
    .expect_code(0);
}

#[test]
fn unknown_keys_are_errors_with_their_location() {
    let ws = Workspace::new();
    ws.write("typo.yaml", &Workspace::inventory("    helth_check: {}\n"));
    ws.run(&["validate", "-i", "typo.yaml"])
        .expect_code(1)
        .stderr_has("typo.yaml:16:5: apps[0].helth_check: unknown field `helth_check`");
}

#[test]
fn schema_describes_both_formats() {
    let ws = Workspace::new();
    let run = ws.run(&["schema"]);
    run.expect_code(0);
    let doc = run.json();
    assert!(doc["inventory"]["properties"]["sites"].is_object());
    assert!(doc["release_plan"]["properties"]["waves"].is_object());
    assert!(doc["migration_plan"]["properties"]["rules"].is_object());
    let inv = ws.run(&["schema", "inventory"]).json();
    assert_eq!(inv["title"], "Inventory");
}

#[test]
fn the_example_inventories_and_plans_in_the_repository_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (inventory, plans) in [
        (
            "inventories/local.yaml",
            vec![
                "plans/demo-release-1.0.yaml",
                "plans/demo-release-1.1.yaml",
                "plans/demo-release-1.2-bad.yaml",
            ],
        ),
        (
            "inventories/clinics-ssh.yaml",
            vec!["plans/clinics-gateway-2.1.yaml"],
        ),
        (
            "inventories/labs-docker.yaml",
            vec!["plans/results-portal-3.3.yaml"],
        ),
        (
            "inventories/ecrnow.yaml",
            vec![
                "plans/ecrnow-3.0-site-a.yaml",
                "plans/ecrnow-retire-2.x.yaml",
                "plans/ecrnow-db-to-cloud.yaml",
            ],
        ),
        (
            "inventories/templates.yaml",
            vec![
                "plans/opts-consultation-v1.yaml",
                "plans/opts-consultation-v2.yaml",
                "plans/opts-consultation-v3.yaml",
            ],
        ),
    ] {
        let out = std::process::Command::new(crate::support::BIN)
            .current_dir(&root)
            .arg("validate")
            .arg("-i")
            .arg(inventory)
            .args(&plans)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{inventory}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

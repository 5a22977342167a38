//! The example CI pipelines in `examples/ci/` are real: each file parses, and every ferry
//! command in it (each `run:` step of the GitHub workflow, each `script:` line of the GitLab
//! pipeline, in job order) runs against a copy of the repository's local demo, with `ferry` on
//! PATH, and ends with the plan applied and the ledger verified.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A copy of the demo's inventory, plans, templates and artifacts, with `ferry` on PATH.
fn demo_copy() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    for d in ["inventories", "plans", "templates", "artifacts"] {
        let ok = Command::new("cp")
            .arg("-r")
            .arg(repo().join(d))
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "copy {d}");
    }
    // The pipelines run at any hour here; the demo's clinics' maintenance windows would hold
    // the apply (exit 9, tested in `windows.rs`), so this copy declares none.
    let inv = dir.path().join("inventories/local.yaml");
    let text = std::fs::read_to_string(&inv).unwrap();
    let without: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("maintenance_window:"))
        .collect();
    std::fs::write(&inv, without.join("\n") + "\n").unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(crate::support::BIN, bin.join("ferry")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (dir, path)
}

fn load(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join("examples/ci").join(name)).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name} does not parse: {e}"))
}

/// Runs one shell script of a pipeline in the demo copy; its exit status.
fn sh(
    dir: &Path,
    path: &str,
    vars: &serde_json::Map<String, serde_json::Value>,
    script: &str,
) -> bool {
    let mut c = Command::new("bash");
    c.arg("-ec").arg(script).current_dir(dir).env("PATH", path);
    for (k, v) in vars {
        c.env(k, v.as_str().unwrap_or_default());
    }
    c.env("FERRY_ACTOR", "ci-tester")
        .env("FERRY_STATE_DIR", dir.join(".ferry"))
        .env_remove("FERRY_LEDGER");
    let out = c.output().unwrap();
    if !out.status.success() {
        eprintln!(
            "script failed:\n{script}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

fn assert_applied(dir: &Path) {
    let md = std::fs::read_to_string(dir.join("plan.md")).unwrap();
    assert!(md.starts_with("### ferry plan `demo-1.1`"), "{md}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("apply.json")).unwrap()).unwrap();
    assert_eq!(report["exit_code"], 0, "{report:#}");
    let current =
        std::fs::read_link(dir.join(".ferry/demo/targets/clinic-c/demo/current")).unwrap();
    assert!(current.ends_with("1.1.0"), "{}", current.display());
}

#[test]
fn the_github_actions_example_validates_plans_and_applies_the_demo() {
    let wf = load("github-actions.yml");
    let (dir, path) = demo_copy();
    let vars = wf["env"].as_object().unwrap();
    let mut ran = 0;
    for job in ["plan", "apply"] {
        for step in wf["jobs"][job]["steps"].as_array().unwrap() {
            if let Some(script) = step["run"].as_str() {
                assert!(
                    sh(dir.path(), &path, vars, script),
                    "job {job}, step {step}"
                );
                ran += 1;
            }
        }
    }
    assert_eq!(ran, 4, "validate, plan, apply, verify");
    assert_applied(dir.path());
}

#[test]
fn the_gitlab_ci_example_validates_plans_and_applies_the_demo() {
    let ci = load("gitlab-ci.yml");
    let (dir, path) = demo_copy();
    let vars = ci["variables"].as_object().unwrap();
    let stages: Vec<&str> = ci["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(stages, ["validate", "plan", "apply"]);
    assert_eq!(
        ci["apply"]["when"], "manual",
        "applying is a person's decision"
    );
    for job in stages {
        let script: Vec<&str> = ci[job]["script"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert!(sh(dir.path(), &path, vars, &script.join("\n")), "job {job}");
    }
    assert_applied(dir.path());
}

//! Maintenance windows are enforced: a release's steps do not start on a site whose window is
//! closed (exit 9, saying when it opens, resumable), `--outside-window --reason` starts them
//! anyway and the ledger records who and why, and `ferry plan` shows each wave's windows.
//! Windows are set relative to the real clock, so these hold at any hour.

use chrono::{Datelike, Duration, Utc};

use crate::support::Workspace;

const CLINIC_A: &str = "  - { id: clinic-a, tier: sqa, clouds: [local] }";

fn day(d: chrono::Weekday) -> &'static str {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][d.num_days_from_monday() as usize]
}

/// clinic-a's window opens at 01:00 UTC three days from now, for an hour: closed now.
fn closed_window() -> (String, String) {
    let at = Utc::now() + Duration::days(3);
    let window = format!(
        "  - {{ id: clinic-a, tier: sqa, clouds: [local], maintenance_window: {{ days: [{}], start: \"01:00\", duration_minutes: 60, timezone: UTC }} }}",
        day(at.weekday())
    );
    (window, format!("{} 01:00 UTC", at.format("%Y-%m-%d")))
}

/// A window open every day from half an hour ago, for four hours: open now.
fn open_window() -> String {
    let start = Utc::now() - Duration::minutes(30);
    format!(
        "  - {{ id: clinic-a, tier: sqa, clouds: [local], maintenance_window: {{ days: [mon, tue, wed, thu, fri, sat, sun], start: \"{}\", duration_minutes: 240, timezone: UTC }} }}",
        start.format("%H:%M")
    )
}

fn workspace_with(site_a: &str) -> Workspace {
    let ws = Workspace::new();
    ws.write(
        "inventory.yaml",
        &Workspace::inventory("").replace(CLINIC_A, site_a),
    );
    ws.write(
        "plans/both.yaml",
        "version: 1\nkind: release\nname: both\nreleases: [{ app: demo, version: \"1.0.0\" }]\nwaves: [{ name: only, sites: [clinic-a, clinic-b], max_parallel: 2 }]\non_failure: halt\n",
    );
    ws
}

#[test]
fn a_closed_window_holds_its_sites_steps_says_when_it_opens_and_resumes_on_override() {
    let (window, opens) = closed_window();
    let ws = workspace_with(&window);
    ws.plan_file("both")
        .expect_code(2)
        .stdout_has("Maintenance windows:")
        .stdout_has(&format!("clinic-a opens {opens}"))
        .stdout_has("clinic-b no window (unrestricted)");
    let r = ws.run(&["--output", "json", "apply", "both.json"]);
    r.expect_code(9);
    let report = r.json();
    assert_eq!(report["outcome"], "outside_window", "{report:#}");
    assert_eq!(report["sites"][0]["site"], "clinic-a");
    assert!(
        report["sites"][0]["opens"]
            .as_str()
            .unwrap()
            .starts_with(&opens)
    );
    let status = |site: &str| {
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["target"].as_str().unwrap().starts_with(site))
            .map(|s| s["status"].as_str().unwrap().to_owned())
            .unwrap()
    };
    // The open site went ahead; the closed one was not touched.
    assert_eq!(status("clinic-b"), "succeeded");
    assert_eq!(status("clinic-a"), "held");
    assert_eq!(ws.current("clinic-a"), None);
    let closed = ws.events("window_closed");
    assert_eq!(closed.len(), 1);
    assert!(
        closed[0]["message"].as_str().unwrap().contains(&opens),
        "{closed:?}"
    );
    // A person resumes anyway, with a reason: recorded with who and why, then it runs.
    ws.run(&["apply", "--resume", "--outside-window", "both.json"])
        .expect_code(2)
        .stderr_has("--reason");
    ws.run(&[
        "apply",
        "--resume",
        "--outside-window",
        "--reason",
        "short",
        "both.json",
    ])
    .expect_code(1)
    .stderr_has("at least 10 characters");
    ws.run(&[
        "apply",
        "--resume",
        "--outside-window",
        "--reason",
        "CAB-2291: lab results blocked, fix before Monday",
        "both.json",
    ])
    .expect_code(0)
    .stdout_has("completed");
    assert_eq!(ws.current("clinic-a").as_deref(), Some("1.0.0"));
    let over = ws.events("window_overridden");
    assert_eq!(over.len(), 1, "{over:?}");
    assert_eq!(over[0]["actor"], "tester");
    assert_eq!(over[0]["site"], "clinic-a");
    assert_eq!(
        over[0]["detail"]["reason"],
        "CAB-2291: lab results blocked, fix before Monday"
    );
    ws.run(&["ledger", "verify"]).expect_code(0);
}

#[test]
fn an_open_window_lets_the_release_run_and_a_back_out_is_never_held() {
    let ws = workspace_with(&open_window());
    ws.plan_file("both")
        .expect_code(2)
        .stdout_has("clinic-a open now, until");
    ws.run(&["apply", "both.json"]).expect_code(0);
    assert!(ws.events("window_overridden").is_empty());
    assert!(ws.events("window_closed").is_empty());
    // With the window closed, a back-out (a rescue) still runs: only releases are held.
    ws.write(
        "plans/v2a.yaml",
        &Workspace::site_plan("v2a", "2.0.0", "clinic-a", "halt"),
    );
    ws.deploy("v2a");
    let (window, _) = closed_window();
    ws.write(
        "inventory.yaml",
        &Workspace::inventory("").replace(CLINIC_A, &window),
    );
    ws.backout("clinic-a", &[]).expect_code(0);
    assert_eq!(ws.current("clinic-a").as_deref(), Some("1.0.0"));
    assert!(ws.events("window_closed").is_empty());
}

#[test]
fn a_tier_can_require_windows_and_time_zones_are_checked() {
    let ws = Workspace::new();
    let inv = Workspace::inventory("").replace(
        "version: 1\n",
        "version: 1\nmaintenance: { windows_required_for: [prod] }\n",
    );
    ws.write("inventory.yaml", &inv);
    ws.run(&["validate", "-i", "inventory.yaml"])
        .expect_code(1)
        .stderr_has(
            "site `clinic-b` is of tier `prod`, whose sites must declare a `maintenance_window`",
        )
        .stderr_has("site `clinic-c` is of tier `prod`");
    let bad_zone = Workspace::inventory("").replace(
        CLINIC_A,
        "  - { id: clinic-a, tier: sqa, clouds: [local], maintenance_window: { days: [sun], start: \"01:00\", duration_minutes: 60, timezone: Mars/Olympus } }",
    );
    ws.write("inventory.yaml", &bad_zone);
    ws.run(&["validate", "-i", "inventory.yaml"])
        .expect_code(1)
        .stderr_has(
            "sites[0].maintenance_window.timezone: `Mars/Olympus` is not an IANA time zone name",
        );
}

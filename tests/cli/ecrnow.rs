//! The eCRNow 2.x -> 3.x example (`inventories/ecrnow.yaml`, `plans/ecrnow-*.yaml`) run for
//! real: a PostgreSQL cluster holds `scheduled_tasks`, the test's HTTP server stands for the
//! EHR integration's admin endpoint. 3.x is onboarded next to 2.x with 2.x launches stopped and
//! the queue recorded before and after; 2.x is retired only once its timers have drained.

use std::path::Path;
use std::process::Command;

use crate::support::{Admin, Postgres, Run, Workspace};

/// A copy of the example with the database and admin endpoint of this test, and its polls
/// shortened from seconds to a second (the plan's own `every: 10s`, `stable_for: 30s`).
fn example(pg: &Postgres, admin: &Admin) -> Workspace {
    let ws = Workspace::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ok = Command::new("cp")
        .arg("-r")
        .arg(repo.join("artifacts/ecrnow"))
        .arg(ws.path().join("artifacts/ecrnow"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let read = |p: &str| std::fs::read_to_string(repo.join(p)).unwrap();
    let inv = read("inventories/ecrnow.yaml")
        .replace("port: 5432", &format!("port: {}", pg.port))
        .replace("dbname: ecrnow", "dbname: app")
        .replace("user: ferry_probe", "user: probe");
    ws.write("inventories/ecrnow.yaml", &inv);
    for p in [
        "plans/ecrnow-3.0-site-a.yaml",
        "plans/ecrnow-retire-2.x.yaml",
        "plans/ecrnow-db-to-cloud.yaml",
    ] {
        let text = read(p)
            .replace("127.0.0.1:8081", &format!("127.0.0.1:{}", admin.port))
            .replace("every: 10s", "every: 1s")
            .replace("stable_for: 30s", "stable_for: 2s");
        ws.write(p, &text);
    }
    ws.write(
        "plans/ecrnow-2.4.yaml",
        "version: 1\nkind: release\nname: ecrnow-2.4\nreleases: [{ app: ecrnow@2, version: 2.4.0 }]\non_failure: backout\nwaves: [{ name: site-a, sites: [site-a] }]\n",
    );
    ws
}

fn ferry(ws: &Workspace, args: &[&str]) -> Run {
    Run(ws
        .cmd(args)
        .env("ECRNOW_PROBE_PASSWORD", "probe-secret")
        .output()
        .unwrap())
}

fn plan(ws: &Workspace, name: &str) -> Run {
    ferry(
        ws,
        &[
            "plan",
            "-i",
            "inventories/ecrnow.yaml",
            &format!("plans/{name}.yaml"),
            "-o",
            &format!("{name}.json"),
        ],
    )
}

fn serving(ws: &Workspace, line: &str) -> Option<String> {
    let link = std::fs::read_link(
        ws.path()
            .join(".ferry/ecrnow/targets/site-a")
            .join(line)
            .join("current"),
    )
    .ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

#[test]
fn ecrnow_3x_is_onboarded_next_to_2x_and_2x_retires_after_its_timers_drain() {
    let pg = Postgres::start(55433);
    pg.sql("create table scheduled_tasks (id serial primary key, app_major int not null)");
    pg.sql("grant select on scheduled_tasks to probe");
    pg.sql("insert into scheduled_tasks (app_major) values (2), (2), (3)");
    let admin = Admin::start();
    admin.state.lock().unwrap().queue = 5;
    let ws = example(&pg, &admin);
    ferry(
        &ws,
        &[
            "validate",
            "-i",
            "inventories/ecrnow.yaml",
            "plans/ecrnow-3.0-site-a.yaml",
            "plans/ecrnow-retire-2.x.yaml",
            "plans/ecrnow-db-to-cloud.yaml",
        ],
    )
    .expect_code(0);

    plan(&ws, "ecrnow-2.4").expect_code(2);
    ferry(&ws, &["apply", "ecrnow-2.4.json"]).expect_code(0);
    assert_eq!(serving(&ws, "ecrnow@2").as_deref(), Some("2.4.0"));

    // 3.x next to 2.x: launches stopped, the gate holds for 2 s, the queue noted twice.
    plan(&ws, "ecrnow-3.0-site-a")
        .expect_code(2)
        .stdout_has("POST http://127.0.0.1:")
        .stdout_has("site-a/local/ecrnow@3  (none) -> 3.0.0");
    ferry(&ws, &["apply", "--wait", "ecrnow-3.0-site-a.json"])
        .expect_code(0)
        .stderr_has("queued-before = 5")
        .stderr_has("queued-after = 5");
    assert!(!admin.state.lock().unwrap().launching);
    assert_eq!(serving(&ws, "ecrnow@2").as_deref(), Some("2.4.0"));
    assert_eq!(serving(&ws, "ecrnow@3").as_deref(), Some("3.0.0"));

    // Retire 2.x: two 2.x timers remain, so the drain gate waits (exit 10) and 2.x stays.
    plan(&ws, "ecrnow-retire-2.x")
        .expect_code(2)
        .stdout_has("site-a/local/ecrnow@2  2.4.0 -> (retired)");
    let r = ferry(
        &ws,
        &["--output", "json", "apply", "ecrnow-retire-2.x.json"],
    );
    r.expect_code(10);
    assert_eq!(r.json()["gates"][0]["value"], 2);
    assert_eq!(serving(&ws, "ecrnow@2").as_deref(), Some("2.4.0"));
    // The timers fire and bleed out; the resume retires 2.x.
    pg.sql("delete from scheduled_tasks where app_major = 2");
    ferry(&ws, &["apply", "--resume", "ecrnow-retire-2.x.json"]).expect_code(0);
    assert_eq!(serving(&ws, "ecrnow@2"), None);
    assert_eq!(serving(&ws, "ecrnow@3").as_deref(), Some("3.0.0"));
    ferry(&ws, &["ledger", "verify"]).expect_code(0);

    // The guide of each plan: the gates, calls and records with what was seen, and the
    // apply as a picture (inline SVG, no script) with the gate's wait between the runs.
    for (plan, want) in [
        (
            "ecrnow-retire-2.x",
            &[
                "drain-2x-timers",
                ": 2 (does not hold, poll 1)",
                ": 0 (holds, poll 2)",
            ][..],
        ),
        (
            "ecrnow-3.0-site-a",
            &[
                "queued-before",
                "stop-2x-launches",
                "no-2x-launches",
                "queued-after",
            ][..],
        ),
    ] {
        ferry(
            &ws,
            &[
                "dibr",
                "-i",
                "inventories/ecrnow.yaml",
                &format!("{plan}.json"),
                "-o",
                plan,
            ],
        )
        .expect_code(0);
        let md = std::fs::read_to_string(ws.path().join(plan).join("dibr.md")).unwrap();
        let section = md
            .split("## 20. Cut-over and drain")
            .nth(1)
            .expect("section 20");
        for w in want {
            assert!(section.contains(w), "{plan}: {w:?} in\n{section}");
        }
        let html = std::fs::read_to_string(ws.path().join(plan).join("dibr.html")).unwrap();
        assert!(html.contains("<svg") && !html.contains("<script"), "{plan}");
        assert!(html.contains("id=\"cutover\""));
    }
    let html = std::fs::read_to_string(ws.path().join("ecrnow-retire-2.x/dibr.html")).unwrap();
    assert!(
        html.contains(r#"<rect class="wait""#),
        "the wait between the runs is drawn"
    );
}

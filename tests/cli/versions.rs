//! Version catalogs (`ferry versions`) on the clinical-template example
//! (`inventories/templates.yaml`, `artifacts/opts`, `plans/opts-consultation-v*.yaml`): the
//! EHRServer seed's flow step by step, deployed to a local target and a real OpenSSH endpoint.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Fleet, Run, Workspace};

const INV: &str = "inventories/templates.yaml";
const CATALOG: &str = "consultation_note.en";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The example as shipped, its SSH endpoint pointed at `ssh` (or left unreachable), and a real
/// signing key for its records officer.
fn example(ssh: Option<&Fleet>) -> Workspace {
    let ws = Workspace::new();
    let ok = Command::new("cp")
        .arg("-r")
        .arg(repo().join("artifacts/opts"))
        .arg(ws.path().join("artifacts/opts"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    std::fs::create_dir_all(ws.path().join("keys")).unwrap();
    let key = ws
        .run(&["keygen", "-o", "keys/dana.key"])
        .expect_code(0)
        .stdout();
    let public = key
        .split_whitespace()
        .map(|w| w.trim_matches('"'))
        .find(|w| w.starts_with("ed25519:"))
        .expect("keygen prints the public key")
        .to_owned();
    let mut inv = std::fs::read_to_string(repo().join(INV))
        .unwrap()
        .replace(
            "ed25519:kQSJPmRwW+8q4FhIt+WUElSfxeOpok5FddclHzN4Muo=",
            &public,
        )
        .replace(
            "hardware: { cpus: 2, memory_mb: 4096, disk_gb: 100, os: \"debian\" }",
            "hardware: { cpus: 1, memory_mb: 256, disk_gb: 1, os: \"debian\" }",
        );
    if let Some(fleet) = ssh {
        inv = inv.replace("address: 127.0.0.2", &format!("address: {}", fleet.address(1))).replace(
            "connection: { protocol: ssh, user: ferry, port: 22, identity: \"env:FERRY_SSH_KEY\", known_hosts: known_hosts }",
            &format!(
                "connection: {{ protocol: ssh, user: root, port: 2222, identity: \"file:{}\", known_hosts: {}, root: {}, connect_timeout_seconds: 3, command_timeout_seconds: 20 }}",
                fleet.path().join("id_ed25519").display(),
                fleet.path().join("known_hosts").display(),
                fleet.path().join("ep-1/home/ferry").display()
            ),
        );
    }
    ws.write(INV, &inv);
    for v in 1..=3 {
        let p = format!("plans/opts-consultation-v{v}.yaml");
        ws.write(&p, &std::fs::read_to_string(repo().join(&p)).unwrap());
    }
    ws
}

fn versions(ws: &Workspace, args: &[&str]) -> Run {
    let mut all = vec!["versions", args[0], "-i", INV];
    all.extend(&args[1..]);
    ws.run(&all)
}

fn add(ws: &Workspace, id: &str, extra: &[&str]) -> Run {
    let mut args = vec!["add", CATALOG, id, "--reason", "modelling review"];
    args.extend(extra);
    versions(ws, &args)
}

fn plan(ws: &Workspace, v: u32) -> Run {
    let (yaml, json) = (
        format!("plans/opts-consultation-v{v}.yaml"),
        format!("v{v}.json"),
    );
    ws.run(&["plan", "-i", INV, &yaml, "-o", &json])
}

fn release(ws: &Workspace, v: u32) {
    plan(ws, v).expect_code(2);
    ws.run(&["apply", &format!("v{v}.json")]).expect_code(0);
}

/// What each catalogued version's state is, from `ferry versions list --output json`.
fn states(ws: &Workspace) -> Vec<(String, String)> {
    let out = ws
        .run(&["--output", "json", "versions", "list", "-i", INV])
        .expect_code(0)
        .json();
    out.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let v = &r["version"];
            (
                v["id"].as_str().unwrap().to_owned(),
                v["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// One version as `ferry versions show --output json` gives it.
fn shown(ws: &Workspace, id: &str) -> serde_json::Value {
    let args = [
        "--output", "json", "versions", "show", "-i", INV, CATALOG, id,
    ];
    ws.run(&args).expect_code(0).json()["version"].clone()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

fn serving(ws: &Workspace, fleet: &Fleet) -> (Option<String>, Option<String>) {
    let local = std::fs::read_link(
        ws.path()
            .join(".ferry/templates/targets/records-lab/consultation_note_en/current"),
    )
    .ok()
    .and_then(|l| Some(l.file_name()?.to_string_lossy().into_owned()));
    (local, fleet.current(1, "consultation_note_en_north"))
}

#[test]
fn the_seeds_template_flow_on_a_local_and_an_ssh_target() {
    let fleet = Fleet::start(1, "46.0");
    let ws = example(Some(&fleet));
    let v = |n: u32| format!("consultation_note.en.v{n}");

    // Nothing is deployed that the catalog does not hold.
    plan(&ws, 1).expect_code(1).stderr_has(
        "`consultation_note.en.v1` of consultation_note.en is not in its version catalog",
    );
    add(&ws, &v(1), &[])
        .expect_code(0)
        .stdout_has("added revision 1 (active): modelling review");
    release(&ws, 1);
    assert_eq!(serving(&ws, &fleet), (Some(v(1)), Some(v(1))));

    // v2 uploaded: both active. v3 refused until v1 is inactive, and the refusal names v1.
    add(&ws, &v(2), &[]).expect_code(0);
    release(&ws, 2);
    assert_eq!(states(&ws), pairs(&[(&v(1), "active"), (&v(2), "active")]));
    add(&ws, &v(3), &[])
        .expect_code(1)
        .stderr_has("would make 3 majors active; at most 2 may be (now active: major 1 and 2): deactivate `consultation_note.en.v1` (major 1, the oldest) first");

    // v2 serves both sites: it cannot be deactivated; v1 serves none any more.
    versions(&ws, &["deactivate", CATALOG, &v(2), "--reason", "x"])
        .expect_code(1)
        .stderr_has("cannot be deactivated: it is deployed on records-lab/lab/consultation_note_en, clinic-north/north-ehr/consultation_note_en_north (by the ledger)");
    versions(
        &ws,
        &["deactivate", CATALOG, &v(1), "--reason", "front ends on v2"],
    )
    .expect_code(0);
    plan(&ws, 1)
        .expect_code(1)
        .stderr_has("`consultation_note.en.v1` of consultation_note.en is inactive: deactivated by tester at")
        .stderr_has("front ends on v2");
    add(&ws, &v(3), &[]).expect_code(0);
    assert_eq!(
        states(&ws),
        pairs(&[(&v(1), "inactive"), (&v(2), "active"), (&v(3), "active")])
    );

    // A hand edit of v3's artifact after it was catalogued: refused at plan time, refused as
    // ambiguous when uploaded plainly, accepted as its revision 2.
    let opt = ws
        .path()
        .join("artifacts/opts")
        .join(v(3))
        .join(format!("{}.opt", v(3)));
    let text = std::fs::read_to_string(&opt)
        .unwrap()
        .replace("major version 3.", "major version 3, with a reason field.");
    std::fs::write(&opt, text).unwrap();
    plan(&ws, 3)
        .expect_code(1)
        .stderr_has("is none of its revisions (1 = ");
    add(&ws, &v(3), &[]).expect_code(1).stderr_has("is ambiguous: say `--revision-of consultation_note.en.v3` for its revision 2, or `--new-major` for `consultation_note.en.v4`");
    add(&ws, &v(3), &["--revision-of", &v(3)])
        .expect_code(0)
        .stdout_has("revised revision 2");
    // Each revision's exact content comes back out of the store, checked on the way.
    let opt_in = |dir: &str| {
        std::fs::read_to_string(ws.path().join(dir).join(format!("{}.opt", v(3)))).unwrap()
    };
    let export = |revision: &str, out: &str| {
        let id = v(3);
        let mut args = vec!["export", CATALOG, &id, "-o", out];
        if !revision.is_empty() {
            args.extend(["--revision", revision]);
        }
        versions(&ws, &args)
    };
    export("1", "r1")
        .expect_code(0)
        .stdout_has("revision 1 of consultation_note.en.v3");
    assert!(opt_in("r1").contains("major version 3.</purpose>"));
    export("", "r2").expect_code(0);
    assert!(opt_in("r2").contains("with a reason field"));
    // A store changed behind ferry's back gives nothing out.
    let first = shown(&ws, &v(3))["revisions"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let kept = ws
        .path()
        .join(".ferry/store/sha256")
        .join(first)
        .join("check-opt.sh");
    std::fs::write(&kept, "exit 0\n").unwrap();
    export("1", "r1-again")
        .expect_code(1)
        .stderr_has("is not what the ledger recorded");
    add(&ws, &v(3), &[]).expect_code(0).stdout_has("unchanged: `consultation_note.en.v3` of consultation_note.en already holds this content as revision 2");
    release(&ws, 3);
    assert_eq!(serving(&ws, &fleet), (Some(v(3)), Some(v(3))));
    // The guide lists the released version with its state and revision at plan time.
    ws.run(&["dibr", "-i", INV, "v3.json", "-o", "guide"])
        .expect_code(0);
    let guide = std::fs::read_to_string(ws.path().join("guide/dibr.md")).unwrap();
    assert!(
        guide.contains("| consultation_note_en_north | consultation_note.en.v3 | active | 2 |"),
        "{guide}"
    );

    // Trash, then a purge: refused without the approval and with the id mistyped.
    versions(&ws, &["trash", CATALOG, &v(2), "--reason", "superseded"]).expect_code(0);
    let sha = shown(&ws, &v(2))["revisions"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let stored = ws.path().join(".ferry/store/sha256").join(&sha);
    assert!(
        stored.join(format!("{}.opt", v(2))).is_file(),
        "content kept in the store"
    );
    let purge = |confirm: &str| {
        versions(
            &ws,
            &[
                "purge",
                CATALOG,
                &v(2),
                "--confirm",
                confirm,
                "--reason",
                "space",
            ],
        )
    };
    purge(&v(2))
        .expect_code(1)
        .stderr_has("needs a signed approval by a holder of `records-officer`");
    versions(
        &ws,
        &["approve-purge", CATALOG, &v(2), "--as", "Dana Whitfield"],
    )
    .expect_code(0);
    purge("consultation_note.en.v3")
        .expect_code(1)
        .stderr_has("--confirm `consultation_note.en.v3` is not `consultation_note.en.v2`");
    purge(&v(2)).expect_code(0).stdout_has("purged (purged)");
    assert!(!stored.exists(), "a purge removes the content");
    assert_eq!(
        states(&ws),
        pairs(&[(&v(1), "inactive"), (&v(2), "purged"), (&v(3), "active")])
    );
    // The tombstone: the same content again brings it back as it was, revision 1.
    add(&ws, &v(2), &[])
        .expect_code(0)
        .stdout_has("returned revision 1 (active)");
    assert!(stored.is_dir());
    // A plan made while v2 was active is stale once v2 is deactivated before its apply.
    plan(&ws, 2).expect_code(2);
    versions(
        &ws,
        &["deactivate", CATALOG, &v(2), "--reason", "held back"],
    )
    .expect_code(0);
    ws.run(&["apply", "v2.json"])
        .expect_code(3)
        .stderr_has("the version catalog changed since the plan: `consultation_note.en.v2` of consultation_note.en is inactive");
    assert_eq!(serving(&ws, &fleet), (Some(v(3)), Some(v(3))));

    // The catalog is the ledger's: an edited lifecycle entry is found.
    ws.run(&["ledger", "verify"]).expect_code(0);
    let ledger = std::fs::read_to_string(ws.ledger_path()).unwrap();
    let edited = ledger.replacen("front ends on v2", "front ends on v9", 1);
    assert_ne!(edited, ledger);
    std::fs::write(ws.ledger_path(), edited).unwrap();
    ws.run(&["ledger", "verify"]).expect_code(7);
    ws.run(&["versions", "list", "-i", INV]).expect_code(7);
}

/// Eight processes offering different content under one new id at once: one adds it, the
/// others are refused as ambiguous; then each adds its content as a revision: numbers 2..8,
/// none given twice, one chain.
#[test]
fn processes_changing_one_catalog_at_once_leave_one_history() {
    let ws = example(None);
    let id = "consultation_note.en.v1";
    let from: Vec<String> = (0..8)
        .map(|k| {
            let dir = format!("drafts/d{k}");
            ws.write(
                &format!("{dir}/{id}.opt"),
                &format!("<template_id><value>{id}</value></template_id> draft {k}\n"),
            );
            ws.write(&format!("{dir}/check-opt.sh"), "true\n");
            dir
        })
        .collect();
    let race = |extra: &[&str]| -> Vec<std::process::Output> {
        let children: Vec<_> = from
            .iter()
            .map(|dir| {
                let mut args = vec![
                    "versions", "add", "-i", INV, CATALOG, id, "--from", dir, "--reason", "race",
                ];
                args.extend(extra);
                ws.spawn(&args)
            })
            .collect();
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect()
    };
    let first = race(&[]);
    let added = first.iter().filter(|o| o.status.code() == Some(0)).count();
    assert_eq!(added, 1, "{first:?}");
    for o in first.iter().filter(|o| o.status.code() != Some(0)) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("is ambiguous"), "{err}");
    }
    let second = race(&["--revision-of", id]);
    assert!(second.iter().all(|o| o.status.success()), "{second:?}");
    let mut numbers: Vec<u64> = shown(&ws, id)["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["number"].as_u64().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=8).collect::<Vec<u64>>());
    ws.run(&["ledger", "verify"]).expect_code(0);
    let taken = ws.events("lock_taken").len();
    assert_eq!(taken, ws.events("lock_released").len());
    assert_eq!(taken, 16, "every change held the state lock");
}

#[test]
fn bad_ids_and_unknown_catalogs_are_refused_with_nothing_recorded() {
    let ws = example(None);
    add(&ws, "consultation_note.xx.v1", &[])
        .expect_code(1)
        .stderr_has("`xx` is not an ISO 639-1 language code");
    add(
        &ws,
        "Consultation.en.v1",
        &["--from", "artifacts/opts/consultation_note.en.v1"],
    )
    .expect_code(1)
    .stderr_has("the concept `Consultation` is not snake_case");
    ws.run(&["versions", "list", "-i", INV, "nope"])
        .expect_code(1)
        .stderr_has(
            "no app of it keeps a catalog named `nope` (its catalogs: consultation_note.en",
        );
    versions(
        &ws,
        &[
            "activate",
            CATALOG,
            "consultation_note.en.v9",
            "--reason",
            "x",
        ],
    )
    .expect_code(1)
    .stderr_has("is not in the catalog (it holds: nothing yet)");
    assert!(ws.events("version_changed").is_empty());
}

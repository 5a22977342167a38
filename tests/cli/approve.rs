//! Approval gates: apply stops at a gate, only an inventory approver holding the gate's role
//! can approve it, approvals are signed, and `ledger verify` finds an altered or forged one.

use ferry::ledger::Entry;

use crate::support::Workspace;

/// A workspace whose inventory names two approvers with keys made by `ferry keygen`, and a
/// plan `gated` (2.0.0) with a gate before its `clinics` wave.
pub(crate) fn gated() -> (Workspace, Vec<String>) {
    let ws = Workspace::new();
    let mut keys = Vec::new();
    for who in ["dana", "sam", "mallory"] {
        let r = ws.run(&["--output", "json", "keygen", "-o", &format!("{who}.key")]);
        r.expect_code(0);
        keys.push(r.json()["public_key"].as_str().unwrap().to_owned());
    }
    let approvers = format!(
        "approvers:\n  - {{ name: Dana Whitfield, roles: [change-board], public_key: \"{}\", signing_key: \"file:dana.key\" }}\n  - {{ name: Sam Ortiz, roles: [release-manager], public_key: \"{}\", signing_key: \"file:sam.key\" }}\n",
        keys[0], keys[1]
    );
    ws.write(
        "inventory.yaml",
        &format!("{}{approvers}", Workspace::inventory("")),
    );
    ws.write(
        "plans/gated.yaml",
        &format!(
            "{}gates:\n  - {{ name: production-go, before_wave: clinics, role: change-board }}\n",
            Workspace::plan("2.0.0", "halt")
        ),
    );
    (ws, keys)
}

/// `ferry approve PLAN --gate GATE --as PERSON`.
pub(crate) fn approve(ws: &Workspace, plan: &str, gate: &str, person: &str) -> crate::support::Run {
    ws.run(&["approve", plan, "--gate", gate, "--as", person])
}

#[test]
fn apply_stops_at_the_gate_until_the_right_role_approves() {
    let (ws, _) = gated();
    ws.deploy("v1");
    ws.plan_file("gated")
        .expect_code(2)
        .stdout_has("|| gate `production-go`: waits for approval by role `change-board`");
    ws.run(&["apply", "gated.json"])
        .expect_code(8)
        .stdout_has("stopped at gate `production-go`")
        .stdout_has("ferry approve gated.json --gate production-go --as NAME");
    assert_eq!(
        ws.current("clinic-a").as_deref(),
        Some("2.0.0"),
        "the canary ran"
    );
    assert_eq!(
        ws.current("clinic-b").as_deref(),
        Some("1.0.0"),
        "the gate held"
    );
    assert_eq!(ws.events("gate_waiting").len(), 1);

    // Someone the inventory does not name, and an approver without the role: refused.
    approve(&ws, "gated.json", "production-go", "Mallory")
        .expect_code(1)
        .stderr_has("`Mallory` is not an approver");
    approve(&ws, "gated.json", "production-go", "Sam Ortiz")
        .expect_code(1)
        .stderr_has("Sam Ortiz does not hold role `change-board`")
        .stderr_has("held by: Dana Whitfield");
    approve(&ws, "gated.json", "canary-go", "Dana Whitfield")
        .expect_code(1)
        .stderr_has("has no gate `canary-go`");
    assert!(
        ws.events("approval").is_empty(),
        "nothing refused was recorded"
    );
    // Still held.
    ws.run(&["apply", "--resume", "gated.json"]).expect_code(8);

    ws.run(&[
        "approve",
        "gated.json",
        "--gate",
        "production-go",
        "--as",
        "Dana Whitfield",
        "--comment",
        "CAB-2291",
    ])
    .expect_code(0);
    ws.run(&["apply", "--resume", "gated.json"]).expect_code(0);
    for site in ["clinic-a", "clinic-b", "clinic-c"] {
        assert_eq!(ws.current(site).as_deref(), Some("2.0.0"), "{site}");
    }
    let approval = &ws.events("approval")[0];
    assert_eq!(approval["detail"]["payload"]["approver"], "Dana Whitfield");
    assert_eq!(approval["detail"]["payload"]["comment"], "CAB-2291");
    ws.run(&["ledger", "verify", "-i", "inventory.yaml"])
        .expect_code(0)
        .stdout_has("checked against the inventory");
    // The DIBR guide's sign-off table shows the verified approval and its evidence.
    ws.run(&["dibr", "-i", "inventory.yaml", "gated.json", "-o", "dibr"])
        .expect_code(0);
    let md = std::fs::read_to_string(ws.path().join("dibr/dibr.md")).unwrap();
    let row = md
        .lines()
        .find(|l| l.starts_with("| production-go |"))
        .unwrap_or_else(|| panic!("no gate row: {md}"));
    assert!(
        row.contains("approved by Dana Whitfield (signature verified)") && row.contains("CAB-2291"),
        "{row}"
    );
}

#[test]
fn an_approval_for_another_plan_does_not_open_this_gate() {
    let (ws, _) = gated();
    ws.deploy("v1");
    ws.plan_file("gated").expect_code(2);
    std::fs::copy(ws.path().join("gated.json"), ws.path().join("first.json")).unwrap();
    ws.plan_file("gated").expect_code(2); // a second plan of the same release: a new id
    approve(&ws, "first.json", "production-go", "Dana Whitfield").expect_code(0);
    ws.run(&["apply", "gated.json"]).expect_code(8);
}

/// Rewrites the ledger with `edit` applied to the first approval entry, re-hashing the chain
/// after it, so only the signature can tell.
fn rewrite_approval(ws: &Workspace, edit: impl Fn(&mut serde_json::Value)) -> u64 {
    let text = std::fs::read_to_string(ws.ledger_path()).unwrap();
    let mut entries: Vec<Entry> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = entries
        .iter()
        .position(|e| e.event == ferry::ledger::Event::Approval)
        .unwrap();
    edit(entries[at].detail.as_mut().unwrap());
    for i in at..entries.len() {
        if i > 0 {
            entries[i].prev = entries[i - 1].hash.clone();
        }
        entries[i].hash = entries[i].compute_hash();
    }
    let out: String = entries
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect();
    std::fs::write(ws.ledger_path(), out).unwrap();
    entries[at].seq
}

#[test]
fn an_altered_or_forged_approval_is_detected_by_ledger_verify() {
    let (ws, _) = gated();
    ws.plan_file("gated").expect_code(2);
    approve(&ws, "gated.json", "production-go", "Dana Whitfield").expect_code(0);
    ws.run(&["ledger", "verify", "-i", "inventory.yaml"])
        .expect_code(0);

    // Altered: the comment changed and the chain re-hashed; the signature no longer matches.
    let seq = rewrite_approval(&ws, |d| {
        d["payload"]["comment"] = serde_json::json!("approved after the fact");
    });
    ws.run(&["ledger", "verify"])
        .expect_code(7)
        .stdout_has(&format!("entry #{seq} (approval) is not valid"))
        .stdout_has("the signature does not match the approval's content");

    // Forged: re-signed with Mallory's own key, which is not Dana's key in the inventory.
    let mallory = std::fs::read_to_string(ws.path().join("mallory.key")).unwrap();
    let key = ferry::approval::parse_signing_key(&mallory).unwrap();
    rewrite_approval(&ws, |d| {
        let mut a: ferry::approval::SignedApproval = serde_json::from_value(d.clone()).unwrap();
        a.payload.comment = Some("forged".into());
        *d = serde_json::to_value(ferry::approval::sign(a.payload, &key)).unwrap();
    });
    ws.run(&["ledger", "verify"]).expect_code(0);
    ws.run(&["ledger", "verify", "-i", "inventory.yaml"])
        .expect_code(7)
        .stdout_has("not Dana Whitfield's public key in the inventory");
    // Nor does a forged approval open the gate.
    ws.run(&["apply", "gated.json"]).expect_code(8);
}

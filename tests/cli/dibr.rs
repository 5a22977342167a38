//! `ferry dibr`: the guide of a plan before apply, and after an apply that failed and was
//! backed out (what happened, not a cleaned-up story); the HTML opened in headless Chromium.

use std::process::Command;

use crate::support::Workspace;

fn redact(ws: &Workspace, text: &str) -> String {
    let text = text.replace(&ws.path().display().to_string(), "[WS]");
    // Approvers' public keys are made per run.
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("ed25519:") {
        out.push_str(&rest[..i]);
        out.push_str("[KEY]");
        let key = &rest[i + "ed25519:".len()..];
        let end = key
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='))
            .unwrap_or(key.len());
        rest = &key[end..];
    }
    out.push_str(rest);
    regex_lite(&out)
}

/// Replaces ids, times and hashes (which differ per run) with placeholders.
fn regex_lite(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let rest = &s[i..];
        // RFC 3339 time as ferry writes it: 2026-11-22T05:21:36.123Z
        if rest.len() >= 20
            && b[i].is_ascii_digit()
            && rest.as_bytes()[4] == b'-'
            && rest.as_bytes()[10] == b'T'
            && let Some(end) = rest.find('Z')
            && end <= 30
        {
            out.push_str("[TIME]");
            i += end + 1;
            continue;
        }
        // uuid
        if rest.len() >= 36
            && rest.as_bytes()[8] == b'-'
            && rest.as_bytes()[13] == b'-'
            && rest.as_bytes()[18] == b'-'
            && rest.as_bytes()[23] == b'-'
            && rest[..36]
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '-')
        {
            out.push_str("[ID]");
            i += 36;
            continue;
        }
        // hex hashes (16 or 64 chars)
        let hex = rest.chars().take_while(char::is_ascii_hexdigit).count();
        if (hex == 16 || hex == 64) && rest[..hex].chars().any(|c| c.is_ascii_alphabetic()) {
            out.push_str("[HASH]");
            i += hex;
            continue;
        }
        let c = rest.chars().next().unwrap();
        out.push(c);
        // Skip the rest of an alphanumeric word so hashes are only matched at word starts.
        i += c.len_utf8();
        if c.is_ascii_alphanumeric() {
            let word = s[i..]
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect::<String>();
            out.push_str(&word);
            i += word.len();
        }
    }
    out
}

fn dibr(ws: &Workspace, plan: &str) -> String {
    ws.run(&["dibr", "-i", "inventory.yaml", plan, "-o", "dibr"])
        .expect_code(0);
    std::fs::read_to_string(ws.path().join("dibr/dibr.md")).unwrap()
}

#[test]
fn the_guide_before_and_after_a_failed_apply_that_was_backed_out() {
    let ws = Workspace::new();
    ws.deploy("v1");
    ws.plan_file("v3-backout").expect_code(2);
    let before = dibr(&ws, "v3-backout.json");
    insta::assert_snapshot!("dibr_before_apply", redact(&ws, &before));
    ws.run(&["apply", "v3-backout.json"]).expect_code(6);
    let after = dibr(&ws, "v3-backout.json");
    assert!(after.contains("failed and backed out"), "{after}");
    insta::assert_snapshot!("dibr_after_failed_apply", redact(&ws, &after));

    // The revision history keeps one row per build across runs.
    ws.deploy("v2");
    let next = dibr(&ws, "v2.json");
    let rows = next
        .lines()
        .skip_while(|l| !l.starts_with("## 1. Revision history"))
        .take_while(|l| !l.starts_with("## 2."))
        .filter(|l| l.starts_with("| [0-9]") || l.starts_with("| 20"))
        .count();
    assert_eq!(rows, 2, "{next}");
}

#[test]
fn the_html_page_renders_its_sections_in_headless_chromium() {
    let ws = Workspace::new();
    ws.deploy("v1");
    ws.plan_file("v2").expect_code(2);
    ws.run(&["apply", "v2.json"]).expect_code(0);
    dibr(&ws, "v2.json");
    let page = ws.path().join("dibr/dibr.html");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!(
            "--user-data-dir={}",
            ws.path().join("chromium-profile").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs (ci/test.sh installs Debian's chromium)");
    assert!(
        out.status.success(),
        "headless chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    for (id, title) in [
        ("revision-history", "1. Revision history"),
        ("introduction", "2. Introduction and purpose"),
        ("dependencies", "3. Dependencies"),
        ("constraints", "4. Constraints"),
        ("roles", "5. Roles and responsibilities"),
        ("timeline", "6. Timeline"),
        ("site-readiness", "7. Site readiness"),
        ("checklist", "8. Deployment and installation checklist"),
        ("verification", "9. Installation verification"),
        ("backout", "10. Back-out procedure"),
        ("rollback", "11. Rollback procedure"),
        ("risks", "12. Risks and mitigations"),
    ] {
        assert!(
            dom.contains(&format!("<section id=\"{id}\"><h2>{title}</h2>")),
            "section {id} is in the rendered page"
        );
    }
    assert_eq!(
        dom.matches("<tr class=\"done\">").count(),
        3,
        "three upgrade steps done: {dom}"
    );
    assert_eq!(
        dom.matches("<tr class=\"open\">").count(),
        3,
        "three back-out lines not needed: {dom}"
    );
}

/// The guide is anchored and checkable offline: `dibr_written` records the SHA-256 of both
/// files (equal to `sha256sum`'s), the offline commands it prints succeed as printed on a copy
/// of the ledger as of the guide, every evidence cell names an entry of the appendix, and a
/// guide written to a fresh directory still lists the earlier builds of the same release.
#[test]
fn the_guide_is_anchored_checkable_offline_and_knows_earlier_builds() {
    let ws = Workspace::new();
    ws.deploy("v1");
    ws.plan_file("v2").expect_code(2);
    // A second build of the same release (the artifact changed in between).
    std::fs::write(ws.path().join("artifacts/2.0.0/NOTES"), "rebuilt").unwrap();
    ws.plan_file("v2").expect_code(2);
    ws.run(&["apply", "v2.json"]).expect_code(0);
    let md = dibr(&ws, "v2.json");

    let anchor = ws
        .events("dibr_written")
        .pop()
        .expect("dibr_written recorded");
    for (file, key) in [("dibr.md", "markdown_sha256"), ("dibr.html", "html_sha256")] {
        let out = Command::new("sha256sum")
            .arg(ws.path().join("dibr").join(file))
            .output()
            .unwrap();
        let sum = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            anchor["detail"][key].as_str().unwrap(),
            sum.split_whitespace().next().unwrap(),
            "{file}"
        );
    }
    // The commands of section 14, run as printed against the ledger as it was.
    let entries: usize = anchor["detail"]["built_from_entries"].as_u64().unwrap() as usize;
    let head = anchor["detail"]["built_from_head"].as_str().unwrap();
    let text = std::fs::read_to_string(ws.ledger_path()).unwrap();
    let copy: String = text
        .lines()
        .take(entries)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(ws.path().join("copy.jsonl"), copy).unwrap();
    let block = md
        .split("## 14. Offline verification")
        .nth(1)
        .unwrap()
        .split("```")
        .nth(1)
        .unwrap();
    let commands: Vec<&str> = block.lines().filter(|l| l.starts_with("ferry ")).collect();
    assert_eq!(commands.len(), 2, "{block}");
    assert!(commands[0].contains(head), "{}", commands[0]);
    for c in commands {
        let mut args: Vec<&str> = vec!["--ledger", "copy.jsonl"];
        args.extend(c.split_whitespace().skip(1));
        ws.run(&args).expect_code(0);
    }
    let export: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path().join("audit.json")).unwrap())
            .unwrap();
    assert!(export["verification"]["tamper"].is_null(), "{export:#}");
    // Every evidence cell names an entry listed in Appendix A.
    let appendix = md.split("## Appendix A.").nth(1).unwrap();
    for cell in md.split("[#").skip(1) {
        let seq = cell.split(']').next().unwrap();
        assert!(
            appendix.contains(&format!("<a id=\"entry-{seq}\"></a>#{seq} ")),
            "entry #{seq} is in the appendix"
        );
    }
    // A fresh directory: the builds of demo-2.0.0 come from the ledger, numbered, with what
    // changed between them.
    ws.run(&["dibr", "-i", "inventory.yaml", "v2.json", "-o", "fresh"])
        .expect_code(0);
    let fresh = std::fs::read_to_string(ws.path().join("fresh/dibr.md")).unwrap();
    let rows: Vec<&str> = fresh
        .lines()
        .skip_while(|l| !l.starts_with("## 1. Revision history"))
        .take_while(|l| !l.starts_with("## 2."))
        .filter(|l| l.starts_with("| 20"))
        .collect();
    assert_eq!(rows.len(), 2, "{fresh}");
    assert!(rows[0].contains("| 1 | first build |"), "{}", rows[0]);
    assert!(
        rows[1].contains("| 2 | artifact ") && rows[1].contains("artifacts/2.0.0"),
        "{}",
        rows[1]
    );
}

/// `ferry dibr --pdf` prints the guide at Letter and A4: the right page sizes, every page's
/// text inside the page, a footer with the plan id and "page X of Y", the sections there, the
/// PDFs' digests in the anchor entry; and the HTML carries no raw Markdown.
#[test]
fn the_guide_prints_to_letter_and_a4_with_nothing_wider_than_the_page() {
    let ws = Workspace::new();
    ws.deploy("v1");
    ws.plan_file("v3-halt").expect_code(2);
    ws.run(&["apply", "v3-halt.json"]).expect_code(5);
    ws.run(&[
        "dibr",
        "-i",
        "inventory.yaml",
        "v3-halt.json",
        "-o",
        "dibr",
        "--pdf",
    ])
    .expect_code(0);
    let html = std::fs::read_to_string(ws.path().join("dibr/dibr.html")).unwrap();
    assert!(!html.contains('`'), "raw Markdown in the HTML");
    assert!(!html.contains("<code></code>"), "empty code in the HTML");
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path().join("v3-halt.json")).unwrap())
            .unwrap();
    let plan_id = plan["id"].as_str().unwrap();
    let anchor = ws.events("dibr_written").pop().unwrap();
    for (file, width, height) in [
        ("dibr-letter.pdf", 612.0, 792.0),
        ("dibr-a4.pdf", 595.3, 841.9),
    ] {
        let pdf = ws.path().join("dibr").join(file);
        let tool = |name: &str, args: &[&str]| {
            let out = Command::new(name)
                .args(args)
                .arg(&pdf)
                .arg("-")
                .output()
                .unwrap_or_else(|e| panic!("{name} runs (ci/test.sh installs poppler-utils): {e}"));
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let bbox = tool("pdftotext", &["-bbox"]);
        let pages: Vec<&str> = bbox.split("<page ").skip(1).collect();
        assert!(pages.len() > 1, "{file}: several pages");
        for page in &pages {
            let attr = |s: &str, name: &str| -> f64 {
                let v = s.split(&format!("{name}=\"")).nth(1).unwrap();
                v[..v.find('"').unwrap()].parse().unwrap()
            };
            assert!(
                (attr(page, "width") - width).abs() < 1.0,
                "{file}: page width"
            );
            assert!(
                (attr(page, "height") - height).abs() < 1.0,
                "{file}: page height"
            );
            for word in page.split("<word ").skip(1) {
                assert!(
                    attr(word, "xMax") <= width + 0.5,
                    "{file}: a word runs past the page's right edge: {}",
                    &word[..word.find("</word>").unwrap_or(word.len())]
                );
            }
        }
        let text = tool("pdftotext", &["-layout"]);
        for want in [
            "8. Deployment and installation checklist",
            "14. Offline verification",
            "Appendix A. Ledger entries of this plan",
            &format!("page 1 of {}", pages.len()),
            plan_id,
        ] {
            assert!(text.contains(want), "{file} lacks {want:?}");
        }
        let out = Command::new("sha256sum").arg(&pdf).output().unwrap();
        let sum = String::from_utf8_lossy(&out.stdout);
        let recorded: Vec<&str> = anchor["detail"]["pdf"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["sha256"].as_str())
            .collect();
        assert!(
            recorded.contains(&sum.split_whitespace().next().unwrap()),
            "{file}'s digest is in dibr_written"
        );
    }
}

/// Notices and authority come from the inventory and are checked, not assumed: a 48-hour
/// notice before an apply made minutes after planning is reported as not kept, back-out
/// authority is named per site where declared and flagged where not, and actors map to people.
#[test]
fn notices_authority_and_people_come_from_the_inventory() {
    let ws = Workspace::new();
    let inv = Workspace::inventory("")
        .replace(
            "  - { id: clinic-a, tier: sqa, clouds: [local] }",
            "  - { id: clinic-a, tier: sqa, clouds: [local], backout_authority: [Dana Whitfield] }",
        )
        .replace(
            "clouds:\n",
            "communications:\n  - { audience: clinic staff, channel: \"email to ops@example.org\", lead_time_hours: 48 }\nactors: { tester: \"Terry Tester\" }\nclouds:\n",
        );
    ws.write("inventory.yaml", &inv);
    ws.deploy("v1");
    let md = dibr(&ws, "v1.json");
    assert!(
        md.contains("| clinic staff | email to ops@example.org | 48 h | NOT met: 0 h between approval and apply, 48 h needed |"),
        "{md}"
    );
    assert!(md.contains("clinic-a: Dana Whitfield"), "{md}");
    assert!(
        md.contains("clinic-b: not declared in the inventory (sites[].backout_authority)"),
        "{md}"
    );
    assert!(
        md.contains("Site clinic-b declares nobody with authority to order a back-out."),
        "{md}"
    );
    assert!(md.contains("| Terry Tester (tester) |"), "{md}");
    assert!(
        !md.contains("actor `tester`, who is not a named person"),
        "{md}"
    );
}

/// A gated release, applied in two runs around the approval: the gate row names the approver,
/// the signed digest and its entry; the checklist shows both runs.
#[test]
fn the_guide_of_a_gated_release() {
    let (ws, _) = crate::approve::gated();
    // One site after the gate, so the entries' order (and the snapshot) is the same every run.
    let plan = std::fs::read_to_string(ws.path().join("plans/gated.yaml")).unwrap();
    ws.write(
        "plans/gated.yaml",
        &plan.replace("sites: [clinic-b, clinic-c]", "sites: [clinic-b]"),
    );
    ws.deploy("v1");
    ws.plan_file("gated").expect_code(2);
    ws.run(&["apply", "gated.json"]).expect_code(8);
    crate::approve::approve(&ws, "gated.json", "production-go", "Dana Whitfield").expect_code(0);
    ws.run(&["apply", "--resume", "gated.json"]).expect_code(0);
    let md = dibr(&ws, "gated.json");
    assert!(
        md.contains("approved by Dana Whitfield (signature verified)"),
        "{md}"
    );
    assert!(
        !md.contains("changes production sites without an approval gate"),
        "{md}"
    );
    insta::assert_snapshot!("dibr_gated_release", redact(&ws, &md));
}

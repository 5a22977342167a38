//! What users of a CLI like this expect: shell completions and man pages, generated from the
//! same definitions as the parser (so they cannot drift from it).

use crate::support::Workspace;

#[test]
fn completions_for_every_shell_name_the_commands() {
    let ws = Workspace::new();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let r = ws.run(&["completions", shell]);
        r.expect_code(0);
        let out = r.stdout();
        for word in ["apply", "backout", "ledger", "resume", "state-dir"] {
            assert!(out.contains(word), "{shell} completions lack {word}");
        }
    }
    ws.run(&["completions", "tcsh"]).expect_code(2);
}

#[test]
fn man_pages_are_written_for_ferry_and_each_command() {
    let ws = Workspace::new();
    ws.run(&["man", "-o", "man"]).expect_code(0);
    let page = |name: &str| std::fs::read_to_string(ws.path().join("man").join(name)).unwrap();
    let top = page("ferry.1");
    assert!(top.starts_with(".ie") || top.contains(".TH ferry"), "{top}");
    assert!(top.contains("apply"), "{top}");
    let apply = page("ferry-apply.1");
    assert!(apply.contains("resume"), "{apply}");
    assert!(page("ferry-ledger-repair.1").contains("torn"));
}

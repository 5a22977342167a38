//! The fuzzers' committed corpora (`fuzz/corpus/TARGET/`, issue 16) replayed through the very
//! functions the fuzz targets call (`fuzz/src/lib.rs`, compiled here by path): an input a fuzzer
//! once kept that now panics a parser fails CI, without a fuzzer or its toolchain.

// The fuzz crate compiles `drivers/ssh/known_hosts.rs` on its own; here it is that file again.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../../fuzz/src/lib.rs"]
mod targets;

use std::path::PathBuf;

/// Every input of one target's corpus through `run`; how many there were.
fn replay(target: &str, run: impl Fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a corpus entry").path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&data)));
        assert!(caught.is_ok(), "{} panicked its parser", path.display());
        n += 1;
    }
    n
}

/// The text targets take only what `read_to_string` would accept, as the fuzzers did.
fn text(f: fn(&str)) -> impl Fn(&[u8]) {
    move |data| {
        if let Some(t) = targets::text(data) {
            f(t)
        }
    }
}

#[test]
fn the_inventory_corpus_parses_and_validates_without_a_panic() {
    assert!(replay("inventory", text(targets::inventory)) > 1000);
}

#[test]
fn the_release_plan_corpus_parses_and_validates_without_a_panic() {
    assert!(replay("release_plan", text(targets::release_plan)) > 1000);
}

#[test]
fn the_runbook_corpus_parses_without_a_panic() {
    assert!(replay("runbook", text(targets::runbook)) > 1000);
}

#[test]
fn the_saved_plan_corpus_parses_without_a_panic() {
    assert!(replay("saved_plan", text(targets::saved_plan)) > 100);
}

#[test]
fn the_ledger_corpus_verifies_without_a_panic() {
    assert!(replay("ledger", targets::ledger) > 100);
}

#[test]
fn the_known_hosts_corpus_parses_without_a_panic() {
    assert!(replay("known_hosts", text(targets::known_hosts_file)) >= 4);
}

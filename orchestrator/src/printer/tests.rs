//! The printers are interchangeable: the same calls give a person's text or versioned JSON
//! documents that parse back.

use std::io::Write;
use std::sync::{Arc, Mutex};

use super::{LedgerHead, Printer, for_output};
use crate::executor::Recorded;

/// A writer the test can read afterwards.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Plans and applies the engine tests' release, printing each result with `p`.
async fn print_a_run(p: &mut dyn Printer) -> (tempfile::TempDir, crate::engine::State) {
    let dir = tempfile::tempdir().unwrap();
    let (state, path) = crate::engine::tests::planned(dir.path()).await;
    let saved = crate::workspace::read_plan(&path).unwrap();
    p.plan(&saved, &path, &[]);
    let (_tx, cancel) = tokio::sync::watch::channel(false);
    let opts = crate::engine::apply::Options::fresh(&[]);
    let r = crate::engine::apply::apply(&state, &path, opts, Arc::new(Recorded::default()), cancel)
        .await
        .unwrap();
    p.applied(&r, &path, &LedgerHead::of(&state.ledger));
    let mut n = 0;
    state
        .ledger
        .for_each_parsed(&mut |e| {
            p.entry(&e);
            n += 1;
        })
        .unwrap();
    p.entries_end(n);
    let v = crate::engine::audit::verify(&state.ledger, None, None, &Default::default()).unwrap();
    p.verified(&state.ledger.location(), &v);
    p.error(&crate::engine::Error::Refused("no".into()), 1);
    (dir, state)
}

#[tokio::test]
async fn json_documents_parse_back_with_their_format_and_version() {
    let buf = Buf::default();
    let mut p = for_output(true, false, Box::new(buf.clone()));
    let (_dir, state) = print_a_run(p.as_mut()).await;
    let docs: Vec<serde_json::Value> = buf
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON document"))
        .collect();
    let formats: Vec<&str> = docs.iter().filter_map(|d| d["format"].as_str()).collect();
    assert_eq!(
        formats,
        [
            "ferry.plan-report",
            "ferry.apply-report",
            "ferry.ledger-verify",
            "ferry.error"
        ]
    );
    assert!(
        docs.iter()
            .filter(|d| d.get("format").is_some())
            .all(|d| d["version"] == 1)
    );
    let apply = &docs[1];
    assert_eq!(apply["outcome"], "completed");
    assert_eq!(apply["exit_code"], 0);
    assert_eq!(apply["steps"].as_array().unwrap().len(), 2);
    // `ledger show` is JSON Lines of the entries themselves, each as written.
    let entries: Vec<crate::ledger::Entry> = docs
        .iter()
        .filter(|d| d.get("format").is_none())
        .map(|d| serde_json::from_value(d.clone()).unwrap())
        .collect();
    assert_eq!(entries, state.ledger.read_verified().unwrap());
    assert_eq!(docs.last().unwrap()["error"], "no");
}

#[tokio::test]
async fn the_human_printer_takes_the_same_calls() {
    let buf = Buf::default();
    let mut p = for_output(false, false, Box::new(buf.clone()));
    let (_dir, state) = print_a_run(p.as_mut()).await;
    let text = buf.text();
    assert!(text.contains("Apply it with: ferry apply"), "{text}");
    assert!(text.contains("Plan `r` ("), "{text}");
    assert!(
        text.contains(") completed: 2 step(s) succeeded, 0 already done."),
        "{text}"
    );
    let n = state.ledger.read_all().unwrap().len();
    assert!(text.contains(&format!("{n} entries")), "{text}");
    assert!(text.contains("verified:"), "{text}");
    // Errors go to stderr, not into the results.
    assert!(!text.contains("error: no"), "{text}");
}

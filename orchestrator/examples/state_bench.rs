//! Appends per second to a state backend with N concurrent writers: the PostgreSQL store at
//! a URL, or the local backend in a directory. Used by `ci/bench-state.sh`; not a test.
//!
//! `cargo run --release --example state_bench -- URL|DIR WRITERS ENTRIES_PER_WRITER shared|clients`
//! `shared`: the writers are threads of one process on one handle (what an apply's steps
//! do: their appends are group-committed); `clients`: each writer has its own handle (its own
//! connection; for PostgreSQL, separate runners on one store). Prints
//! `backend=… mode=… writers=… entries=… seconds=… eps=…`.

use std::sync::Arc;
use std::time::Instant;

use ferry::ledger::{Event, Ledger, NewEntry};
use ferry::state::postgres::{PgState, StateUrl};

fn open(place: &str) -> Ledger {
    if StateUrl::is_postgres(place) {
        let url = StateUrl::parse(place).expect("state URL");
        PgState::init(&url, None).expect("ferry state init");
        Ledger::with_backend(Arc::new(PgState::new(url)))
    } else {
        let dir = std::path::Path::new(place);
        Ledger::local(dir.join("ledger.jsonl"), dir)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, place, writers, per, mode] = args.as_slice() else {
        eprintln!("usage: state_bench URL|DIR WRITERS ENTRIES_PER_WRITER shared|clients");
        std::process::exit(2);
    };
    let (writers, per): (usize, usize) = (writers.parse().unwrap(), per.parse().unwrap());
    let shared = open(place);
    let before = shared.verify().expect("verify").entries;
    let started = Instant::now();
    std::thread::scope(|s| {
        for w in 0..writers {
            let l = if mode == "clients" {
                open(place)
            } else {
                shared.clone()
            };
            s.spawn(move || {
                for i in 0..per {
                    let mut e = NewEntry::new("bench", Event::StepSucceeded).plan("bench");
                    e.step = Some(format!("s{w:03}-{i:06}"));
                    l.append(e).expect("append");
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let report = shared.verify().expect("verify");
    assert!(report.tamper.is_none(), "{report:?}");
    assert_eq!(
        report.entries - before,
        (writers * per) as u64,
        "every entry, once"
    );
    let backend = if StateUrl::is_postgres(place) {
        "postgres"
    } else {
        "local"
    };
    println!(
        "backend={backend} mode={mode} writers={writers} entries={} seconds={secs:.3} eps={:.0}",
        writers * per,
        (writers * per) as f64 / secs
    );
}

//! Ledger appends per second with N concurrent writers, group commit against one `fsync` per
//! entry, on a ledger in a directory of your choice (the disk is what is measured). Used by
//! `ci/bench-ledger.sh`; not a test.
//!
//! `cargo run --release --example ledger_bench -- DIR WRITERS ENTRIES_PER_WRITER group|single`
//! prints `mode=… writers=… entries=… seconds=… eps=…`.

use std::time::Instant;

use ferry::ledger::{Event, NewEntry};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, writers, per, mode] = args.as_slice() else {
        eprintln!("usage: ledger_bench DIR WRITERS ENTRIES_PER_WRITER group|single");
        std::process::exit(2);
    };
    let (writers, per): (usize, usize) = (writers.parse().unwrap(), per.parse().unwrap());
    let path = std::path::Path::new(dir).join(format!("bench-{mode}-{writers}.jsonl"));
    let _ = std::fs::remove_file(&path);
    let ledger = ferry::ledger::FileLedger::new(&path);
    let started = Instant::now();
    std::thread::scope(|s| {
        for w in 0..writers {
            let l = ledger.clone();
            let mode = mode.as_str();
            s.spawn(move || {
                for i in 0..per {
                    let mut e = NewEntry::new("bench", Event::StepSucceeded).plan("bench");
                    e.step = Some(format!("s{w:03}-{i:06}"));
                    let r = match mode {
                        "group" => l.append(e),
                        _ => l.append_alone(e),
                    };
                    r.expect("append");
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let report = ledger.verify().expect("verify");
    assert!(report.tamper.is_none(), "{report:?}");
    let n = (writers * per) as f64;
    println!(
        "mode={mode} writers={writers} entries={} seconds={secs:.3} eps={:.0}",
        report.entries,
        n / secs
    );
}

//! Checking the chain: the first entry that was altered, removed, inserted or reordered.

use serde::Serialize;

use super::entry::{Entry, GENESIS, LEDGER_FORMAT_VERSION};

/// What is wrong at the first bad entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Tamper {
    /// The line is not a ledger entry (or not in canonical form): edited by hand.
    Unparseable { line: usize, reason: String },
    /// The entry's content does not match its own hash: altered.
    HashMismatch { line: usize, seq: u64 },
    /// The sequence jumps or goes back: an entry was removed, inserted or reordered.
    SequenceGap {
        line: usize,
        expected: u64,
        found: u64,
    },
    /// The entry does not chain to the previous one: removed, inserted or reordered.
    BrokenChain { line: usize, seq: u64 },
    /// The last line has no newline: a torn write, or a truncation.
    TornTail { line: usize },
    /// Written by a newer ferry than this one.
    NewerFormat { line: usize, version: u32 },
}

impl std::fmt::Display for Tamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tamper::Unparseable { line, reason } => write!(
                f,
                "line {line}: not a valid ledger entry ({reason}): the entry was altered"
            ),
            Tamper::HashMismatch { line, seq } => write!(
                f,
                "line {line} (entry #{seq}): content does not match its hash: the entry was altered"
            ),
            Tamper::SequenceGap {
                line,
                expected,
                found,
            } => write!(
                f,
                "line {line}: expected entry #{expected}, found #{found}: an entry was {} here",
                if found > expected {
                    "removed"
                } else {
                    "inserted or moved"
                }
            ),
            Tamper::BrokenChain { line, seq } => write!(
                f,
                "line {line} (entry #{seq}): does not chain to the entry before it: an entry was removed, inserted or reordered"
            ),
            Tamper::TornTail { line } => write!(
                f,
                "line {line}: the last entry is incomplete (torn write or truncation)"
            ),
            Tamper::NewerFormat { line, version } => write!(
                f,
                "line {line}: written by a newer ferry (entry format {version}); this build reads {LEDGER_FORMAT_VERSION}"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Entries checked and found good (before the first problem).
    pub entries: u64,
    /// Hash of the last good entry: anchor it elsewhere to detect truncation.
    pub head: Option<String>,
    pub tamper: Option<Tamper>,
}

pub fn verify_lines(bytes: &[u8]) -> VerifyReport {
    let mut report = VerifyReport {
        entries: 0,
        head: None,
        tamper: None,
    };
    if bytes.is_empty() {
        return report;
    }
    let torn = !bytes.ends_with(b"\n");
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    let mut prev = GENESIS.to_owned();
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        if torn && n == lines.len() {
            report.tamper = Some(Tamper::TornTail { line: n });
            return report;
        }
        let entry: Entry = match serde_json::from_str(line) {
            Ok(e) => e,
            Err(e) => {
                report.tamper = Some(Tamper::Unparseable {
                    line: n,
                    reason: e.to_string(),
                });
                return report;
            }
        };
        if entry.v > LEDGER_FORMAT_VERSION {
            report.tamper = Some(Tamper::NewerFormat {
                line: n,
                version: entry.v,
            });
            return report;
        }
        if serde_json::to_string(&entry).ok().as_deref() != Some(line) {
            report.tamper = Some(Tamper::Unparseable {
                line: n,
                reason: "not in canonical form".into(),
            });
            return report;
        }
        if entry.compute_hash() != entry.hash {
            report.tamper = Some(Tamper::HashMismatch {
                line: n,
                seq: entry.seq,
            });
            return report;
        }
        if entry.seq != report.entries {
            report.tamper = Some(Tamper::SequenceGap {
                line: n,
                expected: report.entries,
                found: entry.seq,
            });
            return report;
        }
        if entry.prev != prev {
            report.tamper = Some(Tamper::BrokenChain {
                line: n,
                seq: entry.seq,
            });
            return report;
        }
        prev.clone_from(&entry.hash);
        report.entries += 1;
        report.head = Some(entry.hash);
    }
    report
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ledger::{Event, NewEntry};

    fn chain(n: usize) -> Vec<String> {
        let mut prev = GENESIS.to_owned();
        (0..n)
            .map(|i| {
                let mut e = NewEntry::new("alice", Event::StepSucceeded)
                    .plan("p1")
                    .message(format!("step {i}"));
                e.time = Some("2026-01-01T00:00:00.000Z".into());
                let sealed = e.seal(i as u64, prev.clone());
                prev.clone_from(&sealed.hash);
                serde_json::to_string(&sealed).unwrap()
            })
            .collect()
    }

    fn join(lines: &[String]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        let r = verify_lines(&join(&chain(5)));
        assert_eq!(r.entries, 5);
        assert!(r.tamper.is_none());
    }

    proptest! {
        /// Changing any one byte of any entry is detected, at that entry or before it.
        #[test]
        fn any_flipped_byte_is_detected(n in 1usize..8, pick in any::<prop::sample::Index>(), bit in 0u8..7) {
            let lines = chain(n);
            let mut bytes = join(&lines);
            let i = pick.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let r = verify_lines(&bytes);
            prop_assert!(r.tamper.is_some(), "undetected flip at byte {}", i);
        }

        /// Dropping any entry but the last is detected at the entry that follows it.
        #[test]
        fn dropped_entry_is_detected(n in 2usize..8, pick in any::<prop::sample::Index>()) {
            let mut lines = chain(n);
            let i = pick.index(n - 1);
            lines.remove(i);
            let r = verify_lines(&join(&lines));
            prop_assert_eq!(r.entries, i as u64);
            prop_assert!(r.tamper.is_some());
        }

        /// Swapping any two entries is detected at the first of them.
        #[test]
        fn swapped_entries_are_detected(n in 2usize..8, a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
            let mut lines = chain(n);
            let (a, b) = (a.index(n), b.index(n));
            prop_assume!(a != b);
            lines.swap(a, b);
            let r = verify_lines(&join(&lines));
            prop_assert_eq!(r.entries, a.min(b) as u64);
            prop_assert!(r.tamper.is_some());
        }
    }

    #[test]
    fn torn_tail_is_reported() {
        let lines = chain(3);
        let mut bytes = join(&lines);
        bytes.truncate(bytes.len() - 10);
        let r = verify_lines(&bytes);
        assert_eq!(r.entries, 2);
        assert_eq!(r.tamper, Some(Tamper::TornTail { line: 3 }));
    }
}

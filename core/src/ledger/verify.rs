//! Checking the chain: the first entry that was altered, removed, inserted or reordered.

use serde::Serialize;
use sha2::{Digest, Sha256};

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
    verify_from(bytes, 0, GENESIS, &mut |_| {})
}

/// Verifies `bytes`, the ledger's lines from entry `first_seq` on, chained to `prev`; hands
/// each good entry to `on_entry`. Lines end with `\n` only (a `\r` is not canonical form) and
/// are UTF-8; line numbers in the report count from `first_seq + 1`.
pub fn verify_from(
    bytes: &[u8],
    first_seq: u64,
    prev: &str,
    on_entry: &mut dyn FnMut(Entry),
) -> VerifyReport {
    let mut v = Verifier::new(first_seq, prev);
    let whole = bytes.len() - bytes.iter().rev().take_while(|b| **b != b'\n').count();
    v.push(&bytes[..whole], on_entry);
    v.finish(bytes.len() - whole)
}

/// A chain verified block by block, in memory that does not grow with the ledger: feed it
/// blocks of whole lines in order ([`Verifier::push`]), then say how many torn bytes followed
/// the last newline ([`Verifier::finish`]). Each line is checked on its own (UTF-8, parse,
/// format version, canonical shape, its hash over its own bytes) on every core, then the chain
/// (sequence and `prev`) in order.
pub struct Verifier {
    report: VerifyReport,
    prev: String,
    line: usize,
}

/// Lines per block checked in parallel; a block's entries are the only ones held at once.
const PARALLEL_MIN_LINES: usize = 2048;

impl Verifier {
    pub fn new(first_seq: u64, prev: &str) -> Self {
        Self {
            report: VerifyReport {
                entries: first_seq,
                head: (first_seq > 0).then(|| prev.to_owned()),
                tamper: None,
            },
            prev: prev.to_owned(),
            line: first_seq as usize,
        }
    }

    /// Whether a problem was found (later blocks are then ignored).
    pub fn failed(&self) -> bool {
        self.report.tamper.is_some()
    }

    /// Checks `block` (whole lines, each ending in `\n`).
    pub fn push(&mut self, block: &[u8], on_entry: &mut dyn FnMut(Entry)) {
        if self.failed() || block.is_empty() {
            return;
        }
        let body = block.strip_suffix(b"\n").unwrap_or(block);
        let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
        let first = self.line + 1;
        let checked = check_lines(&lines, first);
        for (i, r) in checked.into_iter().enumerate() {
            let n = first + i;
            let entry = match r {
                Ok(e) => e,
                Err(t) => {
                    self.report.tamper = Some(t);
                    return;
                }
            };
            if let Err(t) = self.link(&entry, n) {
                self.report.tamper = Some(t);
                return;
            }
            self.prev.clone_from(&entry.hash);
            self.report.entries += 1;
            self.report.head = Some(entry.hash.clone());
            self.line = n;
            on_entry(entry);
        }
    }

    fn link(&self, entry: &Entry, n: usize) -> Result<(), Tamper> {
        if entry.seq != self.report.entries {
            return Err(Tamper::SequenceGap {
                line: n,
                expected: self.report.entries,
                found: entry.seq,
            });
        }
        if entry.prev != self.prev {
            return Err(Tamper::BrokenChain {
                line: n,
                seq: entry.seq,
            });
        }
        Ok(())
    }

    /// The report; `torn` bytes after the last newline are a torn tail.
    pub fn finish(mut self, torn: usize) -> VerifyReport {
        if torn > 0 && self.report.tamper.is_none() {
            self.report.tamper = Some(Tamper::TornTail {
                line: self.line + 1,
            });
        }
        self.report
    }
}

/// Each line checked alone, on two threads when there are many.
fn check_lines(lines: &[&[u8]], first: usize) -> Vec<Result<Entry, Tamper>> {
    let one = |(i, raw): (usize, &&[u8])| check_line(raw, first + i);
    if lines.len() < PARALLEL_MIN_LINES {
        return lines.iter().enumerate().map(one).collect();
    }
    let mid = lines.len() / 2;
    let (a, b) = lines.split_at(mid);
    std::thread::scope(|s| {
        let second = s.spawn(|| {
            b.iter()
                .enumerate()
                .map(|(i, raw)| check_line(raw, first + mid + i))
                .collect::<Vec<_>>()
        });
        let mut out: Vec<_> = a.iter().enumerate().map(one).collect();
        out.extend(second.join().expect("verifier thread"));
        out
    })
}

/// One line on its own: an entry in canonical form whose hash is its own.
///
/// The hash is taken over the line's bytes with the hash value emptied, which is exactly the
/// canonical form `Entry::compute_hash` hashes (`hash` is the last field): so any byte changed,
/// added or removed anywhere in the line (whitespace, key order, escapes, a field) is a
/// mismatch, without serialising the entry again.
fn check_line(raw: &[u8], n: usize) -> Result<Entry, Tamper> {
    let unparseable = |reason: &str| Tamper::Unparseable {
        line: n,
        reason: reason.to_owned(),
    };
    let line = std::str::from_utf8(raw).map_err(|_| unparseable("not UTF-8"))?;
    let entry: Entry = serde_json::from_str(line).map_err(|e| unparseable(&e.to_string()))?;
    if entry.v > LEDGER_FORMAT_VERSION {
        return Err(Tamper::NewerFormat {
            line: n,
            version: entry.v,
        });
    }
    // `..,"hash":"<64 hex>"}`: the hash is the last field, as ferry writes it.
    let tail = format!(",\"hash\":\"{}\"}}", entry.hash);
    let Some(unsealed_head) = line.strip_suffix(&tail[..]) else {
        return Err(unparseable("not in canonical form"));
    };
    if entry.hash.len() != 64 {
        return Err(unparseable("not in canonical form"));
    }
    let mut h = Sha256::new();
    h.update(unsealed_head.as_bytes());
    h.update(b",\"hash\":\"\"}");
    if hex::encode(h.finalize()) != entry.hash {
        return Err(Tamper::HashMismatch {
            line: n,
            seq: entry.seq,
        });
    }
    Ok(entry)
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

    /// Hashing the line's bytes gives what `compute_hash` gives (the canonical form), and a
    /// line whose JSON means the same but is written differently does not verify.
    #[test]
    fn the_line_hash_is_the_canonical_hash() {
        let lines = chain(3);
        for l in &lines {
            let e: Entry = serde_json::from_str(l).unwrap();
            assert_eq!(e.compute_hash(), e.hash);
            assert!(check_line(l.as_bytes(), 1).is_ok());
        }
        let spaced = lines[0].replacen(",\"seq\"", ", \"seq\"", 1);
        assert!(matches!(
            check_line(spaced.as_bytes(), 1),
            Err(Tamper::HashMismatch { .. })
        ));
        let reordered = lines[0].replacen("\"v\":1,\"seq\":0", "\"seq\":0,\"v\":1", 1);
        assert!(check_line(reordered.as_bytes(), 1).is_err());
    }

    #[test]
    fn blocks_in_any_size_verify_the_same() {
        let lines = chain(5000);
        let all = join(&lines);
        let whole = verify_lines(&all);
        assert_eq!(whole.entries, 5000);
        for cut in [1, 7, 2048, 4999] {
            let split = join(&lines[..cut]).len();
            let mut v = Verifier::new(0, GENESIS);
            let mut n = 0;
            v.push(&all[..split], &mut |_| n += 1);
            v.push(&all[split..], &mut |_| n += 1);
            assert_eq!(v.finish(0), whole, "cut at {cut}");
            assert_eq!(n, 5000);
        }
        let mut bad = lines.clone();
        bad[3000] = bad[3000].replacen("alice", "mallory", 1);
        let r = verify_lines(&join(&bad));
        assert_eq!(r.entries, 3000);
        assert!(
            matches!(r.tamper, Some(Tamper::HashMismatch { line: 3001, .. })),
            "{r:?}"
        );
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

    /// Canonical form means `\n` only: the same chain with CRLF line ends does not verify.
    #[test]
    fn crlf_line_ends_are_not_canonical() {
        let lines = chain(3);
        let crlf: Vec<u8> = lines
            .iter()
            .flat_map(|l| format!("{l}\r\n").into_bytes())
            .collect();
        let r = verify_lines(&crlf);
        assert_eq!(r.entries, 0);
        assert!(
            matches!(r.tamper, Some(Tamper::Unparseable { line: 1, ref reason }) if reason.contains("canonical")),
            "{r:?}"
        );
    }

    #[test]
    fn verifying_from_a_checkpoint_continues_the_chain() {
        let lines = chain(5);
        let all = join(&lines);
        let full = verify_lines(&all);
        let first = join(&lines[..2]);
        let head = verify_lines(&first).head.unwrap();
        let rest = join(&lines[2..]);
        let mut seen = Vec::new();
        let r = verify_from(&rest, 2, &head, &mut |e| seen.push(e.seq));
        assert_eq!((r.entries, r.head.clone()), (5, full.head));
        assert_eq!(seen, vec![2, 3, 4]);
        // The same tail against another prefix does not chain.
        let r = verify_from(&rest, 2, GENESIS, &mut |_| {});
        assert!(
            matches!(r.tamper, Some(Tamper::BrokenChain { line: 3, .. })),
            "{r:?}"
        );
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

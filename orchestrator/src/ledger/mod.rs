//! The audit ledger: append-only JSON Lines, each entry hash-chained to the one before.
//!
//! An append takes a short exclusive file lock (other ferry processes wait), reads the chain
//! head, writes one line and `fsync`s it before returning: an effect is only ever reported
//! after its entry is durable.

mod entry;
mod verify;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub use entry::{
    Entry, Event, GENESIS, LEDGER_FORMAT_VERSION, NewEntry, Outcome, now_rfc3339 as now,
};
pub use verify::{Tamper, VerifyReport, verify_lines};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open ledger {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write ledger {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "ledger {path} has a last entry that does not parse ({reason}); run `ferry ledger verify`"
    )]
    BadHead { path: PathBuf, reason: String },
    #[error(
        "ledger {path} was written by a newer ferry (entry format {found}, this build writes {LEDGER_FORMAT_VERSION}); refusing to append"
    )]
    Newer { path: PathBuf, found: u32 },
}

/// A handle on one ledger file.
#[derive(Debug, Clone)]
pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry, durably; returns it as written (with seq, prev and hash).
    pub fn append(&self, new: NewEntry) -> Result<Entry, LedgerError> {
        let write_err = |source| LedgerError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(|source| LedgerError::Open {
                path: self.path.clone(),
                source,
            })?;
        file.lock().map_err(write_err)?;
        let result = self.append_locked(&mut file, new);
        let _ = file.unlock();
        result
    }

    fn append_locked(&self, file: &mut File, new: NewEntry) -> Result<Entry, LedgerError> {
        let write_err = |source| LedgerError::Write {
            path: self.path.clone(),
            source,
        };
        let (seq, prev) = match last_line(file).map_err(write_err)? {
            None => (0, GENESIS.to_owned()),
            Some(line) => {
                let head: Entry =
                    serde_json::from_str(&line).map_err(|e| LedgerError::BadHead {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    })?;
                if head.v > LEDGER_FORMAT_VERSION {
                    return Err(LedgerError::Newer {
                        path: self.path.clone(),
                        found: head.v,
                    });
                }
                (head.seq + 1, head.hash)
            }
        };
        let entry = new.seal(seq, prev);
        let mut line = serde_json::to_string(&entry).expect("entries serialize");
        line.push('\n');
        file.write_all(line.as_bytes()).map_err(write_err)?;
        file.sync_data().map_err(write_err)?;
        Ok(entry)
    }

    /// Every entry that parses, in file order (use [`Ledger::verify`] to trust them).
    pub fn read_all(&self) -> Result<Vec<Entry>, LedgerError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(LedgerError::Open {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    pub fn verify(&self) -> Result<VerifyReport, LedgerError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(LedgerError::Open {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        Ok(verify_lines(&bytes))
    }
}

/// The last complete line of the file, if any. A torn final write (no trailing newline) is
/// returned as is and then fails to parse, which stops appends until someone looks.
fn last_line(file: &mut File) -> std::io::Result<Option<String>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        file.take(len - start).read_to_end(&mut buf)?;
        let trimmed = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if let Some(pos) = trimmed.iter().rposition(|b| *b == b'\n') {
            return Ok(Some(
                String::from_utf8_lossy(&trimmed[pos + 1..]).into_owned(),
            ));
        }
        if start == 0 {
            return Ok(Some(String::from_utf8_lossy(trimmed).into_owned()));
        }
        window *= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(event: Event) -> NewEntry {
        NewEntry::new("tester", event)
    }

    #[test]
    fn appends_chain_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(dir.path().join("ledger.jsonl"));
        let a = ledger.append(entry(Event::PlanCreated)).unwrap();
        let b = ledger.append(entry(Event::ApplyStarted)).unwrap();
        assert_eq!(a.seq, 0);
        assert_eq!(a.prev, GENESIS);
        assert_eq!(b.seq, 1);
        assert_eq!(b.prev, a.hash);
        let report = ledger.verify().unwrap();
        assert_eq!(report.entries, 2);
        assert_eq!(report.head.as_deref(), Some(b.hash.as_str()));
        assert!(report.tamper.is_none(), "{report:?}");
    }

    #[test]
    fn refuses_to_extend_a_newer_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(dir.path().join("ledger.jsonl"));
        let a = ledger.append(entry(Event::PlanCreated)).unwrap();
        let mut newer = serde_json::to_value(&a).unwrap();
        newer["v"] = 99.into();
        std::fs::write(ledger.path(), format!("{newer}\n")).unwrap();
        let err = ledger.append(entry(Event::ApplyStarted)).unwrap_err();
        assert!(matches!(err, LedgerError::Newer { found: 99, .. }), "{err}");
    }

    #[test]
    fn concurrent_appends_from_threads_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        std::thread::scope(|s| {
            for _ in 0..4 {
                let l = Ledger::new(&path);
                s.spawn(move || {
                    for _ in 0..25 {
                        l.append(entry(Event::StepStarted)).unwrap();
                    }
                });
            }
        });
        let report = Ledger::new(&path).verify().unwrap();
        assert_eq!(report.entries, 100);
        assert!(report.tamper.is_none(), "{report:?}");
    }
}

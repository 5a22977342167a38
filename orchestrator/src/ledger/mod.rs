//! The audit ledger: append-only JSON Lines, each entry hash-chained to the one before.
//!
//! An append takes a short exclusive file lock (other ferry processes wait), reads the chain
//! head, writes one line and `fsync`s it before returning: an effect is only ever reported
//! after its entry is durable.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use ferry_core::ledger::{
    Entry, Event, GENESIS, LEDGER_FORMAT_VERSION, NewEntry, Outcome, Tamper, VerifyReport, now,
    verify_from, verify_lines,
};

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
    #[error(
        "ledger {path} ends with {bytes} byte(s) of a torn last line (no newline); nothing is appended after it: run `ferry ledger repair` (the torn bytes are kept aside, the repair is recorded)"
    )]
    TornTail { path: PathBuf, bytes: u64 },
    #[error(
        "ledger {path} does not verify: {tamper}; ferry does not act on a ledger it cannot trust (see `ferry ledger verify`)"
    )]
    Broken { path: PathBuf, tamper: Tamper },
    #[error(
        "this run no longer holds the apply lock ({0}); it stopped without acting or recording further"
    )]
    Fenced(#[source] crate::lock::LockError),
}

/// A handle on one ledger file; a fenced handle belongs to one apply, and appends only while
/// that apply holds the lock.
#[derive(Debug, Clone)]
pub struct Ledger {
    path: PathBuf,
    fence: Option<std::sync::Arc<crate::lock::Fence>>,
}

/// Where a verified prefix of the ledger ends: kept beside it (`<ledger>.verified`) so a
/// check only verifies the entries added since (the prefix is compared by its SHA-256, which
/// costs a fraction of verifying it). It is a cache: a missing or mismatching one means a full
/// verification, never trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Checkpoint {
    offset: u64,
    entries: u64,
    head: String,
    prefix_sha256: String,
}

/// What `ferry ledger repair` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "repair", rename_all = "snake_case")]
pub enum Repair {
    /// The ledger ends with a newline: nothing to do.
    Nothing,
    /// The torn line was a whole, valid next entry missing its newline: completed.
    Completed { seq: u64 },
    /// The torn bytes were moved to `kept_at` and the file cut back to its last full line.
    SetAside {
        bytes: u64,
        sha256: String,
        kept_at: String,
    },
}

impl Ledger {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            fence: None,
        }
    }

    /// The same ledger, fenced by an apply's lock: every append first checks (under the
    /// ledger's own file lock) that the lock still names this apply.
    pub fn fenced(&self, fence: crate::lock::Fence) -> Self {
        Self {
            path: self.path.clone(),
            fence: Some(std::sync::Arc::new(fence)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry, durably; returns it as written (with seq, prev and hash).
    pub fn append(&self, new: NewEntry) -> Result<Entry, LedgerError> {
        self.append_after(|| Ok(((), new))).map(|((), e)| e)
    }

    /// Runs `make` and appends the entry it returns, both under the ledger's file lock: what
    /// `make` did (taking the apply lock) and its record are one step for every other writer.
    pub fn append_after<T, E: From<LedgerError>>(
        &self,
        make: impl FnOnce() -> Result<(T, NewEntry), E>,
    ) -> Result<(T, Entry), E> {
        let mut file = self.open_locked()?;
        let result = make().and_then(|(t, new)| {
            self.append_locked(&mut file, new)
                .map(|e| (t, e))
                .map_err(E::from)
        });
        let _ = file.unlock();
        result
    }

    fn open_locked(&self) -> Result<File, LedgerError> {
        let write_err = |source| LedgerError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(|source| LedgerError::Open {
                path: self.path.clone(),
                source,
            })?;
        file.lock().map_err(write_err)?;
        Ok(file)
    }

    fn append_locked(&self, file: &mut File, new: NewEntry) -> Result<Entry, LedgerError> {
        let write_err = |source| LedgerError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(f) = &self.fence
            && new.event != Event::LockLost
        {
            f.check().map_err(LedgerError::Fenced)?;
        }
        let torn = torn_tail(file).map_err(write_err)?;
        if torn > 0 {
            return Err(LedgerError::TornTail {
                path: self.path.clone(),
                bytes: torn,
            });
        }
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
        if seq == 0 {
            // A new ledger: its directory entry must survive a crash too.
            let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
            crate::durable::sync_dir(dir.unwrap_or(Path::new("."))).map_err(write_err)?;
        }
        Ok(entry)
    }

    /// Every entry that parses, in file order, for display (use [`Ledger::read_verified`] to
    /// act on them).
    pub fn read_all(&self) -> Result<Vec<Entry>, LedgerError> {
        let bytes = self.read_bytes()?;
        Ok(bytes
            .split(|b| *b == b'\n')
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect())
    }

    fn read_bytes(&self) -> Result<Vec<u8>, LedgerError> {
        match std::fs::read(&self.path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(LedgerError::Open {
                path: self.path.clone(),
                source,
            }),
        }
    }

    pub fn verify(&self) -> Result<VerifyReport, LedgerError> {
        self.verify_each(&mut |_| {})
    }

    /// Verifies the whole chain as a stream (blocks of a few MiB: memory does not grow with
    /// the ledger), handing each good entry to `on_entry` in order.
    pub fn verify_each(
        &self,
        on_entry: &mut dyn FnMut(Entry),
    ) -> Result<VerifyReport, LedgerError> {
        const BLOCK: usize = 4 << 20;
        let open_err = |source| LedgerError::Open {
            path: self.path.clone(),
            source,
        };
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(verify_lines(b""));
            }
            Err(e) => return Err(open_err(e)),
        };
        let mut v = ferry_core::ledger::Verifier::new(0, GENESIS);
        let mut buf: Vec<u8> = Vec::with_capacity(BLOCK * 2);
        loop {
            let start = buf.len();
            buf.resize(start + BLOCK, 0);
            let n = file.read(&mut buf[start..]).map_err(open_err)?;
            buf.truncate(start + n);
            if n == 0 {
                break;
            }
            if let Some(end) = buf.iter().rposition(|b| *b == b'\n') {
                v.push(&buf[..=end], on_entry);
                if v.failed() {
                    return Ok(v.finish(0));
                }
                buf.drain(..=end);
            }
        }
        Ok(v.finish(buf.len()))
    }

    /// Every entry, only if the whole chain verifies (else [`LedgerError::Broken`] naming the
    /// first bad entry, a torn tail included). Entries verified by an earlier call are not
    /// verified again while the file's prefix is byte for byte what was verified.
    pub fn read_verified(&self) -> Result<Vec<Entry>, LedgerError> {
        let bytes = self.read_bytes()?;
        let ck_path = self.checkpoint_path();
        let ck: Option<Checkpoint> = std::fs::read(&ck_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|c: &Checkpoint| {
                let end = c.offset as usize;
                end <= bytes.len()
                    && (end == 0 || bytes[end - 1] == b'\n')
                    && crate::load::sha256_hex(&bytes[..end]) == c.prefix_sha256
            });
        let mut entries = Vec::new();
        let report = match &ck {
            Some(c) => {
                let prefix = &bytes[..c.offset as usize];
                entries.extend(
                    prefix
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .filter_map(|l| serde_json::from_slice::<Entry>(l).ok()),
                );
                verify_from(&bytes[c.offset as usize..], c.entries, &c.head, &mut |e| {
                    entries.push(e)
                })
            }
            None => verify_from(&bytes, 0, GENESIS, &mut |e| entries.push(e)),
        };
        if let Some(tamper) = report.tamper {
            return Err(LedgerError::Broken {
                path: self.path.clone(),
                tamper,
            });
        }
        if let Some(head) = report.head
            && ck.as_ref().is_none_or(|c| c.offset != bytes.len() as u64)
        {
            let new = Checkpoint {
                offset: bytes.len() as u64,
                entries: report.entries,
                head,
                prefix_sha256: crate::load::sha256_hex(&bytes),
            };
            // A cache: failing to write it costs a full check next time, nothing else.
            let _ = crate::durable::write_atomic(
                &ck_path,
                &serde_json::to_vec(&new).expect("checkpoints serialize"),
            );
        }
        Ok(entries)
    }

    fn checkpoint_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".verified");
        PathBuf::from(p)
    }

    /// Repairs a torn last line (and nothing else: a ledger that does not verify before it is
    /// refused). A torn line that is a whole valid next entry gets its newline; any other torn
    /// bytes are moved to `<ledger>.torn-TIME` and the file is cut back to its last full line.
    /// Either way a `ledger_repaired` entry records it with the actor and the reason.
    pub fn repair(&self, actor: &str, reason: &str) -> Result<Repair, LedgerError> {
        let mut file = self.open_locked()?;
        let result = self.repair_locked(&mut file, actor, reason);
        let _ = file.unlock();
        result
    }

    fn repair_locked(
        &self,
        file: &mut File,
        actor: &str,
        reason: &str,
    ) -> Result<Repair, LedgerError> {
        let write_err = |source| LedgerError::Write {
            path: self.path.clone(),
            source,
        };
        let bytes = self.read_bytes()?;
        if bytes.is_empty() || bytes.ends_with(b"\n") {
            return Ok(Repair::Nothing);
        }
        let cut = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let (prefix, torn) = bytes.split_at(cut);
        let report = verify_lines(prefix);
        if let Some(tamper) = report.tamper {
            return Err(LedgerError::Broken {
                path: self.path.clone(),
                tamper,
            });
        }
        let mut whole = torn.to_vec();
        whole.push(b'\n');
        let completes = verify_from(
            &whole,
            report.entries,
            report.head.as_deref().unwrap_or(GENESIS),
            &mut |_| {},
        );
        let repair = if completes.tamper.is_none() && completes.entries == report.entries + 1 {
            file.write_all(b"\n").map_err(write_err)?;
            Repair::Completed {
                seq: report.entries,
            }
        } else {
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
            let mut kept = self.path.clone().into_os_string();
            kept.push(format!(".torn-{stamp}"));
            let kept = PathBuf::from(kept);
            crate::durable::write_atomic(&kept, torn).map_err(write_err)?;
            file.set_len(cut as u64).map_err(write_err)?;
            Repair::SetAside {
                bytes: torn.len() as u64,
                sha256: crate::load::sha256_hex(torn),
                kept_at: kept.display().to_string(),
            }
        };
        file.sync_data().map_err(write_err)?;
        let detail = serde_json::to_value(&repair).expect("repairs serialize");
        self.append_locked(
            file,
            NewEntry::new(actor, Event::LedgerRepaired)
                .message(format!("repaired a torn last line: {reason}"))
                .detail(detail),
        )?;
        Ok(repair)
    }
}

/// How many bytes follow the file's last newline (0: it ends with one, or is empty).
fn torn_tail(file: &mut File) -> std::io::Result<u64> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(0);
    }
    let mut window: u64 = 4096;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        file.take(len - start).read_to_end(&mut buf)?;
        if let Some(pos) = buf.iter().rposition(|b| *b == b'\n') {
            return Ok(len - (start + pos as u64 + 1));
        }
        if start == 0 {
            return Ok(len);
        }
        window *= 4;
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

//! The ledger file of the `local` state backend: JSON Lines appended under `flock` + `fsync`
//! (group commit), streaming verification with a verified-prefix checkpoint, repair of a torn
//! tail. Its bytes are the format every ferry has written; nothing here changes them.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    Entry, Event, GENESIS, LEDGER_FORMAT_VERSION, LedgerError, NewEntry, Repair, VerifyReport,
    verify_from, verify_lines,
};

/// One ledger file (the `local` backend's); a fenced handle belongs to one apply, and appends only while
/// that apply holds the lock.
#[derive(Debug, Clone)]
pub struct FileLedger {
    path: PathBuf,
    fence: Option<std::sync::Arc<crate::state::Fence>>,
    /// Appends waiting to be written together (clones of a handle share it).
    group: std::sync::Arc<super::group::Group>,
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

impl FileLedger {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            fence: None,
            group: std::sync::Arc::default(),
        }
    }

    /// The same ledger, fenced by an apply's lock: every append first checks (under the
    /// ledger's own file lock) that the lock still names this apply.
    pub fn fenced(&self, fence: crate::state::Fence) -> Self {
        Self {
            path: self.path.clone(),
            fence: Some(std::sync::Arc::new(fence)),
            group: std::sync::Arc::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry, durably; returns it as written (with seq, prev and hash). Appends
    /// made at the same time through this handle (or its clones) are written and `fsync`ed
    /// together (group commit); each returns once its own entry is durable.
    pub fn append(&self, new: NewEntry) -> Result<Entry, LedgerError> {
        self.group.append(new, |news| self.write_group(news))
    }

    /// One entry on its own: its own lock, write and `fsync` (what every append cost before
    /// group commit; kept for comparison in `examples/ledger_bench.rs`).
    pub fn append_alone(&self, new: NewEntry) -> Result<Entry, LedgerError> {
        self.append_after(|| Ok(((), new))).map(|((), e)| e)
    }

    /// Writes a batch under one file lock, one write and one `fsync`.
    fn write_group(&self, news: Vec<NewEntry>) -> Result<Vec<Entry>, LedgerError> {
        self.open_locked().and_then(|mut file| {
            let r = self.write_locked(&mut file, news);
            let _ = file.unlock();
            r
        })
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
        let mut written = self.write_locked(file, vec![new])?;
        Ok(written.remove(0))
    }

    /// Seals and writes `news` after the chain's head, in one write and one `fsync`. A fenced
    /// handle checks its fence once for the batch (unless every entry is `lock_lost`).
    fn write_locked(
        &self,
        file: &mut File,
        news: Vec<NewEntry>,
    ) -> Result<Vec<Entry>, LedgerError> {
        let write_err = |source| LedgerError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(f) = &self.fence
            && news.iter().any(|n| n.event != Event::LockLost)
        {
            f.check().map_err(LedgerError::Fenced)?;
        }
        let end = tail(file).map_err(write_err)?;
        if end.torn > 0 {
            return Err(LedgerError::TornTail {
                path: self.path.clone(),
                bytes: end.torn,
            });
        }
        let (seq, prev) = match end.last_line {
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
        let mut prev = prev;
        let mut text = String::new();
        let mut entries = Vec::with_capacity(news.len());
        for (i, new) in news.into_iter().enumerate() {
            let entry = new.seal(seq + i as u64, prev);
            text.push_str(&serde_json::to_string(&entry).expect("entries serialize"));
            text.push('\n');
            prev = entry.hash.clone();
            entries.push(entry);
        }
        file.write_all(text.as_bytes()).map_err(write_err)?;
        file.sync_data().map_err(write_err)?;
        if seq == 0 {
            // A new ledger: its directory entry must survive a crash too.
            let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
            crate::durable::sync_dir(dir.unwrap_or(Path::new("."))).map_err(write_err)?;
        }
        Ok(entries)
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

    /// Every entry that parses, in file order, handed to `f` as the file is read in blocks
    /// (memory does not grow with the ledger): for display and export, not for acting on.
    pub fn for_each_parsed(&self, f: &mut dyn FnMut(Entry)) -> Result<(), LedgerError> {
        self.for_each_block(&mut |block| {
            for line in block.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                if let Ok(e) = serde_json::from_slice::<Entry>(line) {
                    f(e);
                }
            }
            true
        })
        .map(|rest| {
            if let Ok(e) = serde_json::from_slice::<Entry>(&rest) {
                f(e);
            }
        })
    }

    /// Reads the file in blocks of whole lines (each ending in `\n`) until `f` says stop;
    /// returns the bytes after the last newline (a torn tail, if any).
    fn for_each_block(&self, f: &mut dyn FnMut(&[u8]) -> bool) -> Result<Vec<u8>, LedgerError> {
        const BLOCK: usize = 4 << 20;
        let open_err = |source| LedgerError::Open {
            path: self.path.clone(),
            source,
        };
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(open_err(e)),
        };
        let mut buf: Vec<u8> = Vec::with_capacity(BLOCK * 2);
        loop {
            let start = buf.len();
            buf.resize(start + BLOCK, 0);
            let n = file.read(&mut buf[start..]).map_err(open_err)?;
            buf.truncate(start + n);
            if n == 0 {
                return Ok(buf);
            }
            if let Some(end) = buf.iter().rposition(|b| *b == b'\n') {
                if !f(&buf[..=end]) {
                    return Ok(Vec::new());
                }
                buf.drain(..=end);
            }
        }
    }

    /// Verifies the whole chain as a stream (blocks of a few MiB: memory does not grow with
    /// the ledger), handing each good entry to `on_entry` in order.
    pub fn verify_each(
        &self,
        on_entry: &mut dyn FnMut(Entry),
    ) -> Result<VerifyReport, LedgerError> {
        let mut v = ferry_core::ledger::Verifier::new(0, GENESIS);
        let rest = self.for_each_block(&mut |block| {
            v.push(block, on_entry);
            !v.failed()
        })?;
        // A stop at a bad entry is reported by the verifier itself; `rest` is then empty.
        Ok(v.finish(rest.len()))
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

/// The end of the file, read once: how many bytes follow its last newline (a torn write, which
/// stops appends), and the last complete line (the chain's head), if any.
pub(crate) struct Tail {
    pub(crate) torn: u64,
    pub(crate) last_line: Option<String>,
}

pub(crate) fn tail(file: &mut File) -> std::io::Result<Tail> {
    let len = file.seek(SeekFrom::End(0))?;
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        file.take(len - start).read_to_end(&mut buf)?;
        let newlines: Vec<usize> = buf
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .take(2)
            .collect();
        let line =
            |from: usize, to: usize| Some(String::from_utf8_lossy(&buf[from..to]).into_owned());
        match newlines.as_slice() {
            [last, before, ..] => {
                return Ok(Tail {
                    torn: len - (start + *last as u64 + 1),
                    last_line: line(before + 1, *last),
                });
            }
            [last] if start == 0 => {
                return Ok(Tail {
                    torn: len - (*last as u64 + 1),
                    last_line: line(0, *last),
                });
            }
            [] if start == 0 => {
                return Ok(Tail {
                    torn: len,
                    last_line: None,
                });
            }
            _ => window *= 4,
        }
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
        let ledger = FileLedger::new(dir.path().join("ledger.jsonl"));
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
    fn the_tail_says_what_is_torn_and_which_line_is_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        for (text, torn, last) in [
            ("", 0, None),
            ("a\n", 0, Some("a")),
            ("a\nbb\n", 0, Some("bb")),
            ("a\nbb\ncc", 2, Some("bb")),
            ("cc", 2, None),
        ] {
            std::fs::write(&path, text).unwrap();
            let t = tail(&mut File::open(&path).unwrap()).unwrap();
            assert_eq!((t.torn, t.last_line.as_deref()), (torn, last), "{text:?}");
        }
        // A last line longer than the first window.
        let long = "x".repeat(200_000);
        std::fs::write(&path, format!("a\n{long}\n")).unwrap();
        let t = tail(&mut File::open(&path).unwrap()).unwrap();
        assert_eq!(t.last_line.as_deref(), Some(long.as_str()));
    }

    #[test]
    fn refuses_to_extend_a_newer_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = FileLedger::new(dir.path().join("ledger.jsonl"));
        let a = ledger.append(entry(Event::PlanCreated)).unwrap();
        let mut newer = serde_json::to_value(&a).unwrap();
        newer["v"] = 99.into();
        std::fs::write(ledger.path(), format!("{newer}\n")).unwrap();
        let err = ledger.append(entry(Event::ApplyStarted)).unwrap_err();
        assert!(matches!(err, LedgerError::Newer { found: 99, .. }), "{err}");
    }

    /// Many threads on one handle (group commit) and others on their own handles (their own
    /// file locks) interleave into one valid chain, every append answered with its own entry.
    #[test]
    fn group_commit_keeps_one_chain_and_answers_each_caller() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let shared = FileLedger::new(&path);
        let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
        std::thread::scope(|s| {
            for w in 0..64 {
                let l = if w % 8 == 0 {
                    FileLedger::new(&path)
                } else {
                    shared.clone()
                };
                let seen = &seen;
                s.spawn(move || {
                    for i in 0..50 {
                        let e = l
                            .append(entry(Event::StepStarted).message(format!("{w}/{i}")))
                            .unwrap();
                        assert_eq!(e.message.as_deref(), Some(format!("{w}/{i}").as_str()));
                        assert!(
                            seen.lock().unwrap().insert(e.seq),
                            "seq {} given twice",
                            e.seq
                        );
                    }
                });
            }
        });
        let report = FileLedger::new(&path).verify().unwrap();
        assert_eq!(report.entries, 3200);
        assert!(report.tamper.is_none(), "{report:?}");
    }

    /// A fenced group whose lock is gone: every caller of the batch gets the error and nothing
    /// is written.
    #[test]
    fn a_fenced_group_writes_nothing_once_the_lock_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = FileLedger::new(dir.path().join("ledger.jsonl"));
        let (mut lock, _) = crate::lock::ApplyLock::acquire(
            dir.path(),
            "a",
            "p",
            std::time::Duration::from_secs(60),
        )
        .unwrap();
        let fenced = ledger.fenced(lock.fence());
        fenced.append(entry(Event::StepStarted)).unwrap();
        lock.release().unwrap();
        std::thread::scope(|s| {
            for _ in 0..8 {
                let f = fenced.clone();
                s.spawn(move || {
                    let e = f.append(entry(Event::StepSucceeded)).unwrap_err();
                    assert!(matches!(e, LedgerError::Fenced(_)), "{e}");
                });
            }
        });
        assert_eq!(ledger.verify().unwrap().entries, 1);
        // Only `lock_lost` may still be written by a run that lost its lock.
        fenced.append(entry(Event::LockLost)).unwrap();
    }

    #[test]
    fn concurrent_appends_from_threads_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        std::thread::scope(|s| {
            for _ in 0..4 {
                let l = FileLedger::new(&path);
                s.spawn(move || {
                    for _ in 0..25 {
                        l.append(entry(Event::StepStarted)).unwrap();
                    }
                });
            }
        });
        let report = FileLedger::new(&path).verify().unwrap();
        assert_eq!(report.entries, 100);
        assert!(report.tamper.is_none(), "{report:?}");
    }
}

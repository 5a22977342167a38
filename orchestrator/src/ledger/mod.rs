//! The audit ledger: append-only entries, each hash-chained to the one before (the format and
//! its verification are `ferry-core`'s). [`Ledger`] is the handle the engine and the executor
//! hold; the bytes belong to a state backend (`crate::state`): today the local one, whose file
//! is [`FileLedger`]. An append returns only once its entry is durable: an effect is only ever
//! reported after its record.

pub(crate) mod file;
pub(crate) mod group;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use file::FileLedger;

use crate::state::{Backend, Fence, HeldLock, TakeLockError};

use serde::Serialize;

pub use ferry_core::ledger::{
    Entry, Event, GENESIS, LEDGER_FORMAT_VERSION, NewEntry, Outcome, Tamper, VerifyReport,
    checkpoint, now, verify_from, verify_lines,
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
    /// A shared state store failed or could not be reached. `uncertain`: the connection broke
    /// while a commit was under way, so the entries may or may not be recorded.
    #[error("ledger in {location}: {reason}{}", if *.uncertain { "; the connection broke while committing: whether the last entries were recorded is unknown (`ferry ledger show` tells)" } else { "" })]
    Store {
        location: String,
        reason: String,
        uncertain: bool,
    },
}

impl LedgerError {
    /// The same error again, for each entry of a group that failed together (`io::Error` is
    /// not `Clone`: kind and text are kept).
    pub(crate) fn duplicate(&self) -> Self {
        let io = |e: &std::io::Error| std::io::Error::new(e.kind(), e.to_string());
        match self {
            LedgerError::Open { path, source } => LedgerError::Open {
                path: path.clone(),
                source: io(source),
            },
            LedgerError::Write { path, source } => LedgerError::Write {
                path: path.clone(),
                source: io(source),
            },
            LedgerError::BadHead { path, reason } => LedgerError::BadHead {
                path: path.clone(),
                reason: reason.clone(),
            },
            LedgerError::Newer { path, found } => LedgerError::Newer {
                path: path.clone(),
                found: *found,
            },
            LedgerError::TornTail { path, bytes } => LedgerError::TornTail {
                path: path.clone(),
                bytes: *bytes,
            },
            LedgerError::Broken { path, tamper } => LedgerError::Broken {
                path: path.clone(),
                tamper: tamper.clone(),
            },
            LedgerError::Fenced(e) => LedgerError::Fenced(e.duplicate()),
            LedgerError::Store {
                location,
                reason,
                uncertain,
            } => LedgerError::Store {
                location: location.clone(),
                reason: reason.clone(),
                uncertain: *uncertain,
            },
        }
    }
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

/// The audit ledger of one state backend, and that backend's apply lock (clones share it).
/// Everything that records or reads the ledger holds this; which backend is behind it is
/// decided once, where the state is opened.
#[derive(Debug, Clone)]
pub struct Ledger(Arc<dyn Backend>, Arc<std::sync::atomic::AtomicU64>);

impl Ledger {
    /// The local backend with its ledger file at `path` and the apply lock in the same
    /// directory (the default layout: `STATE_DIR/ledger.jsonl`, `STATE_DIR/apply.lock`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        Self::local(path, dir)
    }

    /// The local backend: the ledger file at `path`, the apply lock in `state_dir`.
    pub fn local(path: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        Self::with_backend(Arc::new(crate::state::local::Local::new(
            path.into(),
            state_dir.into(),
        )))
    }

    /// A ledger kept by another backend.
    pub fn with_backend(backend: Arc<dyn Backend>) -> Self {
        Self(backend, Arc::default())
    }

    /// How many entries this handle (its clones and fenced forms included) has appended.
    pub fn appended(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Where the ledger is kept, for messages and reports (a path, or a backend's URL).
    pub fn location(&self) -> String {
        self.0.location()
    }

    /// The same ledger, fenced by an apply's lock: every append first checks, atomically with
    /// the append, that the lock still names that apply.
    pub fn fenced(&self, fence: Fence) -> Self {
        Self(self.0.fenced(fence), self.1.clone())
    }

    /// Appends one entry durably; returns it as written (seq, prev and hash).
    pub fn append(&self, new: NewEntry) -> Result<Entry, LedgerError> {
        let e = self.0.append(new)?;
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(e)
    }

    /// Every entry that parses, in order, for display (use [`Ledger::read_verified`] to act).
    pub fn read_all(&self) -> Result<Vec<Entry>, LedgerError> {
        let mut all = Vec::new();
        self.0.for_each_parsed(&mut |e| all.push(e))?;
        Ok(all)
    }

    /// Every entry that parses, handed to `f` in order as a stream (for display and export).
    pub fn for_each_parsed(&self, f: &mut dyn FnMut(Entry)) -> Result<(), LedgerError> {
        self.0.for_each_parsed(f)
    }

    pub fn verify(&self) -> Result<VerifyReport, LedgerError> {
        self.0.verify_each(&mut |_| {})
    }

    /// Verifies the whole chain as a stream, handing each good entry to `f` in order.
    pub fn verify_each(&self, f: &mut dyn FnMut(Entry)) -> Result<VerifyReport, LedgerError> {
        self.0.verify_each(f)
    }

    /// Every entry, only if the whole chain verifies (else [`LedgerError::Broken`]).
    pub fn read_verified(&self) -> Result<Vec<Entry>, LedgerError> {
        self.0.read_verified()
    }

    /// Repairs a torn last line (and nothing else); recorded as `ledger_repaired`.
    pub fn repair(&self, actor: &str, reason: &str) -> Result<Repair, LedgerError> {
        self.0.repair(actor, reason)
    }

    /// Takes the apply lock for `plan_id` and records how (`lock_taken`, or `lock_broken` for
    /// a takeover) as one step: no fenced append of an earlier holder can land after it.
    pub fn take_lock(
        &self,
        actor: &str,
        plan_id: &str,
        lease: Duration,
    ) -> Result<(Box<dyn HeldLock>, Entry), TakeLockError> {
        self.0.take_lock(actor, plan_id, lease)
    }

    /// Who holds the apply lock, if anyone, and whether its lease has run out.
    pub fn lock_status(&self) -> Result<Option<crate::state::LockStatus>, crate::lock::LockError> {
        self.0.lock_status()
    }

    /// Breaks the apply lock (whoever holds it) and records who did and why, as one step.
    pub fn break_lock(
        &self,
        actor: &str,
        reason: &str,
    ) -> Result<Option<(crate::lock::LockHolder, Entry)>, TakeLockError> {
        self.0.break_lock(actor, reason)
    }
}

//! The state seam: where the audit ledger and the apply lock live. A [`Backend`] keeps both,
//! because the guarantees tie them together: taking the lock and recording it is one step, and
//! every append of a fenced handle checks the lock atomically with the append. The engine and
//! the executor only see [`crate::ledger::Ledger`] (a handle on a backend) and [`HeldLock`];
//! a second backend (team state in PostgreSQL) is a new implementation of these traits, not a
//! change to them. `local` is today's files, byte for byte.

pub mod local;
#[cfg(test)]
pub(crate) mod memory_tests;
pub mod postgres;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::ledger::{Entry, Event, LedgerError, NewEntry, Repair, VerifyReport};
use crate::lock::{Acquired, LockError, LockHolder};

/// A store of one estate's ledger and apply lock. What every backend must guarantee (the
/// local one does, `ARCHITECTURE.md` states it): an append is durable when it returns, and
/// concurrent appends keep one chain; a fenced handle appends nothing once its lock is lost
/// (but `lock_lost`); `take_lock` records the taking in the same step; `read_verified`
/// refuses a chain that does not verify.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Where the ledger is kept, for messages and reports.
    fn location(&self) -> String;
    /// The same store, with every append checking `fence` first (atomically with it).
    fn fenced(&self, fence: Fence) -> Arc<dyn Backend>;
    /// Appends one entry after the chain's head, durably.
    fn append(&self, new: NewEntry) -> Result<Entry, LedgerError>;
    /// Every entry that parses, in order, without verifying (display and export).
    fn for_each_parsed(&self, f: &mut dyn FnMut(Entry)) -> Result<(), LedgerError>;
    /// Verifies the chain in order, handing each good entry to `f`.
    fn verify_each(&self, f: &mut dyn FnMut(Entry)) -> Result<VerifyReport, LedgerError>;
    /// Every entry, only if the whole chain verifies (a backend may keep a verified prefix).
    fn read_verified(&self) -> Result<Vec<Entry>, LedgerError> {
        let mut all = Vec::new();
        let report = self.verify_each(&mut |e| all.push(e))?;
        match report.tamper {
            Some(tamper) => Err(LedgerError::Broken {
                path: self.location().into(),
                tamper,
            }),
            None => Ok(all),
        }
    }
    /// Mends a torn tail (a write cut short) and records the repair; never hides tampering.
    fn repair(&self, actor: &str, reason: &str) -> Result<Repair, LedgerError>;
    /// Takes the apply lock for `plan_id` (or takes over a dead or expired holder's) and
    /// appends [`lock_entry`] in the same step.
    fn take_lock(
        &self,
        actor: &str,
        plan_id: &str,
        lease: Duration,
    ) -> Result<(Box<dyn HeldLock>, Entry), TakeLockError>;
    /// Who holds the apply lock now, if anyone (`ferry lock status`).
    fn lock_status(&self) -> Result<Option<LockStatus>, LockError>;
    /// Frees the lock whoever holds it and appends [`break_entry`] in the same step (`ferry
    /// lock break`); the holder is fenced from then on. `None` when nobody held it.
    fn break_lock(
        &self,
        actor: &str,
        reason: &str,
    ) -> Result<Option<(LockHolder, Entry)>, TakeLockError>;
}

/// The apply lock's holder, and whether its lease has run out (it may be taken over then).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LockStatus {
    pub holder: LockHolder,
    pub expired: bool,
}

/// The apply lock while a run holds it.
pub trait HeldLock: Send + fmt::Debug {
    fn holder(&self) -> &LockHolder;
    /// What the run's ledger handle and drivers check before they act.
    fn fence(&self) -> Fence;
    /// Extends the lease; fails, and never recreates the lock, if it was lost.
    fn renew(&mut self) -> Result<(), LockError>;
    fn lease(&self) -> Duration;
    /// Gives the lock up if it is still this run's; `Ok(false)` if it was not.
    fn release(&mut self) -> Result<bool, LockError>;
}

/// How a backend tells whether a run still holds the lock.
pub trait FenceCheck: Send + Sync + fmt::Debug {
    /// `Ok` while the lock names this run; otherwise who holds it now (or that it is gone).
    fn check(&self) -> Result<(), LockError>;
    /// The lock generation this fence belongs to (each acquisition has its own).
    fn generation(&self) -> &str;
}

/// A run's proof that it still holds the apply lock, checked right before every append and
/// every driver action that changes what a target serves.
#[derive(Debug, Clone)]
pub struct Fence(Arc<dyn FenceCheck>);

impl Fence {
    pub fn new(check: impl FenceCheck + 'static) -> Self {
        Self(Arc::new(check))
    }

    pub fn check(&self) -> Result<(), LockError> {
        self.0.check()
    }

    /// The acquisition this fence belongs to (the lock's token).
    pub fn generation(&self) -> &str {
        self.0.generation()
    }
}

/// Two fences are the same when they belong to the same acquisition of the lock.
impl PartialEq for Fence {
    fn eq(&self, other: &Self) -> bool {
        self.0.generation() == other.0.generation()
    }
}

/// Taking the lock failed: it is held (or unreadable), or its record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TakeLockError {
    #[error(transparent)]
    Lock(LockError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The entry that records `ferry lock break`: `lock_broken` naming the previous holder, who
/// broke the lock and why.
pub fn break_entry(actor: &str, previous: &LockHolder, reason: &str) -> NewEntry {
    NewEntry::new(actor, Event::LockBroken)
        .plan(&previous.plan_id)
        .message(format!(
            "{actor} broke the apply lock of {previous}: {reason}"
        ))
        .detail(serde_json::json!({
            "previous": previous,
            "reason": reason,
            "broken_by": actor,
            "how": "ferry lock break",
        }))
}

/// The entry that records how the lock was taken: `lock_taken` with the holder, or
/// `lock_broken` naming the previous holder and why it could be taken over.
pub fn lock_entry(actor: &str, plan_id: &str, holder: &LockHolder, how: Acquired) -> NewEntry {
    let holder = serde_json::to_value(holder).expect("holder serializes");
    match how {
        Acquired::Fresh => NewEntry::new(actor, Event::LockTaken)
            .plan(plan_id)
            .detail(holder),
        Acquired::TakenOver { previous, reason } => NewEntry::new(actor, Event::LockBroken)
            .plan(plan_id)
            .message(format!("took over the apply lock of {previous}: {reason}"))
            .detail(
                serde_json::json!({ "previous": previous, "reason": reason, "holder": holder }),
            ),
    }
}

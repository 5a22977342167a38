//! The `local` backend: the ledger file and the apply lock in the state directory, exactly as
//! ferry has always written them (existing ledgers verify, existing state directories work).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{Backend, Fence, HeldLock, LockStatus, TakeLockError, break_entry, lock_entry};
use crate::ledger::{Entry, FileLedger, LedgerError, NewEntry, Repair, VerifyReport};
use crate::lock::{ApplyLock, LockError, LockHolder};

#[derive(Debug, Clone)]
pub struct Local {
    ledger: FileLedger,
    state_dir: PathBuf,
}

impl Local {
    /// The ledger file at `ledger`, the apply lock (`apply.lock`) in `state_dir`.
    pub fn new(ledger: PathBuf, state_dir: PathBuf) -> Self {
        Self {
            ledger: FileLedger::new(ledger),
            state_dir,
        }
    }
}

impl Backend for Local {
    fn location(&self) -> String {
        self.ledger.path().display().to_string()
    }

    fn fenced(&self, fence: Fence) -> Arc<dyn Backend> {
        Arc::new(Self {
            ledger: self.ledger.fenced(fence),
            state_dir: self.state_dir.clone(),
        })
    }

    fn append(&self, new: NewEntry) -> Result<Entry, LedgerError> {
        self.ledger.append(new)
    }

    fn for_each_parsed(&self, f: &mut dyn FnMut(Entry)) -> Result<(), LedgerError> {
        self.ledger.for_each_parsed(f)
    }

    fn verify_each(&self, f: &mut dyn FnMut(Entry)) -> Result<VerifyReport, LedgerError> {
        self.ledger.verify_each(f)
    }

    fn read_verified(&self) -> Result<Vec<Entry>, LedgerError> {
        self.ledger.read_verified()
    }

    fn repair(&self, actor: &str, reason: &str) -> Result<Repair, LedgerError> {
        self.ledger.repair(actor, reason)
    }

    /// The lock file is written under the ledger's `flock`, with its record.
    fn take_lock(
        &self,
        actor: &str,
        plan_id: &str,
        lease: Duration,
    ) -> Result<(Box<dyn HeldLock>, Entry), TakeLockError> {
        self.ledger.append_after(|| {
            let (lock, how) = ApplyLock::acquire(&self.state_dir, actor, plan_id, lease)
                .map_err(TakeLockError::Lock)?;
            let entry = lock_entry(actor, plan_id, lock.holder(), how);
            Ok((Box::new(lock) as Box<dyn HeldLock>, entry))
        })
    }

    fn lock_status(&self) -> Result<Option<LockStatus>, LockError> {
        let status = crate::lock::status(&self.state_dir).map_err(|e| self.lock_io(e))?;
        Ok(status.map(|(holder, expired)| LockStatus { holder, expired }))
    }

    /// The lock file is removed under the ledger's `flock`, with its record.
    fn break_lock(
        &self,
        actor: &str,
        reason: &str,
    ) -> Result<Option<(LockHolder, Entry)>, TakeLockError> {
        if self.lock_status().map_err(TakeLockError::Lock)?.is_none() {
            return Ok(None);
        }
        let broken = self.ledger.append_after(|| {
            let prev = crate::lock::break_file(&self.state_dir)
                .map_err(|e| TakeLockError::Lock(self.lock_io(e)))?
                .ok_or(TakeLockError::Lock(LockError::Vanished))?;
            let entry = break_entry(actor, &prev, reason);
            Ok((prev, entry))
        });
        match broken {
            Err(TakeLockError::Lock(LockError::Vanished)) => Ok(None),
            other => other.map(Some),
        }
    }
}

impl Local {
    fn lock_io(&self, source: std::io::Error) -> LockError {
        LockError::Io {
            path: self.state_dir.join("apply.lock"),
            source,
        }
    }
}

impl HeldLock for ApplyLock {
    fn holder(&self) -> &LockHolder {
        ApplyLock::holder(self)
    }
    fn fence(&self) -> Fence {
        ApplyLock::fence(self)
    }
    fn renew(&mut self) -> Result<(), LockError> {
        ApplyLock::renew(self)
    }
    fn lease(&self) -> Duration {
        ApplyLock::lease(self)
    }
    fn release(&mut self) -> Result<bool, LockError> {
        ApplyLock::release(self)
    }
}

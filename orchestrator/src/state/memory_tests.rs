//! The seam holds: a second backend, kept in memory and written only here, runs a whole apply
//! through the engine and the executor unchanged, with the guarantees every backend owes
//! (one chain, the lock taken and recorded in one step, a held lock refused, a lost lock
//! fencing every append but `lock_lost`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Backend, Fence, FenceCheck, HeldLock, TakeLockError, lock_entry};
use crate::ledger::{Entry, Event, GENESIS, LedgerError, NewEntry, Repair, VerifyReport};
use crate::lock::{Acquired, LockError, LockHolder};

/// The shared store: the chain and who holds the lock.
#[derive(Debug, Default)]
struct Store {
    entries: Vec<Entry>,
    holder: Option<LockHolder>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Memory {
    store: Arc<Mutex<Store>>,
    fence: Option<Fence>,
}

impl Memory {
    fn lines(&self) -> Vec<u8> {
        let store = self.store.lock().unwrap();
        let mut text = String::new();
        for e in &store.entries {
            text.push_str(&serde_json::to_string(e).unwrap());
            text.push('\n');
        }
        text.into_bytes()
    }

    /// Someone else takes the lock (a takeover by another run).
    pub(crate) fn steal(&self, by: &str) {
        let mut store = self.store.lock().unwrap();
        let mut h = store.holder.clone().expect("held");
        h.actor = by.into();
        h.token = format!("{by}-token");
        store.holder = Some(h);
    }
}

#[derive(Debug)]
struct MemoryFence {
    store: Arc<Mutex<Store>>,
    token: String,
}

impl FenceCheck for MemoryFence {
    fn check(&self) -> Result<(), LockError> {
        match &self.store.lock().unwrap().holder {
            Some(h) if h.token == self.token => Ok(()),
            Some(h) => Err(LockError::Lost(Box::new(h.clone()))),
            None => Err(LockError::Vanished),
        }
    }
    fn generation(&self) -> &str {
        &self.token
    }
}

#[derive(Debug)]
struct MemoryLock {
    store: Arc<Mutex<Store>>,
    holder: LockHolder,
}

impl HeldLock for MemoryLock {
    fn holder(&self) -> &LockHolder {
        &self.holder
    }
    fn fence(&self) -> Fence {
        Fence::new(MemoryFence {
            store: self.store.clone(),
            token: self.holder.token.clone(),
        })
    }
    fn renew(&mut self) -> Result<(), LockError> {
        self.fence().check()
    }
    fn lease(&self) -> Duration {
        Duration::from_millis(self.holder.lease_ms)
    }
    fn release(&mut self) -> Result<bool, LockError> {
        let mut store = self.store.lock().unwrap();
        let ours = store
            .holder
            .as_ref()
            .is_some_and(|h| h.token == self.holder.token);
        if ours {
            store.holder = None;
        }
        Ok(ours)
    }
}

impl Backend for Memory {
    fn location(&self) -> String {
        "memory:".into()
    }

    fn fenced(&self, fence: Fence) -> Arc<dyn Backend> {
        Arc::new(Self {
            store: self.store.clone(),
            fence: Some(fence),
        })
    }

    fn append(&self, new: NewEntry) -> Result<Entry, LedgerError> {
        // The fence is checked while the store is held: atomically with the append.
        let mut store = self.store.lock().unwrap();
        if let Some(f) = &self.fence
            && new.event != Event::LockLost
        {
            let held = match &store.holder {
                Some(h) if h.token == f.0.generation() => Ok(()),
                Some(h) => Err(LockError::Lost(Box::new(h.clone()))),
                None => Err(LockError::Vanished),
            };
            held.map_err(LedgerError::Fenced)?;
        }
        let (seq, prev) = store
            .entries
            .last()
            .map_or((0, GENESIS.to_owned()), |e| (e.seq + 1, e.hash.clone()));
        let entry = new.seal(seq, prev);
        store.entries.push(entry.clone());
        Ok(entry)
    }

    fn for_each_parsed(&self, f: &mut dyn FnMut(Entry)) -> Result<(), LedgerError> {
        let entries = self.store.lock().unwrap().entries.clone();
        entries.into_iter().for_each(f);
        Ok(())
    }

    fn verify_each(&self, f: &mut dyn FnMut(Entry)) -> Result<VerifyReport, LedgerError> {
        Ok(crate::ledger::verify_from(&self.lines(), 0, GENESIS, f))
    }

    fn repair(&self, _actor: &str, _reason: &str) -> Result<Repair, LedgerError> {
        Ok(Repair::Nothing)
    }

    fn take_lock(
        &self,
        actor: &str,
        plan_id: &str,
        lease: Duration,
    ) -> Result<(Box<dyn HeldLock>, Entry), TakeLockError> {
        let holder = {
            let mut store = self.store.lock().unwrap();
            if let Some(h) = &store.holder {
                return Err(TakeLockError::Lock(LockError::Held(Box::new(h.clone()))));
            }
            let h = LockHolder {
                actor: actor.into(),
                host: "memory".into(),
                pid: std::process::id(),
                plan_id: plan_id.into(),
                acquired_at_ms: 0,
                lease_until_ms: u64::MAX,
                token: uuid::Uuid::new_v4().simple().to_string(),
                boot_id: String::new(),
                renewed_boottime_ms: 0,
                lease_ms: lease.as_millis() as u64,
                ..LockHolder::default()
            };
            store.holder = Some(h.clone());
            h
        };
        // Recorded before anyone else can append: a real backend does both in one transaction.
        let entry = self.append(lock_entry(actor, plan_id, &holder, Acquired::Fresh))?;
        let lock = MemoryLock {
            store: self.store.clone(),
            holder,
        };
        Ok((Box::new(lock), entry))
    }

    fn lock_status(&self) -> Result<Option<super::LockStatus>, LockError> {
        let holder = self.store.lock().unwrap().holder.clone();
        Ok(holder.map(|holder| super::LockStatus {
            holder,
            expired: false,
        }))
    }

    fn break_lock(
        &self,
        actor: &str,
        reason: &str,
    ) -> Result<Option<(LockHolder, Entry)>, TakeLockError> {
        let Some(prev) = self.store.lock().unwrap().holder.take() else {
            return Ok(None);
        };
        let entry = self.append(super::break_entry(actor, &prev, reason))?;
        Ok(Some((prev, entry)))
    }
}

#[test]
fn a_held_lock_is_refused_and_a_lost_one_fences_every_append_but_lock_lost() {
    let m = Memory::default();
    let ledger = crate::ledger::Ledger::with_backend(Arc::new(m.clone()));
    let (lock, taken) = ledger
        .take_lock("alice", "p1", Duration::from_secs(30))
        .unwrap();
    assert_eq!(taken.event, Event::LockTaken);
    let refused = ledger.take_lock("bob", "p2", Duration::from_secs(30));
    assert!(matches!(refused, Err(TakeLockError::Lock(LockError::Held(h))) if h.actor == "alice"));
    let fenced = ledger.fenced(lock.fence());
    fenced
        .append(NewEntry::new("alice", Event::StepStarted))
        .unwrap();
    m.steal("bob");
    let e = fenced
        .append(NewEntry::new("alice", Event::StepSucceeded))
        .unwrap_err();
    assert!(matches!(e, LedgerError::Fenced(LockError::Lost(_))), "{e}");
    fenced
        .append(NewEntry::new("alice", Event::LockLost))
        .unwrap();
    let events: Vec<Event> = ledger
        .read_verified()
        .unwrap()
        .iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        events,
        [Event::LockTaken, Event::StepStarted, Event::LockLost]
    );
}

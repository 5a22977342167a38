//! The state store itself: set up (`ferry state init`), a local ledger moved into it (`ferry
//! state migrate`), and its apply lock inspected or broken (`ferry lock status|break`).

use std::path::Path;

use serde::Serialize;

use super::{Error, State};
use crate::ledger::{Entry, Event, Ledger, NewEntry, Outcome};
use crate::lock::LockHolder;
use crate::state::LockStatus;
use crate::state::postgres::{PgState, StateUrl};

/// Entries copied per transaction by `state migrate`.
const BATCH: usize = 5000;

/// What `ferry state migrate` did.
#[derive(Debug, Clone, Serialize)]
pub struct Migrated {
    pub from: String,
    pub to: String,
    /// Entries in the store's ledger now (all of the local one's).
    pub entries: u64,
    pub head: Option<String>,
    /// Entries already there from an earlier, interrupted run (a verified prefix), if any.
    pub resumed_after: Option<u64>,
    pub copied: u64,
}

/// Applies ferry's migrations to the store at `url` (as the schema's owner); the ones applied.
pub fn init(url: &StateUrl, grant: Option<&str>) -> Result<Vec<String>, Error> {
    PgState::init(url, grant).map_err(Error::Refused)
}

/// Who holds the apply lock of `state`'s backend.
pub fn lock_status(state: &State) -> Result<Option<LockStatus>, Error> {
    Ok(state.ledger.lock_status()?)
}

/// Breaks the apply lock, recorded with who and why; `None` when it was free.
pub fn break_lock(state: &State, reason: &str) -> Result<Option<(LockHolder, Entry)>, Error> {
    if reason.trim().is_empty() {
        return Err(Error::Refused(
            "`--reason` must say why the lock is broken".into(),
        ));
    }
    Ok(state.ledger.break_lock(&state.actor, reason)?)
}

/// Copies the ledger of the state directory `from` into the store at `to`, verifies it there
/// and records the move in both. The local ledger must verify and no apply may hold its lock;
/// the store's ledger must be empty or a verified prefix of this one (an interrupted migrate
/// goes on from where it stopped).
pub fn migrate(from: &Path, to: &StateUrl, actor: &str) -> Result<Migrated, Error> {
    let src = Ledger::local(from.join("ledger.jsonl"), from);
    if let Some(s) = src.lock_status()?.filter(|s| !s.expired) {
        return Err(Error::Locked(Box::new(s.holder)));
    }
    let report = src.verify()?;
    if let Some(t) = report.tamper {
        return Err(Error::Refused(format!(
            "the ledger in {} does not verify ({t}); nothing was copied: a ledger ferry cannot trust is not moved (see `ferry ledger verify`)",
            from.display()
        )));
    }
    let dst = PgState::new(to.clone());
    let start = dst.head()?;
    if let Some((k, _)) = &start
        && *k >= report.entries
    {
        return Err(Error::Refused(format!(
            "the store's ledger already holds {} entries, this one {}: it is not an unfinished copy of this ledger",
            k + 1,
            report.entries
        )));
    }
    let copied = copy(&src, &dst, start.clone())?;
    let store = Ledger::with_backend(std::sync::Arc::new(dst));
    let arrived = store.verify()?;
    if arrived.tamper.is_some() || arrived.entries != report.entries || arrived.head != report.head
    {
        return Err(Error::Refused(format!(
            "the copy in {} does not match: {} entries, head {:?}, problem {:?}; the local ledger has {} entries, head {:?}",
            store.location(),
            arrived.entries,
            arrived.head,
            arrived.tamper.map(|t| t.to_string()),
            report.entries,
            report.head
        )));
    }
    let m = Migrated {
        from: src.location(),
        to: store.location(),
        entries: arrived.entries,
        head: arrived.head,
        resumed_after: start.map(|(k, _)| k),
        copied,
    };
    record(&store, &src, actor, &m)?;
    Ok(m)
}

/// Copies the entries after `start` (checked to be the local ledger's own) in batches.
fn copy(src: &Ledger, dst: &PgState, start: Option<(u64, String)>) -> Result<u64, Error> {
    let mut after = start.clone();
    let mut batch: Vec<(u64, String)> = Vec::with_capacity(BATCH);
    let mut failed: Option<Error> = None;
    let mut copied = 0u64;
    let mut flush = |batch: &mut Vec<(u64, String)>, after: &mut Option<(u64, String)>| {
        let lines = std::mem::take(batch);
        let last = lines.last().map(|(seq, line)| (*seq, line_hash(line)));
        let n = lines.len() as u64;
        dst.import(after.clone(), lines)?;
        *after = last;
        copied += n;
        Ok::<(), Error>(())
    };
    src.verify_each(&mut |e| {
        if failed.is_some() {
            return;
        }
        if let Some((k, h)) = &start
            && e.seq <= *k
        {
            if e.seq == *k && &e.hash != h {
                failed = Some(Error::Refused(format!(
                    "the store's ledger ends at entry {k} with hash {h}, the local one's entry {k} is {}: the store holds another history; nothing was copied",
                    e.hash
                )));
            }
            return;
        }
        batch.push((e.seq, serde_json::to_string(&e).expect("entries serialize")));
        if batch.len() == BATCH
            && let Err(err) = flush(&mut batch, &mut after)
        {
            failed = Some(err);
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    if !batch.is_empty() {
        flush(&mut batch, &mut after)?;
    }
    Ok(copied)
}

fn line_hash(line: &str) -> String {
    serde_json::from_str::<Entry>(line)
        .map(|e| e.hash)
        .unwrap_or_default()
}

/// The move, recorded in both ledgers: the store's says where its history came from, the
/// local one says where the estate's record went.
fn record(store: &Ledger, local: &Ledger, actor: &str, m: &Migrated) -> Result<(), Error> {
    let detail = serde_json::to_value(m).expect("serializes");
    let entry = |message: String| {
        NewEntry::new(actor, Event::OperationFinished)
            .outcome(Outcome::Ok)
            .message(message)
            .detail(serde_json::json!({ "operation": "state_migrate", "migrated": detail }))
    };
    store.append(entry(format!(
        "ledger moved here from {}: {} entries verified, head {}",
        m.from,
        m.entries,
        m.head.as_deref().unwrap_or("-")
    )))?;
    local.append(entry(format!(
        "ledger moved to {}: this directory's ledger is no longer the estate's record (use `--state` with that URL)",
        m.to
    )))?;
    Ok(())
}

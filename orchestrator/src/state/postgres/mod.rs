//! The `postgres` backend (`--state postgres://...`): one estate's ledger and apply lock in a
//! PostgreSQL schema, shared by every operator and CI runner that points at it.
//!
//! - The ledger is a table of rows whose `line` is byte for byte a ledger file's line, so both
//!   backends export and verify the same way. Triggers refuse UPDATE, DELETE and TRUNCATE;
//!   `ferry state init --grant ROLE` gives the role ferry runs as INSERT and SELECT only.
//! - Every append locks the apply lock's row first (`SELECT ... FOR UPDATE`): appends of every
//!   client are serialised by the database, a fenced append compares its token with the
//!   holder's in the same transaction, and a takeover (which updates that row) can never
//!   interleave with an append. Appends through one handle share one transaction (group commit).
//! - The lock is a lease judged by the database's clock (one clock for every client): holder,
//!   host, pid, plan, heartbeat, expiry and an epoch that grows with every acquisition or break.
//!   No session-level advisory lock is used: nothing vanishes or sticks behind a pooler.

mod conn;
mod sql;
pub mod url;

use std::sync::Arc;
use std::time::Duration;

pub use url::StateUrl;

use self::conn::{Conn, StoreError};
use self::sql::Fail;
use super::{Backend, Fence, FenceCheck, HeldLock, LockStatus, TakeLockError};
use crate::blocking::block;
use crate::ledger::{Entry, LedgerError, NewEntry, Repair, VerifyReport};
use crate::lock::{LockError, LockHolder};

/// A handle on one state store (clones share its connection).
#[derive(Debug, Clone)]
pub struct PgState {
    conn: Arc<Conn>,
    fence: Option<Fence>,
    group: Arc<crate::ledger::group::Group>,
}

/// One operation on the store's client, with the schema's name.
type Op<T> = Box<
    dyn for<'a> FnOnce(
            &'a mut tokio_postgres::Client,
            &'a str,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, Fail>> + Send + 'a>,
        > + Send,
>;

/// Rows read per round trip when the ledger is read or verified.
const PAGE: i64 = 5000;

impl PgState {
    /// A handle on the store at `url`; nothing connects until it is used.
    pub fn new(url: StateUrl) -> Self {
        Self {
            conn: Conn::new(url),
            fence: None,
            group: Arc::default(),
        }
    }

    /// Applies this build's migrations to the store (`ferry state init`) and gives `grant`
    /// its rights; the migrations applied now.
    pub fn init(url: &StateUrl, grant: Option<&str>) -> Result<Vec<String>, String> {
        let (url, grant) = (url.clone(), grant.map(str::to_owned));
        block(async move { conn::init(&url, grant.as_deref()).await })
            .map_err(|e| format!("{}: {}", url_place(&e), e.reason))
    }

    /// Runs one operation of `sql` on the connection, from sync code; a connection that
    /// broke is dropped (the next call connects again).
    fn run<T: Send + 'static>(&self, op: Op<T>) -> Result<T, Fail> {
        let conn = self.conn.clone();
        block(async move {
            let mut slot = conn.connected().await.map_err(Fail::Store)?;
            let client = slot.as_mut().expect("connected");
            let r = op(client, &conn.url.schema).await;
            if matches!(&r, Err(Fail::Store(e)) if e.broken) {
                *slot = None;
            }
            r
        })
    }

    fn ledger_error(&self, f: Fail) -> LedgerError {
        match f {
            Fail::Store(e) => LedgerError::Store {
                location: self.location(),
                reason: e.reason,
                uncertain: e.uncertain,
            },
            Fail::Lock(e) => LedgerError::Fenced(e),
        }
    }

    fn lock_error(&self, f: Fail) -> LockError {
        match f {
            Fail::Lock(e) => e,
            Fail::Store(e) => LockError::Store {
                location: self.location(),
                reason: e.reason,
            },
        }
    }

    fn take_error(&self, f: Fail) -> TakeLockError {
        match f {
            Fail::Lock(e) => TakeLockError::Lock(e),
            other => TakeLockError::Ledger(self.ledger_error(other)),
        }
    }

    /// Reads the ledger's lines in pages, in order, until `f` says stop.
    fn for_each_page(&self, f: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), LedgerError> {
        let mut after = -1i64;
        loop {
            let page = self
                .run(Box::new(move |c, s| {
                    Box::pin(async move { sql::lines_after(c, s, after, PAGE).await })
                }))
                .map_err(|e| self.ledger_error(e))?;
            let Some(last) = page.last().map(|(seq, _)| *seq) else {
                return Ok(());
            };
            let mut block = Vec::new();
            for (_, line) in &page {
                block.extend_from_slice(line.as_bytes());
                block.push(b'\n');
            }
            if !f(&block) || (page.len() as i64) < PAGE {
                return Ok(());
            }
            after = last;
        }
    }
}

impl PgState {
    /// The chain's head in the store: the last entry's seq and hash (`None`: empty).
    pub fn head(&self) -> Result<Option<(u64, String)>, LedgerError> {
        let last = self
            .run(Box::new(move |c, s| {
                Box::pin(async move { sql::last_line(c, s).await })
            }))
            .map_err(|e| self.ledger_error(e))?;
        Ok(last
            .and_then(|line| serde_json::from_str::<Entry>(&line).ok())
            .map(|e| (e.seq, e.hash)))
    }

    /// Appends entries of another ledger as they are (`ferry state migrate`): `lines` follow
    /// the store's head, which must be `after`; one transaction.
    pub fn import(
        &self,
        after: Option<(u64, String)>,
        lines: Vec<(u64, String)>,
    ) -> Result<(), LedgerError> {
        self.run(Box::new(move |c, s| {
            Box::pin(async move { sql::import(c, s, after, lines).await })
        }))
        .map_err(|e| self.ledger_error(e))
    }
}

fn url_place(e: &StoreError) -> &'static str {
    if e.broken {
        "state store unreachable"
    } else {
        "state store"
    }
}

impl Backend for PgState {
    fn location(&self) -> String {
        self.conn.url.display()
    }

    fn fenced(&self, fence: Fence) -> Arc<dyn Backend> {
        Arc::new(Self {
            conn: self.conn.clone(),
            fence: Some(fence),
            group: Arc::default(),
        })
    }

    fn append(&self, new: NewEntry) -> Result<Entry, LedgerError> {
        let token = self.fence.as_ref().map(|f| f.generation().to_owned());
        self.group.append(new, |news| {
            let token = token.clone();
            self.run(Box::new(move |c, s| {
                Box::pin(async move { sql::append(c, s, token.as_deref(), news).await })
            }))
            .map_err(|e| self.ledger_error(e))
        })
    }

    fn for_each_parsed(&self, f: &mut dyn FnMut(Entry)) -> Result<(), LedgerError> {
        self.for_each_page(&mut |block| {
            for line in block.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                if let Ok(e) = serde_json::from_slice::<Entry>(line) {
                    f(e);
                }
            }
            true
        })
    }

    fn verify_each(&self, f: &mut dyn FnMut(Entry)) -> Result<VerifyReport, LedgerError> {
        let mut v = ferry_core::ledger::Verifier::new(0, crate::ledger::GENESIS);
        self.for_each_page(&mut |block| {
            v.push(block, f);
            !v.failed()
        })?;
        Ok(v.finish(0))
    }

    /// A transaction is never torn: there is nothing to mend.
    fn repair(&self, _actor: &str, _reason: &str) -> Result<Repair, LedgerError> {
        Ok(Repair::Nothing)
    }

    fn take_lock(
        &self,
        actor: &str,
        plan_id: &str,
        lease: Duration,
    ) -> Result<(Box<dyn HeldLock>, Entry), TakeLockError> {
        let (actor, plan) = (actor.to_owned(), plan_id.to_owned());
        let (holder, entry) = self
            .run(Box::new(move |c, s| {
                Box::pin(async move { sql::take_lock(c, s, &actor, &plan, lease).await })
            }))
            .map_err(|e| self.take_error(e))?;
        let lock = PgLock {
            state: self.clone(),
            holder,
            lease,
        };
        Ok((Box::new(lock), entry))
    }

    fn lock_status(&self) -> Result<Option<LockStatus>, LockError> {
        self.run(Box::new(move |c, s| {
            Box::pin(async move { sql::lock_status(c, s).await })
        }))
        .map_err(|e| self.lock_error(e))
    }

    fn break_lock(
        &self,
        actor: &str,
        reason: &str,
    ) -> Result<Option<(LockHolder, Entry)>, TakeLockError> {
        let (actor, reason) = (actor.to_owned(), reason.to_owned());
        self.run(Box::new(move |c, s| {
            Box::pin(async move { sql::break_lock(c, s, &actor, &reason).await })
        }))
        .map_err(|e| self.take_error(e))
    }
}

/// The apply lock while a run holds it in the store.
#[derive(Debug)]
struct PgLock {
    state: PgState,
    holder: LockHolder,
    lease: Duration,
}

impl HeldLock for PgLock {
    fn holder(&self) -> &LockHolder {
        &self.holder
    }

    fn fence(&self) -> Fence {
        Fence::new(PgFence {
            state: self.state.clone(),
            token: self.holder.token.clone(),
        })
    }

    fn renew(&mut self) -> Result<(), LockError> {
        let (token, lease) = (self.holder.token.clone(), self.lease);
        let until = self
            .state
            .run(Box::new(move |c, s| {
                Box::pin(async move { sql::renew(c, s, &token, lease).await })
            }))
            .map_err(|e| self.state.lock_error(e))?;
        self.holder.lease_until_ms = until;
        Ok(())
    }

    fn lease(&self) -> Duration {
        self.lease
    }

    fn release(&mut self) -> Result<bool, LockError> {
        let token = self.holder.token.clone();
        self.state
            .run(Box::new(move |c, s| {
                Box::pin(async move { sql::release(c, s, &token).await })
            }))
            .map_err(|e| self.state.lock_error(e))
    }
}

/// A run's fence: the lock row still names its token.
#[derive(Debug)]
struct PgFence {
    state: PgState,
    token: String,
}

impl FenceCheck for PgFence {
    fn check(&self) -> Result<(), LockError> {
        let token = self.token.clone();
        self.state
            .run(Box::new(move |c, s| {
                Box::pin(async move { sql::still_held(c, s, &token).await })
            }))
            .map_err(|e| self.state.lock_error(e))
    }

    fn generation(&self) -> &str {
        &self.token
    }
}

#[cfg(test)]
mod tests;

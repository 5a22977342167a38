//! The statements of the `postgres` backend, one function per operation, each on a client
//! (its own transaction where it writes). Times are the database's (`now()`).

use std::time::Duration;

use tokio_postgres::{Client, Transaction};

use super::conn::{StoreError, table};
use crate::ledger::{Entry, Event, GENESIS, LEDGER_FORMAT_VERSION, NewEntry};
use crate::lock::{Acquired, LockError, LockHolder};
use crate::state::{LockStatus, lock_entry};

/// Why an operation failed: the store (or the ledger's content in it), or the lock.
#[derive(Debug)]
pub(super) enum Fail {
    Store(StoreError),
    Lock(LockError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Store(e.into())
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

/// The lock row as one transaction sees it.
struct LockRow {
    epoch: i64,
    holder: Option<LockHolder>,
    token: Option<String>,
    expired: bool,
    now_ms: u64,
}

impl LockRow {
    /// `Ok` while the row names `token`; else who holds the lock now (or that nobody does).
    fn names(&self, token: &str) -> Result<(), LockError> {
        match (&self.token, &self.holder) {
            (Some(t), _) if t == token => Ok(()),
            (_, Some(h)) => Err(LockError::Lost(Box::new(h.clone()))),
            _ => Err(LockError::Vanished),
        }
    }
}

const LOCK_COLUMNS: &str = "epoch, holder, token, coalesce(lease_until < now(), false), \
     (extract(epoch FROM now()) * 1000)::int8, (extract(epoch FROM lease_until) * 1000)::int8";

fn lock_row_from(row: &tokio_postgres::Row) -> LockRow {
    let holder: Option<String> = row.get(1);
    let lease_until: Option<i64> = row.get(5);
    let holder = holder.map(|h| {
        let mut h: LockHolder = serde_json::from_str(&h).unwrap_or_else(|_| LockHolder {
            actor: "unknown (an unreadable lock row)".into(),
            ..LockHolder::default()
        });
        h.lease_until_ms = lease_until.unwrap_or(0).max(0) as u64;
        h
    });
    LockRow {
        epoch: row.get(0),
        holder,
        token: row.get(2),
        expired: row.get(3),
        now_ms: row.get::<_, i64>(4).max(0) as u64,
    }
}

/// The lock row, locked for this transaction: every writer takes it first.
async fn lock_row(tx: &Transaction<'_>, s: &str) -> Result<LockRow, Fail> {
    let q = format!(
        "SELECT {LOCK_COLUMNS} FROM {} WHERE id FOR UPDATE",
        table(s, "apply_lock")
    );
    Ok(lock_row_from(&tx.query_one(&q, &[]).await?))
}

async fn commit(tx: Transaction<'_>) -> Result<(), Fail> {
    tx.commit().await.map_err(|e| {
        let mut err = StoreError::from(e);
        err.uncertain = err.broken;
        Fail::Store(err)
    })
}

/// The chain's head: the next seq and the hash to chain to.
async fn head(tx: &Transaction<'_>, s: &str) -> Result<(u64, String), Fail> {
    let q = format!(
        "SELECT line FROM {} ORDER BY seq DESC LIMIT 1",
        table(s, "ledger")
    );
    let Some(row) = tx.query_opt(&q, &[]).await? else {
        return Ok((0, GENESIS.to_owned()));
    };
    let line: String = row.get(0);
    let head: Entry = serde_json::from_str(&line).map_err(|e| {
        StoreError::new(format!(
            "the ledger's last row does not parse ({e}); nothing is appended after it (see `ferry ledger verify`)"
        ))
    })?;
    if head.v > LEDGER_FORMAT_VERSION {
        return Err(StoreError::new(format!(
            "the ledger was written by a newer ferry (entry format {}, this build writes {LEDGER_FORMAT_VERSION}); refusing to append",
            head.v
        ))
        .into());
    }
    Ok((head.seq + 1, head.hash))
}

/// Seals `news` after the head and inserts them, `epoch` on each row.
async fn insert(
    tx: &Transaction<'_>,
    s: &str,
    news: Vec<NewEntry>,
    epoch: Option<i64>,
) -> Result<Vec<Entry>, Fail> {
    let (first, mut prev) = head(tx, s).await?;
    let mut entries = Vec::with_capacity(news.len());
    for (i, new) in news.into_iter().enumerate() {
        let e = new.seal(first + i as u64, prev);
        prev = e.hash.clone();
        entries.push(e);
    }
    let seqs: Vec<i64> = entries.iter().map(|e| e.seq as i64).collect();
    let lines: Vec<String> = entries
        .iter()
        .map(|e| serde_json::to_string(e).expect("entries serialize"))
        .collect();
    let epochs: Vec<Option<i64>> = vec![epoch; entries.len()];
    let q = format!(
        "INSERT INTO {} (seq, line, epoch) SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[])",
        table(s, "ledger")
    );
    tx.execute(&q, &[&seqs, &lines, &epochs]).await?;
    Ok(entries)
}

/// Appends `news` in one transaction; a fenced handle's (`token`) only while the lock row
/// names it (checked under the row's lock), `lock_lost` alone excepted.
pub(super) async fn append(
    c: &mut Client,
    s: &str,
    token: Option<&str>,
    news: Vec<NewEntry>,
) -> Result<Vec<Entry>, Fail> {
    let tx = c.transaction().await?;
    let row = lock_row(&tx, s).await?;
    let mut epoch = None;
    if let Some(t) = token {
        if news.iter().any(|n| n.event != Event::LockLost) {
            row.names(t).map_err(Fail::Lock)?;
        }
        epoch = Some(row.epoch);
    }
    let entries = insert(&tx, s, news, epoch).await?;
    commit(tx).await?;
    Ok(entries)
}

/// The last entry's line, if any.
pub(super) async fn last_line(c: &mut Client, s: &str) -> Result<Option<String>, Fail> {
    let q = format!(
        "SELECT line FROM {} ORDER BY seq DESC LIMIT 1",
        table(s, "ledger")
    );
    Ok(c.query_opt(&q, &[]).await?.map(|r| r.get(0)))
}

/// `limit` lines after seq `after`, in order.
pub(super) async fn lines_after(
    c: &mut Client,
    s: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<(i64, String)>, Fail> {
    let q = format!(
        "SELECT seq, line FROM {} WHERE seq > $1 ORDER BY seq LIMIT $2",
        table(s, "ledger")
    );
    let rows = c.query(&q, &[&after, &limit]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Why `prev` may be taken over now, or `None` while it holds the lock.
fn takeover_reason(row: &LockRow, prev: &LockHolder) -> Option<String> {
    let gone = crate::lock::holder_gone(prev);
    if gone == Some(true) {
        return Some(format!(
            "holder process {} is gone from this host",
            prev.pid
        ));
    }
    if !row.expired {
        return None;
    }
    let alive = if gone == Some(false) {
        "; the holder is still running but stopped renewing: it is fenced off and cannot act or record any more"
    } else {
        ""
    };
    Some(format!(
        "lease expired at {} (the database's clock){alive}",
        crate::lock::fmt_ms(prev.lease_until_ms)
    ))
}

/// Takes the lock (or takes over a dead or expired holder's) and records it, in one
/// transaction: the new epoch is on the record's row.
pub(super) async fn take_lock(
    c: &mut Client,
    s: &str,
    actor: &str,
    plan_id: &str,
    lease: Duration,
) -> Result<(LockHolder, crate::ledger::Entry), Fail> {
    let tx = c.transaction().await?;
    let row = lock_row(&tx, s).await?;
    let how = match &row.holder {
        None => Acquired::Fresh,
        Some(prev) => {
            let reason = takeover_reason(&row, prev)
                .ok_or_else(|| Fail::Lock(LockError::Held(Box::new(prev.clone()))))?;
            Acquired::TakenOver {
                previous: prev.clone(),
                reason,
            }
        }
    };
    let lease_ms = lease.as_millis() as u64;
    let holder = LockHolder {
        actor: actor.to_owned(),
        host: crate::lock::hostname(),
        pid: std::process::id(),
        plan_id: plan_id.to_owned(),
        acquired_at_ms: row.now_ms,
        lease_until_ms: row.now_ms + lease_ms,
        token: uuid::Uuid::new_v4().simple().to_string(),
        boot_id: crate::lock::boot_id(),
        renewed_boottime_ms: 0,
        lease_ms,
        epoch: (row.epoch + 1) as u64,
        pid_start: crate::lock::process_start(std::process::id()).unwrap_or(0),
    };
    let q = format!(
        "UPDATE {} SET epoch = $1, holder = $2, token = $3, \
         lease_until = now() + $4::float8 * interval '1 millisecond', heartbeat = now() WHERE id",
        table(s, "apply_lock")
    );
    let text = serde_json::to_string(&holder).expect("holder serializes");
    tx.execute(
        &q,
        &[&(row.epoch + 1), &text, &holder.token, &(lease_ms as f64)],
    )
    .await?;
    let new = lock_entry(actor, plan_id, &holder, how);
    let entry = insert(&tx, s, vec![new], Some(row.epoch + 1))
        .await?
        .remove(0);
    commit(tx).await?;
    Ok((holder, entry))
}

/// Extends the lease of `token`'s lock; the new end (ms). A lock lost is never renewed.
pub(super) async fn renew(
    c: &mut Client,
    s: &str,
    token: &str,
    lease: Duration,
) -> Result<u64, Fail> {
    let q = format!(
        "UPDATE {} SET lease_until = now() + $2::float8 * interval '1 millisecond', heartbeat = now() \
         WHERE id AND token = $1 RETURNING (extract(epoch FROM lease_until) * 1000)::int8",
        table(s, "apply_lock")
    );
    match c
        .query_opt(&q, &[&token, &(lease.as_millis() as f64)])
        .await?
    {
        Some(r) => Ok(r.get::<_, i64>(0).max(0) as u64),
        None => Err(Fail::Lock(
            current(c, s)
                .await?
                .names(token)
                .err()
                .unwrap_or(LockError::Vanished),
        )),
    }
}

/// Frees `token`'s lock; `false` if it was not (or no longer) its.
pub(super) async fn release(c: &mut Client, s: &str, token: &str) -> Result<bool, Fail> {
    let q = format!(
        "UPDATE {} SET holder = NULL, token = NULL, lease_until = NULL, heartbeat = now() \
         WHERE id AND token = $1",
        table(s, "apply_lock")
    );
    Ok(c.execute(&q, &[&token]).await? == 1)
}

async fn current(c: &mut Client, s: &str) -> Result<LockRow, Fail> {
    let q = format!(
        "SELECT {LOCK_COLUMNS} FROM {} WHERE id",
        table(s, "apply_lock")
    );
    Ok(lock_row_from(&c.query_one(&q, &[]).await?))
}

/// `Ok` while the lock names `token`.
pub(super) async fn still_held(c: &mut Client, s: &str, token: &str) -> Result<(), Fail> {
    current(c, s).await?.names(token).map_err(Fail::Lock)
}

/// Who holds the lock, and whether the lease has run out.
pub(super) async fn lock_status(c: &mut Client, s: &str) -> Result<Option<LockStatus>, Fail> {
    let row = current(c, s).await?;
    Ok(row.holder.map(|holder| LockStatus {
        expired: row.expired || crate::lock::holder_gone(&holder) == Some(true),
        holder,
    }))
}

/// `ferry lock break`: frees the lock whoever holds it (its holder is fenced from then on:
/// the epoch moves on) and records `lock_broken` with who and why, in one transaction.
pub(super) async fn break_lock(
    c: &mut Client,
    s: &str,
    actor: &str,
    reason: &str,
) -> Result<Option<(LockHolder, Entry)>, Fail> {
    let tx = c.transaction().await?;
    let row = lock_row(&tx, s).await?;
    let Some(prev) = row.holder.clone() else {
        return Ok(None);
    };
    let q = format!(
        "UPDATE {} SET epoch = epoch + 1, holder = NULL, token = NULL, lease_until = NULL, \
         heartbeat = now() WHERE id",
        table(s, "apply_lock")
    );
    tx.execute(&q, &[]).await?;
    let new = crate::state::break_entry(actor, &prev, reason);
    let entry = insert(&tx, s, vec![new], Some(row.epoch + 1))
        .await?
        .remove(0);
    commit(tx).await?;
    Ok(Some((prev, entry)))
}

/// `ferry state migrate`: `lines` (verified entries of another ledger, in order) appended as
/// they are, chained to the store's head, which must be `after` (`None`: the ledger is empty).
pub(super) async fn import(
    c: &mut Client,
    s: &str,
    after: Option<(u64, String)>,
    lines: Vec<(u64, String)>,
) -> Result<(), Fail> {
    let tx = c.transaction().await?;
    lock_row(&tx, s).await?;
    let (next, prev) = head(&tx, s).await?;
    let expected = after.map_or((0, GENESIS.to_owned()), |(seq, hash)| (seq + 1, hash));
    if (next, &prev) != (expected.0, &expected.1) {
        return Err(StoreError::new(if expected.0 == 0 {
            format!("the store's ledger is not empty ({next} entries): a ledger is migrated only into an empty one")
        } else {
            format!("another client appended to the store's ledger during the migration (its head is now entry {})", next.saturating_sub(1))
        })
        .into());
    }
    let seqs: Vec<i64> = lines.iter().map(|(n, _)| *n as i64).collect();
    let text: Vec<String> = lines.into_iter().map(|(_, l)| l).collect();
    let q = format!(
        "INSERT INTO {} (seq, line) SELECT * FROM unnest($1::int8[], $2::text[])",
        table(s, "ledger")
    );
    tx.execute(&q, &[&seqs, &text]).await?;
    commit(tx).await
}

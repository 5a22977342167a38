//! The copy: every chunk of every table streamed COPY -> COPY between the two servers (binary
//! where every column's type is built in), up to `max_parallel` chunks at once, each on its own
//! pair of connections. No file, no snapshot held across processes: the source is behind the
//! plan's write fence.
//!
//! A chunk is one transaction on the target that also writes its marker row
//! (`ferry_migration.chunks`), so a chunk is either wholly there, with its marker, or not at all:
//! a copy killed mid-chunk leaves nothing half-written, and a resumed copy adopts chunks whose
//! marker committed but whose ledger record was never written, and redoes only the others. The
//! chunks of a table are decided once, recorded (`chunks_planned`), and read back on resume.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt, pin_mut};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Migration, Side};
use crate::migrate::sql;
use crate::migrate::stream::CopyHasher;
use crate::migrate::{Chunk, Table, key_chunks, page_chunks, rows_per_chunk};

/// What the ledger says of an earlier run of this copy step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriorChunks {
    /// The chunks decided by the first run.
    pub planned: Option<Vec<Chunk>>,
    /// Chunk ids recorded as copied.
    pub done: BTreeSet<String>,
    /// The source rows and hashes the copy recorded, by chunk id.
    pub hashes: BTreeMap<String, (i64, String)>,
}

/// One chunk copied, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkCopied {
    pub chunk: String,
    pub table: String,
    pub rows: u64,
    pub bytes: u64,
    pub ms: u64,
    /// Its transaction committed before an earlier run stopped; found by its marker.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
    /// The source side of the chunk's verification hash, computed from the stream as it was
    /// copied (binary copies only): the verification then reads only the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha256: Option<String>,
}

/// Where the copy reports: the ledger (durably, before the next chunk is counted), progress and
/// the run's cancellation.
#[async_trait::async_trait]
pub trait CopyLog: Send + Sync {
    async fn planned(&self, chunks: &[Chunk]) -> Result<(), String>;
    async fn copied(&self, c: &ChunkCopied) -> Result<(), String>;
    fn progress(&self, _table: &str, _rows: u64, _bytes: u64) {}
    /// A table without a key whose every chunk this run copied: its rows' count and multiset
    /// hash gathered from the chunks' streams, for verification to use as the source's side.
    fn table_hashed(&self, _table: &str, _rows: i64, _sha256: &str) {}
    fn cancelled(&self) -> bool {
        false
    }
    /// Fails when the run no longer holds the apply lock: checked right before each chunk
    /// commits, so a run that lost its lock adds nothing to the target.
    fn fence(&self) -> Result<(), String> {
        Ok(())
    }
}

const MARKERS: &str = "CREATE SCHEMA IF NOT EXISTS ferry_migration; \
CREATE TABLE IF NOT EXISTS ferry_migration.chunks (plan_id text NOT NULL, chunk text NOT NULL, \
rows bigint NOT NULL, bytes bigint NOT NULL, PRIMARY KEY (plan_id, chunk))";

/// Copies every chunk not yet copied; the summary per table.
pub async fn run(
    m: &Migration<'_>,
    prior: &PriorChunks,
    log: &dyn CopyLog,
) -> Result<Value, String> {
    let source = m.source().await?;
    let target = m.target().await?;
    let tables = m.tables(&source).await?;
    let chunks = match &prior.planned {
        Some(c) => c.clone(),
        None => {
            let c = plan_chunks(&source, &tables, m.spec.chunk_rows).await?;
            log.planned(&c).await?;
            c
        }
    };
    target
        .client
        .batch_execute(MARKERS)
        .await
        .map_err(|e| target.error(&e))?;
    let mut done = prior.done.clone();
    for rec in adopt(m, &target, &chunks, &done).await? {
        log.copied(&rec).await?;
        done.insert(rec.chunk.clone());
    }
    let by_id: BTreeMap<String, &Table> = tables.iter().map(|t| (t.id(), t)).collect();
    let mut todo: Vec<Chunk> = chunks
        .iter()
        .filter(|c| !done.contains(&c.id()))
        .cloned()
        .collect();
    pause_autovacuum(&target, &by_id, &todo).await;
    let size = |c: &Chunk| by_id.get(&c.table).map_or(0, |t| t.bytes);
    todo.sort_by_key(|c| (std::cmp::Reverse(size(c)), c.table.clone(), c.n));
    let keyless = Keyless::new(&tables, &chunks, &done);
    let queue = Mutex::new(VecDeque::from(todo));
    let workers = (0..m.spec.max_parallel.max(1)).map(|_| worker(m, &by_id, &queue, &keyless, log));
    let copied: Vec<Vec<ChunkCopied>> = futures_util::future::try_join_all(workers).await?;
    let left = queue.lock().expect("queue").len();
    if left > 0 {
        return Err(format!(
            "stopped with {left} chunk(s) left to copy; `ferry apply --resume` copies only those"
        ));
    }
    target
        .client
        .batch_execute("DROP SCHEMA ferry_migration CASCADE")
        .await
        .map_err(|e| target.error(&e))?;
    Ok(summary(
        &chunks,
        copied.into_iter().flatten().collect(),
        &done,
    ))
}

/// Autovacuum switched off on the target's tables that are still to be loaded
/// ([`sql::autovacuum_off`]; the indexes step switches it back). Only a cost is saved, so a
/// target that refuses (a table ferry's user does not own) is warned about, not failed.
async fn pause_autovacuum(target: &Side, tables: &BTreeMap<String, &Table>, todo: &[Chunk]) {
    let loading: BTreeSet<&str> = todo.iter().map(|c| c.table.as_str()).collect();
    let batch: Vec<String> = loading
        .iter()
        .filter_map(|id| tables.get(*id))
        .map(|t| sql::autovacuum_off(t))
        .collect();
    if batch.is_empty() {
        return;
    }
    if let Err(e) = target.client.batch_execute(&batch.join("; ")).await {
        tracing::warn!(error = %target.error(&e), "autovacuum could not be switched off on the target's tables for the copy; it may slow the copy and the index build");
    }
}

/// Chunks of every table: primary-key ranges of `chunk_rows` rows (fewer for wide rows,
/// [`rows_per_chunk`]) for a large keyed table,
/// page ranges for a large table without a key, the whole table otherwise.
pub async fn plan_chunks(
    source: &Side,
    tables: &[Table],
    chunk_rows: u64,
) -> Result<Vec<Chunk>, String> {
    let mut out = Vec::new();
    for t in tables {
        let every = if t.key.is_empty() {
            chunk_rows
        } else {
            rows_per_chunk(t, chunk_rows)
        };
        let small = t.key.is_empty() || t.bytes.max(0) as u64 <= crate::migrate::CHUNK_BYTES;
        if t.rows_estimate as u64 <= every && small {
            out.push(crate::migrate::whole(t));
        } else if t.key.is_empty() {
            out.extend(page_chunks(t, chunk_rows));
        } else {
            let starts = chunk_starts(source, t, every).await?;
            out.extend(key_chunks(t, &starts));
        }
    }
    Ok(out)
}

/// The keys where a table's chunks start (every `every`-th row in key order), read from a
/// cursor in batches of moves, in one read-only transaction of the source (closed on error).
async fn chunk_starts(source: &Side, t: &Table, every: u64) -> Result<Vec<Vec<String>>, String> {
    let client = &source.client;
    client
        .batch_execute(&format!("BEGIN READ ONLY; {}", sql::chunk_cursor(t)))
        .await
        .map_err(|e| source.error(&e))?;
    let starts = read_starts(client, t, every.max(1)).await;
    let end = if starts.is_ok() { "COMMIT" } else { "ROLLBACK" };
    client
        .batch_execute(end)
        .await
        .map_err(|e| source.error(&e))?;
    starts.map_err(|e| source.error(&e))
}

/// [`chunk_starts`]' moves, 64 to a round trip (a source across a WAN answers each in tens of
/// milliseconds), until a fetch finds no row.
async fn read_starts(
    client: &tokio_postgres::Client,
    t: &Table,
    every: u64,
) -> Result<Vec<Vec<String>>, tokio_postgres::Error> {
    use tokio_postgres::SimpleQueryMessage as M;
    const MOVES: usize = 64;
    let mut starts = Vec::new();
    loop {
        let sent = sql::chunk_steps(every, starts.is_empty(), MOVES);
        let before = starts.len();
        for m in client.simple_query(&sent).await? {
            if let M::Row(r) = m {
                let key = (0..t.key.len())
                    .map(|i| r.get(i).unwrap_or_default().to_string())
                    .collect();
                starts.push(key);
            }
        }
        if starts.len() < before + MOVES {
            return Ok(starts);
        }
    }
}

/// Chunks whose transaction committed (their marker is there) but that the ledger does not
/// record: an earlier run stopped between the commit and the record.
async fn adopt(
    m: &Migration<'_>,
    target: &Side,
    chunks: &[Chunk],
    done: &BTreeSet<String>,
) -> Result<Vec<ChunkCopied>, String> {
    let rows = target
        .client
        .query(
            "SELECT chunk, rows, bytes FROM ferry_migration.chunks WHERE plan_id = $1",
            &[&m.plan_id],
        )
        .await
        .map_err(|e| target.error(&e))?;
    let mut out = Vec::new();
    for r in rows {
        let id: String = r.get(0);
        if done.contains(&id) {
            continue;
        }
        if let Some(c) = chunks.iter().find(|c| c.id() == id) {
            out.push(ChunkCopied {
                chunk: id,
                table: c.table.clone(),
                rows: r.get::<_, i64>(1) as u64,
                bytes: r.get::<_, i64>(2) as u64,
                ms: 0,
                recovered: true,
                source_sha256: None,
            });
        }
    }
    Ok(out)
}

/// Takes chunks off the queue until it is empty (or the run is cancelled), on its own
/// connections; each chunk is recorded before the next is taken.
async fn worker(
    m: &Migration<'_>,
    tables: &BTreeMap<String, &Table>,
    queue: &Mutex<VecDeque<Chunk>>,
    keyless: &Keyless,
    log: &dyn CopyLog,
) -> Result<Vec<ChunkCopied>, String> {
    let mut done = Vec::new();
    let mut sides: Option<(Side, Side)> = None;
    loop {
        if log.cancelled() {
            return Ok(done);
        }
        let Some(chunk) = queue.lock().expect("queue").pop_front() else {
            return Ok(done);
        };
        if sides.is_none() {
            sides = Some((m.source().await?, m.target().await?));
        }
        let (src, tgt) = sides.as_mut().expect("connected");
        let table = tables
            .get(&chunk.table)
            .ok_or_else(|| format!("table {} is no longer on the source", chunk.table))?;
        let started = Instant::now();
        let gather = keyless.wants(&chunk.table);
        let c = copy_chunk(m, src, tgt, table, &chunk, gather, log).await?;
        let rec = ChunkCopied {
            chunk: chunk.id(),
            table: chunk.table.clone(),
            rows: c.rows,
            bytes: c.bytes,
            ms: started.elapsed().as_millis() as u64,
            recovered: false,
            source_sha256: c.sha256,
        };
        log.copied(&rec).await?;
        if let Some(hashes) = c.row_hashes {
            keyless.add(&chunk.table, hashes, log);
        }
        done.push(rec);
    }
}

/// What one chunk's copy moved and saw.
struct Copied {
    rows: u64,
    bytes: u64,
    /// The source's hash of the rows: a binary copy's stream hashed on its way through.
    sha256: Option<String>,
    /// Each row's hash, when asked for (a table without a key, [`Keyless`]).
    row_hashes: Option<Vec<[u8; 32]>>,
}

/// Bytes of rows sent to the target's COPY at once.
const BATCH: usize = 64 << 10;

/// One chunk: COPY out of the source straight into COPY on the target, and the chunk's marker,
/// in one target transaction.
async fn copy_chunk(
    m: &Migration<'_>,
    src: &Side,
    tgt: &mut Side,
    table: &Table,
    chunk: &Chunk,
    gather: bool,
    log: &dyn CopyLog,
) -> Result<Copied, String> {
    let place = tgt.db.place.clone();
    let skip = m.spec.skipped_columns(&table.id());
    let mut hasher = table
        .stream_fields(&skip)
        .map(|f| CopyHasher::new(f, table.in_key_order()));
    let terr = |e: tokio_postgres::Error| format!("{place}: {}", crate::probe::pg_error(&e));
    let tx = tgt.client.transaction().await.map_err(terr)?;
    let sink = tx.copy_in(&sql::copy_in(table)).await.map_err(terr)?;
    pin_mut!(sink);
    let stream = src.copy_out(table, chunk).await?;
    pin_mut!(stream);
    // One COPY message is one row; rows go to the target in batches of about 64 KiB (one
    // message each, where the sink alone would send one per 4 KiB); progress is reported
    // every 4 MiB, as differences.
    let (mut bytes, mut messages, mut shown, mut shown_rows) = (0u64, 0u64, 0u64, 0u64);
    let mut batch = bytes::BytesMut::with_capacity(2 * BATCH);
    while let Some(data) = stream.next().await {
        let data = data.map_err(|e| src.error(&e))?;
        bytes += data.len() as u64;
        messages += 1;
        if let Some(h) = hasher.as_mut() {
            h.feed(&data)
                .map_err(|e| format!("{}: the COPY stream: {e}", src.db.place))?;
        }
        batch.extend_from_slice(&data);
        if batch.len() >= BATCH {
            sink.feed(batch.split().freeze()).await.map_err(terr)?;
        }
        if bytes - shown > 4 << 20 {
            log.progress(&table.id(), messages - shown_rows, bytes - shown);
            (shown, shown_rows) = (bytes, messages);
        }
    }
    if !batch.is_empty() {
        sink.feed(batch.freeze()).await.map_err(terr)?;
    }
    let rows = sink.as_mut().finish().await.map_err(terr)?;
    log.progress(&table.id(), rows.saturating_sub(shown_rows), bytes - shown);
    let (sha256, row_hashes) = match hasher.map(CopyHasher::finish_rows).transpose() {
        Ok(Some((n, h, rows_h))) if n as u64 == rows => (Some(h), gather.then_some(rows_h)),
        Ok(Some((n, _, _))) => {
            return Err(format!(
                "{}: the stream held {n} rows, the target took {rows}",
                src.db.place
            ));
        }
        Ok(None) => (None, None),
        Err(e) => return Err(format!("{}: the COPY stream: {e}", src.db.place)),
    };
    tx.execute(
        "INSERT INTO ferry_migration.chunks (plan_id, chunk, rows, bytes) VALUES ($1, $2, $3, $4)",
        &[&m.plan_id, &chunk.id(), &(rows as i64), &(bytes as i64)],
    )
    .await
    .map_err(terr)?;
    log.fence()?;
    tx.commit().await.map_err(terr)?;
    Ok(Copied {
        rows,
        bytes,
        sha256,
        row_hashes,
    })
}

/// A table without a key is verified whole, as one multiset of rows, while it is copied in
/// page ranges that mean nothing on the target: so the source's side of its verification is
/// gathered here from its chunks' streams — each row's hash, 32 bytes a row, for tables of at
/// most [`KEYLESS_GATHER_ROWS`] rows whose every chunk this run copies in binary. Any other
/// keyless table is hashed by the source database at verification, as before.
struct Keyless {
    tables: Mutex<BTreeMap<String, Gathered>>,
}

/// At most this many rows' hashes (64 MiB) are gathered per table.
const KEYLESS_GATHER_ROWS: usize = 2_000_000;

struct Gathered {
    left: usize,
    hashes: Vec<[u8; 32]>,
}

impl Keyless {
    fn new(tables: &[Table], chunks: &[Chunk], done: &BTreeSet<String>) -> Self {
        let mut out = BTreeMap::new();
        for t in tables
            .iter()
            .filter(|t| t.key.is_empty() && t.binary_copy())
        {
            let mine: Vec<&Chunk> = chunks.iter().filter(|c| c.table == t.id()).collect();
            let fresh = mine.iter().all(|c| !done.contains(&c.id()));
            let small = (t.rows_estimate.max(0) as usize) <= KEYLESS_GATHER_ROWS;
            if mine.len() > 1 && fresh && small {
                let hashes = Vec::with_capacity(t.rows_estimate.max(0) as usize);
                out.insert(
                    t.id(),
                    Gathered {
                        left: mine.len(),
                        hashes,
                    },
                );
            }
        }
        Self {
            tables: Mutex::new(out),
        }
    }

    fn wants(&self, table: &str) -> bool {
        self.tables.lock().expect("keyless").contains_key(table)
    }

    /// One chunk's row hashes; the table's hash once its last chunk is in. A table grown past
    /// the bound is dropped (its source is then hashed in the database).
    fn add(&self, table: &str, mut hashes: Vec<[u8; 32]>, log: &dyn CopyLog) {
        let mut all = self.tables.lock().expect("keyless");
        let Some(g) = all.get_mut(table) else { return };
        if g.hashes.len() + hashes.len() > KEYLESS_GATHER_ROWS {
            all.remove(table);
            return;
        }
        g.hashes.append(&mut hashes);
        g.left -= 1;
        if g.left == 0 {
            let mut g = all.remove(table).expect("gathered");
            let digest = crate::migrate::stream::multiset_digest(&mut g.hashes);
            log.table_hashed(table, g.hashes.len() as i64, &digest);
        }
    }
}

/// Rows, bytes, chunks and chunk time per table, of this run and earlier ones.
fn summary(chunks: &[Chunk], copied: Vec<ChunkCopied>, earlier: &BTreeSet<String>) -> Value {
    let mut tables: BTreeMap<String, (u64, u64, u64, u64)> = BTreeMap::new();
    for c in chunks {
        tables.entry(c.table.clone()).or_default().2 += 1;
    }
    for c in &copied {
        let t = tables.entry(c.table.clone()).or_default();
        t.0 += c.rows;
        t.1 += c.bytes;
        t.3 += c.ms;
    }
    json!({
        "chunks": chunks.len(),
        "copied_now": copied.len(),
        "copied_before": earlier.len(),
        "rows_now": copied.iter().map(|c| c.rows).sum::<u64>(),
        "bytes_now": copied.iter().map(|c| c.bytes).sum::<u64>(),
        "tables": tables.iter().map(|(t, (rows, bytes, chunks, ms))| json!({
            "table": t, "rows_now": rows, "bytes_now": bytes, "chunks": chunks, "chunk_ms": ms,
        })).collect::<Vec<_>>(),
    })
}

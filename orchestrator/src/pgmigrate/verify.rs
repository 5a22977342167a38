//! Verification: for every chunk of every table, the row count and SHA-256 of the rows'
//! canonical binary forms (in key order, or as a multiset for a table without a key), both
//! sides at once, rolled up per table. `ferry migrate verify` has each server compute its own
//! side (the rows do not travel). During an apply the source's side of a copied chunk is the
//! copy's stream hash, and the target's side is read as a binary COPY stream and hashed by ferry
//! (measured cheaper than hashing inside the server, and a table without a key no longer sorts
//! a hash per row in one backend) — but only for a table whose sample of rows the target's
//! database and ferry's stream hasher hash alike, and a chunk whose stream hash differs is hashed
//! again by its database before anything is judged. A chunk that differs is bisected by primary
//! key down to ranges of a few hundred rows, whose rows are then compared one by one and named
//! by key; a table without a key is compared as a multiset of row hashes. Differences that a
//! plan rule allows are matched to it; any other fails the verification.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use futures_util::{StreamExt, pin_mut};

use super::{Migration, Side, copy::plan_chunks};
use crate::migrate::report::{ChunkCheck, RowHash, TableCheck, VerifyReport, diff_rows, rollup};
use crate::migrate::stream::CopyHasher;
use crate::migrate::{Chunk, Difference, Range, Table, sql, whole};

/// How many differences a table's report lists (the rest are counted).
const LIST_LIMIT: usize = 100;
/// Ranges at most this many rows are compared row by row.
const ROW_BY_ROW: i64 = 256;
/// A table without a key is compared row by row up to this many rows.
const KEYLESS_ROWS: i64 = 1_000_000;
/// A table without a key is hashed on the target from a COPY stream up to this many rows (each
/// row's hash is held, 32 bytes a row); a larger one is hashed by the database.
const KEYLESS_STREAM_ROWS: i64 = 2_000_000;
/// Heap pages of a table that the target hashes both ways before its chunks are read by stream.
const SAMPLE_PAGES: i64 = 16;

/// Verifies every table not excluded, by the copy's own key chunks when they are known (else
/// chunked afresh); the report (whether it passed is `report.passed()`).
///
/// `hashes` are source rows and hashes the copy computed from its stream, by chunk id: such a
/// chunk (when the copy's chunk of that id has the same range) is hashed on the target only.
pub async fn run(
    m: &Migration<'_>,
    copied: Option<&[Chunk]>,
    hashes: &BTreeMap<String, (i64, String)>,
) -> Result<VerifyReport, String> {
    let source = m.source().await?;
    let tables = m.tables(&source).await?;
    let mut work = Vec::new();
    for t in tables {
        let known: Vec<Chunk> = copied
            .unwrap_or_default()
            .iter()
            .filter(|c| c.table == t.id() && !matches!(c.range, Range::Pages { .. }))
            .cloned()
            .collect();
        let chunks = if t.key.is_empty() {
            vec![whole(&t)]
        } else if !known.is_empty() {
            known
        } else {
            plan_chunks(&source, std::slice::from_ref(&t), m.spec.chunk_rows).await?
        };
        work.push((t, chunks));
    }
    // A copied chunk's stream hash stands for the source only where verification checks the
    // very same range (keyless tables copied in pages are verified whole).
    let ranges: BTreeMap<String, &Range> = work
        .iter()
        .flat_map(|(_, chunks)| chunks.iter().map(|c| (c.id(), &c.range)))
        .collect();
    let mut known: BTreeMap<String, (i64, String)> = copied
        .unwrap_or_default()
        .iter()
        .filter(|c| ranges.get(&c.id()) == Some(&&c.range))
        .filter_map(|c| Some((c.id(), hashes.get(&c.id())?.clone())))
        .collect();
    // A table without a key is verified whole; the copy may have gathered its source's side
    // from every chunk's stream.
    for (t, _) in work.iter().filter(|(t, _)| t.key.is_empty()) {
        if let Some(h) = hashes.get(&crate::migrate::whole_from_chunks(&t.id())) {
            known.insert(whole(t).id(), h.clone());
        }
    }
    let streamed = streamed_tables(m, &work, &known).await?;
    let checked = hash_all(m, &work, &known, &streamed).await?;
    let (src, tgt) = (m.source().await?, m.target().await?);
    let mut checks = Vec::new();
    for (i, (t, chunks)) in work.iter().enumerate() {
        let mut mine: Vec<&(usize, usize, ChunkCheck, u64)> =
            checked.iter().filter(|c| c.0 == i).collect();
        mine.sort_by_key(|c| c.1);
        let ms = mine.iter().map(|c| c.3).sum();
        let list: Vec<ChunkCheck> = mine.into_iter().map(|c| c.2.clone()).collect();
        checks.push(table(m, &src, &tgt, t, chunks, list, ms).await?);
    }
    checks.sort_by(|a, b| a.table.cmp(&b.table));
    Ok(VerifyReport {
        tables: checks,
        excluded: m.spec.exclude.clone(),
    })
}

/// Every chunk of every table hashed on both sides, `max_parallel` chunks at once, the
/// largest first (by estimated rows: a table without a key is one chunk of all its rows, which
/// started last would finish long after the rest): (table, chunk, check, milliseconds).
async fn hash_all(
    m: &Migration<'_>,
    work: &[(Table, Vec<Chunk>)],
    known: &BTreeMap<String, (i64, String)>,
    streamed: &BTreeSet<String>,
) -> Result<Vec<(usize, usize, ChunkCheck, u64)>, String> {
    let mut items: Vec<(usize, usize)> = work
        .iter()
        .enumerate()
        .flat_map(|(i, (_, chunks))| (0..chunks.len()).map(move |k| (i, k)))
        .collect();
    let per_chunk = |i: usize| work[i].0.rows_estimate.max(0) / work[i].1.len().max(1) as i64;
    items.sort_by_key(|(i, k)| (std::cmp::Reverse(per_chunk(*i)), *i, *k));
    let queue = Mutex::new(VecDeque::from(items));
    let workers = (0..m.spec.max_parallel.max(1)).map(|_| async {
        let (src, tgt) = (m.source().await?, m.target().await?);
        let mut out = Vec::new();
        loop {
            let next = queue.lock().expect("queue").pop_front();
            let Some((i, k)) = next else {
                return Ok::<_, String>(out);
            };
            let (t, c) = (&work[i].0, &work[i].1[k]);
            let started = Instant::now();
            let skip = m.spec.skipped_columns(&t.id());
            let from_copy = known.get(&c.id());
            let by_stream = from_copy.is_some() && streamed.contains(&t.id());
            let ((sr, sh), (tr, th)) = match from_copy {
                Some(s) if by_stream => (s.clone(), hash_stream(&tgt, t, c, &skip).await?),
                Some(s) => (s.clone(), hash(&tgt, t, &c.range, &skip).await?),
                None => both(&src, &tgt, t, &c.range, &skip).await?,
            };
            let check = ChunkCheck {
                chunk: c.id(),
                source_rows: sr,
                target_rows: tr,
                source_sha256: sh,
                target_sha256: th,
                source_from_copy: from_copy.is_some(),
                target_from_stream: by_stream,
            };
            out.push((i, k, check, started.elapsed().as_millis() as u64));
        }
    });
    Ok(futures_util::future::try_join_all(workers)
        .await?
        .into_iter()
        .flatten()
        .collect())
}

/// The tables whose target side is read as a COPY stream and hashed by ferry: those with a chunk
/// whose source side came from the copy's stream, copied in binary, without a key only up to
/// [`KEYLESS_STREAM_ROWS`], and whose sample the target's database hashes as ferry's stream
/// hasher does ([`stream_agrees`]).
async fn streamed_tables(
    m: &Migration<'_>,
    work: &[(Table, Vec<Chunk>)],
    known: &BTreeMap<String, (i64, String)>,
) -> Result<BTreeSet<String>, String> {
    let tgt = m.target().await?;
    let mut out = BTreeSet::new();
    for (t, chunks) in work {
        let skip = m.spec.skipped_columns(&t.id());
        let wanted = chunks.iter().any(|c| known.contains_key(&c.id()))
            && t.stream_fields(&skip).is_some()
            && (!t.key.is_empty() || (0..=KEYLESS_STREAM_ROWS).contains(&t.rows_estimate));
        if wanted && stream_agrees(&tgt, t, &skip).await? {
            out.insert(t.id());
        }
    }
    Ok(out)
}

/// The target's first [`SAMPLE_PAGES`] pages of a table hashed by its database and by ferry's
/// stream hasher: the two must agree before ferry's hash of the target's stream is trusted in
/// place of the database's (the source's side is ferry's hash of the copy's stream, so the
/// database is what keeps the two sides from sharing a mistake of ferry's).
async fn stream_agrees(tgt: &Side, t: &Table, skip: &[String]) -> Result<bool, String> {
    let sample = Chunk {
        table: t.id(),
        n: 0,
        range: Range::Pages {
            from: 0,
            to: Some(SAMPLE_PAGES),
        },
    };
    let database = hash(tgt, t, &sample.range, skip).await?;
    let stream = hash_stream(tgt, t, &sample, skip).await?;
    if database != stream {
        tracing::warn!(table = %t.id(), ?database, ?stream, "the target's database and ferry's stream hasher disagree on a sample of rows; the table is hashed by the database");
    }
    Ok(database == stream)
}

/// A chunk's rows on one side read as the copy reads them (binary COPY, in key order for a
/// keyed table) and hashed by ferry as `sql::range_hash` hashes them in the database.
async fn hash_stream(
    side: &Side,
    t: &Table,
    c: &Chunk,
    skip: &[String],
) -> Result<(i64, String), String> {
    let fields = t
        .stream_fields(skip)
        .ok_or_else(|| format!("{}: {} is not copied in binary", side.db.place, t.id()))?;
    let mut hasher = CopyHasher::new(fields, t.in_key_order());
    let stream = side.copy_out(t, c).await?;
    pin_mut!(stream);
    let broken = |e: String| format!("{}: the COPY stream: {e}", side.db.place);
    while let Some(data) = stream.next().await {
        hasher
            .feed(&data.map_err(|e| side.error(&e))?)
            .map_err(broken)?;
    }
    hasher.finish().map_err(broken)
}

async fn hash(
    side: &Side,
    t: &Table,
    range: &Range,
    skip: &[String],
) -> Result<(i64, String), String> {
    let r = side
        .client
        .query_one(&sql::range_hash(t, range, skip), &[])
        .await
        .map_err(|e| too_large(side.error(&e)))?;
    Ok((r.get(0), r.get(1)))
}

/// A keyed range's rows are hashed as one value, which PostgreSQL caps at 1 GiB: say what to
/// change when a server refuses one for its size.
fn too_large(e: String) -> String {
    if e.contains("invalid memory alloc request size") || e.contains("out of memory") {
        format!(
            "{e} (a range's rows are hashed as one value inside the server, at most 1 GiB; \
lower the plan's `chunk_rows` for this table's wide rows)"
        )
    } else {
        e
    }
}

async fn both(
    src: &Side,
    tgt: &Side,
    t: &Table,
    range: &Range,
    skip: &[String],
) -> Result<((i64, String), (i64, String)), String> {
    tokio::try_join!(hash(src, t, range, skip), hash(tgt, t, range, skip))
}

/// One table from its chunks' checks (in chunk order): the differences of those that differ,
/// rolled up. `ms` is the time its chunks took to hash.
async fn table(
    m: &Migration<'_>,
    src: &Side,
    tgt: &Side,
    t: &Table,
    chunks: &[Chunk],
    mut checks: Vec<ChunkCheck>,
    ms: u64,
) -> Result<TableCheck, String> {
    let started = Instant::now();
    let id = t.id();
    let skip = m.spec.skipped_columns(&id);
    let mut differences = Vec::new();
    let mut not_listed = 0u64;
    for (c, k) in chunks.iter().zip(checks.iter_mut()) {
        if !k.matches() && k.source_from_copy {
            let (rows, sha256) =
                database_again(src, t, &c.range, &skip, k, &k.source_sha256).await?;
            (k.source_rows, k.source_sha256, k.source_from_copy) = (rows, sha256, false);
        }
        if !k.matches() && k.target_from_stream {
            let (rows, sha256) =
                database_again(tgt, t, &c.range, &skip, k, &k.target_sha256).await?;
            (k.target_rows, k.target_sha256, k.target_from_stream) = (rows, sha256, false);
        }
    }
    for (c, k) in chunks.iter().zip(&checks).filter(|(_, k)| !k.matches()) {
        let (d, n) = if t.key.is_empty() {
            keyless(src, tgt, t, &skip, k).await?
        } else {
            bisect(
                src,
                tgt,
                t,
                &skip,
                c.range.clone(),
                k,
                LIST_LIMIT.saturating_sub(differences.len()),
            )
            .await?
        };
        differences.extend(d);
        not_listed += n;
    }
    let rule = m.spec.rows_rule(&id).map(|r| r.name.clone());
    for d in &mut differences {
        d.rule = rule.clone();
    }
    let skipped_columns = m.spec.skipped_by_rule(&id);
    Ok(TableCheck {
        table: id,
        source_rows: checks.iter().map(|c| c.source_rows).sum(),
        target_rows: checks.iter().map(|c| c.target_rows).sum(),
        chunks: checks.len(),
        source_sha256: rollup(checks.iter().map(|c| c.source_sha256.as_str())),
        target_sha256: rollup(checks.iter().map(|c| c.target_sha256.as_str())),
        skipped_columns,
        differences,
        differences_not_listed: not_listed,
        duration_ms: ms + started.elapsed().as_millis() as u64,
        chunk_checks: checks,
    })
}

/// A chunk whose side hashed from a stream (the copy's for the source, a COPY read for the
/// target) differs from the other side: that side's database hashes it again, and the report
/// shows the database's hash. Bisection then compares the two databases, so a stream's hash is
/// never the only evidence of a difference.
async fn database_again(
    side: &Side,
    t: &Table,
    range: &Range,
    skip: &[String],
    k: &ChunkCheck,
    stream: &str,
) -> Result<(i64, String), String> {
    let again = hash(side, t, range, skip).await?;
    tracing::warn!(chunk = %k.chunk, place = %side.db.place, stream, database = %again.1, "a stream hash differs from the other side; its database hashed the chunk again");
    Ok(again)
}

async fn rows(
    side: &Side,
    t: &Table,
    range: &Range,
    skip: &[String],
) -> Result<Vec<RowHash>, String> {
    let rows = side
        .client
        .query(&sql::rows_of(t, range, skip), &[])
        .await
        .map_err(|e| side.error(&e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// A table without a key that differs: compared as a multiset of rows when it is small enough.
async fn keyless(
    src: &Side,
    tgt: &Side,
    t: &Table,
    skip: &[String],
    k: &ChunkCheck,
) -> Result<(Vec<Difference>, u64), String> {
    if k.source_rows.max(k.target_rows) > KEYLESS_ROWS {
        return Ok((
            vec![],
            (k.source_rows - k.target_rows).unsigned_abs().max(1),
        ));
    }
    let (s, g) = tokio::try_join!(
        rows(src, t, &Range::All, skip),
        rows(tgt, t, &Range::All, skip)
    )?;
    let mut d = diff_rows(&t.id(), &s, &g);
    let extra = d.len().saturating_sub(LIST_LIMIT) as u64;
    d.truncate(LIST_LIMIT);
    Ok((d, extra))
}

/// Splits a differing key range until its parts are small, then compares their rows.
async fn bisect(
    src: &Side,
    tgt: &Side,
    t: &Table,
    skip: &[String],
    range: Range,
    k: &ChunkCheck,
    room: usize,
) -> Result<(Vec<Difference>, u64), String> {
    let mut out = Vec::new();
    let mut not_listed = 0u64;
    let range = match range {
        Range::All => Range::Key {
            lower: None,
            upper: None,
        },
        r => r,
    };
    let mut stack = vec![(range, k.source_rows, k.target_rows)];
    while let Some((r, rs, rt)) = stack.pop() {
        if out.len() >= room {
            not_listed += (rs - rt).unsigned_abs().max(1);
            continue;
        }
        let mid = if rs.max(rt) <= ROW_BY_ROW {
            None
        } else {
            let (side, n) = if rs >= rt { (src, rs) } else { (tgt, rt) };
            let row = side
                .client
                .query_opt(&sql::middle_key(t, &r, n), &[])
                .await
                .map_err(|e| side.error(&e))?;
            row.map(|row| {
                (0..t.key.len())
                    .map(|i| row.get::<_, String>(i))
                    .collect::<Vec<_>>()
            })
        };
        let Some(mid) = mid else {
            let (s, g) = tokio::try_join!(rows(src, t, &r, skip), rows(tgt, t, &r, skip))?;
            out.extend(diff_rows(&t.id(), &s, &g));
            continue;
        };
        let Range::Key { lower, upper } = r else {
            continue;
        };
        // The upper half is pushed first, so the lower one is looked at first: differences
        // come out in key order.
        for half in [
            Range::Key {
                lower: Some(mid.clone()),
                upper: upper.clone(),
            },
            Range::Key {
                lower: lower.clone(),
                upper: Some(mid.clone()),
            },
        ] {
            let ((hs, hh), (ts, th)) = both(src, tgt, t, &half, skip).await?;
            if hs != ts || hh != th {
                stack.push((half, hs, ts));
            }
        }
    }
    if out.len() > room {
        not_listed += (out.len() - room) as u64;
        out.truncate(room);
    }
    Ok((out, not_listed))
}

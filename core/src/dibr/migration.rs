//! Section 21, data migration: for a migration plan, what the ledger proves — per table the
//! rows and chunks copied, both sides' rows and rolled-up SHA-256, every difference and the rule
//! that allowed it, the sequences, the write fence.

use serde::Serialize;

use super::build::Ctx;
use crate::migrate::evidence::{MigrationReport, report_of};
use crate::ops::Op;

#[derive(Debug, Clone, Serialize)]
pub struct MigrationSection {
    pub source: String,
    pub target: String,
    pub fence: String,
    pub verdict: String,
    pub verified_at: String,
    pub tables: Vec<TableRow>,
    pub differences: Vec<DifferenceRow>,
    /// Columns not compared and tables not copied, each with its rule or reason.
    pub allowed: Vec<String>,
    pub sequences: Vec<SequenceRow>,
    /// Each bucket copy: objects, bytes, manifest root, verification.
    pub buckets: Vec<BucketRow>,
    /// Every problem a bucket verification named.
    pub bucket_problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BucketRow {
    pub copy: String,
    pub source: String,
    pub target: String,
    pub objects: String,
    pub bytes: String,
    pub root: String,
    pub retries: u64,
    pub verdict: String,
    pub verified_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableRow {
    pub table: String,
    pub copied_rows: u64,
    pub bytes: u64,
    pub chunks: u64,
    pub copy_ms: u64,
    pub source_rows: String,
    pub target_rows: String,
    pub source_sha256: String,
    pub target_sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DifferenceRow {
    pub table: String,
    pub key: String,
    pub kind: String,
    pub allowed_by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SequenceRow {
    pub sequence: String,
    pub source_last_value: String,
    pub target_next: String,
    pub column: String,
    pub column_max: String,
}

/// The section, for a migration plan only.
pub(super) fn section(c: &Ctx<'_>) -> Option<MigrationSection> {
    let spec = c
        .body
        .steps
        .iter()
        .find_map(|s| match s.op.as_ref().map(|o| &o.op) {
            Some(Op::Migrate { spec, .. }) => Some(spec.clone()),
            _ => None,
        });
    if spec.is_none() && crate::migrate::evidence::bucket_specs(c.plan).is_empty() {
        return None;
    }
    let entries: Vec<crate::ledger::Entry> = c.mine.iter().map(|e| (*e).clone()).collect();
    let r = report_of(c.plan, spec.as_ref(), &entries);
    Some(of_report(&r))
}

fn of_report(r: &MigrationReport) -> MigrationSection {
    let t = crate::gate::text;
    let v = r.verification.as_ref();
    let mut tables: Vec<TableRow> = Vec::new();
    let names: std::collections::BTreeSet<String> = r
        .copy
        .iter()
        .map(|c| c.table.clone())
        .chain(
            v.iter()
                .flat_map(|v| v.tables.iter().map(|t| t.table.clone())),
        )
        .collect();
    for name in names {
        let copy = r.copy.iter().find(|c| c.table == name);
        let check = v.and_then(|v| v.tables.iter().find(|t| t.table == name));
        tables.push(TableRow {
            table: name,
            copied_rows: copy.map_or(0, |c| c.rows),
            bytes: copy.map_or(0, |c| c.bytes),
            chunks: copy.map_or(0, |c| c.chunks),
            copy_ms: copy.map_or(0, |c| c.chunk_ms),
            source_rows: check.map_or("-".into(), |c| c.source_rows.to_string()),
            target_rows: check.map_or("-".into(), |c| c.target_rows.to_string()),
            source_sha256: check.map_or("-".into(), |c| c.source_sha256.clone()),
            target_sha256: check.map_or("-".into(), |c| c.target_sha256.clone()),
        });
    }
    let differences = v
        .iter()
        .flat_map(|v| v.tables.iter().flat_map(|t| &t.differences))
        .map(|d| DifferenceRow {
            table: d.table.clone(),
            key: if d.key.is_empty() {
                "(no key)".into()
            } else {
                d.key.clone()
            },
            kind: d.kind.describe().into(),
            allowed_by: d
                .rule
                .clone()
                .unwrap_or_else(|| "none: the verification fails".into()),
        })
        .collect();
    let mut allowed: Vec<String> = v
        .iter()
        .flat_map(|v| {
            v.tables.iter().flat_map(|t| {
                t.skipped_columns
                    .iter()
                    .map(move |(c, rule)| format!("`{}.{c}` not compared: rule `{rule}`", t.table))
            })
        })
        .collect();
    allowed.extend(v.iter().flat_map(|v| {
        v.excluded
            .iter()
            .map(|x| format!("`{}` not copied: {}", x.table, x.reason))
    }));
    let sequences = r
        .sequences
        .as_ref()
        .and_then(|s| s["sequences"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|q| SequenceRow {
            sequence: t(&q["sequence"]),
            source_last_value: t(&q["source_last_value"]),
            target_next: t(&q["target_next"]),
            column: t(&q["column"]),
            column_max: t(&q["column_max"]),
        })
        .collect();
    MigrationSection {
        source: r.source.clone(),
        target: r.target.clone(),
        fence: if r.fence.is_empty() {
            "none in the plan: writes to the source were stopped outside ferry, or not at all"
                .into()
        } else {
            r.fence
                .iter()
                .map(|f| {
                    format!(
                        "{} ({} at {})",
                        f.title,
                        f.outcome,
                        f.time.as_deref().unwrap_or("-")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        },
        verdict: v.map_or("not verified yet".into(), |v| v.verdict()),
        verified_at: r.verified_at.clone().unwrap_or_else(|| "-".into()),
        tables,
        differences,
        allowed,
        sequences,
        buckets: r.buckets.iter().map(bucket_row).collect(),
        bucket_problems: r
            .buckets
            .iter()
            .flat_map(|b| {
                b.verification
                    .iter()
                    .flat_map(|v| &v.problems)
                    .map(|p| format!("`{}`: {}", b.copy, p.describe()))
            })
            .collect(),
    }
}

fn bucket_row(b: &crate::migrate::evidence::BucketEvidence) -> BucketRow {
    let m = b.manifest.as_ref();
    BucketRow {
        copy: b.copy.clone(),
        source: b.source.clone(),
        target: b.target.clone(),
        objects: m.map_or("-".into(), |m| m.objects.to_string()),
        bytes: m.map_or("-".into(), |m| m.bytes.to_string()),
        root: m.map_or("-".into(), |m| m.root.clone()),
        retries: b.retries,
        verdict: b.verdict(),
        verified_at: b.verified_at.clone().unwrap_or_else(|| "-".into()),
    }
}

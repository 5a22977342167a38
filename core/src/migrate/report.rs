//! What verification found: per table the rows and rolled-up hashes of both sides, every
//! difference down to its key, and the rule that allowed it (if one did).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Exclusion;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// On the source, not on the target.
    Missing,
    /// On the target only.
    Extra,
    /// Same key, other values.
    Changed,
}

impl DifferenceKind {
    /// How reports and the DIBR guide say it.
    pub fn describe(self) -> &'static str {
        match self {
            DifferenceKind::Missing => "missing on the target",
            DifferenceKind::Extra => "only on the target",
            DifferenceKind::Changed => "changed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub table: String,
    /// The primary key's values (`42`, `7, eu`); empty for a table without one.
    pub key: String,
    pub kind: DifferenceKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_row: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_row: Option<String>,
    /// The plan's rule that allows it; none fails the verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// One chunk compared: rows and hashes of both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkCheck {
    pub chunk: String,
    pub source_rows: i64,
    pub target_rows: i64,
    pub source_sha256: String,
    pub target_sha256: String,
    /// The source's side was hashed from the copy's own stream (recorded with the chunk), not
    /// read again from the source.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub source_from_copy: bool,
    /// The target's side was read as a binary COPY stream and hashed by ferry (the database
    /// hashed a sample of the table's rows alike first), not hashed inside the database.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub target_from_stream: bool,
}

impl ChunkCheck {
    pub fn matches(&self) -> bool {
        self.source_rows == self.target_rows && self.source_sha256 == self.target_sha256
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCheck {
    pub table: String,
    pub source_rows: i64,
    pub target_rows: i64,
    pub chunks: usize,
    /// SHA-256 over the chunks' hashes in order: equal tables have equal hashes.
    pub source_sha256: String,
    pub target_sha256: String,
    /// Columns left out of the comparison, each with the rule that says so.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped_columns: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<Difference>,
    /// More differences were found than the report lists.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub differences_not_listed: u64,
    pub duration_ms: u64,
    /// Every chunk: rows and SHA-256 on both sides, in chunk order (what the roll-up is over).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunk_checks: Vec<ChunkCheck>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TableCheck {
    /// Differences no rule explains (listed or not).
    pub fn unexplained(&self) -> u64 {
        let listed = self.differences.iter().filter(|d| d.rule.is_none()).count() as u64;
        let unlisted_unexplained = if self.differences.iter().all(|d| d.rule.is_some()) {
            0
        } else {
            self.differences_not_listed
        };
        listed + unlisted_unexplained
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub tables: Vec<TableCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<Exclusion>,
}

impl VerifyReport {
    pub fn unexplained(&self) -> u64 {
        self.tables.iter().map(TableCheck::unexplained).sum()
    }

    pub fn passed(&self) -> bool {
        self.unexplained() == 0
    }

    pub fn rows(&self) -> i64 {
        self.tables.iter().map(|t| t.source_rows).sum()
    }

    /// One line on a verification: how many tables and rows, and the differences no rule allows.
    pub fn verdict(&self) -> String {
        let r = self;
        let unexplained = r.unexplained();
        let allowed: usize = r
            .tables
            .iter()
            .flat_map(|t| &t.differences)
            .filter(|d| d.rule.is_some())
            .count();
        let mut s = format!(
            "{} table(s), {} row(s) compared: {}",
            r.tables.len(),
            r.rows(),
            if unexplained == 0 {
                "every chunk matches".to_owned()
            } else {
                format!("{unexplained} difference(s) no rule allows")
            }
        );
        if allowed > 0 {
            s.push_str(&format!("; {allowed} allowed by a rule"));
        }
        for t in r.tables.iter().filter(|t| t.unexplained() > 0) {
            let keys: Vec<String> = t
                .differences
                .iter()
                .filter(|d| d.rule.is_none())
                .take(10)
                .map(|d| {
                    let kind = d.kind.describe();
                    if d.key.is_empty() {
                        format!(
                            "row {} {kind}",
                            d.source_row
                                .as_ref()
                                .or(d.target_row.as_ref())
                                .map_or("", String::as_str)
                        )
                    } else {
                        format!("key {} {kind}", d.key)
                    }
                })
                .collect();
            s.push_str(&format!("\n  - {}: {}", t.table, keys.join("; ")));
        }
        s
    }
}

/// SHA-256 (hex) over a table's chunk hashes, in chunk order.
pub fn rollup<'a>(hashes: impl IntoIterator<Item = &'a str>) -> String {
    let joined: Vec<&str> = hashes.into_iter().collect();
    crate::load::sha256_hex(joined.join("\n").as_bytes())
}

/// One row of a small range: key (text), hash (hex), canonical text.
pub type RowHash = (String, String, String);

/// The rows that differ between two small ranges. Rows with a key are matched by key; rows of
/// a table without one by their hash (as a multiset: two equal rows are two rows).
pub fn diff_rows(table: &str, source: &[RowHash], target: &[RowHash]) -> Vec<Difference> {
    let keyed = source.iter().chain(target).any(|r| !r.0.is_empty());
    let key_of = |r: &RowHash| {
        if keyed { r.0.clone() } else { r.1.clone() }
    };
    let mut s: BTreeMap<String, Vec<&RowHash>> = BTreeMap::new();
    for r in source {
        s.entry(key_of(r)).or_default().push(r);
    }
    let mut t: BTreeMap<String, Vec<&RowHash>> = BTreeMap::new();
    for r in target {
        t.entry(key_of(r)).or_default().push(r);
    }
    let diff = |key: &str, kind, src: Option<&RowHash>, tgt: Option<&RowHash>| Difference {
        table: table.into(),
        key: if keyed { key.into() } else { String::new() },
        kind,
        source_row: src.map(|r| r.2.clone()),
        target_row: tgt.map(|r| r.2.clone()),
        rule: None,
    };
    let mut out = Vec::new();
    for (k, rows) in &s {
        let other = t.get(k).map(Vec::as_slice).unwrap_or_default();
        for (i, r) in rows.iter().enumerate() {
            match other.get(i) {
                None => out.push(diff(k, DifferenceKind::Missing, Some(r), None)),
                Some(o) if o.1 != r.1 => {
                    out.push(diff(k, DifferenceKind::Changed, Some(r), Some(o)))
                }
                Some(_) => {}
            }
        }
    }
    for (k, rows) in &t {
        let other = s.get(k).map_or(0, Vec::len);
        for r in rows.iter().skip(other) {
            out.push(diff(k, DifferenceKind::Extra, None, Some(r)));
        }
    }
    out
}

//! PostgreSQL migration, the pure part: what a migration step carries (`MigrationSpec`, its
//! `Phase`), the source's tables as ferry sees them, chunks (key or page ranges) and the SQL
//! that copies and hashes one, catalog comparison, and the verification report with its rules.
//!
//! Talking to the servers is `ferry::migrate`; this module only builds statements and judges
//! answers, so every piece of SQL ferry sends is unit-tested here.

pub mod bucket;
pub mod catalog;
pub mod evidence;
pub mod report;
pub mod sql;
pub mod stream;
pub mod toc;

use serde::{Deserialize, Serialize};

use crate::model::{DiffRule, Exclusion, MigrationMode, qualified_table};

pub use catalog::{CatalogItem, Finding, compare_catalogs};
pub use report::{Difference, DifferenceKind, TableCheck, VerifyReport};
pub use sql::{quote_ident, quote_literal};

/// The steps of a migration, in the order a plan runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Versions, extensions, sizes, privileges, an empty target.
    Preflight,
    /// The schema without indexes and constraints (pg_dump's pre-data section), then the
    /// catalog compared.
    Schema,
    /// The data, chunk by chunk, COPY to COPY.
    Copy,
    /// Indexes, keys and constraints (post-data), built after the data; the catalog compared.
    Indexes,
    /// Row counts and hashes per chunk on both sides; mismatches bisected to rows.
    Verify,
    /// Sequences set from the source, checked against the columns they feed.
    Sequences,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Preflight => "migrate.preflight",
            Phase::Schema => "migrate.schema",
            Phase::Copy => "migrate.copy",
            Phase::Indexes => "migrate.indexes",
            Phase::Verify => "migrate.verify",
            Phase::Sequences => "migrate.sequences",
        }
    }
}

/// Everything a migration step needs, decided when the plan was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationSpec {
    pub source: String,
    pub target: String,
    pub mode: MigrationMode,
    pub max_parallel: usize,
    pub chunk_rows: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Exclusion>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<DiffRule>,
}

impl MigrationSpec {
    pub fn excludes(&self, table: &str) -> bool {
        self.exclude
            .iter()
            .any(|x| qualified_table(&x.table) == table)
    }

    /// Columns the rules leave out of a table's comparison.
    pub fn skipped_columns(&self, table: &str) -> Vec<String> {
        self.skipped_by_rule(table).into_keys().collect()
    }

    /// The same columns, each with the rule that leaves it out.
    pub fn skipped_by_rule(&self, table: &str) -> std::collections::BTreeMap<String, String> {
        self.rules
            .iter()
            .filter(|r| qualified_table(&r.table) == table)
            .flat_map(|r| r.columns.iter().map(|c| (c.clone(), r.name.clone())))
            .collect()
    }

    /// The rule that lets a table's rows differ (one without columns), if any.
    pub fn rows_rule(&self, table: &str) -> Option<&DiffRule> {
        self.rules
            .iter()
            .find(|r| qualified_table(&r.table) == table && r.columns.is_empty())
    }

    /// Exclusions and rules that name a table the source does not have.
    pub fn unknown_tables(&self, tables: &[Table]) -> Vec<String> {
        let known = |t: &str| tables.iter().any(|x| x.id() == qualified_table(t));
        let mut out = Vec::new();
        for x in self.exclude.iter().filter(|x| !known(&x.table)) {
            out.push(format!(
                "exclusion of `{}`: the source has no such table",
                x.table
            ));
        }
        for r in self.rules.iter().filter(|r| !known(&r.table)) {
            out.push(format!(
                "rule `{}` names table `{}`, which the source does not have",
                r.name, r.table
            ));
        }
        for r in &self.rules {
            if let Some(t) = tables.iter().find(|x| x.id() == qualified_table(&r.table)) {
                for c in r
                    .columns
                    .iter()
                    .filter(|c| !t.columns.iter().any(|k| &k.name == *c))
                {
                    out.push(format!(
                        "rule `{}` names column `{c}`, which table `{}` does not have",
                        r.name, r.table
                    ));
                }
            }
        }
        out
    }
}

/// A column of a source table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// `format_type` of the column (`bigint`, `character varying(20)`, `numeric(12,2)`...).
    pub type_name: String,
    /// Built-in type (and element type): its binary COPY form is the same on every server.
    pub binary: bool,
    /// The type's OID (what `record_send` writes before each value).
    #[serde(default)]
    pub oid: u32,
    /// Compared with a collation (text-like): key ranges use `COLLATE "C"` so both servers
    /// agree on what a range holds whatever their locales.
    pub collatable: bool,
}

/// A source table as the copy and the verification see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
    /// The primary key's columns, in key order (empty: no primary key).
    pub key: Vec<String>,
    /// The planner's estimate (`reltuples`), for chunking only.
    pub rows_estimate: i64,
    /// Heap pages (`pg_relation_size / block_size`), for page chunks.
    pub pages: i64,
    pub bytes: i64,
}

impl Table {
    /// `schema.name`, as plans, rules and reports write it.
    pub fn id(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// The quoted name SQL uses.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// Whether the table's rows have an order both servers agree on (its key): its ranges are
    /// then copied and hashed in that order, as one sequence; otherwise as a multiset.
    pub fn in_key_order(&self) -> bool {
        !self.key.is_empty()
    }

    pub fn binary_copy(&self) -> bool {
        self.columns.iter().all(|c| c.binary)
    }

    /// What the copy's stream hasher needs: each column's type OID, or `None` for one left out
    /// of the comparison. None at all when the copy is not binary.
    pub fn stream_fields(&self, skip: &[String]) -> Option<Vec<Option<u32>>> {
        self.binary_copy().then(|| {
            self.columns
                .iter()
                .map(|c| (!skip.contains(&c.name)).then_some(c.oid))
                .collect()
        })
    }

    fn key_columns(&self) -> Vec<&Column> {
        self.key
            .iter()
            .filter_map(|k| self.columns.iter().find(|c| &c.name == k))
            .collect()
    }
}

/// Which rows of a table a chunk holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Range {
    /// The whole table.
    All,
    /// Primary-key values from `lower` (included) to `upper` (excluded); none is unbounded.
    /// Values are the key columns' text forms.
    Key {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lower: Option<Vec<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upper: Option<Vec<String>>,
    },
    /// Heap pages `from` (included) to `to` (excluded; none: to the end), for a table without
    /// a key. Used to copy only: pages differ between servers, so such a table is verified whole.
    Pages {
        from: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<i64>,
    },
}

/// One unit of copy and verification: a ledger record when it is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub table: String,
    pub n: u32,
    pub range: Range,
}

impl Chunk {
    /// `schema.table#n`: what the ledger and the report call it.
    pub fn id(&self) -> String {
        format!("{}#{}", self.table, self.n)
    }
}

/// Chunks from the key values that start each chunk (the first chunk starts unbounded).
pub fn key_chunks(table: &Table, starts: &[Vec<String>]) -> Vec<Chunk> {
    if starts.is_empty() {
        return vec![whole(table)];
    }
    let mut out = Vec::new();
    let mut lower: Option<Vec<String>> = None;
    for (n, s) in starts.iter().enumerate() {
        out.push(Chunk {
            table: table.id(),
            n: n as u32,
            range: Range::Key {
                lower: lower.take(),
                upper: Some(s.clone()),
            },
        });
        lower = Some(s.clone());
    }
    out.push(Chunk {
        table: table.id(),
        n: starts.len() as u32,
        range: Range::Key { lower, upper: None },
    });
    out
}

/// At most about this many bytes (estimated from the table's size) in one chunk of a keyed
/// table: verification aggregates a chunk's rows into one value inside each server, which
/// PostgreSQL caps at 1 GiB, and up to `max_parallel` chunks are hashed at once.
pub const CHUNK_BYTES: u64 = 64 << 20;

/// Rows per chunk of a keyed table: `chunk_rows`, fewer when the table's rows are so wide that
/// a chunk would exceed [`CHUNK_BYTES`] (by its average row size; TOASTed values count as
/// stored, compressed, which is why the bound sits 16 times below the cap).
pub fn rows_per_chunk(table: &Table, chunk_rows: u64) -> u64 {
    if table.rows_estimate <= 0 {
        return chunk_rows;
    }
    let avg = (table.bytes.max(0) as u64 / table.rows_estimate as u64).max(1);
    chunk_rows.min((CHUNK_BYTES / avg).max(1))
}

/// Page chunks of a table without a key, about `chunk_rows` rows each.
pub fn page_chunks(table: &Table, chunk_rows: u64) -> Vec<Chunk> {
    let rows = table.rows_estimate.max(0) as u64;
    if rows <= chunk_rows || table.pages <= 1 {
        return vec![whole(table)];
    }
    let per = ((table.pages as u64 * chunk_rows) / rows).max(1) as i64;
    let mut out = Vec::new();
    let mut from = 0;
    while from < table.pages {
        let last = from + per >= table.pages;
        out.push(Chunk {
            table: table.id(),
            n: out.len() as u32,
            range: Range::Pages {
                from,
                to: (!last).then_some(from + per),
            },
        });
        from += per;
    }
    out
}

/// Where a table's whole-table source hash gathered from its copy's chunks is kept (beside the
/// chunks' own, `schema.table#n`): a table without a key is verified whole.
pub fn whole_from_chunks(table: &str) -> String {
    format!("{table}#*")
}

pub fn whole(table: &Table) -> Chunk {
    Chunk {
        table: table.id(),
        n: 0,
        range: Range::All,
    }
}

#[cfg(test)]
mod tests;

/// One line for plans, checklists and the ledger.
pub fn describe(phase: Phase, spec: &MigrationSpec) -> String {
    let (s, t) = (&spec.source, &spec.target);
    match phase {
        Phase::Preflight => format!(
            "preflight `{s}` -> `{t}`: versions, extensions, sizes, privileges, target {}",
            match spec.mode {
                MigrationMode::Empty => "empty",
                MigrationMode::Replace => "replaced (confirmed)",
            }
        ),
        Phase::Schema => format!(
            "load `{s}`'s schema into `{t}` (tables, types, sequences, grants; no indexes yet) and compare the catalogs"
        ),
        Phase::Copy => format!(
            "copy every table `{s}` -> `{t}`, COPY to COPY, {} table(s) at once, chunks of {} rows, autovacuum off on `{t}`'s tables while they load{}",
            spec.max_parallel,
            spec.chunk_rows,
            if spec.exclude.is_empty() {
                String::new()
            } else {
                format!(
                    ", except {}",
                    spec.exclude
                        .iter()
                        .map(|x| x.table.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ),
        Phase::Indexes => {
            format!(
                "build `{t}`'s indexes, keys and constraints; set each table's autovacuum as `{s}` has it; compare the catalogs"
            )
        }
        Phase::Verify => format!(
            "verify every chunk on both sides: row count and SHA-256; differences named by key{}",
            if spec.rules.is_empty() {
                String::new()
            } else {
                format!(
                    ", allowed only by rule {}",
                    spec.rules
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ),
        Phase::Sequences => {
            format!("set `{t}`'s sequences from `{s}` and check each is past the column it feeds")
        }
    }
}

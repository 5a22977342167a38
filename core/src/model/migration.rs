//! Migration plans: move a PostgreSQL database's schema and data from one inventory database to
//! another (on-premise to a cloud, one cloud to another), verified row by row and resumable, and
//! the app's buckets (or prefixes of them) from one cloud's object storage to another's,
//! verified object by object against ferry's own manifest.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Hook;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MigrationKind {
    Migration,
}

/// What the target may hold before the migration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MigrationMode {
    /// The target has no tables, sequences or views of its own (the default): anything there is
    /// a preflight finding.
    #[default]
    Empty,
    /// The source's objects replace those of the same name on the target (dropped first). The
    /// plan gets a manual step that `ferry apply --confirm STEP` must confirm.
    Replace,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationPlan {
    /// Format version of this file; must be 1.
    pub version: u32,
    pub kind: MigrationKind,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Inventory database to copy from (reachable by SQL: `postgres:`); with `target`, or
    /// neither for a plan that moves only buckets.
    #[serde(default)]
    pub source: Option<String>,
    /// Inventory database to copy into.
    #[serde(default)]
    pub target: Option<String>,
    /// Buckets (or prefixes) copied between clouds' object storage, each verified against
    /// ferry's manifest of sizes and SHA-256 digests.
    #[serde(default)]
    pub buckets: Vec<BucketCopy>,
    #[serde(default)]
    pub mode: MigrationMode,
    /// Tables copied (and chunks verified) at once; each is a connection to each database.
    #[serde(default = "default_parallel")]
    pub max_parallel: usize,
    /// Rows per chunk: a table larger than this is copied and verified in ranges of its
    /// primary key (of pages for a table without one), each a ledger record.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: u64,
    /// Tables not copied at all (a queue drained before the move, a cache), each with why.
    #[serde(default)]
    pub exclude: Vec<Exclusion>,
    /// Differences the verification accepts, each named: columns left out of a table's
    /// comparison, or a table whose rows may differ.
    #[serde(default)]
    pub rules: Vec<DiffRule>,
    /// Steps before any data moves (stop the app's writes, wait until its queue drains): the
    /// write fence.
    #[serde(default)]
    pub before: Vec<Hook>,
    /// Steps after the data is verified and the sequences set (point the app at the new
    /// database, resume, a drain gate before the source may be retired).
    #[serde(default)]
    pub after: Vec<Hook>,
}

/// One bucket (or prefix) copy: every object under `prefix` of `source` goes to the same key
/// under `target_prefix` of `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BucketCopy {
    /// Names the copy's steps (`bucket-copy-NAME`, `bucket-verify-NAME`) and its manifest.
    pub name: String,
    /// Inventory bucket copied from (its cloud has an `aws` section).
    pub source: String,
    /// Only keys starting with this are copied (the whole bucket without it).
    #[serde(default)]
    pub prefix: String,
    /// Inventory bucket copied into.
    pub target: String,
    /// Put in place of `prefix` in each key on the target (the same prefix without it).
    #[serde(default)]
    pub target_prefix: Option<String>,
    /// Objects under the target prefix that the source does not have are deleted (after a
    /// confirmation step); without it they are differences the verification names.
    #[serde(default)]
    pub delete_extra: bool,
    /// Objects copied (or verified) at once.
    #[serde(default = "default_bucket_parallel")]
    pub max_parallel: usize,
    /// Part size of multipart uploads in MiB (at least 5; larger objects get larger parts so
    /// that none has more than 10,000). Objects up to one part are sent in one request.
    #[serde(default = "default_part_mib")]
    pub part_size_mib: u64,
}

fn default_bucket_parallel() -> usize {
    8
}

fn default_part_mib() -> u64 {
    8
}

fn default_parallel() -> usize {
    4
}

fn default_chunk_rows() -> u64 {
    250_000
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    /// `schema.table`, or `table` in `public`.
    pub table: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiffRule {
    /// Names the rule in the report and the DIBR guide.
    pub name: String,
    /// `schema.table`, or `table` in `public`.
    pub table: String,
    /// Columns left out of the comparison (a timestamp the target's trigger rewrites); without
    /// them, rows of the table may differ and each difference found is matched to this rule.
    #[serde(default)]
    pub columns: Vec<String>,
    pub reason: String,
}

/// `schema.table` for a name written with or without its schema.
pub fn qualified_table(name: &str) -> String {
    if name.contains('.') {
        name.to_owned()
    } else {
        format!("public.{name}")
    }
}

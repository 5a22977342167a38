//! A migration plan's steps, run by the executor: each phase of `pgmigrate` with what it reports
//! recorded in the ledger — findings, the copy's chunks (planned once, then one entry per chunk,
//! durable before the next is counted), the verification report.

use serde_json::{Value, json};

use super::{Shared, Step};
use crate::ledger::{Event, Outcome};
use crate::migrate::{Chunk, Finding, MigrationSpec, Phase};
use crate::pgmigrate::copy::ChunkCopied;
use crate::pgmigrate::{CopyLog, Migration, copy, preflight, schema, sequences, verify};

impl Shared {
    /// Runs one phase; what the ledger records of its success, or why it failed.
    pub(super) async fn run_migrate(
        &self,
        step: &Step,
        phase: Phase,
        spec: &MigrationSpec,
    ) -> Result<Value, String> {
        let m = Migration {
            probes: &self.exec.probes,
            spec,
            plan_id: &self.exec.plan.id,
        };
        match phase {
            Phase::Preflight => {
                let (findings, facts) = preflight::run(&m).await?;
                judged("preflight", findings, facts)
            }
            Phase::Schema | Phase::Indexes => {
                let (findings, facts) = schema::run(&m, phase).await?;
                judged("the catalog comparison", findings, facts)
            }
            Phase::Copy => {
                let prior = self.prior_chunks.get(&step.id).cloned().unwrap_or_default();
                copy::run(&m, &prior, &StepLog { shared: self, step }).await
            }
            Phase::Verify => {
                let chunks = self.migration_chunks.lock().expect("chunks").clone();
                let hashes = self.migration_hashes.lock().expect("hashes").clone();
                let report = verify::run(&m, chunks.as_deref(), &hashes).await?;
                let passed = report.passed();
                let e = self
                    .entry(Event::MigrationVerified, step)
                    .outcome(if passed { Outcome::Ok } else { Outcome::Failed })
                    .message(report.verdict())
                    .detail(json!({ "report": report }));
                self.record(e).await.map_err(|e| e.to_string())?;
                if passed {
                    Ok(json!({ "tables": report.tables.len(), "rows": report.rows() }))
                } else {
                    Err(report.verdict())
                }
            }
            Phase::Sequences => sequences::run(&m).await,
        }
    }
}

/// Success when nothing was found; otherwise every finding, one per line.
fn judged(what: &str, findings: Vec<Finding>, facts: Value) -> Result<Value, String> {
    if findings.is_empty() {
        return Ok(facts);
    }
    Err(crate::migrate::catalog::findings_text(what, &findings))
}

/// The step's one-line result.
pub(super) fn summary(phase: Phase, d: &Value) -> String {
    match phase {
        Phase::Preflight => format!(
            "no finding; source {}, target {}",
            crate::gate::text(&d["source"]["server"]),
            crate::gate::text(&d["target"]["server"])
        ),
        Phase::Schema | Phase::Indexes => format!(
            "catalogs match{}",
            if d["loaded"] == json!(false) {
                " (already loaded)"
            } else {
                ""
            }
        ),
        Phase::Copy => format!(
            "{} chunk(s): {} copied now ({} rows, {} bytes), {} before",
            d["chunks"], d["copied_now"], d["rows_now"], d["bytes_now"], d["copied_before"]
        ),
        Phase::Verify => format!(
            "{} table(s), {} row(s): every chunk matches",
            d["tables"], d["rows"]
        ),
        Phase::Sequences => format!(
            "{} sequence(s) set, each past its column",
            d["sequences"].as_array().map_or(0, Vec::len)
        ),
    }
}

/// The copy's ledger and progress, for one step.
struct StepLog<'a> {
    shared: &'a Shared,
    step: &'a Step,
}

#[async_trait::async_trait]
impl CopyLog for StepLog<'_> {
    async fn planned(&self, chunks: &[Chunk]) -> Result<(), String> {
        *self.shared.migration_chunks.lock().expect("chunks") = Some(chunks.to_vec());
        let e = self
            .shared
            .entry(Event::ChunksPlanned, self.step)
            .message(format!("{} chunk(s)", chunks.len()))
            .detail(json!({ "chunks": chunks }));
        self.shared.record(e).await.map_err(|e| e.to_string())
    }

    async fn copied(&self, c: &ChunkCopied) -> Result<(), String> {
        if let Some(h) = &c.source_sha256 {
            self.shared
                .migration_hashes
                .lock()
                .expect("hashes")
                .insert(c.chunk.clone(), (c.rows as i64, h.clone()));
        }
        let e = self
            .shared
            .entry(Event::ChunkCopied, self.step)
            .duration_ms(c.ms)
            .message(format!("{}: {} rows, {} bytes", c.chunk, c.rows, c.bytes))
            .detail(serde_json::to_value(c).expect("a chunk record serializes"));
        self.shared.record(e).await.map_err(|e| e.to_string())
    }

    fn table_hashed(&self, table: &str, rows: i64, sha256: &str) {
        self.shared.migration_hashes.lock().expect("hashes").insert(
            crate::migrate::whole_from_chunks(table),
            (rows, sha256.to_owned()),
        );
    }

    fn progress(&self, table: &str, rows: u64, bytes: u64) {
        self.shared
            .exec
            .progress
            .transfer(table, "rows", rows, bytes);
    }

    fn cancelled(&self) -> bool {
        *self.shared.exec.cancel.borrow()
    }

    fn fence(&self) -> Result<(), String> {
        match &self.shared.exec.fence {
            Some(f) => f.check().map_err(|e| format!("not committing chunk: {e}")),
            None => Ok(()),
        }
    }
}

//! A migration's evidence, from its plan and the ledger alone: the steps and when they ended,
//! the write fence, the preflight's measurements, rows, bytes and chunks copied per table, the
//! verification report and the sequences. `ferry migrate report` prints it; the DIBR guide's
//! migration section is made from it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use super::bucket::{BucketReport, BucketSpec};
use super::{MigrationSpec, Phase, VerifyReport};
use crate::ledger::{Entry, Event};
use crate::ops::Op;
use crate::plan::SavedPlan;

/// Everything the ledger holds about a migration plan's runs.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationReport {
    pub plan_id: String,
    pub name: String,
    pub source: String,
    pub target: String,
    /// Each step: id, what it is, its last outcome and when.
    pub steps: Vec<StepState>,
    /// The write fence: the `before` steps (quiesce, drain gates) and when each ended.
    pub fence: Vec<StepState>,
    pub preflight: Option<Value>,
    /// Per table: rows, bytes, chunks and chunk time copied (all runs).
    pub copy: Vec<TableCopy>,
    /// Chunks adopted after a run stopped between commit and record.
    pub recovered_chunks: u64,
    pub verification: Option<VerifyReport>,
    /// When the verification was recorded, and by which command.
    pub verified_at: Option<String>,
    pub sequences: Option<Value>,
    /// Each bucket copy: objects and bytes in its manifest, the root hash, its verification.
    pub buckets: Vec<BucketEvidence>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BucketEvidence {
    pub copy: String,
    pub source: String,
    pub target: String,
    /// Objects and bytes copied by all runs (an object copied twice counts twice).
    pub copied_objects: u64,
    pub copied_bytes: u64,
    pub deleted: u64,
    /// Retries after throttling or a 5xx, all runs.
    pub retries: u64,
    /// The last manifest written: root hash, objects, bytes.
    pub manifest: Option<super::bucket::ManifestWritten>,
    pub verification: Option<BucketReport>,
    pub verified_at: Option<String>,
}

impl BucketEvidence {
    fn of(spec: &BucketSpec) -> Self {
        Self {
            copy: spec.name.clone(),
            source: spec.source.url(),
            target: spec.target.url(),
            copied_objects: 0,
            copied_bytes: 0,
            deleted: 0,
            retries: 0,
            manifest: None,
            verification: None,
            verified_at: None,
        }
    }

    fn add(&mut self, e: &Entry, d: &Value) {
        match e.event {
            Event::ObjectCopied => {
                self.copied_objects += 1;
                self.copied_bytes += d["size"].as_u64().unwrap_or(0);
                self.retries += d["retries"].as_u64().unwrap_or(0);
            }
            Event::ObjectsDeleted => {
                self.deleted += d["keys"].as_array().map_or(0, |k| k.len() as u64);
            }
            Event::ManifestWritten => self.manifest = serde_json::from_value(d.clone()).ok(),
            Event::BucketVerified => {
                self.verification = serde_json::from_value(d["report"].clone()).ok();
                self.verified_at = Some(e.time.clone());
            }
            _ => {}
        }
    }

    /// One line: what the manifest holds and how the verification ended.
    pub fn verdict(&self) -> String {
        match &self.verification {
            Some(v) => v.verdict(),
            None => "not verified yet".into(),
        }
    }
}

/// The bucket copies a saved plan carries out.
pub fn bucket_specs(plan: &SavedPlan) -> Vec<BucketSpec> {
    plan.body
        .steps
        .iter()
        .filter_map(|s| match s.op.as_ref().map(|o| &o.op) {
            Some(Op::Bucket {
                phase: super::bucket::BucketPhase::Copy,
                spec,
            }) => Some(spec.clone()),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct StepState {
    pub step: String,
    pub title: String,
    pub outcome: String,
    pub time: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TableCopy {
    pub table: String,
    pub rows: u64,
    pub bytes: u64,
    pub chunks: u64,
    pub chunk_ms: u64,
}

/// The report from a plan and its entries (pure: the DIBR guide uses it too).
pub fn report_of(
    plan: &SavedPlan,
    spec: Option<&MigrationSpec>,
    entries: &[Entry],
) -> MigrationReport {
    let mut r = MigrationReport {
        plan_id: plan.id.clone(),
        name: plan.body.name.clone(),
        source: spec.map(|s| s.source.clone()).unwrap_or_default(),
        target: spec.map(|s| s.target.clone()).unwrap_or_default(),
        steps: Vec::new(),
        fence: Vec::new(),
        preflight: None,
        copy: Vec::new(),
        recovered_chunks: 0,
        verification: None,
        verified_at: None,
        sequences: None,
        buckets: bucket_specs(plan).iter().map(BucketEvidence::of).collect(),
    };
    let mut copy: BTreeMap<String, TableCopy> = BTreeMap::new();
    let phase_of = |step: &str| match plan.step(step).and_then(|s| s.op.as_ref()).map(|o| &o.op) {
        Some(Op::Migrate { phase, .. }) => Some(*phase),
        _ => None,
    };
    for e in entries {
        let step = e.step.as_deref().unwrap_or_default();
        if let Some(d) = &e.detail
            && let Some(b) = r.buckets.iter_mut().find(|b| d["copy"] == json!(b.copy))
        {
            b.add(e, d);
        }
        match e.event {
            Event::ChunkCopied => {
                if let Some(d) = &e.detail {
                    let t = copy
                        .entry(d["table"].as_str().unwrap_or_default().to_owned())
                        .or_default();
                    t.rows += d["rows"].as_u64().unwrap_or(0);
                    t.bytes += d["bytes"].as_u64().unwrap_or(0);
                    t.chunks += 1;
                    t.chunk_ms += d["ms"].as_u64().unwrap_or(0);
                    r.recovered_chunks += u64::from(d["recovered"] == json!(true));
                }
            }
            Event::MigrationVerified => {
                r.verification = e
                    .detail
                    .as_ref()
                    .and_then(|d| serde_json::from_value(d["report"].clone()).ok());
                r.verified_at = Some(e.time.clone());
            }
            Event::StepSucceeded => match phase_of(step) {
                Some(Phase::Preflight) => r.preflight = e.detail.clone(),
                Some(Phase::Sequences) => r.sequences = e.detail.clone(),
                _ => {}
            },
            _ => {}
        }
    }
    r.copy = copy
        .into_iter()
        .map(|(table, mut t)| {
            t.table = table;
            t
        })
        .collect();
    // The fence: hooks before the first step that moves data.
    let first_schema = plan
        .body
        .steps
        .iter()
        .position(|s| {
            phase_of(&s.id) == Some(Phase::Schema)
                || matches!(s.op.as_ref().map(|o| &o.op), Some(Op::Bucket { .. }))
        })
        .unwrap_or(0);
    for (i, s) in plan.body.steps.iter().enumerate() {
        let last = entries.iter().rev().find(|e| {
            e.step.as_deref() == Some(&s.id)
                && matches!(
                    e.event,
                    Event::StepSucceeded | Event::StepFailed | Event::StepStarted
                )
        });
        let state = StepState {
            step: s.id.clone(),
            title: s.op.as_ref().map_or(s.to.clone(), |o| o.title.clone()),
            outcome: last.map_or("not started".into(), |e| match e.event {
                Event::StepSucceeded => "succeeded".into(),
                Event::StepFailed => "failed".into(),
                _ => "started".into(),
            }),
            time: last.map(|e| e.time.clone()),
        };
        let hook = phase_of(&s.id).is_none()
            && !matches!(
                s.op.as_ref().map(|o| &o.op),
                Some(Op::Manual { .. } | Op::Bucket { .. })
            );
        if hook && i < first_schema {
            r.fence.push(state.clone());
        }
        r.steps.push(state);
    }
    r
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn short(h: &str) -> &str {
    &h[..h.len().min(16)]
}

/// Per table: rows and rolled-up SHA-256 on both sides, chunks, and every difference with its
/// rule (Markdown).
pub fn tables_markdown(v: &VerifyReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n| table | source rows | target rows | chunks | source SHA-256 | target SHA-256 | verify ms |\n|---|---|---|---|---|---|---|"
    );
    for t in &v.tables {
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | `{}` | `{}` | {} |",
            cell(&t.table),
            t.source_rows,
            t.target_rows,
            t.chunks,
            short(&t.source_sha256),
            short(&t.target_sha256),
            t.duration_ms
        );
    }
    let skipped: Vec<String> = v
        .tables
        .iter()
        .flat_map(|t| {
            t.skipped_columns
                .iter()
                .map(move |(c, r)| format!("- `{}.{}` not compared: rule `{}`", t.table, c, r))
        })
        .collect();
    let excluded: Vec<String> = v
        .excluded
        .iter()
        .map(|x| format!("- `{}` not copied: {}", x.table, x.reason))
        .collect();
    for line in skipped.iter().chain(&excluded) {
        let _ = writeln!(s, "{line}");
    }
    let diffs: Vec<_> = v.tables.iter().flat_map(|t| &t.differences).collect();
    if !diffs.is_empty() {
        let _ = writeln!(
            s,
            "\n| table | key | difference | source row | target row | allowed by |\n|---|---|---|---|---|---|"
        );
        for d in diffs {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} | {} | {} |",
                cell(&d.table),
                cell(&d.key),
                d.kind.describe(),
                cell(d.source_row.as_deref().unwrap_or("-")),
                cell(d.target_row.as_deref().unwrap_or("-")),
                d.rule
                    .as_deref()
                    .map_or("**no rule: fails**".into(), |r| format!("rule `{r}`"))
            );
        }
    }
    for t in v.tables.iter().filter(|t| t.differences_not_listed > 0) {
        let _ = writeln!(
            s,
            "- `{}`: {} more difference(s) not listed",
            t.table, t.differences_not_listed
        );
    }
    s
}

/// Per bucket copy: objects and bytes copied, the manifest's root, the verification and every
/// problem it named (Markdown).
pub fn buckets_markdown(buckets: &[BucketEvidence]) -> String {
    let mut s = String::new();
    if buckets.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "\nBuckets:\n\n| copy | source | target | objects | bytes | manifest root | retries | verification |\n|---|---|---|---|---|---|---|---|"
    );
    for b in buckets {
        let (objects, bytes, root) =
            b.manifest
                .as_ref()
                .map_or(("-".to_owned(), "-".to_owned(), "-".to_owned()), |m| {
                    (
                        m.objects.to_string(),
                        m.bytes.to_string(),
                        format!("`{}`", m.root),
                    )
                });
        let verdict = match &b.verification {
            Some(v) if v.passed() => {
                format!("passed ({})", b.verified_at.as_deref().unwrap_or("-"))
            }
            Some(v) => format!("**{} problem(s)**", v.problems.len()),
            None => "not verified yet".into(),
        };
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {objects} | {bytes} | {root} | {} | {verdict} |",
            b.copy,
            cell(&b.source),
            cell(&b.target),
            b.retries
        );
    }
    for b in buckets {
        for p in b.verification.iter().flat_map(|v| &v.problems) {
            let _ = writeln!(s, "- `{}`: {}", b.copy, cell(&p.describe()));
        }
    }
    s
}

/// The whole report (Markdown): what `ferry migrate report` prints and the DIBR guide shows.
pub fn markdown(r: &MigrationReport) -> String {
    let mut s = String::new();
    let moves = if r.source.is_empty() {
        format!("{} bucket copy(ies)", r.buckets.len())
    } else {
        format!("database `{}` -> `{}`", r.source, r.target)
    };
    let _ = writeln!(
        s,
        "Migration `{}` (plan {}): {moves}\n",
        cell(&r.name),
        r.plan_id
    );
    let _ = writeln!(s, "| step | what | outcome | at |\n|---|---|---|---|");
    for st in &r.steps {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            st.step,
            cell(&st.title),
            st.outcome,
            st.time.as_deref().unwrap_or("-")
        );
    }
    let fence = if r.fence.is_empty() {
        "none in the plan: the source kept taking writes unless they were stopped outside ferry"
            .to_owned()
    } else {
        r.fence
            .iter()
            .map(|f| {
                format!(
                    "`{}` {} at {}",
                    f.title,
                    f.outcome,
                    f.time.as_deref().unwrap_or("-")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let _ = writeln!(s, "\nWrite fence: {fence}.");
    if let Some(p) = &r.preflight {
        let _ = writeln!(
            s,
            "Preflight: source {} ({} bytes), target {} ({} bytes), {} table(s).",
            crate::gate::text(&p["source"]["server"]),
            p["source"]["bytes"],
            crate::gate::text(&p["target"]["server"]),
            p["target"]["bytes"],
            p["tables"]
        );
    }
    if !r.copy.is_empty() {
        let _ = writeln!(
            s,
            "\nCopied ({} chunk(s) adopted after a stop):\n\n| table | rows | bytes | chunks | chunk time ms |\n|---|---|---|---|---|",
            r.recovered_chunks
        );
        for t in &r.copy {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} | {} |",
                cell(&t.table),
                t.rows,
                t.bytes,
                t.chunks,
                t.chunk_ms
            );
        }
    }
    s.push_str(&buckets_markdown(&r.buckets));
    match &r.verification {
        _ if r.source.is_empty() => {}
        Some(v) => {
            let _ = writeln!(
                s,
                "\nVerification ({}): {}",
                r.verified_at.as_deref().unwrap_or("-"),
                v.verdict()
            );
            s.push_str(&tables_markdown(v));
        }
        None => {
            let _ = writeln!(s, "\nVerification: not run yet.");
        }
    }
    if let Some(seq) = r.sequences.as_ref().and_then(|v| v["sequences"].as_array()) {
        let _ = writeln!(
            s,
            "\nSequences:\n\n| sequence | source last value | target next | column | column max |\n|---|---|---|---|---|"
        );
        for q in seq {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} | {} |",
                cell(&crate::gate::text(&q["sequence"])),
                crate::gate::text(&q["source_last_value"]),
                crate::gate::text(&q["target_next"]),
                cell(&crate::gate::text(&q["column"])),
                crate::gate::text(&q["column_max"])
            );
        }
    }
    s
}

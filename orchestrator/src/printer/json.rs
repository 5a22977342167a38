//! The JSON printer: one versioned document per result (`format` names its shape, `version`
//! its revision), JSON Lines for `ledger show`. Shapes are stable: fields are added, never
//! renamed or removed, without a new version.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use super::{HostKey, LedgerHead, Printer};
use crate::engine::Error;
use crate::engine::apply::ApplyResult;
use crate::engine::approve::Approved;
use crate::engine::audit::Verification;
use crate::engine::dibr::Written;
use crate::executor::{ApplyOutcome, StepStatus};
use crate::kubernetes::release::History;
use crate::ledger::{Entry, Repair, Tamper};
use crate::load::{Loaded, Problem};
use crate::model::{Database, Runbook};
use crate::ops::SnapshotInfo;
use crate::plan::SavedPlan;
use crate::window::WaveWindows;

/// Version of every JSON document ferry prints; bumped on incompatible change.
pub const JSON_VERSION: u32 = 1;

pub struct Json {
    out: Box<dyn Write>,
}

impl Json {
    pub fn new(out: Box<dyn Write>) -> Self {
        Self { out }
    }

    fn doc(&mut self, doc: &impl Serialize) {
        let text = serde_json::to_string(doc).expect("reports serialize");
        let _ = writeln!(self.out, "{text}");
    }
}

#[derive(Debug, Serialize)]
struct ErrorReport<'a> {
    format: &'static str,
    version: u32,
    exit_code: u8,
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    problems: Option<&'a [Problem]>,
}

#[derive(Debug, Serialize)]
struct ValidateReport<'a> {
    format: &'static str,
    version: u32,
    valid: bool,
    problems: &'a [Problem],
}

#[derive(Debug, Serialize)]
struct PlanStepReport<'a> {
    id: &'a str,
    wave: &'a str,
    target: &'a str,
    from: Option<&'a str>,
    to: &'a str,
    depends_on: &'a [String],
    /// Kubernetes steps: the objects added, changed (with fields) and removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    objects: Option<&'a [crate::kubernetes::diff::ObjectChange]>,
}

#[derive(Debug, Serialize)]
struct PlanReport<'a> {
    format: &'static str,
    version: u32,
    plan_id: &'a str,
    plan_file: String,
    name: &'a str,
    changes: usize,
    unchanged: usize,
    steps: Vec<PlanStepReport<'a>>,
    /// Each wave's maintenance windows as of when the plan was made (release plans).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    windows: &'a [WaveWindows],
}

#[derive(Debug, Serialize)]
struct ApplyStepReport<'a> {
    id: &'a str,
    target: &'a str,
    from: Option<&'a str>,
    to: &'a str,
    status: StepStatus,
}

#[derive(Debug, Serialize)]
struct ApplyReport<'a> {
    format: &'static str,
    version: u32,
    plan_id: &'a str,
    exit_code: u8,
    #[serde(flatten)]
    outcome: &'a ApplyOutcome,
    steps: Vec<ApplyStepReport<'a>>,
    ledger: &'a str,
    ledger_head: Option<&'a str>,
}

#[derive(Serialize)]
struct VerifyReport<'a> {
    format: &'static str,
    version: u32,
    ledger: &'a str,
    ok: bool,
    entries: u64,
    head: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tamper: Option<&'a Tamper>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

impl Printer for Json {
    fn validated(&mut self, _inventory: &Path, _plans: usize) {
        self.doc(&ValidateReport {
            format: "ferry.validate",
            version: JSON_VERSION,
            valid: true,
            problems: &[],
        });
    }

    fn plan(&mut self, saved: &SavedPlan, path: &Path, windows: &[WaveWindows]) {
        let steps = saved
            .body
            .steps
            .iter()
            .map(|s| PlanStepReport {
                id: &s.id,
                wave: &saved.body.waves[s.wave].name,
                target: &s.target.id,
                from: s.from.as_deref(),
                to: &s.to,
                depends_on: &s.depends_on,
                objects: saved.body.objects.get(&s.id).map(Vec::as_slice),
            })
            .collect();
        self.doc(&PlanReport {
            format: "ferry.plan-report",
            version: JSON_VERSION,
            plan_id: &saved.id,
            plan_file: path.display().to_string(),
            name: &saved.body.name,
            changes: saved.body.steps.len(),
            unchanged: saved.body.unchanged.len(),
            steps,
            windows,
        });
    }

    fn preview(&mut self, _plan: &SavedPlan) {}

    fn applied(&mut self, r: &ApplyResult, _path: &Path, ledger: &LedgerHead) {
        let steps = r
            .plan
            .body
            .steps
            .iter()
            .map(|s| ApplyStepReport {
                id: &s.id,
                target: &s.target.id,
                from: s.from.as_deref(),
                to: &s.to,
                status: r.status.get(&s.id).copied().unwrap_or(StepStatus::Pending),
            })
            .collect();
        self.doc(&ApplyReport {
            format: "ferry.apply-report",
            version: JSON_VERSION,
            plan_id: &r.plan.id,
            exit_code: r.code,
            outcome: &r.outcome,
            steps,
            ledger: &ledger.location,
            ledger_head: ledger.head.as_deref(),
        });
    }

    fn history(&mut self, app: &str, site: &str, targets: &[(String, History)]) {
        let targets: Vec<serde_json::Value> = targets
            .iter()
            .map(|(target, h)| {
                json!({
                    "target": target,
                    "revisions": h.records.iter().map(|r| json!({
                        "revision": r.revision,
                        "status": r.status,
                        "version": r.version,
                        "plan_id": r.plan_id,
                        "rollback_of": r.rollback_of,
                        "reason": r.reason,
                        "objects": r.ids,
                        "objects_sha256": r.objects_sha256,
                        "created_at": r.created_at,
                        "updated_at": r.updated_at,
                        "record": format!("{}/{}", r.namespace, r.secret_name()),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        self.doc(&json!({
            "format": "ferry.history",
            "version": JSON_VERSION,
            "app": app,
            "site": site,
            "targets": targets,
        }));
    }

    fn snapshots(&mut self, db: &Database, list: &[SnapshotInfo]) {
        self.doc(&json!({ "format": "ferry.snapshots", "version": JSON_VERSION, "database": db.id, "snapshots": list }));
    }

    fn snapshot_created(&mut self, _database: &str, detail: &serde_json::Value) {
        self.doc(
            &json!({ "format": "ferry.snapshot", "version": JSON_VERSION, "snapshot": detail }),
        );
    }

    #[cfg(feature = "aws")]
    fn snapshots_pruned(&mut self, database: &str, p: &crate::drivers::rds::Pruned) {
        self.doc(&json!({ "format": "ferry.snapshot_prune", "version": JSON_VERSION, "database": database, "prune": p }));
    }

    fn state_initialised(&mut self, store: &str, applied: &[String], grant: Option<&str>) {
        self.doc(&json!({ "format": "ferry.state_init", "version": JSON_VERSION, "store": store, "applied": applied, "granted_to": grant }));
    }

    fn state_migrated(&mut self, m: &crate::engine::state_store::Migrated) {
        self.doc(
            &json!({ "format": "ferry.state_migrate", "version": JSON_VERSION, "migrated": m }),
        );
    }

    fn lock_status(&mut self, ledger: &str, s: Option<&crate::state::LockStatus>) {
        self.doc(&json!({ "format": "ferry.lock_status", "version": JSON_VERSION, "ledger": ledger, "held": s.is_some(), "holder": s.map(|s| &s.holder), "expired": s.map(|s| s.expired) }));
    }

    fn lock_broken(
        &mut self,
        ledger: &str,
        broken: Option<&(crate::lock::LockHolder, crate::ledger::Entry)>,
    ) {
        self.doc(&json!({ "format": "ferry.lock_break", "version": JSON_VERSION, "ledger": ledger, "broken": broken.map(|(h, e)| json!({ "previous": h, "seq": e.seq, "hash": e.hash })) }));
    }

    fn runbooks(&mut self, list: &[Loaded<Runbook>]) {
        let rows: Vec<_> = list
            .iter()
            .map(|rb| {
                json!({
                    "name": rb.value.name,
                    "file": rb.source.path.display().to_string(),
                    "description": rb.value.description,
                    "steps": rb.value.steps.len(),
                })
            })
            .collect();
        self.doc(&json!({ "format": "ferry.runbooks", "version": JSON_VERSION, "runbooks": rows }));
    }

    fn runbook(&mut self, rb: &Loaded<Runbook>) {
        self.doc(
            &json!({ "format": "ferry.runbook", "version": JSON_VERSION, "runbook": rb.value }),
        );
    }

    fn runbook_params(&mut self, _params: &BTreeMap<String, serde_json::Value>) {}

    fn verified(&mut self, ledger: &str, v: &Verification) {
        self.doc(&VerifyReport {
            format: "ferry.ledger-verify",
            version: JSON_VERSION,
            ledger,
            ok: v.ok(),
            entries: v.report.entries,
            head: v.report.head.as_deref(),
            tamper: v.report.tamper.as_ref(),
            message: v.message(),
        });
    }

    fn entry(&mut self, e: &Entry) {
        self.doc(e);
    }

    fn entries_end(&mut self, _count: usize) {
        let _ = self.out.flush();
    }

    fn repaired(&mut self, ledger: &str, r: &Repair) {
        self.doc(&json!({
            "format": "ferry.ledger-repair",
            "version": JSON_VERSION,
            "ledger": ledger,
            "result": r,
        }));
    }

    fn approved(&mut self, a: &Approved, gate: &str, person: &str, _plan_path: &Path) {
        self.doc(&json!({
            "format": "ferry.approval-recorded",
            "version": 1,
            "plan_id": a.plan.id,
            "gate": gate,
            "approver": person,
            "role": a.role,
            "entry": a.entry.seq,
            "hash": a.entry.hash,
        }));
    }

    fn key_made(&mut self, public_key: &str, path: &Path) {
        self.doc(&json!({ "format": "ferry.keygen", "version": 1, "public_key": public_key, "path": path.display().to_string() }));
    }

    fn dibr(&mut self, w: &Written) {
        self.doc(&json!({
            "format": "ferry.dibr",
            "version": 1,
            "plan_id": w.plan.id,
            "status": w.status,
            "markdown": w.markdown.display().to_string(),
            "html": w.html.display().to_string(),
            "steps": w.steps,
            "pdf": w.pdfs,
            "anchor": w.anchor.as_ref().map(|a| json!({ "seq": a.seq, "hash": a.hash, "detail": a.detail })),
        }));
    }

    fn migration_verified(&mut self, plan_id: &str, v: &crate::engine::migrate::Verification) {
        self.doc(&json!({
            "format": "ferry.migration_verification",
            "version": JSON_VERSION,
            "plan_id": plan_id,
            "passed": v.passed(),
            "unexplained": v.database.as_ref().map_or(0, |r| r.unexplained()),
            "report": v.database,
            "buckets": v.buckets,
        }));
    }

    fn bucket_manifest(&mut self, copy: &str, m: &crate::migrate::bucket::Manifest) {
        self.doc(&json!({
            "format": "ferry.bucket_manifest",
            "version": JSON_VERSION,
            "copy": copy,
            "root": m.root(),
            "objects": m.objects.len(),
            "bytes": m.bytes(),
            "manifest": m.objects,
        }));
    }

    fn migration_report(&mut self, r: &crate::engine::migrate::MigrationReport) {
        self.doc(&json!({
            "format": "ferry.migration_report",
            "version": JSON_VERSION,
            "report": r,
        }));
    }

    fn host_key(&mut self, _k: &HostKey<'_>) {}

    fn host_trusted(&mut self, k: &HostKey<'_>, already: bool) {
        self.doc(&json!({
            "format": "ferry.host-trusted",
            "version": JSON_VERSION,
            "endpoint": k.endpoint,
            "host": k.name,
            "algorithm": k.algorithm,
            "fingerprint": k.fingerprint,
            "known_hosts": k.known_hosts,
            "already_trusted": already,
        }));
    }

    fn man_pages(&mut self, dir: &Path) {
        self.doc(&json!({ "format": "ferry.man", "version": JSON_VERSION, "dir": dir.display().to_string() }));
    }

    fn error(&mut self, e: &Error, code: u8) {
        let head = match e {
            Error::Invalid(d) => format!("{} problem(s) found", d.problems.len()),
            other => other.to_string(),
        };
        let problems = match e {
            Error::Invalid(d) => Some(d.problems.as_slice()),
            _ => None,
        };
        self.doc(&ErrorReport {
            format: "ferry.error",
            version: JSON_VERSION,
            exit_code: code,
            error: super::with_causes(e, head),
            problems,
        });
    }
}

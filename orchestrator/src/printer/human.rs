//! The text printer: results for a person on stdout; errors and warnings on stderr. With
//! `markdown`, a plan is a Markdown summary (for a pull-request comment or a job summary).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use super::{HostKey, LedgerHead, Printer};
use crate::engine::Error;
use crate::engine::apply::ApplyResult;
use crate::engine::approve::Approved;
use crate::engine::audit::{Verification, outcome_text};
use crate::engine::dibr::Written;
use crate::executor::{ApplyOutcome, StepStatus};
use crate::kubernetes::release::History;
use crate::ledger::{Entry, Repair};
use crate::load::Loaded;
use crate::model::{Database, Runbook};
use crate::ops::SnapshotInfo;
use crate::plan::{self, SavedPlan, SavedPlanKind};
use crate::window::WaveWindows;

pub struct Human {
    out: Box<dyn Write>,
    markdown: bool,
}

impl Human {
    pub fn new(out: Box<dyn Write>, markdown: bool) -> Self {
        Self { out, markdown }
    }

    fn say(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    fn put(&mut self, text: &str) {
        let _ = write!(self.out, "{text}");
    }
}

/// "1 entry", "2 entries".
fn entries(n: u64) -> String {
    format!("{n} entr{}", if n == 1 { "y" } else { "ies" })
}

/// What an apply ended with and what to do next.
fn outcome_text_of(r: &ApplyResult, path: &Path) -> String {
    let n = |s: StepStatus| r.status.values().filter(|x| **x == s).count();
    let (name, id, p) = (&r.plan.body.name, &r.plan.id, path.display());
    match &r.outcome {
        ApplyOutcome::Completed if r.status.is_empty() => {
            format!("Plan `{name}` ({id}): no changes to apply.")
        }
        ApplyOutcome::Completed => format!(
            "Plan `{name}` ({id}) completed: {} step(s) succeeded, {} already done.",
            n(StepStatus::Succeeded),
            n(StepStatus::AlreadyDone)
        ),
        ApplyOutcome::CompletedWithFailures { failed } => format!(
            "Plan `{name}` ({id}) finished with failures within tolerance: failed {}.\nRetry the failed steps with: ferry apply --resume {p}",
            failed.join(", ")
        ),
        ApplyOutcome::Halted { failed, pending } => format!(
            "Plan `{name}` ({id}) HALTED: failed {}; {} step(s) not done.\nResume with: ferry apply --resume {p}\nOr back out a site with: ferry backout -i INVENTORY --app APP --site SITE",
            failed.join(", "),
            pending.len()
        ),
        ApplyOutcome::BackedOut {
            failed,
            undone,
            undo_failed,
        } => {
            let mut text = format!(
                "Plan `{name}` ({id}) BACKED OUT: failed {}; undone {}.",
                failed.join(", "),
                if undone.is_empty() {
                    "nothing else".into()
                } else {
                    undone.join(", ")
                }
            );
            if !undo_failed.is_empty() {
                text.push_str(&format!(
                    "\nUNDO FAILED for {}: these targets need attention; see `ferry ledger show --plan {id}`",
                    undo_failed.join(", ")
                ));
            }
            text
        }
        ApplyOutcome::Interrupted { pending } => format!(
            "Plan `{name}` ({id}) interrupted at a safe point; {} step(s) left.\nResume with: ferry apply --resume {p}",
            pending.len()
        ),
        ApplyOutcome::AwaitingConfirmation {
            step,
            title,
            instructions,
            pending,
        } => {
            // Runbook steps are confirmed by their runbook name.
            let handle = match r.plan.body.kind {
                SavedPlanKind::Runbook | SavedPlanKind::Migration => r
                    .plan
                    .step(step)
                    .and_then(|s| r.plan.body.waves.get(s.wave))
                    .map_or(step.as_str(), |w| w.name.as_str()),
                _ => step.as_str(),
            };
            format!(
                "Plan `{name}` ({id}) stopped before manual step `{handle}` ({title}); {} step(s) left.\n{}\nWhen that is done, continue with: ferry apply --resume {p} --confirm {handle}",
                pending.len(),
                instructions.trim_end()
            )
        }
        ApplyOutcome::OutsideWindow { sites, pending } => {
            let opens: Vec<String> = sites
                .iter()
                .map(|c| format!("`{}` opens {}", c.site, c.opens))
                .collect();
            format!(
                "Plan `{name}` ({id}) stopped outside a maintenance window: {}; {} step(s) left.\nResume inside the window with: ferry apply --resume {p}\nOr wait for it: ferry apply --resume --wait {p}\nOr start now, recorded: ferry apply --resume --outside-window --reason TEXT {p}",
                opens.join("; "),
                pending.len()
            )
        }
        ApplyOutcome::AwaitingCondition { gates, pending } => {
            let lines: Vec<String> = gates
                .iter()
                .map(|g| {
                    format!(
                        "  {} [{}]: {} = {} after {} poll(s); waiting since {}; deadline {}; next poll due {}",
                        g.name,
                        g.step,
                        g.condition,
                        crate::gate::text(&g.value),
                        g.polls,
                        g.waiting_since,
                        g.deadline_at,
                        g.next_poll_at
                    )
                })
                .collect();
            format!(
                "Plan `{name}` ({id}) is waiting for condition(s) that do not hold yet; {} step(s) left.\n{}\nEvaluate again with: ferry apply --resume {p}\nOr poll until they hold: ferry apply --resume --wait {p}",
                pending.len(),
                lines.join("\n")
            )
        }
        ApplyOutcome::AwaitingApproval {
            gate,
            role,
            pending,
        } => format!(
            "Plan `{name}` ({id}) stopped at gate `{gate}`: it needs an approval by role `{role}`; {} step(s) left.\nApprove with: ferry approve {p} --gate {gate} --as NAME\nThen resume with: ferry apply --resume {p}",
            pending.len()
        ),
    }
}

/// Each wave's maintenance windows, one line per wave, with its warning.
fn windows_text(windows: &[WaveWindows], bullet: &str) -> String {
    if windows.is_empty() {
        return String::new();
    }
    let mut t = String::from("Maintenance windows:\n");
    for w in windows {
        let sites: Vec<String> = w
            .sites
            .iter()
            .map(|s| format!("{} {}", s.site, s.text))
            .collect();
        t.push_str(&format!(
            "{bullet}wave `{}`: {}\n",
            w.wave,
            sites.join("; ")
        ));
        if let Some(warning) = &w.warning {
            t.push_str(&format!("{bullet}warning: {warning}\n"));
        }
    }
    t
}

/// One ledger entry on one line.
fn entry_line(e: &Entry) -> String {
    let mut line = format!(
        "{:>5} {} {:<10} {:<17}",
        e.seq,
        e.time,
        e.actor,
        e.event.as_str()
    );
    if let Some(t) = &e.target {
        line.push_str(&format!(" {t}"));
    }
    if e.from.is_some() || e.to.is_some() {
        line.push_str(&format!(
            " {} -> {}",
            e.from.as_deref().unwrap_or("(none)"),
            e.to.as_deref().unwrap_or("(none)")
        ));
    }
    if let Some(o) = e.outcome {
        line.push_str(&format!(" [{}]", outcome_text(o)));
    }
    if let Some(ms) = e.duration_ms {
        line.push_str(&format!(" {ms}ms"));
    }
    if let Some(m) = &e.message {
        line.push_str(&format!(" {m}"));
    }
    line
}

/// A runbook: its parameters and its steps, each with its arguments.
fn runbook_text(rb: &Loaded<Runbook>) -> String {
    let r = &rb.value;
    let mut t = format!("Runbook `{}` ({})\n", r.name, rb.source.display_path());
    if let Some(d) = &r.description {
        t.push_str(&format!("{d}\n"));
    }
    t.push_str("\nParameters:\n");
    for p in &r.params {
        t.push_str(&format!(
            "  {:<22} {:<10} {}{}\n",
            p.name,
            p.ty.as_str(),
            p.default
                .as_deref()
                .map_or("required".to_owned(), |d| format!("default `{d}`")),
            p.description
                .as_deref()
                .map(|d| format!(" — {d}"))
                .unwrap_or_default()
        ));
    }
    t.push_str("\nSteps:\n");
    for (n, s) in r.steps.iter().enumerate() {
        t.push_str(&format!(
            "  {}. {} `{}` [{}]\n",
            n + 1,
            s.title,
            s.id,
            s.action
        ));
        for (k, v) in &s.with {
            let v = v.trim_end().replace('\n', "\n         ");
            t.push_str(&format!("       {k}: {v}\n"));
        }
        if let Some(f) = &s.on_failure {
            t.push_str(&format!("       on failure: {f}\n"));
        }
    }
    t
}

/// A Kubernetes app's revisions on one target, as a table.
fn history_text(target: &str, h: &History) -> String {
    let mut t = format!(
        "{target}\n  {:<9} {:<12} {:<14} {:<10} {:<21} PLAN / NOTE\n",
        "REVISION", "STATUS", "VERSION", "OBJECTS", "UPDATED"
    );
    for r in &h.records {
        let note = match (&r.reason, r.rollback_of) {
            (Some(why), _) => why.clone(),
            (None, Some(n)) => format!("rollback to revision {n}"),
            (None, None) => r.plan_id.clone(),
        };
        t.push_str(&format!(
            "  {:<9} {:<12} {:<14} {:<10} {:<21} {note}\n",
            r.revision,
            r.status.as_str(),
            r.version,
            r.objects,
            r.updated_at
        ));
    }
    if h.records.is_empty() {
        t.push_str("  (no release records)\n");
    }
    t
}

impl Printer for Human {
    fn validated(&mut self, inventory: &Path, plans: usize) {
        let text = format!(
            "ok: {} and {plans} plan file(s) are valid",
            inventory.display()
        );
        self.say(&text);
    }

    fn plan(&mut self, saved: &SavedPlan, path: &Path, windows: &[WaveWindows]) {
        if self.markdown {
            self.put(&plan::render_markdown(saved, &path.display().to_string()));
            self.put(&windows_text(windows, "- "));
            return;
        }
        self.put(&plan::render_diff(&saved.body));
        self.put(&windows_text(windows, "  "));
        let (id, p) = (&saved.id, path.display());
        let text = if saved.has_changes() {
            format!("Saved plan {id} to {p}.\nApply it with: ferry apply {p}")
        } else {
            format!("No changes. Saved plan {id} to {p}.")
        };
        self.say(&text);
    }

    fn preview(&mut self, saved: &SavedPlan) {
        self.put(&plan::render_diff(&saved.body));
    }

    fn applied(&mut self, r: &ApplyResult, path: &Path, ledger: &LedgerHead) {
        let text = outcome_text_of(r, path);
        self.say(&text);
        let text = format!(
            "Ledger: {} (head {})",
            ledger.location,
            ledger.head.as_deref().unwrap_or("-")
        );
        self.say(&text);
    }

    fn history(&mut self, _app: &str, _site: &str, targets: &[(String, History)]) {
        for (target, h) in targets {
            self.put(&history_text(target, h));
        }
    }

    fn snapshots(&mut self, db: &Database, list: &[SnapshotInfo]) {
        let mut t = format!(
            "Snapshots of database `{}` (instance {}, cloud {}):\n",
            db.id, db.identifier, db.cloud
        );
        if list.is_empty() {
            t.push_str("  (none)\n");
        }
        for s in list {
            let created = if s.created.is_empty() {
                "-"
            } else {
                &s.created
            };
            t.push_str(&format!(
                "  {:<50} {:<10} {:<10} {created}\n",
                s.id, s.kind, s.status
            ));
        }
        self.put(&t);
    }

    fn snapshot_created(&mut self, database: &str, detail: &serde_json::Value) {
        let text = format!(
            "Snapshot {} of database `{database}` is available (created {}).",
            detail["snapshot"].as_str().unwrap_or("-"),
            detail["created"].as_str().unwrap_or("-")
        );
        self.say(&text);
    }

    #[cfg(feature = "aws")]
    fn snapshots_pruned(&mut self, database: &str, p: &crate::drivers::rds::Pruned) {
        let verb = if p.dry_run { "would delete" } else { "deleted" };
        let mut text = format!(
            "Snapshots of `{database}`: {verb} {}, kept {} of ferry's, left {} of others alone.",
            p.deleted.len(),
            p.kept.len(),
            p.others
        );
        for id in &p.deleted {
            text.push_str(&format!("\n  {verb} {id}"));
        }
        self.say(&text);
    }

    fn state_initialised(&mut self, store: &str, applied: &[String], grant: Option<&str>) {
        let done = if applied.is_empty() {
            "already up to date".to_owned()
        } else {
            format!("applied {}", applied.join(", "))
        };
        let grant = grant
            .map(|g| format!("; role `{g}` may SELECT and INSERT the ledger and take the lock"))
            .unwrap_or_default();
        self.say(&format!("State store {store}: {done}{grant}."));
    }

    fn state_migrated(&mut self, m: &crate::engine::state_store::Migrated) {
        let resumed = m
            .resumed_after
            .map(|k| format!(" (entries up to {k} were there from an earlier run)"))
            .unwrap_or_default();
        self.say(&format!(
            "Ledger {} moved to {}: {} entries copied{resumed}, {} verified there, head {}.
From now on use `--state` with that store.",
            m.from,
            m.to,
            m.copied,
            m.entries,
            m.head.as_deref().unwrap_or("-")
        ));
    }

    fn lock_status(&mut self, ledger: &str, s: Option<&crate::state::LockStatus>) {
        let text = match s {
            None => format!("The apply lock of {ledger} is free."),
            Some(s) => format!(
                "The apply lock of {ledger} is held by {}{}.",
                s.holder,
                if s.expired {
                    "; its lease has run out (or its process is gone): the next apply takes it over"
                } else {
                    ""
                }
            ),
        };
        self.say(&text);
    }

    fn lock_broken(
        &mut self,
        ledger: &str,
        broken: Option<&(crate::lock::LockHolder, crate::ledger::Entry)>,
    ) {
        let text = match broken {
            None => format!("The apply lock of {ledger} was free: nothing to break."),
            Some((h, e)) => format!(
                "Broke the apply lock of {h}; recorded as entry {} (lock_broken). That run can no longer act or record.",
                e.seq
            ),
        };
        self.say(&text);
    }

    fn runbooks(&mut self, list: &[Loaded<Runbook>]) {
        for rb in list {
            let r = &rb.value;
            let text = format!(
                "{:<28} {} step(s)  {}",
                r.name,
                r.steps.len(),
                r.description.as_deref().unwrap_or_default()
            );
            self.say(&text);
        }
    }

    fn runbook(&mut self, rb: &Loaded<Runbook>) {
        self.put(&runbook_text(rb));
    }

    fn runbook_params(&mut self, params: &BTreeMap<String, serde_json::Value>) {
        if params.is_empty() {
            return;
        }
        let list: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_owned)))
            .collect();
        self.say(&format!("Parameters: {}", list.join(", ")));
    }

    fn verified(&mut self, ledger: &str, v: &Verification) {
        let r = &v.report;
        let text = if let Some(t) = &r.tamper {
            format!(
                "ledger {ledger} is NOT intact: {t}\n{} before it verified.",
                entries(r.entries)
            )
        } else if let Some(m) = &v.problem {
            format!("ledger {ledger} is NOT intact: {m}")
        } else {
            let approvals = if v.approvers_checked {
                "approvals: signatures, keys and roles checked against the inventory"
            } else {
                "approvals: signatures checked; give -i INVENTORY to check the signers' keys and roles"
            };
            let checkpoints = if v.checkpoints > 0 {
                format!(
                    "\ncheckpoints: {} matched, signatures checked",
                    v.checkpoints
                )
            } else {
                String::new()
            };
            format!(
                "ledger {ledger} verified: {} entries, head {}\n{approvals}{checkpoints}",
                r.entries,
                r.head.as_deref().unwrap_or("-")
            )
        };
        self.say(&text);
    }

    fn entry(&mut self, e: &Entry) {
        self.say(&entry_line(e));
    }

    fn entries_end(&mut self, count: usize) {
        self.say(&entries(count as u64));
    }

    fn repaired(&mut self, ledger: &str, r: &Repair) {
        let text = match r {
            Repair::Nothing => {
                format!("ledger {ledger} ends with a complete line: nothing to repair")
            }
            Repair::Completed { seq } => format!(
                "ledger {ledger}: entry #{seq} was whole but missing its newline; completed and recorded"
            ),
            Repair::SetAside {
                bytes,
                sha256,
                kept_at,
            } => format!(
                "ledger {ledger}: {bytes} torn byte(s) (sha256 {sha256}) moved to {kept_at}; the ledger ends at its last full entry; recorded as ledger_repaired"
            ),
        };
        self.say(&text);
    }

    fn approved(&mut self, a: &Approved, gate: &str, person: &str, plan_path: &Path) {
        let text = format!(
            "Approved gate `{gate}` of plan {} as {person} (`{}`); ledger entry #{} {}.\nContinue with: ferry apply --resume {}",
            a.plan.id,
            a.role,
            a.entry.seq,
            a.entry.hash,
            plan_path.display()
        );
        self.say(&text);
    }

    fn key_made(&mut self, public_key: &str, path: &Path) {
        let text = format!(
            "Signing key written to {} (keep it private).\nPut this in the inventory's approver entry:\n  public_key: \"{public_key}\"",
            path.display()
        );
        self.say(&text);
    }

    fn dibr(&mut self, w: &Written) {
        let dir = w.markdown.parent().unwrap_or(Path::new("."));
        let anchor = w.anchor.as_ref().map_or_else(
            || "not anchored: the ledger does not verify".to_owned(),
            |a| format!("their digests are ledger entry #{}", a.seq),
        );
        let text = format!(
            "DIBR guide of plan {} ({}) written to {}/dibr.md and dibr.html; {anchor}",
            w.plan.id,
            w.status,
            dir.display()
        );
        self.say(&text);
    }

    fn migration_verified(&mut self, plan_id: &str, v: &crate::engine::migrate::Verification) {
        let mut text = String::new();
        if let Some(r) = &v.database {
            text.push_str(&format!(
                "Verification of migration plan {plan_id}: {}\n",
                r.verdict()
            ));
            text.push_str(&crate::migrate::evidence::tables_markdown(r));
        }
        for b in &v.buckets {
            text.push_str(&format!(
                "\nVerification of plan {plan_id}, {}\n",
                b.verdict()
            ));
        }
        self.say(text.trim());
    }

    fn bucket_manifest(&mut self, _copy: &str, m: &crate::migrate::bucket::Manifest) {
        // The text exactly: `| sha256sum` gives the root.
        self.put(&m.text());
    }

    fn migration_report(&mut self, r: &crate::engine::migrate::MigrationReport) {
        self.say(crate::migrate::evidence::markdown(r).trim_end());
    }

    fn host_key(&mut self, k: &HostKey<'_>) {
        let text = format!(
            "{} ({}) presents a {} host key:\n  {}",
            k.endpoint, k.name, k.algorithm, k.fingerprint
        );
        self.say(&text);
    }

    fn host_trusted(&mut self, k: &HostKey<'_>, already: bool) {
        let text = if already {
            format!(
                "{} ({}) is already trusted in {}: {} {}",
                k.endpoint, k.name, k.known_hosts, k.algorithm, k.fingerprint
            )
        } else {
            format!("recorded in {}", k.known_hosts)
        };
        self.say(&text);
    }

    fn man_pages(&mut self, dir: &Path) {
        self.say(&format!("man pages written to {}", dir.display()));
    }

    fn error(&mut self, e: &Error, _code: u8) {
        let msg = match e {
            Error::Invalid(d) => d.to_string(),
            other => super::with_causes(e, format!("error: {other}")),
        };
        eprintln!("{msg}");
    }
}

//! Printers: how the results of engine calls are shown. A [`Printer`] has one method per kind
//! of result; [`Human`] writes text for a person, [`Json`] one versioned JSON document per
//! result (JSON Lines for `ledger show`). They are interchangeable, like ripgrep's printers:
//! the caller picks one and the engine never knows which. Progress is not here: it is an event
//! stream (`executor::Progress`) with sinks of its own.

mod human;
mod json;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

pub use human::Human;
pub use json::{JSON_VERSION, Json};

use crate::engine::Error;
use crate::engine::apply::ApplyResult;
use crate::engine::approve::Approved;
use crate::engine::audit::Verification;
use crate::engine::dibr::Written;
use crate::kubernetes::release::History;
use crate::ledger::{Entry, Ledger, Repair};
use crate::load::Loaded;
use crate::model::{Database, Runbook};
use crate::ops::SnapshotInfo;
use crate::plan::SavedPlan;
use crate::window::WaveWindows;

/// Where a ledger is and the hash it ends at, as results name them.
#[derive(Debug, Clone)]
pub struct LedgerHead {
    pub location: String,
    pub head: Option<String>,
}

impl LedgerHead {
    /// Reads the head by verifying the chain (none if it does not verify).
    pub fn of(ledger: &Ledger) -> Self {
        Self {
            location: ledger.location(),
            head: ledger.verify().ok().and_then(|v| v.head),
        }
    }
}

/// A host key an endpoint presented (`ferry hosts trust`).
#[derive(Debug, Clone, Copy)]
pub struct HostKey<'a> {
    pub endpoint: &'a str,
    pub name: &'a str,
    pub algorithm: &'a str,
    pub fingerprint: &'a str,
    pub known_hosts: &'a str,
}

/// One method per kind of result. Results go to the printer's writer (stdout for the CLI);
/// a human printer's warnings and errors go to stderr.
pub trait Printer {
    /// `ferry validate`: the files are valid.
    fn validated(&mut self, inventory: &Path, plans: usize);
    /// A saved plan, written to `path`, with its waves' maintenance windows as of now.
    fn plan(&mut self, plan: &SavedPlan, path: &Path, windows: &[WaveWindows]);
    /// What a plan would change, before it is refused or applied at once (text only).
    fn preview(&mut self, plan: &SavedPlan);
    /// The result of applying the plan at `path`.
    fn applied(&mut self, r: &ApplyResult, path: &Path, ledger: &LedgerHead);
    /// A Kubernetes app's release history, per target.
    fn history(&mut self, app: &str, site: &str, targets: &[(String, History)]);
    fn snapshots(&mut self, db: &Database, list: &[SnapshotInfo]);
    fn snapshot_created(&mut self, database: &str, detail: &serde_json::Value);
    /// `ferry snapshot prune`: what was deleted (or would be) and kept.
    #[cfg(feature = "aws")]
    fn snapshots_pruned(&mut self, database: &str, p: &crate::drivers::rds::Pruned);
    fn runbooks(&mut self, list: &[Loaded<Runbook>]);
    fn runbook(&mut self, rb: &Loaded<Runbook>);
    /// The parameters a runbook was planned with (text only).
    fn runbook_params(&mut self, params: &BTreeMap<String, serde_json::Value>);
    /// `ferry ledger verify`.
    fn verified(&mut self, ledger: &str, v: &Verification);
    /// `ferry ledger show`: one entry (as the ledger is read), then [`Printer::entries_end`].
    fn entry(&mut self, e: &Entry);
    fn entries_end(&mut self, count: usize);
    fn repaired(&mut self, ledger: &str, r: &Repair);
    fn approved(&mut self, a: &Approved, gate: &str, person: &str, plan_path: &Path);
    fn key_made(&mut self, public_key: &str, path: &Path);
    fn dibr(&mut self, w: &Written);
    /// A host key presented and not yet trusted, before the person is asked (text only).
    fn host_key(&mut self, k: &HostKey<'_>);
    /// A host key now trusted; `already` when known_hosts held it before.
    fn host_trusted(&mut self, k: &HostKey<'_>, already: bool);
    fn man_pages(&mut self, dir: &Path);
    /// `ferry migrate verify`: the verification report.
    fn migration_verified(&mut self, plan_id: &str, r: &crate::engine::migrate::Verification);
    fn bucket_manifest(&mut self, copy: &str, m: &crate::migrate::bucket::Manifest);
    /// `ferry migrate report`: everything the ledger holds of a migration.
    fn migration_report(&mut self, r: &crate::engine::migrate::MigrationReport);
    /// A command failed with exit code `code`.
    /// `ferry state init`: the migrations applied now, and the role given rights.
    fn state_initialised(&mut self, store: &str, applied: &[String], grant: Option<&str>);
    /// `ferry state migrate`.
    fn state_migrated(&mut self, m: &crate::engine::state_store::Migrated);
    /// `ferry lock status`.
    fn lock_status(&mut self, ledger: &str, s: Option<&crate::state::LockStatus>);
    /// `ferry lock break`: the holder broken and its record, or nothing (the lock was free).
    fn lock_broken(&mut self, ledger: &str, broken: Option<&(crate::lock::LockHolder, Entry)>);
    fn error(&mut self, e: &Error, code: u8);
}

/// The printer for `--output`: `json`, or text (`markdown` prints a plan as a Markdown
/// summary for a pull-request comment or a job summary, everything else as text).
pub fn for_output(json: bool, markdown: bool, out: Box<dyn Write>) -> Box<dyn Printer> {
    if json {
        Box::new(Json::new(out))
    } else {
        Box::new(Human::new(out, markdown))
    }
}

/// An error's message with its chain of causes, `: `-joined.
fn with_causes(e: &Error, head: String) -> String {
    let mut msg = head;
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

//! What an auditor asks of the ledger, as library calls: the entries a filter selects (read as
//! a stream), the whole chain's verification with every approval checked, and exports.

use serde::Serialize;

use super::Error;
use crate::approval::{self, SignedApproval};
use crate::ledger::{Entry, Event, Ledger, Outcome, VerifyReport};
use crate::model::Approver;

/// Which entries to list or export (every field that is set must match).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Filter {
    pub plan: Option<String>,
    pub site: Option<String>,
    pub app: Option<String>,
    pub event: Option<String>,
    /// RFC 3339 time; entries at or after it.
    pub since: Option<String>,
    /// RFC 3339 time; entries before it.
    pub until: Option<String>,
}

impl Filter {
    /// Whether an entry passes the filter (times parsed once).
    pub fn matcher(&self) -> Result<impl Fn(&Entry) -> bool + '_, Error> {
        let since = self.since.as_deref().map(parse_time).transpose()?;
        let until = self.until.as_deref().map(parse_time).transpose()?;
        let is = |want: &Option<String>, have: &Option<String>| {
            want.as_deref().is_none_or(|w| have.as_deref() == Some(w))
        };
        Ok(move |e: &Entry| {
            let t = || chrono::DateTime::parse_from_rfc3339(&e.time).ok();
            is(&self.plan, &e.plan_id)
                && is(&self.site, &e.site)
                && is(&self.app, &e.app)
                && self
                    .event
                    .as_deref()
                    .is_none_or(|ev| e.event.as_str() == ev)
                && since.is_none_or(|s| t().is_some_and(|t| t >= s))
                && until.is_none_or(|u| t().is_some_and(|t| t < u))
        })
    }

    /// The entries of the ledger that pass, read as a stream (only those are kept).
    pub fn select(&self, ledger: &Ledger) -> Result<Vec<Entry>, Error> {
        let keep = self.matcher()?;
        let mut out = Vec::new();
        ledger.for_each_parsed(&mut |e| {
            if keep(&e) {
                out.push(e);
            }
        })?;
        Ok(out)
    }
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, Error> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| Error::Refused(format!("`{s}` is not an RFC 3339 time: {e}")))
}

/// The verdict of [`verify`]: the chain's report, and the first problem found after it (the
/// chain ends elsewhere than expected, or an approval is not valid).
#[derive(Debug)]
pub struct Verification {
    pub report: VerifyReport,
    pub problem: Option<String>,
    /// Approvals were checked against an inventory's approvers (keys and roles), not only
    /// their signatures.
    pub approvers_checked: bool,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.report.tamper.is_none() && self.problem.is_none()
    }

    /// What is wrong, in one message (the chain's break first).
    pub fn message(&self) -> Option<String> {
        self.report
            .tamper
            .as_ref()
            .map(ToString::to_string)
            .or_else(|| self.problem.clone())
    }
}

/// Verifies the whole chain in one pass; then that it ends at `expect_head` (truncation), and
/// every approval's signature (with `approvers`, also the signer's key and role).
pub fn verify(
    ledger: &Ledger,
    expect_head: Option<&str>,
    approvers: Option<&[Approver]>,
) -> Result<Verification, Error> {
    let mut approvals = Vec::new();
    let report = ledger.verify_each(&mut |e| {
        if e.event == Event::Approval {
            approvals.push(e);
        }
    })?;
    let problem = match (expect_head, report.head.as_deref()) {
        _ if report.tamper.is_some() => None,
        (Some(want), got) if got != Some(want) => Some(format!(
            "the chain ends at {} but {want} was expected: entries were removed from the end or the ledger was replaced",
            got.unwrap_or("(empty)")
        )),
        _ => check_approvals(&approvals, approvers),
    };
    Ok(Verification {
        report,
        problem,
        approvers_checked: approvers.is_some(),
    })
}

/// Every approval's signature, and with the inventory, the signer's key and role: the first
/// that fails, as a message naming the entry.
fn check_approvals(entries: &[Entry], approvers: Option<&[Approver]>) -> Option<String> {
    entries.iter().find_map(|e| {
        check_approval(e, approvers)
            .err()
            .map(|m| format!("entry #{} (approval) is not valid: {m}", e.seq))
    })
}

fn check_approval(e: &Entry, approvers: Option<&[Approver]>) -> Result<(), String> {
    let detail = e
        .detail
        .clone()
        .ok_or_else(|| "it carries no signed approval".to_owned())?;
    let a: SignedApproval = serde_json::from_value(detail)
        .map_err(|err| format!("its signed approval does not parse: {err}"))?;
    if e.plan_id.as_deref() != Some(a.payload.plan_id.as_str()) {
        return Err("it is filed under another plan than the one signed".into());
    }
    approval::verify(&a, approvers)
        .map_err(|m| format!("gate `{}` by {}: {m}", a.payload.gate, a.payload.approver))
}

/// An outcome as the ledger spells it (`ok`, `failed`, `backed_out`).
pub fn outcome_text(o: Outcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The export document: the chain's verification first, then the selected entries.
#[derive(Debug, Serialize)]
pub struct Export<'a> {
    pub format: &'static str,
    pub version: u32,
    pub ledger: String,
    pub exported_at: String,
    pub verification: &'a VerifyReport,
    pub filter: &'a Filter,
    pub entries: &'a [Entry],
}

/// The entries as CSV, one row each, with a header (every field an auditor filters on, and
/// `prev`/`hash` so a row can be checked against the chain).
pub fn csv(entries: &[Entry]) -> Result<Vec<u8>, Error> {
    let csv_err = |e: csv::Error| Error::Refused(format!("cannot write CSV: {e}"));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "seq",
        "time",
        "actor",
        "event",
        "plan_id",
        "step",
        "target",
        "site",
        "app",
        "from",
        "to",
        "outcome",
        "duration_ms",
        "message",
        "prev",
        "hash",
    ])
    .map_err(csv_err)?;
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    for e in entries {
        w.write_record([
            e.seq.to_string(),
            e.time.clone(),
            e.actor.clone(),
            e.event.as_str().to_owned(),
            o(&e.plan_id),
            o(&e.step),
            o(&e.target),
            o(&e.site),
            o(&e.app),
            o(&e.from),
            o(&e.to),
            e.outcome.map(outcome_text).unwrap_or_default(),
            e.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
            o(&e.message),
            e.prev.clone(),
            e.hash.clone(),
        ])
        .map_err(csv_err)?;
    }
    w.into_inner()
        .map_err(|e| Error::Refused(format!("cannot write CSV: {e}")))
}

//! What an auditor asks of the ledger, as library calls: the entries a filter selects (read as
//! a stream), the whole chain's verification with every approval checked, and exports.

use std::path::Path;

use serde::Serialize;

use super::Error;
use crate::approval::{self, SignedApproval, SigningKey};
use crate::ledger::checkpoint::{self, SignedCheckpoint};
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
    /// Checkpoints kept outside the ledger that it was checked against.
    pub checkpoints: usize,
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
    checkpoints: &Checkpoints,
) -> Result<Verification, Error> {
    let mut approvals = Vec::new();
    let wanted: std::collections::BTreeSet<u64> =
        checkpoints.list.iter().map(|c| c.payload.seq).collect();
    let mut hashes = std::collections::BTreeMap::new();
    let mut last = 0;
    let report = ledger.verify_each(&mut |e| {
        last = e.seq;
        if wanted.contains(&e.seq) {
            hashes.insert(e.seq, e.hash.clone());
        }
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
        _ => check_approvals(&approvals, approvers).or_else(|| checkpoints.problem(&hashes, last)),
    };
    Ok(Verification {
        report,
        problem,
        approvers_checked: approvers.is_some(),
        checkpoints: checkpoints.list.len(),
    })
}

/// Checkpoints kept outside the ledger (`ferry ledger checkpoint --out`), and the key they
/// must be signed with, if one is trusted.
#[derive(Debug, Default)]
pub struct Checkpoints {
    pub list: Vec<SignedCheckpoint>,
    pub trusted_key: Option<String>,
    /// Where they were read from, for messages.
    pub source: String,
}

impl Checkpoints {
    /// Checkpoints kept in a file (one per line; every line must parse) or under an S3 prefix
    /// (`s3://BUCKET/PREFIX`, one object each).
    pub fn read(path: &Path, trusted_key: Option<String>) -> Result<Self, Error> {
        let list = super::checkpoint_sink::read_all(path)?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        Ok(Self {
            list,
            trusted_key,
            source: path.display().to_string(),
        })
    }

    /// The first checkpoint that is not signed as it should be or that the ledger does not
    /// match, named.
    fn problem(
        &self,
        hashes: &std::collections::BTreeMap<u64, String>,
        last: u64,
    ) -> Option<String> {
        self.list.iter().enumerate().find_map(|(n, c)| {
            checkpoint::check_signature(c, self.trusted_key.as_deref())
                .and_then(|()| {
                    checkpoint::check_against(
                        c,
                        hashes.get(&c.payload.seq).map(String::as_str),
                        last,
                    )
                })
                .err()
                .map(|m| format!("checkpoint {} of {}: {m}", n + 1, self.source))
        })
    }
}

/// Checkpoints while an apply runs: one whenever `every` entries were appended through the
/// run's ledger handle since the last (the apply's end makes one too).
#[derive(Debug)]
pub struct Checkpointer {
    pub key: SigningKey,
    pub out: Option<std::path::PathBuf>,
    pub every: Option<u64>,
    last: std::sync::atomic::AtomicU64,
}

impl Checkpointer {
    pub fn new(key: SigningKey, out: Option<std::path::PathBuf>, every: Option<u64>) -> Self {
        Self {
            key,
            out,
            every: every.filter(|n| *n > 0),
            last: Default::default(),
        }
    }

    /// Whether `every` entries were appended since the last checkpoint.
    pub fn due(&self, ledger: &Ledger) -> bool {
        let last = self.last.load(std::sync::atomic::Ordering::Relaxed);
        self.every
            .is_some_and(|n| ledger.appended() >= last.saturating_add(n))
    }

    /// A checkpoint of the head now (see [`checkpoint`]).
    pub fn make(&self, state: &super::State) -> Result<SignedCheckpoint, Error> {
        let c = checkpoint(state, &self.key, self.out.as_deref())?;
        self.last.store(
            state.ledger.appended(),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(c)
    }
}

/// Signs the head of a ledger that verifies, records the checkpoint in it, and appends it to
/// `out` (a file kept where the ledger's keeper cannot rewrite it) when given.
pub fn checkpoint(
    state: &super::State,
    key: &SigningKey,
    out: Option<&Path>,
) -> Result<SignedCheckpoint, Error> {
    let report = state.ledger.verify()?;
    if let Some(t) = report.tamper {
        return Err(Error::Ledger(crate::ledger::LedgerError::Broken {
            path: state.ledger.location().into(),
            tamper: t,
        }));
    }
    // Entries count from 0: the head is entry `entries - 1`.
    let (Some(hash), Some(seq)) = (report.head, report.entries.checked_sub(1)) else {
        return Err(Error::Refused(
            "the ledger is empty: nothing to checkpoint".into(),
        ));
    };
    let signed = checkpoint::sign(
        checkpoint::CheckpointPayload {
            format: checkpoint::CHECKPOINT_FORMAT.into(),
            seq,
            hash,
            time: crate::ledger::now(),
        },
        key,
    );
    if let Some(path) = out {
        super::checkpoint_sink::keep(path, &signed)?;
    }
    state.ledger.append(
        crate::ledger::NewEntry::new(&state.actor, Event::Checkpoint)
            .message(format!("checkpoint of entry {seq}"))
            .detail(serde_json::to_value(&signed).expect("checkpoints serialize")),
    )?;
    Ok(signed)
}

/// One line appended to a file, durably (created 0644 if missing, never through a link).
pub(crate) fn append_line(path: &Path, line: &str) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io =
        |e: std::io::Error| Error::Refused(format!("cannot append to {}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io)?;
    f.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
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

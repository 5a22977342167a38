//! The DIBR guide as a library call: built from the saved plan, its inventory and the ledger,
//! written as Markdown and a self-contained HTML page, with the revision history kept across
//! runs beside them.

use std::path::{Path, PathBuf};

use super::{Error, State};
use crate::dibr::{self, Revision};
use crate::ledger::{Event, NewEntry};
use crate::plan::SavedPlan;
use crate::workspace;

const HISTORY: &str = "revision-history.json";

/// What [`write`] wrote.
pub struct Written {
    pub plan: SavedPlan,
    /// The guide's status line (e.g. "completed", "backed out").
    pub status: String,
    pub markdown: PathBuf,
    pub html: PathBuf,
    /// Checklist rows per state.
    pub steps: std::collections::BTreeMap<String, usize>,
    /// The `dibr_written` entry that anchors the files (their SHA-256 and the head they were
    /// built from); none when the ledger does not verify (nothing is added to it then, and
    /// the guide says it is broken).
    pub anchor: Option<crate::ledger::Entry>,
}

/// Writes `dibr.md`, `dibr.html` and the revision history into `out`. A ledger that does not
/// verify is not refused (the guide is how an auditor sees it): the guide says so instead.
pub fn write(
    state: &State,
    inventory: &Path,
    plan_path: &Path,
    out: &Path,
) -> Result<Written, Error> {
    let (inv, _) = workspace::load(inventory, &[]).map_err(Error::Invalid)?;
    let plan = workspace::read_plan(plan_path)?;
    let entries = state.ledger.read_all()?;
    let report = state.ledger.verify()?;
    let verified = match &report.tamper {
        None => "hash chain verified".to_owned(),
        Some(t) => format!("HASH CHAIN BROKEN: {t}"),
    };
    let refuse =
        |what: &str, e: std::io::Error| Error::Refused(format!("{what} {}: {e}", out.display()));
    std::fs::create_dir_all(out).map_err(|e| refuse("cannot create", e))?;
    let history = read_history(out)?;
    let doc = dibr::build(dibr::Inputs {
        plan: &plan,
        inventory: &inv.value,
        entries: &entries,
        ledger_path: &state.ledger.location(),
        ledger_verified: &verified,
        history,
    });
    let md = dibr::render(&doc, "dibr.md.tera", dibr::MARKDOWN_TEMPLATE)
        .map_err(|e| Error::Refused(e.to_string()))?;
    let html = dibr::render(&doc, "dibr.html.tera", dibr::HTML_TEMPLATE)
        .map_err(|e| Error::Refused(e.to_string()))?;
    let write = |name: &str, text: &str| -> Result<PathBuf, Error> {
        let path = out.join(name);
        crate::durable::write_atomic(&path, text.as_bytes())
            .map_err(|e| Error::Refused(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    };
    let markdown = write("dibr.md", &md)?;
    let html_path = write("dibr.html", &html)?;
    let revisions = serde_json::to_string_pretty(&doc.revisions).expect("revisions serialize");
    write(HISTORY, &revisions)?;
    let anchor = report.tamper.is_none().then(|| {
        state.ledger.append(
            NewEntry::new(&state.actor, Event::DibrWritten)
                .plan(&plan.id)
                .message(format!(
                    "DIBR guide written to {} ({})",
                    out.display(),
                    doc.status
                ))
                .detail(serde_json::json!({
                    "markdown": markdown.display().to_string(),
                    "markdown_sha256": crate::load::sha256_hex(md.as_bytes()),
                    "html": html_path.display().to_string(),
                    "html_sha256": crate::load::sha256_hex(html.as_bytes()),
                    "built_from_head": doc.ledger.head,
                    "built_from_entries": doc.ledger.entries,
                })),
        )
    });
    let anchor = anchor.transpose()?;
    Ok(Written {
        anchor,
        status: doc.status.to_string(),
        steps: dibr::tally(&doc),
        plan,
        markdown,
        html: html_path,
    })
}

/// The revision history an earlier run kept in `out` (none on a first run).
fn read_history(out: &Path) -> Result<Vec<Revision>, Error> {
    let path = out.join(HISTORY);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            Error::Refused(format!(
                "{} is not a revision history ferry wrote: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::Refused(format!(
            "cannot read the revision history in {}: {e}",
            out.display()
        ))),
    }
}

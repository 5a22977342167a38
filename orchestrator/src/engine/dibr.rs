//! The DIBR guide as a library call: built from the saved plan, its inventory and the ledger,
//! written as Markdown and a self-contained HTML page, with the revision history kept across
//! runs beside them.

use std::path::{Path, PathBuf};

use super::{Error, State};
use crate::dibr::{self, Revision};
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
    let html = write("dibr.html", &html)?;
    let revisions = serde_json::to_string_pretty(&doc.revisions).expect("revisions serialize");
    write(HISTORY, &revisions)?;
    Ok(Written {
        status: doc.status.to_string(),
        steps: dibr::tally(&doc),
        plan,
        markdown,
        html,
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

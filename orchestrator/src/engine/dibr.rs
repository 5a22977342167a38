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
    /// The PDFs printed (`--pdf`): path, page size, SHA-256.
    pub pdfs: Vec<serde_json::Value>,
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
    pdf: bool,
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
    let pdfs = if pdf {
        print_pdfs(&doc, out)?
    } else {
        Vec::new()
    };
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
                    "pdf": pdfs,
                "built_from_head": doc.ledger.head,
                    "built_from_entries": doc.ledger.entries,
                })),
        )
    });
    let anchor = anchor.transpose()?;
    Ok(Written {
        pdfs,
        anchor,
        status: doc.status.to_string(),
        steps: dibr::tally(&doc),
        plan,
        markdown,
        html: html_path,
    })
}

/// The guide printed at Letter and A4 (`dibr-letter.pdf`, `dibr-a4.pdf` in `out`): each
/// one's path, page size and SHA-256.
fn print_pdfs(doc: &dibr::Doc, out: &Path) -> Result<Vec<serde_json::Value>, Error> {
    let mut pdfs = Vec::new();
    for (size, name) in [("Letter", "dibr-letter.pdf"), ("A4", "dibr-a4.pdf")] {
        let page = dibr::render_page(doc, "dibr.html.tera", dibr::HTML_TEMPLATE, Some(size))
            .map_err(|e| Error::Refused(e.to_string()))?;
        let path = out.join(name);
        print_pdf(&page, &path, out)?;
        let bytes = std::fs::read(&path)
            .map_err(|e| Error::Refused(format!("cannot read {}: {e}", path.display())))?;
        pdfs.push(serde_json::json!({
            "path": path.display().to_string(),
            "page": size,
            "sha256": crate::load::sha256_hex(&bytes),
        }));
    }
    Ok(pdfs)
}

/// Prints `html` to the PDF `to` with headless Chromium (`FERRY_CHROMIUM`, or `chromium` on
/// PATH). The page is ferry's own rendering of the guide, opened from a file in `dir` that is
/// removed afterwards; the browser gets a throwaway profile and needs no network.
fn print_pdf(html: &str, to: &Path, dir: &Path) -> Result<(), Error> {
    let refuse = |m: String| Error::Refused(format!("cannot print {}: {m}", to.display()));
    let id = uuid::Uuid::new_v4().simple().to_string();
    let page = dir.join(format!(".dibr-print-{id}.html"));
    crate::durable::write_atomic(&page, html.as_bytes()).map_err(|e| refuse(e.to_string()))?;
    let profile = std::env::temp_dir().join(format!("ferry-print-{id}"));
    let page_abs = std::fs::canonicalize(&page).map_err(|e| refuse(e.to_string()))?;
    let browser = std::env::var("FERRY_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let run = std::process::Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-pdf-header-footer",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--print-to-pdf={}", to.display()))
        .arg(format!("file://{}", page_abs.display()))
        .stdin(std::process::Stdio::null())
        .output();
    let _ = std::fs::remove_file(&page);
    let _ = std::fs::remove_dir_all(&profile);
    match run {
        Err(e) => Err(refuse(format!(
            "headless `{browser}` could not be started ({e}); install Chromium (Debian: apt-get install chromium) or set FERRY_CHROMIUM"
        ))),
        Ok(o) if !o.status.success() || !to.exists() => Err(refuse(format!(
            "`{browser}` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Ok(_) => Ok(()),
    }
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

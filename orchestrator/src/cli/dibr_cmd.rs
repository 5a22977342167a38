//! `ferry dibr`: the DIBR guide of a saved plan, as Markdown and a self-contained HTML page.

use std::path::Path;

use super::{CliError, Ctx, OutputFormat};
use crate::dibr::{self, Revision};
use crate::exit;
use crate::workspace;

const HISTORY: &str = "revision-history.json";

pub fn dibr(ctx: &Ctx, inventory: &Path, plan_path: &Path, out: &Path) -> Result<u8, CliError> {
    let (inv, _) = workspace::load(inventory, &[]).map_err(CliError::Invalid)?;
    let plan = workspace::read_plan(plan_path)?;
    let entries = ctx.ledger.read_all()?;
    let report = ctx.ledger.verify()?;
    let verified = match &report.tamper {
        None => "hash chain verified".to_owned(),
        Some(t) => format!("HASH CHAIN BROKEN: {t}"),
    };
    let refuse =
        |what: &str, e: std::io::Error| CliError::Refused(format!("{what} {}: {e}", out.display()));
    std::fs::create_dir_all(out).map_err(|e| refuse("cannot create", e))?;
    let history_path = out.join(HISTORY);
    let history: Vec<Revision> = match std::fs::read_to_string(&history_path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            CliError::Refused(format!(
                "{} is not a revision history ferry wrote: {e}",
                history_path.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(refuse("cannot read the revision history in", e)),
    };
    let doc = dibr::build(dibr::Inputs {
        plan: &plan,
        inventory: &inv.value,
        entries: &entries,
        ledger_path: &ctx.ledger.path().display().to_string(),
        ledger_verified: &verified,
        history,
    });
    let md = dibr::render(&doc, "dibr.md.tera", dibr::MARKDOWN_TEMPLATE)
        .map_err(|e| CliError::Refused(e.to_string()))?;
    let html = dibr::render(&doc, "dibr.html.tera", dibr::HTML_TEMPLATE)
        .map_err(|e| CliError::Refused(e.to_string()))?;
    let write = |name: &str, text: &str| -> Result<(), CliError> {
        let path = out.join(name);
        crate::durable::write_atomic(&path, text.as_bytes())
            .map_err(|e| CliError::Refused(format!("cannot write {}: {e}", path.display())))
    };
    write("dibr.md", &md)?;
    write("dibr.html", &html)?;
    write(
        HISTORY,
        &serde_json::to_string_pretty(&doc.revisions).expect("revisions serialize"),
    )?;
    match ctx.output {
        OutputFormat::Human => println!(
            "DIBR guide of plan {} ({}) written to {}/dibr.md and dibr.html",
            plan.id,
            doc.status,
            out.display()
        ),
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({
                "format": "ferry.dibr",
                "version": 1,
                "plan_id": plan.id,
                "status": doc.status,
                "markdown": out.join("dibr.md").display().to_string(),
                "html": out.join("dibr.html").display().to_string(),
                "steps": dibr::tally(&doc),
            })
        ),
    }
    Ok(exit::OK)
}

//! `ferry ledger verify`, `show` and `export`.

use std::io::Write;

use serde::Serialize;

use super::output::{JSON_VERSION, OutputFormat};
use super::{CliError, Ctx, EntryFilter, ExportFormat, LedgerCommand};
use crate::exit;
use crate::ledger::{Entry, Tamper, VerifyReport};

#[derive(Serialize)]
struct VerifyJson<'a> {
    format: &'static str,
    version: u32,
    ledger: String,
    ok: bool,
    entries: u64,
    head: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tamper: Option<&'a Tamper>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// The export document: the chain's verification first, then the selected entries.
#[derive(Serialize)]
struct ExportJson<'a> {
    format: &'static str,
    version: u32,
    ledger: String,
    exported_at: String,
    verification: &'a VerifyReport,
    filter: FilterJson<'a>,
    entries: &'a [Entry],
}

#[derive(Serialize)]
struct FilterJson<'a> {
    plan: Option<&'a str>,
    site: Option<&'a str>,
    app: Option<&'a str>,
    event: Option<&'a str>,
    since: Option<&'a str>,
    until: Option<&'a str>,
}

pub fn run(ctx: &Ctx, command: LedgerCommand) -> Result<u8, CliError> {
    match command {
        LedgerCommand::Verify {
            expect_head,
            inventory,
        } => verify(ctx, expect_head.as_deref(), inventory.as_deref()),
        LedgerCommand::Show { filter } => show(ctx, &filter),
        LedgerCommand::Export {
            format,
            out,
            filter,
        } => export(ctx, format, out.as_deref(), &filter),
        LedgerCommand::Repair { reason } => repair(ctx, &reason),
    }
}

fn repair(ctx: &Ctx, reason: &str) -> Result<u8, CliError> {
    let done = ctx.ledger.repair(&ctx.actor, reason)?;
    let path = ctx.ledger.path().display();
    match ctx.output {
        OutputFormat::Human => match &done {
            crate::ledger::Repair::Nothing => {
                println!("ledger {path} ends with a complete line: nothing to repair");
            }
            crate::ledger::Repair::Completed { seq } => println!(
                "ledger {path}: entry #{seq} was whole but missing its newline; completed and recorded"
            ),
            crate::ledger::Repair::SetAside {
                bytes,
                sha256,
                kept_at,
            } => println!(
                "ledger {path}: {bytes} torn byte(s) (sha256 {sha256}) moved to {kept_at}; the ledger ends at its last full entry; recorded as ledger_repaired"
            ),
        },
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({
                "format": "ferry.ledger-repair",
                "version": JSON_VERSION,
                "ledger": ctx.ledger.path().display().to_string(),
                "result": done,
            })
        ),
    }
    Ok(exit::OK)
}

impl EntryFilter {
    /// Whether an entry passes the filter (times parsed once).
    fn matcher(&self) -> Result<impl Fn(&Entry) -> bool + '_, CliError> {
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
    fn select_from(&self, ledger: &crate::ledger::Ledger) -> Result<Vec<Entry>, CliError> {
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

fn show(ctx: &Ctx, filter: &EntryFilter) -> Result<u8, CliError> {
    if ctx.output == OutputFormat::Json {
        // JSON Lines straight from the stream: nothing is held.
        let keep = filter.matcher()?;
        let out = std::io::stdout();
        let mut out = std::io::BufWriter::new(out.lock());
        ctx.ledger.for_each_parsed(&mut |e| {
            if keep(&e) {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string(&e).expect("entries serialize")
                );
            }
        })?;
        return Ok(exit::OK);
    }
    let entries = filter.select_from(&ctx.ledger)?;
    match ctx.output {
        OutputFormat::Json => {}
        OutputFormat::Human => {
            for e in &entries {
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
                println!("{line}");
            }
            println!(
                "{} entr{}",
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" }
            );
        }
    }
    Ok(exit::OK)
}

fn outcome_text(o: crate::ledger::Outcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Writes the export; exit 7 when the chain does not verify (the export is still written, with
/// that fact in it, so an auditor sees what is there).
fn export(
    ctx: &Ctx,
    format: ExportFormat,
    out: Option<&std::path::Path>,
    filter: &EntryFilter,
) -> Result<u8, CliError> {
    let report = ctx.ledger.verify()?;
    let entries = filter.select_from(&ctx.ledger)?;
    let bytes = match format {
        ExportFormat::Json => {
            let doc = ExportJson {
                format: "ferry.ledger-export",
                version: JSON_VERSION,
                ledger: ctx.ledger.path().display().to_string(),
                exported_at: crate::ledger::now(),
                verification: &report,
                filter: FilterJson {
                    plan: filter.plan.as_deref(),
                    site: filter.site.as_deref(),
                    app: filter.app.as_deref(),
                    event: filter.event.as_deref(),
                    since: filter.since.as_deref(),
                    until: filter.until.as_deref(),
                },
                entries: &entries,
            };
            let mut v = serde_json::to_vec_pretty(&doc).expect("export serializes");
            v.push(b'\n');
            v
        }
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let header = [
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
            ];
            let csv_err = |e: csv::Error| CliError::Refused(format!("cannot write CSV: {e}"));
            w.write_record(header).map_err(csv_err)?;
            let o = |v: &Option<String>| v.clone().unwrap_or_default();
            for e in &entries {
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
                .map_err(|e| CliError::Refused(format!("cannot write CSV: {e}")))?
        }
    };
    match out {
        Some(path) => std::fs::write(path, &bytes)
            .map_err(|e| CliError::Refused(format!("cannot write {}: {e}", path.display())))?,
        None => std::io::stdout()
            .write_all(&bytes)
            .map_err(|e| CliError::Refused(format!("cannot write to stdout: {e}")))?,
    }
    if let Some(t) = &report.tamper {
        eprintln!(
            "warning: ledger {} is NOT intact: {t}; the export says so (verification.tamper)",
            ctx.ledger.path().display()
        );
        return Ok(exit::TAMPERED);
    }
    Ok(exit::OK)
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, CliError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| CliError::Refused(format!("`{s}` is not an RFC 3339 time: {e}")))
}

/// Every approval's signature, and with the inventory, the signer's key and role: the first
/// that fails, as a message naming the entry.
fn check_approvals(
    entries: &[Entry],
    approvers: Option<&[crate::model::Approver]>,
) -> Option<String> {
    for e in entries
        .iter()
        .filter(|e| e.event == crate::ledger::Event::Approval)
    {
        let parsed = e
            .detail
            .clone()
            .ok_or_else(|| "it carries no signed approval".to_owned())
            .and_then(|d| {
                serde_json::from_value::<crate::approval::SignedApproval>(d)
                    .map_err(|err| format!("its signed approval does not parse: {err}"))
            });
        let result = parsed.and_then(|a| {
            if e.plan_id.as_deref() != Some(a.payload.plan_id.as_str()) {
                return Err("it is filed under another plan than the one signed".into());
            }
            crate::approval::verify(&a, approvers)
                .map_err(|m| format!("gate `{}` by {}: {m}", a.payload.gate, a.payload.approver))
        });
        if let Err(m) = result {
            return Some(format!("entry #{} (approval) is not valid: {m}", e.seq));
        }
    }
    None
}

fn verify(
    ctx: &Ctx,
    expect_head: Option<&str>,
    inventory: Option<&std::path::Path>,
) -> Result<u8, CliError> {
    // One pass over the ledger, keeping only the approvals to check.
    let mut approvals = Vec::new();
    let report = ctx.ledger.verify_each(&mut |e| {
        if e.event == crate::ledger::Event::Approval {
            approvals.push(e);
        }
    })?;
    let approvers = match inventory {
        Some(p) => Some(
            crate::workspace::load(p, &[])
                .map_err(CliError::Invalid)?
                .0
                .value
                .approvers,
        ),
        None => None,
    };
    let head_mismatch = match (expect_head, report.head.as_deref()) {
        (Some(want), got) if report.tamper.is_none() && got != Some(want) => Some(format!(
            "the chain ends at {} but {want} was expected: entries were removed from the end or the ledger was replaced",
            got.unwrap_or("(empty)")
        )),
        _ if report.tamper.is_none() => check_approvals(&approvals, approvers.as_deref()),
        _ => None,
    };
    let ok = report.tamper.is_none() && head_mismatch.is_none();
    match ctx.output {
        OutputFormat::Human => {
            if let Some(t) = &report.tamper {
                println!("ledger {} is NOT intact: {t}", ctx.ledger.path().display());
                println!(
                    "{} entr{} before it verified.",
                    report.entries,
                    if report.entries == 1 { "y" } else { "ies" }
                );
            } else if let Some(m) = &head_mismatch {
                println!("ledger {} is NOT intact: {m}", ctx.ledger.path().display());
            } else {
                println!(
                    "ledger {} verified: {} entries, head {}",
                    ctx.ledger.path().display(),
                    report.entries,
                    report.head.as_deref().unwrap_or("-")
                );
                if approvers.is_some() {
                    println!("approvals: signatures, keys and roles checked against the inventory");
                } else {
                    println!(
                        "approvals: signatures checked; give -i INVENTORY to check the signers' keys and roles"
                    );
                }
            }
        }
        OutputFormat::Json => {
            let j = VerifyJson {
                format: "ferry.ledger-verify",
                version: JSON_VERSION,
                ledger: ctx.ledger.path().display().to_string(),
                ok,
                entries: report.entries,
                head: report.head.as_deref(),
                tamper: report.tamper.as_ref(),
                message: report
                    .tamper
                    .as_ref()
                    .map(ToString::to_string)
                    .or(head_mismatch),
            };
            println!("{}", serde_json::to_string(&j).expect("serializes"));
        }
    }
    Ok(if ok { exit::OK } else { exit::TAMPERED })
}

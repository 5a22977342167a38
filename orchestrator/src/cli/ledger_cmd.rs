//! `ferry ledger verify`, `show`, `export` and `repair`: the queries are `engine::audit`'s.

use std::io::Write;
use std::path::Path;

use super::{CliError, Ctx, EntryFilter, ExportFormat, LedgerCommand};
use crate::engine::audit::{self, Export, Filter};
use crate::exit;
use crate::printer::JSON_VERSION;

impl From<EntryFilter> for Filter {
    fn from(f: EntryFilter) -> Self {
        Filter {
            plan: f.plan,
            site: f.site,
            app: f.app,
            event: f.event,
            since: f.since,
            until: f.until,
        }
    }
}

pub fn run(ctx: &Ctx, command: LedgerCommand) -> Result<u8, CliError> {
    match command {
        LedgerCommand::Verify {
            expect_head,
            inventory,
            checkpoints,
            checkpoint_key,
        } => {
            let cps = match checkpoints {
                Some(p) => audit::Checkpoints::read(&p, checkpoint_key)?,
                None => audit::Checkpoints::default(),
            };
            verify(ctx, expect_head.as_deref(), inventory.as_deref(), &cps)
        }
        LedgerCommand::Checkpoint { key, out } => {
            let signing = checkpoint_key(&key)?;
            let c = audit::checkpoint(&ctx.state(), &signing, out.as_deref())?;
            let text = format!(
                "checkpoint of entry {} ({}) signed by {}{}",
                c.payload.seq,
                c.payload.hash,
                c.public_key,
                out.map(|p| format!(", appended to {}", p.display()))
                    .unwrap_or_default()
            );
            match ctx.output {
                super::OutputFormat::Json => println!(
                    "{}",
                    serde_json::json!({"format": "ferry.checkpoint", "version": JSON_VERSION, "checkpoint": c})
                ),
                super::OutputFormat::Human => println!("{text}"),
            }
            Ok(exit::OK)
        }
        LedgerCommand::Show { filter } => show(ctx, &filter.into()),
        LedgerCommand::Export {
            format,
            out,
            filter,
        } => export(ctx, format, out.as_deref(), &filter.into()),
        LedgerCommand::Repair { reason } => {
            let done = ctx.ledger.repair(&ctx.actor, &reason)?;
            ctx.out().repaired(&ctx.ledger.location(), &done);
            Ok(exit::OK)
        }
    }
}

/// Every selected entry, as the ledger is read (JSON Lines hold nothing in memory).
fn show(ctx: &Ctx, filter: &Filter) -> Result<u8, CliError> {
    let keep = filter.matcher()?;
    let mut out = ctx.out();
    let mut count = 0;
    ctx.ledger.for_each_parsed(&mut |e| {
        if keep(&e) {
            out.entry(&e);
            count += 1;
        }
    })?;
    out.entries_end(count);
    Ok(exit::OK)
}

/// Writes the export; exit 7 when the chain does not verify (the export is still written, with
/// that fact in it, so an auditor sees what is there).
fn export(
    ctx: &Ctx,
    format: ExportFormat,
    out: Option<&Path>,
    filter: &Filter,
) -> Result<u8, CliError> {
    let report = ctx.ledger.verify()?;
    let entries = filter.select(&ctx.ledger)?;
    let bytes = match format {
        ExportFormat::Json => {
            let doc = Export {
                format: "ferry.ledger-export",
                version: JSON_VERSION,
                ledger: ctx.ledger.location(),
                exported_at: crate::ledger::now(),
                verification: &report,
                filter,
                entries: &entries,
            };
            let mut v = serde_json::to_vec_pretty(&doc).expect("export serializes");
            v.push(b'\n');
            v
        }
        ExportFormat::Csv => audit::csv(&entries)?,
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
            ctx.ledger.location()
        );
        return Ok(exit::TAMPERED);
    }
    Ok(exit::OK)
}

fn verify(
    ctx: &Ctx,
    expect_head: Option<&str>,
    inventory: Option<&Path>,
    checkpoints: &audit::Checkpoints,
) -> Result<u8, CliError> {
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
    let v = audit::verify(&ctx.ledger, expect_head, approvers.as_deref(), checkpoints)?;
    ctx.out().verified(&ctx.ledger.location(), &v);
    Ok(if v.ok() { exit::OK } else { exit::TAMPERED })
}

/// The signing key a checkpoint is made with: a secret reference (`env:`/`file:`) to the
/// base64 seed `ferry keygen` writes.
pub fn checkpoint_key(reference: &str) -> Result<crate::approval::SigningKey, CliError> {
    let secret = crate::secret::SecretRef::parse(reference)
        .and_then(|r| r.resolve("--key", Path::new(".")))
        .map_err(|e| CliError::Refused(e.to_string()))?;
    crate::approval::parse_signing_key(secret.expose())
        .map_err(|m| CliError::Refused(format!("checkpoint key: {m}")))
}

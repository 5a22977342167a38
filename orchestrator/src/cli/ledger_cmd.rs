//! `ferry ledger verify` and `ferry ledger show`.

use serde::Serialize;

use super::output::{JSON_VERSION, OutputFormat};
use super::{CliError, Ctx, LedgerCommand};
use crate::exit;
use crate::ledger::{Entry, Tamper};

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

pub fn run(ctx: &Ctx, command: LedgerCommand) -> Result<u8, CliError> {
    match command {
        LedgerCommand::Verify { expect_head } => verify(ctx, expect_head.as_deref()),
        LedgerCommand::Show {
            plan,
            site,
            app,
            event,
            since,
            until,
        } => {
            let since = since.as_deref().map(parse_time).transpose()?;
            let until = until.as_deref().map(parse_time).transpose()?;
            let entries: Vec<Entry> = ctx
                .ledger
                .read_all()?
                .into_iter()
                .filter(|e| {
                    plan.as_deref()
                        .is_none_or(|p| e.plan_id.as_deref() == Some(p))
                })
                .filter(|e| site.as_deref().is_none_or(|s| e.site.as_deref() == Some(s)))
                .filter(|e| app.as_deref().is_none_or(|a| e.app.as_deref() == Some(a)))
                .filter(|e| event.as_deref().is_none_or(|ev| e.event.as_str() == ev))
                .filter(|e| {
                    let t = chrono::DateTime::parse_from_rfc3339(&e.time).ok();
                    since.is_none_or(|s| t.is_some_and(|t| t >= s))
                        && until.is_none_or(|u| t.is_some_and(|t| t < u))
                })
                .collect();
            match ctx.output {
                OutputFormat::Json => {
                    for e in &entries {
                        println!("{}", serde_json::to_string(e).expect("entries serialize"));
                    }
                }
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
                            line.push_str(&format!(
                                " [{}]",
                                serde_json::to_value(o)
                                    .ok()
                                    .and_then(|v| v.as_str().map(str::to_owned))
                                    .unwrap_or_default()
                            ));
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
    }
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, CliError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| CliError::Refused(format!("`{s}` is not an RFC 3339 time: {e}")))
}

fn verify(ctx: &Ctx, expect_head: Option<&str>) -> Result<u8, CliError> {
    let report = ctx.ledger.verify()?;
    let head_mismatch = match (expect_head, report.head.as_deref()) {
        (Some(want), got) if report.tamper.is_none() && got != Some(want) => Some(format!(
            "the chain ends at {} but {want} was expected: entries were removed from the end or the ledger was replaced",
            got.unwrap_or("(empty)")
        )),
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

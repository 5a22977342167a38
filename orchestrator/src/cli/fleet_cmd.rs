//! `ferry collect serve|enroll` (the central collector of agents' ledgers) and `ferry fleet
//! status` (every agent's last report, and how late it is).

use std::path::PathBuf;

use clap::Subcommand;
use serde::Serialize;

use super::{CliError, Ctx, OutputFormat};
use crate::collect::store::{SiteRecord, Store};
use crate::exit;

#[derive(Debug, Subcommand)]
pub enum CollectCommand {
    /// Receive agents' reports over HTTPS: each site's ledger copy (appended only when the
    /// shipped entries chain to what is held) and its last status, under DIR/sites/SITE/.
    Serve {
        /// Address to listen on (`0.0.0.0:8443`).
        #[arg(long)]
        listen: String,
        #[arg(long)]
        dir: PathBuf,
        /// Which token writes which site (`ferry collect enroll` adds to it).
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long)]
        tls_cert: PathBuf,
        #[arg(long)]
        tls_key: PathBuf,
    },
    /// Make a token for a site's agent: its digest goes into the tokens file, the token
    /// itself into `--token-out` (mode 0600) for the agent's `report.token: file:PATH`.
    Enroll {
        #[arg(long)]
        site: String,
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long)]
        token_out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Every agent's last report: when, its versions running and desired, its last pass, how
    /// late it is, and whether its collected ledger is a whole chain. Exit 0: every agent
    /// reported on time; 11: one is late or (with --inventory) never reported; 7: a collected
    /// ledger is broken.
    Status {
        /// The collector's directory.
        #[arg(long)]
        collector: PathBuf,
        /// Also list the inventory's sites that never reported.
        #[arg(short, long)]
        inventory: Option<PathBuf>,
        /// Late once this many intervals passed without a report.
        #[arg(long, default_value_t = 2.0)]
        late_after: f64,
    },
}

pub fn run_collect(ctx: &Ctx, command: CollectCommand) -> Result<u8, CliError> {
    match command {
        CollectCommand::Serve {
            listen,
            dir,
            tokens,
            tls_cert,
            tls_key,
        } => {
            let cfg = crate::collect::server::ServeConfig {
                listen,
                dir,
                tokens,
                cert: tls_cert,
                key: tls_key,
            };
            super::runtime()?
                .block_on(crate::collect::server::serve(cfg, |addr| {
                    println!("ferry collect: listening on https://{addr}/");
                }))
                .map_err(CliError::Refused)?;
            Ok(exit::OK)
        }
        CollectCommand::Enroll {
            site,
            tokens,
            token_out,
        } => {
            let token = crate::collect::store::enroll(&tokens, &site).map_err(CliError::Refused)?;
            crate::artifact::create_new(&token_out, 0o600)
                .and_then(|mut f| std::io::Write::write_all(&mut f, token.as_bytes()))
                .map_err(|e| CliError::Refused(format!("{}: {e}", token_out.display())))?;
            if matches!(ctx.output, OutputFormat::Human) {
                println!(
                    "Site {site} enrolled in {}; its token is in {} (give it to the agent as report.token: file:PATH).",
                    tokens.display(),
                    token_out.display()
                );
            }
            Ok(exit::OK)
        }
    }
}

/// One row of `fleet status`.
#[derive(Debug, Serialize)]
struct Row {
    site: String,
    reported: bool,
    received_at: Option<String>,
    late: bool,
    /// Seconds past the time the next report was due (0 when on time).
    late_by_secs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<SiteRecord>,
    /// The collected ledger: entries held and the first problem, if any.
    entries: u64,
    chain: Option<String>,
}

pub fn run_fleet(ctx: &Ctx, command: FleetCommand) -> Result<u8, CliError> {
    let FleetCommand::Status {
        collector,
        inventory,
        late_after,
    } = command;
    let store = Store::open(&collector)
        .map_err(|e| CliError::Refused(format!("{}: {e}", collector.display())))?;
    let records = store
        .records()
        .map_err(|e| CliError::Refused(e.to_string()))?;
    let mut sites: std::collections::BTreeSet<String> = records.keys().cloned().collect();
    if let Some(inv) = &inventory {
        let (inv, _) = crate::workspace::load(inv, &[]).map_err(CliError::Invalid)?;
        sites.extend(inv.value.sites.iter().map(|s| s.id.clone()));
    }
    let now = chrono::Utc::now();
    let mut rows = Vec::new();
    for site in sites {
        let record = records.get(&site).cloned();
        rows.push(row(&store, site, record, now, late_after)?);
    }
    print(ctx, &rows);
    Ok(if rows.iter().any(|r| r.chain.is_some()) {
        exit::TAMPERED
    } else if rows.iter().any(|r| r.late) {
        exit::AGENTS_LATE
    } else {
        exit::OK
    })
}

fn row(
    store: &Store,
    site: String,
    record: Option<SiteRecord>,
    now: chrono::DateTime<chrono::Utc>,
    late_after: f64,
) -> Result<Row, CliError> {
    let verified = crate::ledger::Ledger::new(store.ledger_path(&site)).verify()?;
    let Some(r) = record else {
        return Ok(Row {
            site,
            reported: false,
            received_at: None,
            late: true,
            late_by_secs: 0,
            record: None,
            entries: verified.entries,
            chain: verified.tamper.map(|t| t.to_string()),
        });
    };
    let at = chrono::DateTime::parse_from_rfc3339(&r.received_at)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or(now);
    // The agent's own interval, its host offset (a tenth at most) and `late_after` of them.
    let allowed = (r.status.interval_secs as f64 * (late_after + 0.1)) as i64;
    let due = at + chrono::Duration::seconds(allowed.max(60));
    let late_by = (now - due).num_seconds().max(0) as u64;
    Ok(Row {
        site,
        reported: true,
        received_at: Some(r.received_at.clone()),
        late: now > due,
        late_by_secs: late_by,
        record: Some(r),
        entries: verified.entries,
        chain: verified.tamper.map(|t| t.to_string()),
    })
}

fn print(ctx: &Ctx, rows: &[Row]) {
    if matches!(ctx.output, OutputFormat::Json) {
        println!(
            "{}",
            serde_json::json!({"format": "ferry.fleet_status", "version": crate::printer::JSON_VERSION, "sites": rows})
        );
        return;
    }
    for r in rows {
        let Some(rec) = &r.record else {
            println!("{}: never reported", r.site);
            continue;
        };
        let when = if r.late {
            format!(
                "LATE by {}",
                humantime::format_duration(std::time::Duration::from_secs(r.late_by_secs))
            )
        } else {
            "on time".into()
        };
        println!(
            "{}: last report {} ({when}), agent {}, channel version {}, last pass exit {}: {}",
            r.site,
            rec.received_at,
            rec.status.agent_version,
            rec.status
                .channel_version
                .map_or("none".into(), |v| v.to_string()),
            rec.status.last_code,
            rec.status.last_message
        );
        for a in &rec.status.apps {
            println!(
                "  {}: running {}, desired {}",
                a.app,
                a.running.as_deref().unwrap_or("nothing"),
                a.desired.as_deref().unwrap_or("unknown")
            );
        }
        match &r.chain {
            None => println!("  ledger: {} entries collected, chain whole", r.entries),
            Some(t) => println!("  ledger: BROKEN after {} entries: {t}", r.entries),
        }
    }
}

//! `ferry snapshot list|create` and `ferry runbook list|show|run`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::output::OutputFormat;
use super::{CliError, Ctx, plan_cmd};
use crate::drivers::OpContext;
use crate::drivers::OpRunner;
use crate::drivers::rds::RdsOps;
use crate::ledger::{Event, NewEntry, Outcome};
use crate::load::{self, Loaded};
use crate::model::{Inventory, Runbook};
use crate::ops::{self, Op};
use crate::plan::{self, InputFile, StepOp};
use crate::{exit, runbook, workspace};

fn stderr_say(line: String) {
    eprintln!("{line}");
}

fn load_inventory(inventory: &Path) -> Result<Loaded<Inventory>, CliError> {
    Ok(workspace::load(inventory, &[])
        .map_err(CliError::Invalid)?
        .0)
}

fn database_known(inv: &Inventory, database: &str) -> Result<(), CliError> {
    if inv.database(database).is_some() {
        return Ok(());
    }
    Err(CliError::Refused(format!(
        "database `{database}` is not in the inventory (it has: {})",
        inv.databases
            .iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

fn driver_error(e: crate::drivers::DriverError) -> CliError {
    CliError::Refused(e.to_string())
}

pub async fn snapshot_list(ctx: &Ctx, inventory: &Path, database: &str) -> Result<u8, CliError> {
    let inv = load_inventory(inventory)?;
    database_known(&inv.value, database)?;
    let base = workspace::base_dir(&inv.source.path);
    let rds = RdsOps::new(&inv.value, &base);
    let list = rds
        .snapshots(database, &stderr_say)
        .await
        .map_err(driver_error)?;
    match ctx.output {
        OutputFormat::Human => {
            let db = inv.value.database(database).expect("checked");
            println!(
                "Snapshots of database `{database}` (instance {}, cloud {}):",
                db.identifier, db.cloud
            );
            if list.is_empty() {
                println!("  (none)");
            }
            for s in &list {
                println!(
                    "  {:<50} {:<10} {:<10} {}",
                    s.id,
                    s.kind,
                    s.status,
                    if s.created.is_empty() {
                        "-"
                    } else {
                        &s.created
                    }
                );
            }
        }
        OutputFormat::Json => println!(
            "{}",
            json!({ "format": "ferry.snapshots", "version": super::output::JSON_VERSION, "database": database, "snapshots": list })
        ),
    }
    Ok(exit::OK)
}

pub async fn snapshot_create(
    ctx: &Ctx,
    inventory: &Path,
    database: &str,
    id: Option<&str>,
    timeout_seconds: u64,
) -> Result<u8, CliError> {
    let inv = load_inventory(inventory)?;
    database_known(&inv.value, database)?;
    let db = inv.value.database(database).expect("checked").clone();
    let id = match id {
        Some(i) => i.to_owned(),
        None => format!(
            "ferry-{}-{}",
            db.identifier,
            chrono::Utc::now().format("%Y%m%d-%H%M%S")
        ),
    };
    let base = workspace::base_dir(&inv.source.path);
    let rds = RdsOps::new(&inv.value, &base);
    let target = plan::database_target(&inv.value, database)?;
    let op = Op::RdsSnapshot {
        database: database.to_owned(),
        identifier: db.identifier.clone(),
        snapshot_id: Some(id.clone()),
        timeout_seconds,
    };
    let operation = format!("snapshot-{}", uuid::Uuid::new_v4());
    let entry = |event| {
        let mut e = NewEntry::new(&ctx.actor, event);
        e.target = Some(target.id.clone());
        e.site = Some(target.site.clone());
        e.app = Some(database.to_owned());
        e.step = Some(operation.clone());
        e.to = Some(op.name().to_owned());
        e
    };
    ctx.ledger
        .append(entry(Event::OperationStarted).message(op.describe()))?;
    let cx = OpContext {
        plan_id: &operation,
        step_id: "create",
        say: &stderr_say,
    };
    match rds.run(&cx, &op).await {
        Ok(detail) => {
            ctx.ledger.append(
                entry(Event::OperationFinished)
                    .outcome(Outcome::Ok)
                    .message(format!("snapshot {id} available"))
                    .detail(detail.clone()),
            )?;
            match ctx.output {
                OutputFormat::Human => println!(
                    "Snapshot {id} of database `{database}` is available (created {}).",
                    detail["created"].as_str().unwrap_or("-")
                ),
                OutputFormat::Json => println!(
                    "{}",
                    json!({ "format": "ferry.snapshot", "version": super::output::JSON_VERSION, "snapshot": detail })
                ),
            }
            Ok(exit::OK)
        }
        Err(e) => {
            ctx.ledger.append(
                entry(Event::OperationFinished)
                    .outcome(Outcome::Failed)
                    .message(e.to_string()),
            )?;
            Err(driver_error(e))
        }
    }
}

/// `NAME` is `DIR/NAME.yaml`; a path to a YAML file is taken as it is.
fn runbook_path(dir: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if name.ends_with(".yaml") || name.ends_with(".yml") {
        p.to_owned()
    } else {
        dir.join(format!("{name}.yaml"))
    }
}

fn load_runbook(dir: &Path, name: &str) -> Result<Loaded<Runbook>, CliError> {
    let path = runbook_path(dir, name);
    let src = load::read_source(&path).map_err(|mut p| {
        if !path.exists() {
            p.message = format!(
                "no runbook `{name}` in {} (see `ferry runbook list`)",
                dir.display()
            );
        }
        CliError::Invalid(vec![p].into())
    })?;
    load::parse_runbook(src).map_err(CliError::Invalid)
}

pub fn runbook_list(ctx: &Ctx, dir: &Path) -> Result<u8, CliError> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| CliError::Refused(format!("cannot read {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    names.sort();
    let mut rows = Vec::new();
    for p in names {
        let src = load::read_source(&p).map_err(|p| CliError::Invalid(vec![p].into()))?;
        let rb = load::parse_runbook(src).map_err(CliError::Invalid)?;
        rows.push(json!({
            "name": rb.value.name,
            "file": p.display().to_string(),
            "description": rb.value.description,
            "steps": rb.value.steps.len(),
        }));
    }
    match ctx.output {
        OutputFormat::Human => {
            for r in &rows {
                println!(
                    "{:<28} {} step(s)  {}",
                    r["name"].as_str().unwrap_or_default(),
                    r["steps"],
                    r["description"].as_str().unwrap_or_default()
                );
            }
        }
        OutputFormat::Json => println!(
            "{}",
            json!({ "format": "ferry.runbooks", "version": super::output::JSON_VERSION, "runbooks": rows })
        ),
    }
    Ok(exit::OK)
}

pub fn runbook_show(ctx: &Ctx, dir: &Path, name: &str) -> Result<u8, CliError> {
    let rb = load_runbook(dir, name)?;
    let r = &rb.value;
    match ctx.output {
        OutputFormat::Human => {
            println!("Runbook `{}` ({})", r.name, rb.source.display_path());
            if let Some(d) = &r.description {
                println!("{d}");
            }
            println!("\nParameters:");
            for p in &r.params {
                println!(
                    "  {:<22} {:<10} {}{}",
                    p.name,
                    p.ty.as_str(),
                    p.default
                        .as_deref()
                        .map_or("required".to_owned(), |d| format!("default `{d}`")),
                    p.description
                        .as_deref()
                        .map(|d| format!(" — {d}"))
                        .unwrap_or_default()
                );
            }
            println!("\nSteps:");
            for (n, s) in r.steps.iter().enumerate() {
                println!("  {}. {} `{}` [{}]", n + 1, s.title, s.id, s.action);
                for (k, v) in &s.with {
                    println!("       {k}: {}", v.trim_end().replace('\n', "\n         "));
                }
                if let Some(f) = &s.on_failure {
                    println!("       on failure: {f}");
                }
            }
        }
        OutputFormat::Json => println!(
            "{}",
            json!({ "format": "ferry.runbook", "version": super::output::JSON_VERSION, "runbook": r })
        ),
    }
    Ok(exit::OK)
}

pub struct RunArgs<'a> {
    pub dir: &'a Path,
    pub name: &'a str,
    pub inventory: &'a Path,
    pub params: &'a [String],
    pub out: Option<&'a Path>,
    pub plan_only: bool,
    pub confirm: &'a [String],
}

/// Plans the runbook (observing the cloud for what the plan must name), writes and prints the
/// plan, and unless `--plan-only` applies it through the same engine as a release.
pub async fn runbook_run(ctx: &Ctx, a: RunArgs<'_>) -> Result<u8, CliError> {
    let inv = load_inventory(a.inventory)?;
    let rb = load_runbook(a.dir, a.name)?;
    let mut args = BTreeMap::new();
    for p in a.params {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| CliError::Refused(format!("--param `{p}`: write it as NAME=VALUE")))?;
        if args.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(CliError::Refused(format!("--param {k} is given twice")));
        }
    }
    let compiled = runbook::compile(&rb, &inv.value, &args).map_err(CliError::Invalid)?;
    let base = workspace::base_dir(&inv.source.path);
    let rds = RdsOps::new(&inv.value, &base);
    let default_db = compiled
        .steps
        .iter()
        .find_map(|d| d.op.database())
        .map(str::to_owned);
    let mut steps = Vec::new();
    let mut problems = Vec::new();
    // Each database's instance as it is now, described once however many steps ask.
    let mut described = BTreeMap::new();
    for d in compiled.steps {
        let mut op = d.op;
        // What only the cloud can say is decided now, so the plan names it for review.
        match &mut op {
            Op::RdsRestore {
                database,
                snapshot_id,
                chosen,
                new_identifier,
                ..
            } => {
                let choose = d.choose.clone().unwrap_or(runbook::Choose {
                    named: None,
                    before: None,
                });
                let list = rds
                    .snapshots(database, &stderr_say)
                    .await
                    .map_err(driver_error)?;
                match ops::choose_snapshot(&list, choose.named.as_deref(), choose.before.as_deref())
                {
                    Ok((s, why)) => {
                        *snapshot_id = s.id.clone();
                        *chosen = format!("{why}; created {}", s.created);
                    }
                    Err(e) => {
                        problems.push(format!("step `{}`: {e} for database `{database}`", d.id))
                    }
                }
                if let Some(i) = rds
                    .instance(database, new_identifier, &stderr_say)
                    .await
                    .map_err(driver_error)?
                {
                    problems.push(format!(
                        "step `{}`: instance id {new_identifier} is already taken (status `{}`); choose another with --param new_identifier=...",
                        d.id, i.status
                    ));
                }
            }
            Op::RdsVerify {
                database,
                engine_version,
                ..
            } if engine_version.is_none() => {
                let now = current(&rds, &mut described, database).await?;
                *engine_version = Some(now.engine_version.clone());
            }
            Op::RdsSnapshot { database, .. } => {
                current(&rds, &mut described, database).await?;
            }
            _ => {}
        }
        let target = match op.database().or(default_db.as_deref()) {
            Some(db) => plan::database_target(&inv.value, db)?,
            None => {
                crate::target::TargetRef::new("-", "-", "operator", crate::model::TargetKind::Rds)
            }
        };
        steps.push((
            d.id,
            target,
            StepOp {
                title: d.title,
                op,
                on_failure: d.on_failure,
            },
        ));
    }
    if !problems.is_empty() {
        return Err(CliError::Refused(format!(
            "runbook `{}` cannot be planned:\n  - {}",
            rb.value.name,
            problems.join("\n  - ")
        )));
    }
    let body = plan::plan_runbook(&rb.value.name, steps);
    let inputs = vec![
        InputFile {
            role: "inventory".into(),
            path: workspace::canonical(&inv.source.path),
            sha256: inv.source.sha256.clone(),
        },
        InputFile {
            role: "runbook".into(),
            path: workspace::canonical(&rb.source.path),
            sha256: rb.source.sha256.clone(),
        },
    ];
    let saved = workspace::new_saved_plan(&ctx.actor, inputs, body);
    let out = match a.out {
        Some(p) => p.to_owned(),
        None => ctx.state_dir.join("runbooks").join(format!(
            "{}-{}.json",
            rb.value.name,
            &saved.id[..8]
        )),
    };
    workspace::write_plan(&out, &saved)?;
    plan_cmd::record_plan_created(ctx, &saved, &out)?;
    if a.plan_only || ctx.output == OutputFormat::Human {
        plan_cmd::print_plan(ctx, &saved, &out);
    }
    if ctx.output == OutputFormat::Human && !compiled.params.is_empty() {
        println!(
            "Parameters: {}",
            compiled
                .params
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_owned)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if a.plan_only {
        return Ok(exit::CHANGES);
    }
    let r = super::apply::apply_plan(ctx, &out, super::apply::Options::fresh(a.confirm)).await?;
    super::apply::print_apply(ctx, &r, &out);
    Ok(r.code)
}

/// The database's instance now (it must exist), from `cache` after the first description.
async fn current<'c>(
    rds: &RdsOps,
    cache: &'c mut BTreeMap<String, crate::drivers::rds::api::InstanceInfo>,
    database: &str,
) -> Result<&'c crate::drivers::rds::api::InstanceInfo, CliError> {
    if !cache.contains_key(database) {
        let now = rds
            .describe(database, &stderr_say)
            .await
            .map_err(driver_error)?;
        cache.insert(database.to_owned(), now);
    }
    Ok(&cache[database])
}

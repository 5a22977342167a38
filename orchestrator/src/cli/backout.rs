//! `ferry backout`: return an app on a site to its previous recorded release.

use std::path::Path;
use std::time::Duration;

use super::apply::{apply_plan, print_apply};
use super::plan_cmd::{print_plan, record_plan_created};
use super::{CliError, Ctx};
use crate::drivers::Drivers;
use crate::ledger::{Entry, Event};
use crate::plan::{self, InputFile, PLAN_FORMAT, PLAN_FORMAT_VERSION, SavedPlan};
use crate::target::resolve;
use crate::{exit, workspace};

pub async fn backout(
    ctx: &Ctx,
    inventory: &Path,
    app: &str,
    site: &str,
    to: Option<&str>,
    dry_run: bool,
) -> Result<u8, CliError> {
    let (inv, _) = workspace::load(inventory, &[]).map_err(CliError::Invalid)?;
    let a = inv.value.app(app).ok_or_else(|| {
        CliError::Refused(format!("app `{app}` is not in {}", inventory.display()))
    })?;
    if inv.value.site(site).is_none() {
        return Err(CliError::Refused(format!(
            "site `{site}` is not in {}",
            inventory.display()
        )));
    }
    let targets = resolve(&inv.value, a, site);
    if targets.is_empty() {
        return Err(CliError::Refused(format!(
            "app `{app}` is not installed on site `{site}`"
        )));
    }
    let base = workspace::base_dir(&inv.source.path);
    let specs = targets
        .iter()
        .map(|t| workspace::target_spec(&inv.value, &base, t, false))
        .collect::<Result<Vec<_>, _>>()?;
    let observed = workspace::observe_all(&Drivers::standard(), &specs).await?;
    let entries = ctx.ledger.read_all()?;
    let mut changes = Vec::new();
    for t in targets {
        let now = observed[&t.id].clone();
        let Some(current) = now.current.clone() else {
            return Err(CliError::Refused(format!(
                "{} serves nothing; there is nothing to back out",
                t.id
            )));
        };
        let back_to = match to {
            Some(v) => v.to_owned(),
            None => previous_recorded(&entries, &t.id, &current)?,
        };
        if !now.releases.contains(&back_to) {
            return Err(CliError::Refused(format!(
                "release {back_to} is no longer on {} (it has: {})",
                t.id,
                now.releases.join(", ")
            )));
        }
        if back_to == current {
            return Err(CliError::Refused(format!(
                "{} already serves {back_to}",
                t.id
            )));
        }
        changes.push((t, now, back_to));
    }
    let body = plan::plan_backout(&format!("backout {app} on {site}"), changes);
    let inputs = vec![InputFile {
        role: "inventory".into(),
        path: std::fs::canonicalize(inventory)
            .unwrap_or_else(|_| inventory.to_owned())
            .display()
            .to_string(),
        sha256: inv.source.sha256.clone(),
    }];
    let saved = SavedPlan {
        format: PLAN_FORMAT.into(),
        format_version: PLAN_FORMAT_VERSION,
        id: uuid::Uuid::new_v4().to_string(),
        created_at: crate::ledger::now(),
        ferry_version: env!("CARGO_PKG_VERSION").into(),
        actor: ctx.actor.clone(),
        inputs,
        body,
    };
    let path = ctx
        .state_dir
        .join("plans")
        .join(format!("{}.json", saved.id));
    workspace::write_plan(&path, &saved)?;
    record_plan_created(ctx, &saved, &path)?;
    if dry_run {
        print_plan(ctx, &saved, &path);
        return Ok(exit::CHANGES);
    }
    if ctx.output == super::OutputFormat::Human {
        print!("{}", plan::render_diff(&saved.body));
    }
    let r = apply_plan(ctx, &path, false, Duration::from_secs(30)).await?;
    print_apply(ctx, &r, &path);
    Ok(r.code)
}

/// The release a target served before `current`, according to the ledger.
fn previous_recorded(entries: &[Entry], target: &str, current: &str) -> Result<String, CliError> {
    // The sequence of releases the target served, as the ledger tells it.
    let mut history: Vec<Option<String>> = Vec::new();
    for e in entries
        .iter()
        .filter(|e| e.target.as_deref() == Some(target))
    {
        let v = match e.event {
            Event::StepSucceeded => {
                if history.is_empty() {
                    history.push(e.from.clone());
                }
                e.to.clone()
            }
            Event::StepBackedOut => e.from.clone(),
            // A failed step says what the target served after the failure.
            Event::StepFailed => match e.detail.as_ref().and_then(|d| d.get("serving_after")) {
                Some(serde_json::Value::String(v)) if v != "unknown" => Some(v.clone()),
                Some(serde_json::Value::Null) => None,
                _ => continue,
            },
            _ => continue,
        };
        if history.last() != Some(&v) {
            history.push(v);
        }
    }
    match history.last() {
        None => {
            return Err(CliError::Refused(format!(
                "the ledger has no release recorded for {target}; name one with --to VERSION"
            )));
        }
        Some(last) if last.as_deref() != Some(current) => {
            return Err(CliError::Refused(format!(
                "{target} serves {current}, but the ledger's last record for it is {}: it was changed outside ferry; name the release with --to VERSION",
                last.as_deref().unwrap_or("(none)")
            )));
        }
        Some(_) => {}
    }
    match history
        .iter()
        .rev()
        .skip(1)
        .find(|v| v.as_deref() != Some(current))
    {
        Some(Some(v)) => Ok(v.clone()),
        _ => Err(CliError::Refused(format!(
            "{target} has no earlier release recorded (first install); name one with --to VERSION"
        ))),
    }
}

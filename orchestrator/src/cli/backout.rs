//! `ferry backout`, `ferry rollback` and `ferry history`: the engine plans the back-out and
//! applies it; this prints.

use std::path::Path;

use super::apply::{apply_plan, print_apply};
use super::plan_cmd::print_plan;
use super::{CliError, Ctx};
use crate::engine::backout::{app_on_site, cluster_history};
use crate::model::TargetKind;
use crate::plan;
use crate::{exit, workspace};

pub use crate::engine::backout::Request;

pub async fn backout(
    ctx: &Ctx,
    inventory: &Path,
    app: &str,
    site: &str,
    req: Request<'_>,
) -> Result<u8, CliError> {
    let (saved, path) =
        crate::engine::backout::plan(&ctx.state(), inventory, app, site, &req).await?;
    if req.dry_run {
        print_plan(ctx, &saved, &path);
        return Ok(exit::CHANGES);
    }
    if ctx.output == super::OutputFormat::Human {
        print!("{}", plan::render_diff(&saved.body));
    }
    let r = apply_plan(ctx, &path, super::apply::Options::fresh(&[])).await?;
    print_apply(ctx, &r, &path);
    Ok(r.code)
}

/// `ferry history APP --site SITE`: the release records a Kubernetes app has in its cluster.
pub async fn history(ctx: &Ctx, inventory: &Path, app: &str, site: &str) -> Result<u8, CliError> {
    let (inv, a, targets) = app_on_site(inventory, app, site)?;
    if a.target != TargetKind::Kubernetes {
        return Err(CliError::Refused(format!(
            "app `{app}` runs on `{}`; release history in the cluster is kept for kubernetes apps (see `ferry ledger show`)",
            a.target.as_str()
        )));
    }
    let base = workspace::base_dir(&inv.source.path);
    let mut out = Vec::new();
    for t in &targets {
        let spec = workspace::target_spec(&inv.value, &base, t, false)?;
        out.push((t.id.clone(), cluster_history(&spec).await?));
    }
    match ctx.output {
        super::OutputFormat::Human => {
            for (target, h) in &out {
                println!("{target}");
                println!(
                    "  {:<9} {:<12} {:<14} {:<10} {:<21} PLAN / NOTE",
                    "REVISION", "STATUS", "VERSION", "OBJECTS", "UPDATED"
                );
                for r in &h.records {
                    let note = match (&r.reason, r.rollback_of) {
                        (Some(why), _) => why.clone(),
                        (None, Some(n)) => format!("rollback to revision {n}"),
                        (None, None) => r.plan_id.clone(),
                    };
                    println!(
                        "  {:<9} {:<12} {:<14} {:<10} {:<21} {note}",
                        r.revision,
                        r.status.as_str(),
                        r.version,
                        r.objects.len(),
                        r.updated_at
                    );
                }
                if h.records.is_empty() {
                    println!("  (no release records)");
                }
            }
        }
        super::OutputFormat::Json => {
            let targets: Vec<serde_json::Value> = out
                .iter()
                .map(|(target, h)| {
                    serde_json::json!({
                        "target": target,
                        "revisions": h.records.iter().map(|r| serde_json::json!({
                            "revision": r.revision,
                            "status": r.status,
                            "version": r.version,
                            "plan_id": r.plan_id,
                            "rollback_of": r.rollback_of,
                            "reason": r.reason,
                            "objects": r.ids(),
                            "objects_sha256": r.objects_sha256,
                            "created_at": r.created_at,
                            "updated_at": r.updated_at,
                            "record": format!("{}/{}", r.namespace, r.secret_name()),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({
                    "format": "ferry.history",
                    "version": super::output::JSON_VERSION,
                    "app": app,
                    "site": site,
                    "targets": targets,
                })
            );
        }
    }
    Ok(exit::OK)
}

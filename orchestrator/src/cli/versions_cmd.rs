//! `ferry versions`: the version catalog of an inventory's apps (list, show) and its changes
//! (add, activate, deactivate, trash, restore, approve-purge, purge), each recorded in the
//! ledger with the actor and a reason.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::{CliError, Ctx, OutputFormat};
use crate::engine::versions::{self, Changed, Request};
use crate::versions::{AddHow, Catalog, Version};
use crate::{exit, workspace};

#[derive(Debug, Subcommand)]
pub enum VersionsCommand {
    /// Every version of the catalogued apps (or of one): state, revisions, last change.
    List {
        #[arg(short, long)]
        inventory: PathBuf,
        app: Option<String>,
    },
    /// One version: its revisions (number, SHA-256, size, where stored) and its history.
    Show {
        #[arg(short, long)]
        inventory: PathBuf,
        app: String,
        id: String,
    },
    /// Copy a revision (default: the newest) out of the store into a new directory or file,
    /// checked against the digest the ledger recorded.
    Export {
        #[arg(short, long)]
        inventory: PathBuf,
        app: String,
        id: String,
        #[arg(long)]
        revision: Option<u32>,
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
    /// Add content under an id: a new version (active unless --inactive), or with
    /// --revision-of the next revision of it, or with --new-major the lineage's next major.
    /// The same content again changes nothing.
    Add {
        #[arg(short, long)]
        inventory: PathBuf,
        app: String,
        id: String,
        /// The content (a directory, or a release .tar.gz); default: the app's artifact path
        /// for the id.
        #[arg(long)]
        from: Option<PathBuf>,
        /// New content under an existing id is its next revision (name the id again).
        #[arg(long, value_name = "ID", conflicts_with = "new_major")]
        revision_of: Option<String>,
        /// The content is the next major of the id's lineage (its id is chosen for it).
        #[arg(long)]
        new_major: bool,
        /// Added inactive (not counted against max_active_majors).
        #[arg(long)]
        inactive: bool,
        #[arg(long)]
        reason: String,
    },
    /// Make an inactive version active again (within max_active_majors).
    Activate {
        #[arg(short, long)]
        inventory: PathBuf,
        app: String,
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Deactivate a version: release plans refuse it. Refused while the ledger says a site
    /// serves it, unless --plan names the saved plan that moves those sites off it.
    Deactivate {
        #[arg(short, long)]
        inventory: PathBuf,
        app: String,
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        plan: Option<PathBuf>,
    },
    /// Move a version (all its revisions) to the trash; same rule as deactivate.
    Trash {
        #[arg(short, long)]
        inventory: PathBuf,
        app: String,
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        plan: Option<PathBuf>,
    },
    /// Bring a version back from the trash, inactive.
    Restore {
        #[arg(short, long)]
        inventory: PathBuf,
        app: String,
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Sign (with your key) the approval a purge of a trashed version needs, as an approver
    /// holding the app's lifecycle.purge_role; recorded in the ledger.
    ApprovePurge {
        #[arg(short, long)]
        inventory: PathBuf,
        app: String,
        id: String,
        #[arg(long = "as", value_name = "PERSON")]
        person: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Remove a trashed version's content for good, under a recorded approval; the id, its
    /// revisions' digests and history stay (adding the same content again brings it back).
    Purge {
        #[arg(short, long)]
        inventory: PathBuf,
        app: String,
        id: String,
        /// The id again, exactly.
        #[arg(long, value_name = "ID")]
        confirm: String,
        #[arg(long)]
        reason: String,
    },
}

pub fn run(ctx: &Ctx, cmd: VersionsCommand) -> Result<u8, CliError> {
    use VersionsCommand as C;
    let (inventory, app, req, reason) = match cmd {
        C::List { inventory, app } => return list(ctx, &inventory, app.as_deref()),
        C::Show { inventory, app, id } => return show(ctx, &inventory, &app, &id),
        C::Export {
            inventory,
            app,
            id,
            revision,
            out,
        } => {
            let inv = load(&inventory)?;
            let r = versions::export(&ctx.state(), &inv, &app, &id, revision, &out)?;
            let text = format!(
                "revision {} of {id} ({}) written to {}",
                r.number,
                r.sha256,
                out.display()
            );
            emit(ctx, &serde_json::json!({"revision": r, "out": out}), &text);
            return Ok(exit::OK);
        }
        C::ApprovePurge {
            inventory,
            app,
            id,
            person,
            comment,
        } => {
            let inv = load(&inventory)?;
            let e = versions::approve_purge(
                &ctx.state(),
                &inv,
                &app,
                &id,
                &person,
                comment.as_deref(),
            )?;
            let text = e.message.clone().unwrap_or_default();
            emit(
                ctx,
                &serde_json::json!({"approved": true, "seq": e.seq, "message": text}),
                &format!("{text} [ledger entry {}]", e.seq),
            );
            return Ok(exit::OK);
        }
        C::Add {
            inventory,
            app,
            id,
            from,
            revision_of,
            new_major,
            inactive,
            reason,
        } => {
            let how = match (revision_of, new_major) {
                (Some(of), _) => AddHow::RevisionOf(of),
                (None, true) => AddHow::NewMajor,
                (None, false) => AddHow::Plain,
            };
            (
                inventory,
                app,
                Request::Add {
                    id,
                    from,
                    how,
                    inactive,
                },
                reason,
            )
        }
        C::Activate {
            inventory,
            app,
            id,
            reason,
        } => (inventory, app, Request::Activate { id }, reason),
        C::Deactivate {
            inventory,
            app,
            id,
            reason,
            plan,
        } => (inventory, app, Request::Deactivate { id, plan }, reason),
        C::Trash {
            inventory,
            app,
            id,
            reason,
            plan,
        } => (inventory, app, Request::Trash { id, plan }, reason),
        C::Restore {
            inventory,
            app,
            id,
            reason,
        } => (inventory, app, Request::Restore { id }, reason),
        C::Purge {
            inventory,
            app,
            id,
            confirm,
            reason,
        } => (inventory, app, Request::Purge { id, confirm }, reason),
    };
    let inv = load(&inventory)?;
    match versions::change(&ctx.state(), &inv, &app, &req, &reason)? {
        Changed::Recorded { change, entry } => {
            let text = format!(
                "{} [ledger entry {}]",
                entry.message.clone().unwrap_or_default(),
                entry.seq
            );
            emit(
                ctx,
                &serde_json::json!({"recorded": true, "seq": entry.seq, "change": change}),
                &text,
            );
        }
        Changed::Unchanged(why) => {
            emit(
                ctx,
                &serde_json::json!({"recorded": false, "message": why}),
                &format!("unchanged: {why}"),
            );
        }
    }
    Ok(exit::OK)
}

fn load(inventory: &Path) -> Result<crate::load::Loaded<crate::model::Inventory>, CliError> {
    workspace::load(inventory, &[])
        .map(|(inv, _)| inv)
        .map_err(CliError::Invalid)
}

fn emit(ctx: &Ctx, json: &serde_json::Value, human: &str) {
    match ctx.output {
        OutputFormat::Json => println!("{json}"),
        OutputFormat::Human => println!("{human}"),
    }
}

/// The catalog of every app of the inventory that has a lifecycle (or of `only`).
fn list(ctx: &Ctx, inventory: &Path, only: Option<&str>) -> Result<u8, CliError> {
    let inv = load(inventory)?;
    if let Some(app) = only {
        versions::catalogued(&inv, app)?;
    }
    let cat = versions::catalog(&ctx.state())?;
    let mut apps: Vec<&str> = inv
        .value
        .apps
        .iter()
        .filter_map(crate::model::App::catalog)
        .filter(|c| only.is_none_or(|o| o == *c))
        .collect();
    apps.dedup();
    let rows: Vec<(&str, &Version)> = apps
        .iter()
        .flat_map(|a| {
            cat.apps
                .get(*a)
                .into_iter()
                .flat_map(|m| m.values())
                .map(move |v| (*a, v))
        })
        .collect();
    if ctx.output == OutputFormat::Json {
        let json: Vec<serde_json::Value> = rows
            .iter()
            .map(|(a, v)| serde_json::json!({"app": a, "version": v}))
            .collect();
        println!("{}", serde_json::Value::Array(json));
        return Ok(exit::OK);
    }
    println!(
        "{:<16} {:<28} {:<9} {:<9} LAST CHANGE",
        "CATALOG", "ID", "STATE", "REVISIONS"
    );
    for (a, v) in &rows {
        println!(
            "{:<16} {:<28} {:<9} {:<9} {}",
            a,
            v.id,
            v.state.as_str(),
            v.revisions.len(),
            v.last_change()
        );
    }
    if rows.is_empty() {
        println!("(no versions catalogued for {})", apps.join(", "));
    }
    Ok(exit::OK)
}

fn show(ctx: &Ctx, inventory: &Path, app: &str, id: &str) -> Result<u8, CliError> {
    let inv = load(inventory)?;
    versions::catalogued(&inv, app)?;
    let cat: Catalog = versions::catalog(&ctx.state())?;
    let v = cat
        .version(app, id)
        .ok_or_else(|| CliError::Refused(format!("`{id}` of {app} is not in the catalog")))?;
    if ctx.output == OutputFormat::Json {
        println!("{}", serde_json::json!({"app": app, "version": v}));
        return Ok(exit::OK);
    }
    println!(
        "{app} {} — {} (lineage `{}`, major {})",
        v.id,
        v.state.as_str(),
        v.lineage,
        v.major
    );
    for r in &v.revisions {
        let at = versions::stored_at(&ctx.state_dir, &r.sha256);
        let kept = if r.purged {
            "purged".to_owned()
        } else {
            at.display().to_string()
        };
        println!(
            "  revision {}  sha256 {}  {} bytes  {kept}",
            r.number, r.sha256, r.size
        );
    }
    for m in &v.history {
        println!(
            "  #{} {} {} {:?}: {}",
            m.seq, m.time, m.actor, m.action, m.reason
        );
    }
    Ok(exit::OK)
}

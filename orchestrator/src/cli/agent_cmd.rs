//! `ferry publish` (the desired state of each site into a signed channel) and `ferry agent
//! check` (what an agent reads from it, verified). The agent's install loop is not built yet.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::{CliError, Ctx, OutputFormat};
use crate::channel::read::{AgentConfig, CheckError};
use crate::channel::write::SiteRelease;
use crate::channel::{DESIRED_FORMAT, Desired, DesiredApp};
use crate::exit;

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Read the channel as this server's agent: verify its signed metadata (versions never go
    /// back, expiry), download and check every artifact of the site, and say what is due.
    /// Exit 0: up to date; 2: an update is due; 7: the channel was refused; 1: expired or
    /// unreachable (nothing changes).
    Check {
        #[arg(long)]
        config: PathBuf,
    },
}

/// `ferry publish`.
pub fn publish(
    ctx: &Ctx,
    inventory: &Path,
    channel: &Path,
    key: &str,
    expires: &str,
    only: &[String],
) -> Result<u8, CliError> {
    let (inv, _) = crate::workspace::load(inventory, &[]).map_err(CliError::Invalid)?;
    let base = inventory.parent().unwrap_or(Path::new(".")).to_owned();
    let secs = crate::gate::parse_duration(expires)
        .map_err(|e| CliError::Refused(format!("--expires `{expires}`: {e}")))?;
    let signing = super::ledger_cmd::checkpoint_key(key)?;
    let packed = std::env::temp_dir().join(format!("ferry-publish-{}", std::process::id()));
    std::fs::create_dir_all(&packed).map_err(|e| CliError::Refused(e.to_string()))?;
    let mut sites = Vec::new();
    for site in &inv.value.sites {
        if !only.is_empty() && !only.contains(&site.id) {
            continue;
        }
        match site_release(&inv.value, &base, &site.id, &packed) {
            Ok(s) => sites.push(s),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&packed);
                return Err(e);
            }
        }
    }
    if sites.is_empty() {
        return Err(CliError::Refused(
            "no site of the inventory matches --site".into(),
        ));
    }
    let published = crate::blocking::block({
        let (dir, seed) = (channel.to_owned(), signing.to_bytes());
        async move {
            crate::channel::write::publish(
                &dir,
                seed,
                chrono::Duration::seconds(secs as i64),
                &sites,
            )
            .await
        }
    })
    .map_err(CliError::Refused);
    let _ = std::fs::remove_dir_all(&packed);
    let published = published?;
    match ctx.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({"format": "ferry.publish", "version": crate::printer::JSON_VERSION, "published": published})
        ),
        OutputFormat::Human => println!(
            "Channel {} at version {} ({} site(s), {} target(s)), valid until {}{}.",
            published.channel,
            published.version,
            published.sites.len(),
            published.targets,
            published.expires,
            if published.root_created {
                "; root.json made: install it with every agent"
            } else {
                ""
            }
        ),
    }
    Ok(exit::OK)
}

/// A site's desired apps (each app of the inventory at that site, at its version) and their
/// artifacts packed.
fn site_release(
    inv: &crate::model::Inventory,
    base: &Path,
    site: &str,
    packed: &Path,
) -> Result<SiteRelease, CliError> {
    let mut apps = Vec::new();
    let mut artifacts = Vec::new();
    for app in inv
        .apps
        .iter()
        .filter(|a| a.sites.iter().any(|s| s == site))
    {
        let src = crate::workspace::artifact_path(inv, base, &app.id, &app.version);
        let name = crate::channel::artifact_target(&app.id, &app.version);
        let file = packed.join(name.replace('/', "_"));
        if !file.exists() {
            pack(&src, &file)?;
        }
        let bytes = std::fs::read(&file).map_err(|e| CliError::Refused(e.to_string()))?;
        apps.push(DesiredApp {
            app: app.id.clone(),
            version: app.version.clone(),
            artifact: name.clone(),
            sha256: crate::load::sha256_hex(&bytes),
            size: bytes.len() as u64,
        });
        artifacts.push((name, file));
    }
    let desired = Desired {
        format: DESIRED_FORMAT.into(),
        site: site.to_owned(),
        apps,
    };
    Ok(SiteRelease { desired, artifacts })
}

/// The artifact as a `.tar.gz`: one already is copied, a directory is checked by the rules
/// every artifact keeps (links inside the tree, no special files) and packed.
fn pack(src: &Path, out: &Path) -> Result<(), CliError> {
    let bad = |e: String| CliError::Refused(format!("artifact {}: {e}", src.display()));
    crate::artifact::inspect(src, &[]).map_err(|e| bad(e.to_string()))?;
    if src.is_file() {
        std::fs::copy(src, out).map_err(|e| bad(e.to_string()))?;
        return Ok(());
    }
    let f = std::fs::File::create(out).map_err(|e| bad(e.to_string()))?;
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        f,
        flate2::Compression::default(),
    ));
    tar.follow_symlinks(false);
    tar.append_dir_all(".", src)
        .map_err(|e| bad(e.to_string()))?;
    tar.into_inner()
        .and_then(|e| e.finish())
        .map(|_| ())
        .map_err(|e| bad(e.to_string()))
}

pub fn run(ctx: &Ctx, command: AgentCommand) -> Result<u8, CliError> {
    match command {
        AgentCommand::Check { config } => check(ctx, &config),
    }
}

fn check(ctx: &Ctx, config: &Path) -> Result<u8, CliError> {
    let source = crate::load::read_source(config).map_err(|p| CliError::Invalid(vec![p].into()))?;
    let cfg: AgentConfig = crate::load::parse_document(source)
        .map_err(CliError::Invalid)?
        .value;
    let base = config.parent().unwrap_or(Path::new(".")).to_owned();
    let checked = crate::blocking::block({
        let cfg = cfg.clone();
        async move { crate::channel::read::check(&cfg, &base).await }
    });
    let checked = match checked {
        Ok(c) => c,
        Err(e) => {
            let code = match e {
                CheckError::Refused(_) => exit::TAMPERED,
                _ => exit::ERROR,
            };
            eprintln!("error: {e}");
            return Ok(code);
        }
    };
    let due = checked.apps.iter().any(|a| a.update_due);
    match ctx.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({"format": "ferry.agent_check", "version": crate::printer::JSON_VERSION, "check": checked})
        ),
        OutputFormat::Human => {
            println!(
                "Channel version {} for site {} (valid until {}): verified.",
                checked.channel_version, checked.site, checked.expires
            );
            for a in &checked.apps {
                println!(
                    "  {}: desired {}, running {}{}",
                    a.app,
                    a.desired,
                    a.running.as_deref().unwrap_or("nothing"),
                    if a.update_due {
                        " -> update due (artifact downloaded and verified)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    Ok(if due { exit::CHANGES } else { exit::OK })
}

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
    /// Converge once: check the channel and, when the running version differs (up or down),
    /// install the desired one through the same local driver and executor as `ferry apply`
    /// (release directory, atomic switch, health check, automatic back-out), recorded in the
    /// agent's own ledger (`STATE_DIR/ledger.jsonl`). Exit 0: already current; 2: updated
    /// (restart into it); 6: the health check failed and the previous release was restored;
    /// 7: the channel was refused; 75: deferred, the app is busy (its `idle` probe said so,
    /// or gave no answer); 1: expired or unreachable (nothing changed).
    Run {
        #[arg(long)]
        config: PathBuf,
        /// One pass, then exit (for a service manager's timer). Without it the agent checks at
        /// start and every `interval` of its config (plus a fixed offset of this host's), and
        /// exits 2 after an update so the service manager restarts it into the new state.
        #[arg(long)]
        once: bool,
    },
    /// Write a systemd unit that runs the agent (Restart=always, Type=notify, WatchdogSec=),
    /// checked with `systemd-analyze verify`. On Windows, run `ferry agent run --config FILE`
    /// as a service with a recovery action of "restart the service" (sc.exe failure, or NSSM).
    Install {
        #[arg(long)]
        config: PathBuf,
        /// Where the unit goes.
        #[arg(long, default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
        /// The ferry binary the unit runs (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
}

/// `agent run`: an update is due but the app is busy (EX_TEMPFAIL: try again later).
pub const DEFERRED: u8 = 75;

/// `ferry publish`'s arguments.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    #[arg(short, long)]
    pub inventory: PathBuf,
    /// The channel's directory (serve it over HTTP(S) for agents, or read it as a folder).
    #[arg(long)]
    pub channel: PathBuf,
    /// The channel's signing key (a `ferry keygen` key, as `file:PATH` or `env:NAME`).
    #[arg(long)]
    pub key: String,
    /// How long this version is valid: agents act on nothing older (`7d`, `12h`).
    #[arg(long, default_value = "7d")]
    pub expires: String,
    /// Only these sites (repeatable); default all.
    #[arg(long = "site")]
    pub sites: Vec<String>,
    /// Agents install this version even while their app says it is busy.
    #[arg(long)]
    pub force: bool,
    /// The agent's own binary for agents that update themselves (`self_update`): each
    /// runs a trial pass of it before it replaces itself, and keeps the one before.
    #[arg(long)]
    pub agent_binary: Option<PathBuf>,
    /// Keep the channel in this inventory bucket too (`--channel` is then the working copy:
    /// what the bucket holds and it lacks comes down first, what is new goes up after, the
    /// timestamp last). Agents read it over HTTP(S) from the bucket's endpoint.
    #[arg(long)]
    pub bucket: Option<String>,
    /// The key prefix of the channel in `--bucket`.
    #[arg(long, default_value = "", requires = "bucket")]
    pub bucket_prefix: String,
}

/// `ferry publish`.
pub fn publish(ctx: &Ctx, args: &PublishArgs) -> Result<u8, CliError> {
    let (inventory, channel, key, expires) = (
        args.inventory.as_path(),
        args.channel.as_path(),
        args.key.as_str(),
        args.expires.as_str(),
    );
    let (only, force, agent_binary) = (&args.sites, args.force, args.agent_binary.as_deref());
    let (inv, _) = crate::workspace::load(inventory, &[]).map_err(CliError::Invalid)?;
    // The agent's binary: its digest names it in the channel.
    let agent = match agent_binary {
        None => None,
        Some(p) => {
            let bytes = std::fs::read(p)
                .map_err(|e| CliError::Refused(format!("--agent-binary {}: {e}", p.display())))?;
            Some((
                p.to_owned(),
                crate::load::sha256_hex(&bytes),
                bytes.len() as u64,
            ))
        }
    };
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
        match site_release(&inv.value, &base, &site.id, &packed, force, agent.as_ref()) {
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
    let channel_id = std::fs::canonicalize(channel)
        .unwrap_or_else(|_| channel.to_owned())
        .display()
        .to_string();
    let before = last_published(&ctx.ledger, &channel_id)?;
    let bucket = args
        .bucket
        .as_deref()
        .map(|id| bucket_side(&inv.value, &base, id, &args.bucket_prefix))
        .transpose()?;
    let published = crate::blocking::block({
        let (dir, seed) = (channel.to_owned(), signing.to_bytes());
        let expires = chrono::Duration::seconds(secs as i64);
        async move {
            if let Some(b) = &bucket {
                b.pull(&dir).await?;
            }
            let mut p = crate::channel::write::publish(&dir, seed, expires, &sites, before).await?;
            if let Some(b) = &bucket {
                p.uploaded = Some(b.push(&dir).await?);
                p.channel = b.place();
            }
            Ok::<_, String>(p)
        }
    })
    .map_err(CliError::Refused);
    let _ = std::fs::remove_dir_all(&packed);
    let published = published?;
    ctx.ledger.append(
        crate::ledger::NewEntry::new(&ctx.actor, crate::ledger::Event::OperationFinished)
            .outcome(crate::ledger::Outcome::Ok)
            .message(format!(
                "published channel {} version {} ({} site(s)), valid until {}",
                channel_id,
                published.version,
                published.sites.len(),
                published.expires
            ))
            .detail(serde_json::json!({
                "operation": "publish", "channel": channel_id, "published": published,
                "desired": sites_digest(channel, &published.sites),
            })),
    )?;
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

/// The inventory bucket a channel is kept in.
#[cfg(feature = "aws")]
struct Bucket(crate::s3move::Side);

#[cfg(feature = "aws")]
impl Bucket {
    async fn pull(&self, dir: &Path) -> Result<usize, String> {
        crate::channel::s3::pull(&self.0, dir).await
    }
    async fn push(&self, dir: &Path) -> Result<usize, String> {
        crate::channel::s3::push(&self.0, dir).await
    }
    fn place(&self) -> String {
        self.0.place.clone()
    }
}

#[cfg(feature = "aws")]
fn bucket_side(
    inv: &crate::model::Inventory,
    base: &Path,
    id: &str,
    prefix: &str,
) -> Result<Bucket, CliError> {
    let end = crate::channel::s3::end(inv, id, prefix).map_err(CliError::Refused)?;
    crate::s3move::Side::connect(inv, base, &end)
        .map(Bucket)
        .map_err(CliError::Refused)
}

/// Without the `aws` feature (the agent's small build) there is no S3 client: no bucket.
#[cfg(not(feature = "aws"))]
enum Bucket {}

#[cfg(not(feature = "aws"))]
impl Bucket {
    async fn pull(&self, _: &Path) -> Result<usize, String> {
        match *self {}
    }
    async fn push(&self, _: &Path) -> Result<usize, String> {
        match *self {}
    }
    fn place(&self) -> String {
        match *self {}
    }
}

#[cfg(not(feature = "aws"))]
fn bucket_side(
    _: &crate::model::Inventory,
    _: &Path,
    id: &str,
    _: &str,
) -> Result<Bucket, CliError> {
    Err(CliError::Refused(format!(
        "--bucket {id}: this build of ferry has no S3 support (the `aws` feature)"
    )))
}

/// The highest channel version this ledger records publishing to `channel`.
fn last_published(ledger: &crate::ledger::Ledger, channel: &str) -> Result<u64, CliError> {
    let mut last = 0;
    ledger.verify_each(&mut |e| {
        if let Some(d) = e
            .detail
            .as_ref()
            .filter(|d| d["operation"] == "publish" && d["channel"] == channel)
        {
            last = last.max(d["published"]["version"].as_u64().unwrap_or(0));
        }
    })?;
    Ok(last)
}

/// Each published site document's SHA-256, for the record.
fn sites_digest(channel: &Path, sites: &[String]) -> serde_json::Value {
    sites
        .iter()
        .map(|s| {
            let path = channel.join("targets").join(crate::channel::site_target(s));
            let digest = std::fs::read(&path)
                .map(|b| crate::load::sha256_hex(&b))
                .unwrap_or_default();
            (s.clone(), serde_json::Value::String(digest))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A site's desired apps (each app of the inventory at that site, at its version) and their
/// artifacts packed.
fn site_release(
    inv: &crate::model::Inventory,
    base: &Path,
    site: &str,
    packed: &Path,
    force: bool,
    agent_binary: Option<&(PathBuf, String, u64)>,
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
            health_check: Some(serde_json::to_value(&app.health_check).expect("serializes")),
            force,
            config: rendered_config(inv, base, app, site)?,
        });
        artifacts.push((name, file));
    }
    let agent = agent_binary.map(|bin| {
        let d = crate::channel::DesiredAgent {
            target: crate::channel::agent_target(&bin.1),
            sha256: bin.1.clone(),
            size: bin.2,
        };
        artifacts.push((d.target.clone(), bin.0.to_owned()));
        d
    });
    let desired = Desired {
        format: DESIRED_FORMAT.into(),
        site: site.to_owned(),
        apps,
        agent,
    };
    Ok(SiteRelease { desired, artifacts })
}

/// An app's configuration files rendered for `site` as the agent's local target will hold
/// them (the same templates and values `ferry plan` renders).
fn rendered_config(
    inv: &crate::model::Inventory,
    base: &Path,
    app: &crate::model::App,
    site: &str,
) -> Result<Vec<crate::channel::DesiredFile>, CliError> {
    let s = inv
        .sites
        .iter()
        .find(|s| s.id == site)
        .ok_or_else(|| CliError::Refused(format!("site `{site}` is not in the inventory")))?;
    let target = format!("{site}/{AGENT_CLOUD}/{}", app.id);
    let files = crate::workspace::render_files(app, s, &app.version, &target, base)?;
    let mut out = Vec::new();
    for f in files {
        // The agent hands each file to its local driver as a template that renders to itself.
        if f.contents.contains("endraw") {
            return Err(CliError::Refused(format!(
                "app {} at site {site}: rendered {} contains `endraw`, which an agent cannot install verbatim",
                app.id, f.dest
            )));
        }
        out.push(crate::channel::DesiredFile {
            dest: f.dest,
            contents: f.contents,
        });
    }
    Ok(out)
}

/// The cloud id of the agent's own local target.
const AGENT_CLOUD: &str = "local";

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
        AgentCommand::Install {
            config,
            unit_dir,
            binary,
        } => install(ctx, &config, &unit_dir, binary.as_deref()),
        AgentCommand::Run { config, once } => super::runtime().and_then(|rt| {
            rt.block_on(async {
                if once {
                    return pass(ctx, &config).await;
                }
                run_loop(ctx, &config).await
            })
        }),
    }
}

/// The agent's own context: its state directory and its own ledger.
fn agent_ctx(ctx: &Ctx, state_dir: &Path) -> Ctx {
    Ctx::new(
        ctx.output,
        false,
        state_dir.to_owned(),
        crate::ledger::Ledger::new(state_dir.join("ledger.jsonl")),
        ctx.actor.clone(),
    )
}

/// One pass, then its report to the collector (when the config names one): the agent's
/// status and every ledger entry not acknowledged yet. An error of the pass is recorded in the
/// agent's ledger first, so it reaches the collector too; a collector that cannot be reached
/// changes nothing (the entries wait for the next pass).
async fn pass(ctx: &Ctx, config: &Path) -> Result<u8, CliError> {
    let on_trial = load_config(config).is_ok_and(|(c, b)| super::agent_self::on_trial(&c, &b));
    let result = run_once(ctx, config).await;
    let Ok((cfg, base)) = load_config(config) else {
        return result;
    };
    let state_dir = base.join(&cfg.state_dir);
    let agent = agent_ctx(ctx, &state_dir);
    let (code, message) = match &result {
        Ok(c) => (*c, pass_message(*c).to_owned()),
        Err(e) => {
            let _ = agent.ledger.append(
                crate::ledger::NewEntry::new(&ctx.actor, crate::ledger::Event::OperationFinished)
                    .outcome(crate::ledger::Outcome::Failed)
                    .message(e.to_string())
                    .detail(serde_json::json!({ "operation": "agent_run", "exit": e.exit_code() })),
            );
            (e.exit_code(), e.to_string())
        }
    };
    // A newly installed agent binary is kept after a good pass, or put back after failed ones.
    let settled = match on_trial {
        true => super::agent_self::settle(&agent, &cfg, &base, code),
        false => Ok(None),
    };
    let result = match settled {
        Ok(Some(restart)) => Ok(restart),
        Ok(None) => result,
        Err(e) => Err(e),
    };
    if let Some(report) = &cfg.report {
        let status = agent_status(&cfg, &base, code, &message);
        let shipped = crate::collect::ship::ship(
            report,
            &base,
            &cfg.site,
            &state_dir.join("ledger.jsonl"),
            &state_dir,
            &status,
        )
        .await;
        if let Err(e) = shipped {
            eprintln!("warning: report not delivered ({e}); the entries wait for the next pass");
        }
    }
    result
}

fn pass_message(code: u8) -> &'static str {
    match code {
        exit::OK => "up to date",
        exit::CHANGES => "updated; restarting into it",
        exit::BACKED_OUT => "the update failed its health check and was backed out",
        exit::TAMPERED => "the channel was refused",
        DEFERRED => "an update waits for the app to be idle",
        _ => "the channel could not be read or the update failed (see the ledger)",
    }
}

/// What this agent reports of itself: its build, the channel version it verified last, each
/// app's running and desired version.
fn agent_status(
    cfg: &AgentConfig,
    base: &Path,
    code: u8,
    message: &str,
) -> crate::collect::AgentStatus {
    let state_dir = base.join(&cfg.state_dir);
    let last: serde_json::Value = std::fs::read(state_dir.join("last-check.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let apps = desired_doc(&state_dir, &cfg.site)
        .map(|d| d.apps)
        .unwrap_or_default()
        .into_iter()
        .map(|a| crate::collect::AppStatus {
            running: cfg.targets_root.as_ref().and_then(|r| {
                let link = base.join(r).join(&cfg.site).join(&a.app).join("current");
                std::fs::read_link(link)
                    .ok()
                    .and_then(|l| l.file_name().map(|f| f.to_string_lossy().into_owned()))
            }),
            desired: Some(a.version),
            app: a.app,
        })
        .collect();
    crate::collect::AgentStatus {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        agent_sha256: cfg
            .agent_binary(base)
            .and_then(|b| std::fs::read(b).ok())
            .map(|b| crate::load::sha256_hex(&b))
            .unwrap_or_else(self_sha256),
        interval_secs: crate::gate::parse_duration(&cfg.interval).unwrap_or(3600),
        channel_version: last["channel_version"].as_u64(),
        apps,
        last_code: code,
        last_message: message.into(),
        sent_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

/// The SHA-256 of the running binary (read once).
fn self_sha256() -> String {
    static SHA: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SHA.get_or_init(|| {
        std::env::current_exe()
            .and_then(std::fs::read)
            .map(|b| crate::load::sha256_hex(&b))
            .unwrap_or_default()
    })
    .clone()
}

/// Passes at start and every interval (+ this host's offset) until one updates (exit 2: the
/// service manager restarts the agent into the new state) or fails in a way a later pass
/// cannot mend (a config error). A refused, expired, deferred or backed-out pass waits for
/// the next.
async fn run_loop(ctx: &Ctx, config: &Path) -> Result<u8, CliError> {
    let (cfg, _) = load_config(config)?;
    let interval = crate::gate::parse_duration(&cfg.interval).map_err(|e| {
        CliError::Refused(format!(
            "{}: interval `{}`: {e}",
            config.display(),
            cfg.interval
        ))
    })?;
    let interval = std::time::Duration::from_secs(interval.max(1));
    let wait = interval + host_offset(&cfg.site, interval);
    let pass_started = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let pinger = tokio::spawn(watchdog_pings(pass_started.clone()));
    let result = loop {
        pass_started.store(crate::lock::now_ms(), std::sync::atomic::Ordering::Relaxed);
        let code = pass(ctx, config).await;
        pass_started.store(0, std::sync::atomic::Ordering::Relaxed);
        match code {
            Ok(c) if c == exit::CHANGES => break Ok(c),
            Ok(_) => {
                if let Err(e) = wait_watching(ctx, &cfg, config, wait).await {
                    break Err(e);
                }
            }
            Err(e) => break Err(e),
        }
    };
    pinger.abort();
    result
}

/// Waits `wait`, running the watchdog's health checks every `watchdog.every` meanwhile: after
/// `failures` in a row an app's `restart` command runs, recorded in the agent's ledger.
async fn wait_watching(
    ctx: &Ctx,
    cfg: &AgentConfig,
    config: &Path,
    wait: std::time::Duration,
) -> Result<(), CliError> {
    let Some(w) = &cfg.watchdog else {
        tokio::time::sleep(wait).await;
        return Ok(());
    };
    let every = crate::gate::parse_duration(&w.every).map_err(|e| {
        CliError::Refused(format!(
            "{}: watchdog.every `{}`: {e}",
            config.display(),
            w.every
        ))
    })?;
    let every = std::time::Duration::from_secs(every.max(1));
    let (_, base) = load_config(config)?;
    let state_dir = base.join(&cfg.state_dir);
    let desired = desired_doc(&state_dir, &cfg.site)?;
    let mut failed: std::collections::BTreeMap<String, u32> = Default::default();
    let until = std::time::Instant::now() + wait;
    while std::time::Instant::now() < until {
        tokio::time::sleep(every.min(until - std::time::Instant::now())).await;
        for app in &desired.apps {
            let Some(dir) = cfg
                .targets_root
                .as_ref()
                .map(|r| base.join(r).join(&cfg.site).join(&app.app))
            else {
                continue;
            };
            let n = failed.entry(app.app.clone()).or_default();
            match healthy(&dir, &cfg.site, app).await {
                Ok(()) => *n = 0,
                Err(why) => {
                    *n += 1;
                    if *n >= w.failures {
                        *n = 0;
                        let within =
                            crate::gate::parse_duration(&w.rollback_within).map_err(|e| {
                                CliError::Refused(format!(
                                    "{}: watchdog.rollback_within `{}`: {e}",
                                    config.display(),
                                    w.rollback_within
                                ))
                            })?;
                        match recent_update(&state_dir, &app.app, within) {
                            Some(u) => {
                                roll_back(ctx, &state_dir, &cfg.site, &u, w.failures, &why).await?
                            }
                            None => {
                                restart(
                                    ctx, &state_dir, &dir, &app.app, &w.restart, w.failures, &why,
                                )
                                .await?
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// An update the agent made: recorded after each install that completed, read by the
/// watchdog (a hang right after it rolls it back) and by the next passes (an update rolled
/// back is held back until the channel publishes again).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Update {
    app: String,
    from: String,
    to: String,
    channel_version: u64,
    at: String,
}

fn updates_path(state_dir: &Path) -> PathBuf {
    state_dir.join("run/updates.json")
}

fn held_path(state_dir: &Path) -> PathBuf {
    state_dir.join("run/held-back.json")
}

fn read_updates(path: &Path) -> Vec<Update> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Records the updates a completed install made (apps that ran a version before).
fn record_updates(
    state_dir: &Path,
    checked: &crate::channel::read::Checked,
) -> Result<(), CliError> {
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let updates: Vec<Update> = checked
        .apps
        .iter()
        .filter(|a| a.update_due)
        .filter_map(|a| {
            Some(Update {
                app: a.app.clone(),
                from: a.running.clone()?,
                to: a.desired.clone(),
                channel_version: checked.channel_version,
                at: at.clone(),
            })
        })
        .collect();
    let path = updates_path(state_dir);
    crate::durable::write_atomic(&path, &serde_json::to_vec(&updates).expect("serializes"))
        .map_err(|e| CliError::Refused(format!("{}: {e}", path.display())))
}

/// The agent's update of `app`, if it was made less than `within` seconds ago.
fn recent_update(state_dir: &Path, app: &str, within: u64) -> Option<Update> {
    let u = read_updates(&updates_path(state_dir))
        .into_iter()
        .find(|u| u.app == app)?;
    let at = chrono::DateTime::parse_from_rfc3339(&u.at).ok()?;
    let age = (chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_seconds();
    (age >= 0 && (age as u64) <= within).then_some(u)
}

/// The watchdog's answer to a hang right after an update: the app goes back to the version
/// before (the engine's back-out, recorded as any), and the update is held back until the
/// channel publishes again.
async fn roll_back(
    ctx: &Ctx,
    state_dir: &Path,
    site: &str,
    u: &Update,
    failures: u32,
    why: &str,
) -> Result<(), CliError> {
    let agent = agent_ctx(ctx, state_dir);
    let inventory = state_dir.join("run/inventory.yaml");
    let req = super::backout::Request {
        to: Some(&u.from),
        ..Default::default()
    };
    // The hold first: an agent stopped in the middle of the back-out must not reinstall the
    // version that hung at its next pass.
    let held = held_path(state_dir);
    crate::durable::write_atomic(&held, &serde_json::to_vec(u).expect("serializes"))
        .map_err(|e| CliError::Refused(format!("{}: {e}", held.display())))?;
    let code = super::backout::backout(&agent, &inventory, &u.app, site, req).await?;
    let rest: Vec<Update> = read_updates(&updates_path(state_dir))
        .into_iter()
        .filter(|x| x.app != u.app)
        .collect();
    crate::durable::write_atomic(
        &updates_path(state_dir),
        &serde_json::to_vec(&rest).expect("serializes"),
    )
    .map_err(|e| CliError::Refused(format!("{}: {e}", state_dir.display())))?;
    let ok = code == exit::OK;
    let message = format!(
        "watchdog: {} failed {failures} health checks in a row ({why}) within its update {} -> {}: {}; {} is held back until the channel publishes again",
        u.app,
        u.from,
        u.to,
        if ok {
            format!("rolled back to {}", u.from)
        } else {
            format!("the roll-back ended with exit {code}")
        },
        u.to
    );
    eprintln!("{message}");
    agent.ledger.append(
        crate::ledger::NewEntry::new(&agent.actor, crate::ledger::Event::OperationFinished)
            .outcome(if ok { crate::ledger::Outcome::Ok } else { crate::ledger::Outcome::Failed })
            .message(message)
            .detail(serde_json::json!({ "operation": "watchdog_rollback", "update": u, "failures": failures, "last": why })),
    )?;
    Ok(())
}

/// Apps whose update the watchdog rolled back stay where they are until the channel publishes
/// a newer version.
fn hold_back(state_dir: &Path, checked: &mut crate::channel::read::Checked) {
    let Some(held) = std::fs::read(held_path(state_dir))
        .ok()
        .and_then(|b| serde_json::from_slice::<Update>(&b).ok())
    else {
        return;
    };
    if held.channel_version != checked.channel_version {
        let _ = std::fs::remove_file(held_path(state_dir));
        return;
    }
    for a in checked
        .apps
        .iter_mut()
        .filter(|a| a.app == held.app && a.desired == held.to)
    {
        if a.update_due {
            a.update_due = false;
            println!(
                "{} {} is held back: it hung right after its install and was rolled back to {}; publish the channel again to retry",
                a.app, a.desired, held.from
            );
        }
    }
}

/// The app's published health check, run in its current release as the local driver runs it.
async fn healthy(dir: &Path, site: &str, app: &DesiredApp) -> Result<(), String> {
    let hc = app.health_check.as_ref().ok_or("no health check")?;
    let argv: Vec<String> =
        serde_json::from_value(hc["command"].clone()).map_err(|e| e.to_string())?;
    let secs = hc["timeout_seconds"].as_u64().unwrap_or(10);
    let (program, args) = argv.split_first().ok_or("an empty health check")?;
    let version = std::fs::read_link(dir.join("current"))
        .ok()
        .and_then(|l| l.file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(dir.join("current"))
        .env("FERRY_APP", &app.app)
        .env("FERRY_SITE", site)
        .env("FERRY_VERSION", &version)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(std::time::Duration::from_secs(secs), cmd.status()).await {
        Err(_) => Err(format!("no answer within {secs} s")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(format!("the health check failed ({s})")),
    }
}

/// The watchdog's restart of an app, recorded with why.
async fn restart(
    ctx: &Ctx,
    state_dir: &Path,
    dir: &Path,
    app: &str,
    argv: &[String],
    failures: u32,
    why: &str,
) -> Result<(), CliError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| CliError::Refused("watchdog.restart is empty".into()))?;
    let status = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir.join("current"))
        .status()
        .await;
    let (outcome, result) = match &status {
        Ok(s) if s.success() => (crate::ledger::Outcome::Ok, "restarted".to_owned()),
        Ok(s) => (
            crate::ledger::Outcome::Failed,
            format!("the restart command failed ({s})"),
        ),
        Err(e) => (
            crate::ledger::Outcome::Failed,
            format!("the restart command did not start: {e}"),
        ),
    };
    let message =
        format!("watchdog: {app} failed {failures} health checks in a row ({why}): {result}");
    eprintln!("{message}");
    let ledger = crate::ledger::Ledger::new(state_dir.join("ledger.jsonl"));
    ledger.append(
        crate::ledger::NewEntry::new(&ctx.actor, crate::ledger::Event::OperationFinished)
            .outcome(outcome)
            .message(message)
            .detail(serde_json::json!({ "operation": "watchdog_restart", "app": app, "failures": failures, "last": why })),
    )?;
    Ok(())
}

/// The longest a pass may take before the agent stops telling systemd it is alive (so
/// `WatchdogSec=` restarts a hung agent; the next start finishes an install left pending).
const PASS_LIMIT_MS: u64 = 30 * 60 * 1000;

/// `WATCHDOG=1` to systemd every 10 s while the agent waits or a pass is younger than
/// [`PASS_LIMIT_MS`] (nothing without `NOTIFY_SOCKET`).
async fn watchdog_pings(pass_started: std::sync::Arc<std::sync::atomic::AtomicU64>) {
    loop {
        let started = pass_started.load(std::sync::atomic::Ordering::Relaxed);
        if started == 0 || crate::lock::now_ms().saturating_sub(started) < PASS_LIMIT_MS {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        }
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    }
}

/// `ferry agent install`: a systemd unit that runs the agent's loop, restarted always (an
/// update exits 2 to be restarted into the new state), `Type=notify` with `WatchdogSec=`; checked
/// with `systemd-analyze verify` where it is installed.
pub fn install(
    ctx: &Ctx,
    config: &Path,
    unit_dir: &Path,
    binary: Option<&Path>,
) -> Result<u8, CliError> {
    let (cfg, _) = load_config(config)?;
    let config = std::fs::canonicalize(config)
        .map_err(|e| CliError::Refused(format!("{}: {e}", config.display())))?;
    let binary = match binary {
        Some(b) => b.to_owned(),
        None => std::env::current_exe().map_err(|e| CliError::Refused(e.to_string()))?,
    };
    let unit = unit_text(&cfg.site, &binary, &config);
    let path = unit_dir.join(format!("ferry-agent-{}.service", cfg.site));
    std::fs::create_dir_all(unit_dir)
        .and_then(|()| crate::durable::write_atomic(&path, unit.as_bytes()))
        .map_err(|e| CliError::Refused(format!("{}: {e}", path.display())))?;
    let verified = match std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
    {
        Err(_) => "systemd-analyze is not installed here: not verified".to_owned(),
        Ok(o) if o.status.success() && o.stderr.is_empty() => {
            "systemd-analyze verify: ok".to_owned()
        }
        Ok(o) => {
            let _ = std::fs::remove_file(&path);
            return Err(CliError::Refused(format!(
                "{} (not written): systemd-analyze verify: {}",
                path.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
    };
    match ctx.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({"format": "ferry.agent_install", "version": crate::printer::JSON_VERSION, "unit": path, "verified": verified})
        ),
        OutputFormat::Human => println!(
            "Wrote {} ({verified}). Enable it: systemctl enable --now {}",
            path.display(),
            path.file_name().unwrap_or_default().to_string_lossy()
        ),
    }
    Ok(exit::OK)
}

fn unit_text(site: &str, binary: &Path, config: &Path) -> String {
    format!(
        "[Unit]
Description=ferry agent for site {site}
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={bin} agent run --config {config}
# Exit 2 after an update: restarted into the new state. Any other end: restarted too.
Restart=always
RestartSec=5
WatchdogSec=60
StandardOutput=journal
StandardError=journal

[Install]
WantedBy=multi-user.target
",
        bin = binary.display(),
        config = config.display()
    )
}

/// A fixed offset of this host's, up to a tenth of the interval, so a fleet does not call at
/// once.
fn host_offset(site: &str, interval: std::time::Duration) -> std::time::Duration {
    let h = crate::load::sha256_hex(format!("{}/{site}", crate::lock::hostname()).as_bytes());
    let n = u64::from_str_radix(&h[..12], 16).unwrap_or(0);
    let span = (interval.as_millis() as u64 / 10).max(1);
    std::time::Duration::from_millis(n % span)
}

fn load_config(config: &Path) -> Result<(AgentConfig, PathBuf), CliError> {
    let source = crate::load::read_source(config).map_err(|p| CliError::Invalid(vec![p].into()))?;
    let loaded = crate::load::parse_document::<AgentConfig>(source).map_err(CliError::Invalid)?;
    let mut problems = crate::load::Diagnostics::default();
    for (path, message) in loaded.value.problems() {
        problems.push(loaded.problem(&path, message));
    }
    problems.into_result().map_err(CliError::Invalid)?;
    let cfg = loaded.value;
    let dir = config
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Absolute: the inventory the agent writes names its paths from elsewhere.
    let base = std::fs::canonicalize(dir)
        .map_err(|e| CliError::Refused(format!("{}: {e}", dir.display())))?;
    Ok((cfg, base))
}

/// The channel verified, or the exit code that says why not and the reason (printed on
/// stderr).
fn verified(cfg: &AgentConfig, base: &Path) -> Result<crate::channel::read::Checked, (u8, String)> {
    let checked = crate::blocking::block({
        let (cfg, base) = (cfg.clone(), base.to_owned());
        async move { crate::channel::read::check(&cfg, &base).await }
    });
    checked.map_err(|e| {
        eprintln!("error: {e}");
        let code = match e {
            CheckError::Refused(_) => exit::TAMPERED,
            _ => exit::ERROR,
        };
        (code, e.to_string())
    })
}

async fn run_once(ctx: &Ctx, config: &Path) -> Result<u8, CliError> {
    let (cfg, base) = load_config(config)?;
    let Some(targets_root) = cfg.targets_root.clone() else {
        return Err(CliError::Refused(format!(
            "{}: `targets_root` is needed to install (where this server's apps live)",
            config.display()
        )));
    };
    let state_dir = base.join(&cfg.state_dir);
    let agent = agent_ctx(ctx, &state_dir);
    // A channel that cannot be read or is refused changes nothing; it is recorded (and so
    // reaches the collector).
    let mut checked = match verified(&cfg, &base) {
        Ok(c) => c,
        Err((code, why)) => {
            agent.ledger.append(
                crate::ledger::NewEntry::new(&agent.actor, crate::ledger::Event::OperationFinished)
                    .outcome(crate::ledger::Outcome::Failed)
                    .message(why.clone())
                    .detail(serde_json::json!({ "operation": "agent_check", "exit": code })),
            )?;
            return Ok(code);
        }
    };
    hold_back(&state_dir, &mut checked);
    let last = serde_json::json!({ "channel_version": checked.channel_version, "expires": checked.expires });
    crate::durable::write_atomic(
        &state_dir.join("last-check.json"),
        last.to_string().as_bytes(),
    )
    .map_err(|e| CliError::Refused(format!("{}: {e}", state_dir.display())))?;
    // An install cut short (kill -9, power) is finished first: its release may be switched in
    // without its health check, so `current` alone does not say it is good.
    let pending = state_dir.join("run/pending");
    if let Ok(plan) = std::fs::read_to_string(&pending) {
        let plan = PathBuf::from(plan.trim());
        let opts = super::apply::Options {
            resume: true,
            ..super::apply::Options::fresh(&[])
        };
        let r = super::apply::apply_plan(&agent, &plan, opts).await?;
        super::apply::print_apply(&agent, &r, &plan);
        let _ = std::fs::remove_file(&pending);
        return Ok(match r.outcome {
            crate::executor::ApplyOutcome::Completed => exit::CHANGES,
            other => super::apply::outcome_code(&other),
        });
    }
    // The agent's own binary first: a new agent does the rest of the work.
    if let Some(a) = checked
        .agent
        .as_ref()
        .filter(|_| !super::agent_self::in_trial())
        && let Some(code) = super::agent_self::update(&agent, &cfg, &base, config, a).await?
    {
        return Ok(code);
    }
    if !checked.apps.iter().any(|a| a.update_due) {
        println!(
            "Site {} runs what channel version {} wants.",
            checked.site, checked.channel_version
        );
        return Ok(exit::OK);
    }
    // Downloaded and verified already (the check); nothing stops before the app is idle,
    // unless the signed channel says to force it.
    let forced = checked.apps.iter().any(|a| a.update_due && a.force);
    if let Some(probe) = cfg.idle.as_ref().filter(|_| !forced)
        && let Err(why) = probe.idle(&base).await
    {
        return defer(&agent, &cfg, &state_dir, checked.channel_version, &why);
    }
    let _ = std::fs::remove_file(state_dir.join("run/deferred-since"));
    let work = state_dir.join("run");
    std::fs::create_dir_all(&work).map_err(|e| CliError::Refused(e.to_string()))?;
    unpack_downloads(&state_dir, &checked)?;
    let desired = desired_doc(&state_dir, &cfg.site)?;
    write_config(&state_dir, &desired)?;
    let inventory = work.join("inventory.yaml");
    let plan = work.join(format!("channel-v{}.yaml", checked.channel_version));
    let inv = agent_inventory(&cfg.site, &base.join(&targets_root), &state_dir, &desired);
    let rp = agent_plan(&cfg.site, checked.channel_version, &checked);
    for (path, doc) in [(&inventory, inv), (&plan, rp)] {
        crate::durable::write_atomic(path, doc.to_string().as_bytes())
            .map_err(|e| CliError::Refused(format!("{}: {e}", path.display())))?;
    }
    let state = agent.state();
    let (inv, plans) = crate::workspace::load(&inventory, &[plan]).map_err(CliError::Invalid)?;
    let saved = crate::engine::plan::make(&state, &inv, &plans[0], &super::apply::Lines).await?;
    crate::engine::plan::refuse_unready(&saved)?;
    let out = work.join(format!("channel-v{}.json", checked.channel_version));
    crate::workspace::write_plan(&out, &saved)?;
    crate::engine::plan::record_created(&state, &saved, &out)?;
    crate::durable::write_atomic(&pending, out.display().to_string().as_bytes())
        .map_err(|e| CliError::Refused(format!("{}: {e}", pending.display())))?;
    let r = super::apply::apply_plan(&agent, &out, super::apply::Options::fresh(&[])).await?;
    let _ = std::fs::remove_file(&pending);
    if matches!(r.outcome, crate::executor::ApplyOutcome::Completed) {
        record_updates(&state_dir, &checked)?;
    }
    super::apply::print_apply(&agent, &r, &out);
    Ok(match r.outcome {
        crate::executor::ApplyOutcome::Completed => exit::CHANGES,
        other => super::apply::outcome_code(&other),
    })
}

/// An update waits for the app: recorded, and reported as overdue once it has waited longer
/// than `max_defer` (it still waits: only the channel's `force` overrides the app).
fn defer(
    agent: &Ctx,
    cfg: &AgentConfig,
    state_dir: &Path,
    channel_version: u64,
    why: &str,
) -> Result<u8, CliError> {
    let marker = state_dir.join("run/deferred-since");
    let now = chrono::Utc::now();
    let since = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t.trim()).ok())
        .map(|t| t.with_timezone(&chrono::Utc));
    let since = match since {
        Some(t) => t,
        None => {
            if let Some(d) = marker.parent() {
                let _ = std::fs::create_dir_all(d);
            }
            crate::durable::write_atomic(&marker, now.to_rfc3339().as_bytes())
                .map_err(|e| CliError::Refused(format!("{}: {e}", marker.display())))?;
            now
        }
    };
    let limit = crate::gate::parse_duration(&cfg.max_defer)
        .map_err(|e| CliError::Refused(format!("max_defer `{}`: {e}", cfg.max_defer)))?;
    let waited = (now - since).num_seconds().max(0) as u64;
    let overdue = waited > limit;
    let mut message =
        format!("update to channel version {channel_version} deferred: the app is busy ({why})");
    if overdue {
        message.push_str(&format!(
            "; still waiting since {}, longer than max_defer {}",
            since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            cfg.max_defer
        ));
    }
    agent.ledger.append(
        crate::ledger::NewEntry::new(&agent.actor, crate::ledger::Event::OperationFinished)
            .outcome(crate::ledger::Outcome::Halted)
            .message(message.clone())
            .detail(serde_json::json!({
                "operation": "agent_update", "deferred": why, "channel_version": channel_version,
                "waiting_since": since.to_rfc3339(), "overdue": overdue,
            })),
    )?;
    println!("{message}; the next run tries again.");
    if overdue {
        eprintln!("warning: {message}");
    }
    Ok(DEFERRED)
}

/// Each verified download unpacked once into `STATE/artifacts/APP/VERSION` (the local target
/// deploys a directory), under the rules every artifact keeps.
fn unpack_downloads(
    state_dir: &Path,
    checked: &crate::channel::read::Checked,
) -> Result<(), CliError> {
    for a in checked.apps.iter().filter(|a| a.update_due) {
        let dir = state_dir.join("artifacts").join(&a.app);
        std::fs::create_dir_all(&dir).map_err(|e| CliError::Refused(e.to_string()))?;
        let dst = dir.join(&a.desired);
        if dst.exists() {
            continue;
        }
        let partial = dir.join(format!(".{}.partial", a.desired));
        let _ = std::fs::remove_dir_all(&partial);
        crate::artifact::unpack_tarball(&a.artifact, &partial)
            .map_err(|e| CliError::Refused(format!("{}: {e}", a.artifact.display())))?;
        std::fs::rename(&partial, &dst).map_err(|e| CliError::Refused(e.to_string()))?;
    }
    Ok(())
}

/// Each app's published configuration, as templates that render to exactly the published
/// bytes (a Tera raw block; the publisher refuses contents that would end it).
fn write_config(state_dir: &Path, d: &Desired) -> Result<(), CliError> {
    for a in &d.apps {
        let dir = state_dir.join("config").join(&a.app).join(&a.version);
        std::fs::create_dir_all(&dir)
            .map_err(|e| CliError::Refused(format!("{}: {e}", dir.display())))?;
        for (i, f) in a.config.iter().enumerate() {
            if f.contents.contains("endraw") {
                return Err(CliError::Refused(format!(
                    "{}: {} contains `endraw`",
                    a.app, f.dest
                )));
            }
            let path = dir.join(format!("{i}.tera"));
            let text = format!("{{% raw %}}{}{{% endraw %}}", f.contents);
            crate::durable::write_atomic(&path, text.as_bytes())
                .map_err(|e| CliError::Refused(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(())
}

/// The site's desired document as the check just verified it (saved in the state directory).
fn desired_doc(state_dir: &Path, site: &str) -> Result<Desired, CliError> {
    let path = state_dir.join("desired.json");
    let text =
        std::fs::read(&path).map_err(|e| CliError::Refused(format!("{}: {e}", path.display())))?;
    let d: Desired = serde_json::from_slice(&text)
        .map_err(|e| CliError::Refused(format!("{}: {e}", path.display())))?;
    if d.site != site {
        return Err(CliError::Refused(format!(
            "{} is not for site {site}",
            path.display()
        )));
    }
    Ok(d)
}

/// The inventory the agent applies: this site, the local target at `targets_root`, each app
/// at its desired version from the verified download.
fn agent_inventory(
    site: &str,
    targets_root: &Path,
    state_dir: &Path,
    d: &Desired,
) -> serde_json::Value {
    let artifacts = state_dir.join("artifacts");
    let apps: Vec<serde_json::Value> = d
        .apps
        .iter()
        .map(|a| {
            let mut app = serde_json::json!({
                "id": a.app,
                "version": a.version,
                "artifact": artifacts.join(&a.app).join("{version}").display().to_string(),
                "target": "local",
                "sites": [site],
            });
            if let Some(h) = &a.health_check {
                app["health_check"] = h.clone();
            }
            if !a.config.is_empty() {
                app["config"] = a
                    .config
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        let t = state_dir
                            .join("config")
                            .join(&a.app)
                            .join(&a.version)
                            .join(format!("{i}.tera"));
                        serde_json::json!({ "template": t.display().to_string(), "dest": f.dest })
                    })
                    .collect();
            }
            app
        })
        .collect();
    serde_json::json!({
        "version": 1,
        "sites": [{ "id": site, "tier": "prod", "clouds": [AGENT_CLOUD] }],
        "clouds": [{ "id": AGENT_CLOUD, "kind": "local", "local": { "root": targets_root.display().to_string() } }],
        "apps": apps,
    })
}

/// One wave at this site: every app whose running version differs, backed out on failure.
fn agent_plan(site: &str, version: u64, c: &crate::channel::read::Checked) -> serde_json::Value {
    let releases: Vec<serde_json::Value> = c
        .apps
        .iter()
        .filter(|a| a.update_due)
        .map(|a| serde_json::json!({ "app": a.app, "version": a.desired }))
        .collect();
    serde_json::json!({
        "version": 1,
        "kind": "release",
        "name": format!("channel-v{version}"),
        "releases": releases,
        "waves": [{ "name": site, "sites": [site] }],
        "on_failure": "backout",
    })
}

fn check(ctx: &Ctx, config: &Path) -> Result<u8, CliError> {
    let (cfg, base) = load_config(config)?;
    let checked = match verified(&cfg, &base) {
        Ok(c) => c,
        Err((code, _)) => return Ok(code),
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
            if let Some(a) = &checked.agent {
                println!(
                    "  agent binary: desired {}, installed {}{}",
                    a.desired,
                    a.installed,
                    if a.download.is_some() {
                        " -> update due (downloaded and verified; tried before it replaces this one)"
                    } else if a.desired != a.installed {
                        " (failed its trial here: not tried again)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    Ok(if due { exit::CHANGES } else { exit::OK })
}

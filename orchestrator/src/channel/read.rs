//! What an agent reads from its channel (`ferry agent check`): the metadata verified by TUF's
//! client rules against the root it was installed with (signatures, versions that never go
//! back — the versions seen are kept in the agent's state directory —, expiry), its site's
//! desired state, and every artifact downloaded and checked against the signed length and
//! SHA-256 before anything would stop. Channels are read from a directory (`file://`) or over
//! HTTP(S) (any web server, or a bucket's HTTPS endpoint): the agent needs no cloud SDK.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tough::{ExpirationEnforcement, IntoVec, RepositoryLoader, TargetName};

use super::{DESIRED_FORMAT, Desired};

/// An agent's configuration file (YAML; unknown keys are refused, with their line).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The site this server is.
    pub site: String,
    /// `file:///DIR/` or `https://HOST/PATH/`: the channel's root (holding `metadata/` and
    /// `targets/`).
    pub channel: String,
    /// The channel's `root.json` as installed with the agent (relative to the config file).
    pub root: PathBuf,
    /// The agent's own state: TUF's record of the versions seen, downloads (relative to the
    /// config file).
    pub state_dir: PathBuf,
    /// Where the local target keeps this site's apps (`ROOT/SITE/APP/current`), to say what
    /// runs now.
    #[serde(default)]
    pub targets_root: Option<PathBuf>,
    /// When the app may be updated. It fails closed: no answer means busy.
    #[serde(default)]
    pub idle: Option<IdleProbe>,
    /// How often `agent run` (without `--once`) checks the channel (`1h`, `15m`).
    #[serde(default = "hourly")]
    pub interval: String,
    /// How long an update may wait for the app to be idle before each deferral is reported
    /// as overdue (it still waits, unless the channel says `force`).
    #[serde(default = "a_day")]
    pub max_defer: String,
    /// Between channel checks, the apps' health checks every `every`; after `failures` in a
    /// row the `restart` command runs (in the app's current release) and is recorded.
    #[serde(default)]
    pub watchdog: Option<Watchdog>,
    /// Where the agent ships its ledger and status after each pass (`ferry collect serve`).
    #[serde(default)]
    pub report: Option<crate::collect::ship::ReportConfig>,
    /// The agent updates its own binary when the channel names another one.
    #[serde(default)]
    pub self_update: Option<SelfUpdate>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfUpdate {
    /// The binary the service manager runs (relative to the config file): replaced atomically
    /// by a new one that passed a trial pass; the one before is kept as `PATH.previous`.
    pub path: PathBuf,
    /// How long the new binary's trial pass may take.
    #[serde(default = "ten_minutes")]
    pub trial_timeout_seconds: u64,
}

fn ten_minutes() -> u64 {
    600
}

impl AgentConfig {
    /// What is wrong with the values (the shape is serde's): (field path, message), all of
    /// them.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |path: &str, m: String| out.push((path.to_owned(), m));
        match url::Url::parse(&self.channel) {
            Ok(u) if ["file", "http", "https"].contains(&u.scheme()) => {}
            Ok(u) => bad(
                "channel",
                format!(
                    "`{}`: a channel is read from file://, http:// or https://, not {}://",
                    self.channel,
                    u.scheme()
                ),
            ),
            Err(e) => bad("channel", format!("`{}`: {e}", self.channel)),
        }
        if !crate::collect::valid_site(&self.site) {
            bad(
                "site",
                format!("`{}`: letters, digits, `.`, `_`, `-`", self.site),
            );
        }
        let durations = [("interval", &self.interval), ("max_defer", &self.max_defer)];
        let watchdog = self.watchdog.iter().flat_map(|w| {
            [
                ("watchdog.every", &w.every),
                ("watchdog.rollback_within", &w.rollback_within),
            ]
        });
        for (path, value) in durations.into_iter().chain(watchdog) {
            if let Err(e) = crate::gate::parse_duration(value) {
                bad(path, format!("`{value}`: {e}"));
            }
        }
        if let Some(w) = &self.watchdog {
            if w.restart.is_empty() {
                bad("watchdog.restart", "the restart command is empty".into());
            }
            if w.failures == 0 {
                bad("watchdog.failures", "at least 1".into());
            }
        }
        if let Some(r) = &self.report {
            match url::Url::parse(&r.url) {
                Ok(u) if u.scheme() == "https" => {}
                Ok(_) => bad(
                    "report.url",
                    format!("`{}`: the collector is reached over HTTPS only", r.url),
                ),
                Err(e) => bad("report.url", format!("`{}`: {e}", r.url)),
            }
            if let Err(e) = crate::secret::SecretRef::parse(&r.token) {
                bad("report.token", e.to_string());
            }
        }
        out
    }

    /// The binary the agent updates, when it updates itself.
    pub fn agent_binary(&self, base: &Path) -> Option<PathBuf> {
        self.self_update.as_ref().map(|s| base.join(&s.path))
    }
}

/// The agent's own binary: the channel's and the one installed.
#[derive(Debug, Clone, Serialize)]
pub struct AgentBinaryCheck {
    pub desired: String,
    pub installed: String,
    /// The verified download, when it differs from the installed one and has not failed a
    /// trial before.
    pub download: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watchdog {
    #[serde(default = "half_minute")]
    pub every: String,
    #[serde(default = "three")]
    pub failures: u32,
    pub restart: Vec<String>,
    /// An app that fails `failures` checks in a row within this long after the agent updated
    /// it is rolled back to the version before (instead of restarted), and the update is held
    /// back until the channel publishes again.
    #[serde(default = "hourly")]
    pub rollback_within: String,
}

fn half_minute() -> String {
    "30s".into()
}

fn three() -> u32 {
    3
}

fn hourly() -> String {
    "1h".into()
}

fn a_day() -> String {
    "24h".into()
}

/// How the agent asks whether the app is idle (no queries running, no import under way).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleProbe {
    /// Idle when this command exits 0 within `timeout_seconds` (run in the config's folder).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Busy while this file exists (a lock the app holds while it works).
    #[serde(default)]
    pub busy_file: Option<PathBuf>,
    #[serde(default = "idle_timeout")]
    pub timeout_seconds: u64,
}

fn idle_timeout() -> u64 {
    10
}

impl IdleProbe {
    /// `Ok(())` when idle; otherwise why it counts as busy (an error or no answer included).
    pub async fn idle(&self, base: &Path) -> Result<(), String> {
        if let Some(f) = &self.busy_file {
            let path = base.join(f);
            match std::fs::symlink_metadata(&path) {
                Ok(_) => return Err(format!("{} exists", path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        let Some(argv) = self.command.as_ref().filter(|a| !a.is_empty()) else {
            return Ok(());
        };
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]).current_dir(base).kill_on_drop(true);
        let limit = std::time::Duration::from_secs(self.timeout_seconds);
        match tokio::time::timeout(limit, cmd.output()).await {
            Err(_) => Err(format!(
                "`{}` gave no answer within {} s",
                argv.join(" "),
                self.timeout_seconds
            )),
            Ok(Err(e)) => Err(format!("`{}`: {e}", argv.join(" "))),
            Ok(Ok(o)) if o.status.success() => Ok(()),
            Ok(Ok(o)) => Err(format!("`{}` says busy ({})", argv.join(" "), o.status)),
        }
    }
}

/// One app: what the channel wants, what runs, and whether an update is due.
#[derive(Debug, Clone, Serialize)]
pub struct AppCheck {
    pub app: String,
    pub desired: String,
    pub running: Option<String>,
    /// The verified artifact, downloaded.
    pub artifact: PathBuf,
    pub update_due: bool,
    /// The channel says to install even while the app is busy.
    pub force: bool,
}

/// The channel as the agent verified it.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub site: String,
    pub channel_version: u64,
    pub expires: String,
    pub apps: Vec<AppCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentBinaryCheck>,
}

/// Why the channel gave nothing to act on.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Signed metadata older than seen before, a bad signature, an artifact whose bytes are
    /// not the signed ones: an attack or a broken channel.
    #[error("channel refused: {0}")]
    Refused(String),
    /// Expired metadata (a frozen channel): nothing changes until it is republished.
    #[error("channel metadata expired ({0}): nothing changes until the channel is published again")]
    Expired(String),
    #[error("{0}")]
    Other(String),
}

fn classify(what: &str, e: tough::error::Error) -> CheckError {
    use tough::error::Error as E;
    let text = format!("{what}: {e}");
    match e {
        E::ExpiredMetadata { .. } => CheckError::Expired(text),
        E::OlderMetadata { .. }
        | E::VerifyMetadata { .. }
        | E::VerifyTrustedMetadata { .. }
        | E::VerifyRoleMetadata { .. }
        | E::HashMismatch { .. }
        | E::MaxSizeExceeded { .. }
        | E::VersionMismatch { .. }
        | E::OlderSnapshotInTimestamp { .. }
        | E::SnapshotRoleRollback { .. } => CheckError::Refused(text),
        // A target is checked as it streams: bytes past its signed length, or a digest that
        // is not the signed one, end the stream with the transport's error.
        E::Transport { ref source, .. }
            if ["Maximum size", "Hash mismatch"]
                .iter()
                .any(|m| source.to_string().contains(m)) =>
        {
            CheckError::Refused(text)
        }
        _ => CheckError::Other(text),
    }
}

/// Reads and verifies the channel for `cfg` (paths relative to `base`, the config's folder).
pub async fn check(cfg: &AgentConfig, base: &Path) -> Result<Checked, CheckError> {
    let other = |m: String| CheckError::Other(m);
    let root_path = base.join(&cfg.root);
    let root = std::fs::read(&root_path)
        .map_err(|e| other(format!("root {}: {e}", root_path.display())))?;
    let state = base.join(&cfg.state_dir);
    let tuf = state.join("tuf");
    std::fs::create_dir_all(&tuf).map_err(|e| other(format!("{}: {e}", tuf.display())))?;
    let channel = if cfg.channel.ends_with('/') {
        cfg.channel.clone()
    } else {
        format!("{}/", cfg.channel)
    };
    let join = |p: &str| {
        url::Url::parse(&channel)
            .and_then(|u| u.join(p))
            .map_err(|e| other(format!("channel `{}`: {e}", cfg.channel)))
    };
    let repo = RepositoryLoader::new(&root, join("metadata/")?, join("targets/")?)
        .transport(Transport)
        .datastore(&tuf)
        .expiration_enforcement(ExpirationEnforcement::Safe)
        .load()
        .await
        .map_err(|e| classify("loading the channel's metadata", e))?;
    let doc = read_target(&repo, &super::site_target(&cfg.site)).await?;
    let desired: Desired = serde_json::from_slice(&doc)
        .map_err(|e| CheckError::Refused(format!("site document: {e}")))?;
    if desired.format != DESIRED_FORMAT || desired.site != cfg.site {
        return Err(CheckError::Refused(format!(
            "the site document is for `{}` in format `{}`, this agent is `{}` reading `{DESIRED_FORMAT}`",
            desired.site, desired.format, cfg.site
        )));
    }
    crate::durable::write_atomic(&state.join("desired.json"), &doc)
        .map_err(|e| other(format!("{}: {e}", state.display())))?;
    let downloads = state.join("downloads");
    std::fs::create_dir_all(&downloads)
        .map_err(|e| other(format!("{}: {e}", downloads.display())))?;
    let mut apps = Vec::new();
    for a in &desired.apps {
        let bytes = read_target(&repo, &a.artifact).await?;
        let path = downloads.join(format!("{}-{}.tar.gz", a.app, a.version));
        crate::durable::write_atomic(&path, &bytes)
            .map_err(|e| other(format!("{}: {e}", path.display())))?;
        let running = cfg
            .targets_root
            .as_ref()
            .and_then(|r| running(&base.join(r), &cfg.site, &a.app));
        apps.push(AppCheck {
            app: a.app.clone(),
            desired: a.version.clone(),
            update_due: running.as_deref() != Some(a.version.as_str()),
            force: a.force,
            running,
            artifact: path,
        });
    }
    let agent = match (&desired.agent, cfg.agent_binary(base)) {
        (Some(d), Some(bin)) => Some(agent_binary(&repo, d, &bin, &state).await?),
        _ => None,
    };
    let ts = &repo.timestamp().signed;
    Ok(Checked {
        agent,
        site: cfg.site.clone(),
        channel_version: ts.version.get(),
        expires: ts
            .expires
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        apps,
    })
}

/// The channel's agent binary against the installed one; downloaded (checked) when it is
/// another that has not failed its trial here before.
async fn agent_binary(
    repo: &tough::Repository,
    d: &super::DesiredAgent,
    installed: &Path,
    state: &Path,
) -> Result<AgentBinaryCheck, CheckError> {
    let other = |m: String| CheckError::Other(m);
    let have = std::fs::read(installed)
        .map(|b| crate::load::sha256_hex(&b))
        .map_err(|e| other(format!("self_update.path {}: {e}", installed.display())))?;
    let failed = std::fs::read_to_string(state.join("agent/failed")).unwrap_or_default();
    let mut check = AgentBinaryCheck {
        desired: d.sha256.clone(),
        installed: have,
        download: None,
    };
    if check.desired == check.installed || failed.trim() == d.sha256 {
        return Ok(check);
    }
    let bytes = read_target(repo, &d.target).await?;
    if crate::load::sha256_hex(&bytes) != d.sha256 {
        return Err(CheckError::Refused(format!(
            "{}: not the binary the site document names",
            d.target
        )));
    }
    let dir = state.join("agent");
    std::fs::create_dir_all(&dir).map_err(|e| other(format!("{}: {e}", dir.display())))?;
    let path = dir.join(format!("download-{}", d.sha256));
    crate::durable::write_atomic(&path, &bytes)
        .map_err(|e| other(format!("{}: {e}", path.display())))?;
    check.download = Some(path);
    Ok(check)
}

/// A target's bytes, checked against its signed length and SHA-256 as they stream.
async fn read_target(repo: &tough::Repository, name: &str) -> Result<Vec<u8>, CheckError> {
    let target = TargetName::new(name).map_err(|e| CheckError::Other(format!("{name}: {e}")))?;
    let stream = repo
        .read_target(&target)
        .await
        .map_err(|e| classify(name, e))?
        .ok_or_else(|| {
            CheckError::Refused(format!("{name} is not in the channel's signed targets"))
        })?;
    stream.into_vec().await.map_err(|e| classify(name, e))
}

/// The release `ROOT/SITE/APP/current` points at.
fn running(root: &Path, site: &str, app: &str) -> Option<String> {
    let link = std::fs::read_link(root.join(site).join(app).join("current")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// Fetches channel files from a directory or over HTTP(S) (reqwest on rustls: ferry's one
/// HTTP client), whole, for TUF to check.
#[derive(Debug, Clone, Default)]
struct Transport;

#[async_trait::async_trait]
impl tough::Transport for Transport {
    async fn fetch(&self, url: url::Url) -> Result<tough::TransportStream, tough::TransportError> {
        use tough::{TransportError, TransportErrorKind};
        let bytes = match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| TransportError::new(TransportErrorKind::Other, url.clone()))?;
                match tokio::fs::read(&path).await {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(TransportError::new(TransportErrorKind::FileNotFound, url));
                    }
                    Err(e) => {
                        return Err(TransportError::new_with_cause(
                            TransportErrorKind::Other,
                            url,
                            e,
                        ));
                    }
                }
            }
            "http" | "https" => {
                crate::install_crypto_provider();
                let resp = reqwest::Client::new()
                    .get(url.clone())
                    .send()
                    .await
                    .map_err(|e| {
                        TransportError::new_with_cause(TransportErrorKind::Other, url.clone(), e)
                    })?;
                if resp.status() == reqwest::StatusCode::NOT_FOUND {
                    return Err(TransportError::new(TransportErrorKind::FileNotFound, url));
                }
                let resp = resp.error_for_status().map_err(|e| {
                    TransportError::new_with_cause(TransportErrorKind::Other, url.clone(), e)
                })?;
                resp.bytes()
                    .await
                    .map_err(|e| {
                        TransportError::new_with_cause(TransportErrorKind::Other, url.clone(), e)
                    })?
                    .to_vec()
            }
            _ => {
                return Err(TransportError::new(
                    TransportErrorKind::UnsupportedUrlScheme,
                    url,
                ));
            }
        };
        let one: Result<bytes::Bytes, TransportError> = Ok(bytes.into());
        Ok(Box::pin(futures_util::stream::once(async move { one })))
    }
}

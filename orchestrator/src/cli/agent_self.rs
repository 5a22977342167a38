//! The agent's update of itself (`self_update` in its config, `ferry publish --agent-binary`).
//!
//! The channel names a binary by its SHA-256; the agent downloads it through the same TUF
//! checks as any artifact. Before anything is replaced, the running (old) agent runs the new
//! binary for one whole pass of its own (`agent run --once`, with `FERRY_AGENT_TRIAL` set so it
//! does not update itself in turn): a binary that does not start, crashes, hangs past the trial
//! timeout or fails the pass is never installed, and its digest is remembered so it is not
//! tried again (until the channel names another). One that passes replaces the binary the
//! service manager runs, atomically, and the one before is kept as `PATH.previous`; the agent
//! exits 2 to be restarted into it. The new agent's first passes are still on trial: after
//! [`ATTEMPTS`] failed passes in a row it puts the previous binary back and exits 2 again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{CliError, Ctx};
use crate::channel::read::{AgentBinaryCheck, AgentConfig};
use crate::exit;

const TRIAL_ENV: &str = "FERRY_AGENT_TRIAL";

/// Failed passes of a newly installed agent before the previous one is put back.
pub const ATTEMPTS: u32 = 3;

/// A pass that ended in one of these worked as an agent should (an app backed out or deferred
/// is the app's matter, not the agent's).
const GOOD: [u8; 4] = [
    exit::OK,
    exit::CHANGES,
    exit::BACKED_OUT,
    super::agent_cmd::DEFERRED,
];

/// The newly installed binary, until a pass of it succeeds.
#[derive(Debug, Serialize, Deserialize)]
struct Trial {
    previous: String,
    new: String,
    failed_passes: u32,
}

/// Whether this process is a trial pass run by the agent before it replaces itself.
pub fn in_trial() -> bool {
    std::env::var_os(TRIAL_ENV).is_some()
}

fn record(ctx: &Ctx, ok: bool, message: &str, detail: serde_json::Value) -> Result<(), CliError> {
    if ok {
        println!("{message}");
    } else {
        eprintln!("warning: {message}");
    }
    ctx.ledger.append(
        crate::ledger::NewEntry::new(&ctx.actor, crate::ledger::Event::OperationFinished)
            .outcome(if ok {
                crate::ledger::Outcome::Ok
            } else {
                crate::ledger::Outcome::Failed
            })
            .message(message.to_owned())
            .detail(detail),
    )?;
    Ok(())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", path.display()))
}

/// `bytes` as an executable at `dst`, replaced atomically and durably.
fn install_file(bytes: &[u8], dst: &Path) -> std::io::Result<()> {
    crate::durable::write_atomic_mode(dst, bytes, 0o755)
}

/// Runs the downloaded binary's trial pass; installs it when the pass succeeds. `Some(2)`: the
/// agent was replaced, exit to be restarted into it; `None`: it was refused (recorded), the
/// pass goes on with this agent.
pub async fn update(
    agent: &Ctx,
    cfg: &AgentConfig,
    base: &Path,
    config: &Path,
    check: &AgentBinaryCheck,
) -> Result<Option<u8>, CliError> {
    let (Some(download), Some(bin), Some(su)) =
        (&check.download, cfg.agent_binary(base), &cfg.self_update)
    else {
        return Ok(None);
    };
    let state = base.join(&cfg.state_dir).join("agent");
    let io = |p: &Path, e: std::io::Error| CliError::Refused(format!("{}: {e}", p.display()));
    let bytes = std::fs::read(download).map_err(|e| io(download, e))?;
    let candidate = with_suffix(&bin, ".new");
    install_file(&bytes, &candidate).map_err(|e| io(&candidate, e))?;
    let detail = serde_json::json!({
        "operation": "agent_self_update", "from": check.installed, "to": check.desired,
    });
    if let Err(why) = trial(&candidate, config, su.trial_timeout_seconds).await {
        let _ = std::fs::remove_file(&candidate);
        std::fs::create_dir_all(&state).map_err(|e| io(&state, e))?;
        let failed = state.join("failed");
        crate::durable::write_atomic(&failed, check.desired.as_bytes())
            .map_err(|e| io(&failed, e))?;
        let mut d = detail;
        d["refused"] = why.clone().into();
        let message = format!(
            "the agent binary {} failed its trial pass and was not installed ({why}); this agent keeps running",
            check.desired
        );
        record(agent, false, &message, d)?;
        return Ok(None);
    }
    let old = std::fs::read(&bin).map_err(|e| io(&bin, e))?;
    let previous = with_suffix(&bin, ".previous");
    install_file(&old, &previous).map_err(|e| io(&previous, e))?;
    std::fs::rename(&candidate, &bin).map_err(|e| io(&bin, e))?;
    let t = Trial {
        previous: check.installed.clone(),
        new: check.desired.clone(),
        failed_passes: 0,
    };
    std::fs::create_dir_all(&state).map_err(|e| io(&state, e))?;
    let path = state.join("trial.json");
    crate::durable::write_atomic(&path, &serde_json::to_vec(&t).expect("serializes"))
        .map_err(|e| io(&path, e))?;
    let message = format!(
        "the agent replaced itself ({} -> {}) after a successful trial pass; the previous binary is {}; restarting into the new one",
        short(&check.installed),
        short(&check.desired),
        previous.display()
    );
    record(agent, true, &message, detail)?;
    Ok(Some(exit::CHANGES))
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// One pass of `candidate` as this agent; Err says why it does not count as a working agent.
async fn trial(candidate: &Path, config: &Path, timeout: u64) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(candidate);
    cmd.args(["agent", "run", "--once", "--config"])
        .arg(config)
        .env(TRIAL_ENV, "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let limit = std::time::Duration::from_secs(timeout);
    let out = match tokio::time::timeout(limit, cmd.output()).await {
        Err(_) => return Err(format!("no end within {timeout} s")),
        Ok(Err(e)) => return Err(format!("it did not start: {e}")),
        Ok(Ok(o)) => o,
    };
    match out.status.code() {
        Some(c) if u8::try_from(c).is_ok_and(|c| GOOD.contains(&c)) => Ok(()),
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().last().unwrap_or("").trim();
            Err(format!("{}: {last}", out.status))
        }
    }
}

/// Whether this process starts as a newly installed agent not confirmed yet (read before its
/// pass: the pass that installs a new binary does not judge it).
pub fn on_trial(cfg: &AgentConfig, base: &Path) -> bool {
    !in_trial() && base.join(&cfg.state_dir).join("agent/trial.json").exists()
}

/// After the pass of an agent [`on_trial`]: it is confirmed by its first good pass; after
/// [`ATTEMPTS`] failed ones in a row the previous binary is put back (`Some(2)`: exit to be
/// restarted into it).
pub fn settle(ctx: &Ctx, cfg: &AgentConfig, base: &Path, code: u8) -> Result<Option<u8>, CliError> {
    let Some(bin) = cfg.agent_binary(base).filter(|_| !in_trial()) else {
        return Ok(None);
    };
    let state = base.join(&cfg.state_dir).join("agent");
    let path = state.join("trial.json");
    let Some(mut t) = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Trial>(&b).ok())
    else {
        return Ok(None);
    };
    let io = |p: &Path, e: std::io::Error| CliError::Refused(format!("{}: {e}", p.display()));
    let installed = std::fs::read(&bin)
        .map(|b| crate::load::sha256_hex(&b))
        .map_err(|e| io(&bin, e))?;
    let detail =
        serde_json::json!({ "operation": "agent_self_update", "from": t.previous, "to": t.new });
    if installed != t.new {
        let _ = std::fs::remove_file(&path);
        return Ok(None);
    }
    if GOOD.contains(&code) {
        std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
        let message = format!(
            "the new agent {} passed its first pass: kept",
            short(&t.new)
        );
        record(ctx, true, &message, detail)?;
        return Ok(None);
    }
    t.failed_passes += 1;
    if t.failed_passes < ATTEMPTS {
        crate::durable::write_atomic(&path, &serde_json::to_vec(&t).expect("serializes"))
            .map_err(|e| io(&path, e))?;
        return Ok(None);
    }
    let previous = with_suffix(&bin, ".previous");
    let old = std::fs::read(&previous).map_err(|e| io(&previous, e))?;
    install_file(&old, &bin).map_err(|e| io(&bin, e))?;
    crate::durable::write_atomic(&state.join("failed"), t.new.as_bytes())
        .map_err(|e| io(&state, e))?;
    std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
    let message = format!(
        "the new agent {} failed {ATTEMPTS} passes in a row: the previous binary {} is back; restarting into it",
        short(&t.new),
        short(&t.previous)
    );
    record(ctx, false, &message, detail)?;
    Ok(Some(exit::CHANGES))
}

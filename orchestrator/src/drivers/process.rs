//! Running a target's commands (restart, health) with a deadline, output captured and redacted.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::TargetSpec;

pub(crate) struct CommandOutput {
    pub success: bool,
    pub code: Option<i32>,
    /// The tail of stderr and stdout, with secret values replaced by `***`.
    pub tail: String,
}

impl CommandOutput {
    /// `exit 3`, or `killed by a signal`.
    pub fn status(&self) -> String {
        self.code
            .map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit {c}"))
    }
}

pub(crate) enum RunError {
    Spawn(std::io::Error),
    Timeout,
}

/// Runs `argv` in `cwd` with the target's environment; kills it at the deadline.
pub(crate) async fn run(
    spec: &TargetSpec,
    argv: &[String],
    cwd: &Path,
    extra_env: &[(&str, &str)],
    timeout: Duration,
) -> Result<CommandOutput, RunError> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    for (k, v) in &spec.secrets {
        cmd.env(k, v.expose());
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().map_err(RunError::Spawn)?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(RunError::Spawn)?,
        Err(_) => return Err(RunError::Timeout),
    };
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    let text = redact(&text, spec.secrets.iter().map(|(_, s)| s.expose()));
    let tail: String = {
        let t = text.trim();
        let start = t.char_indices().rev().nth(400).map_or(0, |(i, _)| i);
        t[start..].to_owned()
    };
    Ok(CommandOutput {
        success: out.status.success(),
        code: out.status.code(),
        tail,
    })
}

/// Replaces every occurrence of each secret value with `***`.
pub fn redact<'a>(text: &str, secrets: impl Iterator<Item = &'a str>) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if !s.is_empty() {
            out = out.replace(s, "***");
        }
    }
    out
}

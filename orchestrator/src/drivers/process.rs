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
        // Its own process group: a terminal's Ctrl-C goes to ferry's group only, so the first
        // one lets a restart or health command finish (the safe-point rule) instead of
        // killing it and turning a clean stop into a failed step.
        .process_group(0)
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

/// Replaces every occurrence of each secret value with `***`. Every occurrence of every
/// value is found first (overlapping ones too) and each run of covered text is replaced once,
/// so a secret that contains another (`4711` and `4711-9f8e7d6c5b4a`), or two that overlap,
/// never leave a part of one in clear (`***-9f8e7d6c5b4a`).
pub fn redact<'a>(text: &str, secrets: impl Iterator<Item = &'a str>) -> String {
    let patterns: Vec<&str> = secrets.filter(|s| !s.is_empty()).collect();
    if patterns.is_empty() {
        return text.to_owned();
    }
    let ac = aho_corasick::AhoCorasick::new(&patterns).expect("literal patterns always build");
    let mut found: Vec<(usize, usize)> = ac
        .find_overlapping_iter(text)
        .map(|m| (m.start(), m.end()))
        .collect();
    found.sort_unstable();
    let mut covered: Vec<(usize, usize)> = Vec::new();
    for m in found {
        let (start, end) = m;
        match covered.last_mut() {
            Some((_, e)) if start <= *e => *e = (*e).max(end),
            _ => covered.push((start, end)),
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in covered {
        out.push_str(&text[at..start]);
        out.push_str("***");
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn a_secret_inside_another_is_hidden_whole() {
        let secrets = ["4711", "4711-9f8e7d6c5b4a"];
        for order in [secrets, [secrets[1], secrets[0]]] {
            let out = redact(
                "pin 4711, token 4711-9f8e7d6c5b4a, again x4711y",
                order.into_iter(),
            );
            assert_eq!(out, "pin ***, token ***, again x***y");
        }
    }

    #[test]
    fn overlapping_and_empty_values() {
        assert_eq!(redact("abcd", ["abc", "bcd", ""].into_iter()), "***");
        assert_eq!(
            redact("xabcdx abc", ["bcd", "ab"].into_iter()),
            "x***x ***c"
        );
        assert_eq!(redact("nothing", std::iter::empty()), "nothing");
        assert_eq!(redact("aaaa", ["aa"].into_iter()), "***");
    }
}

//! `ferry hosts trust`: record an endpoint's host key, only when a person confirms it.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use super::{CliError, Ctx};
use crate::drivers::ssh::known_hosts::Verdict;
use crate::engine::hosts;
use crate::exit;
use crate::printer::HostKey;

pub async fn trust(
    ctx: &Ctx,
    inventory: &Path,
    endpoint: &str,
    fingerprint: Option<&str>,
) -> Result<u8, CliError> {
    let p = hosts::presented(inventory, endpoint).await?;
    let file = p.known_hosts.display().to_string();
    let key = HostKey {
        endpoint,
        name: &p.name,
        algorithm: &p.algorithm,
        fingerprint: &p.fingerprint,
        known_hosts: &file,
    };
    if p.verdict == Verdict::Trusted {
        ctx.out().host_trusted(&key, true);
        return Ok(exit::OK);
    }
    p.not_changed()?;
    ctx.out().host_key(&key);
    let fp = &p.fingerprint;
    let confirmed = match fingerprint {
        Some(f) if f == fp => true,
        Some(f) => {
            return Err(CliError::Refused(format!(
                "the presented fingerprint {fp} is not the one you gave ({f}); nothing recorded"
            )));
        }
        None if std::io::stdin().is_terminal() => ask(),
        None => {
            return Err(CliError::Refused(format!(
                "not confirmed, nothing recorded: run this in a terminal, or pass --fingerprint {fp} once you have checked it on the endpoint"
            )));
        }
    };
    if !confirmed {
        return Err(CliError::Refused("not confirmed; nothing recorded".into()));
    }
    hosts::trust(&ctx.state(), &p)?;
    ctx.out().host_trusted(&key, false);
    Ok(exit::OK)
}

/// Asks the person at the terminal to compare the fingerprint with the endpoint's console.
fn ask() -> bool {
    print!(
        "Compare it with the endpoint's console (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub). Trust it? Type yes: "
    );
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    answer.trim() == "yes"
}

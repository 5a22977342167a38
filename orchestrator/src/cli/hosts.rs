//! `ferry hosts trust`: record an endpoint's host key, only when a person confirms it.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use super::{CliError, Ctx};
use crate::drivers::ssh::Session;
use crate::drivers::ssh::known_hosts::{self, Verdict};
use crate::ledger::{Event, NewEntry};
use crate::{exit, workspace};

pub async fn trust(
    ctx: &Ctx,
    inventory: &Path,
    endpoint: &str,
    fingerprint: Option<&str>,
) -> Result<u8, CliError> {
    let (inv, _) = workspace::load(inventory, &[]).map_err(CliError::Invalid)?;
    if inv.value.endpoint(endpoint).is_none() {
        return Err(CliError::Refused(format!(
            "endpoint `{endpoint}` is not in {}",
            inventory.display()
        )));
    }
    let site = inv
        .value
        .sites
        .iter()
        .find(|s| s.endpoints.iter().any(|e| e == endpoint))
        .map(|s| s.id.clone())
        .unwrap_or_default();
    let base = workspace::base_dir(&inv.source.path);
    let t = workspace::ssh_target(&inv.value, &base, endpoint, &site)?;
    let (key, verdict) = Session::host_key(&t.host, t.jump.as_ref())
        .await
        .map_err(|e| CliError::Exec(crate::executor::ExecError::Driver(e.into())))?;
    let fp = known_hosts::fingerprint(&key);
    let name = known_hosts::host_name(&t.host.address, t.host.port);
    let file = t.host.known_hosts.display().to_string();
    match verdict {
        Verdict::Trusted => {
            println!(
                "{endpoint} ({name}) is already trusted in {file}: {} {fp}",
                key.algorithm()
            );
            return Ok(exit::OK);
        }
        Verdict::Changed { lines } => {
            return Err(CliError::Refused(format!(
                "{endpoint} ({name}) presents {fp}, but {file} (lines {lines:?}) records another key. ferry will not replace it: verify the new key out of band, then remove the old line by hand"
            )));
        }
        Verdict::Unknown => {}
    }
    println!(
        "{endpoint} ({name}) presents a {} host key:\n  {fp}",
        key.algorithm()
    );
    let confirmed = match fingerprint {
        Some(f) if f == fp => true,
        Some(f) => {
            return Err(CliError::Refused(format!(
                "the presented fingerprint {fp} is not the one you gave ({f}); nothing recorded"
            )));
        }
        None if std::io::stdin().is_terminal() => {
            print!(
                "Compare it with the endpoint's console (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub). Trust it? Type yes: "
            );
            let _ = std::io::stdout().flush();
            let mut answer = String::new();
            let _ = std::io::stdin().lock().read_line(&mut answer);
            answer.trim() == "yes"
        }
        None => {
            return Err(CliError::Refused(format!(
                "not confirmed, nothing recorded: run this in a terminal, or pass --fingerprint {fp} once you have checked it on the endpoint"
            )));
        }
    };
    if !confirmed {
        return Err(CliError::Refused("not confirmed; nothing recorded".into()));
    }
    let line = known_hosts::entry_line(&t.host.address, t.host.port, &key);
    let append = || -> std::io::Result<()> {
        if let Some(dir) = t.host.known_hosts.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&t.host.known_hosts)?;
        writeln!(f, "{line}")?;
        f.sync_all()
    };
    append().map_err(|e| CliError::Refused(format!("cannot write {file}: {e}")))?;
    let mut e = NewEntry::new(&ctx.actor, Event::HostTrusted)
        .message(format!("trusted host key of {endpoint} ({name}): {fp}"));
    e.site = Some(site).filter(|s| !s.is_empty());
    e.target = Some(endpoint.to_owned());
    e.detail = Some(
        serde_json::json!({ "endpoint": endpoint, "host": name, "fingerprint": fp, "known_hosts": file }),
    );
    ctx.ledger.append(e)?;
    println!("recorded in {file}");
    Ok(exit::OK)
}

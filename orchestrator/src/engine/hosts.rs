//! Trusting an SSH endpoint's host key, as library calls: what the endpoint presents (and what
//! its known_hosts says of it), and recording the key once a person confirmed it. Confirming
//! is the caller's (a prompt, or a fingerprint the person checked on the endpoint).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{Error, State};
use crate::drivers::ssh::Session;
use crate::drivers::ssh::known_hosts::{self, Verdict};
use crate::ledger::{Event, NewEntry};
use crate::workspace;

/// The host key an endpoint presents, and where it would be recorded.
pub struct Presented {
    pub endpoint: String,
    pub site: Option<String>,
    /// `address` or `[address]:port`, as known_hosts names the host.
    pub name: String,
    pub algorithm: String,
    /// `SHA256:...`
    pub fingerprint: String,
    pub known_hosts: PathBuf,
    pub verdict: Verdict,
    line: String,
}

impl Presented {
    /// Refuses a key other than the one known_hosts records for the host: possibly a man in
    /// the middle, never replaced by ferry.
    pub fn not_changed(&self) -> Result<(), Error> {
        match &self.verdict {
            Verdict::Changed { lines } => Err(Error::Refused(format!(
                "{} ({}) presents {}, but {} (lines {lines:?}) records another key. ferry will not replace it: verify the new key out of band, then remove the old line by hand",
                self.endpoint,
                self.name,
                self.fingerprint,
                self.known_hosts.display()
            ))),
            _ => Ok(()),
        }
    }
}

/// Connects to the inventory's `endpoint` (through its jump host) far enough to see its host
/// key, and checks it against the endpoint's known_hosts.
pub async fn presented(inventory: &Path, endpoint: &str) -> Result<Presented, Error> {
    let (inv, _) = workspace::load(inventory, &[]).map_err(Error::Invalid)?;
    if inv.value.endpoint(endpoint).is_none() {
        return Err(Error::Refused(format!(
            "endpoint `{endpoint}` is not in {}",
            inventory.display()
        )));
    }
    let site = inv
        .value
        .sites
        .iter()
        .find(|s| s.endpoints.iter().any(|e| e == endpoint))
        .map(|s| s.id.clone());
    let base = workspace::base_dir(&inv.source.path);
    let t = workspace::ssh_target(
        &inv.value,
        &base,
        endpoint,
        site.as_deref().unwrap_or_default(),
    )?;
    let (key, verdict) = Session::host_key(&t.host, t.jump.as_ref())
        .await
        .map_err(|e| Error::Exec(crate::executor::ExecError::Driver(e.into())))?;
    Ok(Presented {
        endpoint: endpoint.to_owned(),
        site,
        name: known_hosts::host_name(&t.host.address, t.host.port),
        algorithm: key.algorithm().to_string(),
        fingerprint: known_hosts::fingerprint(&key),
        line: known_hosts::entry_line(&t.host.address, t.host.port, &key),
        known_hosts: t.host.known_hosts.clone(),
        verdict,
    })
}

/// Appends the presented key to the endpoint's known_hosts (durably) and records
/// `host_trusted`. Only for a key a person confirmed, and never over another recorded key.
pub fn trust(state: &State, p: &Presented) -> Result<(), Error> {
    p.not_changed()?;
    let file = p.known_hosts.display().to_string();
    let append = || -> std::io::Result<()> {
        if let Some(dir) = p.known_hosts.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.known_hosts)?;
        writeln!(f, "{}", p.line)?;
        f.sync_all()
    };
    append().map_err(|e| Error::Refused(format!("cannot write {file}: {e}")))?;
    let mut e = NewEntry::new(&state.actor, Event::HostTrusted).message(format!(
        "trusted host key of {} ({}): {}",
        p.endpoint, p.name, p.fingerprint
    ));
    e.site = p.site.clone().filter(|s| !s.is_empty());
    e.target = Some(p.endpoint.clone());
    e.detail = Some(serde_json::json!({
        "endpoint": p.endpoint, "host": p.name, "fingerprint": p.fingerprint, "known_hosts": file,
    }));
    state.ledger.append(e)?;
    Ok(())
}

//! How to reach a target, as plain data: what the edge resolves from the inventory and hands
//! to a driver in its [`TargetSpec`](super::TargetSpec). Kept apart from the drivers so that a
//! build without a driver (cargo features) still knows the shapes.

use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// How to reach and log in to one host.
#[derive(Debug, Clone)]
pub struct HostSpec {
    pub id: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub known_hosts: PathBuf,
    /// Private key text; `None`: use the SSH agent.
    pub identity: Option<Secret>,
    pub passphrase: Option<Secret>,
    pub connect_timeout: Duration,
}

/// What the SSH driver needs beyond the common spec.
#[derive(Debug, Clone)]
pub struct SshTarget {
    pub host: HostSpec,
    pub jump: Option<HostSpec>,
    /// Directory on the endpoint holding one folder per app.
    pub root: String,
    pub command_timeout: Duration,
}

/// How to reach one Docker host, with its TLS files resolved.
#[derive(Debug, Clone)]
pub struct DockerTarget {
    /// The cloud id (one client per cloud is kept for a run).
    pub cloud: String,
    pub host: String,
    pub tls: Option<TlsFiles>,
    pub timeout: Duration,
    /// Registry logins with their secrets resolved (apply time only): server, user, password.
    pub registries: Vec<(String, String, crate::secret::Secret)>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

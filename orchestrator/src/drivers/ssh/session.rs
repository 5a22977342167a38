//! One authenticated SSH connection (optionally through a jump host) and the two things ferry
//! does over it: run a script fed on stdin, and upload bytes.
//!
//! Scripts travel on stdin (`sh -s`), never on the command line, so the environment and
//! secrets they export are not visible in the remote process list or in sshd's logs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};

use super::known_hosts::{self, Verdict};
pub use crate::drivers::endpoints::HostSpec;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("{host}: cannot connect to {address}:{port}: {reason}")]
    Connect {
        host: String,
        address: String,
        port: u16,
        reason: String,
    },
    #[error("{host}: connecting to {address}:{port} timed out after {seconds}s")]
    ConnectTimeout {
        host: String,
        address: String,
        port: u16,
        seconds: u64,
    },
    #[error(
        "{host}: host key of {address}:{port} is not in {known_hosts}; presented key {fingerprint}. If that is the endpoint's key (check it on the console), trust it with: ferry hosts trust {host} -i INVENTORY"
    )]
    UnknownHost {
        host: String,
        address: String,
        port: u16,
        known_hosts: String,
        fingerprint: String,
    },
    #[error(
        "{host}: HOST KEY CHANGED for {address}:{port}: presented {fingerprint}, but {known_hosts} (lines {lines:?}) records another key. Someone may be intercepting the connection, or the endpoint was reinstalled; verify it out of band before removing the old entry"
    )]
    ChangedHost {
        host: String,
        address: String,
        port: u16,
        known_hosts: String,
        fingerprint: String,
        lines: Vec<usize>,
    },
    #[error("{host}: known_hosts: {0}", host = .1)]
    KnownHosts(known_hosts::KnownHostsError, String),
    #[error("{host}: cannot read known_hosts {path}: {reason}")]
    KnownHostsRead {
        host: String,
        path: String,
        reason: String,
    },
    #[error("{host}: authentication as `{user}` failed: {reason}")]
    Auth {
        host: String,
        user: String,
        reason: String,
    },
    #[error("{host}: {what} failed: {reason}")]
    Channel {
        host: String,
        what: String,
        reason: String,
    },
    #[error("{host}: {what} timed out after {seconds}s")]
    Timeout {
        host: String,
        what: String,
        seconds: u64,
    },
}

/// What the host-key callback saw, kept for the error message.
#[derive(Default)]
struct KeySeen {
    verdict: Option<Verdict>,
    key: Option<PublicKey>,
}

struct Client {
    entries: Arc<Vec<known_hosts::Entry>>,
    address: String,
    port: u16,
    seen: Arc<Mutex<KeySeen>>,
    /// `ferry hosts trust` only records the key and never logs in.
    accept_any: bool,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        presented: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // A host certificate is checked by its plain key: ferry trusts no CA.
        let key = &presented.public_key();
        let verdict = known_hosts::check(&self.entries, &self.address, self.port, key);
        let ok = verdict == Verdict::Trusted || self.accept_any;
        let mut seen = self.seen.lock().expect("key lock");
        seen.verdict = Some(verdict);
        seen.key = Some(key.clone());
        Ok(ok)
    }
}

fn config() -> Arc<client::Config> {
    Arc::new(client::Config {
        keepalive_interval: Some(Duration::from_secs(5)),
        keepalive_max: 3,
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    })
}

/// An authenticated connection, plus the jump connection it rides on (kept alive with it).
pub struct Session {
    host: String,
    handle: Handle<Client>,
    _jump: Option<Box<Session>>,
}

pub struct Output {
    pub code: Option<u32>,
    pub stdout: String,
    pub stderr: String,
}

fn load_entries(spec: &HostSpec) -> Result<Arc<Vec<known_hosts::Entry>>, SshError> {
    let path = spec.known_hosts.display().to_string();
    let text = match std::fs::read_to_string(&spec.known_hosts) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(SshError::KnownHostsRead {
                host: spec.id.clone(),
                path,
                reason: e.to_string(),
            });
        }
    };
    known_hosts::parse(&path, &text)
        .map(Arc::new)
        .map_err(|e| SshError::KnownHosts(e, spec.id.clone()))
}

impl Session {
    /// Connects (through `jump` if given), checks the host key strictly and authenticates.
    pub async fn connect(spec: &HostSpec, jump: Option<&HostSpec>) -> Result<Self, SshError> {
        let jump_session = match jump {
            Some(j) => Some(Box::new(Box::pin(Session::connect(j, None)).await?)),
            None => None,
        };
        let (handle, _) = handshake(spec, jump_session.as_deref(), false).await?;
        let mut session = Session {
            host: spec.id.clone(),
            handle,
            _jump: jump_session,
        };
        session.authenticate(spec).await?;
        Ok(session)
    }

    /// Connects only far enough to see the host key (for `ferry hosts trust`).
    pub async fn host_key(
        spec: &HostSpec,
        jump: Option<&HostSpec>,
    ) -> Result<(PublicKey, Verdict), SshError> {
        let jump_session = match jump {
            Some(j) => Some(Session::connect(j, None).await?),
            None => None,
        };
        let (handle, seen) = handshake(spec, jump_session.as_ref(), true).await?;
        let _ = handle.disconnect(Disconnect::ByApplication, "", "en").await;
        let seen = seen.lock().expect("key lock");
        match (&seen.key, &seen.verdict) {
            (Some(k), Some(v)) => Ok((k.clone(), v.clone())),
            _ => Err(SshError::Connect {
                host: spec.id.clone(),
                address: spec.address.clone(),
                port: spec.port,
                reason: "the server presented no host key".into(),
            }),
        }
    }

    async fn authenticate(&mut self, spec: &HostSpec) -> Result<(), SshError> {
        let auth_err = |reason: String| SshError::Auth {
            host: spec.id.clone(),
            user: spec.user.clone(),
            reason,
        };
        let hash = self
            .handle
            .best_supported_rsa_hash()
            .await
            .map_err(|e| auth_err(e.to_string()))?
            .flatten();
        match &spec.identity {
            Some(key_text) => {
                let key: PrivateKey = russh::keys::decode_secret_key(
                    key_text.expose(),
                    spec.passphrase.as_ref().map(Secret::expose),
                )
                .map_err(|e| auth_err(format!("cannot read the private key: {e}")))?;
                let r = self
                    .handle
                    .authenticate_publickey(
                        spec.user.clone(),
                        PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                    )
                    .await
                    .map_err(|e| auth_err(e.to_string()))?;
                if r.success() {
                    Ok(())
                } else {
                    Err(auth_err("the server refused the key".into()))
                }
            }
            None => {
                let mut agent = russh::keys::agent::client::AgentClient::connect_env()
                    .await
                    .map_err(|e| {
                        auth_err(format!(
                            "no identity in the inventory and no SSH agent ({e})"
                        ))
                    })?;
                let ids = agent
                    .request_identities()
                    .await
                    .map_err(|e| auth_err(format!("SSH agent: {e}")))?;
                for id in ids {
                    let public = id.public_key().into_owned();
                    let r = self
                        .handle
                        .authenticate_publickey_with(spec.user.clone(), public, hash, &mut agent)
                        .await;
                    if matches!(r, Ok(ref a) if a.success()) {
                        return Ok(());
                    }
                }
                Err(auth_err("no key in the SSH agent was accepted".into()))
            }
        }
    }

    /// Runs `script` with `sh -s` (script on stdin); stdout and stderr apart; bounded in time.
    pub async fn run(&self, script: &str, timeout: Duration) -> Result<Output, SshError> {
        self.exec_with_input("sh -s", script.as_bytes(), "remote command", timeout)
            .await
    }

    /// Runs `command` with `input` on its stdin; stdout and stderr apart; bounded in time.
    pub async fn exec_with_input(
        &self,
        command: &str,
        input: &[u8],
        what: &str,
        timeout: Duration,
    ) -> Result<Output, SshError> {
        let host = self.host.clone();
        let ch_err = |reason: String| SshError::Channel {
            host: host.clone(),
            what: what.to_owned(),
            reason,
        };
        let work = async {
            let mut channel = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| ch_err(e.to_string()))?;
            channel
                .exec(true, command)
                .await
                .map_err(|e| ch_err(e.to_string()))?;
            for chunk in input.chunks(256 * 1024) {
                channel
                    .data_bytes(chunk.to_vec())
                    .await
                    .map_err(|e| ch_err(e.to_string()))?;
            }
            channel.eof().await.map_err(|e| ch_err(e.to_string()))?;
            let (mut stdout, mut stderr, mut code) = (Vec::new(), Vec::new(), None);
            while let Some(msg) = channel.wait().await {
                match msg {
                    ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, .. } => stderr.extend_from_slice(&data),
                    ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                    _ => {}
                }
            }
            Ok(Output {
                code,
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            })
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(SshError::Timeout {
                host: self.host.clone(),
                what: what.to_owned(),
                seconds: timeout.as_secs(),
            }),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }
}

async fn handshake(
    spec: &HostSpec,
    jump: Option<&Session>,
    accept_any: bool,
) -> Result<(Handle<Client>, Arc<Mutex<KeySeen>>), SshError> {
    let entries = load_entries(spec)?;
    let seen = Arc::new(Mutex::new(KeySeen::default()));
    let client = Client {
        entries,
        address: spec.address.clone(),
        port: spec.port,
        seen: seen.clone(),
        accept_any,
    };
    let connect_err = |reason: String| SshError::Connect {
        host: spec.id.clone(),
        address: spec.address.clone(),
        port: spec.port,
        reason,
    };
    let attempt = async {
        match jump {
            None => client::connect(config(), (spec.address.as_str(), spec.port), client).await,
            Some(j) => {
                let channel = j
                    .handle
                    .channel_open_direct_tcpip(
                        spec.address.clone(),
                        u32::from(spec.port),
                        "127.0.0.1",
                        0,
                    )
                    .await?;
                client::connect_stream(config(), channel.into_stream(), client).await
            }
        }
    };
    let result = tokio::time::timeout(spec.connect_timeout, attempt).await;
    let handle = match result {
        Err(_) => {
            return Err(SshError::ConnectTimeout {
                host: spec.id.clone(),
                address: spec.address.clone(),
                port: spec.port,
                seconds: spec.connect_timeout.as_secs(),
            });
        }
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            let s = seen.lock().expect("key lock");
            let fingerprint = s
                .key
                .as_ref()
                .map(known_hosts::fingerprint)
                .unwrap_or_default();
            let known_hosts = spec.known_hosts.display().to_string();
            return Err(match &s.verdict {
                Some(Verdict::Unknown) => SshError::UnknownHost {
                    host: spec.id.clone(),
                    address: spec.address.clone(),
                    port: spec.port,
                    known_hosts,
                    fingerprint,
                },
                Some(Verdict::Changed { lines }) => SshError::ChangedHost {
                    host: spec.id.clone(),
                    address: spec.address.clone(),
                    port: spec.port,
                    known_hosts,
                    fingerprint,
                    lines: lines.clone(),
                },
                _ => connect_err(e.to_string()),
            });
        }
    };
    Ok((handle, seen))
}

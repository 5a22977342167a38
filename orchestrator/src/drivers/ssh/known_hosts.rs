//! Strict host-key checking against a known_hosts file ferry reads itself.
//!
//! Supported: plain entries (`host`, `[host]:port`, comma lists) with any key type. Refused
//! loudly rather than ignored: `@cert-authority` and `@revoked` markers, hashed host names and
//! wildcard patterns, because silently skipping them could accept a key OpenSSH would refuse
//! (a revoked one) or refuse one it would accept without saying why.

use std::fmt;

use russh::keys::{HashAlg, PublicKey};

/// One usable entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub line: usize,
    pub hosts: Vec<String>,
    pub key: PublicKey,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnownHostsError {
    #[error(
        "{file}:{line}: `{marker}` entries are not supported by ferry; keep ferry's known_hosts free of them (use `ferry hosts trust`)"
    )]
    Marker {
        file: String,
        line: usize,
        marker: String,
    },
    #[error(
        "{file}:{line}: hashed host names are not supported by ferry; record hosts with `ferry hosts trust`"
    )]
    Hashed { file: String, line: usize },
    #[error(
        "{file}:{line}: wildcard or negated host pattern `{pattern}` is not supported by ferry; name each host"
    )]
    Pattern {
        file: String,
        line: usize,
        pattern: String,
    },
    #[error("{file}:{line}: cannot read the key: {reason}")]
    BadKey {
        file: String,
        line: usize,
        reason: String,
    },
}

/// What the file says about a presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Trusted,
    /// No entry for this host at all.
    Unknown,
    /// Entries exist for this host, none with this key: possibly a man in the middle.
    Changed {
        lines: Vec<usize>,
    },
}

/// The name a host is recorded under: `host` for port 22, `[host]:port` otherwise.
pub fn host_name(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_owned()
    } else {
        format!("[{address}]:{port}")
    }
}

pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The line `ferry hosts trust` appends.
pub fn entry_line(address: &str, port: u16, key: &PublicKey) -> String {
    format!(
        "{} {}",
        host_name(address, port),
        key.to_openssh().unwrap_or_default()
    )
}

pub fn parse(file: &str, text: &str) -> Result<Vec<Entry>, KnownHostsError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let mut parts = l.split_whitespace();
        let first = parts.next().unwrap_or_default();
        if first.starts_with('@') {
            return Err(KnownHostsError::Marker {
                file: file.into(),
                line,
                marker: first.into(),
            });
        }
        if first.starts_with('|') {
            return Err(KnownHostsError::Hashed {
                file: file.into(),
                line,
            });
        }
        let hosts: Vec<String> = first.split(',').map(str::to_owned).collect();
        if let Some(p) = hosts.iter().find(|h| h.contains(['*', '?', '!'])) {
            return Err(KnownHostsError::Pattern {
                file: file.into(),
                line,
                pattern: p.clone(),
            });
        }
        let rest: Vec<&str> = parts.collect();
        if rest.len() < 2 {
            return Err(KnownHostsError::BadKey {
                file: file.into(),
                line,
                reason: "expected `HOSTS KEYTYPE BASE64`".into(),
            });
        }
        let key = PublicKey::from_openssh(&format!("{} {}", rest[0], rest[1])).map_err(|e| {
            KnownHostsError::BadKey {
                file: file.into(),
                line,
                reason: e.to_string(),
            }
        })?;
        out.push(Entry { line, hosts, key });
    }
    Ok(out)
}

pub fn check(entries: &[Entry], address: &str, port: u16, key: &PublicKey) -> Verdict {
    let name = host_name(address, port);
    let for_host: Vec<&Entry> = entries.iter().filter(|e| e.hosts.contains(&name)).collect();
    if for_host.is_empty() {
        return Verdict::Unknown;
    }
    if for_host.iter().any(|e| e.key.key_data() == key.key_data()) {
        Verdict::Trusted
    } else {
        Verdict::Changed {
            lines: for_host.iter().map(|e| e.line).collect(),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Trusted => f.write_str("trusted"),
            Verdict::Unknown => f.write_str("unknown host"),
            Verdict::Changed { lines } => {
                write!(f, "host key changed (known_hosts lines {lines:?})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const K2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    #[test]
    fn trusted_unknown_and_changed() {
        let entries = parse(
            "kh",
            &format!("# comment\n[127.0.0.5]:2222,other {K1}\n127.0.0.6 {K2}\n"),
        )
        .unwrap();
        assert_eq!(
            check(&entries, "127.0.0.5", 2222, &key(K1)),
            Verdict::Trusted
        );
        assert_eq!(check(&entries, "other", 22, &key(K1)), Verdict::Trusted);
        assert_eq!(check(&entries, "127.0.0.6", 22, &key(K2)), Verdict::Trusted);
        assert_eq!(
            check(&entries, "127.0.0.6", 2222, &key(K2)),
            Verdict::Unknown,
            "the port is part of the name"
        );
        assert_eq!(
            check(&entries, "127.0.0.5", 2222, &key(K2)),
            Verdict::Changed { lines: vec![2] }
        );
    }

    #[test]
    fn markers_hashes_and_patterns_are_refused_not_ignored() {
        assert!(matches!(
            parse("kh", &format!("@revoked * {K1}\n")),
            Err(KnownHostsError::Marker { line: 1, .. })
        ));
        assert!(matches!(
            parse("kh", &format!("@cert-authority *.example {K1}\n")),
            Err(KnownHostsError::Marker { .. })
        ));
        assert!(matches!(
            parse("kh", &format!("|1|abc=|def= {K1}\n")),
            Err(KnownHostsError::Hashed { .. })
        ));
        assert!(matches!(
            parse("kh", &format!("10.0.0.* {K1}\n")),
            Err(KnownHostsError::Pattern { .. })
        ));
        assert!(matches!(
            parse("kh", "host ssh-ed25519 notbase64\n"),
            Err(KnownHostsError::BadKey { .. })
        ));
    }

    #[test]
    fn fingerprints_look_like_openssh() {
        assert!(fingerprint(&key(K1)).starts_with("SHA256:"));
        assert_eq!(
            entry_line("127.0.0.5", 2222, &key(K1)),
            format!("[127.0.0.5]:2222 {K1}")
        );
    }
}

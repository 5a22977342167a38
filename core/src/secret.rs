//! Secret references (`env:NAME`, `file:PATH`) and the redacting value they resolve to.
//!
//! Inventory files hold references only. A [`Secret`] value has no `Display`, and its `Debug`
//! prints `***`, so it cannot reach output, logs or the ledger by accident.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The text is not echoed: it may be a secret pasted where a reference belongs.
    #[error(
        "is not a secret reference: write `env:NAME` or `file:PATH`; secret values never go in the inventory"
    )]
    Malformed,
    #[error("secret `{0}`: environment variable `{1}` is not set")]
    EnvMissing(String, String),
    #[error("secret `{0}`: cannot read `{1}`: {2}")]
    File(String, String, String),
}

/// `[A-Za-z_][A-Za-z0-9_]*`: a name a POSIX shell can `export` and every process
/// environment holds without surprise. Names of app `env:` and `secrets:`, and of `env:`
/// references, must be one.
pub fn is_env_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl SecretRef {
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        if let Some(name) = s.strip_prefix("env:") {
            if is_env_name(name) {
                return Ok(SecretRef::Env(name.to_owned()));
            }
        } else if let Some(path) = s.strip_prefix("file:")
            && !path.is_empty()
        {
            return Ok(SecretRef::File(PathBuf::from(path)));
        }
        Err(SecretError::Malformed)
    }

    /// Resolves the reference; relative file paths are taken from `base`.
    pub fn resolve(&self, label: &str, base: &Path) -> Result<Secret, SecretError> {
        match self {
            SecretRef::Env(name) => std::env::var(name)
                .map(Secret)
                .map_err(|_| SecretError::EnvMissing(label.to_owned(), name.clone())),
            SecretRef::File(path) => {
                let full = base.join(path);
                std::fs::read_to_string(&full)
                    .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_owned()))
                    .map_err(|e| {
                        SecretError::File(
                            label.to_owned(),
                            full.display().to_string(),
                            e.to_string(),
                        )
                    })
            }
        }
    }
}

/// A resolved secret value. Expose it only where it is handed to a process or a server.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        assert_eq!(
            SecretRef::parse("env:DB_PASS"),
            Ok(SecretRef::Env("DB_PASS".into()))
        );
        assert_eq!(
            SecretRef::parse("file:keys/id"),
            Ok(SecretRef::File("keys/id".into()))
        );
        for bad in ["hunter2", "env:", "env:1X", "file:", "ENV:X"] {
            assert!(SecretRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s:?}"), "***");
    }
}

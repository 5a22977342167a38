//! The state store's address: `postgres://USER@HOST[:PORT]/DATABASE?...`, checked whole before
//! anything connects. Query parameters: `sslmode` (`verify-full`, the default: TLS with the
//! server's certificate checked against the system's roots and `sslrootcert`; or `disable`),
//! `sslrootcert=PATH`, `password=env:NAME|file:PATH` (a secret reference: a password written in
//! the URL itself is refused, it would be seen in `ps` and shell history), `schema` (default
//! `ferry`: one estate's tables; several estates can share a database), `connect_timeout`
//! (seconds, default 10).

use std::path::PathBuf;
use std::time::Duration;

use crate::model::PgTls;
use crate::secret::SecretRef;

#[derive(Debug, Clone, PartialEq)]
pub struct StateUrl {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    pub password: Option<SecretRef>,
    pub tls: PgTls,
    pub ca_file: Option<PathBuf>,
    pub schema: String,
    pub timeout: Duration,
}

impl StateUrl {
    /// Whether `s` names a PostgreSQL state store (else it is not a state URL at all).
    pub fn is_postgres(s: &str) -> bool {
        s.starts_with("postgres://") || s.starts_with("postgresql://")
    }

    /// Parses `s`; every problem at once, in one message.
    pub fn parse(s: &str) -> Result<Self, String> {
        let url = url::Url::parse(s).map_err(|e| format!("state URL: {e}"))?;
        let mut problems = Vec::new();
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            problems.push(format!(
                "scheme `{}` is not `postgres` (the local state is `--state-dir DIR`)",
                url.scheme()
            ));
        }
        if url.password().is_some() {
            problems.push("the URL holds a password, which `ps` and shell history would show: give `password=env:NAME` or `password=file:PATH` instead".into());
        }
        let user = decoded(url.username());
        if user.is_empty() {
            problems.push("no user (`postgres://USER@HOST/DATABASE`)".into());
        }
        let host = url.host_str().unwrap_or_default().to_owned();
        if host.is_empty() {
            problems.push("no host".into());
        }
        let dbname = decoded(url.path().trim_start_matches('/'));
        if dbname.is_empty() || dbname.contains('/') {
            problems.push("no database (`postgres://USER@HOST/DATABASE`)".into());
        }
        let mut out = Self {
            host,
            port: url.port().unwrap_or(5432),
            user,
            dbname,
            password: None,
            tls: PgTls::VerifyFull,
            ca_file: None,
            schema: "ferry".into(),
            timeout: Duration::from_secs(10),
        };
        for (k, v) in url.query_pairs() {
            if let Err(p) = out.param(&k, &v) {
                problems.push(p);
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(format!(
                "state URL {}:\n  - {}",
                redact(&url),
                problems.join("\n  - ")
            ))
        }
    }

    fn param(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "sslmode" => {
                self.tls = match value {
                    "verify-full" => PgTls::VerifyFull,
                    "disable" => PgTls::Disable,
                    other => {
                        return Err(format!(
                            "sslmode `{other}`: use `verify-full` (TLS, the server's certificate checked) or `disable`; a TLS that does not check the server is not offered"
                        ));
                    }
                }
            }
            "sslrootcert" => self.ca_file = Some(PathBuf::from(value)),
            "password" => {
                self.password = Some(SecretRef::parse(value).map_err(|e| format!("password: {e}"))?)
            }
            "schema" => {
                if !is_identifier(value) {
                    return Err(format!(
                        "schema `{value}`: lower-case letters, digits and `_`, starting with a letter, at most 63"
                    ));
                }
                self.schema = value.to_owned();
            }
            "connect_timeout" => {
                let secs: u64 =
                    value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("connect_timeout `{value}`: whole seconds, above 0")
                    })?;
                self.timeout = Duration::from_secs(secs);
            }
            other => {
                return Err(format!(
                    "unknown parameter `{other}` (known: sslmode, sslrootcert, password, schema, connect_timeout)"
                ));
            }
        }
        Ok(())
    }

    /// The address as messages and the ledger show it: no secret in it.
    pub fn display(&self) -> String {
        format!(
            "postgres://{}@{}:{}/{} (schema {})",
            self.user, self.host, self.port, self.dbname, self.schema
        )
    }
}

fn decoded(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

fn redact(url: &url::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_url_is_read_with_its_defaults() {
        let u =
            StateUrl::parse("postgres://ferry@db.example:6432/estate?password=env:PGPW").unwrap();
        assert_eq!(u.host, "db.example");
        assert_eq!(u.port, 6432);
        assert_eq!(u.user, "ferry");
        assert_eq!(u.dbname, "estate");
        assert_eq!(u.tls, PgTls::VerifyFull);
        assert_eq!(u.schema, "ferry");
        assert!(matches!(u.password, Some(SecretRef::Env(ref n)) if n == "PGPW"));
        assert_eq!(
            u.display(),
            "postgres://ferry@db.example:6432/estate (schema ferry)"
        );
    }

    #[test]
    fn every_problem_is_named_at_once_and_no_password_is_echoed() {
        let e = StateUrl::parse(
            "postgres://ferry:hunter2@db/?sslmode=require&schema=Bad-Name&frobnicate=1",
        )
        .unwrap_err();
        for want in [
            "holds a password",
            "no database",
            "sslmode `require`",
            "schema `Bad-Name`",
            "unknown parameter `frobnicate`",
        ] {
            assert!(e.contains(want), "{want} missing from: {e}");
        }
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn only_postgres_urls_are_state_urls() {
        assert!(StateUrl::is_postgres("postgresql://a@b/c"));
        assert!(!StateUrl::is_postgres("/var/lib/ferry"));
        assert!(
            StateUrl::parse("mysql://a@b/c")
                .unwrap_err()
                .contains("scheme")
        );
    }
}

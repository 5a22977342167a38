//! The connection to the state store: its own small tokio runtime (the engine calls a backend
//! synchronously, from async code too: a call waits for an answer from this runtime instead of
//! nesting one), one client per handle made on first use and made again after the server went
//! away, and the schema checked against this build's migrations before the first use.

use std::sync::Arc;

use tokio_postgres::Client;

use super::url::StateUrl;
use crate::model::PgTls;

mod embedded {
    refinery::embed_migrations!("src/state/postgres/sql");
}

/// What went wrong talking to the store; `broken` when the connection is no longer usable.
#[derive(Debug)]
pub(super) struct StoreError {
    pub reason: String,
    pub broken: bool,
    /// The connection broke while a COMMIT was under way: it may or may not have happened.
    pub uncertain: bool,
}

impl StoreError {
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            broken: false,
            uncertain: false,
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self {
            broken: e.is_closed() || e.as_db_error().is_none(),
            reason: crate::probe::pg_error(&e),
            uncertain: false,
        }
    }
}

/// One handle's connection, shared by its clones.
#[derive(Debug)]
pub(super) struct Conn {
    pub url: StateUrl,
    client: tokio::sync::Mutex<Option<Client>>,
}

impl Conn {
    pub fn new(url: StateUrl) -> Arc<Self> {
        Arc::new(Self {
            url,
            client: tokio::sync::Mutex::new(None),
        })
    }

    /// The connection, made (and the schema checked) first if there is none or it broke.
    pub async fn connected(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>, StoreError> {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = None;
            let mut client = connect(&self.url).await?;
            check_schema(&mut client, &self.url.schema).await?;
            *slot = Some(client);
        }
        Ok(slot)
    }
}

/// A new client for `url`, TLS verified unless `sslmode=disable`.
pub(super) async fn connect(url: &StateUrl) -> Result<Client, StoreError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&url.host)
        .port(url.port)
        .dbname(&url.dbname)
        .user(&url.user)
        .application_name("ferry-state")
        .connect_timeout(url.timeout)
        .keepalives_idle(std::time::Duration::from_secs(30));
    if let Some(p) = &url.password {
        let secret = p
            .resolve("state URL password", std::path::Path::new("."))
            .map_err(|e| StoreError::new(e.to_string()))?;
        cfg.password(secret.expose());
    }
    let place = format!("{}:{}", url.host, url.port);
    let refused = |e: tokio_postgres::Error| StoreError {
        reason: format!(
            "cannot connect to PostgreSQL at {place}: {}",
            crate::probe::pg_error(&e)
        ),
        broken: true,
        uncertain: false,
    };
    let no_answer = || StoreError {
        reason: format!(
            "cannot connect to PostgreSQL at {place}: no answer within {} s",
            url.timeout.as_secs()
        ),
        broken: true,
        uncertain: false,
    };
    let tls = match url.tls {
        PgTls::Disable => None,
        PgTls::VerifyFull => Some(
            crate::probe::verifying_tls(url.ca_file.as_deref())
                .map_err(|e| StoreError::new(format!("PostgreSQL at {place}: {e}")))?,
        ),
    };
    let client = crate::probe::connect_pg(cfg, tls, url.timeout)
        .await
        .map_err(|e| match e {
            crate::probe::ConnectFail::NoAnswer => no_answer(),
            crate::probe::ConnectFail::Refused(e) => refused(e),
        })?;
    Ok(client)
}

/// `schema.name`, quoted (the schema is checked to be a plain identifier).
pub(super) fn table(schema: &str, name: &str) -> String {
    format!("\"{schema}\".{name}")
}

/// The store's schema must be exactly this build's migrations: none missing (run `ferry state
/// init`), none changed since applied, none unknown (a newer ferry's).
async fn check_schema(client: &mut Client, schema: &str) -> Result<(), StoreError> {
    let history = table(schema, "schema_history");
    let exists: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&history])
        .await?
        .get(0);
    let init = format!(
        "run `ferry state init` as the owner of schema `{schema}` (it applies ferry's migrations)"
    );
    if exists.is_none() {
        return Err(StoreError::new(format!(
            "schema `{schema}` holds no ferry state; {init}"
        )));
    }
    let rows = client
        .query(
            &format!("SELECT version, name, checksum FROM {history} ORDER BY version"),
            &[],
        )
        .await?;
    let applied: Vec<(i32, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    schema_problem(&applied, &known()).map_or(Ok(()), |p| {
        Err(StoreError::new(format!("schema `{schema}`: {p}; {init}")))
    })
}

/// This build's migrations: version, name and checksum.
fn known() -> Vec<(i32, String, String)> {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| (m.version(), m.name().to_owned(), m.checksum().to_string()))
        .collect()
}

/// What is wrong with the applied migrations, if anything.
fn schema_problem(
    applied: &[(i32, String, String)],
    known: &[(i32, String, String)],
) -> Option<String> {
    for (v, name, sum) in applied {
        match known.iter().find(|k| k.0 == *v) {
            None => {
                return Some(format!(
                    "migration V{v}__{name} is not one of this ferry's: the store was set up by a newer ferry"
                ));
            }
            Some(k) if (&k.1, &k.2) != (name, sum) => {
                return Some(format!(
                    "migration V{v}__{name} was changed after it was applied (checksum {sum}, this ferry's {}): refusing a schema ferry did not make",
                    k.2
                ));
            }
            Some(_) => {}
        }
    }
    let missing: Vec<String> = known
        .iter()
        .filter(|k| !applied.iter().any(|a| a.0 == k.0))
        .map(|k| format!("V{}__{}", k.0, k.1))
        .collect();
    (!missing.is_empty()).then(|| format!("migration(s) {} not applied yet", missing.join(", ")))
}

/// `ferry state init`: the schema made if missing and this build's migrations applied (each
/// in its own transaction with its history row: none is ever half applied; a changed or
/// unknown applied one is refused), then the rights of `grant` (INSERT and SELECT on the
/// ledger, the lock row) given. Returns the migrations applied now.
pub(super) async fn init(url: &StateUrl, grant: Option<&str>) -> Result<Vec<String>, StoreError> {
    let mut client = connect(url).await?;
    let s = &url.schema;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{s}\"; SET search_path TO \"{s}\""
        ))
        .await?;
    let mut runner = embedded::migrations::runner();
    runner.set_migration_table_name(table(s, "schema_history"));
    let report = runner
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .run_async(&mut client)
        .await
        .map_err(|e| StoreError::new(format!("migrations: {e}")))?;
    if let Some(role) = grant {
        let role = role.replace('"', "\"\"");
        client
            .batch_execute(&format!(
                "GRANT USAGE ON SCHEMA \"{s}\" TO \"{role}\";
                 GRANT SELECT, INSERT ON {ledger} TO \"{role}\";
                 GRANT SELECT, UPDATE ON {lock} TO \"{role}\";
                 GRANT SELECT ON {history} TO \"{role}\";",
                ledger = table(s, "ledger"),
                lock = table(s, "apply_lock"),
                history = table(s, "schema_history"),
            ))
            .await?;
    }
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| format!("V{}__{}", m.version(), m.name()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(v: i32, name: &str, sum: &str) -> (i32, String, String) {
        (v, name.into(), sum.into())
    }

    #[test]
    fn a_changed_unknown_or_missing_migration_is_named() {
        let known = [m(1, "ledger_and_lock", "11"), m(2, "more", "22")];
        assert_eq!(schema_problem(&known, &known), None);
        let changed = schema_problem(&[m(1, "ledger_and_lock", "99")], &known).unwrap();
        assert!(
            changed.contains("changed after it was applied"),
            "{changed}"
        );
        let newer = schema_problem(
            &[known[0].clone(), known[1].clone(), m(3, "x", "3")],
            &known,
        );
        assert!(newer.unwrap().contains("newer ferry"));
        let missing = schema_problem(&[known[0].clone()], &known).unwrap();
        assert!(missing.contains("V2__more not applied"), "{missing}");
    }

    #[test]
    fn this_build_embeds_its_migrations() {
        let k = known();
        assert_eq!(k[0].0, 1);
        assert_eq!(k[0].1, "ledger_and_lock");
    }
}

//! Probes and calls: what condition gates, `record` steps and quiesce steps observe and do,
//! from where ferry runs. A SQL probe is one read-only statement in a READ ONLY transaction
//! (tokio-postgres); an HTTP probe or call goes through reqwest (rustls on ring); a command
//! runs in the inventory's directory in its own process group, killed at its deadline.
//!
//! Every failure is an error that names what was tried (host and port, URL, command): a gate
//! treats it as "does not hold" (fails closed), a call as a failed step.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_postgres::NoTls;

use crate::model::{Inventory, PgTls, PostgresConnection};
use crate::ops::{Action, Probe};
use crate::secret::SecretRef;

/// How long a probe's command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a call's command may run.
const CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a GET probe may take.
const HTTP_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProbeError(pub String);

fn fail(msg: impl Into<String>) -> ProbeError {
    ProbeError(msg.into())
}

/// What probes need: the inventory's databases and where relative paths start.
pub struct Probes {
    inv: Arc<Inventory>,
    base: PathBuf,
    http: reqwest::Client,
}

impl Probes {
    pub fn new(inv: Arc<Inventory>, base: PathBuf) -> Self {
        crate::install_crypto_provider();
        Self {
            inv,
            base,
            http: reqwest::Client::builder()
                .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client with the default settings"),
        }
    }

    /// The probe's value now.
    pub async fn observe(&self, probe: &Probe) -> Result<Value, ProbeError> {
        match probe {
            Probe::Sql { database, query } => self.sql(database, query).await,
            Probe::Http {
                url,
                status,
                field,
                secret_headers,
            } => {
                self.get(url, *status, field.as_deref(), secret_headers)
                    .await
            }
            Probe::Command { argv } => {
                let out = self.command(argv, COMMAND_TIMEOUT).await?;
                Ok(crate::gate::stdout_value(&out))
            }
        }
    }

    /// Carries out a call; returns what the ledger keeps of it.
    pub async fn act(&self, action: &Action) -> Result<Value, ProbeError> {
        match action {
            Action::Http {
                method,
                url,
                body,
                content_type,
                expect_status,
                timeout_seconds,
                secret_headers,
            } => {
                let m = reqwest::Method::from_bytes(method.as_bytes())
                    .map_err(|_| fail(format!("`{method}` is not an HTTP method")))?;
                let (headers, secrets) = self.headers(secret_headers)?;
                let mut req = self
                    .http
                    .request(m, url)
                    .headers(headers)
                    .timeout(Duration::from_secs(*timeout_seconds));
                if let Some(b) = body {
                    let ct = content_type.as_deref().unwrap_or("application/json");
                    req = req.header("content-type", ct).body(b.clone());
                }
                let what = format!("{method} {url}");
                let (status, text) = send(req, &what, &secrets).await?;
                let ok = match expect_status {
                    Some(s) => status == *s,
                    None => (200..300).contains(&status),
                };
                if !ok {
                    let want = expect_status.map_or_else(|| "2xx".into(), |s| s.to_string());
                    return Err(fail(redacted(
                        &format!(
                            "{what} answered {status} (expected {want}): {}",
                            tail(&text)
                        ),
                        &secrets,
                    )));
                }
                // The body is not kept: an admin endpoint may answer with tokens or patient data.
                // Its size and digest say whether two answers were the same.
                Ok(json!({
                    "status": status,
                    "body_bytes": text.len(),
                    "body_sha256": crate::load::sha256_hex(text.as_bytes()),
                }))
            }
            Action::Command { argv } => {
                let out = self.command(argv, CALL_TIMEOUT).await?;
                Ok(json!({ "output": tail(&out) }))
            }
        }
    }

    /// The secret headers, resolved now (their values marked sensitive), and the values, for
    /// redacting whatever a server echoes back.
    fn headers(
        &self,
        refs: &BTreeMap<String, String>,
    ) -> Result<(reqwest::header::HeaderMap, Vec<crate::secret::Secret>), ProbeError> {
        let mut map = reqwest::header::HeaderMap::new();
        let mut secrets = Vec::new();
        for (name, reference) in refs {
            let secret = SecretRef::parse(reference)
                .map_err(|e| fail(format!("header {name}: {e}")))?
                .resolve(&format!("header {name}"), &self.base)
                .map_err(|e| fail(e.to_string()))?;
            let key = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| fail(format!("`{name}` is not an HTTP header name")))?;
            let mut value = reqwest::header::HeaderValue::from_str(secret.expose())
                .map_err(|_| fail(format!("the value of header {name} is not a header value")))?;
            value.set_sensitive(true);
            map.insert(key, value);
            secrets.push(secret);
        }
        Ok((map, secrets))
    }

    async fn get(
        &self,
        url: &str,
        status: u16,
        field: Option<&str>,
        secret_headers: &BTreeMap<String, String>,
    ) -> Result<Value, ProbeError> {
        let (headers, secrets) = self.headers(secret_headers)?;
        let req = self
            .http
            .get(url)
            .headers(headers)
            .timeout(HTTP_PROBE_TIMEOUT);
        let what = format!("GET {url}");
        let (got, text) = send(req, &what, &secrets).await?;
        if got != status {
            return Err(fail(redacted(
                &format!("{what} answered {got}, expected {status}: {}", tail(&text)),
                &secrets,
            )));
        }
        let Some(path) = field else {
            return Ok(json!(got));
        };
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| fail(format!("{what}: the body is not JSON ({e})")))?;
        crate::gate::field(&body, path)
            .cloned()
            .ok_or_else(|| fail(format!("{what}: the JSON body has no field `{path}`")))
    }

    async fn command(&self, argv: &[String], timeout: Duration) -> Result<String, ProbeError> {
        let shown = argv.join(" ");
        let child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(&self.base)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("command `{shown}` could not start: {e}")))?;
        let out = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                fail(format!(
                    "command `{shown}` ran past {} s",
                    timeout.as_secs()
                ))
            })?
            .map_err(|e| fail(format!("command `{shown}`: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let code = out
                .status
                .code()
                .map_or_else(|| "a signal".to_owned(), |c| format!("exit {c}"));
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(fail(format!(
                "command `{shown}` ended with {code}: {}",
                tail(&format!("{stderr}{stdout}"))
            )));
        }
        Ok(stdout)
    }

    async fn sql(&self, database: &str, query: &str) -> Result<Value, ProbeError> {
        let (db, client) = self.connect_to(database, "ferry-probe").await?;
        let timeout = db.timeout;
        let place = db.place;
        let r = tokio::time::timeout(timeout * 2, read_only_value(&client, query, timeout)).await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(fail(format!("{place}: {e}"))),
            Err(_) => Err(fail(format!(
                "{place}: the query ran past {} s",
                (timeout * 2).as_secs()
            ))),
        }
    }

    /// An inventory database's SQL connection settings (`postgres:`), with where it is.
    /// The inventory probes and steps act on, and the directory its secrets are relative to.
    pub fn inventory(&self) -> (&Inventory, &std::path::Path) {
        (&self.inv, &self.base)
    }

    pub fn pg(&self, database: &str) -> Result<PgTarget, ProbeError> {
        let db = self
            .inv
            .database(database)
            .ok_or_else(|| fail(format!("database `{database}` is not in the inventory")))?;
        let pg = db.postgres.clone().ok_or_else(|| {
            fail(format!(
                "database `{database}` has no `postgres` connection"
            ))
        })?;
        Ok(PgTarget {
            id: database.to_owned(),
            timeout: Duration::from_secs(crate::gate::parse_duration(&pg.timeout).unwrap_or(10)),
            place: format!(
                "PostgreSQL at {}:{} (database `{database}`)",
                pg.host, pg.port
            ),
            ca_file: pg.ca_file.as_ref().map(|c| self.base.join(c)),
            pg,
        })
    }

    /// The resolved password of a database's connection, if it has one.
    pub fn password(&self, db: &PgTarget) -> Result<Option<crate::secret::Secret>, ProbeError> {
        let Some(p) = &db.pg.password else {
            return Ok(None);
        };
        let id = &db.id;
        SecretRef::parse(p)
            .map_err(|e| fail(format!("database `{id}` password: {e}")))?
            .resolve(&format!("databases.{id}.postgres.password"), &self.base)
            .map(Some)
            .map_err(|e| fail(e.to_string()))
    }

    /// A connection to an inventory database, named `app` in `pg_stat_activity`.
    pub async fn connect_to(
        &self,
        database: &str,
        app: &str,
    ) -> Result<(PgTarget, tokio_postgres::Client), ProbeError> {
        let db = self.pg(database)?;
        let client = self.connect(&db, app).await?;
        Ok((db, client))
    }

    async fn connect(
        &self,
        db: &PgTarget,
        app: &str,
    ) -> Result<tokio_postgres::Client, ProbeError> {
        let (pg, timeout, place) = (&db.pg, db.timeout, db.place.as_str());
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&pg.host)
            .port(pg.port)
            .dbname(&pg.dbname)
            .user(&pg.user)
            .application_name(app)
            .connect_timeout(timeout);
        if let Some(secret) = self.password(db)? {
            cfg.password(secret.expose());
        }
        let no_answer = || {
            fail(format!(
                "cannot connect to {place}: no answer within {} s",
                timeout.as_secs()
            ))
        };
        let refused =
            |e: tokio_postgres::Error| fail(format!("cannot connect to {place}: {}", chain(&e)));
        let tls = match pg.tls {
            PgTls::Disable => None,
            PgTls::VerifyFull => Some(self.tls_config(pg, place)?),
        };
        let client = connect_pg(cfg, tls, timeout).await.map_err(|e| match e {
            ConnectFail::NoAnswer => no_answer(),
            ConnectFail::Refused(e) => refused(e),
        })?;
        Ok(client)
    }

    /// TLS that verifies the server: the system's roots and the connection's `ca_file`.
    fn tls_config(
        &self,
        pg: &PostgresConnection,
        place: &str,
    ) -> Result<tokio_postgres_rustls::MakeRustlsConnect, ProbeError> {
        let ca = pg.ca_file.as_ref().map(|c| self.base.join(c));
        verifying_tls(ca.as_deref()).map_err(|e| fail(format!("{place}: {e}")))
    }
}

/// Why a PostgreSQL connection was not made.
pub enum ConnectFail {
    NoAnswer,
    Refused(tokio_postgres::Error),
}

/// Connects with `cfg`, over `tls` (verifying, see [`verifying_tls`]) unless it is `None`,
/// within `timeout`; the connection's task is spawned on the current runtime.
pub async fn connect_pg(
    mut cfg: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    timeout: Duration,
) -> Result<tokio_postgres::Client, ConnectFail> {
    let no_answer = |_| ConnectFail::NoAnswer;
    match tls {
        None => {
            let (client, conn) = tokio::time::timeout(timeout, cfg.connect(NoTls))
                .await
                .map_err(no_answer)?
                .map_err(ConnectFail::Refused)?;
            tokio::spawn(conn);
            Ok(client)
        }
        Some(tls) => {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
            let (client, conn) = tokio::time::timeout(timeout, cfg.connect(tls))
                .await
                .map_err(no_answer)?
                .map_err(ConnectFail::Refused)?;
            tokio::spawn(conn);
            Ok(client)
        }
    }
}

/// TLS for a PostgreSQL connection that verifies the server: the system's roots and, if
/// given, the PEM CA file `ca` (a site's own CA, the RDS bundle).
pub fn verifying_tls(
    ca: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    // The system's trusted roots, read once per process (a gate may poll every few seconds).
    static SYSTEM: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    let mut roots = rustls::RootCertStore::empty();
    for cert in SYSTEM.get_or_init(|| rustls_native_certs::load_native_certs().certs) {
        let _ = roots.add(cert.clone());
    }
    if let Some(path) = ca {
        let bad = |e: String| format!("ca_file {}: {e}", path.display());
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(e.to_string()))?;
        for c in certs {
            roots.add(c).map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A database ferry connects to by SQL: its settings and how errors name it.
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// The inventory's id.
    pub id: String,
    pub pg: PostgresConnection,
    pub timeout: Duration,
    /// `PostgreSQL at HOST:PORT (database `ID`)`.
    pub place: String,
    /// The connection's `ca_file`, resolved against the inventory's directory.
    pub ca_file: Option<PathBuf>,
}

/// Sends a request; its status and body.
async fn send(
    req: reqwest::RequestBuilder,
    what: &str,
    secrets: &[crate::secret::Secret],
) -> Result<(u16, String), ProbeError> {
    let resp = req
        .send()
        .await
        .map_err(|e| fail(redacted(&format!("{what}: {}", chain(&e)), secrets)))?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.unwrap_or_default()))
}

/// `text` with every secret value replaced by `***`.
fn redacted(text: &str, secrets: &[crate::secret::Secret]) -> String {
    crate::drivers::redact(text, secrets.iter().map(|s| s.expose()))
}

/// Runs `query` in a READ ONLY transaction (rolled back) and returns its only value. The
/// statement is prepared first: the extended protocol takes one statement (so `; COMMIT;
/// DELETE...` cannot end the transaction), and its columns are known before it runs.
async fn read_only_value(
    client: &tokio_postgres::Client,
    query: &str,
    timeout: Duration,
) -> Result<Value, String> {
    let e = |e: tokio_postgres::Error| pg_error(&e);
    client
        .batch_execute(&format!(
            "BEGIN READ ONLY; SET LOCAL statement_timeout = {}",
            timeout.as_millis()
        ))
        .await
        .map_err(e)?;
    let stmt = client.prepare(query).await.map_err(e)?;
    if stmt.columns().len() != 1 {
        return Err(format!(
            "the query returns {} columns; a probe returns one value (one row, one column)",
            stmt.columns().len()
        ));
    }
    let rows = client.query(&stmt, &[]).await.map_err(e)?;
    if rows.len() != 1 {
        return Err(format!(
            "the query returned {} rows; a probe returns one value (one row, one column)",
            rows.len()
        ));
    }
    let value = match cell(&rows[0], stmt.columns()[0].type_()) {
        Some(v) => v,
        // Another type (numeric, timestamp...): the same query, its value as text.
        None => {
            let wrapped = format!("SELECT q.v::text FROM ({query}) AS q(v)");
            let row = client.query_one(&wrapped, &[]).await.map_err(e)?;
            row.try_get::<_, Option<String>>(0)
                .map_err(e)?
                .map_or(Value::Null, Value::String)
        }
    };
    client.batch_execute("ROLLBACK").await.map_err(e)?;
    Ok(value)
}

fn cell(row: &tokio_postgres::Row, ty: &tokio_postgres::types::Type) -> Option<Value> {
    use tokio_postgres::types::Type;
    let v = match *ty {
        Type::INT2 => json!(row.try_get::<_, Option<i16>>(0).ok()?),
        Type::INT4 => json!(row.try_get::<_, Option<i32>>(0).ok()?),
        Type::INT8 => json!(row.try_get::<_, Option<i64>>(0).ok()?),
        Type::FLOAT4 => json!(row.try_get::<_, Option<f32>>(0).ok()?),
        Type::FLOAT8 => json!(row.try_get::<_, Option<f64>>(0).ok()?),
        Type::BOOL => json!(row.try_get::<_, Option<bool>>(0).ok()?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            json!(row.try_get::<_, Option<String>>(0).ok()?)
        }
        _ => return None,
    };
    Some(v)
}

/// PostgreSQL's own message (`cannot execute DELETE in a read-only transaction`) rather than
/// the driver's generic `db error`.
pub fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => chain(e),
    }
}

/// An error with its causes, one after another.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// The last 400 characters of a text, trimmed.
fn tail(text: &str) -> String {
    let t = text.trim();
    let start = t.char_indices().rev().nth(400).map_or(0, |(i, _)| i);
    t[start..].to_owned()
}

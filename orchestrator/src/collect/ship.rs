//! The agent's side of the collector: after each pass, its status and the entries of its ledger
//! the collector does not hold yet, in batches, over HTTPS. What the collector acknowledges is
//! kept in `STATE/shipped.json`; an unreachable collector leaves the entries in the agent's
//! ledger for the next pass (none lost), and the entry acknowledged last is shipped again with
//! each batch so the collector can tell a continued chain from a rewritten one (none duplicated).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ACK_FORMAT, Ack, AgentStatus, REPORT_FORMAT, Report};

/// An agent config's `report:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// The collector: `https://HOST:PORT/` (HTTPS only).
    pub url: String,
    /// This site's token from `ferry collect enroll`, as `file:PATH` or `env:NAME`.
    pub token: String,
    /// A CA certificate (PEM) to trust for the collector besides the system's roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

/// What the collector acknowledged last.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Shipped {
    pub held: u64,
    pub head: Option<String>,
}

/// Lines per request, and bytes (below the collector's limit).
const BATCH_LINES: usize = 2000;
const BATCH_BYTES: usize = 4 << 20;

/// Ships the status and every entry not acknowledged yet; returns what the collector holds.
pub async fn ship(
    cfg: &ReportConfig,
    base: &Path,
    site: &str,
    ledger: &Path,
    state_dir: &Path,
    status: &AgentStatus,
) -> Result<Shipped, String> {
    let (client, url, token) = client(cfg, base)?;
    let marker = state_dir.join("shipped.json");
    let mut shipped: Shipped = std::fs::read(&marker)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let text = match std::fs::read_to_string(ledger) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", ledger.display())),
    };
    let lines: Vec<&str> = text
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .collect();
    for _ in 0..1000 {
        // The last acknowledged entry goes again: the collector checks it is the one it holds.
        let from = shipped.held.saturating_sub(1).min(lines.len() as u64) as usize;
        let batch = batch(&lines[from..]);
        let report = Report {
            format: REPORT_FORMAT.into(),
            site: site.into(),
            status: status.clone(),
            from: from as u64,
            lines: batch.concat(),
        };
        let resp = client
            .post(url.clone())
            .bearer_auth(token.expose())
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&report).expect("reports serialize"))
            .send()
            .await
            .map_err(|e| format!("collector {}: {e}", cfg.url))?;
        let code = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("collector {}: {e}", cfg.url))?;
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if code == reqwest::StatusCode::CONFLICT {
            // A gap: the collector holds less than this agent thought (restored from backup).
            shipped = Shipped {
                held: answer["held"].as_u64().unwrap_or(0),
                head: None,
            };
            continue;
        }
        if !code.is_success() {
            return Err(format!(
                "collector {} answered {code}: {}",
                cfg.url,
                answer["error"].as_str().unwrap_or("(no reason given)")
            ));
        }
        let ack: Ack =
            serde_json::from_slice(&body).map_err(|e| format!("collector {}: {e}", cfg.url))?;
        if ack.format != ACK_FORMAT {
            return Err(format!(
                "collector {}: answer in format `{}`",
                cfg.url, ack.format
            ));
        }
        check_head(&lines, &ack)?;
        shipped = Shipped {
            held: ack.held,
            head: ack.head,
        };
        crate::durable::write_atomic(&marker, &serde_json::to_vec(&shipped).expect("serializes"))
            .map_err(|e| format!("{}: {e}", marker.display()))?;
        if shipped.held as usize >= lines.len() {
            return Ok(shipped);
        }
    }
    Err(format!("collector {}: shipping did not converge", cfg.url))
}

/// The lines of one request.
fn batch<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    let mut bytes = 0;
    lines
        .iter()
        .take(BATCH_LINES)
        .take_while(|l| {
            bytes += l.len();
            bytes <= BATCH_BYTES
        })
        .copied()
        .collect()
}

/// The collector's head must be this agent's own entry at that position.
fn check_head(lines: &[&str], ack: &Ack) -> Result<(), String> {
    let Some(at) = ack.held.checked_sub(1) else {
        return Ok(());
    };
    let ours = lines
        .get(at as usize)
        .and_then(|l| serde_json::from_str::<crate::ledger::Entry>(l).ok())
        .map(|e| e.hash);
    if ours.is_some() && ours == ack.head {
        return Ok(());
    }
    Err(format!(
        "the collector holds {} entries ending in {}, which this agent's ledger does not: it was rewritten or belongs to another server",
        ack.held,
        ack.head.as_deref().unwrap_or("nothing")
    ))
}

fn client(
    cfg: &ReportConfig,
    base: &Path,
) -> Result<(reqwest::Client, url::Url, crate::secret::Secret), String> {
    let url = url::Url::parse(&cfg.url)
        .and_then(|u| u.join("v1/report"))
        .map_err(|e| format!("report.url `{}`: {e}", cfg.url))?;
    if url.scheme() != "https" {
        return Err(format!(
            "report.url `{}`: the collector is reached over HTTPS only",
            cfg.url
        ));
    }
    let token = crate::secret::SecretRef::parse(&cfg.token)
        .and_then(|r| r.resolve("report.token", base))
        .map_err(|e| e.to_string())?;
    crate::install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("ferry-agent/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(120));
    if let Some(ca) = &cfg.ca {
        let path = base.join(ca);
        let pem = std::fs::read(&path).map_err(|e| format!("report.ca {}: {e}", path.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("report.ca {}: {e}", path.display()))?;
        b = b.add_root_certificate(cert);
    }
    let client = b.build().map_err(|e| e.to_string())?;
    Ok((client, url, token))
}

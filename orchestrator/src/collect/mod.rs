//! The central collector of agents' ledgers (issue 24): every agent ships the entries of its
//! own ledger (the same format and hash chain as any ferry ledger) with a status report after
//! each pass; the collector keeps one copy per site, appended only when the new entries chain
//! to what it holds, and answers with what it holds (the acknowledgement). An agent that cannot
//! reach it keeps its entries and ships them later: the collector takes each entry once, refuses
//! a gap (the agent resends from what is held) and refuses a fork (an agent whose ledger no
//! longer matches what was collected).
//!
//! - `store`: the collector's directory (`sites/SITE/ledger.jsonl`, `sites/SITE/status.json`),
//!   the tokens file, and `fleet` (every site's last report and how late it is).
//! - `server`: `ferry collect serve`, HTTPS only (rustls), one bearer token per site.
//! - `ship`: the agent's side.

pub mod server;
pub mod ship;
pub mod store;

use serde::{Deserialize, Serialize};

pub const REPORT_FORMAT: &str = "ferry.report.v1";
pub const ACK_FORMAT: &str = "ferry.ack.v1";

/// The largest report body the collector reads; agents ship in batches below it.
pub const MAX_BODY: usize = 8 << 20;

/// What an agent sends after each pass: its status and the ledger entries from `from` on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub format: String,
    pub site: String,
    pub status: AgentStatus,
    /// The sequence number of the first line in `lines`.
    pub from: u64,
    /// Whole ledger lines, each ending in `\n`, byte for byte as the agent's ledger holds them.
    pub lines: String,
}

/// An agent's own account of itself at the end of a pass.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentStatus {
    /// The agent's build (`ferry --version`) and its binary's SHA-256.
    pub agent_version: String,
    #[serde(default)]
    pub agent_sha256: String,
    /// How often it reports (seconds).
    pub interval_secs: u64,
    /// The channel version it last verified, if any.
    #[serde(default)]
    pub channel_version: Option<u64>,
    #[serde(default)]
    pub apps: Vec<AppStatus>,
    /// The last pass: its exit code and what it said.
    pub last_code: u8,
    pub last_message: String,
    /// When the agent sent this (its clock; the collector records its own too).
    pub sent_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppStatus {
    pub app: String,
    pub running: Option<String>,
    pub desired: Option<String>,
}

/// The collector's answer: how many entries of the site's ledger it holds, and the last one's
/// hash (the agent checks it against its own).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ack {
    pub format: String,
    pub held: u64,
    #[serde(default)]
    pub head: Option<String>,
}

/// Site ids name folders on the collector: letters, digits, `.`, `_`, `-`, not starting
/// with a dot.
pub fn valid_site(site: &str) -> bool {
    !site.is_empty()
        && !site.starts_with('.')
        && site.len() <= 128
        && site
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

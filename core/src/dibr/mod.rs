//! DIBR documents (Deployment, Installation, Back-out and Rollback guide): the data of the
//! document, built from the saved plan, the inventory and the ledger, and its rendering
//! through the Tera templates in `templates/dibr/`. Pure: the caller reads the files.
//!
//! Before apply the document is the plan for review; after, its checklist is filled from the
//! ledger, failures and back-outs included, each line with the ledger entry hash as evidence.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ledger::Entry;
use crate::model::Inventory;
use crate::plan::SavedPlan;

pub const MARKDOWN_TEMPLATE: &str = include_str!("../../../templates/dibr/dibr.md.tera");
pub const HTML_TEMPLATE: &str = include_str!("../../../templates/dibr/dibr.html.tera");

/// One row of the revision history, kept across runs in `revision-history.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    pub plan_id: String,
    pub name: String,
    pub planned_at: String,
    pub author: String,
    pub status: String,
    /// The document version: this build's place among the builds of the same name.
    #[serde(default)]
    pub version: usize,
    /// What changed since the previous build (inputs whose digest differs).
    #[serde(default)]
    pub changes: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Doc {
    pub title: String,
    pub plan_id: String,
    pub plan_name: String,
    pub kind: String,
    pub planned_at: String,
    pub planned_by: String,
    pub ferry_version: String,
    /// `planned (not applied)`, `applied`, `halted`, `backed out`, ...
    pub status: String,
    pub applied: bool,
    pub revisions: Vec<Revision>,
    pub releases: Vec<ReleaseRow>,
    /// Versions of catalogued apps the plan deploys: state and revision at plan time.
    pub catalog: Vec<crate::plan::CatalogedVersion>,
    pub dependencies: Vec<DependencyRow>,
    pub databases: Vec<DatabaseRow>,
    pub constraints: Vec<String>,
    pub roles: Vec<RoleRow>,
    pub approvers: Vec<ApproverRow>,
    pub gates: Vec<GateRow>,
    pub timeline: Vec<WaveRow>,
    pub sites: Vec<SiteRow>,
    pub checklist: Vec<CheckRow>,
    pub backouts: Vec<CheckRow>,
    pub verification: Vec<VerifyRow>,
    pub backout_policy: String,
    pub backout_commands: Vec<String>,
    pub backout_authority: Vec<String>,
    pub rollback: Vec<String>,
    pub risks: Vec<RiskRow>,
    pub ledger: LedgerRow,
    /// Every input of the plan with its full digest.
    pub inputs: Vec<InputRow>,
    /// The saved plan's SHA-256 as `plan_created` recorded it, and that entry.
    pub plan_sha256: String,
    pub plan_created: String,
    /// How to check this guide's evidence offline.
    pub offline: Offline,
    /// Appendix: every ledger entry of this plan.
    pub entries: Vec<EntryRow>,
    /// The exact commands that take this plan from review to applied and recorded.
    pub installation: Vec<String>,
    /// The files rendered into each release: template, destination, app, template digest.
    pub configuration: Vec<ConfigRow>,
    /// Notices owed before the change, and whether their lead time was kept.
    pub communications: Vec<NoticeRow>,
    /// How each target is reached (references only, never a secret) and the skills needed.
    pub access: Vec<AccessRow>,
    pub skills: Vec<String>,
    /// Kubernetes Jobs and CronJobs the plan adds, changes or removes.
    pub jobs: Vec<JobRow>,
    /// Condition gates, quiesce calls and recorded values, with what was seen over time.
    pub cutover: Vec<cutover::CutoverRow>,
    /// The apply over time as an inline SVG (the HTML page's picture; empty before apply).
    pub timeline_svg: String,
    /// A migration plan's evidence (section 21); none for other plans.
    pub migration: Option<migration::MigrationSection>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NoticeRow {
    pub audience: String,
    pub channel: String,
    pub lead_time: String,
    /// `met (…)`, `NOT met (…)`, or when the apply may start at the earliest.
    pub check: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccessRow {
    pub target: String,
    pub how: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub target: String,
    pub kind: String,
    pub name: String,
    pub change: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigRow {
    pub app: String,
    pub template: String,
    pub dest: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct InputRow {
    pub role: String,
    pub path: String,
    pub sha256: String,
}

/// The commands that check this guide's evidence against a copy of the ledger as it was when
/// the guide was built (`head` is the last entry it used, not the ledger's head later).
#[derive(Debug, Clone, Serialize)]
pub struct Offline {
    pub head: String,
    pub entries: usize,
    pub commands: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntryRow {
    pub seq: u64,
    pub time: String,
    pub event: String,
    pub actor: String,
    pub hash: String,
    pub prev: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReleaseRow {
    pub app: String,
    pub version: String,
    pub targets: usize,
    pub first_installs: usize,
    /// The artifact's (or image's) digest as the plan recorded it.
    pub artifact: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DependencyRow {
    pub app: String,
    pub needs: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseRow {
    pub id: String,
    pub engine: String,
    pub identifier: String,
    pub site: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoleRow {
    pub site: String,
    pub role: String,
    pub name: String,
    pub contact: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApproverRow {
    pub name: String,
    pub roles: String,
    pub public_key: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GateRow {
    pub name: String,
    pub before_wave: String,
    pub role: String,
    /// `approved by NAME`, or `not approved`.
    pub status: String,
    pub when: String,
    pub comment: String,
    pub evidence: String,
    /// The ledger entry of the approval (empty when not approved).
    pub seq: String,
    /// The saved plan's digest the approver signed.
    pub digest: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WaveRow {
    pub number: usize,
    pub name: String,
    pub sites: String,
    pub max_parallel: u32,
    pub failure_threshold: u32,
    pub windows: String,
    pub started: String,
    pub finished: String,
    /// Whether its steps started inside their sites' windows.
    pub in_window: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SiteRow {
    pub id: String,
    pub tier: String,
    pub location: String,
    pub window: String,
    pub topology: Vec<String>,
    pub hardware: Vec<HardwareRow>,
    pub software: Vec<SoftwareRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HardwareRow {
    pub endpoint: String,
    pub required: String,
    pub observed: String,
    pub verdict: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SoftwareRow {
    pub target: String,
    pub app: String,
    pub running: String,
    pub planned: String,
    /// What the target runs on, as its driver observed it (OS, engine, API server).
    pub platform: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    pub step: String,
    pub wave: String,
    pub target: String,
    pub action: String,
    /// `[x]` done, `[!]` failed, `[ ]` not done.
    pub mark: String,
    pub status: String,
    pub who: String,
    pub when: String,
    /// `when` in the site's own time, when the site names a time zone.
    pub when_local: String,
    /// The evidence's ledger entry (empty when there is none yet).
    pub seq: String,
    pub evidence: String,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyRow {
    pub app: String,
    pub check: String,
    pub deadline: String,
    pub results: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RiskRow {
    pub risk: String,
    pub mitigation: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LedgerRow {
    pub path: String,
    pub entries: usize,
    pub head: String,
    pub verified: String,
}

/// What the document is built from.
pub struct Inputs<'a> {
    pub plan: &'a SavedPlan,
    pub inventory: &'a Inventory,
    /// Every ledger entry (the plan's are picked out).
    pub entries: &'a [Entry],
    pub ledger_path: &'a str,
    /// `verified` or the verification's finding.
    pub ledger_verified: &'a str,
    /// Rows from earlier runs; this plan's row is added or updated.
    pub history: Vec<Revision>,
}

mod build;
mod cutover;
mod migration;
mod procedure;

pub use build::build;

fn short(h: &str) -> String {
    h.chars().take(16).collect()
}

/// Renders the document with a template (`markdown` or `html` escaping).
pub fn render(doc: &Doc, name: &str, template: &str) -> Result<String, crate::render::RenderError> {
    render_page(doc, name, template, None)
}

/// Renders the document for print on paper of `page_size` (CSS: `Letter`, `A4`); the page
/// carries a footer with the plan id and "page X of Y".
pub fn render_page(
    doc: &Doc,
    name: &str,
    template: &str,
    page_size: Option<&str>,
) -> Result<String, crate::render::RenderError> {
    let mut t = crate::render::sandboxed_tera();
    t.autoescape_on(vec![".html.tera"]);
    t.register_filter(
        "cell",
        |v: &tera::Value, _: &std::collections::HashMap<String, tera::Value>| {
            let s = match v {
                tera::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Ok(tera::Value::String(
                s.replace('|', "\\|").replace(['\n', '\r'], " "),
            ))
        },
    );
    t.register_filter(
        "inline",
        |v: &tera::Value, _: &std::collections::HashMap<String, tera::Value>| {
            let s = match v {
                tera::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Ok(tera::Value::String(inline_html(&s)))
        },
    );
    let wrap = |e: tera::Error| crate::render::tera_error(name, &e);
    t.add_raw_template(name, template).map_err(wrap)?;
    let mut ctx = tera::Context::from_serialize(doc).map_err(wrap)?;
    ctx.insert("page_size", page_size.unwrap_or("auto"));
    t.render(name, &ctx).map_err(wrap)
}

/// Text for HTML: escaped, with Markdown's `code` spans as `<code>` (never empty), so no raw
/// Markdown reaches the page. The result is safe to insert unescaped.
pub fn inline_html(s: &str) -> String {
    let esc = tera::escape_html(s);
    let mut out = String::with_capacity(esc.len());
    let mut parts = esc.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let rest: Vec<&str> = parts.collect();
    let mut i = 0;
    while i < rest.len() {
        // A span needs its closing backtick; a lone one is kept as a character.
        if i + 1 < rest.len() {
            let code = rest[i];
            if code.is_empty() {
                out.push_str("``");
            } else {
                out.push_str(&format!("<code>{code}</code>"));
            }
            out.push_str(rest[i + 1]);
            i += 2;
        } else {
            out.push('`');
            out.push_str(rest[i]);
            i += 1;
        }
    }
    out
}

/// Tally for the document's status line, by step status (used by tests and the CLI summary).
pub fn tally(doc: &Doc) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in &doc.checklist {
        *m.entry(c.status.clone()).or_default() += 1;
    }
    m
}

#[cfg(test)]
mod inline_tests {
    use super::inline_html;

    #[test]
    fn code_spans_become_code_and_nothing_else_is_markup() {
        assert_eq!(
            inline_html("On failure: `halt` <b>"),
            "On failure: <code>halt</code> &lt;b&gt;"
        );
        assert_eq!(
            inline_html("a `b` c `d`"),
            "a <code>b</code> c <code>d</code>"
        );
        assert_eq!(inline_html("lone ` tick"), "lone ` tick");
        assert_eq!(inline_html("empty `` span"), "empty `` span");
        assert_eq!(inline_html("no ticks"), "no ticks");
    }
}

//! A wave's steps that are not releases: condition gates (`wait_until`), calls to an app's admin
//! endpoint or a command (quiesce, with their undo), and recorded values (`record`).
//!
//! As written in a release plan; `crate::ops` holds them as planned.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One step of a wave's `before` or `after` list. Exactly one of `wait_until`, `http`,
/// `command` or `record`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// Unique in the plan; names the step in the plan, the ledger and the DIBR guide.
    pub name: String,
    /// The site the step belongs to (shown and recorded); by default the wave's only site, or
    /// none when the wave has several.
    #[serde(default)]
    pub site: Option<String>,
    /// A condition the wave waits for (a drain, a queue that must be empty...).
    #[serde(default)]
    pub wait_until: Option<WaitUntil>,
    /// A call to an app's admin endpoint (stop invoking a launch API, flip a feature flag).
    #[serde(default)]
    pub http: Option<HttpCall>,
    /// A command run where ferry runs (argv form); exit status 0 is success.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// What a back-out does to undo `http` or `command` (resume the launches...).
    #[serde(default)]
    pub undo: Option<HookAction>,
    /// A value noted in the ledger (how many messages are queued...), compared in the guide
    /// with the same record made elsewhere in the plan.
    #[serde(default)]
    pub record: Option<ProbeSpec>,
}

/// A call or a command (an undo).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HookAction {
    #[serde(default)]
    pub http: Option<HttpCall>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
}

/// An HTTP request that changes something.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpCall {
    /// `POST` (default), `PUT`, `PATCH`, `DELETE` or `GET`.
    #[serde(default = "post")]
    pub method: String,
    pub url: String,
    /// Request body, sent as `application/json` unless `content_type` says otherwise.
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    /// The status that means success; by default any 2xx.
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// Per-request deadline.
    #[serde(default = "thirty_s")]
    pub timeout: String,
    /// Headers whose values are secret references (`Authorization: "file:admin-token"`),
    /// resolved when the request is sent; never written to plans, the ledger or output.
    #[serde(default)]
    pub secret_headers: std::collections::BTreeMap<String, String>,
}

fn post() -> String {
    "POST".into()
}

fn thirty_s() -> String {
    "30s".into()
}

/// Where a value comes from: exactly one of `sql`, `http` or `command`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    #[serde(default)]
    pub sql: Option<SqlProbe>,
    #[serde(default)]
    pub http: Option<HttpProbe>,
    /// A command run where ferry runs (argv form): its exit status, and the number it prints
    /// when the condition compares one.
    #[serde(default)]
    pub command: Option<Vec<String>>,
}

/// A read-only query (one statement returning one row of one column) against an inventory
/// database with a `postgres` connection, run in a READ ONLY transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlProbe {
    /// Inventory database id.
    pub database: String,
    pub query: String,
}

/// A GET whose status is checked and, with `field`, whose JSON body gives the value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    pub url: String,
    /// The status expected (default 200).
    #[serde(default = "ok_status")]
    pub status: u16,
    /// A field of the JSON body: a JSON Pointer (`/queue/depth`) or a dotted path
    /// (`queue.depth`).
    #[serde(default)]
    pub field: Option<String>,
    /// Headers whose values are secret references, as for a call.
    #[serde(default)]
    pub secret_headers: std::collections::BTreeMap<String, String>,
}

fn ok_status() -> u16 {
    200
}

/// A condition gate: the probe's value compared (or, without a comparison, the probe
/// succeeding), polled `every`, holding for `stable_for`, within `deadline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitUntil {
    #[serde(default)]
    pub sql: Option<SqlProbe>,
    #[serde(default)]
    pub http: Option<HttpProbe>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// The value must equal this (numbers compare as numbers).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub equals: Option<serde_json::Value>,
    #[serde(default)]
    pub at_most: Option<f64>,
    #[serde(default)]
    pub at_least: Option<f64>,
    /// How often the probe runs (`30s`, `5m`, `1h`).
    pub every: String,
    /// How long the condition must hold, observed at every poll, before the gate passes.
    #[serde(default)]
    pub stable_for: Option<String>,
    /// How long the gate may wait (`2h`, `14d`), counted from its first evaluation and across
    /// resumes.
    pub deadline: String,
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

/// What a gate whose deadline passed does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// Stop; the record says how to resume.
    #[default]
    Halt,
    /// Undo every completed step of the plan, in reverse order.
    Backout,
}

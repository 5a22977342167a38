//! Runbooks: on-call procedures as data (parameters, steps, manual gates, verification, what to
//! do on failure), run through the same plan/apply engine and ledger as a release.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunbookKind {
    Runbook,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Runbook {
    /// Format version of this file; must be 1.
    pub version: u32,
    pub kind: RunbookKind,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub params: Vec<RunbookParam>,
    pub steps: Vec<RunbookStep>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Boolean,
    /// RFC 3339 time, e.g. `2026-11-21T06:00:00Z`.
    Timestamp,
    /// An inventory database id.
    Database,
}

impl ParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Boolean => "boolean",
            ParamType::Timestamp => "timestamp",
            ParamType::Database => "database",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunbookParam {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// Default value (a Tera template over `database` and earlier parameters); a parameter
    /// without a default must be given.
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunbookStep {
    pub id: String,
    pub title: String,
    /// `manual`, `rds.snapshot`, `rds.restore`, `rds.wait`, `rds.verify`, `rds.rename` or
    /// `rds.delete`.
    pub action: String,
    /// The action's arguments: Tera templates over `params` and `database`.
    #[serde(default)]
    pub with: BTreeMap<String, String>,
    /// What the on-call engineer does when this step fails (shown and recorded).
    #[serde(default)]
    pub on_failure: Option<String>,
}

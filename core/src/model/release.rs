//! Release plans: which app goes to which version on which sites, in waves.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlanKind {
    Release,
}

/// What to do when a wave crosses its failure threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Stop starting new steps and leave a resumable record.
    Halt,
    /// Undo every completed step in reverse order and verify the previous versions are back.
    Backout,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleasePlan {
    /// Format version of this file; must be 1.
    pub version: u32,
    pub kind: PlanKind,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub releases: Vec<Release>,
    /// Waves run in order; the first is the canary.
    pub waves: Vec<Wave>,
    pub on_failure: OnFailure,
    /// Endpoints allowed to fall short of their hardware requirements, each with a reason.
    #[serde(default)]
    pub waivers: Vec<Waiver>,
    /// Approval gates: apply stops before the gate's wave until someone holding `role` has
    /// approved this plan (`ferry approve`).
    #[serde(default)]
    pub gates: Vec<Gate>,
    /// Databases snapshotted before a wave changes anything: the snapshot is the wave's first
    /// step and every other step of the wave waits for it to be `available`.
    #[serde(default)]
    pub snapshots: Vec<SnapshotRequirement>,
    /// Release lines taken off the wave's sites (`ecrnow@2` once 3.x has taken over), after
    /// the wave's `before` steps (a drain gate).
    #[serde(default)]
    pub retire: Vec<Retire>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retire {
    /// The app line to remove (`APP@MAJOR`), or an app without lines.
    pub app: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequirement {
    /// Inventory database id.
    pub database: String,
    /// Wave (by name) the snapshot precedes; by default the first wave holding the database's
    /// site.
    #[serde(default)]
    pub before_wave: Option<String>,
    /// Deadline for the snapshot to become `available`.
    #[serde(default = "default_snapshot_timeout")]
    pub timeout_seconds: u64,
}

fn default_snapshot_timeout() -> u64 {
    3600
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    pub name: String,
    /// The wave (by name) that may not start before the approval.
    pub before_wave: String,
    /// Inventory approver role that must approve.
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Waiver {
    pub endpoint: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// App id, or `APP@MAJOR` for one line of an app with `lines`.
    pub app: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    pub name: String,
    pub sites: Vec<String>,
    /// How many targets (a site's cloud, or an endpoint) of this wave are changed at once.
    #[serde(default = "one")]
    pub max_parallel: u32,
    /// How many failed targets this wave tolerates; one more triggers `on_failure`.
    #[serde(default)]
    pub failure_threshold: u32,
    /// Steps run before the wave's releases, in order (quiesce, record, wait until...).
    #[serde(default)]
    pub before: Vec<crate::model::Hook>,
    /// Steps run after the wave's releases, in order.
    #[serde(default)]
    pub after: Vec<crate::model::Hook>,
}

fn one() -> u32 {
    1
}

//! The user's declared world: inventory and release plans, as plain serde data.
//!
//! Nothing here performs IO or knows about drivers; `load` reads these types from YAML and
//! `validate` checks what serde cannot (cross-references, value ranges).

mod hook;
mod inventory;
mod migration;
mod release;
mod runbook;

pub use hook::{Hook, HookAction, HttpCall, HttpProbe, OnTimeout, ProbeSpec, SqlProbe, WaitUntil};
pub use inventory::{
    App, Approver, AwsCloud, Bucket, Cloud, CloudKind, ConfigTemplate, Connection, Database,
    DockerApp, DockerCloud, DockerHealthcheck, DockerTls, Endpoint, Hardware, HealthCheck,
    Inventory, KubernetesApp, KubernetesCloud, Lifecycle, Line, LocalCloud, Maintenance,
    MaintenanceWindow, Notice, PgTls, PostgresConnection, PullPolicy, RestartPolicy,
    RoleAssignment, Site, TargetKind, Tier, UpdateOrder, Weekday, major_of, resource_name,
};
pub use migration::{
    BucketCopy, DiffRule, Exclusion, MigrationKind, MigrationMode, MigrationPlan, qualified_table,
};
pub use release::{
    Gate, OnFailure, PlanKind, Release, ReleasePlan, Retire, SnapshotRequirement, Waiver, Wave,
};

pub use runbook::{ParamType, Runbook, RunbookKind, RunbookParam, RunbookStep};

/// The only format version of inventory and plan files this build reads.
pub const FORMAT_VERSION: u32 = 1;

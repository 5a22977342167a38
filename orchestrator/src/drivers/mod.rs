//! Drivers observe targets and act on them, one verb at a time.
//!
//! A driver knows one kind of target (local directory, SSH endpoint, Docker host...). It is
//! handed a [`TargetSpec`] (what to act on) and, to deploy, a [`ReleaseBundle`] (what to put
//! there); it never decides what to do: that is the planner's and the executor's job.

pub mod compliance;
pub mod fake;
pub mod local;
mod process;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{App, Cloud, TargetKind};
use crate::plan::Undo;
use crate::secret::Secret;
use crate::target::{Observed, TargetRef};

pub use process::redact;

/// Everything a driver needs to know about one target.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    pub target: TargetRef,
    pub app: App,
    pub cloud: Option<Cloud>,
    /// Directory of the inventory file: relative paths in it are relative to this.
    pub base_dir: PathBuf,
    /// Environment for the app's commands: plain values, then resolved secrets.
    pub env: Vec<(String, String)>,
    pub secrets: Vec<(String, Secret)>,
}

/// A release ready to put on a target: the artifact and the files rendered for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseBundle {
    pub version: String,
    pub artifact: PathBuf,
    /// Digest recorded at planning time; the driver refuses an artifact that changed since.
    pub artifact_sha256: String,
    pub files: Vec<RenderedFile>,
    pub plan_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub dest: String,
    pub contents: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{target}: {action} failed: {message}")]
    Failed {
        target: String,
        action: &'static str,
        message: String,
    },
    #[error("{target}: health check did not pass within {seconds}s: {detail}")]
    Unhealthy {
        target: String,
        seconds: u64,
        detail: String,
    },
    #[error("{target}: release {version} is not on the target; cannot switch to it")]
    MissingRelease { target: String, version: String },
    #[error(
        "{target}: artifact {path} changed since the plan was made (sha256 {found}, planned {expected})"
    )]
    ArtifactChanged {
        target: String,
        path: String,
        expected: String,
        found: String,
    },
    #[error("{target}: {action}")]
    Io {
        target: String,
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{target}: {what} timed out after {seconds}s")]
    Timeout {
        target: String,
        what: String,
        seconds: u64,
    },
    #[error("no driver for target kind `{0}` in this build")]
    NoDriver(String),
}

/// The four verbs every driver implements. Each is idempotent: running it again after a crash
/// converges on the same state.
#[async_trait]
pub trait Driver: Send + Sync {
    /// What runs on the target now. A target never deployed to is `Observed::default()`.
    async fn observe(&self, spec: &TargetSpec) -> Result<Observed, DriverError>;
    /// Puts the release on the target and makes it current (restarting the app).
    async fn apply(&self, spec: &TargetSpec, release: &ReleaseBundle) -> Result<(), DriverError>;
    /// Checks that `version` is current and healthy, within the app's deadline.
    async fn verify(&self, spec: &TargetSpec, version: &str) -> Result<(), DriverError>;
    /// Undoes a step: switch back to an earlier release (and verify it), or uninstall.
    async fn undo(&self, spec: &TargetSpec, undo: &Undo) -> Result<(), DriverError>;
}

/// The drivers of this build, by target kind.
#[derive(Clone, Default)]
pub struct Drivers {
    by_kind: BTreeMap<TargetKind, Arc<dyn Driver>>,
}

impl Drivers {
    /// The drivers a real run uses.
    pub fn standard() -> Self {
        let mut d = Self::default();
        d.insert(TargetKind::Local, Arc::new(local::LocalDriver));
        d
    }

    pub fn insert(&mut self, kind: TargetKind, driver: Arc<dyn Driver>) {
        self.by_kind.insert(kind, driver);
    }

    pub fn get(&self, kind: TargetKind) -> Result<Arc<dyn Driver>, DriverError> {
        self.by_kind
            .get(&kind)
            .cloned()
            .ok_or_else(|| DriverError::NoDriver(kind.as_str().to_owned()))
    }
}

//! Drivers observe targets and act on them, one verb at a time.
//!
//! A driver knows one kind of target (local directory, SSH endpoint, Docker host...). It is
//! handed a [`TargetSpec`] (what to act on) and, to deploy, a [`ReleaseBundle`] (what to put
//! there); it never decides what to do: that is the planner's and the executor's job.

pub mod compliance;
#[cfg(feature = "docker")]
pub mod docker;
pub mod endpoints;
pub mod fake;
mod health;
#[cfg(feature = "kubernetes")]
pub mod kube;
pub mod local;
mod process;
#[cfg(feature = "aws")]
pub mod rds;
#[cfg(feature = "ssh")]
pub mod ssh;

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
    /// Shared by every target of the app (an app's site list can be an estate long).
    pub app: Arc<App>,
    pub cloud: Option<Cloud>,
    /// Directory of the inventory file: relative paths in it are relative to this.
    pub base_dir: PathBuf,
    /// Environment for the app's commands: plain values, then resolved secrets.
    pub env: Vec<(String, String)>,
    pub secrets: Vec<(String, Secret)>,
    /// Set for `ssh` targets: how to reach the endpoint.
    pub ssh: Option<endpoints::SshTarget>,
    /// Set for `docker` targets: how to reach the Docker host.
    pub docker: Option<endpoints::DockerTarget>,
    /// Set by apply: the run's hold on the apply lock, checked before every irreversible
    /// action (a switch, a container stop or start, an object applied).
    pub fence: Option<crate::lock::Fence>,
}

impl TargetSpec {
    /// Fails if this run no longer holds the apply lock; drivers call it right before each
    /// action that changes what the target serves.
    pub fn check_fence(&self) -> Result<(), DriverError> {
        match &self.fence {
            Some(f) => f.check().map_err(|e| DriverError::Fenced {
                target: self.target.id.clone(),
                message: e.to_string(),
            }),
            None => Ok(()),
        }
    }
}

/// A release's artifact that lives on the target's side rather than in ferry's inputs (a
/// Docker image), as located when the plan is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseImage {
    /// Where it was looked for, e.g. `docker://lab-docker/lab/web:2.0.0`.
    pub location: String,
    /// Its id there now; `None` when it will be fetched at apply time (pull policy).
    pub id: Option<String>,
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

/// What a complete release on a target records about itself, in `.ferry-release.json`.
/// A release directory without it is incomplete and is never switched to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReleaseMarker {
    pub version: String,
    pub artifact_sha256: String,
    pub files_sha256: String,
    #[serde(default)]
    pub plan_id: String,
}

pub const MARKER_FILE: &str = ".ferry-release.json";

impl ReleaseMarker {
    pub fn for_bundle(b: &ReleaseBundle) -> Self {
        let mut s = String::new();
        for f in &b.files {
            s.push_str(&f.dest);
            s.push('\0');
            s.push_str(&f.contents);
            s.push('\0');
        }
        Self {
            version: b.version.clone(),
            artifact_sha256: b.artifact_sha256.clone(),
            files_sha256: crate::load::sha256_hex(s.as_bytes()),
            plan_id: b.plan_id.clone(),
        }
    }

    /// Same release content, whichever plan put it there.
    pub fn same_content(&self, other: &Self) -> bool {
        self.version == other.version
            && self.artifact_sha256 == other.artifact_sha256
            && self.files_sha256 == other.files_sha256
    }
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
    #[error("{target}: not acting: this run no longer holds the apply lock ({message})")]
    Fenced { target: String, message: String },
    #[error("no driver for target kind `{0}` in this build")]
    NoDriver(String),
    #[cfg(feature = "ssh")]
    #[error(transparent)]
    Ssh(Box<ssh::SshError>),
}

#[cfg(feature = "ssh")]
impl From<ssh::SshError> for DriverError {
    fn from(e: ssh::SshError) -> Self {
        DriverError::Ssh(Box::new(e))
    }
}

/// The four verbs every driver implements. Each is idempotent: running it again after a crash
/// converges on the same state.
#[async_trait]
pub trait Driver: Send + Sync {
    /// What runs on the target now. A target never deployed to is `Observed::default()`.
    async fn observe(&self, spec: &TargetSpec) -> Result<Observed, DriverError>;
    /// Puts the release on the target and makes it current (restarting the app).
    async fn apply(&self, spec: &TargetSpec, release: &ReleaseBundle) -> Result<(), DriverError>;
    /// Finds what deploying `version` needs on the target's side (a Docker image), at plan
    /// time: an error names what is missing and cannot be fetched. `None`: nothing to find
    /// (the artifact is one of ferry's input files).
    async fn locate(
        &self,
        _spec: &TargetSpec,
        _version: &str,
    ) -> Result<Option<ReleaseImage>, DriverError> {
        Ok(None)
    }
    /// Checks that `version` is current and healthy, within the app's deadline.
    async fn verify(&self, spec: &TargetSpec, version: &str) -> Result<(), DriverError>;
    /// Undoes a step: switch back to an earlier release (and verify it), or uninstall.
    async fn undo(&self, spec: &TargetSpec, undo: &Undo) -> Result<(), DriverError>;
    /// [`Driver::undo`] when the caller knows which release is being left (the backed-out
    /// step's `to`, or a switch step's `from`): a driver that removes the release it leaves
    /// (Docker) removes exactly that one, decided from what ferry recorded rather than clocks.
    async fn undo_leaving(
        &self,
        spec: &TargetSpec,
        undo: &Undo,
        _leaving: Option<&str>,
    ) -> Result<(), DriverError> {
        self.undo(spec, undo).await
    }
    /// At plan time, what deploying `release` would change on the target, object by object
    /// (Kubernetes). `None`: the driver has nothing finer than the version change to show.
    async fn preview(
        &self,
        _spec: &TargetSpec,
        _release: &ReleaseBundle,
    ) -> Result<Option<Vec<crate::kubernetes::diff::ObjectChange>>, DriverError> {
        Ok(None)
    }
    /// What the ledger records about the release of `version` that a step left on the target
    /// (Kubernetes: the release record's name, revision and digest). Best effort.
    async fn receipt(&self, _spec: &TargetSpec, _version: &str) -> Option<serde_json::Value> {
        None
    }
}

/// Delay before retry `attempt` (1-based): `base` doubled each attempt, capped at 20 s, fully
/// jittered so that many ferry runs throttled together do not retry together.
pub fn backoff_delay(base: std::time::Duration, attempt: u32) -> std::time::Duration {
    let cap = (base * 2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(std::time::Duration::from_secs(20));
    let fraction = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
    (cap * fraction / 1000).max(base / 2)
}

/// Where an operation step runs: the plan and step it belongs to (what it creates is tagged
/// with them, so a re-run finds it), and where progress lines go.
pub struct OpContext<'a> {
    pub plan_id: &'a str,
    pub step_id: &'a str,
    pub say: &'a (dyn Fn(String) + Send + Sync),
}

/// Carries out operation steps (`plan::StepOp`) that are not manual. Idempotent per plan and
/// step, like the driver verbs. Returns what the ledger records about the result.
#[async_trait]
pub trait OpRunner: Send + Sync {
    async fn run(
        &self,
        cx: &OpContext<'_>,
        op: &crate::ops::Op,
    ) -> Result<serde_json::Value, DriverError>;
}

/// The operation runner of this build: AWS RDS with the `aws` feature; without it, every
/// operation step fails saying so.
pub fn standard_ops(inv: &crate::model::Inventory, base: &std::path::Path) -> Arc<dyn OpRunner> {
    #[cfg(feature = "aws")]
    return Arc::new(rds::RdsOps::new(inv, base));
    #[cfg(not(feature = "aws"))]
    {
        let _ = (inv, base);
        Arc::new(NoOps)
    }
}

/// Operation steps in a build without the `aws` feature.
#[cfg(not(feature = "aws"))]
struct NoOps;

#[cfg(not(feature = "aws"))]
#[async_trait]
impl OpRunner for NoOps {
    async fn run(
        &self,
        _cx: &OpContext<'_>,
        op: &crate::ops::Op,
    ) -> Result<serde_json::Value, DriverError> {
        Err(DriverError::NoDriver(format!(
            "{} (operation steps need a build with the `aws` feature)",
            op.name()
        )))
    }
}

/// The drivers of this build, by target kind.
#[derive(Clone, Default)]
pub struct Drivers {
    by_kind: BTreeMap<TargetKind, Arc<dyn Driver>>,
}

impl std::fmt::Debug for Drivers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.by_kind.keys().map(|k| k.as_str()))
            .finish()
    }
}

impl Drivers {
    /// The drivers a real run uses.
    pub fn standard() -> Self {
        let mut d = Self::default();
        d.insert(TargetKind::Local, Arc::new(local::LocalDriver));
        #[cfg(feature = "ssh")]
        d.insert(TargetKind::Ssh, Arc::new(ssh::SshDriver::new()));
        #[cfg(feature = "docker")]
        d.insert(TargetKind::Docker, Arc::new(docker::DockerDriver::new()));
        #[cfg(feature = "kubernetes")]
        d.insert(TargetKind::Kubernetes, Arc::new(kube::KubeDriver::new()));
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::model::{HealthCheck, LocalCloud};

    fn spec(root: &Path) -> TargetSpec {
        let app = App {
            id: "demo".into(),
            version: "1".into(),
            artifact: "art/{version}".into(),
            target: TargetKind::Local,
            sites: vec!["s1".into()],
            health_check: HealthCheck {
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "test \"$(cat VERSION)\" = \"$FERRY_VERSION\"".into(),
                ],
                http: None,
                timeout_seconds: 2,
                interval_ms: 50,
            },
            restart: None,
            depends_on: vec![],
            config: vec![],
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            keep_releases: 5,
            docker: None,
            kubernetes: None,
            lines: vec![],
            lifecycle: None,
            line: None,
        };
        let cloud = Cloud {
            id: "l".into(),
            kind: crate::model::CloudKind::Local,
            local: Some(LocalCloud {
                root: "targets".into(),
            }),
            aws: None,
            kubernetes: None,
            docker: None,
        };
        TargetSpec {
            target: TargetRef::new("s1", "l", "demo", TargetKind::Local),
            app: app.into(),
            cloud: Some(cloud),
            base_dir: root.to_owned(),
            env: vec![],
            secrets: vec![],
            ssh: None,
            docker: None,
            fence: None,
        }
    }

    fn bundle(root: &Path, version: &str) -> ReleaseBundle {
        let dir = root.join("art").join(version);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("VERSION"), version).unwrap();
        ReleaseBundle {
            version: version.into(),
            artifact_sha256: crate::artifact::digest(&dir).unwrap(),
            artifact: dir,
            files: vec![RenderedFile {
                dest: "conf/app.conf".into(),
                contents: format!("v={version}\n"),
            }],
            plan_id: "p".into(),
        }
    }

    #[tokio::test]
    async fn fake_driver_passes_the_compliance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path());
        let (v1, v2) = (bundle(dir.path(), "1.0.0"), bundle(dir.path(), "2.0.0"));
        compliance::run(&fake::FakeDriver::new(), &s, &v1, &v2).await;
    }

    #[tokio::test]
    async fn local_driver_passes_the_compliance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path());
        let (v1, v2) = (bundle(dir.path(), "1.0.0"), bundle(dir.path(), "2.0.0"));
        compliance::run(&local::LocalDriver, &s, &v1, &v2).await;
    }

    #[tokio::test]
    async fn local_driver_refuses_an_artifact_changed_since_planning() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path());
        let v1 = bundle(dir.path(), "1.0.0");
        std::fs::write(v1.artifact.join("VERSION"), "tampered").unwrap();
        let e = local::LocalDriver.apply(&s, &v1).await.unwrap_err();
        assert!(matches!(e, DriverError::ArtifactChanged { .. }), "{e}");
        assert_eq!(
            local::LocalDriver.observe(&s).await.unwrap().current,
            None,
            "nothing was switched"
        );
    }

    /// The artifact is swapped back and forth (atomic renames) while it is deployed, again and
    /// again: every deploy either refuses the changed artifact or installs exactly the approved
    /// content, never other content under the approved digest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_artifact_swapped_during_the_copy_is_never_deployed() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path());
        Arc::make_mut(&mut s.app).keep_releases = 100;
        let mut b = bundle(dir.path(), "1.0.0");
        let payload = "approved\n".repeat(20_000);
        std::fs::write(b.artifact.join("payload"), &payload).unwrap();
        b.artifact_sha256 = crate::artifact::digest(&b.artifact).unwrap();
        let (good, evil) = (dir.path().join("good"), dir.path().join("evil"));
        std::fs::write(&good, &payload).unwrap();
        std::fs::write(&evil, "evil\n".repeat(20_000)).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, target) = (stop.clone(), b.artifact.join("payload"));
            let tmp = dir.path().join("payload.new");
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    let from = if n.is_multiple_of(2) { &evil } else { &good };
                    std::fs::copy(from, &tmp).unwrap();
                    std::fs::rename(&tmp, &target).unwrap();
                    n += 1;
                }
            })
        };
        let (mut refused, mut installed) = (0, 0);
        for i in 0..30 {
            b.version = format!("1.0.{i}");
            match local::LocalDriver.apply(&s, &b).await {
                Ok(()) => {
                    installed += 1;
                    let root = dir.path().join("targets/s1/demo/releases").join(&b.version);
                    let got = std::fs::read_to_string(root.join("payload")).unwrap();
                    assert!(got == payload, "release {} holds other content", b.version);
                }
                Err(DriverError::ArtifactChanged { .. }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        stop.store(true, Ordering::SeqCst);
        swapper.join().unwrap();
        assert_eq!(refused + installed, 30);
        assert!(
            refused > 0,
            "the swap was never seen: the test did not race"
        );
    }

    #[tokio::test]
    async fn local_driver_keeps_only_the_newest_releases() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path());
        Arc::make_mut(&mut s.app).keep_releases = 2;
        for v in ["1", "2", "3", "4"] {
            let b = bundle(dir.path(), v);
            local::LocalDriver.apply(&s, &b).await.unwrap();
            // mtimes order releases; make them distinct.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let o = local::LocalDriver.observe(&s).await.unwrap();
        assert_eq!(o.current.as_deref(), Some("4"));
        assert_eq!(o.releases, vec!["3".to_owned(), "4".to_owned()]);
    }

    #[tokio::test]
    async fn health_output_is_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path());
        s.secrets = vec![(
            "TOKEN".into(),
            crate::secret::SecretRef::Env("FERRY_TEST_TOKEN_X".into())
                .resolve("t", dir.path())
                .unwrap_or_else(|_| {
                    // SAFETY (test): set before any thread reads it.
                    unsafe { std::env::set_var("FERRY_TEST_TOKEN_X", "s3cr3t-value") };
                    crate::secret::SecretRef::Env("FERRY_TEST_TOKEN_X".into())
                        .resolve("t", dir.path())
                        .unwrap()
                }),
        )];
        Arc::make_mut(&mut s.app).health_check.command = vec![
            "sh".into(),
            "-c".into(),
            "echo token=$TOKEN >&2; exit 1".into(),
        ];
        Arc::make_mut(&mut s.app).health_check.timeout_seconds = 1;
        let b = bundle(dir.path(), "1");
        local::LocalDriver.apply(&s, &b).await.unwrap();
        let e = local::LocalDriver
            .verify(&s, "1")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("token=***"), "{e}");
        assert!(!e.contains("s3cr3t-value"), "{e}");
    }
}

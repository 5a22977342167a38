//! The Docker driver: one container per release, found again by ferry's labels.
//!
//! A release is a container named `ferry-SITE-APP-VERSION` made from the version's image.
//! Exactly one of an app's containers on a host runs; earlier ones are kept stopped (newest
//! `keep_releases`) so a back-out is a restart, not a pull. Named volumes are never removed.
//!
//! Upgrade order is the app's `strategy`: `start-first` starts the new container and waits
//! for it to be healthy before the old one stops (a failed new one is stopped again, so the
//! old one keeps serving alone); `stop-first` stops the old one first (needed when host ports
//! are published). Every verb converges when run again, which is what resume relies on.

pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerStateStatusEnum, HealthStatusEnum};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions, UploadToContainerOptions,
};
use futures_util::StreamExt;
use tokio::sync::Mutex;

use super::health::{Attempt, until_healthy};
use super::{Driver, DriverError, ReleaseBundle, ReleaseImage, TargetSpec, redact};
use crate::model::{DockerApp, PullPolicy, UpdateOrder};
use crate::plan::Undo;
use crate::target::Observed;

pub use crate::drivers::endpoints::{DockerTarget, TlsFiles};

/// Deadline of an image pull (large images over a clinic's uplink take minutes).
const PULL_TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Default)]
pub struct DockerDriver {
    clients: Mutex<BTreeMap<String, Docker>>,
    /// Each cloud's engine as it names itself ("Docker Engine 20.10.24 linux/amd64"), for the
    /// observation's facts (the DIBR guide's software table).
    engines: Mutex<BTreeMap<String, String>>,
}

/// One container ferry manages, as inspected.
#[derive(Debug, Clone)]
struct Managed {
    id: String,
    name: String,
    version: String,
    created: i64,
    running: bool,
    paused: bool,
    /// `running, healthy`, `exited (137)`...
    status: String,
    image_id: String,
    digest: String,
    /// Settings changed with `docker update` since ferry made it.
    drift: Vec<String>,
}

impl DockerDriver {
    pub fn new() -> Self {
        Self::default()
    }

    async fn client(&self, spec: &TargetSpec) -> Result<Docker, DriverError> {
        let t = spec.docker.as_ref().ok_or_else(|| DriverError::Failed {
            target: spec.target.id.clone(),
            action: "connect",
            message: "no docker connection settings for this target".into(),
        })?;
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(&t.cloud) {
            return Ok(c.clone());
        }
        let unreachable = |e: String| DriverError::Failed {
            target: spec.target.id.clone(),
            action: "connect",
            message: format!(
                "the Docker engine of cloud `{}` at {} is not reachable: {e}",
                t.cloud, t.host
            ),
        };
        let secs = t.timeout.as_secs();
        let docker = match &t.tls {
            Some(tls) => {
                crate::install_crypto_provider();
                Docker::connect_with_ssl(
                    &t.host,
                    &tls.key,
                    &tls.cert,
                    &tls.ca,
                    secs,
                    bollard::API_DEFAULT_VERSION,
                )
            }
            None => Docker::connect_with_unix(&t.host, secs, bollard::API_DEFAULT_VERSION),
        }
        .map_err(|e| unreachable(message(&e)))?;
        // The engine may speak an older API than this client (Debian's 20.10 speaks 1.41).
        let docker = tokio::time::timeout(t.timeout, docker.negotiate_version())
            .await
            .map_err(|_| unreachable(format!("no answer within {secs}s")))?
            .map_err(|e| unreachable(message(&e)))?;
        clients.insert(t.cloud.clone(), docker.clone());
        // What the engine says it is; a fact for the record, never a reason to fail.
        if let Ok(Ok(v)) = tokio::time::timeout(t.timeout, docker.version()).await {
            let name = format!(
                "Docker Engine {} {}/{}",
                v.version.unwrap_or_default(),
                v.os.unwrap_or_default(),
                v.arch.unwrap_or_default()
            );
            self.engines.lock().await.insert(t.cloud.clone(), name);
        }
        Ok(docker)
    }

    fn app<'a>(&self, spec: &'a TargetSpec) -> Result<&'a DockerApp, DriverError> {
        spec.app.docker.as_ref().ok_or_else(|| DriverError::Failed {
            target: spec.target.id.clone(),
            action: "configure",
            message: format!("app `{}` has no `docker` section", spec.app.id),
        })
    }

    /// The app's containers on this host, oldest first.
    async fn managed(
        &self,
        docker: &Docker,
        spec: &TargetSpec,
    ) -> Result<Vec<Managed>, DriverError> {
        let filters: HashMap<String, Vec<String>> = [(
            "label".to_owned(),
            vec![
                format!("{}=ferry", spec::LABEL_MANAGED),
                format!("{}={}", spec::LABEL_APP, spec.app.id),
                format!("{}={}", spec::LABEL_SITE, spec.target.site),
            ],
        )]
        .into();
        let list = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| api(spec, "list containers", e))?;
        let mut out = Vec::new();
        for c in list {
            let Some(id) = c.id else { continue };
            let labels = c.labels.unwrap_or_default();
            let Some(version) = labels.get(spec::LABEL_VERSION).cloned() else {
                continue;
            };
            let info = match docker.inspect_container(&id, None).await {
                Ok(i) => i,
                // Removed between list and inspect: it is gone.
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(api(spec, "inspect container", e)),
            };
            let state = info.state.unwrap_or_default();
            let running = state.running == Some(true);
            let paused = state.paused == Some(true);
            let health = state
                .health
                .as_ref()
                .and_then(|h| h.status)
                .filter(|s| !matches!(s, HealthStatusEnum::EMPTY | HealthStatusEnum::NONE));
            let status = match (state.status, health) {
                (Some(ContainerStateStatusEnum::RUNNING), Some(h)) => format!("running, {h}"),
                (Some(ContainerStateStatusEnum::EXITED), _) => {
                    format!("exited ({})", state.exit_code.unwrap_or_default())
                }
                (Some(s), _) => s.to_string(),
                (None, _) => "unknown".into(),
            };
            let name = info
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned();
            let hc = info.host_config.unwrap_or_default();
            let mut drift = Vec::new();
            let restart =
                spec::restart_reported(hc.restart_policy.as_ref().and_then(|r| r.name.as_ref()));
            let want = |k: &str| labels.get(k).cloned().unwrap_or_default();
            // A stopped release is parked at `no` by ferry; only a running one must have the
            // policy it was made with.
            let parked = !running && restart == "no";
            if !want(spec::LABEL_RESTART).is_empty()
                && restart != want(spec::LABEL_RESTART)
                && !parked
            {
                drift.push(format!(
                    "container {name}: restart policy is `{restart}`, ferry made it `{}`",
                    want(spec::LABEL_RESTART)
                ));
            }
            for (label, now, what) in [
                (spec::LABEL_MEMORY, hc.memory.unwrap_or(0), "memory limit"),
                (
                    spec::LABEL_NANO_CPUS,
                    hc.nano_cpus.unwrap_or(0),
                    "cpu limit",
                ),
            ] {
                if let Ok(made) = want(label).parse::<i64>()
                    && made != now
                {
                    drift.push(format!(
                        "container {name}: {what} is {now}, ferry made it {made}"
                    ));
                }
            }
            out.push(Managed {
                id,
                name,
                version,
                created: c.created.unwrap_or_default(),
                running,
                paused,
                status,
                image_id: info.image.unwrap_or_default(),
                digest: want(spec::LABEL_SPEC),
                drift,
            });
        }
        out.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        Ok(out)
    }

    /// The image id of `reference` on the host, pulling it as the app's policy allows.
    async fn ensure_image(
        &self,
        docker: &Docker,
        spec: &TargetSpec,
        app: &DockerApp,
        reference: &str,
    ) -> Result<String, DriverError> {
        let present = image_id(docker, spec, reference).await?;
        match (app.pull, present) {
            (PullPolicy::Never, None) => Err(missing_image(spec, reference)),
            (PullPolicy::Never | PullPolicy::IfMissing, Some(id)) => Ok(id),
            (PullPolicy::IfMissing | PullPolicy::Always, _) => {
                pull(docker, spec, reference).await?;
                image_id(docker, spec, reference)
                    .await?
                    .ok_or_else(|| missing_image(spec, reference))
            }
        }
    }

    async fn create(
        &self,
        docker: &Docker,
        spec: &TargetSpec,
        want: &spec::Desired,
    ) -> Result<String, DriverError> {
        let opts = || {
            Some(CreateContainerOptions {
                name: Some(want.name.clone()),
                ..Default::default()
            })
        };
        let made = match docker.create_container(opts(), want.body.clone()).await {
            Err(e) if status(&e) == Some(409) => {
                // The name is taken. A leftover of ferry's own (same app, site and version) is
                // replaced; anything else is not ferry's to remove.
                let other = docker
                    .inspect_container(&want.name, None)
                    .await
                    .map_err(|e| api(spec, "inspect container", e))?;
                let labels = other
                    .config
                    .and_then(|c| c.labels)
                    .unwrap_or_default();
                let ours = labels.get(spec::LABEL_MANAGED).map(String::as_str) == Some("ferry")
                    && labels.get(spec::LABEL_APP) == want.labels.get(spec::LABEL_APP)
                    && labels.get(spec::LABEL_SITE) == want.labels.get(spec::LABEL_SITE);
                if !ours {
                    return Err(DriverError::Failed {
                        target: spec.target.id.clone(),
                        action: "create container",
                        message: format!(
                            "a container named {} exists that ferry does not manage; rename or remove it",
                            want.name
                        ),
                    });
                }
                remove(docker, spec, other.id.as_deref().unwrap_or(&want.name)).await?;
                docker.create_container(opts(), want.body.clone()).await
            }
            r => r,
        }
        .map_err(|e| api(spec, "create container", e))?;
        for (network, endpoint) in &want.extra_networks {
            let join = bollard::models::NetworkConnectRequest {
                container: made.id.clone(),
                endpoint_config: Some(endpoint.clone()),
            };
            docker
                .connect_network(network, join)
                .await
                .map_err(|e| DriverError::Failed {
                    target: spec.target.id.clone(),
                    action: "connect network",
                    message: format!("network {network}: {}", message(&e)),
                })?;
        }
        if !want.files.is_empty() {
            let tar = spec::files_tar(&want.files).map_err(|source| DriverError::Io {
                target: spec.target.id.clone(),
                action: "archive configuration files".into(),
                source,
            })?;
            docker
                .upload_to_container(
                    &made.id,
                    Some(UploadToContainerOptions {
                        path: "/".into(),
                        ..Default::default()
                    }),
                    bollard::body_full(tar.into()),
                )
                .await
                .map_err(|e| api(spec, "copy configuration files into the container", e))?;
        }
        Ok(made.id)
    }

    async fn start(&self, docker: &Docker, spec: &TargetSpec, id: &str) -> Result<(), DriverError> {
        spec.check_fence()?;
        // A release ferry stopped was parked at `restart: no`; it gets its own policy back.
        let info = docker
            .inspect_container(id, None)
            .await
            .map_err(|e| api(spec, "inspect container", e))?;
        let label = info
            .config
            .and_then(|c| c.labels)
            .and_then(|l| l.get(spec::LABEL_RESTART).cloned());
        let now = spec::restart_reported(
            info.host_config
                .and_then(|h| h.restart_policy)
                .and_then(|r| r.name)
                .as_ref(),
        );
        if let Some(want) = label.filter(|w| w.as_str() != now) {
            set_restart(docker, spec, id, spec::restart_named(&want)).await?;
        }
        match docker.start_container(id, None).await {
            Ok(()) => Ok(()),
            // 304: already running.
            Err(e) if status(&e) == Some(304) => Ok(()),
            Err(e) => Err(api(spec, "start container", e)),
        }
    }

    async fn stop(
        &self,
        docker: &Docker,
        spec: &TargetSpec,
        app: &DockerApp,
        id: &str,
    ) -> Result<(), DriverError> {
        spec.check_fence()?;
        let opts = StopContainerOptions {
            t: Some(app.stop_timeout_seconds as i32),
            ..Default::default()
        };
        // The Engine answers a stop once the container has stopped: up to `t` seconds and a
        // kill later. The call gets that long, whatever the cloud's per-call timeout.
        let per_call = spec
            .docker
            .as_ref()
            .map_or(Duration::from_secs(60), |t| t.timeout);
        let deadline = per_call + Duration::from_secs(u64::from(app.stop_timeout_seconds) + 10);
        match docker
            .clone()
            .with_timeout(deadline)
            .stop_container(id, Some(opts))
            .await
        {
            Ok(()) => {}
            Err(e) if matches!(status(&e), Some(304)) => {}
            Err(e) if matches!(status(&e), Some(404)) => return Ok(()),
            Err(e) => return Err(api(spec, "stop container", e)),
        }
        // A stopped release must stay stopped when the daemon restarts (`always` would bring
        // every kept release back, fighting over ports): parked at `no` until started again.
        set_restart(docker, spec, id, bollard::models::RestartPolicyNameEnum::NO).await
    }

    /// Waits until the container runs, Docker calls it healthy (when it has a health check)
    /// and ferry's own check, run inside it, passes.
    async fn wait_healthy(
        &self,
        docker: &Docker,
        spec: &TargetSpec,
        id: &str,
    ) -> Result<(), DriverError> {
        let argv = spec.app.health_check.argv();
        let secrets: Vec<String> = spec
            .secrets
            .iter()
            .map(|(_, s)| s.expose().to_owned())
            .collect();
        until_healthy(&spec.target.id, &spec.app.health_check, |left| {
            let argv = argv.clone();
            let secrets = &secrets;
            async move {
                let info = match docker.inspect_container(id, None).await {
                    Ok(i) => i,
                    Err(e) => return Attempt::Fatal(api(spec, "inspect container", e)),
                };
                let state = info.state.unwrap_or_default();
                if state.restarting == Some(true) {
                    return Attempt::Unhealthy(format!(
                        "container exited with code {} and Docker is restarting it (restarted {} times)",
                        state.exit_code.unwrap_or_default(),
                        info.restart_count.unwrap_or_default()
                    ));
                }
                if state.running != Some(true) {
                    let why = match state.status {
                        Some(ContainerStateStatusEnum::EXITED) => {
                            format!(
                                "container exited with code {}",
                                state.exit_code.unwrap_or_default()
                            )
                        }
                        Some(s) => format!("container is {s}"),
                        None => "container state unknown".into(),
                    };
                    return Attempt::Unhealthy(why);
                }
                if let Some(h) = &state.health {
                    match h.status {
                        Some(HealthStatusEnum::HEALTHY)
                        | Some(HealthStatusEnum::NONE)
                        | Some(HealthStatusEnum::EMPTY)
                        | None => {}
                        // Docker's first probe comes one interval after the start (30 s by
                        // default): until then ferry's own check decides, when there is one.
                        Some(HealthStatusEnum::STARTING) if !argv.is_empty() => {}
                        Some(HealthStatusEnum::STARTING) => {
                            return Attempt::Unhealthy(
                                "Docker has not run the container's HEALTHCHECK yet (its first probe comes one interval after the start): give health_check.timeout_seconds more than that interval, or a health_check command of ferry's own".into(),
                            );
                        }
                        Some(s) => {
                            let last = h
                                .log
                                .as_ref()
                                .and_then(|l| l.last())
                                .and_then(|r| r.output.clone())
                                .unwrap_or_default();
                            return Attempt::Unhealthy(redact(
                                &format!("docker health is {s}: {}", last.trim()),
                                secrets.iter().map(String::as_str),
                            ));
                        }
                    }
                }
                if argv.is_empty() {
                    return Attempt::Healthy;
                }
                match tokio::time::timeout(left, exec(docker, id, argv)).await {
                    Err(_) => Attempt::TimedOut,
                    // 409/404: the container stopped or restarted under the check (its exec
                    // instances go with it); the next attempt inspects it again.
                    Ok(Err(e)) if matches!(status(&e), Some(404 | 409)) => Attempt::Unhealthy(
                        match died(docker, id).await {
                            Some(why) => why,
                            None => format!("cannot run the check: {}", message(&e)),
                        },
                    ),
                    Ok(Err(e)) => Attempt::Fatal(api(spec, "run the health check", e)),
                    Ok(Ok((0, _))) => Attempt::Healthy,
                    Ok(Ok((code, out))) => {
                        if let Some(why) = died(docker, id).await {
                            return Attempt::Unhealthy(why);
                        }
                        Attempt::Unhealthy(redact(
                            &format!("health check exited with {code}: {}", out.trim()),
                            secrets.iter().map(String::as_str),
                        ))
                    }
                }
            }
        })
        .await
    }

    /// Stops every running container but `keep`, then removes stopped ones beyond the newest
    /// `keep_releases` (never their volumes).
    async fn retire_others(
        &self,
        docker: &Docker,
        spec: &TargetSpec,
        app: &DockerApp,
        keep: &str,
    ) -> Result<(), DriverError> {
        let all = self.managed(docker, spec).await?;
        for m in all.iter().filter(|m| m.running && m.id != keep) {
            self.stop(docker, spec, app, &m.id).await?;
        }
        let mut kept = 0;
        for m in all.iter().rev() {
            kept += 1;
            if kept > spec.app.keep_releases as usize && m.id != keep {
                remove(docker, spec, &m.id).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Driver for DockerDriver {
    async fn observe(&self, spec: &TargetSpec) -> Result<Observed, DriverError> {
        let docker = self.client(spec).await?;
        let all = self.managed(&docker, spec).await?;
        let mut o = Observed::default();
        if let Some(t) = &spec.docker
            && let Some(engine) = self.engines.lock().await.get(&t.cloud)
        {
            o.facts.insert("engine".into(), engine.clone());
        }
        let running: Vec<&Managed> = all.iter().filter(|m| m.running).collect();
        o.current = running.last().map(|m| m.version.clone());
        o.releases = all.iter().map(|m| m.version.clone()).collect();
        o.releases.sort();
        o.releases.dedup();
        for m in &all {
            o.facts
                .insert(format!("{}.container", m.version), m.status.clone());
            o.facts
                .insert(format!("{}.image", m.version), m.image_id.clone());
            o.drift.extend(m.drift.iter().cloned());
            if m.paused {
                o.drift
                    .push(format!("container {} was paused outside ferry", m.name));
            }
        }
        if running.is_empty()
            && let Some(last) = all.last()
        {
            o.drift.push(format!(
                "no container of {} is running; the newest, {}, is {} (ferry always leaves one running)",
                spec.app.id, last.name, last.status
            ));
        }
        if running.len() > 1 {
            let names: Vec<&str> = running.iter().map(|m| m.name.as_str()).collect();
            o.drift.push(format!(
                "{} containers of {} are running ({}); ferry leaves one running",
                running.len(),
                spec.app.id,
                names.join(", ")
            ));
        }
        Ok(o)
    }

    async fn locate(
        &self,
        spec: &TargetSpec,
        version: &str,
    ) -> Result<Option<ReleaseImage>, DriverError> {
        let app = self.app(spec)?;
        let docker = self.client(spec).await?;
        let reference = spec::image_ref(app, version);
        let id = image_id(&docker, spec, &reference).await?;
        let id = match (app.pull, id) {
            (PullPolicy::Never, None) => return Err(missing_image(spec, &reference)),
            // `always` pulls at apply time, so what is here now proves nothing.
            (PullPolicy::Always, _) => None,
            (_, id) => id,
        };
        Ok(Some(ReleaseImage {
            location: format!(
                "docker://{}/{reference}",
                spec.docker.as_ref().map_or("", |d| d.cloud.as_str())
            ),
            id,
        }))
    }

    async fn apply(&self, spec: &TargetSpec, release: &ReleaseBundle) -> Result<(), DriverError> {
        let app = self.app(spec)?;
        let docker = self.client(spec).await?;
        let reference = spec::image_ref(app, &release.version);
        let image_id = self.ensure_image(&docker, spec, app, &reference).await?;
        if !release.artifact_sha256.is_empty() && release.artifact_sha256 != image_id {
            return Err(DriverError::ArtifactChanged {
                target: spec.target.id.clone(),
                path: reference,
                expected: release.artifact_sha256.clone(),
                found: image_id,
            });
        }
        let secrets: Vec<(String, String)> = spec
            .secrets
            .iter()
            .map(|(k, s)| (k.clone(), s.expose().to_owned()))
            .collect();
        let want = spec::desired(&spec::Inputs {
            site: &spec.target.site,
            app_id: &spec.app.id,
            version: &release.version,
            plan_id: &release.plan_id,
            app,
            image_id: &image_id,
            files: &release.files,
            env: &spec.env,
            secrets: &secrets,
        })
        .map_err(|message| DriverError::Failed {
            target: spec.target.id.clone(),
            action: "render container settings",
            message,
        })?;
        let all = self.managed(&docker, spec).await?;
        let existing = all.iter().rev().find(|m| m.version == release.version);
        // The same version redeployed (changed settings, drift repaired) while it serves:
        // under start-first it keeps serving under another name until its replacement is
        // healthy; otherwise it is stopped gracefully first. Never killed before that.
        let mut replaced: Option<&Managed> = None;
        let id = match existing {
            // Made by an earlier (perhaps interrupted) run of the same release: reuse it.
            Some(m) if m.digest == want.digest && m.drift.is_empty() && !m.paused => m.id.clone(),
            Some(m) if m.running && !m.paused && app.strategy == UpdateOrder::StartFirst => {
                rename(&docker, spec, &m.id, &format!("{}-replaced", want.name)).await?;
                replaced = Some(m);
                self.create(&docker, spec, &want).await?
            }
            Some(m) => {
                self.stop(&docker, spec, app, &m.id).await?;
                remove(&docker, spec, &m.id).await?;
                self.create(&docker, spec, &want).await?
            }
            None => self.create(&docker, spec, &want).await?,
        };
        if app.strategy == UpdateOrder::StopFirst {
            for m in all.iter().filter(|m| m.running && m.id != id) {
                self.stop(&docker, spec, app, &m.id).await?;
            }
        }
        let up = match self.start(&docker, spec, &id).await {
            Ok(()) => self.wait_healthy(&docker, spec, &id).await,
            Err(e) => Err(e),
        };
        if let Err(e) = up {
            if app.strategy == UpdateOrder::StartFirst {
                // The old container never stopped: stop the failed one so it serves alone.
                self.stop(&docker, spec, app, &id).await?;
                if let Some(old) = replaced {
                    // The same version's old container takes its name back.
                    remove(&docker, spec, &id).await?;
                    rename(&docker, spec, &old.id, &want.name).await?;
                }
            }
            return Err(e);
        }
        if let Some(old) = replaced {
            self.stop(&docker, spec, app, &old.id).await?;
            remove(&docker, spec, &old.id).await?;
        }
        self.retire_others(&docker, spec, app, &id).await
    }

    async fn verify(&self, spec: &TargetSpec, version: &str) -> Result<(), DriverError> {
        let docker = self.client(spec).await?;
        let all = self.managed(&docker, spec).await?;
        let current = all.iter().rev().find(|m| m.running);
        match current {
            Some(m) if m.version == version => self.wait_healthy(&docker, spec, &m.id).await,
            other => Err(DriverError::Failed {
                target: spec.target.id.clone(),
                action: "verify",
                message: format!(
                    "{version} is not the running release (running: {})",
                    other.map_or("none", |m| m.version.as_str())
                ),
            }),
        }
    }

    async fn undo(&self, spec: &TargetSpec, undo: &Undo) -> Result<(), DriverError> {
        self.undo_leaving(spec, undo, None).await
    }

    async fn undo_leaving(
        &self,
        spec: &TargetSpec,
        undo: &Undo,
        leaving: Option<&str>,
    ) -> Result<(), DriverError> {
        let app = self.app(spec)?;
        let docker = self.client(spec).await?;
        let all = self.managed(&docker, spec).await?;
        match undo {
            Undo::SwitchTo { version, .. } => {
                let Some(back) = all.iter().rev().find(|m| &m.version == version) else {
                    return Err(DriverError::MissingRelease {
                        target: spec.target.id.clone(),
                        version: version.clone(),
                    });
                };
                // The release being backed out is removed: the one the caller says it leaves
                // (its labels name the version), never one chosen by creation time, which the
                // Engine reports in whole seconds (two releases made in one second are not
                // ordered). Without that knowledge nothing is removed, only retired.
                let newer: Vec<&Managed> = match leaving {
                    Some(v) if v != version.as_str() => all
                        .iter()
                        .filter(|m| m.version == v && m.id != back.id)
                        .collect(),
                    _ => Vec::new(),
                };
                if app.strategy == UpdateOrder::StopFirst {
                    for m in all.iter().filter(|m| m.running && m.id != back.id) {
                        self.stop(&docker, spec, app, &m.id).await?;
                    }
                }
                self.start(&docker, spec, &back.id).await?;
                self.wait_healthy(&docker, spec, &back.id).await?;
                for m in newer {
                    remove(&docker, spec, &m.id).await?;
                }
                self.retire_others(&docker, spec, app, &back.id).await
            }
            Undo::Uninstall => {
                for m in &all {
                    remove(&docker, spec, &m.id).await?;
                }
                Ok(())
            }
            // Operation steps (snapshots) are never handed to a release driver.
            Undo::Keep => Ok(()),
        }
    }
}

/// Why a container cannot pass a check any more, looked at again after the check failed to
/// run or failed: a container that died (or is being restarted) under the check is reported by
/// its own exit code, not by the check's failure to run in it.
async fn died(docker: &Docker, id: &str) -> Option<String> {
    let st = docker.inspect_container(id, None).await.ok()?.state?;
    (st.restarting == Some(true) || st.running != Some(true)).then(|| {
        format!(
            "container exited with code {}",
            st.exit_code.unwrap_or_default()
        )
    })
}

async fn rename(
    docker: &Docker,
    spec: &TargetSpec,
    id: &str,
    name: &str,
) -> Result<(), DriverError> {
    let opts = bollard::query_parameters::RenameContainerOptions {
        name: name.to_owned(),
    };
    docker
        .rename_container(id, opts)
        .await
        .map_err(|e| api(spec, "rename container", e))
}

async fn set_restart(
    docker: &Docker,
    spec: &TargetSpec,
    id: &str,
    name: bollard::models::RestartPolicyNameEnum,
) -> Result<(), DriverError> {
    let body = bollard::models::ContainerUpdateBody {
        restart_policy: Some(bollard::models::RestartPolicy {
            name: Some(name),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };
    match docker.update_container(id, body).await {
        Ok(()) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(api(spec, "set the restart policy", e)),
    }
}

/// Removes a container (stopping it if needed) but never its volumes.
async fn remove(docker: &Docker, spec: &TargetSpec, id: &str) -> Result<(), DriverError> {
    let opts = RemoveContainerOptions {
        force: true,
        v: false,
        ..Default::default()
    };
    match docker.remove_container(id, Some(opts)).await {
        Ok(()) => Ok(()),
        Err(e) if status(&e) == Some(404) => Ok(()),
        Err(e) => Err(api(spec, "remove container", e)),
    }
}

async fn image_id(
    docker: &Docker,
    spec: &TargetSpec,
    reference: &str,
) -> Result<Option<String>, DriverError> {
    match docker.inspect_image(reference).await {
        Ok(i) => Ok(i.id),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(api(spec, "inspect image", e)),
    }
}

async fn pull(docker: &Docker, spec: &TargetSpec, reference: &str) -> Result<(), DriverError> {
    let opts = CreateImageOptions {
        from_image: Some(reference.to_owned()),
        ..Default::default()
    };
    // The engine does not read the client's Docker config: a private registry's login goes
    // with the pull (X-Registry-Auth).
    let registry = ferry_core::container::registry_of(reference);
    let login = spec
        .docker
        .as_ref()
        .and_then(|t| {
            t.registries
                .iter()
                .find(|(server, _, _)| server == registry)
        })
        .map(
            |(server, user, password)| bollard::auth::DockerCredentials {
                username: Some(user.clone()),
                password: Some(password.expose().to_owned()),
                serveraddress: Some(server.clone()),
                ..Default::default()
            },
        );
    let mut stream = docker.create_image(Some(opts), None, login);
    let run = async {
        while let Some(item) = stream.next().await {
            item.map_err(|e| DriverError::Failed {
                target: spec.target.id.clone(),
                action: "pull image",
                message: format!("{reference}: {}", message(&e)),
            })?;
        }
        Ok(())
    };
    tokio::time::timeout(PULL_TIMEOUT, run)
        .await
        .map_err(|_| DriverError::Timeout {
            target: spec.target.id.clone(),
            what: format!("pulling {reference}"),
            seconds: PULL_TIMEOUT.as_secs(),
        })?
}

/// Runs `argv` inside the container: exit code and the tail of its output.
async fn exec(docker: &Docker, id: &str, argv: Vec<String>) -> Result<(i64, String), BollardError> {
    let made = docker
        .create_exec(
            id,
            CreateExecOptions {
                cmd: Some(argv),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await?;
    let mut text = String::new();
    if let StartExecResults::Attached { mut output, .. } = docker.start_exec(&made.id, None).await?
    {
        while let Some(chunk) = output.next().await {
            text.push_str(&chunk?.to_string());
            if text.len() > 8192 {
                let cut = text.len() - 4096;
                let cut = (cut..text.len())
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                text.drain(..cut);
            }
        }
    }
    let info = docker.inspect_exec(&made.id).await?;
    Ok((info.exit_code.unwrap_or(-1), text))
}

fn missing_image(spec: &TargetSpec, reference: &str) -> DriverError {
    let cloud = spec.docker.as_ref().map_or("", |d| d.cloud.as_str());
    DriverError::Failed {
        target: spec.target.id.clone(),
        action: "find image",
        message: format!(
            "image {reference} is not on Docker host `{cloud}` and the app's pull policy is `never`; build or load it there first (docker build -t {reference} ... / docker load), or set `pull: if-missing`"
        ),
    }
}

fn status(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn not_found(e: &BollardError) -> bool {
    status(e) == Some(404)
}

fn message(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        BollardError::DockerStreamError { error } => error.clone(),
        other => {
            // Transport errors say little at the top ("client error (Connect)"); the cause
            // (refused, certificate unknown...) is further down the chain.
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let s_text = s.to_string();
                if !text.contains(&s_text) {
                    text.push_str(": ");
                    text.push_str(&s_text);
                }
                source = s.source();
            }
            text
        }
    }
}

fn api(spec: &TargetSpec, action: &'static str, e: BollardError) -> DriverError {
    DriverError::Failed {
        target: spec.target.id.clone(),
        action,
        message: message(&e),
    }
}

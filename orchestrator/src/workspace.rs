//! The IO edge around the pure core: reading and validating files, asking drivers to observe,
//! hashing inputs, rendering release bundles, writing the saved plan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::drivers::{DriverError, Drivers, ReleaseBundle, RenderedFile, TargetSpec};
use crate::load::{self, Diagnostics, Loaded, SourceFile};
use crate::model::{Inventory, ReleasePlan};
use crate::plan::{InputFile, SavedPlan, Step};
use crate::render::{self, RenderContext, RenderError};
use crate::secret::{SecretError, SecretRef};
use crate::target::{Observed, TargetRef};
use crate::{artifact, validate};

/// How long one target may take to be observed before planning gives up on it.
pub const OBSERVE_TIMEOUT: Duration = Duration::from_secs(60);

/// How many targets are observed at once: enough for a wave of clinics, bounded for an estate
/// of hundreds (each observation may be a new SSH connection).
pub const OBSERVE_CONCURRENCY: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("cannot observe {target}")]
    Observe {
        target: String,
        #[source]
        source: DriverError,
    },
    #[error("{}", .0.join("\n"))]
    Unavailable(Vec<String>),
    #[error("observing {target} timed out after {seconds}s")]
    ObserveTimeout { target: String, seconds: u64 },
    #[error("artifact for {app} {version} ({path})")]
    Artifact {
        app: String,
        version: String,
        path: String,
        #[source]
        source: Box<artifact::ArtifactError>,
    },
    #[error("template {path}")]
    Template {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("plan file {path}")]
    PlanFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("plan file {path} is not a ferry plan: {reason}")]
    PlanFormat { path: String, reason: String },
}

/// Reads and validates an inventory and any number of release plans, reporting every problem
/// of every file at once.
pub fn load(
    inventory: &Path,
    plans: &[PathBuf],
) -> Result<(Loaded<Inventory>, Vec<Loaded<ReleasePlan>>), Diagnostics> {
    let mut diags = Diagnostics::default();
    let inv = match load::read_source(inventory) {
        Ok(src) => match load::parse_inventory(src) {
            Ok(mut inv) => {
                diags.extend(validate::inventory(&inv));
                // From here on a line of an app (`ecrnow@3`) is an app of its own (plans are
                // validated against it even when the inventory has problems, so that all are
                // reported at once).
                inv.value = inv.value.with_lines();
                Some(inv)
            }
            Err(d) => {
                diags.extend(d);
                None
            }
        },
        Err(p) => {
            diags.push(p);
            None
        }
    };
    let mut loaded = Vec::new();
    for path in plans {
        match load::read_source(path)
            .map_err(|p| Diagnostics::from(vec![p]))
            .and_then(load::parse_release_plan)
        {
            Ok(plan) => {
                if let Some(inv) = &inv {
                    diags.extend(validate::release_plan(&plan, &inv.value));
                }
                loaded.push(plan);
            }
            Err(d) => diags.extend(d),
        }
    }
    diags.into_result()?;
    Ok((
        inv.expect("no diagnostics means the inventory loaded"),
        loaded,
    ))
}

/// A loaded file as a saved plan's input: its role, canonical path and digest.
pub fn input(role: &str, source: &SourceFile) -> InputFile {
    InputFile {
        role: role.into(),
        path: canonical(&source.path),
        sha256: source.sha256.clone(),
    }
}

/// The `kind:` of a plan file (`release` when it says nothing ferry can read): which loader
/// takes it.
pub fn plan_kind(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| load::plan_kind(&t))
        .unwrap_or_else(|| "release".into())
}

/// Reads and validates an inventory and a migration plan, every problem of both at once.
pub fn load_migration(
    inventory: &Path,
    plan: &Path,
) -> Result<(Loaded<Inventory>, Loaded<crate::model::MigrationPlan>), Diagnostics> {
    let (inv, mut diags) = match load(inventory, &[]) {
        Ok((inv, _)) => (Some(inv), Diagnostics::default()),
        Err(d) => (None, d),
    };
    let mp = match load::read_source(plan)
        .map_err(|p| Diagnostics::from(vec![p]))
        .and_then(load::parse_migration_plan)
    {
        Ok(mp) => {
            if let Some(inv) = &inv {
                diags.extend(validate::migration_plan(&mp, &inv.value));
            }
            Some(mp)
        }
        Err(d) => {
            diags.extend(d);
            None
        }
    };
    diags.into_result()?;
    Ok((
        inv.expect("no diagnostics means the inventory loaded"),
        mp.expect("no diagnostics means the plan loaded"),
    ))
}

/// A migration plan's body re-derived from its inputs, every difference named.
fn migration_body_problems(plan: &SavedPlan) -> Result<Vec<String>, WorkspaceError> {
    let inputs: Vec<&InputFile> = plan
        .inputs
        .iter()
        .filter(|i| i.role == "migration")
        .collect();
    let [mp_input] = inputs.as_slice() else {
        return Ok(vec![format!(
            "a migration plan must name exactly one migration plan file among its inputs; it names {}",
            inputs.len()
        )]);
    };
    let (inv, mp) = load_migration(&inventory_input(plan), Path::new(&mp_input.path))
        .map_err(WorkspaceError::Invalid)?;
    Ok(match crate::plan::plan_migration(&inv.value, &mp.value) {
        Ok(derived) => crate::plan::body_differences(&plan.body, &derived),
        Err(e) => vec![format!("its inputs do not produce a plan: {e}")],
    })
}

/// The path of the saved plan's inventory input (empty if it names none).
fn inventory_input(plan: &SavedPlan) -> PathBuf {
    plan.inputs
        .iter()
        .find(|i| i.role == "inventory")
        .map(|i| PathBuf::from(&i.path))
        .unwrap_or_default()
}

/// The inventory a saved plan was made from, loaded and validated again.
pub fn plan_inventory(plan: &SavedPlan) -> Result<Loaded<Inventory>, WorkspaceError> {
    Ok(load(&inventory_input(plan), &[])
        .map_err(WorkspaceError::Invalid)?
        .0)
}

/// Checks that a saved plan's body is what its (already re-hashed) inputs produce: the
/// release plan and inventory are loaded and validated again and the planner re-run on the
/// plan's own recorded observations (each checked against its fingerprint, which apply checks
/// against the targets). Every difference is named. Back-out and runbook plans are made from
/// the ledger, the cluster or the cloud, not from a release plan: one that names a release
/// plan among its inputs is refused, so an edited `kind` cannot escape the check.
pub fn body_problems(plan: &SavedPlan) -> Result<Vec<String>, WorkspaceError> {
    let plan_inputs: Vec<&InputFile> = plan.inputs.iter().filter(|i| i.role == "plan").collect();
    if plan.body.kind == crate::plan::SavedPlanKind::Migration && plan_inputs.is_empty() {
        return migration_body_problems(plan);
    }
    let migration_inputs = plan.inputs.iter().any(|i| i.role == "migration");
    if migration_inputs && plan.body.kind != crate::plan::SavedPlanKind::Migration {
        return Ok(vec![format!(
            "the plan is of kind {:?} but was made from a migration plan",
            plan.body.kind
        )]);
    }
    if plan.body.kind != crate::plan::SavedPlanKind::Release {
        return Ok(if plan_inputs.is_empty() {
            Vec::new()
        } else {
            vec![format!(
                "the plan is of kind {:?} but was made from release plan {}",
                plan.body.kind, plan_inputs[0].path
            )]
        });
    }
    let [rp_input] = plan_inputs.as_slice() else {
        return Ok(vec![format!(
            "a release plan must name exactly one release plan among its inputs; it names {}",
            plan_inputs.len()
        )]);
    };
    let (inv, plans) = load(&inventory_input(plan), &[PathBuf::from(&rp_input.path)])
        .map_err(WorkspaceError::Invalid)?;
    let mut problems = Vec::new();
    let mut observed = BTreeMap::new();
    for t in &plan.body.targets {
        if t.observed.fingerprint() != t.fingerprint {
            problems.push(format!(
                "target {}: the recorded observation does not match its fingerprint",
                t.target.id
            ));
        }
        observed.insert(t.target.id.clone(), t.observed.clone());
    }
    match crate::plan::plan_release(&inv.value, &plans[0].value, &observed) {
        Ok(derived) => problems.extend(crate::plan::body_differences(&plan.body, &derived)),
        Err(e) => problems.push(format!("its inputs do not produce a plan: {e}")),
    }
    Ok(problems)
}

pub fn base_dir(inventory_path: &Path) -> PathBuf {
    let dir = inventory_path.parent().unwrap_or(Path::new("."));
    if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir.to_owned()
    }
}

/// The spec a driver needs for `target`; `with_secrets` resolves secret references (apply time
/// only).
pub fn target_spec(
    inv: &Inventory,
    base: &Path,
    target: &TargetRef,
    with_secrets: bool,
) -> Result<TargetSpec, WorkspaceError> {
    let mut one = target_specs(inv, base, [target], with_secrets)?;
    Ok(one.pop().expect("one target, one spec"))
}

/// The specs of many targets, each app's data shared between its targets rather than copied
/// per target (memory linear in targets, not targets times sites).
pub fn target_specs<'a>(
    inv: &Inventory,
    base: &Path,
    targets: impl IntoIterator<Item = &'a TargetRef>,
    with_secrets: bool,
) -> Result<Vec<TargetSpec>, WorkspaceError> {
    let mut apps: BTreeMap<String, std::sync::Arc<crate::model::App>> = BTreeMap::new();
    let mut out = Vec::new();
    for t in targets {
        let app = apps
            .entry(t.app.clone())
            .or_insert_with(|| {
                std::sync::Arc::new(
                    inv.app(&t.app)
                        .cloned()
                        .expect("targets come from the inventory"),
                )
            })
            .clone();
        out.push(spec_with_app(inv, base, t, with_secrets, app)?);
    }
    Ok(out)
}

fn spec_with_app(
    inv: &Inventory,
    base: &Path,
    target: &TargetRef,
    with_secrets: bool,
    app: std::sync::Arc<crate::model::App>,
) -> Result<TargetSpec, WorkspaceError> {
    let cloud = inv.cloud(&target.host).cloned();
    let env = app
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut secrets = Vec::new();
    if with_secrets {
        for (name, reference) in &app.secrets {
            let r = SecretRef::parse(reference)?;
            secrets.push((
                name.clone(),
                r.resolve(&format!("{}.secrets.{name}", app.id), base)?,
            ));
        }
    }
    let ssh = match target.kind {
        crate::model::TargetKind::Ssh => Some(ssh_target(inv, base, &target.host, &target.site)?),
        _ => None,
    };
    let docker = match (&target.kind, cloud.as_ref().and_then(|c| c.docker.as_ref())) {
        (crate::model::TargetKind::Docker, Some(d)) => {
            Some(docker_target(&target.host, d, base, with_secrets)?)
        }
        _ => None,
    };
    Ok(TargetSpec {
        target: target.clone(),
        app,
        cloud,
        base_dir: base.to_owned(),
        env,
        secrets,
        ssh,
        docker,
        fence: None,
    })
}

/// How to reach a Docker host; TLS material is given as `file:` references.
fn docker_target(
    cloud: &str,
    d: &crate::model::DockerCloud,
    base: &Path,
    with_secrets: bool,
) -> Result<crate::drivers::endpoints::DockerTarget, WorkspaceError> {
    let mut registries = Vec::new();
    if with_secrets {
        for (n, r) in d.registries.iter().enumerate() {
            let at = |f: &str| format!("clouds.{cloud}.docker.registries[{n}].{f}");
            // A user name may be written as it is (ECR's is `AWS`) or be a reference.
            let user = if r.username.starts_with("env:") || r.username.starts_with("file:") {
                SecretRef::parse(&r.username)?
                    .resolve(&at("username"), base)?
                    .expose()
                    .to_owned()
            } else {
                r.username.clone()
            };
            let password = SecretRef::parse(&r.password)?.resolve(&at("password"), base)?;
            registries.push((r.server.clone(), user, password));
        }
    }
    let file = |r: &str| -> Result<PathBuf, WorkspaceError> {
        match SecretRef::parse(r)? {
            SecretRef::File(p) => Ok(base.join(p)),
            // Validation refuses other kinds; keep the reference out of the message.
            _ => Ok(PathBuf::new()),
        }
    };
    let tls = match &d.tls {
        Some(t) => Some(crate::drivers::endpoints::TlsFiles {
            ca: file(&t.ca)?,
            cert: file(&t.cert)?,
            key: file(&t.key)?,
        }),
        None => None,
    };
    Ok(crate::drivers::endpoints::DockerTarget {
        cloud: cloud.to_owned(),
        host: d.host.clone(),
        tls,
        timeout: Duration::from_secs(d.timeout_seconds),
        registries,
    })
}

/// How to reach endpoint `id` (and its jump host), with its connection secrets resolved.
pub fn ssh_target(
    inv: &Inventory,
    base: &Path,
    id: &str,
    site: &str,
) -> Result<crate::drivers::endpoints::SshTarget, WorkspaceError> {
    let ep = inv.endpoint(id).expect("validated endpoint");
    let jump_id = ep
        .connection
        .jump
        .clone()
        .or_else(|| inv.site(site).and_then(|s| s.jump.clone()))
        .filter(|j| j != id);
    let jump = match jump_id {
        Some(j) => Some(host_spec(
            inv.endpoint(&j).expect("validated jump host"),
            base,
        )?),
        None => None,
    };
    Ok(crate::drivers::endpoints::SshTarget {
        host: host_spec(ep, base)?,
        jump,
        root: ep.connection.root.clone(),
        command_timeout: Duration::from_secs(ep.connection.command_timeout_seconds),
    })
}

fn host_spec(
    ep: &crate::model::Endpoint,
    base: &Path,
) -> Result<crate::drivers::endpoints::HostSpec, WorkspaceError> {
    let c = &ep.connection;
    let resolve =
        |r: &Option<String>, what: &str| -> Result<Option<crate::secret::Secret>, WorkspaceError> {
            match r {
                Some(r) => Ok(Some(
                    SecretRef::parse(r)?.resolve(&format!("{}.connection.{what}", ep.id), base)?,
                )),
                None => Ok(None),
            }
        };
    Ok(crate::drivers::endpoints::HostSpec {
        id: ep.id.clone(),
        address: ep.address.clone(),
        port: c.port,
        user: c.user.clone(),
        known_hosts: base.join(c.known_hosts.as_deref().unwrap_or("known_hosts")),
        identity: resolve(&c.identity, "identity")?,
        passphrase: resolve(&c.identity_passphrase, "identity_passphrase")?,
        connect_timeout: Duration::from_secs(c.connect_timeout_seconds),
    })
}

/// The driver of `spec`'s target kind; a build without it cannot observe the target.
fn driver_for(
    drivers: &Drivers,
    spec: &TargetSpec,
) -> Result<std::sync::Arc<dyn crate::drivers::Driver>, WorkspaceError> {
    drivers
        .get(spec.target.kind)
        .map_err(|source| WorkspaceError::Observe {
            target: spec.target.id.clone(),
            source,
        })
}

/// Observes every target, [`OBSERVE_CONCURRENCY`] at a time, each within [`OBSERVE_TIMEOUT`].
pub async fn observe_all(
    drivers: &Drivers,
    specs: &[TargetSpec],
) -> Result<BTreeMap<String, Observed>, WorkspaceError> {
    let mut set = tokio::task::JoinSet::new();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(OBSERVE_CONCURRENCY));
    for spec in specs {
        let spec = spec.clone();
        let slots = slots.clone();
        let driver = driver_for(drivers, &spec)?;
        set.spawn(async move {
            let _slot = slots.acquire_owned().await.expect("semaphore open");
            let r = tokio::time::timeout(OBSERVE_TIMEOUT, driver.observe(&spec)).await;
            (spec.target.id.clone(), r)
        });
    }
    let mut out = BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        let (target, r) = joined.expect("observe tasks do not panic");
        match r {
            Ok(Ok(o)) => {
                out.insert(target, o);
            }
            Ok(Err(source)) => return Err(WorkspaceError::Observe { target, source }),
            Err(_) => {
                return Err(WorkspaceError::ObserveTimeout {
                    target,
                    seconds: OBSERVE_TIMEOUT.as_secs(),
                });
            }
        }
    }
    Ok(out)
}

/// The artifact path of `app` at `version`.
pub fn artifact_path(inv: &Inventory, base: &Path, app: &str, version: &str) -> PathBuf {
    let a = inv.app(app).expect("validated");
    base.join(a.artifact.replace("{version}", version))
}

/// The absolute form of a path (as given when it cannot be resolved), as plans record inputs.
pub fn canonical(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_owned())
        .display()
        .to_string()
}

/// Every file the plan depends on, with its digest now.
pub fn hash_inputs(
    inv: &Loaded<Inventory>,
    plans: &[&SourceFile],
    steps: &[Step],
) -> Result<Vec<InputFile>, WorkspaceError> {
    let base = base_dir(&inv.source.path);
    let mut inputs = vec![InputFile {
        role: "inventory".into(),
        path: canonical(&inv.source.path),
        sha256: inv.source.sha256.clone(),
    }];
    for p in plans {
        inputs.push(InputFile {
            role: "plan".into(),
            path: canonical(&p.path),
            sha256: p.sha256.clone(),
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    // Operation steps (snapshots, runbook steps) and retirements deploy nothing.
    for step in steps
        .iter()
        .filter(|s| s.op.is_none() && s.action == crate::plan::StepAction::Deploy)
    {
        let app = inv.value.app(&step.target.app).expect("validated");
        // A docker app's artifact is an image on the Docker host: see `locate_images`; a
        // kubernetes app's images are named in its manifests.
        if app.docker.is_none()
            && app.kubernetes.is_none()
            && seen.insert(("artifact", app.id.clone(), step.to.clone()))
        {
            let path = artifact_path(&inv.value, &base, &app.id, &step.to);
            let dests: Vec<&str> = app.config.iter().map(|c| c.dest.as_str()).collect();
            let sha256 =
                artifact::inspect(&path, &dests).map_err(|source| WorkspaceError::Artifact {
                    app: app.id.clone(),
                    version: step.to.clone(),
                    path: path.display().to_string(),
                    source: Box::new(source),
                })?;
            inputs.push(InputFile {
                role: "artifact".into(),
                path: canonical(&path),
                sha256,
            });
        }
        let env_template = app.docker.as_ref().and_then(|d| d.env_template.clone());
        let manifests = app.kubernetes.iter().flat_map(|k| &k.manifests);
        for template in app
            .config
            .iter()
            .map(|c| &c.template)
            .chain(&env_template)
            .chain(manifests)
        {
            if seen.insert(("template", template.clone(), String::new())) {
                let path = base.join(template);
                let bytes = std::fs::read(&path).map_err(|source| WorkspaceError::Template {
                    path: path.display().to_string(),
                    source,
                })?;
                inputs.push(InputFile {
                    role: "template".into(),
                    path: canonical(&path),
                    sha256: load::sha256_hex(&bytes),
                });
            }
        }
    }
    Ok(inputs)
}

/// Role of the inputs that are images on a Docker host, not files.
pub const IMAGE_ROLE: &str = "image";

/// Locates, on the targets' side, what each step deploys that is not a file of ferry's (a
/// Docker image), as plan inputs. Every missing image is reported, not only the first.
pub async fn locate_images(
    drivers: &Drivers,
    specs: &[TargetSpec],
    steps: &[Step],
) -> Result<Vec<InputFile>, WorkspaceError> {
    let mut out: Vec<InputFile> = Vec::new();
    let mut problems = Vec::new();
    for step in steps {
        // A switch returns to a release already on the target; an operation deploys nothing.
        if step.action != crate::plan::StepAction::Deploy || step.op.is_some() {
            continue;
        }
        let Some(spec) = specs.iter().find(|s| s.target.id == step.target.id) else {
            continue;
        };
        let driver = driver_for(drivers, spec)?;
        match tokio::time::timeout(OBSERVE_TIMEOUT, driver.locate(spec, &step.to)).await {
            Ok(Ok(Some(img))) => {
                if !out.iter().any(|i| i.path == img.location) {
                    out.push(InputFile {
                        role: IMAGE_ROLE.into(),
                        path: img.location,
                        sha256: img.id.unwrap_or_default(),
                    });
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => problems.push(e.to_string()),
            Err(_) => problems.push(format!(
                "{}: locating the release timed out after {}s",
                spec.target.id,
                OBSERVE_TIMEOUT.as_secs()
            )),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(WorkspaceError::Unavailable(problems))
    }
}

/// What each Kubernetes step would change, object by object (a server-side dry-run where the
/// server supports it), put into the plan. Every problem (rendering, conflicts, a missing
/// namespace, an unreachable cluster) is reported, not only the first.
pub async fn preview_objects(
    drivers: &Drivers,
    specs: &[TargetSpec],
    plan: &mut SavedPlan,
    inv: &Inventory,
    base: &Path,
) -> Result<(), WorkspaceError> {
    let kube_steps: Vec<Step> = plan
        .body
        .steps
        .iter()
        .filter(|s| {
            s.op.is_none()
                && s.action == crate::plan::StepAction::Deploy
                && s.target.kind == crate::model::TargetKind::Kubernetes
        })
        .cloned()
        .collect();
    if kube_steps.is_empty() {
        return Ok(());
    }
    let bundles = bundles(plan, inv, base)?;
    let mut problems = Vec::new();
    for step in kube_steps {
        let (Some(spec), Some(bundle)) = (
            specs.iter().find(|s| s.target.id == step.target.id),
            bundles.get(&step.id),
        ) else {
            continue;
        };
        let driver = driver_for(drivers, spec)?;
        match tokio::time::timeout(OBSERVE_TIMEOUT, driver.preview(spec, bundle)).await {
            Ok(Ok(Some(changes))) => {
                plan.body.objects.insert(step.id.clone(), changes);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => problems.push(e.to_string()),
            Err(_) => problems.push(format!(
                "{}: previewing the release timed out after {}s",
                spec.target.id,
                OBSERVE_TIMEOUT.as_secs()
            )),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(WorkspaceError::Unavailable(problems))
    }
}

/// Images whose id on the Docker host differs from the plan's record.
pub async fn changed_images(
    drivers: &Drivers,
    specs: &BTreeMap<String, TargetSpec>,
    plan: &SavedPlan,
) -> Vec<String> {
    let planned: Vec<&InputFile> = plan
        .inputs
        .iter()
        .filter(|i| i.role == IMAGE_ROLE)
        .collect();
    if planned.is_empty() {
        return Vec::new();
    }
    let steps: Vec<Step> = plan.body.steps.clone();
    let list: Vec<TargetSpec> = specs.values().cloned().collect();
    let now = match locate_images(drivers, &list, &steps).await {
        Ok(now) => now,
        Err(WorkspaceError::Unavailable(p)) => return p,
        Err(e) => return vec![e.to_string()],
    };
    let mut out = Vec::new();
    for p in planned {
        match now.iter().find(|n| n.path == p.path) {
            Some(n) if n.sha256 == p.sha256 => {}
            Some(n) => out.push(format!(
                "image {} is now {}; the plan was made with {}",
                p.path,
                if n.sha256.is_empty() {
                    "to be pulled"
                } else {
                    &n.sha256
                },
                if p.sha256.is_empty() {
                    "to be pulled"
                } else {
                    &p.sha256
                },
            )),
            None => out.push(format!(
                "image {} is no longer part of the plan's steps",
                p.path
            )),
        }
    }
    out
}

/// Inputs whose content differs from the plan's record, as `role path (why)`.
pub fn changed_inputs(inputs: &[InputFile]) -> Vec<String> {
    inputs
        .iter()
        .filter(|i| i.role != IMAGE_ROLE)
        .filter_map(|i| {
            let now = artifact::digest(Path::new(&i.path));
            match now {
                Ok(d) if d == i.sha256 => None,
                Ok(_) => Some(format!(
                    "{} {} changed since the plan was made",
                    i.role, i.path
                )),
                Err(e) => Some(format!("{} {} cannot be read: {e}", i.role, i.path)),
            }
        })
        .collect()
}

/// Renders the configuration files of each step and pairs them with the planned artifact.
pub fn bundles(
    plan: &SavedPlan,
    inv: &Inventory,
    base: &Path,
) -> Result<BTreeMap<String, ReleaseBundle>, WorkspaceError> {
    let mut out = BTreeMap::new();
    let deploys = plan
        .body
        .steps
        .iter()
        .filter(|s| s.op.is_none() && s.action == crate::plan::StepAction::Deploy);
    for step in deploys {
        let app = inv.app(&step.target.app).expect("validated");
        let site = inv.site(&step.target.site).expect("validated");
        let (artifact, artifact_sha256) = match &app.docker {
            // A kubernetes app's images are named in its manifests.
            None if app.kubernetes.is_some() => (PathBuf::new(), String::new()),
            Some(d) => {
                let reference = crate::container::image_ref(d, &step.to);
                let location = format!("docker://{}/{reference}", step.target.host);
                let id = plan
                    .inputs
                    .iter()
                    .find(|i| i.role == IMAGE_ROLE && i.path == location)
                    .map(|i| i.sha256.clone())
                    .unwrap_or_default();
                (PathBuf::from(reference), id)
            }
            None => {
                let artifact = artifact_path(inv, base, &app.id, &step.to);
                let canon = canonical(&artifact);
                let sha = plan
                    .inputs
                    .iter()
                    .find(|i| i.role == "artifact" && i.path == canon)
                    .map(|i| i.sha256.clone())
                    .unwrap_or_default();
                (artifact, sha)
            }
        };
        let files = render_files(app, site, &step.to, &step.target.id, base)?;
        out.insert(
            step.id.clone(),
            ReleaseBundle {
                version: step.to.clone(),
                artifact,
                artifact_sha256,
                files,
                plan_id: plan.id.clone(),
            },
        );
    }
    Ok(out)
}

/// An app's templates rendered for one site and version: configuration files, a docker app's
/// environment file (kept apart by its dest), a kubernetes app's manifests (named by their
/// template).
pub fn render_files(
    app: &crate::model::App,
    site: &crate::model::Site,
    version: &str,
    target: &str,
    base: &Path,
) -> Result<Vec<RenderedFile>, WorkspaceError> {
    let tier = serde_json::to_value(site.tier)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let namespace = app.kubernetes.as_ref().map(|k| k.namespace_for(&site.id));
    let ctx = RenderContext {
        app: &app.id,
        version,
        site: &site.id,
        tier: &tier,
        location: site.location.as_deref(),
        target,
        env: &app.env,
        namespace: namespace.as_deref(),
        values: app.kubernetes.as_ref().map(|k| &k.values),
    };
    // Configuration files, a docker app's environment file (kept apart by its dest), a
    // kubernetes app's manifests (named by their template).
    let env_template = app.docker.as_ref().and_then(|d| d.env_template.as_deref());
    let manifests = app.kubernetes.iter().flat_map(|k| &k.manifests);
    let templates = app
        .config
        .iter()
        .map(|c| (c.template.as_str(), c.dest.as_str()))
        .chain(env_template.map(|t| (t, crate::container::ENV_FILE_DEST)))
        .chain(manifests.map(|m| (m.as_str(), m.as_str())));
    let mut files = Vec::new();
    for (template, dest) in templates {
        let path = base.join(template);
        let text = std::fs::read_to_string(&path).map_err(|source| WorkspaceError::Template {
            path: path.display().to_string(),
            source,
        })?;
        files.push(RenderedFile {
            dest: dest.to_owned(),
            contents: render::render(template, &text, &ctx)?,
        });
    }
    Ok(files)
}

/// A kubernetes app's objects on a site at its inventory version, as ferry would apply them
/// (rendered, parsed, placed): what `ferry kube rbac` derives the permissions from.
pub fn kube_objects(
    inv: &Inventory,
    base: &Path,
    app: &crate::model::App,
    site: &crate::model::Site,
) -> Result<(String, Vec<serde_json::Value>), String> {
    let k = app.kubernetes.as_ref().ok_or("not a kubernetes app")?;
    let ns = k.namespace_for(&site.id);
    let target = crate::target::resolve(inv, app, &site.id)
        .into_iter()
        .next()
        .map_or_else(|| format!("{}/{}", site.id, app.id), |t| t.id);
    let files = render_files(app, site, &app.version, &target, base).map_err(|e| e.to_string())?;
    let at = crate::kubernetes::Placement {
        app: &app.id,
        site: &site.id,
        namespace: &ns,
    };
    let mut objects = Vec::new();
    for f in &files {
        let parsed =
            crate::kubernetes::parse(&f.dest, &f.contents, &at).map_err(|e| e.to_string())?;
        objects.extend(parsed.into_iter().map(|m| m.object));
    }
    Ok((ns, objects))
}

/// A saved plan with a fresh id, stamped now: ids and times are what the planner's
/// determinism excludes, so they are made here at the edge, not in `plan`.
pub fn new_saved_plan(
    actor: &str,
    inputs: Vec<InputFile>,
    body: crate::plan::PlanBody,
) -> SavedPlan {
    SavedPlan {
        format: crate::plan::PLAN_FORMAT.into(),
        format_version: crate::plan::PLAN_FORMAT_VERSION,
        id: uuid::Uuid::new_v4().to_string(),
        created_at: crate::ledger::now(),
        ferry_version: env!("CARGO_PKG_VERSION").into(),
        actor: actor.to_owned(),
        inputs,
        body,
    }
}

/// Writes the plan atomically (temp file, fsync, rename).
pub fn write_plan(path: &Path, plan: &SavedPlan) -> Result<(), WorkspaceError> {
    let err = |source| WorkspaceError::PlanFile {
        path: path.display().to_string(),
        source,
    };
    let mut json = serde_json::to_string_pretty(plan).expect("plans serialize");
    json.push('\n');
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    crate::durable::write_atomic(path, json.as_bytes()).map_err(err)
}

pub fn read_plan(path: &Path) -> Result<SavedPlan, WorkspaceError> {
    read_plan_with_digest(path).map(|(p, _)| p)
}

/// The saved plan and the SHA-256 of exactly the bytes it was parsed from (read once).
pub fn read_plan_with_digest(path: &Path) -> Result<(SavedPlan, String), WorkspaceError> {
    let bytes = std::fs::read(path).map_err(|source| WorkspaceError::PlanFile {
        path: path.display().to_string(),
        source,
    })?;
    let digest = load::sha256_hex(&bytes);
    let text = String::from_utf8(bytes).map_err(|_| WorkspaceError::PlanFormat {
        path: path.display().to_string(),
        reason: "not UTF-8".into(),
    })?;
    parse_plan(path, &text).map(|p| (p, digest))
}

fn parse_plan(path: &Path, text: &str) -> Result<SavedPlan, WorkspaceError> {
    SavedPlan::parse(text).map_err(|reason| WorkspaceError::PlanFormat {
        path: path.display().to_string(),
        reason,
    })
}

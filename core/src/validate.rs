//! Checks that serde cannot make: identifiers, cross-references, ranges, cycles.
//!
//! Every problem is collected, none stops the check; each is located by field path through
//! the document's source map. Pure: values in, diagnostics out.

use std::collections::{BTreeMap, BTreeSet};

use crate::load::{Diagnostics, Loaded};
use crate::model::{App, CloudKind, FORMAT_VERSION, Inventory, ReleasePlan, TargetKind};
use crate::secret::SecretRef;

mod lines;
mod migration;
pub use migration::migration_plan;

/// Validates an inventory on its own.
pub fn inventory(inv: &Loaded<Inventory>) -> Diagnostics {
    let mut out = Diagnostics::default();
    let i = &inv.value;
    let mut err = |path: String, msg: String| out.push(inv.problem(&path, msg));

    if i.version != FORMAT_VERSION {
        err(
            "version".into(),
            format!(
                "unsupported inventory format version {} (this ferry reads version {FORMAT_VERSION})",
                i.version
            ),
        );
    }
    for (what, ids) in [
        (
            "sites",
            i.sites.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ),
        (
            "endpoints",
            i.endpoints.iter().map(|s| s.id.as_str()).collect(),
        ),
        ("clouds", i.clouds.iter().map(|s| s.id.as_str()).collect()),
        ("apps", i.apps.iter().map(|s| s.id.as_str()).collect()),
        (
            "databases",
            i.databases.iter().map(|s| s.id.as_str()).collect(),
        ),
        ("buckets", i.buckets.iter().map(|s| s.id.as_str()).collect()),
    ] {
        check_ids(what, &ids, &mut err);
    }

    check_sites(i, &mut err);
    check_clouds(i, &mut err);
    check_endpoints(i, &mut err);
    check_approvers(i, &mut err);
    for (n, c) in i.communications.iter().enumerate() {
        for (field, value) in [("audience", &c.audience), ("channel", &c.channel)] {
            if value.trim().is_empty() {
                err(format!("communications[{n}].{field}"), "is empty".into());
            }
        }
    }
    for (n, app) in i.apps.iter().enumerate() {
        let at = format!("apps[{n}]");
        check_app_kind(&at, app, &mut err);
        check_app_sites(&at, app, i, &mut err);
        check_app_health(&at, app, i, &mut err);
        check_app_limits(&at, app, i, &mut err);
        check_app_files(&at, app, &mut err);
        check_app_lifecycle(&at, app, i, &mut err);
    }
    if let Some(cycle) = dependency_cycle(i) {
        let n = i.apps.iter().position(|a| a.id == cycle[0]).unwrap_or(0);
        err(
            format!("apps[{n}].depends_on"),
            format!("dependency cycle: {}", cycle.join(" -> ")),
        );
    }
    check_data_stores(i, &mut err);
    lines::check_lines(i, &mut err);
    lines::check_databases(i, &mut err);
    for (n, d) in i.databases.iter().enumerate() {
        match d.snapshot_retention {
            Some(0) => err(
                format!("databases[{n}].snapshot_retention"),
                "is 0: a prune would delete every snapshot ferry took; keep at least 1".into(),
            ),
            Some(_) if !d.is_rds() => err(
                format!("databases[{n}].snapshot_retention"),
                "only an RDS instance (`cloud` and `identifier`) has snapshots to keep".into(),
            ),
            _ => {}
        }
        if d.engine.starts_with("aurora") {
            err(
                format!("databases[{n}].engine"),
                format!(
                    "`{}` is an Aurora engine: Aurora keeps its data in a cluster, and the restore ferry runs (RestoreDBInstanceFromDBSnapshot) does not apply to it; Aurora clusters are not supported yet",
                    d.engine
                ),
            );
        }
    }
    out
}

/// Sites: the clouds, endpoints and jump host they name exist; windows and roles are well formed.
fn check_sites(i: &Inventory, err: &mut impl FnMut(String, String)) {
    for (n, site) in i.sites.iter().enumerate() {
        let at = format!("sites[{n}]");
        for (k, c) in site.clouds.iter().enumerate() {
            if i.cloud(c).is_none() {
                err(
                    format!("{at}.clouds[{k}]"),
                    format!(
                        "site `{}` names cloud `{c}`, which is not in `clouds`",
                        site.id
                    ),
                );
            }
        }
        for (k, e) in site.endpoints.iter().enumerate() {
            if i.endpoint(e).is_none() {
                err(
                    format!("{at}.endpoints[{k}]"),
                    format!(
                        "site `{}` names endpoint `{e}`, which is not in `endpoints`",
                        site.id
                    ),
                );
            }
        }
        if let Some(j) = &site.jump
            && i.endpoint(j).is_none()
        {
            err(
                format!("{at}.jump"),
                format!("jump host `{j}` is not in `endpoints`"),
            );
        }
        if let Some(w) = &site.maintenance_window {
            if parse_hh_mm(&w.start).is_none() {
                err(
                    format!("{at}.maintenance_window.start"),
                    format!("`{}` is not a time of day in HH:MM form", w.start),
                );
            }
            if w.duration_minutes == 0 || w.duration_minutes > 24 * 60 {
                err(
                    format!("{at}.maintenance_window.duration_minutes"),
                    "must be between 1 and 1440 minutes".into(),
                );
            }
            if w.days.is_empty() {
                err(
                    format!("{at}.maintenance_window.days"),
                    "names no day".into(),
                );
            }
            if w.timezone.trim().is_empty() {
                err(
                    format!("{at}.maintenance_window.timezone"),
                    "is empty".into(),
                );
            } else if let Err(m) = crate::window::zone(&w.timezone) {
                err(format!("{at}.maintenance_window.timezone"), m);
            }
        } else if i.maintenance.windows_required_for.contains(&site.tier) {
            err(
                at.clone(),
                format!(
                    "site `{}` is of tier `{}`, whose sites must declare a `maintenance_window` (maintenance.windows_required_for)",
                    site.id,
                    serde_json::to_value(site.tier)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                ),
            );
        }
        for (k, who) in site.backout_authority.iter().enumerate() {
            if who.trim().is_empty() {
                err(format!("{at}.backout_authority[{k}]"), "is empty".into());
            }
        }
        for (k, r) in site.roles.iter().enumerate() {
            if r.role.trim().is_empty() {
                err(format!("{at}.roles[{k}].role"), "is empty".into());
            }
            if r.name.trim().is_empty() {
                err(format!("{at}.roles[{k}].name"), "is empty".into());
            }
        }
    }
}

/// Clouds: each has exactly the connection section of its kind, well formed.
fn check_clouds(i: &Inventory, err: &mut impl FnMut(String, String)) {
    for (n, cloud) in i.clouds.iter().enumerate() {
        let at = format!("clouds[{n}]");
        let sections = [
            (CloudKind::Local, cloud.local.is_some()),
            (CloudKind::Aws, cloud.aws.is_some()),
            (CloudKind::Kubernetes, cloud.kubernetes.is_some()),
            (CloudKind::Docker, cloud.docker.is_some()),
        ];
        for (kind, present) in sections {
            if kind == cloud.kind && !present {
                err(
                    at.to_owned(),
                    format!(
                        "cloud `{}` of kind `{}` needs a `{}` section with its connection settings",
                        cloud.id,
                        kind.as_str(),
                        kind.as_str()
                    ),
                );
            } else if kind != cloud.kind && present {
                err(
                    format!("{at}.{}", kind.as_str()),
                    format!(
                        "cloud `{}` is of kind `{}`; a `{}` section does not belong here",
                        cloud.id,
                        cloud.kind.as_str(),
                        kind.as_str()
                    ),
                );
            }
        }
        if let Some(local) = &cloud.local
            && local.root.trim().is_empty()
        {
            err(format!("{at}.local.root"), "is empty".into());
        }
        if let Some(d) = &cloud.docker {
            check_docker_cloud(&at, &cloud.id, d, err);
        }
        if let Some(k) = &cloud.kubernetes {
            match (&k.kubeconfig, k.in_cluster) {
                (None, false) => err(
                    format!("{at}.kubernetes"),
                    format!(
                        "cloud `{}` needs `kubeconfig: PATH` (and optionally `context`), or `in_cluster: true`",
                        cloud.id
                    ),
                ),
                (Some(_), true) => err(
                    format!("{at}.kubernetes.in_cluster"),
                    "give either `kubeconfig` or `in_cluster: true`, not both".into(),
                ),
                (Some(p), false) if p.trim().is_empty() => {
                    err(format!("{at}.kubernetes.kubeconfig"), "is empty".into())
                }
                _ => {}
            }
            if k.in_cluster && k.context.is_some() {
                err(
                    format!("{at}.kubernetes.context"),
                    "an in-cluster connection has no kubeconfig context".into(),
                );
            }
            if k.max_attempts == 0 || k.timeout_seconds == 0 {
                err(
                    format!("{at}.kubernetes"),
                    "max_attempts and timeout_seconds must be at least 1".into(),
                );
            }
        }
        if let Some(a) = &cloud.aws {
            if a.account.len() != 12 || !a.account.chars().all(|c| c.is_ascii_digit()) {
                err(
                    format!("{at}.aws.account"),
                    format!("`{}` is not an AWS account id (12 digits)", a.account),
                );
            }
            if a.region.trim().is_empty() {
                err(format!("{at}.aws.region"), "is empty".into());
            }
            if let Some(u) = &a.endpoint_url
                && !(u.starts_with("https://") || u.starts_with("http://"))
            {
                err(
                    format!("{at}.aws.endpoint_url"),
                    format!("`{u}` is not an http(s) URL"),
                );
            }
            if a.access_key_id.is_some() != a.secret_access_key.is_some() {
                err(
                    format!("{at}.aws"),
                    "access_key_id and secret_access_key go together (or leave both out for the default credential chain)".into(),
                );
            }
            if a.session_token.is_some() && a.access_key_id.is_none() {
                err(
                    format!("{at}.aws.session_token"),
                    "a session token belongs to static keys (access_key_id, secret_access_key)"
                        .into(),
                );
            }
            if a.profile.is_some() && a.access_key_id.is_some() {
                err(
                    format!("{at}.aws.profile"),
                    "a profile is for the default credential chain; static keys are set: use one or the other".into(),
                );
            }
            for (field, value) in [
                ("access_key_id", a.access_key_id.as_ref()),
                ("secret_access_key", a.secret_access_key.as_ref()),
                ("session_token", a.session_token.as_ref()),
            ] {
                if let Some(v) = value
                    && let Err(e) = SecretRef::parse(v)
                {
                    err(format!("{at}.aws.{field}"), e.to_string());
                }
            }
            if a.max_attempts == 0 || a.timeout_seconds == 0 {
                err(
                    format!("{at}.aws"),
                    "max_attempts and timeout_seconds must be at least 1".into(),
                );
            }
        }
    }
}

/// Endpoints: addresses, connections, host keys and hardware requirements.
fn check_endpoints(i: &Inventory, err: &mut impl FnMut(String, String)) {
    for (n, ep) in i.endpoints.iter().enumerate() {
        let at = format!("endpoints[{n}]");
        if ep.address.trim().is_empty() {
            err(format!("{at}.address"), "is empty".into());
        }
        if ep
            .connection
            .known_hosts
            .as_deref()
            .is_none_or(|k| k.trim().is_empty())
        {
            err(
                format!("{at}.connection"),
                format!(
                    "endpoint `{}` needs `known_hosts`: host keys are always checked strictly",
                    ep.id
                ),
            );
        }
        if let Some(p) = &ep.connection.identity_passphrase
            && let Err(e) = SecretRef::parse(p)
        {
            err(
                format!("{at}.connection.identity_passphrase"),
                e.to_string(),
            );
        }
        if !ep.connection.root.starts_with('/') || ep.connection.root.contains("..") {
            err(
                format!("{at}.connection.root"),
                format!(
                    "`{}` must be an absolute path without `..`",
                    ep.connection.root
                ),
            );
        }
        if ep.connection.connect_timeout_seconds == 0 || ep.connection.command_timeout_seconds == 0
        {
            err(
                format!("{at}.connection"),
                "timeouts must be at least 1 second".into(),
            );
        }
        if ep.connection.protocol != "ssh" {
            err(
                format!("{at}.connection.protocol"),
                format!(
                    "unknown protocol `{}` (expected `ssh`)",
                    ep.connection.protocol
                ),
            );
        }
        if let Some(id) = &ep.connection.identity
            && let Err(e) = SecretRef::parse(id)
        {
            err(format!("{at}.connection.identity"), e.to_string());
        }
        if let Some(j) = &ep.connection.jump {
            if i.endpoint(j).is_none() {
                err(
                    format!("{at}.connection.jump"),
                    format!("jump host `{j}` is not in `endpoints`"),
                );
            } else if j == &ep.id {
                err(
                    format!("{at}.connection.jump"),
                    "an endpoint cannot be its own jump host".into(),
                );
            }
        }
        let hw = &ep.hardware;
        if hw.cpus == 0 {
            err(format!("{at}.hardware.cpus"), "must be at least 1".into());
        }
        if hw.memory_mb == 0 {
            err(
                format!("{at}.hardware.memory_mb"),
                "must be at least 1".into(),
            );
        }
        if hw.os.trim().is_empty() {
            err(format!("{at}.hardware.os"), "is empty".into());
        }
    }
}

/// Approvers: names, roles and public keys.
fn check_approvers(i: &Inventory, err: &mut impl FnMut(String, String)) {
    for (n, a) in i.approvers.iter().enumerate() {
        let at = format!("approvers[{n}]");
        if a.name.trim().is_empty() {
            err(format!("{at}.name"), "is empty".into());
        }
        if i.approvers[..n].iter().any(|b| b.name == a.name) {
            err(
                format!("{at}.name"),
                format!("approver `{}` is listed twice", a.name),
            );
        }
        if a.roles.is_empty() {
            err(
                format!("{at}.roles"),
                "an approver needs at least one role".into(),
            );
        }
        if let Err(m) = crate::approval::parse_public_key(&a.public_key) {
            err(format!("{at}.public_key"), m);
        }
        if let Some(r) = &a.signing_key
            && let Err(e) = SecretRef::parse(r)
        {
            err(format!("{at}.signing_key"), e.to_string());
        }
    }
}

/// An app's version, and the artifact or image its target kind deploys.
fn check_app_kind(at: &str, app: &App, err: &mut impl FnMut(String, String)) {
    if let Err(m) = check_version(&app.version) {
        err(format!("{at}.version"), m);
    }
    if app.target == TargetKind::Local
        && (app.artifact.ends_with(".tar.gz") || app.artifact.ends_with(".tgz"))
    {
        err(
            format!("{at}.artifact"),
            "the local target deploys a directory; unpack the tarball, or deploy it over ssh"
                .into(),
        );
    }
    match (app.target, &app.docker) {
        (TargetKind::Docker, None) => err(
            at.to_owned(),
            format!(
                "app `{}` runs on docker and needs a `docker` section naming its image",
                app.id
            ),
        ),
        (TargetKind::Docker, Some(d)) => {
            if !app.artifact.trim().is_empty() {
                err(
                    format!("{at}.artifact"),
                    "docker apps deploy the image in `docker.image`; leave `artifact` out".into(),
                );
            }
            check_docker_app(at, d, err);
        }
        (_, Some(_)) => err(
            format!("{at}.docker"),
            format!(
                "app `{}` runs on `{}`; a `docker` section does not belong here",
                app.id,
                app.target.as_str()
            ),
        ),
        (TargetKind::Kubernetes, None) => {
            if !app.artifact.trim().is_empty() {
                err(
                    format!("{at}.artifact"),
                    "kubernetes apps deploy the images named in their manifests; leave `artifact` out"
                        .into(),
                );
            }
        }
        (_, None) => {
            if app.artifact.trim().is_empty() {
                err(format!("{at}.artifact"), "is empty".into());
            }
        }
    }
}

/// A catalogued app: its version of record is an id of its scheme, at least one major may be
/// active, and the purge role is one some approver holds.
fn check_app_lifecycle(at: &str, app: &App, i: &Inventory, err: &mut impl FnMut(String, String)) {
    let Some(l) = &app.lifecycle else { return };
    if let Err(m) = crate::versions::id::parse(l.scheme, &app.version) {
        err(format!("{at}.version"), m);
    }
    if l.max_active_majors == 0 {
        err(
            format!("{at}.lifecycle.max_active_majors"),
            "is 0: nothing could ever be deployed; at least 1 (2 keeps the previous and the latest)".into(),
        );
    }
    let name = app.catalog().unwrap_or_default();
    if let Some(other) = i
        .apps
        .iter()
        .filter(|o| o.id != app.id && o.catalog() == Some(name))
        .find(|o| {
            o.lifecycle.as_ref().is_some_and(|ol| {
                (ol.scheme, ol.max_active_majors, &ol.purge_role)
                    != (l.scheme, l.max_active_majors, &l.purge_role)
            })
        })
    {
        err(
            format!("{at}.lifecycle"),
            format!(
                "shares catalog `{name}` with app `{}` but not its rules (scheme, max_active_majors, purge_role): one catalog has one set of rules",
                other.id
            ),
        );
    }
    if let Some(role) = &l.purge_role
        && !i.approvers.iter().any(|a| a.roles.contains(role))
    {
        err(
            format!("{at}.lifecycle.purge_role"),
            format!("no approver of the inventory holds role `{role}`: no purge could be approved"),
        );
    }
}

/// An app's sites exist and each offers the one cloud (or the endpoints) its target needs.
fn check_app_sites(at: &str, app: &App, i: &Inventory, err: &mut impl FnMut(String, String)) {
    if app.sites.is_empty() {
        err(
            format!("{at}.sites"),
            format!("app `{}` is on no site", app.id),
        );
    }
    for (k, s) in app.sites.iter().enumerate() {
        let Some(site) = i.site(s) else {
            err(
                format!("{at}.sites[{k}]"),
                format!("app `{}` names site `{s}`, which is not in `sites`", app.id),
            );
            continue;
        };
        match app.target.cloud_kind() {
            Some(kind) => {
                let n = site
                    .clouds
                    .iter()
                    .filter_map(|c| i.cloud(c))
                    .filter(|c| c.kind == kind)
                    .count();
                if n != 1 {
                    err(
                        format!("{at}.sites[{k}]"),
                        format!(
                            "app `{}` runs on `{}` targets, but site `{s}` has {n} clouds of kind `{}` (exactly one needed)",
                            app.id,
                            app.target.as_str(),
                            kind.as_str()
                        ),
                    );
                }
            }
            None => {
                if site.endpoints.is_empty() {
                    err(
                        format!("{at}.sites[{k}]"),
                        format!(
                            "app `{}` runs over ssh, but site `{s}` has no endpoints",
                            app.id
                        ),
                    );
                }
            }
        }
    }
}

/// An app's target and how its health is checked (the rollout, a command, a URL).
fn check_app_health(at: &str, app: &App, i: &Inventory, err: &mut impl FnMut(String, String)) {
    if app.target == TargetKind::Rds {
        err(
            format!("{at}.target"),
            "`rds` is where `databases` live, not an app target (use `local`, `ssh` or `docker`)"
                .into(),
        );
    }
    check_kubernetes_app(at, app, i, err);
    // A Kubernetes app is healthy when its rollout is: the workloads' own probes decide.
    let docker_checked = app.docker.as_ref().is_some_and(|d| d.healthcheck.is_some())
        || app.target == TargetKind::Kubernetes;
    match (&app.health_check.http, app.health_check.command.is_empty()) {
        (Some(_), _) | (None, false) if app.target == TargetKind::Kubernetes => err(
            format!("{at}.health_check"),
            "a kubernetes app is healthy when its rollout is (readiness probes in the manifests); leave `health_check` out".into(),
        ),
        (None, true) if !docker_checked => err(
            format!("{at}.health_check"),
            if app.target == TargetKind::Docker {
                "needs `command` or `http` (run inside the container), or give `docker.healthcheck`".into()
            } else {
                "needs `command` or `http`".into()
            },
        ),
        (Some(_), false) => err(
            format!("{at}.health_check"),
            "has both `command` and `http`; choose one".into(),
        ),
        (Some(url), true) if !(url.starts_with("http://") || url.starts_with("https://")) => {
            err(
                format!("{at}.health_check.http"),
                format!("`{url}` is not an http:// or https:// URL"),
            );
        }
        _ => {}
    }
}

/// An app's health deadline, restart command, releases kept and dependencies.
fn check_app_limits(at: &str, app: &App, i: &Inventory, err: &mut impl FnMut(String, String)) {
    if app.health_check.timeout_seconds == 0 {
        err(
            format!("{at}.health_check.timeout_seconds"),
            "must be at least 1".into(),
        );
    }
    if app.restart.as_ref().is_some_and(Vec::is_empty) {
        err(
            format!("{at}.restart"),
            "is empty; leave it out for no restart".into(),
        );
    }
    if app.keep_releases < 2 {
        err(
            format!("{at}.keep_releases"),
            "must be at least 2, or back-out has nothing to return to".into(),
        );
    }
    for (k, d) in app.depends_on.iter().enumerate() {
        if d == &app.id {
            err(
                format!("{at}.depends_on[{k}]"),
                "an app cannot depend on itself".into(),
            );
        } else if i.app(d).is_none() {
            err(
                format!("{at}.depends_on[{k}]"),
                format!("app `{}` depends on `{d}`, which is not in `apps`", app.id),
            );
        }
    }
}

/// An app's configuration destinations, environment and secret names and references.
fn check_app_files(at: &str, app: &App, err: &mut impl FnMut(String, String)) {
    for (k, c) in app.config.iter().enumerate() {
        if app.target == TargetKind::Docker {
            if !c.dest.starts_with('/') || c.dest.split('/').any(|p| p == "..") {
                err(
                    format!("{at}.config[{k}].dest"),
                    format!(
                        "`{}`: a docker app's files are copied into the container; give an absolute path without `..`",
                        c.dest
                    ),
                );
            }
        } else if let Err(m) = check_relative(&c.dest) {
            err(format!("{at}.config[{k}].dest"), m);
        }
    }
    for (field, names) in [("env", app.env.keys()), ("secrets", app.secrets.keys())] {
        for name in names {
            if !crate::secret::is_env_name(name) {
                err(
                    format!("{at}.{field}.{name}"),
                    format!(
                        "`{}` is not an environment variable name: use letters, digits and `_`, not starting with a digit",
                        name.escape_debug()
                    ),
                );
            }
        }
    }
    for (name, value) in &app.secrets {
        if let Err(e) = SecretRef::parse(value) {
            err(format!("{at}.secrets.{name}"), e.to_string());
        }
        if app.env.contains_key(name) {
            err(
                format!("{at}.secrets.{name}"),
                format!("`{name}` is in both `env` and `secrets`"),
            );
        }
    }
}

/// Databases and buckets live in `aws` clouds and on known sites.
fn check_data_stores(i: &Inventory, err: &mut impl FnMut(String, String)) {
    for (what, list) in [
        (
            "databases",
            i.databases
                .iter()
                .filter(|d| d.is_rds())
                .map(|d| (d.cloud.as_str(), d.site.as_deref()))
                .collect::<Vec<_>>(),
        ),
        (
            "buckets",
            i.buckets
                .iter()
                .map(|b| (b.cloud.as_str(), b.site.as_deref()))
                .collect(),
        ),
    ] {
        // Positions in the file: databases that are not RDS were left out above.
        let positions: Vec<usize> = match what {
            "databases" => (0..i.databases.len())
                .filter(|&n| i.databases[n].is_rds())
                .collect(),
            _ => (0..list.len()).collect(),
        };
        for (n, (cloud, site)) in positions.into_iter().zip(list) {
            match i.cloud(cloud) {
                None => err(
                    format!("{what}[{n}].cloud"),
                    format!("cloud `{cloud}` is not in `clouds`"),
                ),
                Some(c) if c.kind != CloudKind::Aws => err(
                    format!("{what}[{n}].cloud"),
                    format!(
                        "cloud `{cloud}` is of kind `{}`; {what} live in `aws` clouds",
                        c.kind.as_str()
                    ),
                ),
                Some(_) => {}
            }
            if let Some(s) = site
                && i.site(s).is_none()
            {
                err(
                    format!("{what}[{n}].site"),
                    format!("site `{s}` is not in `sites`"),
                );
            }
        }
    }
}

/// A plan file's format version and name.
fn check_header(version: u32, name: &str, err: &mut impl FnMut(String, String)) {
    if version != FORMAT_VERSION {
        err(
            "version".into(),
            format!(
                "unsupported plan format version {version} (this ferry reads version {FORMAT_VERSION})"
            ),
        );
    }
    if name.trim().is_empty() {
        err("name".into(), "is empty".into());
    }
}

/// Validates a release plan against a (separately validated) inventory.
pub fn release_plan(plan: &Loaded<ReleasePlan>, inv: &Inventory) -> Diagnostics {
    let mut out = Diagnostics::default();
    let p = &plan.value;
    let mut err = |path: String, msg: String| out.push(plan.problem(&path, msg));

    check_header(p.version, &p.name, &mut err);
    if p.releases.is_empty() && p.retire.is_empty() {
        err(
            "releases".into(),
            "the plan releases nothing (and retires nothing)".into(),
        );
    }
    check_releases(p, inv, &mut err);
    lines::check_retire(p, inv, &mut err);
    lines::check_hooks(p, inv, &mut err);
    if p.waves.is_empty() {
        err("waves".into(), "the plan has no wave".into());
    }
    check_gates(p, inv, &mut err);
    check_waivers(p, inv, &mut err);
    check_snapshots(p, inv, &mut err);
    check_waves(p, inv, &mut err);
    out
}

/// Each release names an inventory app, once, with a valid version.
fn check_releases(p: &ReleasePlan, inv: &Inventory, err: &mut impl FnMut(String, String)) {
    let mut seen = BTreeSet::new();
    for (n, r) in p.releases.iter().enumerate() {
        if !seen.insert(r.app.as_str()) {
            err(
                format!("releases[{n}].app"),
                format!("app `{}` is released twice", r.app),
            );
        }
        lines::check_release_app(
            &format!("releases[{n}]"),
            &r.app,
            Some(&r.version),
            inv,
            err,
        );
        if let Err(m) = check_version(&r.version) {
            err(format!("releases[{n}].version"), m);
        } else if let Some(l) = inv.app(&r.app).and_then(|a| a.lifecycle.as_ref())
            && let Err(m) = crate::versions::id::parse(l.scheme, &r.version)
        {
            err(format!("releases[{n}].version"), m);
        }
    }
}

/// Gates: named once, before a wave of the plan, for a role some approver holds.
fn check_gates(p: &ReleasePlan, inv: &Inventory, err: &mut impl FnMut(String, String)) {
    let mut gate_names = BTreeSet::new();
    for (n, g) in p.gates.iter().enumerate() {
        if !gate_names.insert(g.name.as_str()) {
            err(
                format!("gates[{n}].name"),
                format!("gate `{}` is named twice", g.name),
            );
        }
        if !p.waves.iter().any(|w| w.name == g.before_wave) {
            err(
                format!("gates[{n}].before_wave"),
                format!("wave `{}` is not in this plan's `waves`", g.before_wave),
            );
        }
        if !inv.approvers.iter().any(|a| a.roles.contains(&g.role)) {
            err(
                format!("gates[{n}].role"),
                format!(
                    "no approver in the inventory holds role `{}`: nobody could approve this gate",
                    g.role
                ),
            );
        }
    }
}

/// Waivers name inventory endpoints and say why.
fn check_waivers(p: &ReleasePlan, inv: &Inventory, err: &mut impl FnMut(String, String)) {
    for (n, w) in p.waivers.iter().enumerate() {
        if inv.endpoint(&w.endpoint).is_none() {
            err(
                format!("waivers[{n}].endpoint"),
                format!(
                    "endpoint `{}` is not in the inventory's `endpoints`",
                    w.endpoint
                ),
            );
        }
        if w.reason.trim().len() < 10 {
            err(format!("waivers[{n}].reason"), "say why the shortfall is acceptable (at least 10 characters): the waiver goes into the ledger".into());
        }
    }
}

/// Pre-change snapshots: of inventory databases, placed before a wave, with a deadline.
fn check_snapshots(p: &ReleasePlan, inv: &Inventory, err: &mut impl FnMut(String, String)) {
    for (n, req) in p.snapshots.iter().enumerate() {
        let at = format!("snapshots[{n}]");
        let Some(db) = inv.database(&req.database) else {
            err(
                format!("{at}.database"),
                format!(
                    "database `{}` is not in the inventory's `databases`",
                    req.database
                ),
            );
            continue;
        };
        if !db.is_rds() {
            err(
                format!("{at}.database"),
                format!(
                    "database `{}` is not an RDS instance: ferry snapshots RDS instances only",
                    db.id
                ),
            );
        }
        match &req.before_wave {
            Some(w) if !p.waves.iter().any(|x| &x.name == w) => err(
                format!("{at}.before_wave"),
                format!("wave `{w}` is not in this plan's `waves`"),
            ),
            Some(_) => {}
            None => {
                let placed = db
                    .site
                    .as_deref()
                    .is_some_and(|s| p.waves.iter().any(|w| w.sites.iter().any(|x| x == s)));
                if !placed {
                    err(
                        format!("{at}.database"),
                        format!(
                            "database `{}` belongs to no site of this plan's waves: say which wave the snapshot precedes (`before_wave`)",
                            db.id
                        ),
                    );
                }
            }
        }
        if req.timeout_seconds == 0 {
            err(format!("{at}.timeout_seconds"), "must be at least 1".into());
        }
    }
}

/// Waves: named once, not empty, each site in one wave and hosting an app of the plan.
fn check_waves(p: &ReleasePlan, inv: &Inventory, err: &mut impl FnMut(String, String)) {
    let mut wave_names = BTreeSet::new();
    let mut site_wave: BTreeMap<&str, &str> = BTreeMap::new();
    for (w, wave) in p.waves.iter().enumerate() {
        let at = format!("waves[{w}]");
        if !wave_names.insert(wave.name.as_str()) {
            err(
                format!("{at}.name"),
                format!("wave name `{}` is used twice", wave.name),
            );
        }
        if wave.sites.is_empty() {
            err(
                format!("{at}.sites"),
                format!("wave `{}` has no site", wave.name),
            );
        }
        if wave.max_parallel == 0 {
            err(format!("{at}.max_parallel"), "must be at least 1".into());
        }
        for (k, s) in wave.sites.iter().enumerate() {
            if inv.site(s).is_none() {
                err(
                    format!("{at}.sites[{k}]"),
                    format!("site `{s}` is not in the inventory's `sites`"),
                );
                continue;
            }
            if let Some(prev) = site_wave.insert(s, &wave.name) {
                err(
                    format!("{at}.sites[{k}]"),
                    format!("site `{s}` is already in wave `{prev}`"),
                );
            }
            let hosts_any = p
                .releases
                .iter()
                .map(|r| &r.app)
                .chain(p.retire.iter().map(|r| &r.app))
                .filter_map(|a| inv.app(a))
                .any(|a| a.sites.iter().any(|x| x == s));
            let plan_empty = p.releases.is_empty() && p.retire.is_empty();
            if !hosts_any && !plan_empty {
                err(
                    format!("{at}.sites[{k}]"),
                    format!("site `{s}` hosts none of the apps this plan releases"),
                );
            }
        }
    }
}

fn check_ids(what: &str, ids: &[&str], err: &mut impl FnMut(String, String)) {
    let mut seen = BTreeSet::new();
    for (n, id) in ids.iter().enumerate() {
        if !is_identifier(id) {
            err(
                format!("{what}[{n}].id"),
                format!(
                    "`{id}` is not a valid id (lowercase letters, digits, `-`, `_`, `.`; starting with a letter or digit)"
                ),
            );
        }
        if !seen.insert(*id) {
            err(
                format!("{what}[{n}].id"),
                format!("duplicate id `{id}` in `{what}`"),
            );
        }
    }
}

/// Ids end up in file names and paths on targets: keep them to a safe alphabet.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        && !s.contains("..")
}

/// Versions name release directories: letters, digits and `.-_+`, no `..`.
pub fn check_version(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
        && !v.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{v}` is not a valid version (letters, digits, `.`, `-`, `_`, `+`)"
        ))
    }
}

fn check_relative(p: &str) -> Result<(), String> {
    let path = std::path::Path::new(p);
    if p.is_empty()
        || path.is_absolute()
        || path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        Err(format!(
            "`{p}` must be a relative path inside the release, without `..`"
        ))
    } else {
        Ok(())
    }
}

fn parse_hh_mm(s: &str) -> Option<(u32, u32)> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some((h, m))
}

fn check_docker_cloud(
    at: &str,
    id: &str,
    d: &crate::model::DockerCloud,
    err: &mut impl FnMut(String, String),
) {
    let tcp = d.host.starts_with("tcp://") || d.host.starts_with("https://");
    if !(tcp || d.host.starts_with("unix://")) {
        err(
            format!("{at}.docker.host"),
            format!("`{}` is neither unix://PATH nor tcp://HOST:PORT", d.host),
        );
    }
    if tcp && d.tls.is_none() {
        err(
            format!("{at}.docker"),
            format!(
                "cloud `{id}` reaches Docker over TCP without `tls`: the Engine API is root on that host, so ferry only speaks to it with client certificates"
            ),
        );
    }
    if let Some(t) = &d.tls {
        for (what, r) in [("ca", &t.ca), ("cert", &t.cert), ("key", &t.key)] {
            match SecretRef::parse(r) {
                Err(e) => err(format!("{at}.docker.tls.{what}"), e.to_string()),
                Ok(SecretRef::File(_)) => {}
                Ok(_) => err(
                    format!("{at}.docker.tls.{what}"),
                    "must be a `file:` reference (the TLS client reads it from a file)".into(),
                ),
            }
        }
    }
    if d.timeout_seconds == 0 {
        err(
            format!("{at}.docker.timeout_seconds"),
            "must be at least 1".into(),
        );
    }
    let mut servers = std::collections::BTreeSet::new();
    for (n, r) in d.registries.iter().enumerate() {
        let here = format!("{at}.docker.registries[{n}]");
        if r.server.is_empty() || r.server.contains("://") || r.server.contains('/') {
            err(
                format!("{here}.server"),
                format!(
                    "`{}` is not a registry host as images name it (`ghcr.io`, `harbor.lab:5000`; no scheme or path)",
                    r.server
                ),
            );
        } else if !servers.insert(r.server.as_str()) {
            err(
                format!("{here}.server"),
                format!("`{}` is listed twice", r.server),
            );
        }
        if let Err(e) = SecretRef::parse(&r.password) {
            err(
                format!("{here}.password"),
                format!(
                    "{e} (a registry password is an `env:` or `file:` reference, never written here)"
                ),
            );
        }
        if r.username.trim().is_empty() {
            err(format!("{here}.username"), "is empty".into());
        }
    }
}

/// A Kubernetes app's section: present exactly for `target: kubernetes`, with manifests and a
/// namespace that is a DNS label on every site.
fn check_kubernetes_app(
    at: &str,
    app: &crate::model::App,
    i: &Inventory,
    err: &mut impl FnMut(String, String),
) {
    let Some(k) = &app.kubernetes else {
        if app.target == TargetKind::Kubernetes {
            err(
                at.to_owned(),
                format!(
                    "app `{}` runs on kubernetes and needs a `kubernetes` section (namespace, manifests)",
                    app.id
                ),
            );
        }
        return;
    };
    if app.target != TargetKind::Kubernetes {
        err(
            format!("{at}.kubernetes"),
            format!(
                "app `{}` runs on `{}`; a `kubernetes` section does not belong here",
                app.id,
                app.target.as_str()
            ),
        );
        return;
    }
    if k.manifests.is_empty() {
        err(
            format!("{at}.kubernetes.manifests"),
            "names no template".into(),
        );
    }
    for (n, m) in k.manifests.iter().enumerate() {
        if m.trim().is_empty() {
            err(format!("{at}.kubernetes.manifests[{n}]"), "is empty".into());
        }
    }
    if k.rollout_timeout_seconds == 0 {
        err(
            format!("{at}.kubernetes.rollout_timeout_seconds"),
            "must be at least 1".into(),
        );
    }
    for site in app.sites.iter().filter(|s| i.site(s).is_some()) {
        let ns = k.namespace_for(site);
        if let Err(why) = crate::kubernetes::check_dns_label(&ns) {
            err(
                format!("{at}.kubernetes.namespace"),
                format!("`{ns}` (site `{site}`) is not a namespace name: {why}"),
            );
            break;
        }
    }
}

fn check_docker_app(at: &str, d: &crate::model::DockerApp, err: &mut impl FnMut(String, String)) {
    if d.image.trim().is_empty() {
        err(format!("{at}.docker.image"), "is empty".into());
    } else if !d.image.contains("{version}") && !d.image.contains('@') {
        err(
            format!("{at}.docker.image"),
            format!(
                "`{}` does not contain `{{version}}`: every version would run the same image",
                d.image
            ),
        );
    }
    for (k, p) in d.ports.iter().enumerate() {
        if let Err(m) = crate::container::parse_port(p) {
            err(format!("{at}.docker.ports[{k}]"), m);
        }
    }
    if !d.ports.is_empty() && d.strategy == crate::model::UpdateOrder::StartFirst {
        err(
            format!("{at}.docker.strategy"),
            "with published `ports` the old and new containers cannot run side by side; set `strategy: stop-first`, or publish through a network alias".into(),
        );
    }
    for (k, v) in d.volumes.iter().enumerate() {
        if let Err(m) = crate::container::parse_volume(v) {
            err(format!("{at}.docker.volumes[{k}]"), m);
        }
    }
    if d.cpus.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
        err(format!("{at}.docker.cpus"), "must be above 0".into());
    }
    if d.memory_mb == Some(0) {
        err(
            format!("{at}.docker.memory_mb"),
            "must be at least 1".into(),
        );
    }
    if let Some(h) = &d.healthcheck
        && h.test.is_empty()
    {
        err(format!("{at}.docker.healthcheck.test"), "is empty".into());
    }
    if d.command.as_ref().is_some_and(Vec::is_empty) {
        err(
            format!("{at}.docker.command"),
            "is empty; leave it out to run the image's command".into(),
        );
    }
}

/// The first dependency cycle among apps, as a list of ids ending where it started.
fn dependency_cycle(inv: &Inventory) -> Option<Vec<String>> {
    fn visit<'a>(
        inv: &'a Inventory,
        id: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|p| *p == id) {
            let mut cycle: Vec<String> = path[start..].iter().map(|s| (*s).to_owned()).collect();
            cycle.push(id.to_owned());
            return Some(cycle);
        }
        if done.contains(id) {
            return None;
        }
        path.push(id);
        if let Some(app) = inv.app(id) {
            for d in &app.depends_on {
                if d != id
                    && let Some(c) = visit(inv, d, path, done)
                {
                    return Some(c);
                }
            }
        }
        path.pop();
        done.insert(id);
        None
    }
    let mut done = BTreeSet::new();
    inv.apps
        .iter()
        .find_map(|a| visit(inv, &a.id, &mut Vec::new(), &mut done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["a", "clinic-a", "ep_1", "x.y"] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in ["", "A", "-a", "a/b", "a..b", "a b"] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn versions() {
        for ok in ["1.0.0", "2.1.0-rc.1", "3+build.7", "v2"] {
            assert!(check_version(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".1", "1/2", "1..2", "a b"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_of_day() {
        assert_eq!(parse_hh_mm("22:00"), Some((22, 0)));
        assert_eq!(parse_hh_mm("24:00"), None);
        assert_eq!(parse_hh_mm("7:00"), None);
    }
}

#[cfg(test)]
mod snapshot_tests {
    use crate::load::{self, SourceFile};

    fn check(inventory: &str, plan: Option<&str>) -> String {
        let inv = match load::parse_inventory(SourceFile::new("inventory.yaml", inventory)) {
            Ok(i) => i,
            Err(d) => return d.to_string(),
        };
        let mut d = super::inventory(&inv);
        if let Some(p) = plan {
            match load::parse_release_plan(SourceFile::new("plan.yaml", p)) {
                Ok(p) => d.extend(super::release_plan(&p, &inv.value)),
                Err(e) => d.extend(e),
            }
        }
        match d.into_result() {
            Ok(()) => "ok".into(),
            Err(d) => d.to_string(),
        }
    }

    const GOOD: &str = r#"version: 1
sites:
  - id: clinic-a
    tier: prod
    clouds: [local]
    maintenance_window: { days: [sat], start: "22:00", duration_minutes: 60, timezone: UTC }
clouds:
  - id: local
    kind: local
    local: { root: /tmp/x }
apps:
  - id: api
    version: 1.0.0
    artifact: "a/{version}"
    target: local
    sites: [clinic-a]
    health_check: { command: [true] }
  - id: web
    version: 1.0.0
    artifact: "w/{version}"
    target: local
    sites: [clinic-a]
    health_check: { command: [true] }
    depends_on: [api]
    secrets: { DB_PASSWORD: "env:DB_PASSWORD" }
"#;

    /// Each case: a name, an inventory, an optional plan. The snapshot is what `validate` says.
    const CASES: &[(&str, &str, Option<&str>)] = &[
        ("good_inventory", GOOD, None),
        (
            "unknown_key",
            "version: 1\nsites:\n  - id: a\n    tier: prod\n    colour: blue\n",
            None,
        ),
        (
            "wrong_enum",
            "version: 1\nsites:\n  - id: a\n    tier: production\n",
            None,
        ),
        ("missing_field", "version: 1\nsites:\n  - id: a\n", None),
        ("yaml_syntax", "version: 1\nsites: [\n", None),
        (
            "many_cross_reference_problems",
            r#"version: 2
sites:
  - id: clinic-a
    tier: prod
    clouds: [nope]
    endpoints: [ep-missing]
    maintenance_window: { days: [], start: "25:00", duration_minutes: 0, timezone: UTC }
  - id: clinic-a
    tier: dev
  - id: Bad/Id
    tier: dev
clouds:
  - id: aws-main
    kind: aws
    local: { root: /x }
apps:
  - id: web
    version: "../1"
    artifact: x
    target: local
    sites: [clinic-a, zz]
    health_check: { command: [], timeout_seconds: 0 }
    depends_on: [web, ghost]
    keep_releases: 1
    config: [{ template: t.tera, dest: ../etc/passwd }]
    secrets: { PW: hunter2 }
databases:
  - { id: db, cloud: nowhere, engine: postgres, identifier: db1 }
"#,
            None,
        ),
        (
            "dependency_cycle",
            "version: 1\nsites: [{id: s, tier: dev, clouds: [l]}]\nclouds: [{id: l, kind: local, local: {root: r}}]\napps:\n  - {id: a, version: '1', artifact: x, target: local, sites: [s], health_check: {command: [t]}, depends_on: [b]}\n  - {id: b, version: '1', artifact: x, target: local, sites: [s], health_check: {command: [t]}, depends_on: [a]}\n",
            None,
        ),
        (
            "docker_problems",
            r#"version: 1
sites:
  - { id: lab, tier: dev, clouds: [remote] }
  - { id: lab2, tier: dev, clouds: [sock] }
clouds:
  - id: remote
    kind: docker
    docker: { host: "tcp://10.0.0.5:2375", timeout_seconds: 0 }
  - id: sock
    kind: docker
    docker:
      host: "unix:///var/run/docker.sock"
      tls: { ca: "env:CA", cert: "file:c.pem", key: "file:k.pem" }
apps:
  - id: web
    version: 1.0.0
    artifact: "w/{version}"
    target: docker
    sites: [lab]
    config: [{ template: t.tera, dest: etc/web.conf }]
    docker:
      image: lab/web:latest
      ports: ["8080:80", "80", "1:2/sctp"]
      volumes: ["data:/data", "data:relative", "bad name:/x"]
      cpus: 0
  - id: api
    version: 1.0.0
    target: docker
    sites: [lab2]
  - id: job
    version: 1.0.0
    artifact: "j/{version}"
    target: local
    sites: [lab2]
    health_check: { command: [true] }
    docker: { image: "x:{version}" }
"#,
            None,
        ),
        (
            "plan_problems",
            GOOD,
            Some(
                r#"version: 1
kind: release
name: r1
releases:
  - { app: web, version: 2.0.0 }
  - { app: web, version: 2.0.1 }
  - { app: ghost, version: "1" }
waves:
  - { name: canary, sites: [clinic-a], max_parallel: 0 }
  - { name: canary, sites: [clinic-a, nowhere] }
  - { name: empty, sites: [] }
on_failure: backout
"#,
            ),
        ),
        (
            "plan_unknown_policy",
            GOOD,
            Some(
                "version: 1\nkind: release\nname: r\nreleases: [{app: web, version: '2'}]\nwaves: [{name: w, sites: [clinic-a]}]\non_failure: retry\n",
            ),
        ),
    ];

    #[test]
    fn validation_messages() {
        for (name, inventory, plan) in CASES {
            insta::assert_snapshot!(*name, check(inventory, *plan));
        }
    }

    #[test]
    fn secret_values_are_never_echoed() {
        let out = check(CASES[5].1, None);
        assert!(!out.contains("hunter2"), "{out}");
    }
}

#[cfg(test)]
mod aws_tests {
    use crate::load::{self, SourceFile};

    const INV: &str = r#"version: 1
sites:
  - { id: a, tier: prod, clouds: [l] }
  - { id: b, tier: prod, clouds: [l] }
clouds:
  - { id: l, kind: local, local: { root: r } }
  - id: aws1
    kind: aws
    aws: { account: "12345", region: "", endpoint_url: "localhost:5000", access_key_id: "AKIAEXAMPLE", max_attempts: 0 }
  - id: aws2
    kind: aws
    aws: { account: "123456789012", region: us-east-1, session_token: "env:T", profile: ops }
apps:
  - { id: web, version: "1", artifact: x, target: local, sites: [a, b], health_check: { command: [t] } }
  - { id: db, version: "1", artifact: x, target: rds, sites: [a], health_check: { command: [t] } }
databases:
  - { id: ehr, cloud: aws1, engine: postgres, identifier: ehr-prod, site: a }
  - { id: nosite, cloud: aws1, engine: postgres, identifier: x }
  - { id: lake, cloud: aws1, engine: aurora-postgresql, identifier: lake-1 }
"#;

    const PLAN: &str = r#"version: 1
kind: release
name: r
releases: [{ app: web, version: "2" }]
waves: [{ name: one, sites: [a] }, { name: two, sites: [b] }]
on_failure: halt
snapshots:
  - { database: ehr }
  - { database: nosite }
  - { database: ghost }
  - { database: ehr, before_wave: three, timeout_seconds: 0 }
"#;

    #[test]
    fn aws_clouds_and_snapshot_requirements_are_checked_and_located() {
        let inv = load::parse_inventory(SourceFile::new("inventory.yaml", INV)).unwrap();
        let mut d = super::inventory(&inv);
        let p = load::parse_release_plan(SourceFile::new("plan.yaml", PLAN)).unwrap();
        d.extend(super::release_plan(&p, &inv.value));
        let text = d.into_result().unwrap_err().to_string();
        for expected in [
            "inventory.yaml:9:21: clouds[1].aws.account: `12345` is not an AWS account id (12 digits)",
            "clouds[1].aws.region: is empty",
            "clouds[1].aws.endpoint_url: `localhost:5000` is not an http(s) URL",
            "clouds[1].aws.access_key_id: is not a secret reference",
            "clouds[1].aws: max_attempts and timeout_seconds must be at least 1",
            "clouds[1].aws: access_key_id and secret_access_key go together (or leave both out for the default credential chain)",
            "clouds[2].aws.session_token: a session token belongs to static keys",
            "apps[1].target: `rds` is where `databases` live, not an app target",
            "plan.yaml:9:17: snapshots[1].database: database `nosite` belongs to no site of this plan's waves",
            "snapshots[2].database: database `ghost` is not in the inventory's `databases`",
            "snapshots[3].before_wave: wave `three` is not in this plan's `waves`",
            "snapshots[3].timeout_seconds: must be at least 1",
            "databases[2].engine: `aurora-postgresql` is an Aurora engine",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(
            !text.contains("AKIAEXAMPLE"),
            "a pasted key is never echoed:\n{text}"
        );
        assert!(!text.contains("snapshots[0]"), "{text}");
    }
}

#[cfg(test)]
mod registry_tests {
    use crate::load::{self, SourceFile};

    #[test]
    fn registry_logins_are_checked_and_a_password_is_never_echoed() {
        let inv = r#"version: 1
sites: [{ id: a, tier: prod, clouds: [engine] }]
clouds:
  - id: engine
    kind: docker
    docker:
      registries:
        - { server: "https://ghcr.io", username: bot, password: "env:GHCR_TOKEN" }
        - { server: "harbor.lab:5000", username: "", password: "pl41n-t3xt" }
        - { server: "harbor.lab:5000", username: robot, password: "file:harbor.pw" }
apps: []
"#;
        let loaded = load::parse_inventory(SourceFile::new("i.yaml", inv)).unwrap();
        let all = super::inventory(&loaded).to_string();
        assert!(all.contains("registries[0].server"), "{all}");
        assert!(all.contains("no scheme or path"), "{all}");
        assert!(all.contains("registries[1].password"), "{all}");
        assert!(all.contains("registries[1].username"), "{all}");
        assert!(
            all.contains("registries[2].server") && all.contains("listed twice"),
            "{all}"
        );
        assert!(!all.contains("pl41n-t3xt"), "{all}");
    }
}

#[cfg(test)]
mod lifecycle_tests {
    use crate::load::{self, SourceFile};

    /// Malformed ids, unknown languages, a bad limit and a role nobody holds, in the inventory
    /// and its release plan: every problem located, at once.
    #[test]
    fn lifecycle_problems_are_located_all_at_once() {
        let inv = r#"version: 1
sites: [{ id: a, tier: prod, clouds: [here] }]
clouds: [{ id: here, kind: local, local: { root: /tmp/x } }]
approvers:
  - { name: Dana, roles: [records-officer], public_key: "ed25519:AAAA" }
apps:
  - id: opts
    version: Consultation.xx.v0
    artifact: opts/{version}
    target: local
    sites: [a]
    health_check: { command: ["true"] }
    lifecycle: { scheme: template, max_active_majors: 0, purge_role: librarian }
  - id: api
    version: v3.1
    artifact: api/{version}
    target: local
    sites: [a]
    health_check: { command: ["true"] }
    lifecycle: { purge_role: records-officer }
"#;
        let plan = r#"version: 1
kind: release
name: r
releases:
  - { app: opts, version: lab_results.zz.v2 }
  - { app: api, version: "4.0" }
waves: [{ name: all, sites: [a] }]
on_failure: halt
"#;
        let loaded = load::parse_inventory(SourceFile::new("i.yaml", inv)).unwrap();
        let mut d = super::inventory(&loaded);
        let p = load::parse_release_plan(SourceFile::new("p.yaml", plan)).unwrap();
        d.extend(super::release_plan(&p, &loaded.value));
        let all = d.to_string();
        for want in [
            "i.yaml:8:14: apps[0].version: `Consultation.xx.v0`: the concept `Consultation` is not snake_case",
            "; `xx` is not an ISO 639-1 language code",
            "; the version part `v0` is not `v` and a major number from 1",
            "apps[0].lifecycle.max_active_majors",
            "apps[0].lifecycle.purge_role",
            "no approver of the inventory holds role `librarian`",
            "apps[1].version",
            "`v3.1` is not a semantic version",
            "p.yaml:5:27: releases[0].version",
            "`zz` is not an ISO 639-1",
            "releases[1].version",
            "`4.0` is not a semantic version",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
    }
}

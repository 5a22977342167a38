//! The Kubernetes driver (kube-rs): releases of an app's manifests into its namespace, with a
//! release record (a Secret) per revision, server-side apply under the field manager `ferry`,
//! pruning, rollout waits and rollback from the cluster's own history.
//!
//! What to apply, in which order, what to prune and whether a rollout is done are decided by
//! the pure `crate::kubernetes`; this module talks to the API server. Every call is retried
//! with jittered backoff on 429, 5xx and connection errors (each retry printed); a 409 from
//! server-side apply names the field manager that owns the field.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

mod net;

use super::{Driver, DriverError, ReleaseBundle, TargetSpec};
use crate::kubernetes::diff::{self, ChangeKind, ObjectChange};
use crate::kubernetes::release::{self, History, Record, Status};
use crate::kubernetes::rollout::{self, Rollout};
use crate::kubernetes::{self as k8s, Manifest, ObjectId, Placement};
use crate::model::{KubernetesApp, KubernetesCloud};
use crate::plan::Undo;
use crate::target::Observed;

/// Progress lines (rollout waits, retries, prunes) go here.
pub type Say = Arc<dyn Fn(String) + Send + Sync>;

/// A cluster's client, its API server's URL and the proxy in between (if any).
type Conn = (kube::Client, String, Option<String>);

pub struct KubeDriver {
    /// Per cloud: the client and the API server's URL.
    clients: Mutex<BTreeMap<String, Conn>>,
    /// Between two looks at a rollout (`FERRY_KUBE_POLL_MS`, default 2 s).
    poll: Duration,
    /// First retry delay; doubled each attempt, capped, fully jittered.
    backoff: Duration,
    say: Say,
}

impl Default for KubeDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl KubeDriver {
    pub fn new() -> Self {
        let poll = std::env::var("FERRY_KUBE_POLL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(2), Duration::from_millis);
        Self {
            clients: Mutex::default(),
            poll,
            backoff: Duration::from_millis(250),
            say: Arc::new(|l| eprintln!("{l}")),
        }
    }

    pub fn with_say(mut self, say: Say) -> Self {
        self.say = say;
        self
    }
}

/// What one look at a workload found.
enum Look {
    Done,
    Progressing(String, Value),
    /// A retryable API error: still waiting.
    Unanswered(String),
}

/// One app on one cluster: where, with what client.
struct Cx<'a> {
    spec: &'a TargetSpec,
    cloud: &'a KubernetesCloud,
    app: &'a KubernetesApp,
    ns: String,
    client: kube::Client,
    server: String,
    /// The proxy the client goes through (user and password left out).
    proxy: Option<String>,
}

impl Cx<'_> {
    fn place(&self) -> &str {
        &self.spec.target.id
    }
    fn placement(&self) -> Placement<'_> {
        Placement {
            app: &self.spec.app.id,
            site: &self.spec.target.site,
            namespace: &self.ns,
        }
    }
    fn fail(&self, action: &'static str, message: String) -> DriverError {
        DriverError::Failed {
            target: self.place().to_owned(),
            action,
            message,
        }
    }
}

/// A kube error as a sentence; transport errors keep their cause chain (the top says little).
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => {
            let mut m = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                let t = s.to_string();
                if !m.contains(&t) {
                    m.push_str(": ");
                    m.push_str(&t);
                }
                src = s.source();
            }
            m
        }
    }
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// 429, 5xx and transport failures are worth another attempt; anything else is an answer.
fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// The wait an API server asked for (`Retry-After`, carried into the Status by
/// `net::carry_retry_after`), capped at a minute.
fn retry_after(e: &kube::Error) -> Option<Duration> {
    let kube::Error::Api(s) = e else { return None };
    let secs = s.details.as_ref()?.retry_after_seconds;
    (secs > 0).then(|| Duration::from_secs(u64::from(secs).min(60)))
}

/// The credentials a configuration would send to a plain `http://` server (kube-rs sends a
/// bearer token over http; client-go, and so kubectl, does not).
fn cleartext_credentials(config: &kube::Config) -> Option<&'static str> {
    if config.cluster_url.scheme_str() != Some("http") {
        return None;
    }
    let a = &config.auth_info;
    if a.token.is_some() || a.token_file.is_some() {
        Some("a bearer token")
    } else if a.exec.is_some() || a.auth_provider.is_some() {
        Some("a credential plugin's token")
    } else if a.password.is_some() {
        Some("a password")
    } else {
        None
    }
}

/// A run without a terminal (CI): exec credential plugins (EKS, GKE, kubelogin) are told so
/// (`interactiveMode: Never`: stdin closed, `KUBERNETES_EXEC_INFO` says not interactive), so a
/// plugin that would prompt fails at once instead of hanging the job; one that can only work
/// with a terminal (`Always`) is refused by name, as client-go does.
fn no_prompting(kc: &mut Kubeconfig, context: Option<&str>) -> Result<(), String> {
    use kube::config::ExecInteractiveMode;
    let context = context.or(kc.current_context.as_deref()).map(str::to_owned);
    let user_of = kc
        .contexts
        .iter()
        .find(|c| Some(&c.name) == context.as_ref())
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.user.clone());
    for user in kc
        .auth_infos
        .iter_mut()
        .filter(|u| user_of.as_ref().is_none_or(|n| *n == u.name))
    {
        let Some(exec) = user.auth_info.as_mut().and_then(|a| a.exec.as_mut()) else {
            continue;
        };
        if matches!(exec.interactive_mode, Some(ExecInteractiveMode::Always)) {
            return Err(format!(
                "user `{}` gets its credentials from `{}`, which needs a terminal (interactiveMode: Always), and this run has none; log in first or use a non-interactive credential",
                user.name,
                exec.command.as_deref().unwrap_or("?")
            ));
        }
        exec.interactive_mode = Some(ExecInteractiveMode::Never);
    }
    Ok(())
}

/// The proxy a kubeconfig's cluster names for `context` (the current one if None).
fn kubeconfig_proxy(kc: &Kubeconfig, context: Option<&str>) -> Option<String> {
    let context = context.or(kc.current_context.as_deref())?;
    let cluster = kc
        .contexts
        .iter()
        .find(|c| c.name == context)?
        .context
        .as_ref()?
        .cluster
        .clone();
    kc.clusters
        .iter()
        .find(|c| c.name == cluster)?
        .cluster
        .as_ref()?
        .proxy_url
        .clone()
        .filter(|p| !p.is_empty())
}

/// The managers and fields of a server-side apply conflict (`conflict with "helm" using
/// apps/v1: .spec.replicas`).
pub fn conflicts(e: &kube::Error) -> Option<Vec<(String, String)>> {
    let kube::Error::Api(s) = e else { return None };
    if s.code != 409 {
        return None;
    }
    let mut out = Vec::new();
    if let Some(d) = &s.details {
        for c in &d.causes {
            if let Some(m) = c.message.split('"').nth(1) {
                out.push((m.to_owned(), c.field.clone()));
            }
        }
    }
    if out.is_empty() {
        for part in s.message.split("conflict with \"").skip(1) {
            let manager = part.split('"').next().unwrap_or_default();
            let field = part.rsplit(": ").next().unwrap_or_default().trim();
            out.push((manager.to_owned(), field.to_owned()));
        }
    }
    (!out.is_empty()).then_some(out)
}

fn resource(id: &ObjectId) -> Result<ApiResource, String> {
    let info = id
        .kind_info()
        .ok_or_else(|| format!("{id}: kind is not one ferry applies"))?;
    let (g, v) = id.group_version();
    Ok(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(g, v, &id.kind),
        info.plural,
    ))
}

fn now() -> String {
    crate::ledger::now()
}

impl KubeDriver {
    async fn cx<'a>(&self, spec: &'a TargetSpec) -> Result<Cx<'a>, DriverError> {
        let fail = |message: String| DriverError::Failed {
            target: spec.target.id.clone(),
            action: "connect",
            message,
        };
        let cloud = spec
            .cloud
            .as_ref()
            .and_then(|c| c.kubernetes.as_ref())
            .ok_or_else(|| fail("the cloud has no `kubernetes` section".into()))?;
        let app = spec
            .app
            .kubernetes
            .as_ref()
            .ok_or_else(|| fail("the app has no `kubernetes` section".into()))?;
        let ns = app.namespace_for(&spec.target.site);
        let cached = self
            .clients
            .lock()
            .expect("clients lock")
            .get(&spec.target.host)
            .cloned();
        let (client, server, proxy) = match cached {
            Some(c) => c,
            None => {
                let c = self.connect(spec, cloud).await.map_err(fail)?;
                self.clients
                    .lock()
                    .expect("clients lock")
                    .insert(spec.target.host.clone(), c.clone());
                c
            }
        };
        Ok(Cx {
            spec,
            cloud,
            app,
            ns,
            server,
            proxy,
            client,
        })
    }

    async fn config(
        &self,
        spec: &TargetSpec,
        cloud: &KubernetesCloud,
    ) -> Result<kube::Config, String> {
        let (mut config, explicit_proxy) = if cloud.in_cluster {
            let c = kube::Config::incluster()
                .map_err(|e| format!("in-cluster configuration is not available: {e}"))?;
            (c, None)
        } else {
            let path = spec
                .base_dir
                .join(cloud.kubeconfig.as_deref().unwrap_or_default());
            let mut kc = Kubeconfig::read_from(&path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            use std::io::IsTerminal;
            if !std::io::stdin().is_terminal() {
                no_prompting(&mut kc, cloud.context.as_deref())
                    .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            }
            let options = KubeConfigOptions {
                context: cloud.context.clone(),
                ..Default::default()
            };
            let explicit_proxy = kubeconfig_proxy(&kc, cloud.context.as_deref());
            let config = kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| {
                    format!(
                        "kubeconfig {}{}: {e}",
                        path.display(),
                        cloud
                            .context
                            .as_deref()
                            .map(|c| format!(" (context `{c}`)"))
                            .unwrap_or_default()
                    )
                })?;
            (config, explicit_proxy)
        };
        // kube's own choice from the environment matches NO_PROXY against the proxy, not the
        // cluster (see net.rs): ferry decides, unless the kubeconfig names a proxy.
        if explicit_proxy.is_none() {
            config.proxy_url = net::proxy_for(&config.cluster_url, |k| std::env::var(k).ok())
                .map(|p| p.parse())
                .transpose()
                .map_err(|e| format!("the proxy in HTTPS_PROXY/HTTP_PROXY is not a URL: {e}"))?;
        }
        if let Some(what) = cleartext_credentials(&config) {
            return Err(format!(
                "the kubeconfig gives {what} for {}, a plain http:// server: they would cross the network in cleartext (kubectl does not send them either); use https://",
                config.cluster_url
            ));
        }
        let t = Duration::from_secs(cloud.timeout_seconds);
        config.connect_timeout = Some(t);
        config.read_timeout = Some(t);
        config.write_timeout = Some(t);
        // ferry retries itself, so that every retry is printed and bounded by max_attempts.
        config.default_retry = false;
        Ok(config)
    }

    async fn connect(&self, spec: &TargetSpec, cloud: &KubernetesCloud) -> Result<Conn, String> {
        // kube's rustls client panics without one process-wide provider (see lib.rs).
        crate::install_crypto_provider();
        let config = self.config(spec, cloud).await?;
        let server = config.cluster_url.to_string();
        let proxy = config.proxy_url.as_ref().map(net::redact_userinfo);
        // Building the client runs the kubeconfig's exec credential plugin (blocking, with no
        // deadline of its own): off the runtime's threads, bounded by the cloud's timeout.
        let t = Duration::from_secs(cloud.timeout_seconds);
        let built =
            tokio::time::timeout(t, tokio::task::spawn_blocking(move || {
                kube::client::ClientBuilder::try_from(config)
            }))
            .await
            .map_err(|_| {
                format!(
                    "the kubeconfig's credentials did not come within {}s (an exec plugin waiting for a login?)",
                    t.as_secs()
                )
            })?
            .map_err(|e| format!("building the client: {e}"))?
            .map_err(|e| describe(&e))?;
        let client = built
            .with_layer(&tower::util::AndThenLayer::new(net::carry_retry_after))
            .build();
        Ok((client, server, proxy))
    }

    /// One API call, retried with backoff on 429, 5xx and transport errors.
    async fn call<T, F, Fut>(&self, cx: &Cx<'_>, what: &str, mut f: F) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let attempts = cx.cloud.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            match f().await {
                Err(e) if retryable(&e) && attempt < attempts => {
                    let asked = retry_after(&e);
                    let delay = asked
                        .unwrap_or_else(|| crate::drivers::backoff_delay(self.backoff, attempt));
                    (self.say)(format!(
                        "  retry   {what} on {}: {}; attempt {}/{attempts} in {} ms{}",
                        cx.place(),
                        describe(&e),
                        attempt + 1,
                        delay.as_millis(),
                        if asked.is_some() {
                            " (the server's Retry-After)"
                        } else {
                            ""
                        }
                    ));
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// A failed call as a driver error: unreachable clusters say where they were looked for.
    fn error(&self, cx: &Cx<'_>, action: &'static str, what: &str, e: &kube::Error) -> DriverError {
        let message = match e {
            kube::Error::HyperError(_) | kube::Error::Service(_) => format!(
                "cannot reach the Kubernetes API of cloud `{}` at {}{} ({what}): {} (gave up after {} attempt(s))",
                cx.spec.target.host,
                cx.server,
                cx.proxy
                    .as_deref()
                    .map(|p| format!(" through proxy {p} (HTTPS_PROXY, HTTP_PROXY or the kubeconfig's proxy-url; a cluster reached directly belongs in NO_PROXY)"))
                    .unwrap_or_default(),
                describe(e),
                cx.cloud.max_attempts
            ),
            _ => match conflicts(e) {
                Some(c) => format!(
                    "{what}: 409 conflict: {} (ferry does not take fields from another field manager; have that manager release them, or remove the field from ferry's manifest)",
                    c.iter()
                        .map(|(m, f)| format!("field {f} is managed by `{m}`"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                None => format!("{what}: {}", describe(e)),
            },
        };
        cx.fail(action, message)
    }

    fn dynamic(&self, cx: &Cx<'_>, id: &ObjectId) -> Result<Api<DynamicObject>, DriverError> {
        let ar = resource(id).map_err(|m| cx.fail("apply", m))?;
        Ok(match &id.namespace {
            Some(ns) => Api::namespaced_with(cx.client.clone(), ns, &ar),
            None => Api::all_with(cx.client.clone(), &ar),
        })
    }

    async fn get(&self, cx: &Cx<'_>, id: &ObjectId) -> Result<Option<Value>, DriverError> {
        let api = self.dynamic(cx, id)?;
        let what = format!("reading {id}");
        let got = self
            .call(cx, &what, || api.get_opt(&id.name))
            .await
            .map_err(|e| self.error(cx, "observe", &what, &e))?;
        Ok(got.map(|o| serde_json::to_value(o).expect("objects serialize")))
    }

    /// Server-side apply of one object as `ferry` (dry-run: the server's answer, nothing
    /// stored).
    async fn ssa(
        &self,
        cx: &Cx<'_>,
        obj: &Value,
        dry_run: bool,
    ) -> Result<Value, (Option<u16>, DriverError)> {
        let id = ObjectId::of(obj).expect("prepared objects have ids");
        let api = self.dynamic(cx, &id).map_err(|e| (None, e))?;
        let mut pp = PatchParams::apply(k8s::FIELD_MANAGER);
        pp.dry_run = dry_run;
        let what = format!("{}applying {id}", if dry_run { "dry-run " } else { "" });
        let patch = Patch::Apply(obj);
        match self
            .call(cx, &what, || api.patch(&id.name, &pp, &patch))
            .await
        {
            Ok(o) => Ok(serde_json::to_value(o).expect("objects serialize")),
            Err(e) => Err((code(&e), self.error(cx, "apply", &what, &e))),
        }
    }

    /// The release history as summaries: one LIST of the record Secrets' metadata (no
    /// payload travels). A record without a summary (written by an older ferry, or too
    /// large for one) is read whole.
    async fn history(&self, cx: &Cx<'_>) -> Result<History, DriverError> {
        let api: Api<Secret> = Api::namespaced(cx.client.clone(), &cx.ns);
        let lp = ListParams::default().labels(&release::selector(&cx.spec.app.id));
        let what = format!("listing release records in namespace {}", cx.ns);
        let list = self
            .call(cx, &what, || api.list_metadata(&lp))
            .await
            .map_err(|e| self.error(cx, "observe", &what, &e))?;
        let mut records = Vec::new();
        for m in list.items {
            let name = m.metadata.name.clone().unwrap_or_default();
            let annotation = m
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(release::SUMMARY_ANNOTATION));
            let summary = match annotation {
                Some(json) => {
                    let label = m
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(release::REVISION_LABEL));
                    let mut s =
                        release::read_summary(json, label.map(String::as_str)).map_err(|m| {
                            cx.fail("observe", format!("release record {}/{name}: {m}", cx.ns))
                        })?;
                    s.resource_version = m.metadata.resource_version.clone();
                    s
                }
                None => self.read_record(cx, &api, &name).await?.summary(),
            };
            records.push(summary);
        }
        Ok(History::new(records))
    }

    /// The whole record the Secret `name` holds (its parts joined and checked).
    async fn read_record(
        &self,
        cx: &Cx<'_>,
        api: &Api<Secret>,
        name: &str,
    ) -> Result<Record, DriverError> {
        let what = format!("reading release record {}/{name}", cx.ns);
        let gone = format!(
            "release record {}/{name} is gone (deleted while it was read)",
            cx.ns
        );
        let s = self.secret(cx, api, &what, name, gone).await?;
        let bytes = self.record_bytes(cx, api, &s).await?;
        let mut r = release::decode(&bytes).map_err(|m| {
            cx.fail(
                "observe",
                format!("release record {}/{name} cannot be read: {m}", cx.ns),
            )
        })?;
        r.resource_version = s.metadata.resource_version.clone();
        Ok(r)
    }

    /// The record a summary of the history stands for, with its objects. It must be the one
    /// listed: changed since (another writer) or unlike its summary (edited outside ferry),
    /// it is refused.
    async fn load(&self, cx: &Cx<'_>, summary: &release::Summary) -> Result<Record, DriverError> {
        let api: Api<Secret> = Api::namespaced(cx.client.clone(), &cx.ns);
        let name = summary.secret_name();
        let r = self.read_record(cx, &api, &name).await?;
        if r.resource_version != summary.resource_version {
            return Err(cx.fail(
                "observe",
                format!(
                    "release record {}/{name} changed since the history was read (resourceVersion {} then, {} now): another ferry run is working on {} here",
                    cx.ns,
                    summary.resource_version.as_deref().unwrap_or("-"),
                    r.resource_version.as_deref().unwrap_or("-"),
                    cx.spec.app.id
                ),
            ));
        }
        if r.summary() != *summary {
            return Err(cx.fail(
                "observe",
                format!(
                    "release record {}/{name}: its `{}` annotation does not describe the record it holds (edited outside ferry); nothing was done with it",
                    cx.ns,
                    release::SUMMARY_ANNOTATION
                ),
            ));
        }
        Ok(r)
    }

    /// The Secret `name`; its absence is the error `missing`.
    async fn secret(
        &self,
        cx: &Cx<'_>,
        api: &Api<Secret>,
        what: &str,
        name: &str,
        missing: String,
    ) -> Result<Secret, DriverError> {
        self.call(cx, what, || api.get_opt(name))
            .await
            .map_err(|e| self.error(cx, "observe", what, &e))?
            .ok_or_else(|| cx.fail("observe", missing))
    }

    /// The encoded record a record Secret holds, its other parts read and checked when the
    /// record was split.
    async fn record_bytes(
        &self,
        cx: &Cx<'_>,
        api: &Api<Secret>,
        s: &Secret,
    ) -> Result<Vec<u8>, DriverError> {
        let data = |s: &Secret| {
            s.data
                .as_ref()
                .and_then(|d| d.get(release::DATA_KEY))
                .map(|b| b.0.clone())
                .unwrap_or_default()
        };
        let name = s.metadata.name.clone().unwrap_or_default();
        let ann = s.metadata.annotations.clone().unwrap_or_default();
        let parts: usize = ann
            .get(release::PARTS_ANNOTATION)
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        if parts <= 1 {
            return Ok(data(s));
        }
        let mut all = vec![data(s)];
        for n in 2..=parts {
            let part = release::part_name(&name, n);
            let what = format!("reading part {n} of release record {}/{name}", cx.ns);
            let missing = format!(
                "release record {}/{name}: its part {part} is missing",
                cx.ns
            );
            let got = self.secret(cx, api, &what, &part, missing).await?;
            all.push(data(&got));
        }
        let sha = ann
            .get(release::SHA256_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        release::join(&all, &sha)
            .map_err(|m| cx.fail("observe", format!("release record {}/{name}: {m}", cx.ns)))
    }

    fn record_secret(
        &self,
        cx: &Cx<'_>,
        name: String,
        labels: BTreeMap<String, String>,
        annotations: Option<BTreeMap<String, String>>,
        bytes: &[u8],
    ) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name),
                namespace: Some(cx.ns.clone()),
                labels: Some(labels),
                annotations,
                ..Default::default()
            },
            type_: Some(release::SECRET_TYPE.into()),
            data: Some([(release::DATA_KEY.to_owned(), ByteString(bytes.to_vec()))].into()),
            ..Default::default()
        }
    }

    /// Writes a record: a new revision's Secret is created (a second writer of the same
    /// revision gets 409 and stops), a known one replaced under the resourceVersion it was
    /// read at (a writer that changed it meanwhile makes this one stop). A record larger than
    /// a Secret holds goes into several (`release::split`), the extra parts first.
    async fn write_record(&self, cx: &Cx<'_>, r: &mut Record) -> Result<(), DriverError> {
        let api: Api<Secret> = Api::namespaced(cx.client.clone(), &cx.ns);
        let name = r.secret_name();
        let encoded = release::encode(r);
        let parts = release::split(&encoded);
        let what = format!(
            "writing release record {}/{name} ({})",
            cx.ns,
            r.status.as_str()
        );
        for (i, part) in parts.iter().enumerate().skip(1) {
            let mut labels = release::labels(r);
            labels.insert(release::OWNER_LABEL.into(), release::PART_OWNER.into());
            let secret =
                self.record_secret(cx, release::part_name(&name, i + 1), labels, None, part);
            let value = serde_json::to_value(&secret).expect("serializes");
            let pp = PatchParams::apply(k8s::FIELD_MANAGER).force();
            let pname = release::part_name(&name, i + 1);
            let patch = Patch::Apply(&value);
            self.call(cx, &what, || api.patch(&pname, &pp, &patch))
                .await
                .map_err(|e| self.error(cx, "record", &what, &e))?;
        }
        let mut annotations = BTreeMap::new();
        if parts.len() > 1 {
            annotations.insert(
                release::PARTS_ANNOTATION.to_owned(),
                parts.len().to_string(),
            );
            annotations.insert(
                release::SHA256_ANNOTATION.to_owned(),
                crate::load::sha256_hex(&encoded),
            );
        }
        if let Some(summary) = release::summary_annotation(r) {
            annotations.insert(release::SUMMARY_ANNOTATION.to_owned(), summary);
        }
        let annotations = (!annotations.is_empty()).then_some(annotations);
        let mut secret =
            self.record_secret(cx, name.clone(), release::labels(r), annotations, parts[0]);
        let pp = kube::api::PostParams {
            field_manager: Some(k8s::FIELD_MANAGER.into()),
            ..Default::default()
        };
        let written = match r.resource_version.clone() {
            None => match self.call(cx, &what, || api.create(&pp, &secret)).await {
                // A create whose answer was lost and was retried finds its own record.
                Err(e) if code(&e) == Some(409) => self
                    .own_record(cx, &api, &name, parts[0])
                    .await?
                    .ok_or_else(|| {
                        cx.fail(
                            "record",
                            format!(
                                "{what}: release record {name} already exists and is not this run's: another ferry run is deploying {} to this cluster now (ferry's lock covers one state directory; use one state for both)",
                                cx.spec.app.id
                            ),
                        )
                    })?,
                r => r.map_err(|e| self.error(cx, "record", &what, &e))?,
            },
            Some(rv) => {
                secret.metadata.resource_version = Some(rv.clone());
                match self.call(cx, &what, || api.replace(&name, &pp, &secret)).await {
                    Err(e) if code(&e) == Some(409) => {
                        return Err(cx.fail(
                            "record",
                            format!(
                                "{what}: release record {name} was changed by another writer since it was read (resourceVersion {rv}): another ferry run is working on {} here; nothing was overwritten",
                                cx.spec.app.id
                            ),
                        ));
                    }
                    r => r.map_err(|e| self.error(cx, "record", &what, &e))?,
                }
            }
        };
        r.resource_version = written.metadata.resource_version;
        Ok(())
    }

    /// The record Secret `name` if it holds exactly `first_part` (this run's own write).
    async fn own_record(
        &self,
        cx: &Cx<'_>,
        api: &Api<Secret>,
        name: &str,
        first_part: &[u8],
    ) -> Result<Option<Secret>, DriverError> {
        let what = format!("reading release record {}/{name}", cx.ns);
        let got = self
            .call(cx, &what, || api.get_opt(name))
            .await
            .map_err(|e| self.error(cx, "record", &what, &e))?;
        Ok(got.filter(|s| {
            s.data
                .as_ref()
                .and_then(|d| d.get(release::DATA_KEY))
                .is_some_and(|b| b.0 == first_part)
        }))
    }

    async fn set_status(
        &self,
        cx: &Cx<'_>,
        r: &mut Record,
        status: Status,
        reason: Option<String>,
    ) -> Result<(), DriverError> {
        r.status = status;
        r.reason = reason;
        r.updated_at = now();
        self.write_record(cx, r).await
    }

    /// The release's objects: rendered templates parsed, placed and ordered.
    fn objects(&self, cx: &Cx<'_>, bundle: &ReleaseBundle) -> Result<Vec<Manifest>, DriverError> {
        let mut all = Vec::new();
        for f in &bundle.files {
            all.extend(
                k8s::parse(&f.dest, &f.contents, &cx.placement())
                    .map_err(|e| cx.fail("render", e.to_string()))?,
            );
        }
        k8s::order(all).map_err(|e| cx.fail("render", e.to_string()))
    }

    async fn namespace_exists(&self, cx: &Cx<'_>) -> Result<bool, DriverError> {
        let id = ObjectId {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            namespace: None,
            name: cx.ns.clone(),
        };
        let Some(ns) = self.get(cx, &id).await? else {
            return Ok(false);
        };
        // A namespace being deleted still answers GET, but refuses every new object (403).
        if ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
            || ns.pointer("/metadata/deletionTimestamp").is_some()
        {
            return Err(cx.fail(
                "namespace",
                format!(
                    "namespace `{}` is being deleted (Terminating since {}): nothing can be created in it until it is gone; wait for its finalizers, or place the app in another namespace",
                    cx.ns,
                    ns.pointer("/metadata/deletionTimestamp")
                        .and_then(Value::as_str)
                        .unwrap_or("an unknown time")
                ),
            ));
        }
        Ok(true)
    }

    /// A cluster-scoped object that another site of the app already owns is refused before
    /// anything is written: applying it would take it over, and one site's prune or uninstall
    /// would delete what the other uses.
    fn check_claim(
        &self,
        cx: &Cx<'_>,
        action: &'static str,
        id: &ObjectId,
        live: &Value,
    ) -> Result<(), DriverError> {
        match k8s::claimed_by_other_site(live, &cx.spec.app.id, &cx.spec.target.site) {
            Some(other) => Err(cx.fail(
                action,
                format!(
                    "{id} is cluster-scoped and already applied for site `{other}` of app {}: every site of the app on this cluster would share it; put the site in its name (`{{{{ site }}}}` in the template)",
                    cx.spec.app.id
                ),
            )),
            None => Ok(()),
        }
    }

    async fn check_claims(&self, cx: &Cx<'_>, objects: &[Value]) -> Result<(), DriverError> {
        for id in objects
            .iter()
            .filter_map(ObjectId::of)
            .filter(|id| id.namespace.is_none())
        {
            if let Some(live) = self.get(cx, &id).await? {
                self.check_claim(cx, "apply", &id, &live)?;
            }
        }
        Ok(())
    }

    /// Workloads whose rollout cannot be waited for are refused before anything is written.
    fn check_waitable<'o>(
        &self,
        cx: &Cx<'_>,
        action: &'static str,
        mut objects: impl Iterator<Item = &'o Value>,
    ) -> Result<(), DriverError> {
        match objects.find_map(rollout::unwaitable) {
            Some(why) => Err(cx.fail(action, why)),
            None => Ok(()),
        }
    }

    /// Applies `objects` as revision `revision` (a record first, pending), prunes what earlier
    /// revisions had and this one does not.
    async fn install(
        &self,
        cx: &Cx<'_>,
        objects: Vec<Value>,
        version: &str,
        plan_id: &str,
        rollback_of: Option<u32>,
    ) -> Result<Record, DriverError> {
        self.check_waitable(cx, "apply", objects.iter())?;
        self.check_claims(cx, &objects).await?;
        let history = self.history(cx).await?;
        // A run resumed after a crash continues its own pending revision.
        let resumed = history.latest().filter(|r| {
            r.status == Status::Pending
                && r.plan_id == plan_id
                && r.version == version
                && r.rollback_of == rollback_of
        });
        // The same objects as the deployed revision: applied again (repairing drift) under
        // that revision, not a new one.
        let sha = release::objects_sha256(&objects);
        let same = history.deployed().filter(|r| {
            history.latest().map(|l| l.revision) == Some(r.revision)
                && r.objects_sha256 == sha
                && r.version == version
        });
        let revision = resumed
            .or(same)
            .map_or(history.next_revision(), |r| r.revision);
        let ids: Vec<ObjectId> = objects.iter().filter_map(ObjectId::of).collect();
        // Namespaces first: the record lives in the app's namespace.
        for o in objects.iter().filter(|o| o["kind"] == "Namespace") {
            self.ssa(cx, o, false).await.map_err(|(_, e)| e)?;
        }
        if !self.namespace_exists(cx).await? {
            return Err(cx.fail(
                "apply",
                format!(
                    "namespace `{}` does not exist and the manifests do not create it",
                    cx.ns
                ),
            ));
        }
        let t = now();
        let fresh = Record {
            format: release::FORMAT.into(),
            app: cx.spec.app.id.clone(),
            site: cx.spec.target.site.clone(),
            namespace: cx.ns.clone(),
            revision,
            version: version.to_owned(),
            status: Status::Pending,
            reason: None,
            plan_id: plan_id.to_owned(),
            rollback_of,
            objects_sha256: sha,
            created_at: resumed.map_or(t.clone(), |r| r.created_at.clone()),
            updated_at: t,
            objects: objects.clone(),
            resource_version: resumed.and_then(|r| r.resource_version.clone()),
        };
        let mut record = match same {
            Some(d) => self.load(cx, d).await?,
            None => {
                let mut fresh = fresh;
                self.write_record(cx, &mut fresh).await?;
                fresh
            }
        };
        (self.say)(format!(
            "  apply   {}: revision {revision} ({version}), {} object(s) as field manager `{}`",
            cx.place(),
            objects.len(),
            k8s::FIELD_MANAGER
        ));
        // The deployed revision's objects matter only to Jobs (one its TTL removed is not
        // run again): its record is read only then.
        let deployed: Vec<Value> = match history.deployed() {
            Some(d) if objects.iter().any(|o| o["kind"] == "Job") => {
                self.load(cx, d).await?.objects
            }
            _ => Vec::new(),
        };
        for o in objects.iter().filter(|o| o["kind"] != "Namespace") {
            // Fenced object by object: a run that lost its lock stops between two objects
            // (its revision stays pending, and the next plan sees it).
            cx.spec.check_fence()?;
            if let Err(e) = self.apply_one(cx, o, &deployed).await {
                let reason = e.to_string();
                self.set_status(cx, &mut record, Status::Failed, Some(reason))
                    .await?;
                return Err(e);
            }
        }
        for id in k8s::prune(&history.all_ids(), &ids) {
            cx.spec.check_fence()?;
            self.delete_ours(cx, &id, "prune").await?;
        }
        Ok(record)
    }

    /// Applies one object. A Job whose pod template changes is deleted and created again (the
    /// template is immutable); a Job the deployed revision ran unchanged and its
    /// `ttlSecondsAfterFinished` removed is not run again.
    async fn apply_one(
        &self,
        cx: &Cx<'_>,
        o: &Value,
        deployed: &[Value],
    ) -> Result<(), DriverError> {
        let id = ObjectId::of(o).expect("prepared objects have ids");
        if id.kind == "Job" {
            match self.get(cx, &id).await? {
                None if diff::expired_job(o, deployed) => {
                    (self.say)(format!(
                        "  skip    {}: {id} ran for the deployed revision and its ttlSecondsAfterFinished removed it; not run again",
                        cx.place()
                    ));
                    return Ok(());
                }
                Some(live) if !diff::needs_replace(&id, &live, o).is_empty() => {
                    self.replace_job(cx, &id, &live).await?;
                }
                _ => {}
            }
        }
        self.ssa(cx, o, false).await.map(|_| ()).map_err(|(_, e)| e)
    }

    /// Deletes a Job (its pods with it) and waits until it is gone, so that it can be created
    /// with its new template.
    async fn replace_job(
        &self,
        cx: &Cx<'_>,
        id: &ObjectId,
        live: &Value,
    ) -> Result<(), DriverError> {
        if !k8s::is_ours(live, &cx.spec.app.id, &cx.spec.target.site) {
            return Err(cx.fail(
                "apply",
                format!(
                    "{id} has a different pod template, which a Job cannot change in place, and it is not ferry's to delete; delete it, or give the new Job another name"
                ),
            ));
        }
        let api = self.dynamic(cx, id)?;
        let what = format!("deleting {id} to create it with its new template");
        let dp = DeleteParams::background();
        match self.call(cx, &what, || api.delete(&id.name, &dp)).await {
            Ok(_) => {}
            Err(e) if code(&e) == Some(404) => {}
            Err(e) => return Err(self.error(cx, "apply", &what, &e)),
        }
        let deadline = Instant::now() + Duration::from_secs(cx.app.rollout_timeout_seconds);
        while self.get(cx, id).await?.is_some() {
            if Instant::now() >= deadline {
                return Err(cx.fail(
                    "apply",
                    format!(
                        "{id} was deleted but is still there after {}s (a finalizer?)",
                        cx.app.rollout_timeout_seconds
                    ),
                ));
            }
            tokio::time::sleep(self.poll).await;
        }
        (self.say)(format!(
            "  replace {}: {id}: its pod template cannot change in place; deleted, created again",
            cx.place()
        ));
        Ok(())
    }

    /// Deletes `id` if it is there and carries ferry's labels for this app.
    async fn delete_ours(&self, cx: &Cx<'_>, id: &ObjectId, why: &str) -> Result<(), DriverError> {
        let Some(live) = self.get(cx, id).await? else {
            return Ok(());
        };
        if !k8s::is_ours(&live, &cx.spec.app.id, &cx.spec.target.site) {
            (self.say)(format!(
                "  keep    {}: {id} is not labelled as ferry's for {} on site {}; not deleted",
                cx.place(),
                cx.spec.app.id,
                cx.spec.target.site
            ));
            return Ok(());
        }
        let api = self.dynamic(cx, id)?;
        let dp = DeleteParams::background();
        let what = format!("deleting {id}");
        match self.call(cx, &what, || api.delete(&id.name, &dp)).await {
            Ok(_) => {}
            Err(e) if code(&e) == Some(404) => {}
            Err(e) => return Err(self.error(cx, "delete", &what, &e)),
        }
        (self.say)(format!("  {why:<7} {}: deleted {id}", cx.place()));
        Ok(())
    }

    /// Waits until every workload of `record` has rolled out, or fails with the reason.
    /// Inside the wait an API error worth retrying (429, 5xx, a dropped connection) means
    /// "still progressing": only the deadline ends a wait on a flaky API server.
    async fn wait(&self, cx: &Cx<'_>, record: &Record) -> Result<(), String> {
        let deadline = Duration::from_secs(cx.app.rollout_timeout_seconds);
        let started = Instant::now();
        let workloads: Vec<ObjectId> = record
            .ids()
            .into_iter()
            .filter(|id| id.kind_info().is_some_and(|i| i.workload))
            .collect();
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        let mut watch = rollout::StuckWatch::new(Duration::from_secs(cx.app.stuck_seconds));
        loop {
            let mut pending = Vec::new();
            let mut stuck = Vec::new();
            for id in &workloads {
                let msg = match self.look(cx, id).await? {
                    Look::Done => continue,
                    Look::Unanswered(why) => format!("the API server did not answer ({why})"),
                    Look::Progressing(msg, live) => {
                        stuck.extend(self.stuck(cx, id, &live).await);
                        msg
                    }
                };
                if last.get(&id.to_string()) != Some(&msg) {
                    (self.say)(format!("  wait    {}: {id}: {msg}", cx.place()));
                    last.insert(id.to_string(), msg.clone());
                }
                pending.push(format!("{id}: {msg}"));
            }
            if pending.is_empty() {
                return Ok(());
            }
            if let Some(why) = watch.see(started.elapsed(), &stuck) {
                return Err(why);
            }
            if started.elapsed() >= deadline {
                return Err(format!(
                    "rollout timed out after {}s: {}",
                    deadline.as_secs(),
                    pending.join("; ")
                ));
            }
            tokio::time::sleep(self.poll.min(deadline.saturating_sub(started.elapsed()))).await;
        }
    }

    /// One look at a workload's rollout.
    async fn look(&self, cx: &Cx<'_>, id: &ObjectId) -> Result<Look, String> {
        let api = self.dynamic(cx, id).map_err(|e| e.to_string())?;
        let live = match api.get_opt(&id.name).await {
            Ok(Some(o)) => serde_json::to_value(o).expect("objects serialize"),
            Ok(None) => return Err(format!("{id} is gone")),
            Err(e) if retryable(&e) => return Ok(Look::Unanswered(describe(&e))),
            Err(e) => {
                return Err(self
                    .error(cx, "rollout", &format!("reading {id}"), &e)
                    .to_string());
            }
        };
        match rollout::state(&id.kind, &live)? {
            Rollout::Done => Ok(Look::Done),
            Rollout::Failed(why) => Err(format!("{id}: {why}")),
            Rollout::Progressing(msg) => Ok(Look::Progressing(msg, live)),
        }
    }

    /// The containers of the workload's new pods (told apart from the old ones by the
    /// controller's revision labels) stuck in a state waiting may not cure.
    async fn stuck(&self, cx: &Cx<'_>, id: &ObjectId, workload: &Value) -> Vec<rollout::Stuck> {
        match self.new_pods(cx, id, workload).await {
            Ok(Some((pods, (k, v)))) => rollout::stuck_containers(&pods, (&k, &v))
                .into_iter()
                .map(|s| rollout::Stuck {
                    workload: id.to_string(),
                    ..s
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => {
                // The wait goes on; its deadline still holds.
                (self.say)(format!(
                    "  warn    {}: cannot list the pods of {id}: {}",
                    cx.place(),
                    describe(&e)
                ));
                Vec::new()
            }
        }
    }

    /// The pods of the template being rolled out, with the label that tells them, once the
    /// controller has made it.
    async fn new_pods(
        &self,
        cx: &Cx<'_>,
        id: &ObjectId,
        workload: &Value,
    ) -> Result<Option<(Vec<Pod>, (String, String))>, kube::Error> {
        let Some(labels) = workload
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
        else {
            return Ok(None);
        };
        let selector = labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(",");
        let lp = ListParams::default().labels(&selector);
        let owned = match rollout::revisions_of(&id.kind) {
            Some((kind, plural)) => {
                let ar = ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk("apps", "v1", kind),
                    plural,
                );
                let api: Api<DynamicObject> = Api::namespaced_with(cx.client.clone(), &cx.ns, &ar);
                let what = format!("listing the {plural} of {id}");
                self.call(cx, &what, || api.list(&lp))
                    .await?
                    .items
                    .into_iter()
                    .map(|o| serde_json::to_value(o).expect("objects serialize"))
                    .collect()
            }
            None => Vec::new(),
        };
        let Some((k, v)) = rollout::new_pods_label(&id.kind, workload, &owned) else {
            return Ok(None);
        };
        let api: Api<Pod> = Api::namespaced(cx.client.clone(), &cx.ns);
        let lp = ListParams::default().labels(&format!("{selector},{k}={v}"));
        let pods = self.call(cx, "listing pods", || api.list(&lp)).await?;
        Ok(Some((pods.items, (k, v))))
    }

    /// Waits for `record`'s rollout and records the outcome: deployed (the previous deployed
    /// revision superseded, history beyond `keep` deleted) or failed with the reason.
    async fn conclude(&self, cx: &Cx<'_>, mut record: Record) -> Result<(), DriverError> {
        if let Err(why) = self.wait(cx, &record).await {
            self.set_status(cx, &mut record, Status::Failed, Some(why.clone()))
                .await?;
            return Err(cx.fail(
                "rollout",
                format!("revision {} ({}): {why}", record.revision, record.version),
            ));
        }
        // One read of the history: statuses are changed in it as they are written.
        let mut history = self.history(cx).await?;
        for r in &mut history.records {
            if r.status == Status::Deployed && r.revision != record.revision {
                let mut full = self.load(cx, r).await?;
                self.set_status(cx, &mut full, Status::Superseded, None)
                    .await?;
                *r = full.summary();
            }
        }
        self.set_status(cx, &mut record, Status::Deployed, None)
            .await?;
        if let Some(r) = history
            .records
            .iter_mut()
            .find(|r| r.revision == record.revision)
        {
            *r = record.summary();
        }
        (self.say)(format!(
            "  ok      {}: revision {} ({}) rolled out",
            cx.place(),
            record.revision,
            record.version
        ));
        let api: Api<Secret> = Api::namespaced(cx.client.clone(), &cx.ns);
        for n in history.expired(cx.spec.app.keep_releases as usize) {
            let name = release::secret_name(&cx.spec.app.id, n);
            let what = format!("deleting expired release record {name}");
            let dp = DeleteParams::default();
            match self.call(cx, &what, || api.delete(&name, &dp)).await {
                Ok(_) => {}
                Err(e) if code(&e) == Some(404) => {}
                Err(e) => return Err(self.error(cx, "record", &what, &e)),
            }
            let parts = ListParams::default().labels(&format!(
                "{}={},{}={},{}={n}",
                release::OWNER_LABEL,
                release::PART_OWNER,
                k8s::APP_LABEL,
                crate::model::resource_name(&cx.spec.app.id),
                release::REVISION_LABEL
            ));
            self.call(cx, &what, || api.delete_collection(&dp, &parts))
                .await
                .map_err(|e| self.error(cx, "record", &what, &e))?;
        }
        Ok(())
    }

    /// Re-applies the objects of `revision` as a new revision and waits for it.
    async fn rollback_to(&self, cx: &Cx<'_>, from: &Record) -> Result<(), DriverError> {
        (self.say)(format!(
            "  rollback {}: re-applying revision {} ({})",
            cx.place(),
            from.revision,
            from.version
        ));
        let plan_id = format!("rollback-of-{}", from.revision);
        let r = self
            .install(
                cx,
                from.objects.clone(),
                &from.version,
                &plan_id,
                Some(from.revision),
            )
            .await?;
        self.conclude(cx, r).await
    }

    async fn uninstall(&self, cx: &Cx<'_>) -> Result<(), DriverError> {
        let history = self.history(cx).await?;
        for id in k8s::prune(&history.all_ids(), &[]) {
            self.delete_ours(cx, &id, "delete").await?;
        }
        for r in history.records {
            if r.status != Status::Uninstalled {
                let mut full = self.load(cx, &r).await?;
                self.set_status(cx, &mut full, Status::Uninstalled, None)
                    .await?;
            }
        }
        Ok(())
    }

    /// What the cluster's release history holds for the target (for `ferry history`).
    pub async fn releases(&self, spec: &TargetSpec) -> Result<History, DriverError> {
        let cx = self.cx(spec).await?;
        self.history(&cx).await
    }
}

#[async_trait]
impl Driver for KubeDriver {
    async fn observe(&self, spec: &TargetSpec) -> Result<Observed, DriverError> {
        let cx = self.cx(spec).await?;
        let history = self.history(&cx).await?;
        let mut o = Observed {
            current: history.deployed().map(|r| r.version.clone()),
            releases: history.versions(),
            ..Observed::default()
        };
        o.facts.insert("namespace".into(), cx.ns.clone());
        o.facts.insert("server".into(), cx.server.clone());
        if let Some(p) = &cx.proxy {
            o.facts.insert("proxy".into(), p.clone());
        }
        if let Some(d) = history.deployed() {
            o.facts.insert("revision".into(), d.revision.to_string());
            // A Job's ttlSecondsAfterFinished is in its object: the record is read only then.
            let expired: Vec<ObjectId> = if d.ids.iter().any(|id| id.kind == "Job") {
                let full = self.load(&cx, d).await?;
                full.objects
                    .iter()
                    .filter(|obj| diff::expired_job(obj, &full.objects))
                    .filter_map(ObjectId::of)
                    .collect()
            } else {
                Vec::new()
            };
            for id in d.ids.iter().filter(|id| !expired.contains(id)) {
                if self.get(&cx, id).await?.is_none() {
                    o.drift.push(format!(
                        "{id} of revision {} is missing (deleted outside ferry)",
                        d.revision
                    ));
                }
            }
        }
        if let Some(p) = history.previous() {
            o.facts
                .insert("previous_revision".into(), p.revision.to_string());
            o.facts.insert("previous_version".into(), p.version.clone());
        }
        if let Some(l) = history.latest()
            && !matches!(l.status, Status::Deployed | Status::Superseded)
        {
            o.facts.insert(
                "latest_revision".into(),
                format!("{} ({}, {})", l.revision, l.version, l.status.as_str()),
            );
            if matches!(l.status, Status::Failed | Status::Pending) {
                o.drift.push(format!(
                    "revision {} ({}) is {}{}",
                    l.revision,
                    l.version,
                    l.status.as_str(),
                    l.reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ));
            }
        }
        Ok(o)
    }

    async fn preview(
        &self,
        spec: &TargetSpec,
        bundle: &ReleaseBundle,
    ) -> Result<Option<Vec<ObjectChange>>, DriverError> {
        let cx = self.cx(spec).await?;
        let objects = self.objects(&cx, bundle)?;
        self.check_waitable(&cx, "plan", objects.iter().map(|m| &m.object))?;
        let values: Vec<Value> = objects.iter().map(|m| m.object.clone()).collect();
        match release::parts_needed(&values) {
            Err(why) => return Err(cx.fail("plan", why)),
            Ok(n) if n > 1 => (self.say)(format!(
                "  note    {}: the release record takes {n} Secrets (more than one Secret's 1 MiB)",
                cx.place()
            )),
            Ok(_) => {}
        }
        let history = self.history(&cx).await?;
        let deployed: Vec<Value> = match history.deployed() {
            Some(d) => self.load(&cx, d).await?.objects,
            None => Vec::new(),
        };
        let ns_created = objects
            .iter()
            .any(|m| m.object["kind"] == "Namespace" && m.object["metadata"]["name"] == cx.ns);
        let ns_exists = self.namespace_exists(&cx).await?;
        if !ns_exists && !ns_created {
            return Err(cx.fail(
                "plan",
                format!(
                    "namespace `{}` does not exist on cloud `{}` and the manifests do not create it",
                    cx.ns, spec.target.host
                ),
            ));
        }
        let mut out = Vec::new();
        for m in &objects {
            let id = m.id();
            let live = self.get(&cx, &id).await?;
            if let Some(l) = &live {
                self.check_claim(&cx, "plan", &id, l)?;
                let fields = diff::needs_replace(&id, l, &m.object);
                if !fields.is_empty() {
                    out.push(ObjectChange {
                        object: id,
                        change: ChangeKind::Replace,
                        fields,
                        basis: Some(
                            "manifest (a Job's template is immutable: deleted, created again)"
                                .into(),
                        ),
                    });
                    continue;
                }
            } else if diff::expired_job(&m.object, &deployed) {
                out.push(ObjectChange {
                    object: id,
                    change: ChangeKind::Unchanged,
                    fields: vec![],
                    basis: Some(
                        "ran for the deployed revision; removed by its ttlSecondsAfterFinished"
                            .into(),
                    ),
                });
                continue;
            }
            // Objects in a namespace that is still to be made cannot be dry-run yet.
            let dry = if id.namespace.is_some() && !ns_exists {
                None
            } else {
                match self.ssa(&cx, &m.object, true).await {
                    Ok(v) => Some(v),
                    // A server without dry-run: compare the manifest's own fields.
                    Err((Some(400 | 405 | 415), _)) => None,
                    Err((_, e)) => {
                        return Err(
                            cx.fail("plan", format!("{e} (object from template {})", m.template))
                        );
                    }
                }
            };
            let basis = Some(
                if dry.is_some() {
                    "server-dry-run"
                } else {
                    "manifest"
                }
                .to_owned(),
            );
            let change = match (&live, &dry) {
                (None, _) => ObjectChange {
                    object: id,
                    change: ChangeKind::Add,
                    fields: vec![],
                    basis,
                },
                (Some(l), after) => {
                    let fields = match after {
                        Some(after) => diff::full(&id, l, after),
                        None => diff::subset(&id, l, &m.object),
                    };
                    ObjectChange {
                        change: if fields.is_empty() {
                            ChangeKind::Unchanged
                        } else {
                            ChangeKind::Change
                        },
                        object: id,
                        fields,
                        basis,
                    }
                }
            };
            out.push(change);
        }
        let ids: Vec<ObjectId> = objects.iter().map(Manifest::id).collect();
        for id in k8s::prune(&history.all_ids(), &ids) {
            if let Some(live) = self.get(&cx, &id).await?
                && k8s::is_ours(&live, &spec.app.id, &spec.target.site)
            {
                out.push(ObjectChange {
                    object: id,
                    change: ChangeKind::Remove,
                    fields: vec![],
                    basis: None,
                });
            }
        }
        Ok(Some(out))
    }

    async fn apply(&self, spec: &TargetSpec, bundle: &ReleaseBundle) -> Result<(), DriverError> {
        spec.check_fence()?;
        let cx = self.cx(spec).await?;
        let objects: Vec<Value> = self
            .objects(&cx, bundle)?
            .into_iter()
            .map(|m| m.object)
            .collect();
        self.install(&cx, objects, &bundle.version, &bundle.plan_id, None)
            .await?;
        Ok(())
    }

    async fn verify(&self, spec: &TargetSpec, version: &str) -> Result<(), DriverError> {
        let cx = self.cx(spec).await?;
        let history = self.history(&cx).await?;
        // Only the newest revision is what the cluster is being moved to.
        let record = history
            .records
            .iter()
            .rev()
            .find(|r| r.status != Status::Uninstalled)
            .filter(|r| r.version == version)
            .ok_or_else(|| {
                cx.fail(
                    "verify",
                    format!(
                        "{version} is not the newest revision here (newest: {})",
                        history
                            .latest()
                            .map(|r| format!("{} {}", r.revision, r.version))
                            .unwrap_or_else(|| "none".into())
                    ),
                )
            })?;
        let record = self.load(&cx, record).await?;
        self.conclude(&cx, record).await
    }

    async fn undo(&self, spec: &TargetSpec, undo: &Undo) -> Result<(), DriverError> {
        spec.check_fence()?;
        let cx = self.cx(spec).await?;
        match undo {
            Undo::Keep => Ok(()),
            Undo::Uninstall => self.uninstall(&cx).await,
            Undo::SwitchTo {
                version,
                revision: Some(n),
            } => {
                let history = self.history(&cx).await?;
                let r = history
                    .revision(*n)
                    .filter(|r| &r.version == version)
                    .ok_or_else(|| {
                        cx.fail(
                            "rollback",
                            format!("revision {n} ({version}) is not in the release history"),
                        )
                    })?;
                let r = self.load(&cx, r).await?;
                self.rollback_to(&cx, &r).await
            }
            Undo::SwitchTo { version, .. } => {
                let history = self.history(&cx).await?;
                let r = history.of_version(version).ok_or_else(|| {
                    cx.fail(
                        "rollback",
                        format!(
                            "no revision of {version} was ever rolled out here (history: {})",
                            history.versions().join(", ")
                        ),
                    )
                })?;
                let r = self.load(&cx, r).await?;
                self.rollback_to(&cx, &r).await
            }
        }
    }

    async fn receipt(&self, spec: &TargetSpec, version: &str) -> Option<Value> {
        let cx = self.cx(spec).await.ok()?;
        let history = self.history(&cx).await.ok()?;
        let r = history
            .records
            .iter()
            .rev()
            .find(|r| r.version == version)?;
        Some(json!({
            "release_record": format!("{}/{}", cx.ns, r.secret_name()),
            "revision": r.revision,
            "status": r.status.as_str(),
            "objects": r.objects,
            "objects_sha256": r.objects_sha256,
            "rollback_of": r.rollback_of,
            "server": cx.server,
        }))
    }
}

#[cfg(test)]
mod tests;

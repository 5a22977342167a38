//! A STAND-IN for a Kubernetes API server, for ferry's tests only.
//!
//! No real API server can be installed on the machines ferry is tested on (none in apt, PyPI,
//! npm or crates.io), so this in-process HTTP server answers the part of the Kubernetes API
//! that ferry uses, the way a real one does:
//!
//! - REST paths of core (`/api/v1`) and grouped (`/apis/GROUP/VERSION`) resources, namespaced
//!   and cluster-scoped: GET (one or a list, with label selectors), POST, PUT (with
//!   resourceVersion checks), PATCH (server-side apply, merge patch), DELETE (one, or a
//!   collection by label selector), `dryRun=All` on every write, the `status` subresource;
//!   metadata-only answers (`Accept: ...;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`,
//!   406 for the wrong shape), logged with their `as=` in `requests()`;
//! - `uid`, `resourceVersion`, `generation` (bumped on spec changes), `creationTimestamp`;
//!   objects cannot be created in a namespace that does not exist; deleting a namespace
//!   deletes what is in it; deleting a workload deletes its pods;
//! - server-side apply field ownership: each manager owns the leaf fields it set (lists are
//!   atomic); an apply that changes a field another manager owns is a 409 naming that
//!   manager (unless forced); an update (PUT, merge patch) takes the fields it changes;
//!   fields an applier stops setting are removed;
//! - rollout controllers that label pods the way the real ones do, acting `rollout_delay`
//!   after a new generation:
//!   - Deployment: a ReplicaSet per pod template (`NAME-HASH`, label `pod-template-hash`,
//!     annotation `deployment.kubernetes.io/revision`, the Deployment's annotation following;
//!     a rollback reuses the old ReplicaSet at a new revision); the new pods come up beside the
//!     old ones (a surge), which go only once the new ones are ready, one more delay later;
//!   - StatefulSet: pods `NAME-ORDINAL` labelled `controller-revision-hash: NAME-HASH`,
//!     replaced from the highest ordinal down to `rollingUpdate.partition`, stopping at a pod
//!     that does not become ready; `OnDelete` replaces nothing; `currentRevision` and
//!     `updateRevision` as the controller reports them;
//!   - DaemonSet: a ControllerRevision per template (growing `revision`), a pod per node
//!     (`set_nodes`), replaced node by node until one does not become ready;
//!   - how pods behave: an image whose reference contains `bad` never pulls
//!     (`ImagePullBackOff`), `crash` crash-loops, `slow` never becomes ready; a container
//!     env `STANDIN_BEHAVIOUR` of `bad`/`crash`/`slow` does the same with a good image (a crash
//!     caused by configuration alone);
//! - optional mutating admission (`inject_sidecar`): a sidecar in every pod, images pinned to
//!   digests;
//! - namespaces whose deletion waits on a finalizer (`hold_namespace_deletion`): Terminating,
//!   refusing new objects with the API server's 403;
//! - fault injection: the next N requests answered with a chosen status (429, 503), or 429
//!   with `Retry-After` and a plain-text body as API Priority and Fairness answers.
//!
//! It is not Kubernetes: no defaulting beyond the above, no watch, no strategic-merge
//! semantics (lists are replaced), no scheduler, no kubelet restarts. The same tests run against a real cluster
//! when `FERRY_TEST_KUBECONFIG` is set (see the README).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};

/// Resource types the stand-in serves: (group/version, kind, plural, namespaced).
const RESOURCES: &[(&str, &str, &str, bool)] = &[
    ("v1", "Namespace", "namespaces", false),
    ("v1", "ConfigMap", "configmaps", true),
    ("v1", "Secret", "secrets", true),
    ("v1", "Service", "services", true),
    ("v1", "ServiceAccount", "serviceaccounts", true),
    ("v1", "Pod", "pods", true),
    (
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
    ),
    ("v1", "ResourceQuota", "resourcequotas", true),
    ("v1", "LimitRange", "limitranges", true),
    ("apps/v1", "Deployment", "deployments", true),
    ("apps/v1", "StatefulSet", "statefulsets", true),
    ("apps/v1", "DaemonSet", "daemonsets", true),
    ("apps/v1", "ReplicaSet", "replicasets", true),
    ("apps/v1", "ControllerRevision", "controllerrevisions", true),
    ("batch/v1", "Job", "jobs", true),
    ("batch/v1", "CronJob", "cronjobs", true),
    ("networking.k8s.io/v1", "Ingress", "ingresses", true),
    (
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
    ),
    (
        "policy/v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
    ),
    (
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
    ),
    ("rbac.authorization.k8s.io/v1", "Role", "roles", true),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
];

const WORKLOADS: &[&str] = &["Deployment", "StatefulSet", "DaemonSet"];

type Key = (String, String, String); // plural, namespace ("" if cluster-scoped), name

#[derive(Default)]
struct Stored {
    obj: Value,
    /// manager -> (operation, leaf paths owned)
    owners: BTreeMap<String, (String, BTreeSet<String>)>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Stored>,
    version: u64,
    uid: u64,
    /// (status, message, Retry-After seconds)
    faults: Vec<(u16, String, Option<u32>)>,
    requests: Vec<String>,
    rollout_delay: Duration,
    /// Nodes a DaemonSet runs on.
    nodes: usize,
    /// Admission: a sidecar container (this image) injected into every pod, and the app's
    /// images pinned to digests, as mutating webhooks (service meshes, policy engines) do.
    sidecar: Option<String>,
    /// Namespaces being deleted stay `Terminating` (finalizers pending) until released.
    hold_namespaces: bool,
    /// What was deleted, at the resourceVersion of its deletion (watches send DELETED).
    deleted: Vec<(Key, Value)>,
    /// The bearer token every request must carry (401 otherwise): the administrator's.
    token: Option<String>,
    /// Other tokens and the users they authenticate, whose requests RBAC decides.
    users: BTreeMap<String, String>,
}

fn tls_acceptor(cert_pem: &str, key_pem: &str) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("the stand-in's certificate is PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("the stand-in's key is PEM");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("the stand-in's certificate and key match");
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}

/// A running stand-in API server. Dropping it stops it.
pub struct StandIn {
    addr: SocketAddr,
    secure: bool,
    state: Arc<Mutex<State>>,
    _runtime: Option<tokio::runtime::Runtime>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl StandIn {
    /// Starts on `bind` (`127.0.0.1:0` for any port) on its own runtime thread: for tests that
    /// are not async themselves (CLI tests).
    pub fn start(bind: &str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime for the stand-in");
        let mut s = rt.block_on(Self::start_async(bind));
        s._runtime = Some(rt);
        s
    }

    /// Starts on `bind` over TLS (`cert_pem` and `key_pem`; clients trust the CA that signed
    /// the certificate) and, with `token`, answers 401 to a request without
    /// `Authorization: Bearer TOKEN`, as a real API server does. For tests that are not async.
    pub fn start_tls(bind: &str, cert_pem: &str, key_pem: &str, token: Option<&str>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime for the stand-in");
        let tls = tls_acceptor(cert_pem, key_pem);
        let mut s = rt.block_on(Self::serve(bind, Some(tls), token.map(str::to_owned)));
        s._runtime = Some(rt);
        s
    }

    /// Starts on `bind` on the current runtime.
    pub async fn start_async(bind: &str) -> Self {
        Self::serve(bind, None, None).await
    }

    async fn serve(
        bind: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
        token: Option<String>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .unwrap_or_else(|e| panic!("kube stand-in cannot listen on {bind}: {e}"));
        let addr = listener.local_addr().expect("bound address");
        let state = Arc::new(Mutex::new(State {
            rollout_delay: Duration::from_millis(300),
            nodes: 1,
            ..State::default()
        }));
        {
            let mut st = state.lock().unwrap();
            for ns in ["default", "kube-system"] {
                let obj =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                create(
                    &mut st,
                    key("namespaces", "", ns),
                    obj,
                    "kube-apiserver",
                    "Update",
                );
            }
        }
        state.lock().unwrap().token = token;
        let st = state.clone();
        let secure = tls.is_some();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(st, req).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(tls) => {
                            // A client that does not trust the certificate fails the handshake.
                            let Ok(stream) = tls.accept(stream).await else {
                                return;
                            };
                            let _ = http
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                .await;
                        }
                        None => {
                            let _ = http
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                .await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            state,
            secure,
            _runtime: None,
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// A kubeconfig for this server with one context, `standin`, namespace `default`.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: standin\nclusters:\n- name: standin\n  cluster:\n    server: {}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin\n    namespace: default\nusers:\n- name: standin\n  user: {{}}\n",
            self.url()
        )
    }

    /// How long the rollout controller takes to act on a new generation.
    pub fn set_rollout_delay(&self, d: Duration) {
        self.state.lock().unwrap().rollout_delay = d;
    }

    /// Answers the next `n` requests with `code` (429, 503...).
    pub fn fail_next(&self, n: usize, code: u16) {
        let mut st = self.state.lock().unwrap();
        for _ in 0..n {
            st.faults
                .push((code, format!("injected by the stand-in ({code})"), None));
        }
    }

    /// Answers the next `n` requests 429 with `Retry-After: secs` and a plain-text body, as
    /// API Priority and Fairness does.
    pub fn throttle_next(&self, n: usize, secs: u32) {
        let mut st = self.state.lock().unwrap();
        for _ in 0..n {
            st.faults.push((
                429,
                "Too many requests, please try again later.".into(),
                Some(secs),
            ));
        }
    }

    /// From now on every request must carry `Authorization: Bearer TOKEN`: `admin` may do
    /// anything (401 without a known token).
    pub fn require_token(&self, admin: &str) {
        self.state.lock().unwrap().token = Some(admin.to_owned());
    }

    /// A token that authenticates `user`, whose requests are decided by the RBAC objects
    /// (Roles, ClusterRoles and their bindings naming the user) stored in the stand-in, as
    /// the API server's RBAC authorizer does (403 naming the verb, resource and scope).
    pub fn add_user(&self, token: &str, user: &str) {
        self.state
            .lock()
            .unwrap()
            .users
            .insert(token.to_owned(), user.to_owned());
    }

    /// How many nodes DaemonSets run on (1 unless set).
    pub fn set_nodes(&self, n: usize) {
        self.state.lock().unwrap().nodes = n;
    }

    /// Turns on a mutating admission step: every new pod gets a `standin-proxy` sidecar of
    /// `image`, and the app's images are pinned to digests.
    pub fn inject_sidecar(&self, image: &str) {
        self.state.lock().unwrap().sidecar = Some(image.to_owned());
    }

    /// While on, a deleted namespace stays `Terminating` (its contents gone, its finalizer
    /// pending) and refuses new objects, as on a cluster with a slow finalizer.
    pub fn hold_namespace_deletion(&self, on: bool) {
        let mut st = self.state.lock().unwrap();
        st.hold_namespaces = on;
        if !on {
            st.objects.retain(|(p, _, _), o| {
                p != "namespaces" || o.obj.pointer("/metadata/deletionTimestamp").is_none()
            });
        }
    }

    /// `METHOD path?query` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

fn key(plural: &str, ns: &str, name: &str) -> Key {
    (plural.to_owned(), ns.to_owned(), name.to_owned())
}

fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> (u16, Value) {
    let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code});
    if let Some(d) = details {
        s["details"] = d;
    }
    (code, s)
}

struct Route {
    api_version: String,
    kind: String,
    plural: String,
    namespaced: bool,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (gv, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("v1".to_owned(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, r, more @ ..] if !r.is_empty() => {
            let mut v = vec![*r];
            v.extend(more);
            (Some((*ns).to_owned()), v)
        }
        r => (None, r.to_vec()),
    };
    let plural = *rest.first()?;
    let (_, kind, _, namespaced) = RESOURCES
        .iter()
        .find(|(g, _, p, _)| *g == gv && *p == plural)?;
    if *namespaced != namespace.is_some() && !(*namespaced && rest.len() == 1) {
        return None;
    }
    Some(Route {
        api_version: gv,
        kind: (*kind).to_owned(),
        plural: plural.to_owned(),
        namespaced: *namespaced,
        namespace,
        name: rest.get(1).map(|s| (*s).to_owned()),
        sub: rest.get(2).map(|s| (*s).to_owned()),
    })
}

fn query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(h, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RBAC: the 403 a request of `user` gets, or None if a Role or ClusterRole bound to the
/// user allows it. Discovery and `/version` are open to every authenticated user.
fn forbidden(
    st: &State,
    user: &str,
    method: &Method,
    path: &str,
    watching: bool,
) -> Option<(u16, Value)> {
    let r = route(path)?;
    let verb = match (method.as_str(), r.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if watching => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    let group = r.api_version.split_once('/').map_or("", |(g, _)| g);
    let resource = match &r.sub {
        Some(sub) => format!("{}/{sub}", r.plural),
        None => r.plural.clone(),
    };
    let ns = r.namespace.as_deref();
    let name = r.name.as_deref();
    // An apply that creates the object needs `create` as well as `patch` (counted the
    // strict way: a cluster may or may not ask).
    let creating = verb == "patch"
        && r.sub.is_none()
        && !st
            .objects
            .contains_key(&key(&r.plural, ns.unwrap_or(""), name.unwrap_or("")));
    let verb = if creating && allowed(st, user, "patch", group, &resource, ns, name) {
        "create"
    } else {
        verb
    };
    if allowed(st, user, verb, group, &resource, ns, name) {
        return None;
    }
    let what = match name {
        Some(n) => format!("{} \"{n}\"", r.plural),
        None => r.plural.clone(),
    };
    let scope = match ns {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".into(),
    };
    Some(status(
        403,
        "Forbidden",
        &format!(
            "{what} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" {scope}"
        ),
        Some(json!({"name": name.unwrap_or(""), "group": group, "kind": r.plural})),
    ))
}

fn allowed(
    st: &State,
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    ns: Option<&str>,
    name: Option<&str>,
) -> bool {
    let has = |list: &Value, want: &str| {
        list.as_array()
            .is_some_and(|l| l.iter().any(|v| v == want || v == "*"))
    };
    let bindings = st.objects.iter().filter(|((p, n, _), _)| {
        p == "clusterrolebindings" || (p == "rolebindings" && Some(n.as_str()) == ns)
    });
    for ((_, bns, _), b) in bindings {
        let names_user = b.obj["subjects"].as_array().is_some_and(|subs| {
            subs.iter()
                .any(|s| s["kind"] == "User" && s["name"] == user)
        });
        if !names_user {
            continue;
        }
        let role_name = b.obj["roleRef"]["name"].as_str().unwrap_or_default();
        let role = match b.obj["roleRef"]["kind"].as_str() {
            Some("Role") => st.objects.get(&key("roles", bns, role_name)),
            _ => st.objects.get(&key("clusterroles", "", role_name)),
        };
        let Some(role) = role else { continue };
        let ok = role.obj["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|rule| {
                has(&rule["apiGroups"], group)
                    && has(&rule["resources"], resource)
                    && has(&rule["verbs"], verb)
                    && rule["resourceNames"].as_array().is_none_or(|n| {
                        n.is_empty() || name.is_some_and(|x| n.iter().any(|v| v == x))
                    })
            });
        if ok {
            return true;
        }
    }
    false
}

fn rv_of(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A watch: the changes (ADDED/MODIFIED/DELETED) to the listed objects after the requested
/// resourceVersion, as newline-separated JSON events, sent once there are any (or after a
/// second without) and then the stream ends; clients watch again from the last version they
/// saw, as they do when a real server closes a watch.
async fn watch(
    st: &Arc<Mutex<State>>,
    path: &str,
    q: &BTreeMap<String, String>,
) -> Response<Full<Bytes>> {
    let since: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let sel = q.get("labelSelector").cloned().unwrap_or_default();
    let fsel = q.get("fieldSelector").cloned().unwrap_or_default();
    let Some(r) = route(path) else {
        let (code, v) = status(404, "NotFound", "no such resource to watch", None);
        let mut resp = Response::new(Full::new(Bytes::from(v.to_string())));
        *resp.status_mut() = StatusCode::from_u16(code).unwrap();
        return resp;
    };
    let ns = r.namespace.clone().unwrap_or_default();
    let matches = |(p, n, _): &Key, o: &Value| {
        *p == r.plural
            && (r.namespace.is_none() || *n == ns)
            && selects(&sel, o)
            && fields_select(&fsel, o)
    };
    st.lock()
        .unwrap()
        .requests
        .push(format!("GET {path}?watch=true"));
    let mut events = Vec::new();
    for _ in 0..20 {
        {
            let s = st.lock().unwrap();
            for (k, o) in &s.objects {
                if matches(k, &o.obj) && rv_of(&o.obj) > since {
                    let kind = if since == 0 { "ADDED" } else { "MODIFIED" };
                    events.push((rv_of(&o.obj), json!({"type": kind, "object": o.obj})));
                }
            }
            for (k, o) in &s.deleted {
                if matches(k, o) && rv_of(o) > since && since > 0 {
                    events.push((rv_of(o), json!({"type": "DELETED", "object": o})));
                }
            }
        }
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    events.sort_by_key(|(rv, _)| *rv);
    let body: String = events.iter().map(|(_, e)| format!("{e}\n")).collect();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp
}

async fn handle(st: Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let q = query(req.uri().query().unwrap_or(""));
    let req_auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let ctype = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let shape = metadata_shape(
        req.headers()
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    );
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let refusal = {
        let s = st.lock().unwrap();
        let given = req_auth.as_deref().and_then(|a| a.strip_prefix("Bearer "));
        match (&s.token, given) {
            (None, _) => None,
            (Some(admin), Some(g)) if g == admin => None,
            (Some(_), Some(g)) if s.users.contains_key(g) => {
                let user = s.users[g].clone();
                let watching = q.get("watch").is_some_and(|w| w == "true" || w == "1");
                forbidden(&s, &user, &method, &path, watching)
            }
            (Some(_), _) => Some(status(401, "Unauthorized", "Unauthorized", None)),
        }
    };
    if let Some((code, v)) = refusal {
        let mut resp = Response::new(Full::new(Bytes::from(v.to_string())));
        *resp.status_mut() = StatusCode::from_u16(code).unwrap();
        resp.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        return resp;
    }
    if method == Method::GET && q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch(&st, &path, &q).await;
    }
    let mut retry_after = None;
    let (code, value) = {
        let mut s = st.lock().unwrap();
        s.requests.push(format!(
            "{method} {path}{}{}",
            if q.is_empty() {
                String::new()
            } else {
                format!(
                    "?{}",
                    q.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join("&")
                )
            },
            shape
                .map(|m| format!(" as={}", m.as_str()))
                .unwrap_or_default()
        ));
        if !s.faults.is_empty() {
            let (c, m, after) = s.faults.remove(0);
            let reason = if c == 429 {
                "TooManyRequests"
            } else {
                "InternalError"
            };
            retry_after = after;
            if after.is_some() {
                // API Priority and Fairness: a plain-text body, the wait in a header.
                (c, Value::String(m))
            } else {
                status(c, reason, &m, None)
            }
        } else {
            let (code, v) = serve(&mut s, &method, &path, &q, &ctype, &body);
            match shape {
                Some(m) if method == Method::GET && code == 200 => m.transform(v),
                _ => (code, v),
            }
        }
    };
    // The rollout controller acts after a delay, as a real one does; a Deployment whose new
    // pods came up has its old ones scaled away after another.
    let workloads: Vec<Key> = {
        let s = st.lock().unwrap();
        s.objects
            .iter()
            .filter(|(_, o)| {
                WORKLOADS.contains(&o.obj["kind"].as_str().unwrap_or(""))
                    && o.obj.pointer("/status/observedGeneration")
                        != o.obj.pointer("/metadata/generation")
            })
            .map(|(k, _)| k.clone())
            .collect()
    };
    if !workloads.is_empty() {
        let delay = st.lock().unwrap().rollout_delay;
        let st = st.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let second: Vec<(Key, Value)> = {
                let mut s = st.lock().unwrap();
                workloads
                    .into_iter()
                    .filter_map(|k| {
                        let g = s
                            .objects
                            .get(&k)?
                            .obj
                            .pointer("/metadata/generation")
                            .cloned()?;
                        control(&mut s, &k).then_some((k, g))
                    })
                    .collect()
            };
            if second.is_empty() {
                return;
            }
            tokio::time::sleep(delay).await;
            let mut s = st.lock().unwrap();
            for (k, g) in second {
                if let Some(w) = Workload::of(&s, &k)
                    && w.generation == g
                {
                    finish_deployment(&mut s, &w);
                }
            }
        });
    }
    let text = match &value {
        Value::String(t) if retry_after.is_some() => t.clone(),
        v => v.to_string(),
    };
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let ctype = if retry_after.is_some() {
        "text/plain; charset=utf-8"
    } else {
        "application/json"
    };
    resp.headers_mut()
        .insert("content-type", ctype.parse().unwrap());
    resp
}

/// What an `Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`
/// asks for: the objects' metadata only, as the API server answers kube's `get_metadata` and
/// `list_metadata` (and `kubectl get` with `--output=name`-like clients).
#[derive(Clone, Copy, PartialEq, Debug)]
enum MetadataShape {
    Object,
    List,
}

fn metadata_shape(accept: &str) -> Option<MetadataShape> {
    accept.split(',').find_map(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        let has = |p: &str| params.contains(&p);
        if !(has("g=meta.k8s.io") && has("v=v1")) {
            return None;
        }
        if has("as=PartialObjectMetadataList") {
            Some(MetadataShape::List)
        } else if has("as=PartialObjectMetadata") {
            Some(MetadataShape::Object)
        } else {
            None
        }
    })
}

impl MetadataShape {
    fn as_str(self) -> &'static str {
        match self {
            MetadataShape::Object => "PartialObjectMetadata",
            MetadataShape::List => "PartialObjectMetadataList",
        }
    }

    /// The answer cut to metadata. Asking for the other shape than the resource has (a list
    /// for one object, or the reverse) is 406, as the API server answers.
    fn transform(self, v: Value) -> (u16, Value) {
        let is_list =
            v["kind"].as_str().is_some_and(|k| k.ends_with("List")) && v["items"].is_array();
        let partial = |o: &Value| {
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                   "metadata": o["metadata"].clone()})
        };
        match (self, is_list) {
            (MetadataShape::List, true) => (
                200,
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                       "metadata": v["metadata"].clone(),
                       "items": v["items"].as_array().map(|i| i.iter().map(partial).collect::<Vec<_>>())}),
            ),
            (MetadataShape::Object, false) => (200, partial(&v)),
            _ => status(
                406,
                "NotAcceptable",
                &format!(
                    "only the following media types are accepted: application/json;as={}",
                    if is_list {
                        "PartialObjectMetadataList"
                    } else {
                        "PartialObjectMetadata"
                    }
                ),
                None,
            ),
        }
    }
}

fn serve(
    st: &mut State,
    method: &Method,
    path: &str,
    q: &BTreeMap<String, String>,
    ctype: &str,
    body: &[u8],
) -> (u16, Value) {
    if path == "/version" {
        return (
            200,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-ferry-standin", "platform": "linux/amd64"}),
        );
    }
    if let Some(d) = discovery(path) {
        return (200, d);
    }
    let Some(r) = route(path) else {
        return status(
            404,
            "NotFound",
            &format!("the server could not find the requested resource ({path})"),
            None,
        );
    };
    let dry = q.get("dryRun").is_some_and(|v| v == "All");
    let manager = q
        .get("fieldManager")
        .cloned()
        .unwrap_or_else(|| "unknown".into());
    let ns = r.namespace.clone().unwrap_or_default();
    let not_found = |name: &str| {
        status(
            404,
            "NotFound",
            &format!("{} \"{name}\" not found", r.plural),
            Some(json!({"name": name, "kind": r.plural})),
        )
    };
    if r.namespaced
        && !ns.is_empty()
        && *method != Method::GET
        && *method != Method::DELETE
        && !st.objects.contains_key(&key("namespaces", "", &ns))
    {
        return status(
            404,
            "NotFound",
            &format!("namespaces \"{ns}\" not found"),
            None,
        );
    }
    let terminating = st
        .objects
        .get(&key("namespaces", "", &ns))
        .is_some_and(|n| n.obj.pointer("/metadata/deletionTimestamp").is_some());
    if r.namespaced
        && terminating
        && matches!(*method, Method::POST | Method::PUT | Method::PATCH)
        && !(*method == Method::PATCH
            && st
                .objects
                .contains_key(&key(&r.plural, &ns, r.name.as_deref().unwrap_or(""))))
    {
        let name = r.name.clone().unwrap_or_default();
        return status(
            403,
            "Forbidden",
            &format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                r.plural
            ),
            Some(
                json!({"name": name, "kind": r.plural, "causes": [{"reason": "NamespaceTerminating",
                "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}),
            ),
        );
    }
    if ctype.starts_with("application/vnd.kubernetes.protobuf") {
        // kubectl's typed commands (`create namespace`...) send protobuf; the stand-in speaks
        // JSON only, and says so as a server does for a media type it does not take.
        return status(
            415,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/apply-patch+yaml (kube-standin: {ctype} is not supported)"
            ),
            None,
        );
    }
    let parsed: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => Some(v),
            Err(e) => return status(400, "BadRequest", &format!("body is not JSON: {e}"), None),
        }
    };
    match (method.clone(), r.name.clone()) {
        (Method::GET, None) => {
            let sel = q.get("labelSelector").cloned().unwrap_or_default();
            let fsel = q.get("fieldSelector").cloned().unwrap_or_default();
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|((p, n, _), o)| {
                    *p == r.plural
                        && (r.namespace.is_none() || *n == ns)
                        && selects(&sel, &o.obj)
                        && fields_select(&fsel, &o.obj)
                })
                .map(|(_, o)| o.obj.clone())
                .collect();
            (
                200,
                json!({"apiVersion": r.api_version, "kind": format!("{}List", r.kind),
                       "metadata": {"resourceVersion": st.version.to_string()}, "items": items}),
            )
        }
        (Method::GET, Some(name)) => match st.objects.get(&key(&r.plural, &ns, &name)) {
            Some(o) => (200, o.obj.clone()),
            None => not_found(&name),
        },
        (Method::POST, None) => {
            let Some(mut obj) = parsed else {
                return status(400, "BadRequest", "no body", None);
            };
            let Some(name) = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_owned)
            else {
                return status(422, "Invalid", "metadata.name: Required value", None);
            };
            let k = key(&r.plural, &ns, &name);
            if st.objects.contains_key(&k) {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("{} \"{name}\" already exists", r.plural),
                    None,
                );
            }
            fix_identity(&mut obj, &r);
            if let Some(e) = too_big(&obj, &k) {
                return e;
            }
            if dry {
                return (201, preview_create(st, obj));
            }
            (201, create(st, k, obj, &manager, "Update"))
        }
        (Method::PUT, Some(name)) => {
            let Some(mut obj) = parsed else {
                return status(400, "BadRequest", "no body", None);
            };
            let k = key(&r.plural, &ns, &name);
            let Some(cur) = st.objects.get(&k) else {
                return not_found(&name);
            };
            let want_rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str);
            let have_rv = cur
                .obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str);
            if want_rv.is_some() && want_rv != have_rv {
                return status(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                        r.plural
                    ),
                    None,
                );
            }
            fix_identity(&mut obj, &r);
            let sub = r.sub.as_deref() == Some("status");
            update(st, k, obj, &manager, sub, dry)
        }
        (Method::PATCH, Some(name)) => {
            let Some(mut patch) = parsed else {
                return status(400, "BadRequest", "no body", None);
            };
            let k = key(&r.plural, &ns, &name);
            let sub = r.sub.as_deref() == Some("status");
            if ctype.starts_with("application/apply-patch") {
                if !q.contains_key("fieldManager") {
                    return status(
                        422,
                        "Invalid",
                        "fieldManager: Required value: is required for apply patch",
                        None,
                    );
                }
                fix_identity(&mut patch, &r);
                let force = q.get("force").is_some_and(|v| v == "true");
                apply(st, k, patch, &manager, force, sub, dry, &r)
            } else {
                let Some(cur) = st.objects.get(&k) else {
                    return not_found(&name);
                };
                let mut obj = cur.obj.clone();
                merge(&mut obj, &patch);
                update(st, k, obj, &manager, sub, dry)
            }
        }
        (Method::DELETE, Some(name)) => {
            let k = key(&r.plural, &ns, &name);
            match st.objects.get(&k) {
                None => not_found(&name),
                Some(o) => {
                    let obj = o.obj.clone();
                    if !dry {
                        delete(st, &k);
                    }
                    (200, obj)
                }
            }
        }
        (Method::DELETE, None) => {
            let sel = q.get("labelSelector").cloned().unwrap_or_default();
            let keys: Vec<Key> = st
                .objects
                .iter()
                .filter(|((p, n, _), o)| {
                    *p == r.plural && (r.namespace.is_none() || *n == ns) && selects(&sel, &o.obj)
                })
                .map(|(k, _)| k.clone())
                .collect();
            let items: Vec<Value> = keys.iter().map(|k| st.objects[k].obj.clone()).collect();
            if !dry {
                for k in &keys {
                    delete(st, k);
                }
            }
            (
                200,
                json!({"apiVersion": r.api_version, "kind": format!("{}List", r.kind), "metadata": {}, "items": items}),
            )
        }
        _ => status(
            405,
            "MethodNotAllowed",
            &format!("{method} is not supported here"),
            None,
        ),
    }
}

/// Short names kubectl knows the resources by (what a real server lists).
const SHORT_NAMES: &[(&str, &str)] = &[
    ("namespaces", "ns"),
    ("configmaps", "cm"),
    ("services", "svc"),
    ("serviceaccounts", "sa"),
    ("pods", "po"),
    ("persistentvolumeclaims", "pvc"),
    ("limitranges", "limits"),
    ("resourcequotas", "quota"),
    ("deployments", "deploy"),
    ("statefulsets", "sts"),
    ("daemonsets", "ds"),
    ("replicasets", "rs"),
    ("cronjobs", "cj"),
    ("ingresses", "ing"),
    ("networkpolicies", "netpol"),
    ("poddisruptionbudgets", "pdb"),
    ("horizontalpodautoscalers", "hpa"),
];

/// Legacy discovery (`/api`, `/apis`, `/api/v1`, `/apis/GROUP/VERSION`), which clients such as
/// kubectl read to map kinds to resources; built from the resources the stand-in serves.
fn discovery(path: &str) -> Option<Value> {
    let resources = |gv: &str| {
        let mut out = Vec::new();
        for (_, kind, plural, namespaced) in RESOURCES.iter().filter(|(g, ..)| *g == gv) {
            let mut r = json!({"name": plural, "singularName": kind.to_lowercase(),
                "namespaced": namespaced, "kind": kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]});
            if let Some((_, short)) = SHORT_NAMES.iter().find(|(p, _)| p == plural) {
                r["shortNames"] = json!([short]);
            }
            out.push(r);
            if WORKLOADS.contains(kind) || *kind == "Job" || *kind == "Namespace" {
                out.push(
                    json!({"name": format!("{plural}/status"), "singularName": "",
                    "namespaced": namespaced, "kind": kind, "verbs": ["get", "patch", "update"]}),
                );
            }
        }
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out})
    };
    let groups = || {
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (gv, ..) in RESOURCES {
            if let Some((g, v)) = gv.split_once('/')
                && !seen.contains(&(g, v))
            {
                seen.push((g, v));
            }
        }
        seen
    };
    match path.trim_end_matches('/') {
        "/api" => Some(json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})),
        "/apis" => Some(json!({"kind": "APIGroupList", "apiVersion": "v1",
            "groups": groups().iter().map(|(g, v)| {
                let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
            }).collect::<Vec<_>>()})),
        "/api/v1" => Some(resources("v1")),
        p => {
            let gv = p.strip_prefix("/apis/")?;
            (gv.split('/').count() == 2 && RESOURCES.iter().any(|(g, ..)| *g == gv))
                .then(|| resources(gv))
        }
    }
}

/// A field selector (`metadata.name=web`, `metadata.namespace=ehr`, `!=`), ANDed.
fn fields_select(selector: &str, obj: &Value) -> bool {
    selector
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .all(|t| {
            let (k, v, neg) = match t.split_once("!=") {
                Some((k, v)) => (k, v, true),
                None => match t.split_once("==").or_else(|| t.split_once('=')) {
                    Some((k, v)) => (k, v, false),
                    None => return true,
                },
            };
            let path = format!("/{}", k.trim().replace('.', "/"));
            let have = obj.pointer(&path).and_then(Value::as_str).unwrap_or("");
            (have == v.trim()) != neg
        })
}

fn fix_identity(obj: &mut Value, r: &Route) {
    if !obj.is_object() {
        *obj = json!({});
    }
    obj["apiVersion"] = json!(r.api_version);
    obj["kind"] = json!(r.kind);
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    if let Some(n) = &r.name {
        obj["metadata"]["name"] = json!(n);
    }
    if let Some(ns) = &r.namespace {
        obj["metadata"]["namespace"] = json!(ns);
    }
}

fn next_rv(st: &mut State) -> String {
    st.version += 1;
    st.version.to_string()
}

fn now() -> String {
    // Seconds since the epoch as an RFC 3339 UTC time, without a date crate.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

fn preview_create(st: &mut State, mut obj: Value) -> Value {
    let meta = obj["metadata"].as_object_mut().expect("metadata");
    meta.insert("uid".into(), json!(format!("standin-uid-{}", st.uid + 1)));
    meta.insert(
        "resourceVersion".into(),
        json!((st.version + 1).to_string()),
    );
    meta.insert("generation".into(), json!(1));
    meta.insert("creationTimestamp".into(), json!(now()));
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
    default_fields(&mut obj);
    obj
}

/// The few defaults a real API server adds that show up in ferry's diffs.
fn default_fields(obj: &mut Value) {
    if obj["kind"] == "Deployment"
        && obj.pointer("/spec/replicas").is_none()
        && obj.get("spec").is_some()
    {
        obj["spec"]["replicas"] = json!(1);
    }
}

fn create(st: &mut State, k: Key, obj: Value, manager: &str, op: &str) -> Value {
    let mut obj = preview_create(st, obj);
    st.uid += 1;
    obj["metadata"]["resourceVersion"] = json!(next_rv(st));
    let paths = leaves(&obj);
    let mut owners = BTreeMap::new();
    owners.insert(manager.to_owned(), (op.to_owned(), paths));
    let mut s = Stored { obj, owners };
    render_managed(&mut s);
    let out = s.obj.clone();
    st.objects.insert(k, s);
    out
}

/// Leaf paths of the fields an object sets (lists are atomic), identity and server fields
/// left out.
fn leaves(obj: &Value) -> BTreeSet<String> {
    fn walk(path: &str, v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    walk(&format!("{path}.{k}"), v, out);
                }
            }
            _ => {
                out.insert(path.to_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            if k == "apiVersion" || k == "kind" || k == "status" {
                continue;
            }
            if k == "metadata" {
                for (mk, mv) in v.as_object().into_iter().flatten() {
                    if ["labels", "annotations"].contains(&mk.as_str()) {
                        walk(&format!(".metadata.{mk}"), mv, &mut out);
                    }
                }
                continue;
            }
            walk(&format!(".{k}"), v, &mut out);
        }
    }
    out
}

fn get_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = obj;
    for part in path.trim_start_matches('.').split('.') {
        v = v.get(part)?;
    }
    Some(v)
}

fn remove_path(obj: &mut Value, path: &str) {
    let parts: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    fn rm(v: &mut Value, parts: &[&str]) {
        let Some(m) = v.as_object_mut() else { return };
        if parts.len() == 1 {
            m.remove(parts[0]);
            return;
        }
        if let Some(child) = m.get_mut(parts[0]) {
            rm(child, &parts[1..]);
            if child.as_object().is_some_and(Map::is_empty) {
                m.remove(parts[0]);
            }
        }
    }
    rm(obj, &parts);
}

/// JSON merge patch (RFC 7386): maps merge, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn spec_of(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("status");
        m.remove("metadata");
    }
    o
}

/// Stores `obj` (already the whole new object) as a write by `manager`; generation follows
/// spec changes, and the manager takes the fields it changed.
fn update(
    st: &mut State,
    k: Key,
    mut obj: Value,
    manager: &str,
    status_only: bool,
    dry: bool,
) -> (u16, Value) {
    let Some(cur) = st.objects.get(&k) else {
        return status(
            404,
            "NotFound",
            &format!("{} \"{}\" not found", k.0, k.2),
            None,
        );
    };
    let old = cur.obj.clone();
    if status_only {
        let mut o = old.clone();
        o["status"] = obj.get("status").cloned().unwrap_or(json!({}));
        obj = o;
    } else {
        obj["status"] = old.get("status").cloned().unwrap_or(Value::Null);
        if obj["status"].is_null() {
            obj.as_object_mut().unwrap().remove("status");
        }
        for f in ["uid", "creationTimestamp", "generation"] {
            obj["metadata"][f] = old["metadata"][f].clone();
        }
        if spec_of(&obj) != spec_of(&old) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            obj["metadata"]["generation"] = json!(g);
        }
    }
    if let Some(e) = immutable(&old, &obj, &k).or_else(|| too_big(&obj, &k)) {
        return e;
    }
    let changed: BTreeSet<String> = leaves(&obj)
        .into_iter()
        .filter(|p| get_path(&obj, p) != get_path(&old, p))
        .collect();
    let rv = st.version + 1;
    // A dry run stores nothing, so its answer keeps the stored resourceVersion.
    if !dry {
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    }
    let mut owners = st.objects[&k].owners.clone();
    if !status_only {
        for (_, (_, set)) in owners.iter_mut() {
            set.retain(|p| !changed.contains(p));
        }
        let e = owners
            .entry(manager.to_owned())
            .or_insert_with(|| ("Update".into(), BTreeSet::new()));
        e.1.extend(changed);
        owners.retain(|_, (_, s)| !s.is_empty());
    }
    let mut s = Stored { obj, owners };
    render_managed(&mut s);
    let out = s.obj.clone();
    if !dry {
        st.version = rv;
        st.objects.insert(k, s);
    }
    (200, out)
}

#[allow(clippy::too_many_arguments)]
fn apply(
    st: &mut State,
    k: Key,
    config: Value,
    manager: &str,
    force: bool,
    status_only: bool,
    dry: bool,
    r: &Route,
) -> (u16, Value) {
    let mut config = config;
    if !status_only && let Some(m) = config.as_object_mut() {
        m.remove("status");
    }
    let Some(cur) = st.objects.get(&k) else {
        if status_only {
            return status(
                404,
                "NotFound",
                &format!("{} \"{}\" not found", k.0, k.2),
                None,
            );
        }
        // Server-side apply of a missing object creates it.
        if let Some(e) = too_big(&config, &k) {
            return e;
        }
        if dry {
            return (201, preview_create(st, config));
        }
        let out = create(st, k, config, manager, "Apply");
        return (201, out);
    };
    let live = cur.obj.clone();
    let mine = leaves(&config);
    let mut conflicts = Vec::new();
    for (other, (_, set)) in &cur.owners {
        if other == manager {
            continue;
        }
        for p in set.intersection(&mine) {
            if get_path(&live, p) != get_path(&config, p) {
                conflicts.push((other.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {}", r.api_version), "field": p}))
            .collect();
        let msg = format!(
            "Apply failed with {} conflict{}: {}",
            conflicts.len(),
            if conflicts.len() == 1 { "" } else { "s" },
            conflicts
                .iter()
                .map(|(m, p)| format!("conflict with \"{m}\" using {}: {p}", r.api_version))
                .collect::<Vec<_>>()
                .join("\n")
        );
        return status(
            409,
            "Conflict",
            &msg,
            Some(json!({"name": k.2, "kind": k.0, "causes": causes})),
        );
    }
    let mut obj = live.clone();
    let previously = cur
        .owners
        .get(manager)
        .map(|(_, s)| s.clone())
        .unwrap_or_default();
    let others: BTreeSet<String> = cur
        .owners
        .iter()
        .filter(|(m, _)| m.as_str() != manager)
        .flat_map(|(_, (_, s))| s.iter().cloned())
        .collect();
    if status_only {
        merge(
            &mut obj,
            &json!({"status": config.get("status").cloned().unwrap_or(json!({}))}),
        );
    } else {
        for p in previously.difference(&mine) {
            if !others.contains(p) {
                remove_path(&mut obj, p);
            }
        }
        // Lists are atomic: replace them whole, merge maps.
        apply_merge(&mut obj, &config);
    }
    // Forced fields move to the applier; others keep what they still own.
    let mut owners = cur.owners.clone();
    for (m, (_, set)) in owners.iter_mut() {
        if m != manager {
            set.retain(|p| {
                !mine.contains(p) || get_path(&live, p) == get_path(&config, p) && !force
            });
        }
    }
    owners.insert(manager.to_owned(), ("Apply".into(), mine));
    owners.retain(|_, (_, s)| !s.is_empty());
    let old = live;
    if let Some(e) = immutable(&old, &obj, &k).or_else(|| too_big(&obj, &k)) {
        return e;
    }
    let o = obj.as_object_mut().unwrap();
    o.insert("apiVersion".into(), json!(r.api_version));
    if spec_of(&obj) != spec_of(&old) && !status_only {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        obj["metadata"]["generation"] = json!(g);
    }
    if !dry {
        obj["metadata"]["resourceVersion"] = json!((st.version + 1).to_string());
    }
    let mut s = Stored { obj, owners };
    render_managed(&mut s);
    let out = s.obj.clone();
    if !dry {
        st.version += 1;
        st.objects.insert(k, s);
    }
    (200, out)
}

/// The API server's size limit on a Secret's or ConfigMap's data: 1 MiB (422).
fn too_big(obj: &Value, k: &Key) -> Option<(u16, Value)> {
    let kind = obj["kind"].as_str().unwrap_or_default();
    let sum = |field: &str, base64: bool| -> usize {
        obj.get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(_, v)| {
                let n = v.as_str().map_or(0, str::len);
                if base64 { n / 4 * 3 } else { n }
            })
            .sum()
    };
    let (size, field) = match kind {
        "Secret" => (sum("data", true) + sum("stringData", false), "data"),
        "ConfigMap" => (sum("data", false) + sum("binaryData", true), "[]"),
        _ => return None,
    };
    (size > 1_048_576).then(|| {
        status(
            422,
            "Invalid",
            &format!(
                "{kind} \"{}\" is invalid: {field}: Too long: must have at most 1048576 bytes",
                k.2
            ),
            Some(
                json!({"name": k.2, "kind": kind, "causes": [{"reason": "FieldValueTooLong",
                "message": "Too long: must have at most 1048576 bytes", "field": field}]}),
            ),
        )
    })
}

/// Fields the API server refuses to change: a Job's pod template and selector, a workload's
/// selector (422, as `kubectl apply` shows it).
fn immutable(old: &Value, new: &Value, k: &Key) -> Option<(u16, Value)> {
    let fields: &[&str] = match old["kind"].as_str() {
        Some("Job") => &["/spec/template", "/spec/selector"],
        Some("Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => &["/spec/selector"],
        _ => &[],
    };
    let kind = old["kind"].as_str().unwrap_or_default();
    let group = old["apiVersion"]
        .as_str()
        .and_then(|v| v.split_once('/'))
        .map(|(g, _)| format!(".{g}"))
        .unwrap_or_default();
    let bad: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| old.pointer(f).is_some() && old.pointer(f) != new.pointer(f))
        .collect();
    if bad.is_empty() {
        return None;
    }
    let causes: Vec<Value> = bad
        .iter()
        .map(|f| {
            json!({"reason": "FieldValueInvalid", "message": "Invalid value: field is immutable",
                        "field": f.trim_start_matches('/').replace('/', ".")})
        })
        .collect();
    Some(status(
        422,
        "Invalid",
        &format!(
            "{kind}{group} \"{}\" is invalid: {}",
            k.2,
            bad.iter()
                .map(|f| format!(
                    "{}: Invalid value: field is immutable",
                    f.trim_start_matches('/').replace('/', ".")
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(
            json!({"name": k.2, "group": group.trim_start_matches('.'), "kind": kind, "causes": causes}),
        ),
    ))
}

fn apply_merge(target: &mut Value, config: &Value) {
    match (target.as_object_mut(), config.as_object()) {
        (Some(t), Some(c)) => {
            for (k, v) in c {
                apply_merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        _ => *target = config.clone(),
    }
}

fn render_managed(s: &mut Stored) {
    let t = now();
    let entries: Vec<Value> = s
        .owners
        .iter()
        .map(|(m, (op, set))| {
            json!({"manager": m, "operation": op, "apiVersion": s.obj["apiVersion"], "time": t,
                   "fieldsType": "FieldsV1", "fieldsV1": {"f:standin": set.iter().collect::<Vec<_>>()}})
        })
        .collect();
    s.obj["metadata"]["managedFields"] = Value::Array(entries);
}

fn delete(st: &mut State, k: &Key) {
    let Some(o) = st.objects.remove(k) else {
        return;
    };
    st.version += 1;
    let mut gone = o.obj.clone();
    gone["metadata"]["resourceVersion"] = json!(st.version.to_string());
    st.deleted.push((k.clone(), gone));
    let uid = o.obj.pointer("/metadata/uid").cloned();
    if k.0 == "namespaces" {
        st.objects.retain(|(_, ns, _), _| *ns != k.2);
        if st.hold_namespaces {
            // The `kubernetes` finalizer is pending: the namespace stays, Terminating.
            let mut o = o;
            o.obj["metadata"]["deletionTimestamp"] = json!(now());
            o.obj["status"] = json!({"phase": "Terminating", "conditions": [
                {"type": "NamespaceFinalizersRemaining", "status": "True",
                 "reason": "SomeFinalizersRemain", "message": "Some content in the namespace has finalizers remaining"}]});
            st.objects.insert(k.clone(), o);
            return;
        }
    }
    // Garbage collection of dependents (pods of a workload).
    let owned: Vec<Key> = st
        .objects
        .iter()
        .filter(|(_, d)| {
            d.obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| refs.iter().any(|r| r.get("uid") == uid.as_ref()))
        })
        .map(|(k, _)| k.clone())
        .collect();
    for d in owned {
        delete(st, &d);
    }
}

/// Label selector: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, ANDed.
fn selects(selector: &str, obj: &Value) -> bool {
    let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    // Split on commas outside parentheses.
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .all(|t| {
            let set = |s: &str| -> Vec<String> {
                s.trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .split(',')
                    .map(|x| x.trim().to_owned())
                    .collect()
            };
            if let Some((k, v)) = t.split_once(" notin ") {
                return get(k.trim()).is_none_or(|x| !set(v).iter().any(|s| s == x));
            }
            if let Some((k, v)) = t.split_once(" in ") {
                return get(k.trim()).is_some_and(|x| set(v).iter().any(|s| s == x));
            }
            if let Some((k, v)) = t.split_once("!=") {
                return get(k.trim()) != Some(v.trim());
            }
            if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                return get(k.trim()) == Some(v.trim());
            }
            if let Some(k) = t.strip_prefix('!') {
                return get(k.trim()).is_none();
            }
            get(t).is_some()
        })
}

/// How a pod of a template behaves: from its images (`bad` never pulls, `crash` crash-loops,
/// `slow` never becomes ready) or, for a crash that only the configuration causes, from a
/// container's `STANDIN_BEHAVIOUR` environment variable (`crash`, `bad`, `slow`).
fn behaviour(containers: &[(String, String)], template: &Value) -> Option<(&'static str, String)> {
    let env_says = template
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| c["env"].as_array().cloned().unwrap_or_default())
        .find(|e| e["name"] == "STANDIN_BEHAVIOUR")
        .and_then(|e| e["value"].as_str().map(str::to_owned))
        .unwrap_or_default();
    containers.iter().find_map(|(_, image)| {
        if image.contains("bad") || env_says == "bad" {
            Some((
                "ImagePullBackOff",
                format!("Back-off pulling image \"{image}\""),
            ))
        } else if image.contains("crash") || env_says == "crash" {
            Some((
                "CrashLoopBackOff",
                "back-off 40s restarting failed container".to_owned(),
            ))
        } else if image.contains("slow") || env_says == "slow" {
            Some(("ContainerCreating", String::new()))
        } else {
            None
        }
    })
}

/// A short hash of a pod template, in the alphabet the controllers use for theirs.
fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in template.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (0..10)
        .map(|i| ALPHABET[((h >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// What the controller needs of a workload.
struct Workload {
    key: Key,
    obj: Value,
    kind: String,
    uid: Value,
    generation: Value,
    template: Value,
    containers: Vec<(String, String)>,
}

impl Workload {
    fn of(st: &State, k: &Key) -> Option<Self> {
        let obj = st.objects.get(k)?.obj.clone();
        let template = obj.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let containers = template
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or("app").to_owned(),
                    c["image"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        Some(Self {
            key: k.clone(),
            kind: obj["kind"].as_str().unwrap_or("").to_owned(),
            uid: obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
            generation: obj
                .pointer("/metadata/generation")
                .cloned()
                .unwrap_or(json!(1)),
            obj,
            template,
            containers,
        })
    }

    fn replicas(&self) -> i64 {
        self.obj
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
    }

    fn owner_ref(&self) -> Value {
        json!([{"apiVersion": self.obj["apiVersion"], "kind": self.kind,
                "name": self.key.2, "uid": self.uid, "controller": true, "blockOwnerDeletion": true}])
    }

    fn on_delete(&self) -> bool {
        self.obj
            .pointer("/spec/updateStrategy/type")
            .and_then(Value::as_str)
            == Some("OnDelete")
    }
}

fn owned_by(st: &State, plural: &str, ns: &str, uid: &Value) -> Vec<Key> {
    st.objects
        .iter()
        .filter(|((p, n, _), d)| {
            p == plural
                && n == ns
                && d.obj
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|r| r.iter().any(|r| r["uid"] == *uid))
        })
        .map(|(k, _)| k.clone())
        .collect()
}

fn label_of(st: &State, k: &Key, label: &str) -> Option<String> {
    st.objects
        .get(k)?
        .obj
        .pointer("/metadata/labels")?
        .get(label)?
        .as_str()
        .map(str::to_owned)
}

fn pod_ready(st: &State, k: &Key) -> bool {
    st.objects
        .get(k)
        .is_some_and(|p| p.obj.pointer("/status/phase") == Some(&json!("Running")))
}

/// Creates a pod of `w`'s template: labels plus the controller's revision label, owned by
/// `owner`; admission (when on) injects a sidecar and pins images to digests, as mutating
/// webhooks do on real clusters.
fn make_pod(
    st: &mut State,
    w: &Workload,
    name: &str,
    extra: (&str, &str),
    owner: Value,
    node: Option<String>,
) -> Key {
    let ns = w.key.1.clone();
    let mut labels = w
        .template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    labels[extra.0] = json!(extra.1);
    let waiting = behaviour(&w.containers, &w.template);
    let ready = waiting.is_none();
    let mut containers: Vec<(String, String, bool)> = w
        .containers
        .iter()
        .map(|(c, image)| {
            let image = match &st.sidecar {
                Some(_) if !image.contains('@') => format!(
                    "{}@sha256:{}",
                    image.split(':').next().unwrap_or(image),
                    template_hash(&json!(image))
                        .repeat(7)
                        .get(..64)
                        .unwrap_or_default()
                ),
                _ => image.clone(),
            };
            (c.clone(), image, true)
        })
        .collect();
    if let Some(sidecar) = &st.sidecar {
        containers.push(("standin-proxy".into(), sidecar.clone(), false));
    }
    let statuses: Vec<Value> = containers
        .iter()
        .map(|(c, image, app)| {
            let stuck = waiting.as_ref().filter(|_| *app);
            let state = match stuck {
                Some((reason, msg)) => json!({"waiting": {"reason": reason, "message": msg}}),
                None => json!({"running": {"startedAt": now()}}),
            };
            let restarts = if stuck.is_some_and(|w| w.0 == "CrashLoopBackOff") {
                4
            } else {
                0
            };
            json!({"name": c, "image": image, "imageID": "", "ready": stuck.is_none(),
                   "restartCount": restarts, "state": state})
        })
        .collect();
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "ownerReferences": owner},
        "spec": {"containers": containers.iter().map(|(c, i, _)| json!({"name": c, "image": i})).collect::<Vec<_>>()},
        "status": {"phase": if ready { "Running" } else { "Pending" }, "containerStatuses": statuses}});
    if let Some(n) = node {
        pod["spec"]["nodeName"] = json!(n);
    }
    let pod_status = pod["status"].clone();
    let pk = key("pods", &ns, name);
    create(st, pk.clone(), pod, "kube-controller-manager", "Update");
    if let Some(p) = st.objects.get_mut(&pk) {
        p.obj["status"] = pod_status;
    }
    pk
}

fn set_status(st: &mut State, k: &Key, status: Value) {
    st.version += 1;
    let rv = st.version.to_string();
    if let Some(w) = st.objects.get_mut(k) {
        w.obj["status"] = status;
        w.obj["metadata"]["resourceVersion"] = json!(rv);
    }
}

/// The rollout controller's first step for a workload's new generation; true if a second
/// step (old pods scaled away once the new ones are ready) is due.
fn control(st: &mut State, k: &Key) -> bool {
    let Some(w) = Workload::of(st, k) else {
        return false;
    };
    if w.obj.pointer("/status/observedGeneration") == Some(&w.generation) {
        return false;
    }
    match w.kind.as_str() {
        "Deployment" => deployment_surge(st, &w),
        "StatefulSet" => {
            statefulset(st, &w);
            false
        }
        _ => {
            daemonset(st, &w);
            false
        }
    }
}

/// A Deployment's new ReplicaSet: the one whose `pod-template-hash` is the template's (a
/// rollback to an earlier template reuses its ReplicaSet), at the next revision.
fn new_replicaset(st: &mut State, w: &Workload) -> (Key, String, i64) {
    let ns = w.key.1.clone();
    let hash = template_hash(&w.template);
    let sets = owned_by(st, "replicasets", &ns, &w.uid);
    let revision_of = |st: &State, k: &Key| {
        st.objects[k]
            .obj
            .pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
            .and_then(Value::as_str)
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let max = sets.iter().map(|k| revision_of(st, k)).max().unwrap_or(0);
    let name = format!("{}-{hash}", w.key.2);
    let rk = key("replicasets", &ns, &name);
    let revision = if sets.contains(&rk) && revision_of(st, &rk) == max {
        max
    } else {
        max + 1
    };
    if !st.objects.contains_key(&rk) {
        let mut template = w.template.clone();
        template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
        let mut selector = w
            .obj
            .pointer("/spec/selector/matchLabels")
            .cloned()
            .unwrap_or(json!({}));
        selector["pod-template-hash"] = json!(hash);
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": ns, "labels": template["metadata"]["labels"],
                         "ownerReferences": w.owner_ref()},
            "spec": {"replicas": w.replicas(), "selector": {"matchLabels": selector}, "template": template}});
        create(st, rk.clone(), rs, "kube-controller-manager", "Update");
    }
    let rev = json!(revision.to_string());
    if let Some(rs) = st.objects.get_mut(&rk) {
        rs.obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = rev.clone();
        rs.obj["spec"]["replicas"] = json!(w.replicas());
    }
    if let Some(d) = st.objects.get_mut(&w.key) {
        d.obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = rev;
    }
    (rk, hash, revision)
}

/// The pods of every ReplicaSet of the Deployment but `except`.
fn old_pods(st: &State, w: &Workload, except: &Key) -> Vec<Key> {
    owned_by(st, "replicasets", &w.key.1, &w.uid)
        .into_iter()
        .filter(|k| k != except)
        .flat_map(|rk| {
            let uid = st.objects[&rk].obj["metadata"]["uid"].clone();
            owned_by(st, "pods", &w.key.1, &uid)
        })
        .collect()
}

/// A rolling update's surge: the new ReplicaSet's pods come up beside the old ones, which
/// stay until the new pods are ready (so a rollout that never becomes ready keeps them).
fn deployment_surge(st: &mut State, w: &Workload) -> bool {
    let (rk, hash, _) = new_replicaset(st, w);
    let rs_uid = st.objects[&rk].obj["metadata"]["uid"].clone();
    let ns = w.key.1.clone();
    for p in owned_by(st, "pods", &ns, &rs_uid) {
        delete(st, &p);
    }
    let mut new = Vec::new();
    for i in 0..w.replicas() {
        let name = format!("{}-g{}-{i}", rk.2, w.generation);
        let owner = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rk.2,
                            "uid": rs_uid, "controller": true}]);
        new.push(make_pod(
            st,
            w,
            &name,
            ("pod-template-hash", &hash),
            owner,
            None,
        ));
    }
    let old = old_pods(st, w, &rk);
    let ready_new = new.iter().filter(|k| pod_ready(st, k)).count() as i64;
    let ready_old = old.iter().filter(|k| pod_ready(st, k)).count() as i64;
    let all_ready = ready_new == w.replicas();
    let replicas = w.replicas() + old.len() as i64;
    let ready = ready_new + ready_old;
    set_status(
        st,
        &w.key,
        json!({"observedGeneration": w.generation, "replicas": replicas, "updatedReplicas": w.replicas(),
            "readyReplicas": ready, "availableReplicas": ready, "unavailableReplicas": (replicas - ready).max(0),
            "conditions": [
                {"type": "Available", "status": if ready > 0 || w.replicas() == 0 { "True" } else { "False" },
                 "reason": if ready > 0 { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }},
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                 "message": format!("ReplicaSet \"{}\" is progressing.", rk.2)}]}),
    );
    if !all_ready {
        return false;
    }
    if old.is_empty() {
        finish_deployment(st, w);
        return false;
    }
    true
}

/// The second step: the old ReplicaSets scaled to zero, their pods gone.
fn finish_deployment(st: &mut State, w: &Workload) {
    let Some(cur) = Workload::of(st, &w.key) else {
        return;
    };
    if cur.generation != w.generation {
        return;
    }
    let hash = template_hash(&w.template);
    let rk = key("replicasets", &w.key.1, &format!("{}-{hash}", w.key.2));
    for p in old_pods(st, w, &rk) {
        delete(st, &p);
    }
    for other in owned_by(st, "replicasets", &w.key.1, &w.uid) {
        if other != rk
            && let Some(rs) = st.objects.get_mut(&other)
        {
            rs.obj["spec"]["replicas"] = json!(0);
        }
    }
    let n = w.replicas();
    set_status(
        st,
        &w.key,
        json!({"observedGeneration": w.generation, "replicas": n, "updatedReplicas": n,
            "readyReplicas": n, "availableReplicas": n, "unavailableReplicas": 0,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                 "message": format!("ReplicaSet \"{}\" has successfully progressed.", rk.2)}]}),
    );
}

/// A StatefulSet: pods `NAME-ORDINAL` labelled with their revision (`NAME-HASH`); a rolling
/// update replaces them from the highest ordinal down to the partition, one at a time,
/// stopping at a pod that does not become ready; OnDelete replaces none (only missing
/// ordinals are created, at the update revision).
fn statefulset(st: &mut State, w: &Workload) {
    let ns = w.key.1.clone();
    let update = format!("{}-{}", w.key.2, template_hash(&w.template));
    let previous = w
        .obj
        .pointer("/status/currentRevision")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let partition = w
        .obj
        .pointer("/spec/updateStrategy/rollingUpdate/partition")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let n = w.replicas();
    for p in owned_by(st, "pods", &ns, &w.uid) {
        let ordinal = p.2.rsplit('-').next().and_then(|o| o.parse::<i64>().ok());
        if ordinal.is_none_or(|o| o >= n) {
            delete(st, &p);
        }
    }
    for i in (0..n).rev() {
        let pk = key("pods", &ns, &format!("{}-{i}", w.key.2));
        let exists = st.objects.contains_key(&pk);
        let current = label_of(st, &pk, "controller-revision-hash");
        if exists && (w.on_delete() || i < partition || current.as_deref() == Some(&update)) {
            continue;
        }
        if exists {
            delete(st, &pk);
        }
        let made = make_pod(
            st,
            w,
            &pk.2,
            ("controller-revision-hash", &update),
            w.owner_ref(),
            None,
        );
        if !pod_ready(st, &made) {
            break;
        }
    }
    let pods: Vec<Key> = (0..n)
        .map(|i| key("pods", &ns, &format!("{}-{i}", w.key.2)))
        .filter(|k| st.objects.contains_key(k))
        .collect();
    let updated = pods
        .iter()
        .filter(|k| label_of(st, k, "controller-revision-hash").as_deref() == Some(&update))
        .count() as i64;
    let ready = pods.iter().filter(|k| pod_ready(st, k)).count() as i64;
    let current = if updated == n {
        update.clone()
    } else {
        previous.unwrap_or_else(|| update.clone())
    };
    set_status(
        st,
        &w.key,
        json!({"observedGeneration": w.generation, "replicas": pods.len(), "readyReplicas": ready,
            "availableReplicas": ready, "currentReplicas": n - updated, "updatedReplicas": updated,
            "currentRevision": current, "updateRevision": update}),
    );
}

/// A DaemonSet over the stand-in's nodes: a ControllerRevision per template (`NAME-HASH`,
/// labelled `controller-revision-hash: HASH`, revision numbers growing), a pod per node
/// carrying that label, replaced node by node until one does not become ready.
fn daemonset(st: &mut State, w: &Workload) {
    let ns = w.key.1.clone();
    let hash = template_hash(&w.template);
    let revisions = owned_by(st, "controllerrevisions", &ns, &w.uid);
    let max = revisions
        .iter()
        .filter_map(|k| st.objects[k].obj["revision"].as_i64())
        .max()
        .unwrap_or(0);
    let ck = key("controllerrevisions", &ns, &format!("{}-{hash}", w.key.2));
    if !st.objects.contains_key(&ck) {
        let mut labels = w
            .template
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        labels["controller-revision-hash"] = json!(hash);
        let cr = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": ck.2, "namespace": ns, "labels": labels, "ownerReferences": w.owner_ref()},
            "data": {"spec": {"template": w.template}}, "revision": max + 1});
        create(st, ck.clone(), cr, "kube-controller-manager", "Update");
    } else if st.objects[&ck].obj["revision"].as_i64() != Some(max) {
        st.objects.get_mut(&ck).expect("revision").obj["revision"] = json!(max + 1);
    }
    let nodes = st.nodes.max(1);
    let mut pods = Vec::new();
    let mut blocked = false;
    for node in 0..nodes {
        let node_name = format!("standin-node-{node}");
        let on_node: Vec<Key> = owned_by(st, "pods", &ns, &w.uid)
            .into_iter()
            .filter(|k| st.objects[k].obj.pointer("/spec/nodeName") == Some(&json!(node_name)))
            .collect();
        let current = on_node.first().cloned();
        let up_to_date = current
            .as_ref()
            .is_some_and(|k| label_of(st, k, "controller-revision-hash").as_deref() == Some(&hash));
        if current.is_some() && (up_to_date || w.on_delete() || blocked) {
            pods.extend(current);
            continue;
        }
        for k in on_node {
            delete(st, &k);
        }
        let name = format!("{}-{node}-g{}", w.key.2, w.generation);
        let made = make_pod(
            st,
            w,
            &name,
            ("controller-revision-hash", &hash),
            w.owner_ref(),
            Some(node_name),
        );
        blocked |= !pod_ready(st, &made);
        pods.push(made);
    }
    let updated = pods
        .iter()
        .filter(|k| label_of(st, k, "controller-revision-hash").as_deref() == Some(&hash))
        .count();
    let ready = pods.iter().filter(|k| pod_ready(st, k)).count();
    set_status(
        st,
        &w.key,
        json!({"observedGeneration": w.generation, "desiredNumberScheduled": nodes,
            "currentNumberScheduled": pods.len(), "numberMisscheduled": 0,
            "updatedNumberScheduled": updated, "numberReady": ready, "numberAvailable": ready,
            "numberUnavailable": nodes - ready}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_only_answers_are_cut_to_metadata_or_refused_in_the_wrong_shape() {
        let list = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
        let one = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
        assert_eq!(metadata_shape(list), Some(MetadataShape::List));
        assert_eq!(
            metadata_shape(&format!("{one}, application/json")),
            Some(MetadataShape::Object)
        );
        assert_eq!(
            metadata_shape("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"),
            None
        );
        assert_eq!(metadata_shape("application/json"), None);
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "data": {"k": "dg=="},
                            "metadata": {"name": "s", "annotations": {"a": "b"}}});
        let (code, v) = MetadataShape::List.transform(
            json!({"apiVersion": "v1", "kind": "SecretList", "metadata": {"resourceVersion": "7"},
                   "items": [secret.clone()]}),
        );
        assert_eq!(code, 200);
        assert_eq!(v["kind"], "PartialObjectMetadataList");
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        assert_eq!(v["items"][0]["kind"], "PartialObjectMetadata");
        assert_eq!(v["items"][0]["metadata"]["annotations"]["a"], "b");
        assert!(v["items"][0].get("data").is_none(), "{v}");
        let (code, v) = MetadataShape::Object.transform(secret.clone());
        assert_eq!(
            (code, v["kind"].as_str()),
            (200, Some("PartialObjectMetadata"))
        );
        assert!(v.get("data").is_none());
        assert_eq!(MetadataShape::List.transform(secret).0, 406);
    }

    #[test]
    fn routes() {
        let r = route("/apis/apps/v1/namespaces/ehr/deployments/web/status").unwrap();
        assert_eq!(
            (
                r.kind.as_str(),
                r.namespace.as_deref(),
                r.name.as_deref(),
                r.sub.as_deref()
            ),
            ("Deployment", Some("ehr"), Some("web"), Some("status"))
        );
        let r = route("/api/v1/namespaces/ehr").unwrap();
        assert_eq!(
            (r.kind.as_str(), r.namespace, r.name.as_deref()),
            ("Namespace", None, Some("ehr"))
        );
        let r = route("/api/v1/namespaces").unwrap();
        assert_eq!((r.kind.as_str(), r.name), ("Namespace", None));
        let r = route("/api/v1/secrets").unwrap();
        assert!(
            r.namespaced && r.namespace.is_none(),
            "list across namespaces"
        );
        assert!(route("/apis/example.com/v1/widgets").is_none());
    }

    #[test]
    fn selectors() {
        let o = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        for (s, want) in [
            ("a=1", true),
            ("a=1,b=3", false),
            ("a!=1", false),
            ("c", false),
            ("!c", true),
            ("b in (1,2)", true),
            ("b notin (2)", false),
            ("", true),
            ("a==1", true),
        ] {
            assert_eq!(selects(s, &o), want, "{s}");
        }
    }

    #[test]
    fn apply_conflicts_with_another_manager_and_removes_dropped_fields() {
        let mut st = State::default();
        create(
            &mut st,
            key("namespaces", "", "ns"),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}),
            "t",
            "Update",
        );
        let r = route("/apis/apps/v1/namespaces/ns/deployments/web").unwrap();
        let k = key("deployments", "ns", "web");
        let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "ns"},
                         "spec": {"replicas": 2, "paused": false}});
        assert_eq!(
            apply(
                &mut st,
                k.clone(),
                cfg.clone(),
                "ferry",
                false,
                false,
                false,
                &r
            )
            .0,
            201
        );
        let mut edited = st.objects[&k].obj.clone();
        edited["spec"]["replicas"] = json!(5);
        assert_eq!(
            update(&mut st, k.clone(), edited, "kubectl-edit", false, false).0,
            200
        );
        let (code, s) = apply(
            &mut st,
            k.clone(),
            cfg.clone(),
            "ferry",
            false,
            false,
            false,
            &r,
        );
        assert_eq!(code, 409);
        assert!(
            s["message"]
                .as_str()
                .unwrap()
                .contains("conflict with \"kubectl-edit\""),
            "{s}"
        );
        assert_eq!(s["details"]["causes"][0]["field"], ".spec.replicas");
        let (code, o) = apply(
            &mut st,
            k.clone(),
            cfg.clone(),
            "ferry",
            true,
            false,
            false,
            &r,
        );
        assert_eq!(code, 200);
        assert_eq!(o["spec"]["replicas"], 2);
        let gen_before = o["metadata"]["generation"].clone();
        let dropped = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 2}});
        let (_, o) = apply(
            &mut st,
            k.clone(),
            dropped,
            "ferry",
            false,
            false,
            false,
            &r,
        );
        assert!(o["spec"].get("paused").is_none(), "{o}");
        assert_ne!(o["metadata"]["generation"], gen_before);
    }
}

//! Kubernetes releases, the pure part: manifests parsed from rendered templates, the objects'
//! identities and kinds, the order they are applied in, what a new revision prunes, per-object
//! diffs, rollout status and the release records kept in the cluster. No IO here: the driver
//! (`drivers::kube`) observes and acts, this module decides.

pub mod diff;
pub mod rbac;
pub mod release;
pub mod rollout;

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Label on every object ferry applies (the Kubernetes recommended label).
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label naming the app (the release) an object belongs to.
pub const APP_LABEL: &str = "ferry.io/app";
/// The site an object was applied for: two sites of one app on one cluster share its
/// cluster-scoped objects' names, and one site's prune or uninstall must not take the other's.
pub const SITE_LABEL: &str = "ferry.io/site";
/// Field manager of every server-side apply ferry makes.
pub const FIELD_MANAGER: &str = "ferry";

/// Names one object: what `kubectl get KIND -n NAMESPACE NAME` finds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectId {
    pub api_version: String,
    pub kind: String,
    /// `None` for cluster-scoped objects (namespaces, cluster roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

impl ObjectId {
    pub fn of(obj: &Value) -> Option<Self> {
        Some(Self {
            api_version: obj.get("apiVersion")?.as_str()?.to_owned(),
            kind: obj.get("kind")?.as_str()?.to_owned(),
            namespace: obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_owned),
            name: obj.pointer("/metadata/name")?.as_str()?.to_owned(),
        })
    }

    pub fn kind_info(&self) -> Option<&'static KindInfo> {
        kind_info(&self.api_version, &self.kind)
    }

    /// `group` and `version` of the object's API (`""` is the core group).
    pub fn group_version(&self) -> (&str, &str) {
        match self.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.api_version.as_str()),
        }
    }
}

/// What ferry knows about a kind: its resource name, scope and place in the apply order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    /// Apply order: lower first; deletes go the other way.
    pub rank: u8,
    /// Whether a rollout is waited for (workloads with replicas).
    pub workload: bool,
}

const fn k(
    api_version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    rank: u8,
    workload: bool,
) -> KindInfo {
    KindInfo {
        api_version,
        kind,
        plural,
        namespaced,
        rank,
        workload,
    }
}

/// The kinds a release may hold, in dependency order: namespaces, policy and accounts,
/// configuration, secrets, storage, access control, services, workloads, then what routes to
/// or scales them. (Helm's install order, with configuration before secrets.)
pub const KINDS: &[KindInfo] = &[
    k("v1", "Namespace", "namespaces", false, 0, false),
    k(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
        1,
        false,
    ),
    k("v1", "ResourceQuota", "resourcequotas", true, 1, false),
    k("v1", "LimitRange", "limitranges", true, 1, false),
    k(
        "policy/v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
        2,
        false,
    ),
    k("v1", "ServiceAccount", "serviceaccounts", true, 2, false),
    k("v1", "ConfigMap", "configmaps", true, 3, false),
    k("v1", "Secret", "secrets", true, 4, false),
    k(
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
        5,
        false,
    ),
    k(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "clusterroles",
        false,
        6,
        false,
    ),
    k(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        7,
        false,
    ),
    k(
        "rbac.authorization.k8s.io/v1",
        "Role",
        "roles",
        true,
        6,
        false,
    ),
    k(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "rolebindings",
        true,
        7,
        false,
    ),
    k("v1", "Service", "services", true, 8, false),
    k("apps/v1", "DaemonSet", "daemonsets", true, 9, true),
    k("apps/v1", "Deployment", "deployments", true, 9, true),
    k("apps/v1", "StatefulSet", "statefulsets", true, 9, true),
    k("batch/v1", "Job", "jobs", true, 10, false),
    k("batch/v1", "CronJob", "cronjobs", true, 10, false),
    k(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
        11,
        false,
    ),
    k(
        "networking.k8s.io/v1",
        "Ingress",
        "ingresses",
        true,
        11,
        false,
    ),
];

pub fn kind_info(api_version: &str, kind: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|i| i.api_version == api_version && i.kind == kind)
}

/// Why a rendered manifest cannot be applied. Names the template and the document in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest {template}{}: {message}", .document.map(|d| format!(" (document {d})")).unwrap_or_default())]
pub struct ManifestError {
    pub template: String,
    /// 1-based index of the YAML document in the rendered template.
    pub document: Option<usize>,
    pub message: String,
}

/// One object of a release, with the template it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub template: String,
    pub object: Value,
}

impl Manifest {
    pub fn id(&self) -> ObjectId {
        ObjectId::of(&self.object).expect("prepared manifests have an identity")
    }
}

/// Where a release goes: the app (release name), its namespace on this site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement<'a> {
    pub app: &'a str,
    pub site: &'a str,
    pub namespace: &'a str,
}

/// Parses one rendered template (multi-document YAML) into objects ready to apply: each has
/// `apiVersion`, `kind` and `metadata.name` of a kind ferry knows, namespaced objects are put
/// in the app's namespace (another namespace is refused), and ferry's labels are set.
pub fn parse(
    template: &str,
    rendered: &str,
    at: &Placement<'_>,
) -> Result<Vec<Manifest>, ManifestError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(rendered).map_err(|e| ManifestError {
        template: template.to_owned(),
        document: None,
        message: format!("the rendered YAML does not parse: {e}"),
    })?;
    let mut out = Vec::new();
    for (n, doc) in docs.into_iter().enumerate() {
        let err = |message: String| ManifestError {
            template: template.to_owned(),
            document: Some(n + 1),
            message,
        };
        if doc.is_null() {
            continue;
        }
        let Value::Object(mut obj) = doc else {
            return Err(err(
                "is not a mapping (an object with apiVersion, kind, metadata)".into(),
            ));
        };
        let field =
            |obj: &serde_json::Map<String, Value>, name: &str| -> Result<String, ManifestError> {
                match obj.get(name) {
                    Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
                    Some(_) => Err(err(format!("`{name}` must be a non-empty string"))),
                    None => Err(err(format!("has no `{name}`"))),
                }
            };
        let api_version = field(&obj, "apiVersion")?;
        let kind = field(&obj, "kind")?;
        let Some(info) = kind_info(&api_version, &kind) else {
            return Err(err(format!(
                "kind `{kind}` of `{api_version}` is not one ferry applies (it knows: {})",
                KINDS
                    .iter()
                    .map(|i| format!("{} {}", i.api_version, i.kind))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        let Value::Object(meta) = meta else {
            return Err(err("`metadata` must be a mapping".into()));
        };
        match meta.get("name") {
            Some(Value::String(s)) if check_dns_subdomain(s).is_ok() => {}
            Some(Value::String(s)) => {
                return Err(err(format!(
                    "metadata.name `{s}` is not a valid object name: {}",
                    check_dns_subdomain(s).unwrap_err()
                )));
            }
            _ => return Err(err("has no `metadata.name`".into())),
        }
        match (
            info.namespaced,
            meta.get("namespace").and_then(Value::as_str),
        ) {
            (true, None) => {
                meta.insert("namespace".into(), Value::String(at.namespace.to_owned()));
            }
            (true, Some(ns)) if ns == at.namespace => {}
            (true, Some(ns)) => {
                return Err(err(format!(
                    "{kind} is put in namespace `{ns}`, but the app's namespace here is `{}`; leave metadata.namespace out",
                    at.namespace
                )));
            }
            (false, Some(_)) => {
                return Err(err(format!(
                    "{kind} is cluster-scoped; metadata.namespace does not belong here"
                )));
            }
            (false, None) => {}
        }
        let labels = meta
            .entry("labels")
            .or_insert_with(|| Value::Object(Default::default()));
        let Value::Object(labels) = labels else {
            return Err(err("metadata.labels must be a mapping".into()));
        };
        labels.insert(MANAGED_BY.into(), Value::String(FIELD_MANAGER.into()));
        labels.insert(
            APP_LABEL.into(),
            Value::String(crate::model::resource_name(at.app)),
        );
        labels.insert(SITE_LABEL.into(), Value::String(at.site.to_owned()));
        out.push(Manifest {
            template: template.to_owned(),
            object: Value::Object(obj),
        });
    }
    Ok(out)
}

/// The objects of a release in apply order (stable within a rank), refusing the same object
/// twice.
pub fn order(mut objects: Vec<Manifest>) -> Result<Vec<Manifest>, ManifestError> {
    let mut seen = BTreeSet::new();
    for m in &objects {
        if !seen.insert(m.id()) {
            return Err(ManifestError {
                template: m.template.clone(),
                document: None,
                message: format!("{} is defined twice in the release", m.id()),
            });
        }
    }
    objects.sort_by_key(|m| m.id().kind_info().map_or(u8::MAX, |i| i.rank));
    Ok(objects)
}

/// What a new revision removes: objects of earlier revisions that it no longer has, workloads
/// first (the reverse of the apply order). Namespaces are never pruned: deleting one deletes
/// everything in it, the release records included.
pub fn prune(previous: &[ObjectId], next: &[ObjectId]) -> Vec<ObjectId> {
    let keep: BTreeSet<&ObjectId> = next.iter().collect();
    let mut out: Vec<ObjectId> = previous
        .iter()
        .filter(|id| !keep.contains(id) && id.kind != "Namespace")
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    out.sort_by_key(|id| std::cmp::Reverse(id.kind_info().map_or(u8::MAX, |i| i.rank)));
    out
}

fn live_label<'a>(live: &'a Value, key: &str) -> Option<&'a str> {
    live.pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

/// A live object is ferry's for `app` on `site` when it carries ferry's labels for both. An
/// object from before the site label is ferry's if it is in a namespace (the app's, per site);
/// a cluster-scoped one without it is left alone (it may be another site's).
pub fn is_ours(live: &Value, app: &str, site: &str) -> bool {
    let app_ok = live_label(live, MANAGED_BY) == Some(FIELD_MANAGER)
        && live_label(live, APP_LABEL) == Some(crate::model::resource_name(app).as_str());
    let site_ok = match live_label(live, SITE_LABEL) {
        Some(s) => s == site,
        None => live.pointer("/metadata/namespace").is_some(),
    };
    app_ok && site_ok
}

/// The other site of `app` a live cluster-scoped object was applied for, if any: applying it
/// for `site` would take it over (and one site's prune would delete what the other uses).
pub fn claimed_by_other_site(live: &Value, app: &str, site: &str) -> Option<String> {
    if live.pointer("/metadata/namespace").is_some()
        || live_label(live, MANAGED_BY) != Some(FIELD_MANAGER)
        || live_label(live, APP_LABEL) != Some(crate::model::resource_name(app).as_str())
    {
        return None;
    }
    live_label(live, SITE_LABEL)
        .filter(|s| *s != site)
        .map(str::to_owned)
}

/// RFC 1123 label (namespace names): lowercase alphanumerics and `-`, at most 63.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1 to 63 characters".into());
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("may hold only lowercase letters, digits and `-`".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// RFC 1123 subdomain (most object names): labels joined by `.`, at most 253.
pub fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    for part in s.split('.') {
        check_dns_label(part)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Placement<'static> = Placement {
        app: "ehr",
        site: "east",
        namespace: "ehr-east",
    };

    fn id(kind: &str, name: &str) -> ObjectId {
        let info = KINDS.iter().find(|i| i.kind == kind).unwrap();
        ObjectId {
            api_version: info.api_version.into(),
            kind: kind.into(),
            namespace: info.namespaced.then(|| "ehr-east".into()),
            name: name.into(),
        }
    }

    /// One line of an app (`ehr@3`) is labelled, selected and recorded as `ehr-v3`: `@` is not
    /// allowed in a label value (`(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`) or a Secret name.
    #[test]
    fn a_line_of_an_app_is_a_valid_label_value_and_name() {
        assert_eq!(crate::model::resource_name("ehr@3"), "ehr-v3");
        assert_eq!(crate::model::resource_name("ehr"), "ehr");
        assert_eq!(
            release::selector("ehr@3"),
            format!("{}=ferry,{APP_LABEL}=ehr-v3", release::OWNER_LABEL)
        );
        assert_eq!(
            release::secret_name("ehr@3", 2),
            format!("{}.ehr-v3.v2", release::FORMAT)
        );
        let docs = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\n";
        let at = Placement {
            app: "ehr@3",
            site: "east",
            namespace: "ehr",
        };
        let objs = parse("t.yaml", docs, &at).unwrap();
        let live = &objs[0].object;
        assert_eq!(live["metadata"]["labels"][APP_LABEL], "ehr-v3");
        assert!(is_ours(live, "ehr@3", "east") && !is_ours(live, "ehr@2", "east"));
    }

    #[test]
    fn parse_sets_namespace_and_labels_and_skips_empty_documents() {
        let text = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  labels: {tier: web}\ndata: {a: '1'}\n---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ehr-east}\n";
        let m = parse("t.yaml", text, &AT).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].object["metadata"]["namespace"], "ehr-east");
        assert_eq!(m[0].object["metadata"]["labels"]["tier"], "web");
        assert_eq!(m[0].object["metadata"]["labels"][MANAGED_BY], "ferry");
        assert_eq!(m[0].object["metadata"]["labels"][APP_LABEL], "ehr");
        assert!(
            m[1].object["metadata"].get("namespace").is_none(),
            "cluster-scoped"
        );
        assert_eq!(m[1].id().to_string(), "Namespace ehr-east");
    }

    #[test]
    fn parse_errors_name_template_document_and_field() {
        let cases = [
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
                "(document 1): has no `metadata.name`",
            ),
            (
                "kind: ConfigMap\nmetadata: {name: a}\n",
                "has no `apiVersion`",
            ),
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
                "(document 2): kind `Widget` of `example.com/v1` is not one ferry applies",
            ),
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: other}\n",
                "namespace `other`, but the app's namespace here is `ehr-east`",
            ),
            (
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, namespace: x}\n",
                "cluster-scoped",
            ),
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Web_1}\n",
                "metadata.name `Web_1` is not a valid object name",
            ),
            ("- a\n- b\n", "is not a mapping"),
            (
                "apiVersion: v1\nkind: [\n",
                "the rendered YAML does not parse",
            ),
        ];
        for (text, want) in cases {
            let e = parse("templates/web.yaml.tera", text, &AT)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("manifest templates/web.yaml.tera"), "{e}");
            assert!(e.contains(want), "want {want:?} in {e}");
        }
    }

    #[test]
    fn order_puts_dependencies_first_and_refuses_duplicates() {
        let docs = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: db}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ehr-east}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\n";
        let m = order(parse("t", docs, &AT).unwrap()).unwrap();
        let kinds: Vec<String> = m.iter().map(|m| m.id().kind).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ConfigMap",
                "Secret",
                "Service",
                "Deployment",
                "Ingress"
            ]
        );
        let twice = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n";
        let e = order(parse("t", twice, &AT).unwrap()).unwrap_err();
        assert!(
            e.to_string()
                .contains("ConfigMap ehr-east/a is defined twice"),
            "{e}"
        );
    }

    #[test]
    fn prune_removes_what_the_new_revision_dropped_workloads_first_never_namespaces() {
        let prev = vec![
            id("Namespace", "ehr-east"),
            id("ConfigMap", "old"),
            id("Service", "web"),
            id("Deployment", "worker"),
            id("Deployment", "web"),
        ];
        let next = vec![id("Service", "web"), id("Deployment", "web")];
        let p = prune(&prev, &next);
        assert_eq!(p, vec![id("Deployment", "worker"), id("ConfigMap", "old")]);
        assert!(prune(&next, &next).is_empty());
    }

    #[test]
    fn ours_needs_both_labels() {
        let mine = serde_json::json!({"metadata": {"namespace": "ehr-east",
            "labels": {MANAGED_BY: "ferry", APP_LABEL: "ehr"}}});
        let helm =
            serde_json::json!({"metadata": {"labels": {MANAGED_BY: "Helm", APP_LABEL: "ehr"}}});
        assert!(
            is_ours(&mine, "ehr", "east"),
            "no site label, in a namespace"
        );
        assert!(!is_ours(&mine, "lab", "east"));
        assert!(!is_ours(&helm, "ehr", "east"));
        // Cluster-scoped: the site label decides; without one it is nobody's to delete.
        let role = |site: Option<&str>| {
            let mut r = serde_json::json!({"metadata": {"name": "ehr-reader",
                "labels": {MANAGED_BY: "ferry", APP_LABEL: "ehr"}}});
            if let Some(s) = site {
                r["metadata"]["labels"][SITE_LABEL] = s.into();
            }
            r
        };
        assert!(is_ours(&role(Some("east")), "ehr", "east"));
        assert!(!is_ours(&role(Some("west")), "ehr", "east"));
        assert!(!is_ours(&role(None), "ehr", "east"));
        assert_eq!(
            claimed_by_other_site(&role(Some("west")), "ehr", "east").as_deref(),
            Some("west")
        );
        assert_eq!(
            claimed_by_other_site(&role(Some("east")), "ehr", "east"),
            None
        );
        assert_eq!(claimed_by_other_site(&mine, "ehr", "west"), None);
    }

    #[test]
    fn dns_names() {
        assert!(check_dns_label("ehr-east-1").is_ok());
        for bad in ["", "-a", "a-", "Ehr", "a_b", &"a".repeat(64)] {
            assert!(check_dns_label(bad).is_err(), "{bad}");
        }
        assert!(check_dns_subdomain("ferry.release.v1.ehr.v3").is_ok());
    }
}

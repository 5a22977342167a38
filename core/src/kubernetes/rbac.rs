//! The least Kubernetes RBAC ferry needs for an inventory: what it reads and writes, and
//! nothing else. `ferry kube rbac` prints it for a cluster administrator to apply.
//!
//! What ferry does on a cluster, and the permission each takes:
//! - namespaces: `get` (does it exist, is it terminating), `create`/`patch` (server-side apply
//!   of a namespace the manifests declare);
//! - release records (Secrets in the app's namespace): `list` (history), `get` (parts, a
//!   record after a lost create), `create` (a new revision), `update` (status under a
//!   resourceVersion), `patch` (the parts of a split record), `delete`/`deletecollection`
//!   (expired records and their parts);
//! - rollout waits: `list` pods, ReplicaSets and ControllerRevisions;
//! - every kind the manifests hold: `get` (plan-time diff, prune and drift checks), `create`
//!   and `patch` (server-side apply, dry-run included), `delete` (prune, uninstall, a Job
//!   replaced).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::ObjectId;

/// A resource as RBAC names it: API group ("" for core) and plural.
pub type Resource = (String, String);

/// What an inventory's Kubernetes apps touch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Need {
    /// The apps' namespaces.
    pub namespaces: BTreeSet<String>,
    /// Namespaced kinds the manifests hold, per namespace.
    pub namespaced: BTreeMap<String, BTreeSet<Resource>>,
    /// Cluster-scoped kinds the manifests hold (namespaces aside).
    pub cluster: BTreeSet<Resource>,
}

impl Need {
    /// Adds an app's objects in `namespace`.
    pub fn add(&mut self, namespace: &str, objects: &[Value]) {
        self.namespaces.insert(namespace.to_owned());
        let kinds = self.namespaced.entry(namespace.to_owned()).or_default();
        for id in objects.iter().filter_map(ObjectId::of) {
            let Some(info) = id.kind_info() else { continue };
            let group = id.group_version().0.to_owned();
            let r = (group, info.plural.to_owned());
            match (info.namespaced, id.kind.as_str()) {
                (_, "Namespace") => {}
                (true, _) => {
                    kinds.insert(r);
                }
                (false, _) => {
                    self.cluster.insert(r);
                }
            }
        }
    }
}

const OBJECT_VERBS: &[&str] = &["get", "create", "patch", "delete"];
const RECORD_VERBS: &[&str] = &[
    "get",
    "list",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": [group], "resources": resources, "verbs": verbs})
}

/// Rules grouping resources of one API group that take the same verbs.
fn object_rules(resources: &BTreeSet<Resource>) -> Vec<Value> {
    let mut by_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (g, r) in resources {
        by_group.entry(g).or_default().push(r);
    }
    by_group
        .into_iter()
        .map(|(g, rs)| rule(g, &rs, OBJECT_VERBS))
        .collect()
}

/// Who the bindings name: `User` NAME or `ServiceAccount` NAMESPACE/NAME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    User(String),
    ServiceAccount { namespace: String, name: String },
}

impl Subject {
    fn to_json(&self) -> Value {
        match self {
            Subject::User(n) => {
                json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": n})
            }
            Subject::ServiceAccount { namespace, name } => {
                json!({"kind": "ServiceAccount", "namespace": namespace, "name": name})
            }
        }
    }
}

/// The objects an administrator applies: the namespaces (a Role needs its namespace), a
/// ClusterRole and its binding (namespaces, cluster-scoped kinds), and per namespace a Role
/// and its binding.
pub fn objects(need: &Need, name: &str, subject: &Subject) -> Vec<Value> {
    let meta = |ns: Option<&str>| {
        let mut m = json!({"name": name, "labels": {"app.kubernetes.io/part-of": "ferry"}});
        if let Some(ns) = ns {
            m["namespace"] = json!(ns);
        }
        m
    };
    let rbac = "rbac.authorization.k8s.io/v1";
    let mut out = Vec::new();
    for ns in &need.namespaces {
        out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    let mut cluster_rules = vec![rule("", &["namespaces"], &["get", "create", "patch"])];
    cluster_rules.extend(object_rules(&need.cluster));
    out.push(
        json!({"apiVersion": rbac, "kind": "ClusterRole", "metadata": meta(None), "rules": cluster_rules}),
    );
    out.push(
        json!({"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": meta(None),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [subject.to_json()]}),
    );
    for (ns, kinds) in &need.namespaced {
        let mut rules = vec![
            rule("", &["secrets"], RECORD_VERBS),
            rule("", &["pods"], &["list"]),
            rule("apps", &["replicasets", "controllerrevisions"], &["list"]),
        ];
        // Secrets the manifests hold are covered by the records' rule.
        let kinds: BTreeSet<Resource> = kinds
            .iter()
            .filter(|(g, r)| !(g.is_empty() && r == "secrets"))
            .cloned()
            .collect();
        rules.extend(object_rules(&kinds));
        out.push(
            json!({"apiVersion": rbac, "kind": "Role", "metadata": meta(Some(ns)), "rules": rules}),
        );
        out.push(
            json!({"apiVersion": rbac, "kind": "RoleBinding", "metadata": meta(Some(ns)),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [subject.to_json()]}),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_rules_cover_records_waits_and_the_manifests_kinds_only() {
        let mut need = Need::default();
        need.add(
            "ehr-east",
            &[
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ehr-east"}}),
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "ehr-east"}}),
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web", "namespace": "ehr-east"}}),
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "ehr-east"}}),
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "ehr-east-reader"}}),
            ],
        );
        let objs = objects(&need, "ferry-deployer", &Subject::User("ferry".into()));
        let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding"
            ]
        );
        let cluster = &objs[1]["rules"];
        assert_eq!(cluster[0]["resources"], json!(["namespaces"]));
        assert_eq!(
            cluster[1]["apiGroups"],
            json!(["rbac.authorization.k8s.io"])
        );
        assert_eq!(cluster[1]["resources"], json!(["clusterroles"]));
        let role = &objs[3];
        assert_eq!(role["metadata"]["namespace"], "ehr-east");
        let rules = role["rules"].as_array().unwrap();
        let find = |g: &str, r: &str| {
            rules
                .iter()
                .find(|x| {
                    x["apiGroups"][0] == g && x["resources"].as_array().unwrap().contains(&json!(r))
                })
                .map(|x| x["verbs"].clone())
        };
        assert_eq!(find("", "secrets"), Some(json!(RECORD_VERBS)));
        assert_eq!(find("", "pods"), Some(json!(["list"])));
        assert_eq!(find("apps", "replicasets"), Some(json!(["list"])));
        assert_eq!(find("apps", "deployments"), Some(json!(OBJECT_VERBS)));
        assert_eq!(find("", "configmaps"), Some(json!(OBJECT_VERBS)));
        assert_eq!(
            find("batch", "jobs"),
            None,
            "nothing the manifests do not hold"
        );
        assert_eq!(
            objs[4]["subjects"][0],
            json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "ferry"})
        );
    }
}

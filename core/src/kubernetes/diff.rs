//! Per-object diffs for a plan: what a release adds, changes (field by field) and removes.
//!
//! With a server that supports it, the "after" side is the server's own answer to a dry-run
//! server-side apply (defaults and admission included) and the whole object is compared; without
//! it, only the fields the manifest sets are compared with the live object.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ObjectId;

/// What a release does to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Add,
    Change,
    /// Deleted and created again: a field that cannot change in place changes (a Job's pod
    /// template).
    Replace,
    Remove,
    Unchanged,
}

/// One field that differs; values of Secrets are never shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// `spec.template.spec.containers[name=web].image`
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectChange {
    pub object: ObjectId,
    pub change: ChangeKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// How the "after" side was obtained: `server-dry-run` or `manifest` (fields it sets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<String>,
}

/// Metadata the server writes; never a difference ferry makes.
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// The part of an object a diff compares: no status, no server-written metadata, and the
/// `kubectl.kubernetes.io/last-applied-configuration` annotation left out.
pub fn comparable(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(map) = o.as_object_mut() {
        map.remove("status");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            for k in SERVER_METADATA {
                meta.remove(*k);
            }
            if let Some(Value::Object(a)) = meta.get_mut("annotations") {
                a.remove("kubectl.kubernetes.io/last-applied-configuration");
                if a.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
    }
    o
}

/// Fields that differ between `live` and `after` (both whole objects).
pub fn full(id: &ObjectId, live: &Value, after: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk(
        "",
        Some(&comparable(live)),
        Some(&comparable(after)),
        false,
        &mut out,
    );
    redact(id, out)
}

/// Fields the manifest sets whose live value differs (no dry-run available).
pub fn subset(id: &ObjectId, live: &Value, desired: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk(
        "",
        Some(&comparable(live)),
        Some(&comparable(desired)),
        true,
        &mut out,
    );
    redact(id, out)
}

/// Applying `desired` over `live` needs a delete and a create: a Job's pod template and
/// selector are immutable (the API server answers 422 to an apply that changes them). Only
/// the fields the manifest sets are compared (the server adds its own labels to both).
pub fn needs_replace(id: &ObjectId, live: &Value, desired: &Value) -> Vec<FieldChange> {
    if id.kind != "Job" {
        return Vec::new();
    }
    subset(id, live, desired)
        .into_iter()
        .filter(|f| f.path.starts_with("spec.template") || f.path.starts_with("spec.selector"))
        .collect()
}

/// A Job that a deployed revision ran, unchanged since, and removed by its
/// `ttlSecondsAfterFinished`: gone by design, neither drift nor something to run again.
pub fn expired_job(desired: &Value, deployed: &[Value]) -> bool {
    desired["kind"] == "Job"
        && desired.pointer("/spec/ttlSecondsAfterFinished").is_some()
        && deployed.contains(desired)
}

fn redact(id: &ObjectId, mut fields: Vec<FieldChange>) -> Vec<FieldChange> {
    if id.kind == "Secret" {
        for f in &mut fields {
            if f.path.starts_with("data") || f.path.starts_with("stringData") {
                let hide = |v: &mut Option<Value>| {
                    if v.is_some() {
                        *v = Some(Value::String("(sensitive)".into()));
                    }
                };
                hide(&mut f.from);
                hide(&mut f.to);
            }
        }
    }
    fields
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Lists whose elements all have a `name` are matched by name (containers, ports, env).
fn by_name(list: &[Value]) -> Option<Vec<(&str, &Value)>> {
    list.iter()
        .map(|v| v.get("name").and_then(Value::as_str).map(|n| (n, v)))
        .collect()
}

fn walk(
    path: &str,
    a: Option<&Value>,
    b: Option<&Value>,
    only_b: bool,
    out: &mut Vec<FieldChange>,
) {
    match (a, b) {
        (Some(x), Some(y)) if x == y => {}
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            for (k, vb) in y {
                walk(&join(path, k), x.get(k), Some(vb), only_b, out);
            }
            if !only_b {
                for (k, va) in x {
                    if !y.contains_key(k) {
                        walk(&join(path, k), Some(va), None, only_b, out);
                    }
                }
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => match (by_name(x), by_name(y)) {
            (Some(nx), Some(ny)) if !ny.is_empty() => {
                for (n, vb) in &ny {
                    let va = nx.iter().find(|(m, _)| m == n).map(|(_, v)| *v);
                    walk(&format!("{path}[name={n}]"), va, Some(vb), only_b, out);
                }
                if !only_b {
                    for (n, va) in &nx {
                        if !ny.iter().any(|(m, _)| m == n) {
                            walk(&format!("{path}[name={n}]"), Some(va), None, only_b, out);
                        }
                    }
                }
            }
            _ if x.len() == y.len() => {
                for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                    walk(&format!("{path}[{i}]"), Some(va), Some(vb), only_b, out);
                }
            }
            _ => out.push(FieldChange {
                path: path.to_owned(),
                from: a.cloned(),
                to: b.cloned(),
            }),
        },
        (None, None) => {}
        _ => out.push(FieldChange {
            path: path.to_owned(),
            from: a.cloned(),
            to: b.cloned(),
        }),
    }
}

/// One line per object, then one per changed field: what `ferry plan` prints.
pub fn render(changes: &[ObjectChange]) -> String {
    let mut s = String::new();
    for c in changes {
        let mark = match c.change {
            ChangeKind::Add => "+",
            ChangeKind::Change => "~",
            ChangeKind::Replace => "-/+",
            ChangeKind::Remove => "-",
            ChangeKind::Unchanged => "=",
        };
        s.push_str(&format!("      {mark} {}\n", c.object));
        for f in &c.fields {
            let show = |v: &Option<Value>| match v {
                None => "(absent)".to_owned(),
                Some(Value::String(s)) => format!("{s:?}"),
                Some(v) => {
                    let t = v.to_string();
                    if t.len() > 80 {
                        format!("{}…", t.chars().take(77).collect::<String>())
                    } else {
                        t
                    }
                }
            };
            s.push_str(&format!(
                "          {}: {} -> {}\n",
                f.path,
                show(&f.from),
                show(&f.to)
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(kind: &str) -> ObjectId {
        ObjectId {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            namespace: Some("ns".into()),
            name: "web".into(),
        }
    }

    fn deployment(image: &str, replicas: u32) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "ns", "resourceVersion": "7", "uid": "u",
                          "managedFields": [{"manager": "ferry"}], "labels": {"a": "1"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "sidecar", "image": "proxy:1"},
                {"name": "web", "image": image, "ports": [{"containerPort": 80}]}
            ]}}},
            "status": {"readyReplicas": 1}
        })
    }

    #[test]
    fn full_diff_names_changed_fields_by_container_name() {
        let live = deployment("ehr:2.4.1", 2);
        let mut after = deployment("ehr:3.0.0", 3);
        after["metadata"]["resourceVersion"] = json!("8");
        after["status"] = json!({});
        let f = full(&id("Deployment"), &live, &after);
        let paths: Vec<&str> = f.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.replicas",
                "spec.template.spec.containers[name=web].image"
            ]
        );
        assert_eq!(f[1].from, Some(json!("ehr:2.4.1")));
        assert_eq!(f[1].to, Some(json!("ehr:3.0.0")));
        assert!(full(&id("Deployment"), &live, &live).is_empty());
    }

    #[test]
    fn full_diff_reports_removed_fields_subset_does_not() {
        let live = json!({"metadata": {"name": "a", "labels": {"x": "1", "gone": "y"}}});
        let after = json!({"metadata": {"name": "a", "labels": {"x": "1"}}});
        let f = full(&id("ConfigMap"), &live, &after);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].path, "metadata.labels.gone");
        assert_eq!(f[0].to, None);
        assert!(subset(&id("ConfigMap"), &live, &after).is_empty());
    }

    #[test]
    fn list_length_change_is_one_field() {
        let live = json!({"spec": {"args": ["a"]}});
        let after = json!({"spec": {"args": ["a", "b"]}});
        let f = full(&id("Deployment"), &live, &after);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].path, "spec.args");
    }

    #[test]
    fn secret_values_are_never_shown() {
        let live = json!({"data": {"password": "b2xk"}});
        let after = json!({"data": {"password": "bmV3", "user": "dQ=="}});
        let f = full(&id("Secret"), &live, &after);
        assert_eq!(f.len(), 2);
        for c in &f {
            assert_eq!(c.to, Some(json!("(sensitive)")), "{c:?}");
        }
        let text = render(&[ObjectChange {
            object: id("Secret"),
            change: ChangeKind::Change,
            fields: f,
            basis: None,
        }]);
        assert!(!text.contains("bmV3") && !text.contains("b2xk"), "{text}");
    }

    #[test]
    fn comparable_drops_server_fields() {
        let c = comparable(&deployment("x", 1));
        assert!(c.get("status").is_none());
        assert!(c["metadata"].get("managedFields").is_none());
        assert!(c["metadata"].get("resourceVersion").is_none());
        assert_eq!(c["metadata"]["labels"]["a"], "1");
    }

    #[test]
    fn a_changed_job_template_is_a_replace_and_an_expired_job_is_not_run_again() {
        let id = ObjectId::of(&json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "migrate", "namespace": "ehr"}}))
        .unwrap();
        let job = |image: &str| {
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate", "namespace": "ehr"},
                   "spec": {"ttlSecondsAfterFinished": 600, "backoffLimit": 2,
                            "template": {"spec": {"restartPolicy": "Never",
                                                   "containers": [{"name": "m", "image": image}]}}}})
        };
        // The server adds its own labels to the live template: not a change.
        let mut live = job("ehr:1");
        live["spec"]["template"]["metadata"] =
            json!({"labels": {"batch.kubernetes.io/job-name": "migrate"}});
        assert!(needs_replace(&id, &live, &job("ehr:1")).is_empty());
        let f = needs_replace(&id, &live, &job("ehr:2"));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].path.contains("image"), "{f:?}");
        let mut more = job("ehr:1");
        more["spec"]["backoffLimit"] = json!(5);
        assert!(
            needs_replace(&id, &live, &more).is_empty(),
            "mutable fields apply in place"
        );
        assert!(expired_job(&job("ehr:1"), &[job("ehr:1")]));
        assert!(!expired_job(&job("ehr:2"), &[job("ehr:1")]));
        let mut kept = job("ehr:1");
        kept["spec"]
            .as_object_mut()
            .unwrap()
            .remove("ttlSecondsAfterFinished");
        assert!(!expired_job(&kept, std::slice::from_ref(&kept)));
    }
}

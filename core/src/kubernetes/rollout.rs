//! Rollout status of a workload, decided from what the API server reports (the rules of
//! `kubectl rollout status`), and the pod states that make waiting pointless.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    Done,
    /// Still going: what is awaited.
    Progressing(String),
    /// Will not finish by waiting: why.
    Failed(String),
}

/// Waiting reasons of a container that a rollout does not recover from by itself.
const HOPELESS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// The rollout state of a Deployment, StatefulSet or DaemonSet (as JSON from the server);
/// other kinds are done once applied.
pub fn state(kind: &str, obj: &Value) -> Result<Rollout, String> {
    let parse_err = |e: serde_json::Error| format!("{kind} status does not parse: {e}");
    match kind {
        "Deployment" => Ok(deployment(
            &serde_json::from_value(obj.clone()).map_err(parse_err)?,
        )),
        "StatefulSet" => Ok(statefulset(
            &serde_json::from_value(obj.clone()).map_err(parse_err)?,
        )),
        "DaemonSet" => Ok(daemonset(
            &serde_json::from_value(obj.clone()).map_err(parse_err)?,
        )),
        _ => Ok(Rollout::Done),
    }
}

fn generation_seen(generation: Option<i64>, observed: Option<i64>) -> Option<Rollout> {
    match (generation, observed) {
        (Some(g), o) if o.unwrap_or(0) < g => Some(Rollout::Progressing(format!(
            "waiting for the controller to observe generation {g} (seen: {})",
            o.unwrap_or(0)
        ))),
        _ => None,
    }
}

pub fn deployment(d: &Deployment) -> Rollout {
    let status = d.status.clone().unwrap_or_default();
    if let Some(r) = generation_seen(d.metadata.generation, status.observed_generation) {
        return r;
    }
    for c in status.conditions.iter().flatten() {
        if c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return Rollout::Failed(format!(
                "progress deadline exceeded: {}",
                c.message.clone().unwrap_or_default()
            ));
        }
        if c.type_ == "ReplicaFailure" && c.status == "True" {
            return Rollout::Failed(format!(
                "replica failure: {}",
                c.message.clone().unwrap_or_default()
            ));
        }
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want {
        return Rollout::Progressing(format!("{updated} of {want} replicas updated"));
    }
    if replicas > updated {
        return Rollout::Progressing(format!(
            "{} old replica(s) pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return Rollout::Progressing(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    Rollout::Done
}

pub fn statefulset(s: &StatefulSet) -> Rollout {
    let status = s.status.clone().unwrap_or_default();
    if let Some(r) = generation_seen(s.metadata.generation, status.observed_generation) {
        return r;
    }
    let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = status.ready_replicas.unwrap_or(0);
    if ready < want {
        return Rollout::Progressing(format!("{ready} of {want} replicas ready"));
    }
    let on_delete = s
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        == Some("OnDelete");
    if !on_delete {
        let updated = status.updated_replicas.unwrap_or(0);
        if updated < want {
            return Rollout::Progressing(format!("{updated} of {want} replicas updated"));
        }
        if status.update_revision.is_some() && status.current_revision != status.update_revision {
            return Rollout::Progressing(format!(
                "waiting for revision {} to replace {}",
                status.update_revision.unwrap_or_default(),
                status.current_revision.unwrap_or_default()
            ));
        }
    }
    Rollout::Done
}

pub fn daemonset(d: &DaemonSet) -> Rollout {
    let Some(status) = d.status.clone() else {
        return Rollout::Progressing("no status yet".into());
    };
    if let Some(r) = generation_seen(d.metadata.generation, status.observed_generation) {
        return r;
    }
    let want = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    if updated < want {
        return Rollout::Progressing(format!("{updated} of {want} pods updated"));
    }
    let available = status.number_available.unwrap_or(0);
    if available < want {
        return Rollout::Progressing(format!("{available} of {want} pods available"));
    }
    Rollout::Done
}

/// The images a workload's pod template asks for.
pub fn template_images(workload: &Value) -> Vec<String> {
    workload
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("image").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// The first pod of the current template (its containers ask for exactly `images`: pods of an
/// older template, still going away, do not count) whose container is stuck in a state waiting
/// will not cure (image pull error, crash loop, bad configuration), as a sentence naming pod,
/// container, reason and image.
pub fn stuck_pod(pods: &[Pod], images: &[String]) -> Option<String> {
    for p in pods {
        let asks: Vec<&str> = p
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .filter_map(|c| c.image.as_deref())
            .collect();
        if asks.len() != images.len() || !asks.iter().all(|a| images.iter().any(|i| i == a)) {
            continue;
        }
        let name = p.metadata.name.clone().unwrap_or_default();
        let Some(status) = &p.status else { continue };
        let all = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for c in all {
            let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
                continue;
            };
            let reason = w.reason.clone().unwrap_or_default();
            if HOPELESS.contains(&reason.as_str()) {
                let what = match reason.as_str() {
                    "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" => "image pull error",
                    "CrashLoopBackOff" => "crash loop",
                    _ => "container cannot start",
                };
                return Some(format!(
                    "{what}: pod {name} container {} is {reason} (image {}, {} restart(s)){}",
                    c.name,
                    c.image,
                    c.restart_count,
                    w.message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dep(generation: i64, status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "generation": generation},
               "spec": {"replicas": 2, "selector": {}, "template": {}},
               "status": status})
    }

    #[test]
    fn deployment_rules() {
        let cases = [
            (
                dep(2, json!({"observedGeneration": 1})),
                "observe generation 2",
            ),
            (
                dep(
                    1,
                    json!({"observedGeneration": 1, "updatedReplicas": 1, "replicas": 2}),
                ),
                "1 of 2 replicas updated",
            ),
            (
                dep(
                    1,
                    json!({"observedGeneration": 1, "updatedReplicas": 2, "replicas": 3}),
                ),
                "1 old replica(s) pending termination",
            ),
            (
                dep(
                    1,
                    json!({"observedGeneration": 1, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 1}),
                ),
                "1 of 2 updated replicas available",
            ),
        ];
        for (d, want) in cases {
            match state("Deployment", &d).unwrap() {
                Rollout::Progressing(m) => assert!(m.contains(want), "{m} / {want}"),
                other => panic!("{other:?} for {want}"),
            }
        }
        let done = dep(
            1,
            json!({"observedGeneration": 1, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2}),
        );
        assert_eq!(state("Deployment", &done).unwrap(), Rollout::Done);
        let deadline = dep(
            1,
            json!({"observedGeneration": 1, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": "ReplicaSet \"web-1\" has timed out progressing."}]}),
        );
        assert!(
            matches!(state("Deployment", &deadline).unwrap(), Rollout::Failed(m) if m.contains("timed out progressing"))
        );
    }

    #[test]
    fn statefulset_waits_for_the_update_revision() {
        let s = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "generation": 3},
            "spec": {"replicas": 1, "selector": {}, "serviceName": "db", "template": {}},
            "status": {"observedGeneration": 3, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
                       "currentRevision": "db-1", "updateRevision": "db-2"}});
        assert!(
            matches!(state("StatefulSet", &s).unwrap(), Rollout::Progressing(m) if m.contains("db-2"))
        );
        let mut done = s.clone();
        done["status"]["currentRevision"] = json!("db-2");
        assert_eq!(state("StatefulSet", &done).unwrap(), Rollout::Done);
        assert_eq!(state("ConfigMap", &json!({})).unwrap(), Rollout::Done);
    }

    #[test]
    fn stuck_pods_name_the_reason() {
        let pod = |reason: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "web-abc"},
                "spec": {"containers": [{"name": "web", "image": "ehr:bad"}]},
                "status": {"containerStatuses": [
                {"name": "web", "image": "ehr:bad", "imageID": "", "ready": false, "restartCount": 4,
                 "state": {"waiting": {"reason": reason, "message": "back-off pulling image"}}}]}}))
            .unwrap()
        };
        let bad = vec!["ehr:bad".to_owned()];
        let m = stuck_pod(&[pod("ImagePullBackOff")], &bad).unwrap();
        assert!(
            m.starts_with(
                "image pull error: pod web-abc container web is ImagePullBackOff (image ehr:bad"
            ),
            "{m}"
        );
        assert!(
            stuck_pod(&[pod("CrashLoopBackOff")], &bad)
                .unwrap()
                .starts_with("crash loop")
        );
        assert_eq!(stuck_pod(&[pod("ContainerCreating")], &bad), None);
        // A pod of the template being replaced (rolling back from the bad image) is not ours.
        assert_eq!(
            stuck_pod(&[pod("ImagePullBackOff")], &["ehr:1".to_owned()]),
            None
        );
    }
}

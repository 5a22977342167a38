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
    }
    // ReplicaFailure=True (a FailedCreate: quota during a surge, a webhook down) is not a
    // verdict: the controller retries, and kubectl ignores it. It is said while waiting.
    let failure = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
        .map(|c| {
            format!(
                " (replica failure: {})",
                c.message.clone().unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want {
        return Rollout::Progressing(format!("{updated} of {want} replicas updated{failure}"));
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

/// kubectl's rules: every replica ready; with a partition P, the pods from ordinal P up
/// updated (`updatedReplicas >= replicas - P`: the ones below stay on the old revision by
/// design); without one, the current revision is the update revision. OnDelete never rolls.
pub fn statefulset(s: &StatefulSet) -> Rollout {
    let status = s.status.clone().unwrap_or_default();
    let strategy = s.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    if strategy.and_then(|u| u.type_.as_deref()) == Some("OnDelete") {
        return Rollout::Failed(
            "updateStrategy OnDelete: pods are replaced only when deleted; there is no rollout to wait for".into(),
        );
    }
    if let Some(r) = generation_seen(s.metadata.generation, status.observed_generation) {
        return r;
    }
    let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = status.ready_replicas.unwrap_or(0);
    if ready < want {
        return Rollout::Progressing(format!("{ready} of {want} replicas ready"));
    }
    let partition = strategy
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .clamp(0, want);
    let updated = status.updated_replicas.unwrap_or(0);
    if updated < want - partition {
        return Rollout::Progressing(if partition > 0 {
            format!(
                "partitioned roll out: {updated} of {} new pods updated (ordinals below {partition} stay)",
                want - partition
            )
        } else {
            format!("{updated} of {want} replicas updated")
        });
    }
    if partition == 0
        && status.update_revision.is_some()
        && status.current_revision != status.update_revision
    {
        return Rollout::Progressing(format!(
            "waiting for revision {} to replace {}",
            status.update_revision.unwrap_or_default(),
            status.current_revision.unwrap_or_default()
        ));
    }
    Rollout::Done
}

pub fn daemonset(d: &DaemonSet) -> Rollout {
    let strategy = d.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    if strategy.and_then(|u| u.type_.as_deref()) == Some("OnDelete") {
        return Rollout::Failed(
            "updateStrategy OnDelete: pods are replaced only when deleted; there is no rollout to wait for".into(),
        );
    }
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

/// The label a Deployment's controller puts on a ReplicaSet and its pods: the hash of the
/// pod template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The label a StatefulSet's or DaemonSet's controller puts on its pods (and a DaemonSet's
/// ControllerRevisions): which revision of the template a pod runs.
pub const REVISION_HASH: &str = "controller-revision-hash";
/// The revision a Deployment is at, and the revision of each of its ReplicaSets.
pub const DEPLOYMENT_REVISION: &str = "deployment.kubernetes.io/revision";

/// What must be listed (plural, apps/v1) to tell a workload's new pods from its old ones:
/// a Deployment's ReplicaSets, a DaemonSet's ControllerRevisions; a StatefulSet names its
/// revision in its status.
pub fn revisions_of(kind: &str) -> Option<(&'static str, &'static str)> {
    match kind {
        "Deployment" => Some(("ReplicaSet", "replicasets")),
        "DaemonSet" => Some(("ControllerRevision", "controllerrevisions")),
        _ => None,
    }
}

fn controlled_by(obj: &Value, uid: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r["uid"].as_str() == Some(uid) && r["controller"].as_bool() == Some(true))
        })
}

fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

/// The label (key, value) that the pods of the template being rolled out carry, as the
/// controllers set it: a Deployment's new ReplicaSet (controlled by it, at its revision) and
/// its `pod-template-hash`; a StatefulSet's `status.updateRevision`; a DaemonSet's newest
/// ControllerRevision. `owned` is what `revisions_of` names, listed in the namespace. None
/// until the controller has made it (images are not compared: admission rewrites them and
/// adds sidecars, and a fix-forward may keep the image of the broken revision).
pub fn new_pods_label(kind: &str, workload: &Value, owned: &[Value]) -> Option<(String, String)> {
    let uid = workload.pointer("/metadata/uid").and_then(Value::as_str)?;
    // Until the controller has seen the new generation, its labels name the old template.
    let generation = workload
        .pointer("/metadata/generation")
        .and_then(Value::as_i64);
    let observed = workload
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    if generation.is_some_and(|g| observed.unwrap_or(0) < g) {
        return None;
    }
    let mine = || owned.iter().filter(|o| controlled_by(o, uid));
    match kind {
        "Deployment" => {
            let revision = annotation(workload, DEPLOYMENT_REVISION)?;
            let rs = mine().find(|rs| annotation(rs, DEPLOYMENT_REVISION) == Some(revision))?;
            let hash = label(rs, POD_TEMPLATE_HASH)?;
            Some((POD_TEMPLATE_HASH.into(), hash.into()))
        }
        "StatefulSet" => {
            let rev = workload.pointer("/status/updateRevision")?.as_str()?;
            Some((REVISION_HASH.into(), rev.into()))
        }
        "DaemonSet" => {
            let newest = mine().max_by_key(|cr| cr["revision"].as_i64().unwrap_or(0))?;
            let hash = label(newest, REVISION_HASH)?;
            Some((REVISION_HASH.into(), hash.into()))
        }
        _ => None,
    }
}

/// A StatefulSet or DaemonSet whose pods are replaced only when someone deletes them: no
/// rollout to wait for (kubectl refuses to wait on it too). Said at plan time.
pub fn unwaitable(obj: &Value) -> Option<String> {
    let kind = obj["kind"].as_str()?;
    if !matches!(kind, "StatefulSet" | "DaemonSet") {
        return None;
    }
    (obj.pointer("/spec/updateStrategy/type").and_then(Value::as_str) == Some("OnDelete")).then(|| {
        format!(
            "{kind} {} has updateStrategy OnDelete: its pods change only when someone deletes them, so there is no rollout to wait for (kubectl rollout status refuses it too); use RollingUpdate (with a partition to hold pods back)",
            obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?")
        )
    })
}

/// A container of a new pod in a state that waiting may not cure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// The workload the pod is of (`Deployment ns/name`), once known.
    pub workload: String,
    pub pod: String,
    pub container: String,
    pub reason: String,
    pub image: String,
    pub restarts: i32,
    pub message: Option<String>,
}

impl Stuck {
    fn key(&self) -> (String, String, String) {
        (
            self.pod.clone(),
            self.container.clone(),
            self.reason.clone(),
        )
    }

    pub fn sentence(&self) -> String {
        let what = match self.reason.as_str() {
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" => "image pull error",
            "CrashLoopBackOff" => "crash loop",
            _ => "container cannot start",
        };
        format!(
            "{}{what}: pod {} container {} is {} (image {}, {} restart(s)){}",
            if self.workload.is_empty() {
                String::new()
            } else {
                format!("{}: ", self.workload)
            },
            self.pod,
            self.container,
            self.reason,
            self.image,
            self.restarts,
            self.message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        )
    }
}

/// The containers (init, app and injected sidecars alike, by name) of the pods carrying
/// `label` that wait for a hopeless-looking reason; pods being deleted do not count.
pub fn stuck_containers(pods: &[Pod], label: (&str, &str)) -> Vec<Stuck> {
    let mut out = Vec::new();
    for p in pods {
        let labels = p.metadata.labels.as_ref();
        if labels.and_then(|l| l.get(label.0)).map(String::as_str) != Some(label.1)
            || p.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
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
                out.push(Stuck {
                    workload: String::new(),
                    pod: p.metadata.name.clone().unwrap_or_default(),
                    container: c.name.clone(),
                    reason,
                    image: c.image.clone(),
                    restarts: c.restart_count,
                    message: w.message.clone(),
                });
            }
        }
    }
    out
}

/// Fails a rollout only when a container stays stuck: kubectl only warns, because a pull
/// error or a crash loop can be transient (a registry hiccup, a dependency starting). The
/// same pod, container and reason seen at every look for `patience` is hopeless.
#[derive(Debug)]
pub struct StuckWatch {
    patience: std::time::Duration,
    since: std::collections::BTreeMap<(String, String, String), std::time::Duration>,
}

impl StuckWatch {
    pub fn new(patience: std::time::Duration) -> Self {
        Self {
            patience,
            since: Default::default(),
        }
    }

    /// One look at `now` (time since the wait began): the sentence of a container stuck for
    /// long enough, or None. What is not stuck at this look starts over.
    pub fn see(&mut self, now: std::time::Duration, stuck: &[Stuck]) -> Option<String> {
        let seen: std::collections::BTreeSet<_> = stuck.iter().map(Stuck::key).collect();
        self.since.retain(|k, _| seen.contains(k));
        for s in stuck {
            let since = *self.since.entry(s.key()).or_insert(now);
            if now.saturating_sub(since) >= self.patience {
                return Some(format!(
                    "{} for {}s",
                    s.sentence(),
                    now.saturating_sub(since).as_secs()
                ));
            }
        }
        None
    }
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
    fn statefulset_partition_and_on_delete() {
        let sts = |partition: Value, strategy: &str, updated: i64| {
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "db", "generation": 2},
                "spec": {"replicas": 3, "selector": {}, "serviceName": "db", "template": {},
                         "updateStrategy": {"type": strategy, "rollingUpdate": {"partition": partition}}},
                "status": {"observedGeneration": 2, "replicas": 3, "readyReplicas": 3,
                           "updatedReplicas": updated, "currentRevision": "db-1", "updateRevision": "db-2"}})
        };
        // Partition 1: ordinals 1 and 2 move; the revisions never become equal.
        assert!(matches!(
            state("StatefulSet", &sts(json!(1), "RollingUpdate", 1)).unwrap(),
            Rollout::Progressing(m) if m.contains("1 of 2 new pods")
        ));
        assert_eq!(
            state("StatefulSet", &sts(json!(1), "RollingUpdate", 2)).unwrap(),
            Rollout::Done
        );
        assert!(matches!(
            state("StatefulSet", &sts(json!(0), "RollingUpdate", 3)).unwrap(),
            Rollout::Progressing(m) if m.contains("db-2")
        ));
        assert!(matches!(
            state("StatefulSet", &sts(json!(0), "OnDelete", 0)).unwrap(),
            Rollout::Failed(m) if m.contains("OnDelete")
        ));
        let obj = sts(json!(0), "OnDelete", 0);
        assert!(unwaitable(&obj).unwrap().contains("StatefulSet db"));
        assert_eq!(unwaitable(&sts(json!(0), "RollingUpdate", 0)), None);
    }

    #[test]
    fn replica_failure_is_not_a_verdict() {
        let d = dep(
            1,
            json!({"observedGeneration": 1, "updatedReplicas": 1, "replicas": 2, "conditions": [
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                 "message": "exceeded quota: compute"}]}),
        );
        assert!(matches!(
            state("Deployment", &d).unwrap(),
            Rollout::Progressing(m) if m.contains("exceeded quota")
        ));
    }

    fn owner(uid: &str) -> Value {
        json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": uid, "controller": true}])
    }

    #[test]
    fn new_pods_are_told_by_the_controllers_labels() {
        let d = json!({"kind": "Deployment", "metadata": {"name": "web", "uid": "u1", "generation": 4,
            "annotations": {DEPLOYMENT_REVISION: "3"}}, "status": {"observedGeneration": 4}});
        let mut unseen = d.clone();
        unseen["metadata"]["generation"] = json!(5);
        let rs = |name: &str, hash: &str, rev: &str, uid: &str| {
            json!({"metadata": {"name": name, "labels": {POD_TEMPLATE_HASH: hash},
                "annotations": {DEPLOYMENT_REVISION: rev}, "ownerReferences": owner(uid)}})
        };
        let owned = [
            rs("web-old", "old", "2", "u1"),
            rs("web-new", "new", "3", "u1"),
            // Another Deployment's ReplicaSet at the same revision number.
            rs("api-x", "other", "3", "u2"),
        ];
        assert_eq!(
            new_pods_label("Deployment", &d, &owned),
            Some((POD_TEMPLATE_HASH.into(), "new".into()))
        );
        assert_eq!(new_pods_label("Deployment", &d, &owned[..1]), None);
        // A generation the controller has not seen yet: its labels are the old template's.
        assert_eq!(new_pods_label("Deployment", &unseen, &owned), None);
        let s = json!({"kind": "StatefulSet", "metadata": {"uid": "u3"},
                       "status": {"updateRevision": "db-7f9"}});
        assert_eq!(
            new_pods_label("StatefulSet", &s, &[]),
            Some((REVISION_HASH.into(), "db-7f9".into()))
        );
        let ds = json!({"kind": "DaemonSet", "metadata": {"uid": "u4"}});
        let cr = |hash: &str, rev: i64| {
            json!({"metadata": {"labels": {REVISION_HASH: hash}, "ownerReferences": owner("u4")},
                   "revision": rev})
        };
        assert_eq!(
            new_pods_label("DaemonSet", &ds, &[cr("a", 1), cr("c", 3), cr("b", 2)]),
            Some((REVISION_HASH.into(), "c".into()))
        );
    }

    fn pod(name: &str, hash: &str, containers: Value, deleting: bool) -> Pod {
        let mut p = json!({"metadata": {"name": name, "labels": {POD_TEMPLATE_HASH: hash}},
            "spec": {"containers": []}, "status": {"containerStatuses": containers}});
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2026-12-02T10:00:00Z");
        }
        serde_json::from_value(p).unwrap()
    }

    fn waiting(name: &str, image: &str, reason: &str) -> Value {
        json!({"name": name, "image": image, "imageID": "", "ready": false, "restartCount": 4,
               "state": {"waiting": {"reason": reason, "message": "back-off"}}})
    }

    #[test]
    fn stuck_containers_of_the_new_pods_only() {
        let running = json!({"name": "istio-proxy", "image": "proxy@sha256:ab", "imageID": "",
            "ready": true, "restartCount": 0, "state": {"running": {}}});
        let pods = [
            // The old template's pods crash with the same image: not ours to judge.
            pod(
                "web-old-1",
                "old",
                json!([waiting("web", "ehr:1", "CrashLoopBackOff")]),
                false,
            ),
            // A new pod with an injected sidecar and a digest-rewritten image.
            pod(
                "web-new-1",
                "new",
                json!([waiting("web", "ehr@sha256:cd", "ImagePullBackOff"), running]),
                false,
            ),
            // A new pod already being deleted.
            pod(
                "web-new-2",
                "new",
                json!([waiting("web", "ehr:1", "CrashLoopBackOff")]),
                true,
            ),
            pod(
                "web-new-3",
                "new",
                json!([waiting("web", "ehr:1", "ContainerCreating")]),
                false,
            ),
        ];
        let stuck = stuck_containers(&pods, (POD_TEMPLATE_HASH, "new"));
        assert_eq!(stuck.len(), 1, "{stuck:?}");
        assert!(
            stuck[0]
                .sentence()
                .starts_with("image pull error: pod web-new-1 container web is ImagePullBackOff (image ehr@sha256:cd"),
            "{}",
            stuck[0].sentence()
        );
        assert!(stuck_containers(&pods, (POD_TEMPLATE_HASH, "none")).is_empty());
    }

    #[test]
    fn a_stuck_container_fails_only_when_it_stays_stuck() {
        let s = |pod: &str| Stuck {
            workload: String::new(),
            pod: pod.into(),
            container: "web".into(),
            reason: "CrashLoopBackOff".into(),
            image: "ehr:1".into(),
            restarts: 3,
            message: None,
        };
        let secs = std::time::Duration::from_secs;
        let mut w = StuckWatch::new(secs(30));
        assert_eq!(w.see(secs(0), &[s("a")]), None);
        assert_eq!(w.see(secs(20), &[s("a")]), None);
        // Recovered at one look: the clock starts over.
        assert_eq!(w.see(secs(25), &[]), None);
        assert_eq!(w.see(secs(40), &[s("a")]), None);
        assert_eq!(w.see(secs(60), &[s("a"), s("b")]), None);
        let m = w.see(secs(70), &[s("a"), s("b")]).unwrap();
        assert!(
            m.starts_with("crash loop: pod a container web") && m.ends_with("for 30s"),
            "{m}"
        );
    }
}

//! The Kubernetes driver against the STAND-IN API server (`kube-standin`): no real API server
//! can be installed where these tests run. The CLI suite (tests/cli/kube.rs) can also run
//! against a real cluster; these tests inject faults only the stand-in can.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube_standin::StandIn;

use super::*;
use crate::drivers::{RenderedFile, compliance};
use crate::model::{App, Cloud, CloudKind, HealthCheck, TargetKind};
use crate::target::TargetRef;

struct World {
    server: StandIn,
    dir: tempfile::TempDir,
    lines: Arc<Mutex<Vec<String>>>,
}

async fn world() -> World {
    let server = StandIn::start_async("127.0.0.1:0").await;
    server.set_rollout_delay(Duration::from_millis(50));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig()).unwrap();
    World {
        server,
        dir,
        lines: Arc::default(),
    }
}

impl World {
    fn driver(&self) -> KubeDriver {
        let lines = self.lines.clone();
        let mut d = KubeDriver::new().with_say(Arc::new(move |l| lines.lock().unwrap().push(l)));
        d.poll = Duration::from_millis(30);
        d.backoff = Duration::from_millis(5);
        d
    }

    fn said(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn spec(&self) -> TargetSpec {
        spec_at(self.dir.path(), "kubeconfig")
    }
}

fn spec_at(base: &Path, kubeconfig: &str) -> TargetSpec {
    let app = App {
        id: "ehr".into(),
        version: "1.0.0".into(),
        artifact: String::new(),
        target: TargetKind::Kubernetes,
        sites: vec!["east".into()],
        health_check: HealthCheck::default(),
        restart: None,
        depends_on: vec![],
        config: vec![],
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        keep_releases: 3,
        docker: None,
        kubernetes: Some(KubernetesApp {
            namespace: "ehr-{site}".into(),
            manifests: vec!["web.yaml".into()],
            values: BTreeMap::new(),
            rollout_timeout_seconds: 5,
            // The stand-in's stuck pods never recover: fail at first sight.
            stuck_seconds: 0,
        }),
        lines: vec![],
        lifecycle: None,
        line: None,
    };
    let cloud = Cloud {
        id: "k1".into(),
        kind: CloudKind::Kubernetes,
        local: None,
        aws: None,
        kubernetes: Some(KubernetesCloud {
            kubeconfig: Some(kubeconfig.into()),
            context: None,
            in_cluster: false,
            max_attempts: 4,
            timeout_seconds: 5,
        }),
        docker: None,
    };
    TargetSpec {
        target: TargetRef::new("east", "k1", "ehr", TargetKind::Kubernetes),
        app: app.into(),
        cloud: Some(cloud),
        base_dir: base.to_owned(),
        env: vec![],
        secrets: vec![],
        ssh: None,
        docker: None,
        fence: None,
    }
}

/// A release: namespace, config, service, deployment running `image`, plus `extra` documents.
fn bundle(version: &str, image: &str, extra: &str) -> ReleaseBundle {
    let text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ehr-east}}\n---\n\
apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - {{name: web, image: \"{image}\"}}\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{selector: {{app: web}}, ports: [{{port: 80}}]}}\n---\n\
apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: web}}\ndata: {{VERSION: \"{version}\"}}\n{extra}"
    );
    ReleaseBundle {
        version: version.into(),
        artifact: Default::default(),
        artifact_sha256: String::new(),
        files: vec![RenderedFile {
            dest: "web.yaml".into(),
            contents: text,
        }],
        plan_id: format!("plan-{version}"),
    }
}

const WORKER: &str = "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: worker}\nspec:\n  selector: {matchLabels: {app: worker}}\n  template:\n    metadata: {labels: {app: worker}}\n    spec: {containers: [{name: w, image: worker:1}]}\n";

async fn live(w: &World, d: &KubeDriver, kind: &str, name: &str) -> Option<Value> {
    let spec = w.spec();
    let cx = d.cx(&spec).await.unwrap();
    let info = k8s::KINDS.iter().find(|i| i.kind == kind).unwrap();
    let id = ObjectId {
        api_version: info.api_version.into(),
        kind: kind.into(),
        namespace: info.namespaced.then(|| "ehr-east".into()),
        name: name.into(),
    };
    d.get(&cx, &id).await.unwrap()
}

#[tokio::test]
async fn kube_driver_passes_the_compliance_suite() {
    let w = world().await;
    let d = w.driver();
    compliance::run(
        &d,
        &w.spec(),
        &bundle("1.0.0", "ehr:1.0.0", ""),
        &bundle("2.0.0", "ehr:2.0.0", ""),
    )
    .await;
    // Every revision was recorded; the uninstall kept them for the audit trail.
    let h = d.releases(&w.spec()).await.unwrap();
    assert!(h.records.len() >= 3, "{:?}", h.records.len());
    assert!(h.records.iter().all(|r| r.status == Status::Uninstalled));
    assert!(live(&w, &d, "Deployment", "web").await.is_none());
    assert!(
        live(&w, &d, "Namespace", "ehr-east").await.is_some(),
        "namespaces are never deleted"
    );
}

#[tokio::test]
async fn upgrade_prunes_what_the_new_revision_dropped_and_keeps_foreign_objects() {
    let w = world().await;
    let d = w.driver();
    let spec = w.spec();
    d.apply(&spec, &bundle("1.0.0", "ehr:1", WORKER))
        .await
        .unwrap();
    d.verify(&spec, "1.0.0").await.unwrap();
    assert!(live(&w, &d, "Deployment", "worker").await.is_some());
    d.apply(&spec, &bundle("2.0.0", "ehr:2", "")).await.unwrap();
    d.verify(&spec, "2.0.0").await.unwrap();
    assert!(
        live(&w, &d, "Deployment", "worker").await.is_none(),
        "pruned"
    );
    let web = live(&w, &d, "Deployment", "web").await.unwrap();
    assert_eq!(
        web.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!("ehr:2"))
    );
    let managers: Vec<&str> = web["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"ferry"), "{managers:?}");
    assert!(
        w.said()
            .contains("prune   east/k1/ehr: deleted Deployment ehr-east/worker")
    );
    let h = d.releases(&spec).await.unwrap();
    let st: Vec<(u32, Status)> = h.records.iter().map(|r| (r.revision, r.status)).collect();
    assert_eq!(st, [(1, Status::Superseded), (2, Status::Deployed)]);
    assert_eq!(
        d.receipt(&spec, "2.0.0").await.unwrap()["release_record"],
        "ehr-east/ferry.release.v1.ehr.v2"
    );
}

#[tokio::test]
async fn a_bad_image_fails_the_rollout_with_the_reason_and_back_out_returns() {
    let w = world().await;
    let d = w.driver();
    let spec = w.spec();
    d.apply(&spec, &bundle("1.0.0", "ehr:1", "")).await.unwrap();
    d.verify(&spec, "1.0.0").await.unwrap();
    d.apply(&spec, &bundle("2.0.0", "ehr:2-bad", ""))
        .await
        .unwrap();
    let e = d.verify(&spec, "2.0.0").await.unwrap_err().to_string();
    assert!(e.contains("image pull error"), "{e}");
    assert!(e.contains("ImagePullBackOff"), "{e}");
    let o = d.observe(&spec).await.unwrap();
    assert_eq!(
        o.current.as_deref(),
        Some("1.0.0"),
        "rev 1 stays the deployed one"
    );
    assert!(
        o.drift
            .iter()
            .any(|d| d.contains("revision 2 (2.0.0) is failed")),
        "{o:?}"
    );
    d.undo(
        &spec,
        &Undo::SwitchTo {
            version: "1.0.0".into(),
            revision: None,
        },
    )
    .await
    .unwrap();
    let h = d.releases(&spec).await.unwrap();
    let last = h.latest().unwrap();
    assert_eq!(
        (last.revision, last.rollback_of, last.status),
        (3, Some(1), Status::Deployed)
    );
    let web = live(&w, &d, "Deployment", "web").await.unwrap();
    assert_eq!(
        web.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!("ehr:1"))
    );
}

#[tokio::test]
async fn crash_loops_and_timeouts_are_named() {
    let w = world().await;
    let d = w.driver();
    let spec = w.spec();
    d.apply(&spec, &bundle("1.0.0", "ehr:crash", ""))
        .await
        .unwrap();
    let e = d.verify(&spec, "1.0.0").await.unwrap_err().to_string();
    assert!(
        e.contains("crash loop") && e.contains("CrashLoopBackOff"),
        "{e}\n{}",
        w.said()
    );
    let mut slow = spec.clone();
    Arc::make_mut(&mut slow.app)
        .kubernetes
        .as_mut()
        .unwrap()
        .rollout_timeout_seconds = 1;
    d.apply(&slow, &bundle("1.0.1", "ehr:slow", ""))
        .await
        .unwrap();
    let e = d.verify(&slow, "1.0.1").await.unwrap_err().to_string();
    assert!(e.contains("rollout timed out after 1s"), "{e}");
    // The crash-looping pods of 1.0.0 stay beside the new ones that never become ready.
    assert!(e.contains("2 old replica(s) pending termination"), "{e}");
}

#[tokio::test]
async fn a_failed_first_install_can_be_cleaned_up() {
    let w = world().await;
    let d = w.driver();
    let spec = w.spec();
    d.apply(&spec, &bundle("1.0.0", "ehr:bad", WORKER))
        .await
        .unwrap();
    assert!(d.verify(&spec, "1.0.0").await.is_err());
    let o = d.observe(&spec).await.unwrap();
    assert_eq!(o.current, None, "nothing was ever deployed");
    assert!(o.facts["latest_revision"].contains("failed"), "{o:?}");
    // What Helm cannot do ("has no deployed releases"): a new install goes ahead...
    d.apply(&spec, &bundle("1.0.1", "ehr:1.0.1", ""))
        .await
        .unwrap();
    d.verify(&spec, "1.0.1").await.unwrap();
    assert!(
        live(&w, &d, "Deployment", "worker").await.is_none(),
        "the failed revision's leftovers are pruned too"
    );
    // ... and an uninstall removes everything ferry made.
    d.undo(&spec, &Undo::Uninstall).await.unwrap();
    assert!(live(&w, &d, "Deployment", "web").await.is_none());
    assert!(live(&w, &d, "ConfigMap", "web").await.is_none());
}

#[tokio::test]
async fn a_conflict_names_the_other_field_manager() {
    let w = world().await;
    let d = w.driver();
    let spec = w.spec();
    d.apply(&spec, &bundle("1.0.0", "ehr:1", "")).await.unwrap();
    d.verify(&spec, "1.0.0").await.unwrap();
    // Someone scales the deployment by hand (an update by another manager takes the field).
    let cx = d.cx(&spec).await.unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(
        cx.client.clone(),
        "ehr-east",
        &resource(&ObjectId::of(&json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}})).unwrap()).unwrap(),
    );
    let pp = PatchParams {
        field_manager: Some("kubectl-scale".into()),
        ..Default::default()
    };
    api.patch("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 5}})))
        .await
        .unwrap();
    let e = d
        .apply(&spec, &bundle("2.0.0", "ehr:2", ""))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("409 conflict"), "{e}");
    assert!(
        e.contains("field .spec.replicas is managed by `kubectl-scale`"),
        "{e}"
    );
    let h = d.releases(&spec).await.unwrap();
    assert_eq!(h.latest().unwrap().status, Status::Failed);
    // The plan-time preview says the same before anything is changed.
    let e = d
        .preview(&spec, &bundle("2.0.0", "ehr:2", ""))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("kubectl-scale"), "{e}");
}

#[tokio::test]
async fn preview_shows_added_changed_and_removed_objects_from_a_server_dry_run() {
    let w = world().await;
    let d = w.driver();
    let spec = w.spec();
    // Before the namespace exists, everything is an addition.
    let p = d
        .preview(&spec, &bundle("1.0.0", "ehr:1", WORKER))
        .await
        .unwrap()
        .unwrap();
    assert!(p.iter().all(|c| c.change == ChangeKind::Add), "{p:?}");
    assert_eq!(p.len(), 5);
    d.apply(&spec, &bundle("1.0.0", "ehr:1", WORKER))
        .await
        .unwrap();
    d.verify(&spec, "1.0.0").await.unwrap();
    let before = w.server.requests().len();
    let p = d
        .preview(&spec, &bundle("2.0.0", "ehr:2", ""))
        .await
        .unwrap()
        .unwrap();
    let text = diff::render(&p);
    assert!(text.contains("~ Deployment ehr-east/web"), "{text}");
    assert!(
        text.contains("spec.template.spec.containers[name=web].image: \"ehr:1\" -> \"ehr:2\""),
        "{text}"
    );
    assert!(
        text.contains("data.VERSION: \"1.0.0\" -> \"2.0.0\""),
        "{text}"
    );
    assert!(text.contains("= Service ehr-east/web"), "{text}");
    assert!(text.contains("= Namespace ehr-east"), "{text}");
    assert!(text.contains("- Deployment ehr-east/worker"), "{text}");
    assert!(
        p.iter()
            .filter(|c| c.basis.as_deref() == Some("server-dry-run"))
            .count()
            >= 3
    );
    // The preview used dry-run applies and changed nothing.
    let reqs = w.server.requests()[before..].to_vec();
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("PATCH") && r.contains("dryRun=All")),
        "{reqs:?}"
    );
    assert!(
        !reqs
            .iter()
            .any(|r| r.starts_with("PATCH") && !r.contains("dryRun=All")),
        "{reqs:?}"
    );
    assert!(live(&w, &d, "Deployment", "worker").await.is_some());
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_then_given_up() {
    let w = world().await;
    let d = w.driver();
    let spec = w.spec();
    w.server.fail_next(2, 429);
    d.observe(&spec).await.unwrap();
    assert_eq!(w.said().matches("  retry   ").count(), 2, "{}", w.said());
    w.server.fail_next(10, 503);
    let e = d.observe(&spec).await.unwrap_err().to_string();
    assert!(e.contains("503"), "{e}");
    assert_eq!(
        w.said().matches("  retry   ").count(),
        2 + 3,
        "max_attempts 4 => 3 retries"
    );
}

#[tokio::test]
async fn an_unreachable_cluster_says_where_it_was_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = StandIn::start_async("127.0.0.1:0").await.kubeconfig();
    let cfg = cfg
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("server:") {
                format!("    server: http://127.0.0.1:{port}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.path().join("kc"), cfg).unwrap();
    let mut d = KubeDriver::new().with_say(Arc::new(|_| {}));
    d.backoff = Duration::from_millis(1);
    let e = d
        .observe(&spec_at(dir.path(), "kc"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot reach the Kubernetes API of cloud `k1`"),
        "{e}"
    );
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    // Clients are kept per cloud: a new driver reads the kubeconfig again.
    let e = KubeDriver::new()
        .observe(&spec_at(dir.path(), "missing-kubeconfig"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing-kubeconfig"), "{e}");
}

/// A release whose Deployment runs `image` with `env` (the stand-in crash-loops a container
/// whose STANDIN_BEHAVIOUR is `crash`: a crash only the configuration causes).
fn bundle_env(version: &str, image: &str, env: &str) -> ReleaseBundle {
    let mut b = bundle(version, image, "");
    b.files[0].contents = b.files[0].contents.replace(
        &format!("image: \"{image}\"}}"),
        &format!("image: \"{image}\", env: [{{name: STANDIN_BEHAVIOUR, value: \"{env}\"}}]}}"),
    );
    assert!(b.files[0].contents.contains("STANDIN_BEHAVIOUR"));
    b
}

/// A back-out to `version` that must succeed (the driver's lines shown if it does not).
async fn back_to(w: &World, d: &KubeDriver, spec: &TargetSpec, version: &str) {
    d.undo(
        spec,
        &Undo::SwitchTo {
            version: version.into(),
            revision: None,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", w.said()));
}

async fn pods(w: &World, d: &KubeDriver) -> Vec<Value> {
    let spec = w.spec();
    let cx = d.cx(&spec).await.unwrap();
    let api: Api<Pod> = Api::namespaced(cx.client.clone(), "ehr-east");
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| serde_json::to_value(p).unwrap())
        .collect()
}

#[tokio::test]
async fn a_config_crash_loop_backs_out_and_fixes_forward_with_the_same_image() {
    let w = world().await;
    let d = w.driver();
    let spec = w.spec();
    d.apply(&spec, &bundle_env("1.0.0", "ehr:1", "ok"))
        .await
        .unwrap();
    d.verify(&spec, "1.0.0").await.unwrap();
    // 1.0.1 changes only the configuration, and crash-loops.
    d.apply(&spec, &bundle_env("1.0.1", "ehr:1", "crash"))
        .await
        .unwrap();
    let e = d.verify(&spec, "1.0.1").await.unwrap_err().to_string();
    assert!(e.contains("crash loop"), "{e}");
    // As on a real cluster, the old ReplicaSet's pods stay beside the crashing new ones.
    let hashes: std::collections::BTreeSet<String> = pods(&w, &d)
        .await
        .iter()
        .filter_map(|p| {
            p.pointer("/metadata/labels/pod-template-hash")?
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(hashes.len(), 2, "old and new pods side by side: {hashes:?}");
    // Back-out: the same image as the crashing pods, which are still there while the old
    // template comes back; they are not the new template's pods.
    back_to(&w, &d, &spec, "1.0.0").await;
    // A fix-forward with the same image after another crash loop.
    d.apply(&spec, &bundle_env("1.0.2", "ehr:1", "crash"))
        .await
        .unwrap();
    assert!(d.verify(&spec, "1.0.2").await.is_err());
    d.apply(&spec, &bundle_env("1.0.3", "ehr:1", "fixed"))
        .await
        .unwrap();
    d.verify(&spec, "1.0.3")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.said()));
    let web = live(&w, &d, "Deployment", "web").await.unwrap();
    assert_eq!(
        web.pointer("/metadata/annotations/deployment.kubernetes.io~1revision"),
        Some(&json!("5")),
        "{web}"
    );
}

#[tokio::test]
async fn an_injected_sidecar_and_digests_do_not_hide_a_bad_image() {
    let w = world().await;
    w.server.inject_sidecar("mesh/proxy:1.22");
    let d = w.driver();
    let spec = w.spec();
    d.apply(&spec, &bundle("1.0.0", "ehr:1", "")).await.unwrap();
    d.verify(&spec, "1.0.0").await.unwrap();
    d.apply(&spec, &bundle("2.0.0", "ehr:2-bad", ""))
        .await
        .unwrap();
    let e = d.verify(&spec, "2.0.0").await.unwrap_err().to_string();
    // Failed for the reason, long before the 5 s deadline.
    assert!(
        e.contains("image pull error") && e.contains("ehr@sha256:"),
        "{e}"
    );
    let p = pods(&w, &d).await;
    assert!(
        p.iter()
            .all(|p| p.pointer("/spec/containers/1/name") == Some(&json!("standin-proxy"))),
        "every pod has the injected sidecar"
    );
}

fn statefulset(strategy: &str, partition: i64, image: &str) -> String {
    format!(
        "---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db}}\nspec:\n  replicas: 3\n  serviceName: db\n  selector: {{matchLabels: {{app: db}}}}\n  updateStrategy: {{type: {strategy}{}}}\n  template:\n    metadata: {{labels: {{app: db}}}}\n    spec: {{containers: [{{name: db, image: \"{image}\"}}]}}\n",
        if strategy == "RollingUpdate" {
            format!(", rollingUpdate: {{partition: {partition}}}")
        } else {
            String::new()
        }
    )
}

#[tokio::test]
async fn a_partitioned_statefulset_is_done_when_the_pods_above_the_partition_are() {
    let w = world().await;
    let d = w.driver();
    let spec = w.spec();
    d.apply(
        &spec,
        &bundle("1.0.0", "ehr:1", &statefulset("RollingUpdate", 1, "db:1")),
    )
    .await
    .unwrap();
    d.verify(&spec, "1.0.0").await.unwrap();
    d.apply(
        &spec,
        &bundle("2.0.0", "ehr:2", &statefulset("RollingUpdate", 1, "db:2")),
    )
    .await
    .unwrap();
    d.verify(&spec, "2.0.0")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.said()));
    let db = live(&w, &d, "StatefulSet", "db").await.unwrap();
    let (cur, upd) = (
        &db["status"]["currentRevision"],
        &db["status"]["updateRevision"],
    );
    assert_ne!(cur, upd, "ordinal 0 stays on the old revision: {db}");
    let revs: BTreeMap<String, String> = pods(&w, &d)
        .await
        .iter()
        .filter(|p| p["metadata"]["name"].as_str().unwrap().starts_with("db-"))
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_owned(),
                p["metadata"]["labels"]["controller-revision-hash"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(revs["db-1"], upd.as_str().unwrap());
    assert_eq!(revs["db-2"], upd.as_str().unwrap());
    assert_ne!(revs["db-0"], upd.as_str().unwrap());
    // OnDelete never rolls by itself: refused at plan time and before anything is written.
    let on_delete = bundle("3.0.0", "ehr:3", &statefulset("OnDelete", 0, "db:3"));
    let e = d.preview(&spec, &on_delete).await.unwrap_err().to_string();
    assert!(
        e.contains("StatefulSet db has updateStrategy OnDelete"),
        "{e}"
    );
    let e = d.apply(&spec, &on_delete).await.unwrap_err().to_string();
    assert!(e.contains("OnDelete"), "{e}");
    assert_eq!(d.releases(&spec).await.unwrap().records.len(), 2);
}

const AGENT: &str = "---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec: {containers: [{name: agent, image: \"IMAGE\"}]}\n";

#[tokio::test]
async fn a_daemonset_over_several_nodes_fails_on_its_new_pods_only() {
    let w = world().await;
    w.server.set_nodes(3);
    let d = w.driver();
    let spec = w.spec();
    d.apply(
        &spec,
        &bundle("1.0.0", "ehr:1", &AGENT.replace("IMAGE", "agent:1")),
    )
    .await
    .unwrap();
    d.verify(&spec, "1.0.0").await.unwrap();
    d.apply(
        &spec,
        &bundle("2.0.0", "ehr:1", &AGENT.replace("IMAGE", "agent:2-bad")),
    )
    .await
    .unwrap();
    let e = d.verify(&spec, "2.0.0").await.unwrap_err().to_string();
    assert!(
        e.contains("DaemonSet ehr-east/agent") && e.contains("ImagePullBackOff"),
        "{e}"
    );
    let agents: Vec<Value> = pods(&w, &d)
        .await
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "agent")
        .collect();
    assert_eq!(agents.len(), 3, "one pod per node");
    let bad = agents
        .iter()
        .filter(|p| p.pointer("/spec/containers/0/image") == Some(&json!("agent:2-bad")))
        .count();
    assert_eq!(
        bad, 1,
        "the update stops at the first node whose pod does not come up"
    );
    // The back-out brings the old revision back on every node.
    back_to(&w, &d, &spec, "1.0.0").await;
}

#[tokio::test]
async fn a_terminating_namespace_is_named_instead_of_a_forbidden_write() {
    let w = world().await;
    w.server.hold_namespace_deletion(true);
    let d = w.driver();
    let spec = w.spec();
    d.apply(&spec, &bundle("1.0.0", "ehr:1", "")).await.unwrap();
    d.verify(&spec, "1.0.0").await.unwrap();
    let cx = d.cx(&spec).await.unwrap();
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cx.client.clone());
    api.delete("ehr-east", &DeleteParams::default())
        .await
        .unwrap();
    for e in [
        d.preview(&spec, &bundle("2.0.0", "ehr:2", ""))
            .await
            .unwrap_err(),
        d.apply(&spec, &bundle("2.0.0", "ehr:2", ""))
            .await
            .unwrap_err(),
    ] {
        let e = e.to_string();
        assert!(
            e.contains("namespace `ehr-east` is being deleted (Terminating since"),
            "{e}"
        );
    }
    w.server.hold_namespace_deletion(false);
    d.apply(&spec, &bundle("2.0.0", "ehr:2", "")).await.unwrap();
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_flaky_api_does_not_fail_a_rollout() {
    let w = world().await;
    let d = w.driver();
    let spec = w.spec();
    w.server.throttle_next(1, 1);
    d.observe(&spec).await.unwrap();
    assert!(
        w.said().contains("in 1000 ms (the server's Retry-After)"),
        "{}",
        w.said()
    );
    // Inside the wait, more failed answers than a call's attempts: still progressing.
    d.apply(&spec, &bundle("1.0.0", "ehr:1", "")).await.unwrap();
    let cx = d.cx(&spec).await.unwrap();
    let latest = d.history(&cx).await.unwrap().latest().unwrap().clone();
    let record = d.load(&cx, &latest).await.unwrap();
    w.server.fail_next(6, 503);
    d.wait(&cx, &record)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.said()));
    assert!(
        w.said().contains("the API server did not answer"),
        "{}",
        w.said()
    );
}

const ROLE: &str = "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: NAME}\nrules: []\n";

#[tokio::test]
async fn cluster_scoped_objects_belong_to_one_site() {
    let w = world().await;
    let d = w.driver();
    let east = w.spec();
    let mut west = w.spec();
    west.target = TargetRef::new("west", "k1", "ehr", TargetKind::Kubernetes);
    let for_site = |site: &str, role: &str| {
        let mut b = bundle("1.0.0", "ehr:1", &ROLE.replace("NAME", role));
        b.files[0].contents = b.files[0]
            .contents
            .replace("ehr-east", &format!("ehr-{site}"));
        b
    };
    d.apply(&east, &for_site("east", "ehr-reader-east"))
        .await
        .unwrap();
    d.verify(&east, "1.0.0").await.unwrap();
    d.apply(&west, &for_site("west", "ehr-reader-west"))
        .await
        .unwrap();
    d.verify(&west, "1.0.0").await.unwrap();
    // The same name for both sites: the second is refused, at plan time and at apply.
    let shared = for_site("west", "ehr-reader-east");
    for e in [
        d.preview(&west, &shared).await.unwrap_err(),
        d.apply(&west, &shared).await.unwrap_err(),
    ] {
        let e = e.to_string();
        assert!(
            e.contains(
                "ClusterRole ehr-reader-east is cluster-scoped and already applied for site `east`"
            ),
            "{e}"
        );
    }
    // West's uninstall takes its own role and leaves east's.
    d.undo(&west, &Undo::Uninstall).await.unwrap();
    assert!(
        live(&w, &d, "ClusterRole", "ehr-reader-west")
            .await
            .is_none()
    );
    let role = live(&w, &d, "ClusterRole", "ehr-reader-east")
        .await
        .unwrap();
    assert_eq!(role["metadata"]["labels"][k8s::SITE_LABEL], "east");
}

const JOB: &str = "---\napiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate}\nspec:\n  ttlSecondsAfterFinished: 600\n  template:\n    spec: {restartPolicy: Never, containers: [{name: m, image: \"IMAGE\"}]}\n";

#[tokio::test]
async fn a_job_with_a_new_template_is_replaced_and_an_expired_one_is_not_run_again() {
    let w = world().await;
    let d = w.driver();
    let spec = w.spec();
    let with_job = |v: &str, image: &str| bundle(v, "ehr:1", &JOB.replace("IMAGE", image));
    d.apply(&spec, &with_job("1.0.0", "migrate:1"))
        .await
        .unwrap();
    d.verify(&spec, "1.0.0").await.unwrap();
    // The stand-in refuses a changed Job template as the API server does (422).
    let p = d
        .preview(&spec, &with_job("2.0.0", "migrate:2"))
        .await
        .unwrap()
        .unwrap();
    let text = diff::render(&p);
    assert!(text.contains("-/+ Job ehr-east/migrate"), "{text}");
    d.apply(&spec, &with_job("2.0.0", "migrate:2"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.said()));
    d.verify(&spec, "2.0.0").await.unwrap();
    assert!(
        w.said()
            .contains("replace east/k1/ehr: Job ehr-east/migrate"),
        "{}",
        w.said()
    );
    let job = live(&w, &d, "Job", "migrate").await.unwrap();
    assert_eq!(
        job.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!("migrate:2"))
    );
    // Its ttlSecondsAfterFinished removes it once it has run: not drift, not run again.
    let cx = d.cx(&spec).await.unwrap();
    let api: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(cx.client.clone(), "ehr-east");
    api.delete("migrate", &DeleteParams::default())
        .await
        .unwrap();
    let o = d.observe(&spec).await.unwrap();
    assert!(o.drift.is_empty(), "{:?}", o.drift);
    d.apply(&spec, &with_job("2.0.1", "migrate:2"))
        .await
        .unwrap();
    d.verify(&spec, "2.0.1").await.unwrap();
    assert!(live(&w, &d, "Job", "migrate").await.is_none());
    assert!(
        w.said()
            .contains("skip    east/k1/ehr: Job ehr-east/migrate ran for the deployed revision")
    );
}

/// `n` bytes nothing compresses (SHA-256 of a counter), as base64.
fn incompressible_base64(n: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut bytes = Vec::with_capacity(n + 32);
    let mut i: u64 = 0;
    while bytes.len() < n {
        bytes.extend_from_slice(&Sha256::digest(i.to_le_bytes()));
        i += 1;
    }
    bytes.truncate(n);
    let secret: k8s_openapi::ByteString = k8s_openapi::ByteString(bytes);
    serde_json::to_value(secret)
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// Changes a Secret behind ferry's back, as someone with write access to it could.
async fn edit_secret(api: &Api<Secret>, name: &str, edit: impl FnOnce(&mut Secret)) {
    let mut s = api.get(name).await.unwrap();
    edit(&mut s);
    s.metadata.managed_fields = None;
    api.replace(name, &Default::default(), &s).await.unwrap();
}

#[tokio::test]
async fn a_release_larger_than_a_secret_is_recorded_in_parts() {
    let w = world().await;
    let d = w.driver();
    let spec = w.spec();
    // Two ConfigMaps of 700 KB each: each under the API's 1 MiB, together more than one
    // record Secret can hold.
    let blob = incompressible_base64(700_000);
    let extra = format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: blob-a}}\nbinaryData: {{b: \"{blob}\"}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: blob-b}}\nbinaryData: {{b: \"{blob}\"}}\n"
    );
    d.preview(&spec, &bundle("1.0.0", "ehr:1", &extra))
        .await
        .unwrap();
    assert!(
        w.said().contains("the release record takes 2 Secrets"),
        "the plan says so: {}",
        w.said()
    );
    d.apply(&spec, &bundle("1.0.0", "ehr:1", &extra))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.said()));
    d.verify(&spec, "1.0.0").await.unwrap();
    let h = d.releases(&spec).await.unwrap();
    assert_eq!(h.deployed().unwrap().objects, 6);
    let cx = d.cx(&spec).await.unwrap();
    let api: Api<Secret> = Api::namespaced(cx.client.clone(), "ehr-east");
    let first = api.get("ferry.release.v1.ehr.v1").await.unwrap();
    assert_eq!(
        first.metadata.annotations.unwrap()[release::PARTS_ANNOTATION],
        "2"
    );
    // A part changed behind ferry's back is found, never half-read.
    edit_secret(&api, "ferry.release.v1.ehr.v1.p2", |part| {
        part.data
            .as_mut()
            .unwrap()
            .get_mut(release::DATA_KEY)
            .unwrap()
            .0[10] ^= 1;
    })
    .await;
    // (Observing reads summaries only; a diff reads the deployed record whole.)
    d.observe(&spec).await.unwrap();
    let e = d
        .preview(&spec, &bundle("1.0.1", "ehr:1", &extra))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("do not add up"), "{e}");
}

#[tokio::test]
async fn two_writers_of_one_revision_do_not_overwrite_each_other() {
    let w = world().await;
    let d = w.driver();
    let spec = w.spec();
    d.apply(&spec, &bundle("1.0.0", "ehr:1", "")).await.unwrap();
    let cx = d.cx(&spec).await.unwrap();
    let latest = d.history(&cx).await.unwrap().latest().unwrap().clone();
    let mut mine = d.load(&cx, &latest).await.unwrap();
    let mut stale = mine.clone();
    d.set_status(&cx, &mut mine, Status::Failed, Some("first".into()))
        .await
        .unwrap();
    let e = d
        .set_status(&cx, &mut stale, Status::Deployed, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("was changed by another writer since it was read"),
        "{e}"
    );
    // Another run creating the same revision: refused, the first run's record kept.
    let mut other = mine.clone();
    other.resource_version = None;
    other.plan_id = "another-plan".into();
    let e = d
        .write_record(&cx, &mut other)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("already exists and is not this run's"), "{e}");
    let kept = d.history(&cx).await.unwrap().latest().unwrap().clone();
    assert_eq!(
        (kept.status, kept.plan_id.as_str()),
        (Status::Failed, "plan-1.0.0")
    );
}

#[tokio::test]
async fn credentials_are_never_sent_to_a_plain_http_server() {
    let w = world().await;
    let cfg = w
        .server
        .kubeconfig()
        .replace("  user: {}\n", "  user: {token: s3cret}\n");
    std::fs::write(w.dir.path().join("kc-token"), cfg).unwrap();
    let e = w
        .driver()
        .observe(&spec_at(w.dir.path(), "kc-token"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a bearer token") && e.contains("cleartext"),
        "{e}"
    );
    assert!(
        w.server.requests().is_empty(),
        "nothing reached the server: {:?}",
        w.server.requests()
    );
}

/// The history is one LIST of the record Secrets' metadata (no payload travels); a record is
/// read whole only where its objects are used, and then it must match its summary.
#[tokio::test]
async fn the_history_is_listed_as_metadata_and_records_are_read_where_used() {
    let w = world().await;
    let d = w.driver();
    let spec = w.spec();
    for (v, image) in [("1.0.0", "ehr:1"), ("2.0.0", "ehr:2")] {
        d.apply(&spec, &bundle(v, image, WORKER)).await.unwrap();
        d.verify(&spec, v).await.unwrap();
    }
    let secrets = "/api/v1/namespaces/ehr-east/secrets";
    let since = |before: usize| w.server.requests()[before..].to_vec();
    let before = w.server.requests().len();
    let o = d.observe(&spec).await.unwrap();
    assert_eq!(o.current.as_deref(), Some("2.0.0"));
    let reqs = since(before);
    let lists: Vec<&String> = reqs
        .iter()
        .filter(|r| r.starts_with(&format!("GET {secrets}?")))
        .collect();
    assert_eq!(lists.len(), 1, "{reqs:?}");
    assert!(
        lists[0].ends_with(" as=PartialObjectMetadataList"),
        "{reqs:?}"
    );
    assert!(
        !reqs
            .iter()
            .any(|r| r.starts_with(&format!("GET {secrets}/"))),
        "no record read whole to observe: {reqs:?}"
    );
    let h = d.releases(&spec).await.unwrap();
    let summaries: Vec<(u32, &str, usize)> = h
        .records
        .iter()
        .map(|r| (r.revision, r.version.as_str(), r.objects))
        .collect();
    assert_eq!(summaries, [(1, "1.0.0", 5), (2, "2.0.0", 5)]);
    assert_eq!(h.all_ids().len(), 10);

    // A record written before summaries (no annotation) is read whole, and still counts.
    let cx = d.cx(&spec).await.unwrap();
    let api: Api<Secret> = Api::namespaced(cx.client.clone(), "ehr-east");
    edit_secret(&api, "ferry.release.v1.ehr.v1", |v1| {
        v1.metadata.annotations = None
    })
    .await;
    let before = w.server.requests().len();
    let h = d.releases(&spec).await.unwrap();
    assert_eq!(h.revision(1).unwrap().objects, 5);
    assert_eq!(
        since(before)
            .iter()
            .filter(|r| r.starts_with(&format!("GET {secrets}/ferry.release.v1.ehr.v1")))
            .count(),
        1
    );

    // A summary edited to say something its record does not: listed, but never acted on.
    edit_secret(&api, "ferry.release.v1.ehr.v2", |v2| {
        let ann = v2.metadata.annotations.as_mut().unwrap();
        let edited = ann[release::SUMMARY_ANNOTATION].replace("\"2.0.0\"", "\"1.0.0\"");
        ann.insert(release::SUMMARY_ANNOTATION.into(), edited);
    })
    .await;
    let e = d
        .preview(&spec, &bundle("3.0.0", "ehr:3", ""))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not describe the record it holds"), "{e}");
}

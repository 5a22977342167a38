//! The stand-in API server checked by a real client: `kubectl` (v1.32, from the machine) runs
//! against it and must get what it gets from a real cluster: discovery, server-side apply with
//! field ownership and conflicts, server dry-run, label and field selectors, `rollout status`
//! (a watch), and delete with garbage collection. A stand-in that kubectl cannot use would be
//! standing in for nothing; what kubectl prints here is what it prints against a cluster.

use std::process::{Command, Output};
use std::time::Duration;

use kube_standin::StandIn;

struct Kubectl {
    _server: StandIn,
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new() -> Self {
        let server = StandIn::start("127.0.0.1:0");
        server.set_rollout_delay(Duration::from_millis(100));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig()).unwrap();
        Self {
            _server: server,
            dir,
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        crate::support::output_with_stdin(
            Command::new("kubectl")
                .args(args)
                .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
                .env("HOME", self.dir.path()),
            stdin.unwrap_or(""),
        )
    }

    /// kubectl ARGS, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_in(args, None)
    }

    fn ok_in(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }
}

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: ehr\nspec:\n  replicas: REPLICAS\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: \"IMAGE\"}]\n";

fn deployment(replicas: u32, image: &str) -> String {
    DEPLOYMENT
        .replace("REPLICAS", &replicas.to_string())
        .replace("IMAGE", image)
}

#[test]
fn kubectl_discovers_applies_waits_and_deletes_on_the_stand_in() {
    let k = Kubectl::new();
    let v = k.json(&["version", "-o", "json"]);
    assert_eq!(v["serverVersion"]["minor"], "33", "{v}");
    // Discovery: kubectl maps kinds and short names to resources from it.
    let resources = k.ok(&["api-resources", "--api-group=apps", "-o", "name"]);
    for r in ["deployments.apps", "statefulsets.apps", "replicasets.apps"] {
        assert!(resources.lines().any(|l| l == r), "{resources}");
    }
    // The stand-in speaks JSON, not protobuf: kubectl's typed commands (`create namespace`)
    // are refused with the server's 415; the unstructured ones (apply, get, delete, rollout)
    // are what ferry's checks need.
    let out = k.run(&["create", "namespace", "ehr"], None);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown format"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    k.ok_in(
        &["apply", "--server-side", "--validate=false", "-f", "-"],
        Some("apiVersion: v1\nkind: Namespace\nmetadata: {name: ehr}\n"),
    );
    // Server-side apply, as kubectl does it (field manager `kubectl`).
    let applied = k.ok_in(
        &["apply", "--server-side", "--validate=false", "-f", "-"],
        Some(&deployment(2, "ehr:1")),
    );
    assert!(
        applied.contains("deployment.apps/web serverside-applied"),
        "{applied}"
    );
    let d = k.json(&[
        "get",
        "deploy",
        "web",
        "-n",
        "ehr",
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    let managers: Vec<&str> = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, ["kubectl"], "{d}");
    // rollout status watches the Deployment until the controller says it is done.
    let status = k.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "ehr",
        "--timeout=30s",
    ]);
    assert!(status.contains("successfully rolled out"), "{status}");
    // Label selectors; the pods carry the ReplicaSet's pod-template-hash.
    let pods = k.json(&["get", "pods", "-n", "ehr", "-l", "app=web", "-o", "json"]);
    let items = pods["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{pods}");
    assert!(items[0]["metadata"]["labels"]["pod-template-hash"].is_string());
    let none = k.json(&["get", "pods", "-n", "ehr", "-l", "app=other", "-o", "json"]);
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    let named = k.ok(&[
        "get",
        "deploy",
        "-n",
        "ehr",
        "--field-selector",
        "metadata.name=web",
        "-o",
        "name",
    ]);
    assert_eq!(named.trim(), "deployment.apps/web");
    // Another manager changing kubectl's field: a conflict kubectl explains, nothing changed.
    let out = k.run(
        &[
            "apply",
            "--server-side",
            "--validate=false",
            "--field-manager=ops",
            "-f",
            "-",
        ],
        Some(&deployment(5, "ehr:1")),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("conflict with \"kubectl\"") && err.contains(".spec.replicas"),
        "{err}"
    );
    // Server dry-run: the answer shows the change, the object keeps its image.
    let dry = k.ok_in(
        &[
            "apply",
            "--server-side",
            "--validate=false",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
        ],
        Some(&deployment(2, "ehr:2")),
    );
    let dry: serde_json::Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(
        dry.pointer("/spec/template/spec/containers/0/image"),
        Some(&serde_json::json!("ehr:2"))
    );
    let live = k.json(&["get", "deploy", "web", "-n", "ehr", "-o", "json"]);
    assert_eq!(
        live.pointer("/spec/template/spec/containers/0/image"),
        Some(&serde_json::json!("ehr:1"))
    );
    // kubectl diff: the server's dry-run answer against the live object.
    let out = k.run(
        &["diff", "--server-side", "-f", "-"],
        Some(&deployment(2, "ehr:2")),
    );
    let diff = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "1: differences found\n{diff}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        diff.contains("-      - image: ehr:1") && diff.contains("+      - image: ehr:2"),
        "{diff}"
    );
    // As on a real server, a dry run keeps the stored resourceVersion.
    assert!(!diff.contains("+  resourceVersion"), "{diff}");
    // Delete waits until the object is gone; its ReplicaSets and pods go with it.
    let deleted = k.ok(&["delete", "deployment", "web", "-n", "ehr", "--timeout=30s"]);
    assert!(
        deleted.contains("deployment.apps \"web\" deleted"),
        "{deleted}"
    );
    let rs = k.json(&["get", "rs", "-n", "ehr", "-o", "json"]);
    assert_eq!(rs["items"].as_array().unwrap().len(), 0, "{rs}");
    let pods = k.json(&["get", "pods", "-n", "ehr", "-o", "json"]);
    assert_eq!(pods["items"].as_array().unwrap().len(), 0, "{pods}");
}

//! The Kubernetes driver end to end, through the `ferry` binary.
//!
//! By default each test starts its own STAND-IN API server (`kube-standin`, in this test
//! process): no real Kubernetes API server can be installed on the machines these tests run on.
//! The stand-in also plays the rollout controller: images whose reference contains `bad` never
//! pull. With `FERRY_TEST_KUBECONFIG=/path/to/kubeconfig` the same tests run against that real
//! cluster instead (its current context): the good images are `registry.k8s.io/pause:3.9` and
//! `:3.10`, the bad one `:0.0-bad` fails to pull there too. Each test works in its own
//! namespaces (`ft-<test>-a`, `-b`), which it leaves behind on a real cluster. Tests that inject
//! faults (throttling) always use the stand-in.

use std::time::Duration;

use kube_standin::StandIn;

use crate::support::{Run, Workspace, certificate, free_port, output_with_stdin};

const GOOD1: &str = "3.9";
const GOOD2: &str = "3.10";
const BAD: &str = "0.0-bad";

/// A cluster for one test: the real one named by FERRY_TEST_KUBECONFIG, or a stand-in.
struct Cluster {
    _standin: Option<StandIn>,
    kubeconfig: String,
}

impl Cluster {
    fn new() -> Self {
        match std::env::var("FERRY_TEST_KUBECONFIG") {
            Ok(path) if !path.is_empty() => Self {
                _standin: None,
                kubeconfig: std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("FERRY_TEST_KUBECONFIG={path}: {e}")),
            },
            _ => Self::standin(),
        }
    }

    fn standin() -> Self {
        let s = StandIn::start("127.0.0.1:0");
        s.set_rollout_delay(Duration::from_millis(150));
        Self {
            kubeconfig: s.kubeconfig(),
            _standin: Some(s),
        }
    }
}

const MANIFEST: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: {{ namespace }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web
data:
  VERSION: "{{ version }}"
  SITE: "{{ site }}"
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: { app: web }
  ports: [{ port: 80 }]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {{ values.replicas }}
  selector: { matchLabels: { app: web } }
  template:
    metadata: { labels: { app: web } }
    spec:
      containers:
        - name: web
          image: "registry.k8s.io/pause:{{ version }}"
{% if version == "3.9" %}---
apiVersion: v1
kind: ConfigMap
metadata:
  name: legacy
data: { only: "in 3.9" }
{% endif %}"#;

/// Sites `ft-<tag>-a` (canary) and `-b` on one cluster, app `web` on both.
struct Kube {
    ws: Workspace,
    a: String,
    b: String,
    _cluster: Cluster,
}

impl Kube {
    fn new(tag: &str) -> Self {
        Self::on(tag, Cluster::new())
    }

    fn on(tag: &str, cluster: Cluster) -> Self {
        let ws = Workspace::new();
        let (a, b) = (format!("ft-{tag}-a"), format!("ft-{tag}-b"));
        ws.write("kubeconfig", &cluster.kubeconfig);
        ws.write("templates/web.yaml.tera", MANIFEST);
        ws.write(
            "inventory.yaml",
            &format!(
                r#"version: 1
sites:
  - {{ id: {a}, tier: sqa, clouds: [k1] }}
  - {{ id: {b}, tier: prod, clouds: [k1] }}
clouds:
  - {{ id: k1, kind: kubernetes, kubernetes: {{ kubeconfig: kubeconfig, max_attempts: 4 }} }}
apps:
  - id: web
    version: "{GOOD1}"
    target: kubernetes
    sites: [{a}, {b}]
    keep_releases: 5
    kubernetes:
      namespace: "{{site}}"
      manifests: [templates/web.yaml.tera]
      values: {{ replicas: 2 }}
      rollout_timeout_seconds: 60
      stuck_seconds: 2
"#
            ),
        );
        let k = Self {
            ws,
            a,
            b,
            _cluster: cluster,
        };
        for (name, version, policy) in [
            ("v1", GOOD1, "backout"),
            ("v2", GOOD2, "backout"),
            ("bad-backout", BAD, "backout"),
            ("bad-halt", BAD, "halt"),
        ] {
            k.ws.write(
                &format!("plans/{name}.yaml"),
                &format!(
                    "version: 1\nkind: release\nname: web-{version}\nreleases: [{{ app: web, version: \"{version}\" }}]\nwaves:\n  - {{ name: canary, sites: [{}] }}\n  - {{ name: rest, sites: [{}] }}\non_failure: {policy}\n",
                    k.a, k.b
                ),
            );
        }
        k
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.ws.cmd(args);
        c.env("FERRY_KUBE_POLL_MS", "100");
        for (k, v) in env {
            c.env(k, v);
        }
        Run(c.output().expect("ferry runs"))
    }

    /// A plan waits for no rollout: the workspace's own `plan_file`.
    fn plan(&self, name: &str) -> Run {
        self.ws.plan_file(name)
    }

    /// `ferry rollback web -i inventory.yaml --site SITE ARGS...`
    fn rollback(&self, site: &str, args: &[&str]) -> Run {
        let mut all = vec!["rollback", "web", "-i", "inventory.yaml", "--site", site];
        all.extend_from_slice(args);
        self.run(&all)
    }

    fn apply(&self, name: &str) -> Run {
        self.run(&["apply", &format!("{name}.json")])
    }

    fn backout(&self, site: &str) -> Run {
        self.run(&[
            "backout",
            "-i",
            "inventory.yaml",
            "--app",
            "web",
            "--site",
            site,
        ])
    }

    fn history(&self, site: &str) -> Vec<serde_json::Value> {
        let r = self.run(&[
            "history",
            "web",
            "-i",
            "inventory.yaml",
            "--site",
            site,
            "--output",
            "json",
        ]);
        r.expect_code(0);
        r.json()["targets"][0]["revisions"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// `(revision, status, version)` of every release record of `site`.
    fn revisions(&self, site: &str) -> Vec<(u64, String, String)> {
        self.history(site)
            .iter()
            .map(|r| {
                (
                    r["revision"].as_u64().unwrap(),
                    r["status"].as_str().unwrap().to_owned(),
                    r["version"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

fn rev(n: u64, status: &str, version: &str) -> (u64, String, String) {
    (n, status.to_owned(), version.to_owned())
}

#[test]
fn plan_shows_object_diffs_apply_prunes_and_history_rolls_back_without_the_ledger() {
    let k = Kube::new("rel");
    // First install: every object is an addition; nothing is written to the cluster by a plan.
    let p = k.plan("v1");
    p.expect_code(2)
        .stdout_has(&format!("+ Namespace {}", k.a))
        .stdout_has(&format!("+ Deployment {}/web", k.a))
        .stdout_has(&format!("+ ConfigMap {}/legacy", k.a));
    assert!(k.revisions(&k.a).is_empty(), "a plan changes nothing");
    k.apply("v1").expect_code(0);
    assert_eq!(k.revisions(&k.a), [rev(1, "deployed", GOOD1)]);
    // The ledger points at the release record in the cluster.
    let ok = k.ws.events("step_succeeded");
    let record = ok
        .iter()
        .find(|e| e["target"].as_str().unwrap().starts_with(&k.a))
        .unwrap();
    assert_eq!(
        record["detail"]["release"]["release_record"],
        format!("{}/ferry.release.v1.web.v1", k.a)
    );
    assert_eq!(record["detail"]["release"]["revision"], 1);

    // Upgrade: the plan shows the changed fields (from a server dry-run) and the pruned object.
    let p = k.plan("v2");
    p.expect_code(2)
        .stdout_has(&format!("~ Deployment {}/web", k.a))
        .stdout_has(&format!(
            "spec.template.spec.containers[name=web].image: \"registry.k8s.io/pause:{GOOD1}\" -> \"registry.k8s.io/pause:{GOOD2}\""
        ))
        .stdout_has(&format!("data.VERSION: \"{GOOD1}\" -> \"{GOOD2}\""))
        .stdout_has(&format!("- ConfigMap {}/legacy", k.a))
        .stdout_has(&format!("= Service {}/web", k.a));
    let json = k
        .run(&[
            "plan",
            "-i",
            "inventory.yaml",
            "plans/v2.yaml",
            "-o",
            "v2.json",
            "--output",
            "json",
        ])
        .json();
    let objects = json["steps"][0]["objects"].as_array().unwrap();
    let dep = objects
        .iter()
        .find(|o| o["object"]["kind"] == "Deployment")
        .unwrap();
    assert_eq!(dep["change"], "change");
    assert_eq!(dep["basis"], "server-dry-run");
    k.apply("v2").expect_code(0);
    assert_eq!(
        k.revisions(&k.a),
        [rev(1, "superseded", GOOD1), rev(2, "deployed", GOOD2)]
    );
    let h = k.history(&k.a);
    assert!(
        !h[1]["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "legacy"),
        "{h:?}"
    );
    let human = k.run(&["history", "web", "-i", "inventory.yaml", "--site", &k.a]);
    human
        .expect_code(0)
        .stdout_has("REVISION")
        .stdout_has("deployed");

    // Rollback to revision 1: a new revision with revision 1's objects.
    k.rollback(&k.a, &["--to", "1"]).expect_code(0);
    let h = k.history(&k.a);
    assert_eq!(h[2]["revision"], 3);
    assert_eq!(h[2]["rollback_of"], 1);
    assert_eq!(h[2]["status"], "deployed");
    assert!(
        h[2]["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "legacy"),
        "the rolled-back revision's objects are back"
    );
    // The cluster now runs 3.9 again: planning 3.9 finds site a unchanged.
    k.plan("v1")
        .expect_code(2)
        .stdout_has(&format!("= {}/k1/web  {GOOD1} (unchanged)", k.a));

    // The ledger's host is gone: back-out still knows where to go, from the cluster.
    std::fs::remove_file(k.ws.ledger_path()).unwrap();
    k.backout(&k.a).expect_code(0);
    let last = k.revisions(&k.a).pop().unwrap();
    assert_eq!(last, rev(4, "deployed", GOOD2));
    assert_eq!(k.history(&k.a)[3]["rollback_of"], 2);
}

#[test]
fn a_bad_image_fails_the_canary_with_the_reason_and_backs_out_automatically() {
    let k = Kube::new("bad");
    k.plan("v1").expect_code(2);
    k.apply("v1").expect_code(0);
    k.plan("bad-backout").expect_code(2);
    let r = k.apply("bad-backout");
    r.expect_code(6).stderr_has("image pull error");
    assert_eq!(
        k.revisions(&k.a),
        [
            rev(1, "superseded", GOOD1),
            rev(2, "failed", BAD),
            rev(3, "deployed", GOOD1)
        ]
    );
    assert_eq!(
        k.revisions(&k.b),
        [rev(1, "deployed", GOOD1)],
        "the second wave never started"
    );
    let failed = k.ws.events("step_failed");
    assert!(
        failed[0]["message"]
            .as_str()
            .unwrap()
            .contains("ImagePullBackOff")
            || failed[0]["message"]
                .as_str()
                .unwrap()
                .contains("ErrImagePull"),
        "{failed:?}"
    );
    assert_eq!(failed[0]["detail"]["release"]["status"], "failed");
    assert_eq!(failed[0]["detail"]["serving_after"], GOOD1);
}

#[test]
fn a_failed_first_install_can_be_cleaned_up_and_installed_again() {
    let k = Kube::new("first");
    k.plan("bad-halt").expect_code(2);
    k.apply("bad-halt")
        .expect_code(5)
        .stderr_has("image pull error");
    assert_eq!(k.revisions(&k.a), [rev(1, "failed", BAD)]);
    // Nothing was ever deployed: back-out says how to clean up instead of failing obscurely.
    k.backout(&k.a)
        .expect_code(1)
        .stderr_has(&format!("ferry rollback web --site {} --uninstall", k.a));
    // A plan shows the failed revision as drift.
    k.plan("v1")
        .expect_code(2)
        .stdout_has(&format!("! drift: revision 1 ({BAD}) is failed"));
    k.rollback(&k.a, &["--uninstall"]).expect_code(0);
    assert_eq!(k.revisions(&k.a), [rev(1, "uninstalled", BAD)]);
    let ok = k.ws.events("plan_created");
    assert!(!ok.is_empty(), "the uninstall was planned and recorded");
    k.plan("v1").expect_code(2);
    k.apply("v1").expect_code(0);
    assert_eq!(
        k.revisions(&k.a),
        [rev(1, "uninstalled", BAD), rev(2, "deployed", GOOD1)]
    );
}

#[test]
fn a_field_owned_by_another_manager_is_a_plan_time_conflict_naming_it() {
    let k = Kube::new("conflict");
    k.plan("v1").expect_code(2);
    k.apply("v1").expect_code(0);
    // Someone scales the deployment by hand: their manager now owns spec.replicas.
    ferry::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(k.ws.path().join("kubeconfig")).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(cfg).unwrap();
        let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
            kube::Api::namespaced(client, &k.a);
        let pp = kube::api::PatchParams {
            field_manager: Some("kubectl-scale".into()),
            ..Default::default()
        };
        api.patch(
            "web",
            &pp,
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    });
    k.plan("v2")
        .expect_code(1)
        .stderr_has("409 conflict")
        .stderr_has("field .spec.replicas is managed by `kubectl-scale`");
}

#[test]
fn an_unreachable_cluster_is_a_clear_error_at_plan_time() {
    let k = Kube::on("down", Cluster::standin());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = std::fs::read_to_string(k.ws.path().join("kubeconfig")).unwrap();
    let cfg: String = cfg
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("server:") {
                format!("    server: http://127.0.0.1:{port}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    k.ws.write("kubeconfig", &cfg);
    k.plan("v1")
        .expect_code(1)
        .stderr_has("cannot reach the Kubernetes API of cloud `k1`")
        .stderr_has(&format!("127.0.0.1:{port}"));
    assert!(!k.ws.path().join("v1.json").exists(), "no plan written");
}

#[test]
fn rendering_and_manifest_errors_name_the_template_line_and_field() {
    let k = Kube::new("render");
    k.ws.write(
        "templates/web.yaml.tera",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  PORT: \"{{ values.port }}\"\n",
    );
    k.plan("v1")
        .expect_code(1)
        .stderr_has("templates/web.yaml.tera")
        .stderr_has("line 6")
        .stderr_has("values.port");
    k.ws.write(
        "templates/web.yaml.tera",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  namespace: elsewhere\n",
    );
    k.plan("v1")
        .expect_code(1)
        .stderr_has("manifest templates/web.yaml.tera (document 1)")
        .stderr_has("namespace `elsewhere`");
}

#[test]
fn throttling_is_retried_with_backoff_and_reported() {
    // Fault injection needs the stand-in, even when a real cluster is configured.
    let cluster = Cluster::standin();
    let standin = cluster._standin.as_ref().unwrap();
    standin.fail_next(2, 429);
    let k = Kube::on(
        "retry",
        Cluster {
            _standin: None,
            kubeconfig: cluster.kubeconfig.clone(),
        },
    );
    k.plan("v1")
        .expect_code(2)
        .stderr_has("retry   listing release records");
    let retried = standin
        .requests()
        .iter()
        .filter(|r| r.contains("/secrets?labelSelector"))
        .count();
    assert!(retried >= 3, "two refused, then answered: {retried}");
    drop(cluster);
}

#[test]
fn the_example_inventory_plans_and_applies_on_the_stand_in() {
    // inventories/k8s.yaml + templates/ehr-k8s + plans/ehr-web-3.0.yaml, copied as they are,
    // with the stand-in's kubeconfig where the example expects the cluster's.
    let cluster = Cluster::standin();
    let ws = Workspace::new();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for f in [
        "inventories/k8s.yaml",
        "templates/ehr-k8s/ehr-web.yaml.tera",
        "plans/ehr-web-3.0.yaml",
    ] {
        ws.write(f, &std::fs::read_to_string(repo.join(f)).unwrap());
    }
    ws.write(
        "kube/config",
        &cluster.kubeconfig.replace("standin", "ehr-prod-east"),
    );
    let k = Kube {
        ws,
        a: "cloud-sqa".into(),
        b: "cloud-east".into(),
        _cluster: cluster,
    };
    k.run(&[
        "plan",
        "-i",
        "inventories/k8s.yaml",
        "plans/ehr-web-3.0.yaml",
        "-o",
        "ehr.json",
    ])
    .expect_code(2)
    .stdout_has("+ Ingress ehr-cloud-sqa/ehr-web")
    .stdout_has("+ Deployment ehr-cloud-east/ehr-web");
    k.run(&["apply", "ehr.json"]).expect_code(0);
    k.run(&[
        "history",
        "ehr-web",
        "-i",
        "inventories/k8s.yaml",
        "--site",
        &k.b,
    ])
    .expect_code(0)
    .stdout_has("deployed");
}

/// Debian's tinyproxy on a loopback port of its own (ci/proxy.sh), stopped when dropped.
struct Proxy {
    dir: tempfile::TempDir,
    url: String,
}

impl Proxy {
    /// Debian's tinyproxy: an HTTP CONNECT proxy (`http://` URL) that logs each request.
    fn start() -> Self {
        Self::launch("start", "http")
    }

    /// Debian's microsocks: a SOCKS5 proxy (`socks5://` URL).
    fn socks() -> Self {
        Self::launch("socks", "socks5")
    }

    /// `ci/proxy.sh VERB PORT DIR` on a free port.
    fn launch(verb: &str, scheme: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = std::process::Command::new(repo.join("ci/proxy.sh"))
            .args([verb, &port.to_string()])
            .arg(dir.path())
            .output()
            .expect("ci/proxy.sh runs");
        assert!(
            out.status.success(),
            "the proxy did not start (ci/proxy.sh install installs it): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir,
            url: format!("{scheme}://127.0.0.1:{port}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tinyproxy.log")).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let _ = std::process::Command::new(repo.join("ci/proxy.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_cluster_is_reached_through_the_proxy_unless_no_proxy_names_it() {
    // The stand-in speaks http://, so HTTP_PROXY is the variable that applies (HTTPS_PROXY for
    // an https:// server); loopback is not exempt (see drivers/kube/net.rs).
    let cluster = Cluster::standin();
    let server = cluster._standin.as_ref().unwrap().url();
    let authority = server.trim_start_matches("http://").to_owned();
    let k = Kube::on(
        "proxy",
        Cluster {
            _standin: None,
            kubeconfig: cluster.kubeconfig.clone(),
        },
    );
    let proxy = Proxy::start();
    let plan = |env: &[(&str, &str)]| {
        k.run_env(
            &[
                "plan",
                "-i",
                "inventory.yaml",
                "plans/v1.yaml",
                "-o",
                "v1.json",
            ],
            env,
        )
    };
    plan(&[("HTTP_PROXY", &proxy.url)]).expect_code(2);
    assert!(
        proxy.log().contains(&format!("CONNECT {authority}")),
        "the API calls went through the proxy: {}",
        proxy.log()
    );
    // A proxy that is not there: the error names it and where to put a direct cluster.
    let dead = format!("http://127.0.0.1:{}", free_port());
    plan(&[("HTTP_PROXY", &dead)])
        .expect_code(1)
        .stderr_has(&format!("at {server}/ through proxy {dead}/"))
        .stderr_has("belongs in NO_PROXY");
    // NO_PROXY naming the cluster: straight there, the dead proxy never asked.
    plan(&[("HTTP_PROXY", &dead), ("NO_PROXY", "localhost,127.0.0.1")]).expect_code(2);
    // A SOCKS5 proxy: through a live one the plan works, through a dead one it fails naming it.
    let socks = Proxy::socks();
    plan(&[("HTTP_PROXY", &socks.url)]).expect_code(2);
    let dead_socks = format!("socks5://127.0.0.1:{}", free_port());
    plan(&[("HTTP_PROXY", &dead_socks)])
        .expect_code(1)
        .stderr_has(&format!("through proxy {dead_socks}/"));
    drop(cluster);
}

/// A kubeconfig for a TLS stand-in whose user gets a token from an exec plugin.
fn exec_kubeconfig(
    server: &str,
    ca: &std::path::Path,
    plugin: &std::path::Path,
    mode: &str,
) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: standin\nclusters:\n- name: standin\n  cluster:\n    server: {server}\n    certificate-authority: {}\ncontexts:\n- name: standin\n  context: {{cluster: standin, user: sso}}\nusers:\n- name: sso\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      interactiveMode: {mode}\n",
        ca.display(),
        plugin.display()
    )
}

#[test]
fn an_exec_credential_plugin_over_tls_is_told_there_is_no_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let standin = StandIn::start_tls("127.0.0.1:0", &cert, &key, Some("t0ken-from-sso"));
    standin.set_rollout_delay(Duration::from_millis(150));
    // The plugin keeps what kube-rs told it, reads stdin (a prompting plugin would wait there)
    // and answers with a token.
    let plugin = dir.path().join("sso-plugin");
    let info = dir.path().join("exec-info.json");
    let write_plugin = |token: &str| {
        std::fs::write(
            &plugin,
            format!(
                "#!/bin/sh\nprintf '%s' \"$KUBERNETES_EXEC_INFO\" > {}\ncat >/dev/null\nprintf '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{token}\"}}}}'\n",
                info.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    write_plugin("t0ken-from-sso");
    let ca = dir.path().join("ca.pem");
    let k = Kube::on(
        "exec",
        Cluster {
            _standin: None,
            kubeconfig: exec_kubeconfig(&standin.url(), &ca, &plugin, "IfAvailable"),
        },
    );
    k.plan("v1").expect_code(2);
    k.apply("v1").expect_code(0);
    let told = std::fs::read_to_string(&info).unwrap();
    assert!(told.contains("\"interactive\":false"), "{told}");
    // A plugin that can only work at a terminal: refused by name, at once.
    k.ws.write(
        "kubeconfig",
        &exec_kubeconfig(&standin.url(), &ca, &plugin, "Always"),
    );
    k.plan("v2")
        .expect_code(1)
        .stderr_has("gets its credentials from")
        .stderr_has("needs a terminal");
    // A token the API server does not take.
    write_plugin("expired");
    k.ws.write(
        "kubeconfig",
        &exec_kubeconfig(&standin.url(), &ca, &plugin, "Never"),
    );
    k.plan("v2").expect_code(1).stderr_has("401");
}

#[test]
fn ferry_works_under_the_least_rbac_it_prints() {
    // RBAC needs the stand-in (it authenticates tokens and decides as the RBAC authorizer);
    // tokens go over TLS only (neither kubectl nor ferry sends them to an http:// server).
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let standin = StandIn::start_tls("127.0.0.1:0", &cert, &key, Some("admin-t0ken"));
    standin.set_rollout_delay(Duration::from_millis(150));
    standin.add_user("ferry-t0ken", "ferry");
    let ca = dir.path().join("ca.pem");
    let as_user = |token: &str| {
        standin
            .kubeconfig()
            .replace(
                "    server: ",
                &format!("    certificate-authority: {}\n    server: ", ca.display()),
            )
            .replace("  user: {}\n", &format!("  user: {{token: {token}}}\n"))
    };
    let k = Kube::on(
        "rbac",
        Cluster {
            _standin: None,
            kubeconfig: as_user("ferry-t0ken"),
        },
    );
    // Before an admin grants anything: the 403 names what is missing.
    k.plan("v1").expect_code(1).stderr_has(
        "User \"ferry\" cannot list resource \"secrets\" in API group \"\" in the namespace",
    );
    // ferry prints the least rules; an admin applies them with kubectl.
    let rbac = k.run(&["kube", "rbac", "-i", "inventory.yaml", "--user", "ferry"]);
    rbac.expect_code(0);
    let admin = k.ws.path().join("admin-kubeconfig");
    std::fs::write(&admin, as_user("admin-t0ken")).unwrap();
    let out = output_with_stdin(
        std::process::Command::new("kubectl")
            .args(["apply", "--server-side", "--validate=false", "-f", "-"])
            .env("KUBECONFIG", &admin),
        &rbac.stdout(),
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Under exactly those rules: plan, apply, upgrade (prune), back out, uninstall.
    k.plan("v1").expect_code(2);
    k.apply("v1").expect_code(0);
    k.plan("v2").expect_code(2);
    k.apply("v2").expect_code(0);
    k.backout(&k.b).expect_code(0);
    k.rollback(&k.a, &["--uninstall"]).expect_code(0);
    // The rules are least: nothing else in the namespace is readable.
    let out = std::process::Command::new("kubectl")
        .args(["get", "serviceaccounts", "-n", &k.a])
        .env("KUBECONFIG", k.ws.path().join("kubeconfig"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot list resource \"serviceaccounts\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

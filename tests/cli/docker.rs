//! The Docker driver against the real Docker engine of this machine, with images built here
//! by `ci/docker-images.sh` (FROM scratch + static busybox; nothing is pulled).
//!
//! Each test uses its own site ids, so container names and labels never collide with another
//! test running at the same time, and removes its containers when it ends.

use std::process::Command;
use std::time::{Duration, Instant};

use ferry::drivers::docker::{DockerDriver, DockerTarget};
use ferry::drivers::{Driver, ReleaseBundle, TargetSpec, compliance};
use ferry::model::{
    App, DockerApp, HealthCheck, PullPolicy, RestartPolicy, TargetKind, UpdateOrder,
};
use ferry::target::TargetRef;

use crate::support::Workspace;

/// Runs `docker ARGS`; panics with its stderr when it fails.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The test images exist and an engine answers, or the test fails saying which is missing.
fn images() {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ci/docker-images.sh"
    ))
    .output()
    .expect("ci/docker-images.sh runs");
    assert!(
        out.status.success(),
        "the Docker driver's tests need a Docker engine and their images: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A workspace whose sites run app `web` on this machine's Docker engine.
struct Lab {
    ws: Workspace,
    sites: Vec<String>,
}

impl Lab {
    /// Sites `<tag>-a` and `<tag>-b`; `docker_extra` is added to the app's `docker:` section.
    fn new(tag: &str, docker_extra: &str, health: &str) -> Self {
        images();
        let ws = Workspace::new();
        let sites = vec![format!("{tag}-a"), format!("{tag}-b")];
        let lab = Self { ws, sites };
        lab.remove_containers();
        lab.ws.write("docker-token", "tok-5ecret-d0cker\n");
        lab.ws.write(
            "templates/web.conf.tera",
            "site = {{ site }}\nversion = {{ version }}\n",
        );
        lab.ws.write(
            "templates/web.env.tera",
            "# rendered per site\nSITE_NAME={{ site }}\nMODE=rendered\n",
        );
        lab.ws
            .write("inventory.yaml", &lab.inventory(docker_extra, health));
        for (name, version, policy) in [
            ("w1", "1.0.0", "backout"),
            ("w2", "2.0.0", "backout"),
            ("w3-backout", "3.0.0-bad", "backout"),
            ("w3-halt", "3.0.0-bad", "halt"),
            ("w9", "9.9.9", "halt"),
        ] {
            lab.ws.write(
                &format!("plans/{name}.yaml"),
                &format!(
                    "version: 1\nkind: release\nname: web-{version}\nreleases: [{{ app: web, version: \"{version}\" }}]\nwaves:\n  - {{ name: canary, sites: [{a}] }}\n  - {{ name: rest, sites: [{b}] }}\non_failure: {policy}\n",
                    a = lab.sites[0],
                    b = lab.sites[1]
                ),
            );
        }
        lab
    }

    fn inventory(&self, docker_extra: &str, health: &str) -> String {
        let (a, b) = (&self.sites[0], &self.sites[1]);
        format!(
            r#"version: 1
sites:
  - {{ id: {a}, tier: sqa, clouds: [engine] }}
  - {{ id: {b}, tier: prod, clouds: [engine] }}
clouds:
  - {{ id: engine, kind: docker, docker: {{ host: "unix:///var/run/docker.sock" }} }}
apps:
  - id: web
    version: 1.0.0
    target: docker
    sites: [{a}, {b}]
    health_check: {health}
    env: {{ MODE: plain, GREETING: hello }}
    secrets: {{ TOKEN: "file:docker-token" }}
    config: [{{ template: templates/web.conf.tera, dest: /www/site.conf }}]
    keep_releases: 3
    docker:
      image: "ferry-test/web:{{version}}"
      pull: never
      env_template: templates/web.env.tera
      memory_mb: 64
      stop_timeout_seconds: 2
{docker_extra}"#
        )
    }

    /// `(name, version, state)` of the app's containers on `site`, by name.
    fn containers(&self, site: &str) -> Vec<(String, String, String)> {
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=ferry.site={site}"),
            "--format",
            "{{.Names}} {{.Label \"ferry.version\"}} {{.State}}",
        ]);
        let mut v: Vec<(String, String, String)> = out
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((
                    it.next()?.to_owned(),
                    it.next()?.to_owned(),
                    it.next()?.to_owned(),
                ))
            })
            .collect();
        v.sort();
        v
    }

    /// Versions of the running containers on `site`.
    fn running(&self, site: &str) -> Vec<String> {
        self.containers(site)
            .into_iter()
            .filter(|(_, _, s)| s == "running")
            .map(|(_, v, _)| v)
            .collect()
    }

    /// What the running container of `site` serves at `/path` (busybox wget inside it).
    fn serves(&self, site: &str, path: &str) -> String {
        let v = self.running(site);
        assert_eq!(v.len(), 1, "one container runs on {site}: {v:?}");
        docker(&[
            "exec",
            &format!("ferry-{site}-web-{}", v[0]),
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://127.0.0.1{path}"),
        ])
    }

    fn remove_containers(&self) {
        for site in &self.sites {
            let ids = docker(&["ps", "-aq", "--filter", &format!("label=ferry.site={site}")]);
            for id in ids.lines() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.remove_containers();
    }
}

const HTTP_HEALTH: &str =
    r#"{ http: "http://127.0.0.1/health", timeout_seconds: 6, interval_ms: 200 }"#;

#[test]
fn first_deploy_upgrade_and_backout_through_the_engine() {
    let lab = Lab::new("dk-cycle", "", HTTP_HEALTH);
    let (a, b) = (lab.sites[0].clone(), lab.sites[1].clone());
    let planned = lab.ws.plan_file("w1");
    planned
        .expect_code(2)
        .stdout_has(&format!("+ {a}/engine/web  (none) -> 1.0.0"));
    let plan_text = std::fs::read_to_string(lab.ws.path().join("w1.json")).unwrap();
    assert!(
        plan_text.contains("\"role\": \"image\"") && plan_text.contains("sha256:"),
        "the plan records the image id it was made with"
    );
    // The engine names itself in the observation (the DIBR guide's platform column).
    assert!(
        plan_text.contains("\"engine\": \"Docker Engine "),
        "the observation names the engine: {plan_text}"
    );
    lab.ws.run(&["apply", "w1.json"]).expect_code(0);
    for site in [&a, &b] {
        assert_eq!(lab.running(site), vec!["1.0.0"]);
        assert_eq!(lab.serves(site, "/version"), "1.0.0");
        assert_eq!(
            lab.serves(site, "/site.conf"),
            format!("site = {site}\nversion = 1.0.0"),
            "the rendered configuration is in the container"
        );
    }
    // Environment: plain env, the rendered env template (which wins), the secret at run time.
    let env = docker(&[
        "inspect",
        "--format",
        "{{join .Config.Env \"\\n\"}}",
        &format!("ferry-{a}-web-1.0.0"),
    ]);
    for want in [
        "GREETING=hello",
        "MODE=rendered",
        &format!("SITE_NAME={a}"),
        "TOKEN=tok-5ecret-d0cker",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} in {env}");
    }
    let labels = docker(&[
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &format!("ferry-{a}-web-1.0.0"),
    ]);
    assert!(!labels.contains("tok-5ecret"), "no secret in labels");
    let ledger = std::fs::read_to_string(lab.ws.ledger_path()).unwrap();
    assert!(!ledger.contains("tok-5ecret") && !plan_text.contains("tok-5ecret"));

    // Nothing to do when everything runs what is wanted.
    lab.ws
        .plan_file("w1")
        .expect_code(0)
        .stdout_has("unchanged");

    // Upgrade: start-first; the old container is kept, stopped, for back-out.
    lab.ws.deploy("w2");
    for site in [&a, &b] {
        assert_eq!(lab.running(site), vec!["2.0.0"]);
        assert_eq!(lab.serves(site, "/version"), "2.0.0");
        let all = lab.containers(site);
        assert!(
            all.iter().any(|(_, v, s)| v == "1.0.0" && s == "exited"),
            "1.0.0 is kept stopped: {all:?}"
        );
    }

    // Back-out restarts the previous container and removes the one backed out.
    lab.ws
        .run(&[
            "backout",
            "-i",
            "inventory.yaml",
            "--app",
            "web",
            "--site",
            &a,
        ])
        .expect_code(0);
    assert_eq!(lab.running(&a), vec!["1.0.0"]);
    assert_eq!(lab.serves(&a, "/version"), "1.0.0");
    assert!(
        !lab.containers(&a).iter().any(|(_, v, _)| v == "2.0.0"),
        "{:?}",
        lab.containers(&a)
    );
    assert_eq!(
        lab.running(&b),
        vec!["2.0.0"],
        "the other site is untouched"
    );
    lab.ws.run(&["ledger", "verify"]).expect_code(0);
}

#[test]
fn a_failed_health_check_backs_out_or_halts_with_the_old_container_serving() {
    let lab = Lab::new("dk-fail", "", HTTP_HEALTH);
    let (a, b) = (lab.sites[0].clone(), lab.sites[1].clone());
    lab.ws.deploy("w1");

    // backout: the canary fails its health check; it returns to 1.0.0, the bad one is removed.
    lab.ws.plan_file("w3-backout").expect_code(2);
    let r = lab.ws.run(&["apply", "w3-backout.json"]);
    r.expect_code(6);
    assert_eq!(lab.running(&a), vec!["1.0.0"]);
    assert!(
        !lab.containers(&a).iter().any(|(_, v, _)| v == "3.0.0-bad"),
        "the failed container is removed: {:?}",
        lab.containers(&a)
    );
    assert_eq!(
        lab.running(&b),
        vec!["1.0.0"],
        "the second wave never started"
    );
    let failed = lab.ws.events("step_failed");
    let detail = failed[0].to_string();
    assert!(
        detail.contains("health check did not pass") && detail.contains("exited with"),
        "{detail}"
    );

    // halt: start-first stops the failed new container, so the old one serves alone.
    lab.ws.plan_file("w3-halt").expect_code(2);
    lab.ws.run(&["apply", "w3-halt.json"]).expect_code(5);
    assert_eq!(lab.running(&a), vec!["1.0.0"]);
    assert_eq!(lab.serves(&a, "/version"), "1.0.0");
    let kept: Vec<_> = lab
        .containers(&a)
        .into_iter()
        .filter(|(_, v, _)| v == "3.0.0-bad")
        .collect();
    assert_eq!(
        kept.len(),
        1,
        "halt leaves the failed container, stopped: {kept:?}"
    );
    assert_eq!(kept[0].2, "exited");
}

#[test]
fn docker_health_status_alone_decides_and_named_volumes_outlive_an_uninstall() {
    // No ferry check: Docker's own HEALTHCHECK (run by the engine) is what is waited for.
    let lab = Lab::new(
        "dk-dhealth",
        "      healthcheck: { test: [wget, -q, -O, /dev/null, \"http://127.0.0.1/health\"], interval_ms: 200, timeout_ms: 1000, retries: 2 }\n      volumes: [\"ferry-it-dhealth-data:/data\"]\n",
        "{ timeout_seconds: 8, interval_ms: 200 }",
    );
    let _ = Command::new("docker")
        .args(["volume", "rm", "-f", "ferry-it-dhealth-data"])
        .output();
    let a = lab.sites[0].clone();
    // A first install that fails is undone by uninstalling; the data volume stays.
    lab.ws.plan_file("w3-backout").expect_code(2);
    lab.ws.run(&["apply", "w3-backout.json"]).expect_code(6);
    let detail = lab.ws.events("step_failed")[0].to_string();
    assert!(detail.contains("docker health is unhealthy"), "{detail}");
    assert!(
        lab.containers(&a).is_empty(),
        "uninstalled: {:?}",
        lab.containers(&a)
    );
    assert_eq!(
        docker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            "name=ferry-it-dhealth-data"
        ]),
        "ferry-it-dhealth-data",
        "ferry never removes a named volume"
    );
    lab.ws.deploy("w1");
    let status = docker(&[
        "inspect",
        "--format",
        "{{.State.Health.Status}}",
        &format!("ferry-{a}-web-1.0.0"),
    ]);
    assert_eq!(status, "healthy");
    drop(lab);
    let _ = Command::new("docker")
        .args(["volume", "rm", "-f", "ferry-it-dhealth-data"])
        .output();
}

#[test]
fn a_container_that_crashes_is_reported_with_its_exit_code() {
    let lab = Lab::new("dk-crash", "", HTTP_HEALTH);
    let a = lab.sites[0].clone();
    lab.ws.deploy("w1");
    lab.ws.write(
        "plans/crash.yaml",
        &format!(
            "version: 1\nkind: release\nname: crash\nreleases: [{{ app: web, version: \"4.0.0-crash\" }}]\nwaves: [{{ name: only, sites: [{a}] }}]\non_failure: backout\n"
        ),
    );
    lab.ws.plan_file("crash").expect_code(2);
    lab.ws.run(&["apply", "crash.json"]).expect_code(6);
    let detail = lab.ws.events("step_failed")[0].to_string();
    assert!(detail.contains("container exited with code 3"), "{detail}");
    assert_eq!(lab.running(&a), vec!["1.0.0"]);
}

#[test]
fn drift_made_by_hand_shows_in_the_plan_and_is_repaired() {
    let lab = Lab::new("dk-drift", "", HTTP_HEALTH);
    let (a, b) = (lab.sites[0].clone(), lab.sites[1].clone());
    lab.ws.deploy("w1");
    docker(&["stop", "-t", "1", &format!("ferry-{a}-web-1.0.0")]);
    docker(&["update", "--restart", "no", &format!("ferry-{b}-web-1.0.0")]);
    let p = lab.ws.plan_file("w1");
    p.expect_code(2)
        .stdout_has(&format!(
            "! drift: no container of web is running; the newest, ferry-{a}-web-1.0.0, is exited"
        ))
        .stdout_has(&format!(
            "! drift: container ferry-{b}-web-1.0.0: restart policy is `no`, ferry made it `unless-stopped`"
        ));
    lab.ws.run(&["apply", "w1.json"]).expect_code(0);
    assert_eq!(lab.running(&a), vec!["1.0.0"]);
    assert_eq!(lab.running(&b), vec!["1.0.0"]);
    let policy = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.RestartPolicy.Name}}",
        &format!("ferry-{b}-web-1.0.0"),
    ]);
    assert_eq!(policy, "unless-stopped", "the drifted container was remade");
    lab.ws.plan_file("w1").expect_code(0);

    // A container removed by hand: the plan shows the target as serving nothing.
    docker(&["rm", "-f", &format!("ferry-{a}-web-1.0.0")]);
    lab.ws
        .plan_file("w1")
        .expect_code(2)
        .stdout_has(&format!("+ {a}/engine/web  (none) -> 1.0.0"));

    // Drift after the plan was made makes it stale.
    docker(&["stop", "-t", "1", &format!("ferry-{b}-web-1.0.0")]);
    lab.ws
        .run(&["apply", "w1.json"])
        .expect_code(3)
        .stderr_has(&format!(
            "target {b}/engine/web changed since the plan was made"
        ));
}

#[test]
fn a_missing_image_with_pull_never_is_a_plan_error_and_nothing_changes() {
    let lab = Lab::new("dk-missing", "", HTTP_HEALTH);
    let a = lab.sites[0].clone();
    lab.ws.deploy("w1");
    let r = lab.ws.plan_file("w9");
    r.expect_code(1)
        .stderr_has("image ferry-test/web:9.9.9 is not on Docker host `engine`")
        .stderr_has("pull policy is `never`");
    assert!(
        !lab.ws.path().join("w9.json").exists(),
        "no plan is written"
    );
    assert_eq!(lab.running(&a), vec!["1.0.0"]);
}

#[test]
fn an_image_retagged_after_planning_makes_the_plan_stale() {
    let lab = Lab::new("dk-retag", "", HTTP_HEALTH);
    let tag = "ferry-it-retag/web";
    docker(&["tag", "ferry-test/web:1.0.0", &format!("{tag}:5.0.0")]);
    let inv = std::fs::read_to_string(lab.ws.path().join("inventory.yaml"))
        .unwrap()
        .replace("ferry-test/web:{version}", &format!("{tag}:{{version}}"));
    lab.ws.write("inventory.yaml", &inv);
    lab.ws.write(
        "plans/w5.yaml",
        &format!(
            "version: 1\nkind: release\nname: w5\nreleases: [{{ app: web, version: \"5.0.0\" }}]\nwaves: [{{ name: only, sites: [{}] }}]\non_failure: halt\n",
            lab.sites[0]
        ),
    );
    lab.ws.plan_file("w5").expect_code(2);
    docker(&["tag", "ferry-test/web:2.0.0", &format!("{tag}:5.0.0")]);
    let r = lab.ws.run(&["apply", "w5.json"]);
    let _ = Command::new("docker")
        .args(["rmi", &format!("{tag}:5.0.0")])
        .output();
    r.expect_code(3)
        .stderr_has(&format!("image docker://engine/{tag}:5.0.0 is now sha256:"));
    assert!(
        lab.containers(&lab.sites[0]).is_empty(),
        "nothing was started"
    );
}

/// The engine behind mutual TLS on a loopback port (ci/docker-tls.sh); stopped on drop.
struct TlsProxy(std::path::PathBuf);

impl TlsProxy {
    fn start(dir: &std::path::Path, port: u32) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../ci/docker-tls.sh");
        let out = Command::new(script)
            .args(["start", &dir.display().to_string(), &port.to_string()])
            .output()
            .expect("ci/docker-tls.sh runs");
        assert!(
            out.status.success(),
            "could not put the Docker engine behind TLS (ci/test.sh installs stunnel with `ci/docker-tls.sh install`): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir.to_owned())
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../ci/docker-tls.sh");
        let _ = Command::new(script)
            .args(["stop", &self.0.display().to_string()])
            .output();
    }
}

#[test]
fn a_docker_host_over_tcp_is_reached_with_client_certificates_only() {
    let lab = Lab::new("dk-tls", "", HTTP_HEALTH);
    // Below the kernel's ephemeral range (32768-60999): no client socket can hold it.
    let port = 31000 + (std::process::id() % 1000);
    let _proxy = TlsProxy::start(&lab.ws.path().join("tls"), port);
    let inv = std::fs::read_to_string(lab.ws.path().join("inventory.yaml")).unwrap();
    let with = |client: &str| {
        inv.replace(
            r#"host: "unix:///var/run/docker.sock""#,
            &format!(
                r#"host: "tcp://127.0.0.1:{port}", tls: {{ ca: "file:tls/ca.pem", cert: "file:tls/{client}.pem", key: "file:tls/{client}-key.pem" }}"#
            ),
        )
    };
    lab.ws.write("inventory.yaml", &with("client"));
    lab.ws.deploy("w1");
    for site in &lab.sites {
        assert_eq!(lab.running(site), vec!["1.0.0"]);
    }
    // A client certificate from another CA is refused by the daemon's side: a clear error.
    lab.ws.write("inventory.yaml", &with("rogue-client"));
    lab.ws.plan_file("w2").expect_code(1).stderr_has(&format!(
        "the Docker engine of cloud `engine` at tcp://127.0.0.1:{port} is not reachable"
    ));
}

#[test]
fn an_unreachable_engine_is_a_clear_plan_error() {
    let lab = Lab::new("dk-noengine", "", HTTP_HEALTH);
    let inv = std::fs::read_to_string(lab.ws.path().join("inventory.yaml"))
        .unwrap()
        .replace(
            "unix:///var/run/docker.sock",
            "unix:///nonexistent/docker.sock",
        );
    lab.ws.write("inventory.yaml", &inv);
    lab.ws.plan_file("w1").expect_code(1).stderr_has(
        "the Docker engine of cloud `engine` at unix:///nonexistent/docker.sock is not reachable",
    );
}

#[test]
fn stop_first_with_a_published_port_serves_the_new_version_on_the_same_port() {
    // Port per test run: the test's pid keeps parallel runs apart.
    let port = 20000 + (std::process::id() % 20000);
    let lab = Lab::new(
        "dk-port",
        &format!("      strategy: stop-first\n      ports: [\"127.0.0.1:{port}:80\"]\n"),
        HTTP_HEALTH,
    );
    // One site only: two sites cannot publish the same host port.
    lab.ws.write(
        "plans/one1.yaml",
        &format!("version: 1\nkind: release\nname: one1\nreleases: [{{ app: web, version: \"1.0.0\" }}]\nwaves: [{{ name: only, sites: [{}] }}]\non_failure: backout\n", lab.sites[0]),
    );
    lab.ws.write(
        "plans/one2.yaml",
        &format!("version: 1\nkind: release\nname: one2\nreleases: [{{ app: web, version: \"2.0.0\" }}]\nwaves: [{{ name: only, sites: [{}] }}]\non_failure: backout\n", lab.sites[0]),
    );
    lab.ws.write(
        "plans/one3.yaml",
        &format!("version: 1\nkind: release\nname: one3\nreleases: [{{ app: web, version: \"3.0.0-bad\" }}]\nwaves: [{{ name: only, sites: [{}] }}]\non_failure: backout\n", lab.sites[0]),
    );
    let get = || http_get(port, "/version");
    lab.ws.deploy("one1");
    assert_eq!(get().as_deref(), Some("1.0.0"));
    lab.ws.deploy("one2");
    assert_eq!(get().as_deref(), Some("2.0.0"));
    lab.ws.plan_file("one3").expect_code(2);
    lab.ws.run(&["apply", "one3.json"]).expect_code(6);
    assert_eq!(
        get().as_deref(),
        Some("2.0.0"),
        "backed out on the same port"
    );
}

/// Body of `GET http://127.0.0.1:PORT/PATH`, retried for a few seconds.
fn http_get(port: u32, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port as u16)) {
            let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
            let mut text = String::new();
            if s.read_to_string(&mut text).is_ok()
                && let Some((head, body)) = text.split_once("\r\n\r\n")
                && head.lines().next().is_some_and(|l| l.contains(" 200 "))
            {
                return Some(body.trim().to_owned());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn kill_9_during_an_upgrade_then_resume_leaves_exactly_one_version_serving() {
    let ws_tmp = tempfile::tempdir().unwrap();
    let ctl = ws_tmp.path().display().to_string();
    // The health check runs inside the container; it holds while /ctl/hang exists.
    let health = r#"{ command: [sh, -c, "if [ -e /ctl/hang ]; then touch /ctl/hanging-$FERRY_VERSION; while [ -e /ctl/hang ]; do sleep 0.1; done; fi; wget -q -O /dev/null http://127.0.0.1/health"], timeout_seconds: 60, interval_ms: 200 }"#;
    let lab = Lab::new(
        "dk-kill",
        &format!("      volumes: [\"{ctl}:/ctl\"]\n"),
        health,
    );
    let a = lab.sites[0].clone();
    lab.ws.deploy("w1");
    lab.ws.plan_file("w2").expect_code(2);
    std::fs::write(ws_tmp.path().join("hang"), "").unwrap();
    let mut child = lab
        .ws
        .cmd(&["apply", "w2.json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ws_tmp.path().join("hanging-2.0.0").exists() {
        assert!(
            Instant::now() < deadline,
            "the upgrade never reached its health check"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL, mid-upgrade: the new container runs beside the old one.
    child.wait().unwrap();
    std::fs::remove_file(ws_tmp.path().join("hang")).unwrap();
    let mut both = lab.running(&a);
    both.sort();
    assert_eq!(
        both,
        vec!["1.0.0", "2.0.0"],
        "killed between start-new and stop-old"
    );

    lab.ws.run(&["apply", "--resume", "w2.json"]).expect_code(0);
    for site in &lab.sites {
        assert_eq!(
            lab.running(site),
            vec!["2.0.0"],
            "exactly one version serves on {site}"
        );
        assert_eq!(
            lab.containers(site)
                .iter()
                .filter(|(_, v, _)| v == "2.0.0")
                .count(),
            1,
            "the container made before the kill was reused, not made twice"
        );
    }
    lab.ws.run(&["ledger", "verify"]).expect_code(0);
}

/// Removes every container of a driver-level test's site.
fn remove_site(site: &str) {
    let ids = docker(&["ps", "-aq", "--filter", &format!("label=ferry.site={site}")]);
    for id in ids.lines() {
        let _ = Command::new("docker").args(["rm", "-f", id]).output();
    }
}

/// The `web` app of the test images on `site`, as the driver sees it (no inventory).
fn driver_spec(site: &str) -> TargetSpec {
    let app = App {
        id: "web".into(),
        version: "1.0.0".into(),
        artifact: String::new(),
        target: TargetKind::Docker,
        sites: vec![site.into()],
        health_check: HealthCheck {
            command: vec![],
            http: Some("http://127.0.0.1/health".into()),
            timeout_seconds: 6,
            interval_ms: 100,
        },
        restart: None,
        depends_on: vec![],
        config: vec![],
        env: Default::default(),
        secrets: Default::default(),
        keep_releases: 5,
        docker: Some(DockerApp {
            image: "ferry-test/web:{version}".into(),
            pull: PullPolicy::Never,
            command: None,
            ports: vec![],
            volumes: vec![],
            networks: vec![],
            restart: RestartPolicy::UnlessStopped,
            memory_mb: None,
            cpus: None,
            healthcheck: None,
            env_template: None,
            strategy: UpdateOrder::StartFirst,
            stop_timeout_seconds: 2,
        }),
        kubernetes: None,
        lines: vec![],
        lifecycle: None,
        line: None,
    };
    TargetSpec {
        target: TargetRef::new(site, "engine", "web", TargetKind::Docker),
        app: app.into(),
        cloud: None,
        base_dir: std::env::temp_dir(),
        env: vec![],
        secrets: vec![],
        ssh: None,
        docker: Some(DockerTarget {
            cloud: "engine".into(),
            host: "unix:///var/run/docker.sock".into(),
            tls: None,
            timeout: Duration::from_secs(30),
            registries: vec![],
        }),
        fence: None,
    }
}

fn bundle(v: &str, plan: &str) -> ReleaseBundle {
    ReleaseBundle {
        version: v.into(),
        artifact: format!("ferry-test/web:{v}").into(),
        artifact_sha256: String::new(),
        files: vec![],
        plan_id: plan.into(),
    }
}

#[test]
fn docker_driver_passes_the_compliance_suite() {
    images();
    let site = "dk-compliance";
    remove_site(site);
    let spec = driver_spec(site);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(compliance::run(
        &DockerDriver::new(),
        &spec,
        &bundle("1.0.0", "compliance"),
        &bundle("2.0.0", "compliance"),
    ));
    remove_site(site);
}

/// Two releases created within one second (the Engine's container list gives creation times
/// in whole seconds, so they cannot be ordered by it): the back-out removes exactly the
/// release it leaves, as ferry recorded it, and the earlier one serves again.
#[test]
fn a_back_out_removes_the_release_it_leaves_when_both_were_created_in_one_second() {
    images();
    let site = "dk-one-second";
    let spec = driver_spec(site);
    let driver = DockerDriver::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // (version, creation second) of the site's containers, as `docker ps` lists them.
    let listed = || -> Vec<(String, String)> {
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=ferry.site={site}"),
            "--format",
            "{{.Label \"ferry.version\"}} {{.CreatedAt}}",
        ]);
        out.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(v, t)| (v.to_owned(), t.to_owned()))
            .collect()
    };
    let mut same_second = false;
    for _attempt in 0..5 {
        remove_site(site);
        // Start right after a second begins, so both creations fit in it.
        let ms = chrono::Utc::now().timestamp_subsec_millis();
        std::thread::sleep(Duration::from_millis(u64::from(1020 - ms.min(1000))));
        rt.block_on(async {
            driver.apply(&spec, &bundle("1.0.0", "one")).await.unwrap();
            // Start-first: the bad release is created and started, and never becomes healthy.
            let bad = driver.apply(&spec, &bundle("3.0.0-bad", "two")).await;
            assert!(bad.is_err(), "3.0.0-bad is unhealthy");
        });
        let l = listed();
        assert_eq!(l.len(), 2, "{l:?}");
        if l[0].1 == l[1].1 {
            same_second = true;
            break;
        }
    }
    assert!(
        same_second,
        "the two containers were never created within one second in 5 tries: {:?}",
        listed()
    );
    let undo = ferry::plan::Undo::SwitchTo {
        version: "1.0.0".into(),
        revision: None,
    };
    rt.block_on(driver.undo_leaving(&spec, &undo, Some("3.0.0-bad")))
        .unwrap();
    let left = listed();
    assert_eq!(
        left.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>(),
        ["1.0.0"],
        "the release left was removed, the one returned to kept: {left:?}"
    );
    rt.block_on(driver.verify(&spec, "1.0.0")).unwrap();
    remove_site(site);
}

/// Two user-defined networks at once: engines before API 1.44 (Debian's 20.10 here) refuse
/// more than one network at create, so the container is created on the first and connected
/// to the second, under the app's name as an alias on each; on Docker's own `bridge` no alias
/// is asked for (the engine refuses one there at start).
#[test]
fn a_container_joins_every_network_and_the_default_bridge_takes_no_alias() {
    images();
    let nets = [
        format!("ferry-it-net-a-{}", std::process::id()),
        format!("ferry-it-net-b-{}", std::process::id()),
    ];
    for n in &nets {
        let _ = Command::new("docker").args(["network", "rm", n]).output();
        docker(&["network", "create", n]);
    }
    {
        let lab = Lab::new(
            "dk-nets",
            &format!("      networks: [{}, {}]", nets[0], nets[1]),
            HTTP_HEALTH,
        );
        lab.ws.plan_file("w1").expect_code(2);
        lab.ws.run(&["apply", "w1.json"]).expect_code(0);
        let name = format!("ferry-{}-web-1.0.0", lab.sites[0]);
        let joined = docker(&[
            "inspect",
            "-f",
            "{{range $n, $e := .NetworkSettings.Networks}}{{$n}}={{join $e.Aliases \",\"}};{{end}}",
            &name,
        ]);
        for n in &nets {
            let entry = joined
                .split(';')
                .find(|e| e.starts_with(&format!("{n}=")))
                .unwrap_or_else(|| panic!("{name} is not on {n}: {joined}"));
            assert!(entry.contains("web"), "alias `web` on {n}: {joined}");
        }
        assert_eq!(lab.serves(&lab.sites[0], "/version"), "1.0.0");
    }
    {
        let lab = Lab::new("dk-bridge", "      networks: [bridge]", HTTP_HEALTH);
        lab.ws.plan_file("w1").expect_code(2);
        lab.ws.run(&["apply", "w1.json"]).expect_code(0);
        assert_eq!(lab.running(&lab.sites[0]), vec!["1.0.0"]);
    }
    for n in &nets {
        let _ = Command::new("docker").args(["network", "rm", n]).output();
    }
}

/// Two majors side by side in containers (`web@1` and `web@2` on one Docker host): see
/// `lines.rs` for the scenario. Their containers are `ferry-SITE-web-v1-...` and
/// `ferry-SITE-web-v2-...`, labelled with the line (`ferry.app=web@2`).
#[test]
fn two_majors_side_by_side_in_containers() {
    let lab = Lab::new("dk-lines", "", HTTP_HEALTH);
    docker(&[
        "tag",
        "ferry-test/web:3.0.0-bad",
        "ferry-test/web:2.9.9-bad",
    ]);
    let inv = lab.inventory("", HTTP_HEALTH).replacen(
        "  - id: web\n    version: 1.0.0\n",
        &format!("  - id: web\n    version: 2.0.0\n{}", crate::lines::LINES),
        1,
    );
    lab.ws.write("inventory.yaml", &inv);
    let site = lab.sites[0].clone();
    let serving = |app: &str| {
        let out = docker(&[
            "ps",
            "--filter",
            &format!("label=ferry.site={site}"),
            "--filter",
            &format!("label=ferry.app={app}"),
            "--format",
            "{{.Names}} {{.Label \"ferry.version\"}}",
        ]);
        let line = out.lines().next()?.to_owned();
        let (name, version) = line.split_once(' ')?;
        assert!(name.contains(&app.replace('@', "-v")), "{name}");
        Some(version.to_owned())
    };
    crate::lines::Scenario {
        ws: &lab.ws,
        app: "web",
        site: &lab.sites[0],
        v1: "1.0.0",
        v2: "2.0.0",
        bad: "2.9.9-bad",
        serving: &serving,
    }
    .run();
}

/// The Engine's view of one container: `docker inspect -f FORMAT NAME`.
fn inspect(name: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, name])
}

/// `restart: always` on a release ferry stopped would bring it back whenever the daemon
/// restarts (every kept release fighting over ports): a stopped release is parked at `no` and
/// gets its own policy back when a back-out starts it. And a stop may take its whole stop
/// timeout even past the cloud's per-call timeout (the test image ignores SIGTERM, so the
/// Engine waits `stop_timeout_seconds` and kills it).
#[test]
fn stopped_releases_stay_stopped_when_the_daemon_restarts_and_a_stop_outlasts_the_call_timeout() {
    images();
    let site = "dk-restart";
    remove_site(site);
    let mut spec = driver_spec(site);
    {
        let d = std::sync::Arc::make_mut(&mut spec.app)
            .docker
            .as_mut()
            .unwrap();
        d.restart = RestartPolicy::Always;
        d.stop_timeout_seconds = 3;
    }
    spec.docker.as_mut().unwrap().timeout = Duration::from_secs(2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = DockerDriver::new();
    rt.block_on(d.apply(&spec, &bundle("1.0.0", "rs"))).unwrap();
    rt.block_on(d.apply(&spec, &bundle("2.0.0", "rs")))
        .unwrap_or_else(|e| panic!("a 3 s stop under a 2 s call timeout: {e}"));
    let policy = |v: &str| {
        inspect(
            &format!("ferry-{site}-web-{v}"),
            "{{.HostConfig.RestartPolicy.Name}} {{.State.Running}}",
        )
    };
    assert_eq!(policy("1.0.0"), "no false");
    assert_eq!(policy("2.0.0"), "always true");
    let o = rt.block_on(d.observe(&spec)).unwrap();
    assert!(
        o.drift.is_empty(),
        "a parked release is not drift: {:?}",
        o.drift
    );
    rt.block_on(d.undo(
        &spec,
        &ferry::plan::Undo::SwitchTo {
            version: "1.0.0".into(),
            revision: None,
        },
    ))
    .unwrap();
    assert_eq!(policy("1.0.0"), "always true");
    assert_eq!(policy("2.0.0"), "no false");
    remove_site(site);
}

/// Redeploying the version that serves (a changed setting) under start-first: the running
/// container is never killed first. It keeps serving, renamed, until its replacement is
/// healthy; when the replacement fails it takes its name back, still running.
#[test]
fn a_same_version_redeploy_keeps_the_old_container_serving_until_the_new_one_is_healthy() {
    images();
    let site = "dk-same";
    remove_site(site);
    let spec = driver_spec(site);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = DockerDriver::new();
    rt.block_on(d.apply(&spec, &bundle("1.0.0", "same")))
        .unwrap();
    let name = format!("ferry-{site}-web-1.0.0");
    let first = inspect(&name, "{{.Id}} {{.State.Running}} {{.State.StartedAt}}");
    // A replacement that cannot come up (its command exits at once).
    let mut broken = spec.clone();
    std::sync::Arc::make_mut(&mut broken.app)
        .docker
        .as_mut()
        .unwrap()
        .command = Some(vec!["false".into()]);
    assert!(
        rt.block_on(d.apply(&broken, &bundle("1.0.0", "same")))
            .is_err()
    );
    assert_eq!(
        inspect(&name, "{{.Id}} {{.State.Running}} {{.State.StartedAt}}"),
        first,
        "the same container, never stopped or restarted"
    );
    let all = docker(&["ps", "-aq", "--filter", &format!("label=ferry.site={site}")]);
    assert_eq!(all.lines().count(), 1, "the failed replacement is gone");
    // A replacement that works (a memory limit changed): it takes over, the old one goes.
    let mut limited = spec.clone();
    std::sync::Arc::make_mut(&mut limited.app)
        .docker
        .as_mut()
        .unwrap()
        .memory_mb = Some(96);
    rt.block_on(d.apply(&limited, &bundle("1.0.0", "same")))
        .unwrap();
    let now = inspect(&name, "{{.Id}} {{.State.Running}} {{.HostConfig.Memory}}");
    assert!(
        now.ends_with(&format!("true {}", 96 * 1024 * 1024)),
        "{now}"
    );
    assert!(!now.starts_with(first.split(' ').next().unwrap()));
    let all = docker(&["ps", "-aq", "--filter", &format!("label=ferry.site={site}")]);
    assert_eq!(all.lines().count(), 1, "{all}");
    remove_site(site);
}

/// Debian's docker-registry with a login, on a loopback port of its own (ci/registry.sh),
/// holding `ferry-test/web:1.0.0` pushed with the docker CLI.
struct Registry {
    dir: tempfile::TempDir,
    server: String,
}

impl Registry {
    fn start(user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::support::free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../ci/registry.sh");
        let out = Command::new(script)
            .args(["start", &port.to_string()])
            .arg(dir.path())
            .args([user, password])
            .output()
            .expect("ci/registry.sh runs");
        assert!(
            out.status.success(),
            "the registry did not start (ci/registry.sh install installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let server = format!("127.0.0.1:{port}");
        // Pushed with the CLI's own login (kept in this registry's directory), then untagged
        // here and logged out: the engine must pull it, and only ferry's login can.
        let cli = |args: &[&str], stdin: Option<&str>| {
            let out = crate::support::output_with_stdin(
                Command::new("docker")
                    .args(args)
                    .env("DOCKER_CONFIG", dir.path().join("cli")),
                stdin.unwrap_or(""),
            );
            assert!(
                out.status.success(),
                "docker {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let tag = format!("{server}/ferry-test/web:1.0.0");
        cli(
            &["login", &server, "-u", user, "--password-stdin"],
            Some(password),
        );
        cli(&["tag", "ferry-test/web:1.0.0", &tag], None);
        cli(&["push", &tag], None);
        cli(&["rmi", &tag], None);
        cli(&["logout", &server], None);
        Self { dir, server }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../ci/registry.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
        let _ = Command::new("docker")
            .args(["rmi", &format!("{}/ferry-test/web:1.0.0", self.server)])
            .output();
    }
}

#[test]
fn a_private_registry_login_goes_with_the_pull() {
    images();
    let site = "dk-registry";
    remove_site(site);
    let registry = Registry::start("deployer", "r3gistry-s3cret");
    let ws = Workspace::new();
    ws.write("registry-password", "r3gistry-s3cret\n");
    let inventory = |login: &str| {
        format!(
            r#"version: 1
sites: [{{ id: {site}, tier: prod, clouds: [engine] }}]
clouds:
  - id: engine
    kind: docker
    docker:
      host: "unix:///var/run/docker.sock"
{login}
apps:
  - id: web
    version: 1.0.0
    target: docker
    sites: [{site}]
    health_check: {HTTP_HEALTH}
    docker:
      image: "{server}/ferry-test/web:{{version}}"
      pull: always
      stop_timeout_seconds: 2
"#,
            server = registry.server
        )
    };
    ws.write(
        "plans/p.yaml",
        &format!(
            "version: 1\nkind: release\nname: web\nreleases: [{{ app: web, version: \"1.0.0\" }}]\nwaves: [{{ name: only, sites: [{site}] }}]\non_failure: halt\n"
        ),
    );
    // Without a login the engine is refused, and the error says so.
    ws.write("inventory.yaml", &inventory(""));
    ws.plan_file("p").expect_code(2);
    ws.run(&["apply", "p.json"])
        .expect_code(5)
        .stderr_has("no basic auth credentials");
    // With the login (a file: reference), the pull carries it.
    ws.write(
        "inventory.yaml",
        &inventory(&format!(
            "      registries: [{{ server: \"{}\", username: deployer, password: \"file:registry-password\" }}]",
            registry.server
        )),
    );
    ws.plan_file("p").expect_code(2);
    ws.run(&["apply", "p.json"]).expect_code(0);
    let running = docker(&[
        "inspect",
        "-f",
        "{{.State.Running}}",
        &format!("ferry-{site}-web-1.0.0"),
    ]);
    assert_eq!(running, "true");
    // The engine holds the pulled tag now (ferry runs the image by the id it pinned).
    docker(&[
        "image",
        "inspect",
        &format!("{}/ferry-test/web:1.0.0", registry.server),
    ]);
    let ledger = std::fs::read_to_string(ws.ledger_path()).unwrap();
    assert!(
        !ledger.contains("r3gistry-s3cret"),
        "the password never reaches the ledger"
    );
    remove_site(site);
}

/// An image HEALTHCHECK whose first probe comes one interval after the start (30 s by
/// default; 60 s here) does not hold a deploy whose own health check passes: while Docker
/// says `starting`, ferry's check decides.
#[test]
fn docker_health_still_starting_does_not_fail_a_deploy_ferry_checks_itself() {
    images();
    let site = "dk-starting";
    remove_site(site);
    let mut spec = driver_spec(site);
    std::sync::Arc::make_mut(&mut spec.app)
        .docker
        .as_mut()
        .unwrap()
        .healthcheck = Some(ferry::model::DockerHealthcheck {
        test: vec!["true".into()],
        interval_ms: 60_000,
        timeout_ms: 1_000,
        retries: 3,
        start_period_ms: 120_000,
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(DockerDriver::new().apply(&spec, &bundle("1.0.0", "starting")))
        .unwrap_or_else(|e| panic!("{e}"));
    let name = format!("ferry-{site}-web-1.0.0");
    assert_eq!(
        inspect(
            &name,
            "{{.State.Health.Status}} {{.Config.Healthcheck.StartPeriod}}"
        ),
        "starting 2m0s"
    );
    remove_site(site);
}

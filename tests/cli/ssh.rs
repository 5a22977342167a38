//! The SSH driver against real OpenSSH servers (ci/sshd.sh): deploy, upgrade, back-out,
//! strict host keys, an endpoint that dies mid-wave, resume.

use crate::support::{Fleet, Run, Workspace};

/// Applies `plan` with `site`'s health check held, kills endpoint `k` (listener and sessions)
/// while it is held, and returns the apply's output.
fn apply_killing_an_endpoint_mid_step(
    ws: &Workspace,
    fleet: &Fleet,
    plan: &str,
    site: &str,
    k: usize,
) -> Run {
    ws.hang(site);
    let child = ws.spawn(&["apply", plan]);
    ws.wait_hanging(site);
    fleet.kill(k);
    ws.release(site);
    Run(child.wait_with_output().unwrap())
}

fn setup(n: usize, net: &str) -> (Workspace, Fleet) {
    let ws = Workspace::new();
    let fleet = Fleet::start(n, net);
    ws.write(
        "inventory.yaml",
        &fleet.inventory(&ws, &fleet.path().join("known_hosts")),
    );
    // A plan for fleets smaller than the three clinics of the standard plans.
    ws.write(
        "plans/a1.yaml",
        &Workspace::site_plan("a1", "1.0.0", "clinic-a", "halt"),
    );
    (ws, fleet)
}

#[test]
fn deploy_upgrade_and_back_out_over_ssh() {
    let (ws, fleet) = setup(3, "31.0");
    // The bad release fails its check: keep its deadline short.
    let inv = std::fs::read_to_string(ws.path().join("inventory.yaml"))
        .unwrap()
        .replace("timeout_seconds: 8", "timeout_seconds: 3");
    ws.write("inventory.yaml", &inv);
    let plan = ws.plan_file("v1");
    plan.expect_code(2)
        .stdout_has("+ clinic-a/ep-1/demo  (none) -> 1.0.0")
        .stdout_has("Site readiness")
        .stdout_has("-> ready");
    ws.run(&["apply", "v1.json"])
        .expect_code(0)
        .stdout_has("3 step(s) succeeded");
    for k in 1..=3 {
        assert_eq!(fleet.current(k, "demo").as_deref(), Some("1.0.0"), "ep-{k}");
    }
    let conf = std::fs::read_to_string(fleet.path().join("ep-2/home/ferry/demo/current/app.conf"))
        .unwrap();
    assert_eq!(
        conf, "site = clinic-b\nversion = 1.0.0\n",
        "configuration rendered and uploaded"
    );
    ws.deploy("v2");
    for k in 1..=3 {
        assert_eq!(fleet.current(k, "demo").as_deref(), Some("2.0.0"), "ep-{k}");
    }
    ws.plan_file("v2").expect_code(0);
    ws.backout("clinic-b", &[]).expect_code(0);
    assert_eq!(fleet.current(2, "demo").as_deref(), Some("1.0.0"));
    // A failing release is backed out on the endpoint.
    ws.plan_file("v3-backout").expect_code(2);
    ws.run(&["apply", "v3-backout.json"])
        .expect_code(6)
        .stderr_has("health check did not pass");
    assert_eq!(fleet.current(1, "demo").as_deref(), Some("2.0.0"));
}

#[test]
fn an_unknown_host_key_is_refused_then_trusted_on_confirmation() {
    let (ws, fleet) = setup(1, "32.0");
    let empty = ws.path().join("known_hosts");
    std::fs::write(&empty, "").unwrap();
    ws.write("inventory.yaml", &fleet.inventory(&ws, &empty));
    let run = ws.plan_file("a1");
    run.expect_code(1)
        .stderr_has("host key of 127.32.0.1:2222 is not in")
        .stderr_has("ferry hosts trust ep-1");
    let fp = run
        .stderr()
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap()
        .trim_end_matches('.')
        .to_owned();
    // Not a terminal and no fingerprint given: nothing is recorded.
    ws.run(&["hosts", "trust", "ep-1", "-i", "inventory.yaml"])
        .expect_code(1)
        .stderr_has("not confirmed, nothing recorded");
    ws.run(&[
        "hosts",
        "trust",
        "ep-1",
        "-i",
        "inventory.yaml",
        "--fingerprint",
        "SHA256:wrong",
    ])
    .expect_code(1)
    .stderr_has("nothing recorded");
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "");
    ws.run(&[
        "hosts",
        "trust",
        "ep-1",
        "-i",
        "inventory.yaml",
        "--fingerprint",
        &fp,
    ])
    .expect_code(0)
    .stdout_has("recorded in");
    assert_eq!(ws.events("host_trusted").len(), 1);
    ws.plan_file("a1").expect_code(2);
    ws.run(&["hosts", "trust", "ep-1", "-i", "inventory.yaml"])
        .expect_code(0)
        .stdout_has("already trusted");
}

#[test]
fn a_changed_host_key_is_refused() {
    let (ws, fleet) = setup(2, "33.0");
    // Record ep-1's key under ep-2's name: ep-2 now presents a key that differs from the record.
    let kh = std::fs::read_to_string(fleet.path().join("known_hosts")).unwrap();
    let ep1_key = kh
        .lines()
        .next()
        .unwrap()
        .split_once(' ')
        .unwrap()
        .1
        .to_owned();
    let forged = ws.path().join("forged_known_hosts");
    std::fs::write(
        &forged,
        format!(
            "{}\n[{}]:2222 {ep1_key}\n",
            kh.lines().next().unwrap(),
            fleet.address(2)
        ),
    )
    .unwrap();
    ws.write("inventory.yaml", &fleet.inventory(&ws, &forged));
    ws.write(
        "plans/b1.yaml",
        &Workspace::site_plan("b1", "1.0.0", "clinic-b", "halt"),
    );
    ws.plan_file("b1")
        .expect_code(1)
        .stderr_has("HOST KEY CHANGED for 127.33.0.2:2222")
        .stderr_has("lines [2]");
    ws.plan_file("a1").expect_code(2);
    ws.run(&[
        "hosts",
        "trust",
        "ep-2",
        "-i",
        "inventory.yaml",
        "--fingerprint",
        "SHA256:x",
    ])
    .expect_code(1)
    .stderr_has("will not replace it");
}

#[test]
fn an_endpoint_that_dies_mid_wave_halts_and_resume_finishes_after_it_returns() {
    let (ws, fleet) = setup(3, "34.0");
    ws.deploy("v1");
    ws.write("plans/v2-halt.yaml", &Workspace::plan("2.0.0", "halt"));
    ws.plan_file("v2-halt").expect_code(2);
    let out = apply_killing_an_endpoint_mid_step(&ws, &fleet, "v2-halt.json", "clinic-b", 2);
    out.expect_code(5).stdout_has("HALTED: failed s002");
    // Every other endpoint is on a consistent version: the new one, verified.
    assert_eq!(fleet.current(1, "demo").as_deref(), Some("2.0.0"));
    assert_eq!(fleet.current(3, "demo").as_deref(), Some("2.0.0"));
    let failed = ws.events("step_failed");
    assert_eq!(failed[0]["target"], "clinic-b/ep-2/demo");
    assert_eq!(
        failed[0]["detail"]["serving_after"], "unknown",
        "the endpoint could not be observed"
    );
    // The endpoint comes back; resume finishes the plan without redoing the others.
    fleet.restart(2);
    ws.run(&["apply", "--resume", "v2-halt.json"])
        .expect_code(0)
        .stdout_has("1 step(s) succeeded, 2 already done");
    assert_eq!(fleet.current(2, "demo").as_deref(), Some("2.0.0"));
}

/// A cut network is not a dead process: endpoint 2's packets are dropped in the middle of its
/// step while its sshd and the step's commands keep running. The step fails within its own
/// timeout and says so, the wave's other site goes on, and resume finishes once the link is
/// back.
#[test]
fn a_link_cut_mid_step_fails_the_step_within_its_timeout_and_resume_finishes() {
    let (ws, fleet) = setup(3, "44.0");
    let inv = std::fs::read_to_string(ws.path().join("inventory.yaml")).unwrap();
    ws.write(
        "inventory.yaml",
        &inv.replace("command_timeout_seconds: 20", "command_timeout_seconds: 4"),
    );
    ws.deploy("v1");
    ws.write("plans/v2-halt.yaml", &Workspace::plan("2.0.0", "halt"));
    ws.plan_file("v2-halt").expect_code(2);
    ws.hang("clinic-b");
    let started = std::time::Instant::now();
    let child = ws.spawn(&["apply", "v2-halt.json"]);
    ws.wait_hanging("clinic-b");
    fleet.cut(2);
    ws.release("clinic-b");
    let out = Run(child.wait_with_output().unwrap());
    let took = started.elapsed();
    out.expect_code(5)
        .stdout_has("HALTED: failed s002")
        .stderr_has("clinic-b/ep-2/demo: health check did not pass within 8s");
    assert!(
        took < std::time::Duration::from_secs(60),
        "the step failed within its own timeout, not a TCP timeout: {took:?}"
    );
    assert_eq!(
        fleet.current(3, "demo").as_deref(),
        Some("2.0.0"),
        "the wave went on"
    );
    let failed = ws.events("step_failed");
    assert_eq!(failed[0]["target"], "clinic-b/ep-2/demo");
    // The link comes back: resume finishes without redoing the others.
    fleet.mend(2);
    ws.run(&["apply", "--resume", "v2-halt.json"])
        .expect_code(0)
        .stdout_has("1 step(s) succeeded, 2 already done");
    assert_eq!(fleet.current(2, "demo").as_deref(), Some("2.0.0"));
}

#[test]
fn an_endpoint_that_dies_mid_wave_under_backout_returns_the_others() {
    let (ws, fleet) = setup(3, "35.0");
    ws.deploy("v1");
    ws.plan_file("v2").expect_code(2);
    let out = apply_killing_an_endpoint_mid_step(&ws, &fleet, "v2.json", "clinic-b", 2);
    // The dead endpoint cannot be undone: that is reported, not hidden (exit 1).
    out.expect_code(1).stdout_has("UNDO FAILED for s002");
    assert_eq!(fleet.current(1, "demo").as_deref(), Some("1.0.0"));
    assert_eq!(fleet.current(3, "demo").as_deref(), Some("1.0.0"));
    // Back again, on-call returns it to the previous release.
    fleet.restart(2);
    ws.backout("clinic-b", &[]).expect_code(0);
    assert_eq!(fleet.current(2, "demo").as_deref(), Some("1.0.0"));
}

#[test]
fn an_endpoint_short_of_its_hardware_blocks_the_plan_unless_waived() {
    let (ws, fleet) = setup(1, "36.0");
    let inv = fleet
        .inventory(&ws, &fleet.path().join("known_hosts"))
        .replace("cpus: 1,", "cpus: 512,");
    ws.write("inventory.yaml", &inv);
    ws.plan_file("a1")
        .expect_code(1)
        .stdout_has("cpus 512/")
        .stdout_has("NOT READY")
        .stderr_has("plan blocked: ep-1");
    assert!(!ws.path().join("a1.json").exists());
    let plan = std::fs::read_to_string(ws.path().join("plans/a1.yaml")).unwrap();
    ws.write("plans/a1.yaml", &format!("{plan}waivers:\n  - {{ endpoint: ep-1, reason: \"pilot clinic: replacement server ordered\" }}\n"));
    ws.plan_file("a1")
        .expect_code(2)
        .stdout_has("NOT READY, waived: pilot clinic");
    let created = ws.events("plan_created");
    assert_eq!(
        created.last().unwrap()["detail"]["waivers"][0]["endpoint"],
        "ep-1",
        "the waiver is in the ledger"
    );
    ws.run(&["apply", "a1.json"]).expect_code(0);
}

#[test]
fn endpoints_behind_a_site_hub_are_reached_through_the_jump_host() {
    let (ws, fleet) = setup(2, "37.0");
    // clinic-b's endpoint is reached through ep-1, the hub at clinic-a.
    let inv = std::fs::read_to_string(ws.path().join("inventory.yaml")).unwrap();
    let inv = inv.replace(
        "{ id: clinic-b, tier: prod, endpoints: [ep-2] }",
        "{ id: clinic-b, tier: prod, endpoints: [ep-2], jump: ep-1 }",
    );
    ws.write("inventory.yaml", &inv);
    ws.write(
        "plans/b1.yaml",
        &Workspace::site_plan("b1", "1.0.0", "clinic-b", "halt"),
    );
    ws.deploy("b1");
    assert_eq!(fleet.current(2, "demo").as_deref(), Some("1.0.0"));
    // With the hub down, clinic-b cannot be reached although its own sshd is up.
    fleet.kill(1);
    ws.write(
        "plans/b2.yaml",
        &Workspace::site_plan("b2", "2.0.0", "clinic-b", "halt"),
    );
    ws.plan_file("b2")
        .expect_code(1)
        .stderr_has("ep-1: cannot connect to 127.37.0.1:2222");
}

#[test]
fn without_an_identity_the_ssh_agent_logs_in_and_restart_runs_after_the_switch() {
    let (ws, fleet) = setup(1, "38.0");
    let inv = std::fs::read_to_string(ws.path().join("inventory.yaml")).unwrap();
    let key = format!(
        "identity: \"file:{}\", ",
        fleet.path().join("id_ed25519").display()
    );
    assert!(inv.contains(&key));
    let inv = inv.replace(&key, "").replace(
        "    env: {",
        "    restart: [sh, -c, \"echo $FERRY_VERSION >> ../../restarts.log\"]\n    env: {",
    );
    ws.write("inventory.yaml", &inv);
    // No agent: a clear error.
    ws.cmd(&[
        "plan",
        "-i",
        "inventory.yaml",
        "plans/a1.yaml",
        "-o",
        "a1.json",
    ])
    .env_remove("SSH_AUTH_SOCK")
    .output()
    .map(|o| {
        assert_eq!(o.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&o.stderr)
                .contains("no identity in the inventory and no SSH agent"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    })
    .unwrap();
    // A real ssh-agent holding the key.
    let sock = ws.path().join("agent.sock");
    let agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent from openssh-client");
    let _kill = KillOnDrop(agent);
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let added = std::process::Command::new("ssh-add")
        .arg(fleet.path().join("id_ed25519"))
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let run = |args: &[&str]| ws.cmd(args).env("SSH_AUTH_SOCK", &sock).output().unwrap();
    assert_eq!(
        run(&[
            "plan",
            "-i",
            "inventory.yaml",
            "plans/a1.yaml",
            "-o",
            "a1.json"
        ])
        .status
        .code(),
        Some(2)
    );
    let out = run(&["apply", "a1.json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fleet.current(1, "demo").as_deref(), Some("1.0.0"));
    let restarts =
        std::fs::read_to_string(fleet.path().join("ep-1/home/ferry/demo/restarts.log")).unwrap();
    assert_eq!(
        restarts, "1.0.0\n",
        "restart ran once, in the new release, with its version"
    );
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_http_health_check_runs_on_the_endpoint() {
    let (ws, fleet) = setup(1, "39.0");
    let python = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v python3"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    assert!(
        !python.is_empty(),
        "python3 is on every machine of this kind"
    );
    let addr = fleet.address(1);
    let inv = std::fs::read_to_string(ws.path().join("inventory.yaml")).unwrap();
    // The restart serves the current release over HTTP on the endpoint's address and, as a
    // service manager's start does, returns once it answers; the check's 8 s are then the
    // check's alone (3 s, with the server's start inside them, failed under CI's load).
    let pid = fleet.path().join("http.pid").display().to_string();
    let serve = format!(
        "    restart: [sh, -c, \"if [ -f {pid} ]; then kill $(cat {pid}); sleep 0.2; fi; nohup {python} -m http.server 18039 --bind {addr} >/dev/null 2>&1 & echo $! > {pid}; i=0; until curl -s -o /dev/null http://{addr}:18039/ || [ $i -ge 300 ]; do i=$((i+1)); sleep 0.1; done\"]\n    env: {{"
    );
    let inv = inv
        .replace(
            "health_check: { command: [sh, bin/health], timeout_seconds: 8,",
            &format!("health_check: {{ http: \"http://{addr}:18039/VERSION\", timeout_seconds: 8,"),
        )
        .replace("    env: {", &serve);
    ws.write("inventory.yaml", &inv);
    struct Stop(String);
    impl Drop for Stop {
        fn drop(&mut self) {
            if let Ok(p) = std::fs::read_to_string(&self.0) {
                let _ = std::process::Command::new("kill").arg(p.trim()).status();
            }
        }
    }
    let _stop = Stop(pid.clone());
    ws.deploy("a1");
    // The bad release lacks the file the check asks for: 404, backed out to 1.0.0, verified.
    std::fs::remove_file(ws.path().join("artifacts/3.0.0/VERSION")).unwrap();
    ws.write(
        "plans/a3.yaml",
        &Workspace::site_plan("a3", "3.0.0", "clinic-a", "backout"),
    );
    ws.plan_file("a3").expect_code(2);
    ws.run(&["apply", "a3.json"])
        .expect_code(6)
        .stderr_has("health check did not pass within 8s")
        .stderr_has("404");
    assert_eq!(fleet.current(1, "demo").as_deref(), Some("1.0.0"));
}

/// The shared driver compliance suite, run against the SSH driver and a real sshd.
#[test]
fn the_ssh_driver_passes_the_driver_compliance_suite() {
    use ferry::drivers::ssh::{HostSpec, SshDriver, SshTarget};
    use ferry::drivers::{ReleaseBundle, RenderedFile, TargetSpec, compliance};
    use ferry::model::{App, HealthCheck, TargetKind};
    use ferry::target::TargetRef;

    let fleet = Fleet::start(1, "41.0");
    let work = tempfile::tempdir().unwrap();
    let bundle = |version: &str| {
        let dir = work.path().join(version);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("VERSION"), version).unwrap();
        ReleaseBundle {
            version: version.into(),
            artifact_sha256: ferry::artifact::digest(&dir).unwrap(),
            artifact: dir,
            files: vec![RenderedFile {
                dest: "conf/app.conf".into(),
                contents: format!("v={version}\n"),
            }],
            plan_id: "compliance".into(),
        }
    };
    let host = HostSpec {
        id: "ep-1".into(),
        address: fleet.address(1),
        port: 2222,
        user: "root".into(),
        known_hosts: fleet.path().join("known_hosts"),
        identity: Some(
            ferry::secret::SecretRef::File(fleet.path().join("id_ed25519"))
                .resolve("identity", work.path())
                .unwrap(),
        ),
        passphrase: None,
        connect_timeout: std::time::Duration::from_secs(5),
    };
    let app = App {
        id: "demo".into(),
        version: "1.0.0".into(),
        artifact: String::new(),
        target: TargetKind::Ssh,
        sites: vec!["s".into()],
        health_check: HealthCheck {
            command: vec![
                "sh".into(),
                "-c".into(),
                "test \"$(cat VERSION)\" = \"$FERRY_VERSION\" && test -f conf/app.conf".into(),
            ],
            http: None,
            // Room for a loaded CI machine: a wrong version fails at once (exit 97), whatever
            // the timeout.
            timeout_seconds: 10,
            interval_ms: 100,
        },
        restart: None,
        depends_on: vec![],
        config: vec![],
        env: Default::default(),
        secrets: Default::default(),
        keep_releases: 5,
        docker: None,
        kubernetes: None,
        lines: vec![],
        lifecycle: None,
        line: None,
    };
    let spec = TargetSpec {
        target: TargetRef::new("s", "ep-1", "demo", TargetKind::Ssh),
        app: app.into(),
        cloud: None,
        base_dir: work.path().to_owned(),
        env: vec![],
        secrets: vec![],
        ssh: Some(SshTarget {
            host,
            jump: None,
            root: fleet.path().join("ep-1/home/ferry").display().to_string(),
            command_timeout: std::time::Duration::from_secs(20),
        }),
        docker: None,
        fence: None,
    };
    let (v1, v2) = (bundle("1.0.0"), bundle("2.0.0"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = SshDriver::new();
    rt.block_on(compliance::run(&d, &spec, &v1, &v2));

    // After an observation, an apply skips its preflight: a release the observation saw with
    // the same content is switched to without an upload (its artifact is gone here, so an
    // upload would fail to pack it)...
    use ferry::drivers::Driver;
    let releases = fleet.path().join("ep-1/home/ferry/demo/releases");
    let current = || {
        std::fs::read_link(fleet.path().join("ep-1/home/ferry/demo/current"))
            .unwrap()
            .display()
            .to_string()
    };
    rt.block_on(d.observe(&spec)).unwrap();
    let aside = work.path().join("aside");
    std::fs::rename(&v1.artifact, &aside).unwrap();
    rt.block_on(d.apply(&spec, &v1))
        .unwrap_or_else(|e| panic!("switched to the release it saw: {e}"));
    assert_eq!(current(), "releases/1.0.0");
    std::fs::rename(&aside, &v1.artifact).unwrap();
    // ...and a release it saw that went away since is uploaded after all.
    rt.block_on(d.observe(&spec)).unwrap();
    std::fs::remove_dir_all(releases.join("2.0.0")).unwrap();
    rt.block_on(d.apply(&spec, &v2))
        .unwrap_or_else(|e| panic!("uploaded after all: {e}"));
    assert_eq!(current(), "releases/2.0.0");
    assert_eq!(
        std::fs::read_to_string(releases.join("2.0.0/VERSION")).unwrap(),
        "2.0.0"
    );
}

#[test]
fn a_passphrase_protected_key_is_unlocked_from_a_secret_reference() {
    let (ws, fleet) = setup(1, "42.0");
    let key = ws.path().join("locked_ed25519");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "correct horse", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let mut authorized = std::fs::OpenOptions::new()
        .append(true)
        .open(fleet.path().join("ep-1/authorized_keys"))
        .unwrap();
    std::io::Write::write_all(&mut authorized, public.as_bytes()).unwrap();
    let inv = std::fs::read_to_string(ws.path().join("inventory.yaml")).unwrap();
    let old = format!(
        "identity: \"file:{}\"",
        fleet.path().join("id_ed25519").display()
    );
    let inv = inv.replace(
        &old,
        &format!(
            "identity: \"file:{}\", identity_passphrase: \"env:FERRY_IT_PASS\"",
            key.display()
        ),
    );
    ws.write("inventory.yaml", &inv);
    let plan = |pass: &str| {
        ws.cmd(&[
            "plan",
            "-i",
            "inventory.yaml",
            "plans/a1.yaml",
            "-o",
            "a1.json",
        ])
        .env("FERRY_IT_PASS", pass)
        .output()
        .unwrap()
    };
    let wrong = plan("wrong horse");
    let err = String::from_utf8_lossy(&wrong.stderr).into_owned();
    assert_eq!(wrong.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read the private key"), "{err}");
    assert!(!err.contains("wrong horse"), "the passphrase leaked: {err}");
    let right = plan("correct horse");
    assert_eq!(
        right.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
}

#[test]
fn a_tarball_artifact_is_uploaded_with_its_checksum_and_unpacked() {
    let (ws, fleet) = setup(1, "43.0");
    let tgz = ws.path().join("artifacts/demo-1.0.0.tar.gz");
    let made = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(ws.path().join("artifacts/1.0.0"))
        .arg(".")
        .status()
        .unwrap();
    assert!(made.success());
    let inv = std::fs::read_to_string(ws.path().join("inventory.yaml"))
        .unwrap()
        .replace(
            "artifact: \"artifacts/{version}\"",
            "artifact: \"artifacts/demo-{version}.tar.gz\"",
        );
    ws.write("inventory.yaml", &inv);
    ws.deploy("a1");
    assert_eq!(fleet.current(1, "demo").as_deref(), Some("1.0.0"));
    let served = fleet.path().join("ep-1/home/ferry/demo/current");
    assert_eq!(
        std::fs::read_to_string(served.join("VERSION")).unwrap(),
        "1.0.0"
    );
    assert_eq!(
        std::fs::read_to_string(served.join("app.conf")).unwrap(),
        "site = clinic-a\nversion = 1.0.0\n",
        "rendered config added to the tarball's files"
    );
    assert!(served.join(".ferry-release.json").exists());
}

/// The SSH observations a run made (its debug log names each remote command).
fn observations(run: &Run) -> usize {
    run.stderr()
        .lines()
        .filter(|l| l.contains("remote command") && l.contains("\"A="))
        .count()
}

/// Connections sshd accepted on endpoint k (`Accepted publickey` in its log).
fn logins(fleet: &Fleet, k: usize) -> usize {
    std::fs::read_to_string(fleet.path().join(format!("ep-{k}/sshd.log")))
        .unwrap_or_default()
        .matches("Accepted publickey")
        .count()
}

/// `ferry apply --auto-approve` plans and applies in one run: the saved plan is written and
/// recorded as `ferry plan` would (sealed by its digest), and each endpoint is logged in to
/// once, where `ferry plan` + `ferry apply` log in twice.
#[test]
fn auto_approve_plans_and_applies_over_one_connection_per_endpoint() {
    let (ws, fleet) = setup(2, "47.0");
    ws.write(
        "plans/ab.yaml",
        "version: 1\nkind: release\nname: ab\nreleases: [{ app: demo, version: \"1.0.0\" }]\nwaves: [{ name: only, sites: [clinic-a, clinic-b] }]\non_failure: halt\n",
    );
    let before: Vec<usize> = (1..=2).map(|k| logins(&fleet, k)).collect();
    let run = Run(ws
        .cmd(&[
            "apply",
            "--auto-approve",
            "-i",
            "inventory.yaml",
            "plans/ab.yaml",
            "-o",
            "ab.json",
        ])
        .env("FERRY_LOG", "ferry=debug")
        .output()
        .unwrap());
    run.expect_code(0)
        .stdout_has("+ clinic-a/ep-1/demo  (none) -> 1.0.0")
        .stdout_has("2 step(s) succeeded");
    for k in 1..=2 {
        assert_eq!(fleet.current(k, "demo").as_deref(), Some("1.0.0"), "ep-{k}");
        assert_eq!(logins(&fleet, k) - before[k - 1], 1, "one login on ep-{k}");
    }
    // Nothing else appended to the ledger between the plan and the lock: the plan's
    // observation was the stale check, each endpoint was observed once.
    assert_eq!(observations(&run), 2, "{}", run.stderr());
    // The saved plan is the one the ledger sealed, and it is done: applying it again is
    // refused as already applied, like any plan.
    let sha = ferry::load::sha256_hex(&std::fs::read(ws.path().join("ab.json")).unwrap());
    let created: Vec<_> = ws
        .ledger()
        .into_iter()
        .filter(|e| e["event"] == "plan_created")
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["detail"]["plan_sha256"], sha.as_str());
    ws.run(&["apply", "ab.json"])
        .expect_code(1)
        .stderr_has("already applied");
    // The two-command way, for comparison: two logins per endpoint.
    ws.write(
        "plans/ab2.yaml",
        &std::fs::read_to_string(ws.path().join("plans/ab.yaml"))
            .unwrap()
            .replace("1.0.0", "2.0.0")
            .replace("name: ab", "name: ab2"),
    );
    let before: Vec<usize> = (1..=2).map(|k| logins(&fleet, k)).collect();
    ws.deploy("ab2");
    for k in 1..=2 {
        assert_eq!(fleet.current(k, "demo").as_deref(), Some("2.0.0"), "ep-{k}");
        assert_eq!(logins(&fleet, k) - before[k - 1], 2, "two logins on ep-{k}");
    }
    // Flags that belong to a saved plan, or a one-shot run without its inputs, are refused.
    ws.run(&["apply", "--auto-approve", "plans/ab.yaml"])
        .expect_code(2)
        .stderr_has("--inventory");
    ws.run(&[
        "apply",
        "--auto-approve",
        "--resume",
        "-i",
        "inventory.yaml",
        "plans/ab.yaml",
        "-o",
        "x.json",
    ])
    .expect_code(2)
    .stderr_has("cannot be used with");
}

//! The pull side's channel (issue 24, first part): `ferry publish` signs each site's desired
//! state as TUF metadata; `ferry agent check` verifies it the way an agent must before acting
//! — from a directory and over HTTP — and refuses replayed metadata, expired metadata and
//! artifacts whose bytes are not the signed ones.

use std::process::{Child, Command, Stdio};

use crate::support::{Run, Workspace};

fn published() -> Workspace {
    let ws = Workspace::new();
    ws.run(&["keygen", "-o", "channel.key"]).expect_code(0);
    publish(&ws, "channel.key", &["--expires", "1h"])
        .expect_code(0)
        .stdout_has("at version 1 (3 site(s)")
        .stdout_has("root.json made");
    agent_config(
        &ws,
        &format!("file://{}/channel/", ws.path().display()),
        "targets",
        "",
    );
    ws
}

/// The channel's root as installed with the agent (`agent-root.json`), and the agent's config
/// for clinic-a reading `channel`, installing into `targets`, with `extra` lines.
fn agent_config(ws: &Workspace, channel: &str, targets: &str, extra: &str) {
    std::fs::copy(
        ws.path().join("channel/metadata/root.json"),
        ws.path().join("agent-root.json"),
    )
    .unwrap();
    ws.write(
        "agent.yaml",
        &format!(
            "site: clinic-a\nchannel: {channel}\nroot: agent-root.json\nstate_dir: agent-state\ntargets_root: {targets}\n{extra}"
        ),
    );
}

/// The agent's config for clinic-a installing into `server/`, with `extra` lines.
fn installing(ws: &Workspace, extra: &str) {
    let channel = format!("file://{}/channel/", ws.path().display());
    agent_config(ws, &channel, "server", extra);
}

fn check(ws: &Workspace) -> Run {
    ws.run(&["agent", "check", "--config", "agent.yaml"])
}

/// `ferry publish -i inventory.yaml --channel channel --key file:KEY EXTRA...`.
fn publish(ws: &Workspace, key: &str, extra: &[&str]) -> Run {
    let key = format!("file:{key}");
    let mut args = vec![
        "publish",
        "-i",
        "inventory.yaml",
        "--channel",
        "channel",
        "--key",
        &key,
    ];
    args.extend(extra);
    ws.run(&args)
}

fn republish(ws: &Workspace, version: &str, expires: &str) {
    ws.write(
        "inventory.yaml",
        &Workspace::inventory("").replace("version: 1.0.0", &format!("version: {version}")),
    );
    publish(ws, "channel.key", &["--expires", expires]).expect_code(0);
}

#[test]
fn an_agent_sees_upgrades_and_downgrades_and_is_current_after_deploy() {
    let ws = published();
    check(&ws)
        .expect_code(2)
        .stdout_has("demo: desired 1.0.0, running nothing -> update due");
    ws.deploy("v1");
    check(&ws)
        .expect_code(0)
        .stdout_has("demo: desired 1.0.0, running 1.0.0\n");
    republish(&ws, "2.0.0", "1h");
    check(&ws)
        .expect_code(2)
        .stdout_has("Channel version 2")
        .stdout_has("desired 2.0.0, running 1.0.0");
    // A downgrade is newer metadata naming an older version.
    republish(&ws, "1.0.0", "1h");
    check(&ws).expect_code(0).stdout_has("Channel version 3");
    let json = ws
        .run(&[
            "--output",
            "json",
            "agent",
            "check",
            "--config",
            "agent.yaml",
        ])
        .json();
    assert_eq!(json["check"]["apps"][0]["desired"], "1.0.0");
}

#[test]
fn replayed_metadata_is_refused() {
    let ws = published();
    check(&ws).expect_code(2);
    let old = ws.path().join("old-metadata");
    copy_dir(&ws.path().join("channel/metadata"), &old);
    republish(&ws, "2.0.0", "1h");
    check(&ws).expect_code(2).stdout_has("desired 2.0.0");
    // Whoever serves the channel puts the old, validly signed version 1 back.
    std::fs::remove_dir_all(ws.path().join("channel/metadata")).unwrap();
    copy_dir(&old, &ws.path().join("channel/metadata"));
    check(&ws).expect_code(7).stderr_has(
        "Found version 1 of timestamp metadata when we had previously fetched version 2",
    );
}

#[test]
fn expired_metadata_changes_nothing_and_says_so() {
    let ws = published();
    republish(&ws, "2.0.0", "1s");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    check(&ws).expect_code(1).stderr_has("metadata expired");
}

#[test]
fn an_artifact_that_is_not_the_signed_one_is_refused() {
    let ws = published();
    let artifact = ws
        .path()
        .join("channel/targets/artifacts/demo/1.0.0.tar.gz");
    let mut bytes = std::fs::read(&artifact).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&artifact, &bytes).unwrap();
    check(&ws)
        .expect_code(7)
        .stderr_has("artifacts/demo/1.0.0.tar.gz");
    bytes.push(0);
    std::fs::write(&artifact, &bytes).unwrap();
    check(&ws).expect_code(7).stderr_has("Maximum size");
    // A published version is immutable.
    publish(&ws, "channel.key", &[])
        .expect_code(1)
        .stderr_has("already published with other content");
}

#[test]
fn a_channel_is_read_over_http_and_signed_by_its_own_key_only() {
    let ws = published();
    let port = crate::support::free_port();
    let server = serve(&ws.path().join("channel"), port);
    ws.write(
        "agent.yaml",
        &format!("site: clinic-b\nchannel: http://127.0.0.1:{port}/\nroot: agent-root.json\nstate_dir: agent-state\n"),
    );
    let r = check(&ws);
    drop(server);
    r.expect_code(2)
        .stdout_has("for site clinic-b")
        .stdout_has("desired 1.0.0");
    ws.run(&["keygen", "-o", "other.key"]).expect_code(0);
    publish(&ws, "other.key", &[])
        .expect_code(1)
        .stderr_has("not one the channel's root trusts");
    ws.write(
        "bad.yaml",
        "site: clinic-a\nchanel: x\nroot: r\nstate_dir: s\n",
    );
    ws.run(&["agent", "check", "--config", "bad.yaml"])
        .expect_code(1)
        .stderr_has("bad.yaml:2:1")
        .stderr_has("unknown field `chanel`");
    // Values that cannot work: every one named where it is, nothing done on the server.
    ws.write(
        "bad.yaml",
        "site: clinic-a\nchannel: ftp://channels.example/x/\nroot: r\nstate_dir: bad-state\ntargets_root: server\ninterval: soon\nreport:\n  url: http://collector.example/\n  token: plain-text-token\n",
    );
    ws.run(&["agent", "run", "--once", "--config", "bad.yaml"])
        .expect_code(1)
        .stderr_has("bad.yaml:2:10")
        .stderr_has("not ftp://")
        .stderr_has("bad.yaml:6:11")
        .stderr_has("bad.yaml:8:8")
        .stderr_has("HTTPS only")
        .stderr_has("bad.yaml:9:10");
    assert!(!ws.path().join("bad-state").exists());
    assert!(!ws.path().join("server").exists());
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real web server (Python's) serving the channel's folder on loopback.
fn serve(dir: &std::path::Path, port: u16) -> Server {
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the channel's web server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Server(child)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The agent converges its server to the channel through the local driver and executor:
/// first install, upgrade, a bad release backed out (the old one keeps serving), downgrade;
/// already current is a no-op; everything is in the agent's own ledger.
#[test]
fn the_agent_installs_upgrades_backs_out_and_downgrades() {
    let ws = published();
    // The publisher renders the config; the agent installs those bytes, braces and all.
    ws.write(
        "templates/app.conf.tera",
        "site = {{ site }}\nversion = {{ version }}\n{% raw %}greeting = {{ name }}{% endraw %}\n",
    );
    publish(&ws, "channel.key", &["--expires", "1h"]).expect_code(0);
    installing(&ws, "");
    let run = || ws.run(&["agent", "run", "--once", "--config", "agent.yaml"]);
    let serving = || {
        std::fs::read_link(ws.path().join("server/clinic-a/demo/current"))
            .ok()
            .map(|l| l.file_name().unwrap().to_string_lossy().into_owned())
    };
    run().expect_code(2);
    assert_eq!(serving().as_deref(), Some("1.0.0"));
    assert_eq!(
        std::fs::read_to_string(ws.path().join("server/clinic-a/demo/current/app.conf")).unwrap(),
        "site = clinic-a\nversion = 1.0.0\ngreeting = {{ name }}\n"
    );
    run()
        .expect_code(0)
        .stdout_has("runs what channel version 2 wants");
    republish(&ws, "2.0.0", "1h");
    run().expect_code(2);
    assert_eq!(serving().as_deref(), Some("2.0.0"));
    republish(&ws, "3.0.0", "1h");
    run().expect_code(6);
    assert_eq!(
        serving().as_deref(),
        Some("2.0.0"),
        "the bad release was backed out"
    );
    republish(&ws, "1.0.0", "1h");
    run().expect_code(2);
    assert_eq!(
        serving().as_deref(),
        Some("1.0.0"),
        "a downgrade is newer metadata"
    );
    let ledger = std::fs::read_to_string(ws.path().join("agent-state/ledger.jsonl")).unwrap();
    assert!(ledger.contains("\"step_backed_out\""), "{ledger}");
    ws.run(&["--state-dir", "agent-state", "ledger", "verify"])
        .expect_code(0);
}

/// kill -9 of the agent in the middle of an install (after the switch, before the health
/// check passed): the next run finishes that install first instead of trusting `current`.
#[test]
fn a_killed_install_is_finished_by_the_next_run() {
    let ws = published();
    installing(&ws, "");
    ws.hang("clinic-a");
    let mut first = ws.spawn(&["agent", "run", "--once", "--config", "agent.yaml"]);
    ws.wait_hanging("clinic-a");
    first.kill().unwrap();
    first.wait().unwrap();
    ws.release("clinic-a");
    ws.run(&["agent", "run", "--once", "--config", "agent.yaml"])
        .expect_code(2);
    ws.run(&["agent", "run", "--once", "--config", "agent.yaml"])
        .expect_code(0)
        .stdout_has("runs what channel version 1 wants");
    let ledger = std::fs::read_to_string(ws.path().join("agent-state/ledger.jsonl")).unwrap();
    assert!(
        ledger.contains("\"lock_broken\""),
        "the dead run's lock was taken over"
    );
    assert_eq!(ledger.matches("\"step_succeeded\"").count(), 1, "{ledger}");
    ws.run(&["--state-dir", "agent-state", "ledger", "verify"])
        .expect_code(0);
}

/// The idle gate fails closed: while the app holds its busy file, or its probe fails or does
/// not answer, the update waits (recorded, exit 75); once idle it happens.
#[test]
fn a_busy_app_defers_the_update_until_it_is_idle() {
    let ws = published();
    installing(
        &ws,
        "idle: { busy_file: importing.lock, command: [sh, -c, 'test ! -e queries-running'], timeout_seconds: 1 }
",
    );
    let run = || ws.run(&["agent", "run", "--once", "--config", "agent.yaml"]);
    ws.write("importing.lock", "");
    run().expect_code(75).stdout_has("importing.lock exists");
    std::fs::remove_file(ws.path().join("importing.lock")).unwrap();
    ws.write("queries-running", "");
    run().expect_code(75).stdout_has("says busy");
    ws.write(
        "agent.yaml",
        &std::fs::read_to_string(ws.path().join("agent.yaml"))
            .unwrap()
            .replace("test ! -e queries-running", "sleep 5"),
    );
    run()
        .expect_code(75)
        .stdout_has("gave no answer within 1 s");
    assert!(
        !ws.path().join("server/clinic-a/demo/current").exists(),
        "nothing was installed"
    );
    ws.write(
        "agent.yaml",
        &std::fs::read_to_string(ws.path().join("agent.yaml"))
            .unwrap()
            .replace("sleep 5", "true"),
    );
    run().expect_code(2);
    assert!(ws.path().join("server/clinic-a/demo/current").exists());
    let ledger = std::fs::read_to_string(ws.path().join("agent-state/ledger.jsonl")).unwrap();
    assert_eq!(
        ledger.matches("deferred: the app is busy").count(),
        3,
        "{ledger}"
    );
}

/// A deferral that lasts longer than `max_defer` is reported as overdue and still waits; a
/// channel published with `--force` installs even while the app says busy.
#[test]
fn an_overdue_deferral_is_reported_and_force_overrides_the_app() {
    let ws = published();
    installing(&ws, "idle: { busy_file: importing.lock }\nmax_defer: 1s\n");
    ws.write("importing.lock", "");
    let run = || ws.run(&["agent", "run", "--once", "--config", "agent.yaml"]);
    run().expect_code(75);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    run()
        .expect_code(75)
        .stderr_has("still waiting since")
        .stderr_has("longer than max_defer 1s");
    let ledger = std::fs::read_to_string(ws.path().join("agent-state/ledger.jsonl")).unwrap();
    assert!(ledger.contains("\"overdue\":true"), "{ledger}");
    publish(&ws, "channel.key", &["--force"]).expect_code(0);
    run().expect_code(2);
    assert!(
        ws.path().join("server/clinic-a/demo/current").exists(),
        "forced in while busy"
    );
}

/// Without `--once` the agent keeps checking every interval and exits 2 after an update, for
/// the service manager to restart it into the new state.
#[test]
fn the_agent_loop_updates_when_the_channel_moves_and_exits_for_a_restart() {
    let ws = published();
    installing(&ws, "interval: 1s\n");
    ws.run(&["agent", "run", "--once", "--config", "agent.yaml"])
        .expect_code(2);
    let mut agent = ws.spawn(&["agent", "run", "--config", "agent.yaml"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        agent.try_wait().unwrap().is_none(),
        "nothing to do: it keeps running"
    );
    republish(&ws, "2.0.0", "1h");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never picked up version 2"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(2));
    let link = std::fs::read_link(ws.path().join("server/clinic-a/demo/current")).unwrap();
    assert!(link.ends_with("2.0.0"), "{link:?}");
}

/// `agent install` writes a systemd unit for the loop (restart always, notify, watchdog) that
/// systemd's own checker accepts; one it rejects is not left behind.
#[test]
fn the_agent_installs_a_unit_systemd_accepts() {
    let ws = published();
    ws.run(&[
        "agent",
        "install",
        "--config",
        "agent.yaml",
        "--unit-dir",
        "units",
    ])
    .expect_code(0)
    .stdout_has("systemd-analyze verify: ok");
    let unit =
        std::fs::read_to_string(ws.path().join("units/ferry-agent-clinic-a.service")).unwrap();
    for line in [
        "Type=notify",
        "Restart=always",
        "WatchdogSec=60",
        " agent run --config ",
    ] {
        assert!(unit.contains(line), "{line} missing from:\n{unit}");
    }
    ws.run(&[
        "agent",
        "install",
        "--config",
        "agent.yaml",
        "--unit-dir",
        "bad",
        "--binary",
        "/nonexistent/ferry",
    ])
    .expect_code(1)
    .stderr_has("is not executable");
    assert!(!ws.path().join("bad/ferry-agent-clinic-a.service").exists());
}

/// Between channel checks the watchdog runs the app's health check; after `failures` in a
/// row it runs the restart command and records it.
#[test]
fn the_watchdog_restarts_an_app_whose_health_check_keeps_failing() {
    let ws = published();
    installing(
        &ws,
        &format!(
            "interval: 1h\nwatchdog: {{ every: 1s, failures: 2, restart: [sh, -c, 'echo restarted >> {}/restarts'] }}\n",
            ws.path().display()
        ),
    );
    ws.run(&["agent", "run", "--once", "--config", "agent.yaml"])
        .expect_code(2);
    let agent = ws.spawn(&["agent", "run", "--config", "agent.yaml"]);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(!ws.path().join("restarts").exists(), "healthy: no restart");
    // The app goes bad under the agent: its check now fails.
    std::fs::write(
        ws.path().join("server/clinic-a/demo/current/VERSION"),
        "hung",
    )
    .unwrap();
    // Done once recorded (the restart command runs a moment before its record).
    until(agent, 30, "restarted the app", &|| {
        ws.path().join("restarts").exists()
            && std::fs::read_to_string(ws.path().join("agent-state/ledger.jsonl"))
                .unwrap_or_default()
                .contains("\"watchdog_restart\"")
    });
    let ledger = std::fs::read_to_string(ws.path().join("agent-state/ledger.jsonl")).unwrap();
    assert!(
        ledger.contains("watchdog: demo failed 2 health checks in a row"),
        "{ledger}"
    );
}

/// Waits up to `secs` for `done` while the agent's loop runs, then stops the agent; if it never
/// happens, fails with what the agent printed.
fn until(mut agent: Child, secs: u64, what: &str, done: &dyn Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done() {
        if std::time::Instant::now() > deadline {
            let _ = agent.kill();
            let out = agent.wait_with_output().unwrap();
            panic!(
                "the watchdog never {what}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = agent.kill();
    let _ = agent.wait();
}

/// Every publish is in the publisher's ledger (channel, version, each site document's digest),
/// and the next version follows the ledger too: a channel folder rolled back does not make the
/// publisher reuse a version number.
#[test]
fn publishes_are_recorded_and_numbers_never_reused() {
    let ws = published();
    let old = ws.path().join("old-metadata");
    copy_dir(&ws.path().join("channel/metadata"), &old);
    republish(&ws, "2.0.0", "1h");
    std::fs::remove_dir_all(ws.path().join("channel/metadata")).unwrap();
    copy_dir(&old, &ws.path().join("channel/metadata"));
    publish(&ws, "channel.key", &[])
        .expect_code(0)
        .stdout_has("at version 3");
    let published: Vec<serde_json::Value> = ws
        .events("operation_finished")
        .into_iter()
        .filter(|e| e["detail"]["operation"] == "publish")
        .collect();
    assert_eq!(published.len(), 3);
    assert_eq!(published[2]["detail"]["published"]["version"], 3);
    let digest = published[2]["detail"]["desired"]["clinic-a"]
        .as_str()
        .unwrap();
    assert_eq!(digest.len(), 64);
    // A rendered file an agent could not install byte for byte is refused at publish.
    ws.write("templates/app.conf.tera", "mode = endraw\n");
    publish(&ws, "channel.key", &[])
        .expect_code(1)
        .stderr_has("rendered app.conf contains `endraw`");
}

/// `ferry collect serve` on `port`, killed when dropped.
fn collector(ws: &Workspace, port: u16) -> Server {
    let child = ws.spawn(&[
        "collect",
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--dir",
        "collector",
        "--tokens",
        "tokens",
        "--tls-cert",
        "cert.pem",
        "--tls-key",
        "key.pem",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the collector did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Server(child)
}

/// Agents ship their ledger after each pass. While the collector is down the entries wait (the
/// pass itself is not failed); once it is up every entry arrives once, byte for byte, however
/// many passes ship; `fleet status` shows each agent's versions, who is late and who never
/// reported. A wrong token and a rewritten agent ledger are refused.
#[test]
fn the_collector_gets_every_entry_once_and_fleet_status_shows_who_is_late() {
    let ws = published();
    crate::support::certificate(ws.path());
    ws.run(&[
        "collect",
        "enroll",
        "--site",
        "clinic-a",
        "--tokens",
        "tokens",
        "--token-out",
        "clinic-a.token",
    ])
    .expect_code(0);
    let port = crate::support::free_port();
    installing(
        &ws,
        &format!(
            "report: {{ url: 'https://127.0.0.1:{port}/', token: 'file:clinic-a.token', ca: ca.pem }}\n"
        ),
    );
    let run = || ws.run(&["agent", "run", "--once", "--config", "agent.yaml"]);
    run().expect_code(2).stderr_has("report not delivered");
    let server = collector(&ws, port);
    let agent_ledger =
        || std::fs::read_to_string(ws.path().join("agent-state/ledger.jsonl")).unwrap();
    let collected = || {
        std::fs::read_to_string(ws.path().join("collector/sites/clinic-a/ledger.jsonl")).unwrap()
    };
    run().expect_code(0);
    assert_eq!(collected(), agent_ledger(), "the waiting entries arrived");
    republish(&ws, "2.0.0", "1h");
    run().expect_code(2);
    run().expect_code(0);
    assert_eq!(collected(), agent_ledger(), "each entry once, in order");
    ws.run(&[
        "--state-dir",
        "collector/sites/clinic-a",
        "ledger",
        "verify",
    ])
    .expect_code(0);
    let fleet = |extra: &[&str]| {
        let mut args = vec![
            "--output",
            "json",
            "fleet",
            "status",
            "--collector",
            "collector",
        ];
        args.extend(extra);
        ws.run(&args)
    };
    let all = fleet(&["-i", "inventory.yaml"]);
    all.expect_code(11);
    let sites = all.json()["sites"].as_array().unwrap().clone();
    let a = sites.iter().find(|s| s["site"] == "clinic-a").unwrap();
    assert_eq!(a["late"], false);
    assert_eq!(a["record"]["status"]["apps"][0]["running"], "2.0.0");
    assert_eq!(a["record"]["status"]["apps"][0]["desired"], "2.0.0");
    assert_eq!(a["record"]["status"]["channel_version"], 2);
    assert_eq!(
        a["entries"].as_u64().unwrap() as usize,
        agent_ledger().lines().count()
    );
    assert!(
        sites
            .iter()
            .any(|s| s["site"] != "clinic-a" && s["reported"] == false),
        "{sites:?}"
    );
    fleet(&[]).expect_code(0);
    // Another site's agent, or anyone, with a token the collector does not know.
    let token = std::fs::read_to_string(ws.path().join("clinic-a.token")).unwrap();
    ws.write("clinic-a.token", &"0".repeat(64));
    run()
        .expect_code(0)
        .stderr_has("401")
        .stderr_has("unknown token");
    ws.write("clinic-a.token", &token);
    // The agent's ledger rewritten under it (its last entry dropped): refused, not re-collected.
    let mut lines: Vec<String> = agent_ledger().lines().map(|l| format!("{l}\n")).collect();
    lines.pop();
    ws.write("agent-state/ledger.jsonl", &lines.concat());
    run().stderr_has("it was rewritten");
    drop(server);
    // An agent that stops reporting is late once two of its intervals (1 h) have passed.
    let status = ws.path().join("collector/sites/clinic-a/status.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    let then = chrono::Utc::now() - chrono::Duration::hours(3);
    record["received_at"] = then
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        .into();
    std::fs::write(&status, record.to_string()).unwrap();
    ws.run(&["fleet", "status", "--collector", "collector"])
        .expect_code(11)
        .stdout_has("clinic-a: last report")
        .stdout_has("LATE by 54m");
}

/// An agent "binary" for the self-update tests: a script that runs this build of ferry, `tag`
/// making each one's bytes (and so its digest) its own. The agent treats its binary as opaque
/// bytes (downloaded, verified, tried, swapped), so a 300 MB debug build copied eight times
/// would prove nothing more.
fn agent_binary(ws: &Workspace, name: &str, tag: &str) {
    let path = ws.path().join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n# ferry agent {tag}\nexec {} \"$@\"\n",
            crate::support::BIN
        ),
    )
    .unwrap();
    let mut p = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
    std::fs::set_permissions(&path, p).unwrap();
}

/// `bin/ferry agent run --once`, run by the installed agent binary itself.
fn run_installed(ws: &Workspace) -> Run {
    let c = ws.cmd(&["agent", "run", "--once", "--config", "agent.yaml"]);
    let envs: Vec<_> = c
        .get_envs()
        .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
        .collect();
    let mut installed = Command::new(ws.path().join("bin/ferry"));
    installed
        .args(c.get_args())
        .current_dir(ws.path())
        .stdin(Stdio::null());
    for (k, v) in envs {
        match v {
            Some(v) => installed.env(k, v),
            None => installed.env_remove(k),
        };
    }
    Run(installed.output().unwrap())
}

fn same(ws: &Workspace, a: &str, b: &str) -> bool {
    std::fs::read(ws.path().join(a)).unwrap() == std::fs::read(ws.path().join(b)).unwrap()
}

/// The agent updates itself: the new binary's trial pass succeeds, it replaces the old one (kept
/// as `.previous`), and its first pass confirms it. A binary that fails its trial is never
/// installed nor tried again; one that fails its first passes after the swap is replaced by
/// the previous one.
#[test]
fn the_agent_updates_itself_after_a_trial_and_rolls_back_a_bad_one() {
    let ws = published();
    std::fs::create_dir_all(ws.path().join("bin")).unwrap();
    agent_binary(&ws, "bin/ferry", "v1");
    agent_binary(&ws, "ferry-v2", "v2");
    agent_binary(&ws, "ferry-v3", "v3");
    ws.write("ferry-bad", "#!/bin/sh\necho 'broken build' >&2\nexit 1\n");
    agent_binary(&ws, "ferry-v1", "v1");
    installing(
        &ws,
        "self_update: { path: bin/ferry, trial_timeout_seconds: 120 }\n",
    );
    publish(&ws, "channel.key", &["--agent-binary", "ferry-v2"]).expect_code(0);
    run_installed(&ws)
        .expect_code(2)
        .stdout_has("the agent replaced itself");
    assert!(same(&ws, "bin/ferry", "ferry-v2"));
    assert!(same(&ws, "bin/ferry.previous", "ferry-v1"));
    assert!(
        ws.path().join("server/clinic-a/demo/current").exists(),
        "the trial pass was a whole pass"
    );
    run_installed(&ws)
        .expect_code(0)
        .stdout_has("passed its first pass: kept");
    // v3 passes its trial, then its passes fail (the channel is gone): v2 comes back.
    publish(&ws, "channel.key", &["--agent-binary", "ferry-v3"]).expect_code(0);
    run_installed(&ws).expect_code(2);
    assert!(same(&ws, "bin/ferry", "ferry-v3"));
    std::fs::rename(ws.path().join("channel"), ws.path().join("channel.away")).unwrap();
    run_installed(&ws).expect_code(1);
    run_installed(&ws).expect_code(1);
    run_installed(&ws)
        .expect_code(2)
        .stderr_has("failed 3 passes in a row: the previous binary");
    assert!(same(&ws, "bin/ferry", "ferry-v2"));
    std::fs::rename(ws.path().join("channel.away"), ws.path().join("channel")).unwrap();
    run_installed(&ws).expect_code(0);
    assert!(same(&ws, "bin/ferry", "ferry-v2"), "v3 is not tried again");
    // A binary that cannot do a pass is never installed.
    publish(&ws, "channel.key", &["--agent-binary", "ferry-bad"]).expect_code(0);
    run_installed(&ws)
        .expect_code(0)
        .stderr_has("failed its trial pass and was not installed")
        .stderr_has("broken build");
    assert!(same(&ws, "bin/ferry", "ferry-v2"));
    assert!(!ws.path().join("bin/ferry.new").exists());
    let again = run_installed(&ws);
    again.expect_code(0);
    assert!(!again.stderr().contains("trial"), "{}", again.stderr());
    let ledger = std::fs::read_to_string(ws.path().join("agent-state/ledger.jsonl")).unwrap();
    assert_eq!(
        ledger.matches("\"agent_self_update\"").count(),
        5,
        "{ledger}"
    );
    ws.run(&["--state-dir", "agent-state", "ledger", "verify"])
        .expect_code(0);
}

/// A real service manager (Debian's runit: systemd cannot be PID 1 here) runs the agent's
/// loop. The agent exits 2 after replacing itself and after each update; runsv restarts it
/// into the new binary, which confirms itself and installs the apps, then picks up the next
/// channel version the same way.
#[test]
fn runit_restarts_the_agent_into_its_new_binary_and_new_state() {
    let ws = published();
    std::fs::create_dir_all(ws.path().join("bin")).unwrap();
    agent_binary(&ws, "bin/ferry", "v1");
    agent_binary(&ws, "ferry-v2", "v2");
    installing(&ws, "interval: 1s\nself_update: { path: bin/ferry }\n");
    publish(&ws, "channel.key", &["--agent-binary", "ferry-v2"]).expect_code(0);
    let service = ws.path().join("service/agent");
    std::fs::create_dir_all(&service).unwrap();
    let run = service.join("run");
    std::fs::write(
        &run,
        format!(
            "#!/bin/sh\ncd {ws}\nexport FERRY_STATE_DIR={ws}/.ferry FERRY_ACTOR=runit\nexec {ws}/bin/ferry agent run --config agent.yaml >>{ws}/agent.log 2>&1\n",
            ws = ws.path().display()
        ),
    )
    .unwrap();
    let mut p = std::fs::metadata(&run).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
    std::fs::set_permissions(&run, p).unwrap();
    let runsv = Server(
        Command::new("runsv")
            .arg(&service)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("runsv runs (ci/test.sh installs runit)"),
    );
    let ledger = ws.path().join("agent-state/ledger.jsonl");
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "runit never got the agent to {what}:\n{}",
                std::fs::read_to_string(ws.path().join("agent.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    let has = |s: &str| {
        std::fs::read_to_string(&ledger)
            .unwrap_or_default()
            .contains(s)
    };
    wait_for("confirm its new binary", &|| {
        has("passed its first pass: kept")
    });
    assert!(same(&ws, "bin/ferry", "ferry-v2"));
    wait_for("install the app", &|| {
        std::fs::read_link(ws.path().join("server/clinic-a/demo/current")).is_ok()
    });
    republish(&ws, "2.0.0", "1h");
    wait_for("install 2.0.0", &|| {
        std::fs::read_link(ws.path().join("server/clinic-a/demo/current"))
            .is_ok_and(|l| l.ends_with("2.0.0"))
    });
    // Restarted after that update too (runsv may be between the exit and the restart).
    wait_for("run again after the update", &|| {
        let status = Command::new("sv")
            .arg("status")
            .arg(&service)
            .output()
            .unwrap();
        String::from_utf8_lossy(&status.stdout).starts_with("run:")
    });
    let _ = Command::new("sv")
        .args(["-w", "10", "force-stop"])
        .arg(&service)
        .status();
    drop(runsv);
    let log = std::fs::read_to_string(ws.path().join("agent.log")).unwrap();
    assert!(log.contains("the agent replaced itself"), "{log}");
}

/// An app that hangs right after the agent updated it is rolled back to the version before (not
/// restarted), and that update is held back until the channel publishes again.
#[test]
fn a_hang_right_after_an_update_rolls_it_back_and_holds_it_back() {
    let ws = published();
    installing(
        &ws,
        "interval: 1h\nwatchdog: { every: 1s, failures: 2, restart: [sh, -c, 'echo restarted >> restarts'], rollback_within: 1h }\n",
    );
    let run = || ws.run(&["agent", "run", "--once", "--config", "agent.yaml"]);
    run().expect_code(2);
    republish(&ws, "2.0.0", "1h");
    run().expect_code(2);
    let current = || {
        std::fs::read_link(ws.path().join("server/clinic-a/demo/current"))
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(current(), "2.0.0");
    let agent = ws.spawn(&["agent", "run", "--config", "agent.yaml"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    std::fs::write(
        ws.path().join("server/clinic-a/demo/current/VERSION"),
        "hung",
    )
    .unwrap();
    // Done once recorded (the switch back comes a moment before its record).
    let ledger_has = |s: &str| {
        std::fs::read_to_string(ws.path().join("agent-state/ledger.jsonl"))
            .unwrap_or_default()
            .contains(s)
    };
    until(agent, 40, "rolled the update back", &|| {
        ledger_has("\"watchdog_rollback\"")
    });
    assert_eq!(current(), "1.0.0");
    assert!(
        !ws.path().join("restarts").exists(),
        "rolled back, not restarted"
    );
    let ledger = std::fs::read_to_string(ws.path().join("agent-state/ledger.jsonl")).unwrap();
    assert!(
        ledger.contains("within its update 1.0.0 -> 2.0.0: rolled back to 1.0.0"),
        "{ledger}"
    );
    run().expect_code(0).stdout_has("demo 2.0.0 is held back");
    assert_eq!(current(), "1.0.0");
    // Published again (a fixed 2.0.0, or the same one on purpose): tried again.
    std::fs::write(
        ws.path()
            .join("server/clinic-a/demo/releases/2.0.0/VERSION"),
        "2.0.0",
    )
    .unwrap();
    publish(&ws, "channel.key", &[]).expect_code(0);
    let again = run();
    assert!(!again.stdout().contains("held back"), "{}", again.stdout());
    again.expect_code(2);
    assert_eq!(current(), "2.0.0");
    ws.run(&["--state-dir", "agent-state", "ledger", "verify"])
        .expect_code(0);
}

/// A channel kept in an inventory bucket (moto standing for S3): published through the SDK,
/// read by the agent over plain HTTP from the bucket's own endpoint. A publisher whose working
/// copy is gone continues the same signed chain from the bucket instead of making a new root.
#[test]
fn a_channel_in_a_bucket_is_read_over_http_and_survives_a_lost_working_copy() {
    let moto = crate::support::Moto::start("127.62.10.1");
    // Agents read without credentials: the prefix is made public by the bucket's policy, as
    // on S3 (an anonymous read of anything else is refused).
    moto.py(
        r#"
s3.create_bucket(Bucket='ferry-channel')
s3.put_object(Bucket='ferry-channel', Key='private/secret.txt', Body=b'x')
s3.put_bucket_policy(Bucket='ferry-channel', Policy=json.dumps({'Version': '2012-10-17', 'Statement': [
    {'Effect': 'Allow', 'Principal': '*', 'Action': 's3:GetObject', 'Resource': 'arn:aws:s3:::ferry-channel/clinics/*'}]}))
"#,
    );
    let ws = Workspace::new();
    let inventory = |version: &str| {
        let inv = Workspace::inventory("")
            .replace("version: 1.0.0", &format!("version: {version}"))
            .replace(
                "clouds:\n",
                &format!(
                    "clouds:\n  - {{ id: channel-s3, kind: aws, aws: {{ account: \"111111111111\", region: us-east-1, endpoint_url: \"{}\", access_key_id: \"file:s3.key\", secret_access_key: \"file:s3.secret\", max_attempts: 2, timeout_seconds: 20 }} }}\n",
                    moto.url()
                ),
            );
        format!("{inv}buckets:\n  - {{ id: channel, cloud: channel-s3, name: ferry-channel }}\n")
    };
    ws.write("inventory.yaml", &inventory("1.0.0"));
    ws.write("s3.key", "testing\n");
    ws.write("s3.secret", "testing\n");
    ws.run(&["keygen", "-o", "channel.key"]).expect_code(0);
    let publish = || {
        ws.run(&[
            "publish",
            "-i",
            "inventory.yaml",
            "--channel",
            "channel",
            "--key",
            "file:channel.key",
            "--bucket",
            "channel",
            "--bucket-prefix",
            "clinics",
        ])
    };
    publish()
        .expect_code(0)
        .stdout_has("s3://ferry-channel/clinics/")
        .stdout_has("root.json made");
    agent_config(
        &ws,
        &format!("{}/ferry-channel/clinics/", moto.url()),
        "server",
        "",
    );
    let run = || ws.run(&["agent", "run", "--once", "--config", "agent.yaml"]);
    run().expect_code(2);
    let anonymous = |key: &str| {
        let code = "import sys, urllib.request, urllib.error\ntry:\n    print(urllib.request.urlopen(sys.argv[1]).status)\nexcept urllib.error.HTTPError as e:\n    print(e.code)";
        let out = Command::new("python3")
            .args(["-c", code])
            .arg(format!("{}/ferry-channel/{key}", moto.url()))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(
        anonymous("private/secret.txt"),
        "403",
        "the stand-in enforces the policy"
    );
    assert_eq!(anonymous("clinics/metadata/timestamp.json"), "200");
    let serving = || std::fs::read_link(ws.path().join("server/clinic-a/demo/current")).unwrap();
    assert!(serving().ends_with("1.0.0"));
    // The publisher's folder is lost; the next publish continues from the bucket.
    std::fs::remove_dir_all(ws.path().join("channel")).unwrap();
    ws.write("inventory.yaml", &inventory("2.0.0"));
    let again = publish();
    again.expect_code(0).stdout_has("at version 2");
    assert!(
        !again.stdout().contains("root.json made"),
        "{}",
        again.stdout()
    );
    run().expect_code(2);
    assert!(serving().ends_with("2.0.0"));
    run()
        .expect_code(0)
        .stdout_has("runs what channel version 2 wants");
}

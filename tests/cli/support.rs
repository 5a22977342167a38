//! A throwaway ferry workspace: inventory, plans and artifacts in a temp dir, and the real
//! `ferry` binary run against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ferry");

/// Health check of every test artifact: optional slowness and a hang switch per site, so tests
/// can hold an apply at a known point; then the real check (the served VERSION).
const HEALTH: &str = r#"#!/bin/sh
[ -n "$FERRY_IT_SLOW" ] && sleep "$FERRY_IT_SLOW"
if [ -n "$FERRY_IT_HANG_DIR" ] && [ -e "$FERRY_IT_HANG_DIR/hang-$FERRY_SITE" ]; then
  touch "$FERRY_IT_HANG_DIR/hanging-$FERRY_SITE"
  while [ -e "$FERRY_IT_HANG_DIR/hang-$FERRY_SITE" ]; do sleep 0.05; done
fi
[ -n "$DEMO_TOKEN" ] && echo "token in use: $DEMO_TOKEN" >&2
test "$(cat VERSION)" = "$FERRY_VERSION"
"#;

pub struct Workspace {
    pub dir: tempfile::TempDir,
    /// `--state` of every command (a PostgreSQL store), if not the state directory.
    pub state: Option<String>,
}

impl Workspace {
    /// Three sites, one local cloud, app `demo` with releases 1.0.0, 2.0.0 and a bad 3.0.0.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ws = Self { dir, state: None };
        for v in ["1.0.0", "2.0.0", "3.0.0"] {
            let d = ws.path().join("artifacts").join(v);
            std::fs::create_dir_all(d.join("bin")).unwrap();
            // 3.0.0 is the bad release: it says it is something else, so its check fails.
            std::fs::write(d.join("VERSION"), if v == "3.0.0" { "broken" } else { v }).unwrap();
            std::fs::write(d.join("bin/health"), HEALTH).unwrap();
        }
        std::fs::create_dir_all(ws.path().join("templates")).unwrap();
        std::fs::write(
            ws.path().join("templates/app.conf.tera"),
            "site = {{ site }}\nversion = {{ version }}\n",
        )
        .unwrap();
        ws.write("inventory.yaml", &Self::inventory(""));
        for (name, version, policy) in [
            ("v1", "1.0.0", "backout"),
            ("v2", "2.0.0", "backout"),
            ("v3-backout", "3.0.0", "backout"),
            ("v3-halt", "3.0.0", "halt"),
        ] {
            ws.write(&format!("plans/{name}.yaml"), &Self::plan(version, policy));
        }
        ws
    }

    pub fn inventory(app_extra: &str) -> String {
        format!(
            r#"version: 1
sites:
  - {{ id: clinic-a, tier: sqa, clouds: [local] }}
  - {{ id: clinic-b, tier: prod, clouds: [local] }}
  - {{ id: clinic-c, tier: prod, clouds: [local] }}
clouds:
  - {{ id: local, kind: local, local: {{ root: targets }} }}
apps:
  - id: demo
    version: 1.0.0
    artifact: "artifacts/{{version}}"
    target: local
    sites: [clinic-a, clinic-b, clinic-c]
    health_check: {{ command: [sh, bin/health], timeout_seconds: 8, interval_ms: 100 }}
    config: [{{ template: templates/app.conf.tera, dest: app.conf }}]
{app_extra}"#
        )
    }

    pub fn plan(version: &str, policy: &str) -> String {
        format!(
            "version: 1\nkind: release\nname: demo-{version}\nreleases: [{{ app: demo, version: \"{version}\" }}]\nwaves:\n  - {{ name: canary, sites: [clinic-a] }}\n  - {{ name: clinics, sites: [clinic-b, clinic-c], max_parallel: 2 }}\non_failure: {policy}\n"
        )
    }

    /// A release plan of `demo` at `version` for one site, in one wave.
    pub fn site_plan(name: &str, version: &str, site: &str, policy: &str) -> String {
        format!(
            "version: 1\nkind: release\nname: {name}\nreleases: [{{ app: demo, version: \"{version}\" }}]\nwaves: [{{ name: only, sites: [{site}] }}]\non_failure: {policy}\n"
        )
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.path().join(".ferry/ledger.jsonl")
    }

    /// `ferry ARGS` in the workspace, as actor `tester`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.path())
            .env("FERRY_STATE_DIR", self.path().join(".ferry"))
            .env("FERRY_ACTOR", "tester")
            .env("FERRY_IT_HANG_DIR", self.path())
            .env_remove("FERRY_LEDGER")
            .env_remove("FERRY_STATE")
            // AWS's default credential chain reads only what a test gives it, and never asks
            // an instance metadata service (no traffic beyond loopback).
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
            .env_remove("AWS_ROLE_ARN")
            .stdin(Stdio::null());
        if let Some(url) = &self.state {
            c.env("FERRY_STATE", url);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run(self.cmd(args).output().expect("ferry runs"))
    }

    /// `ferry plan` of `plans/NAME.yaml` into `NAME.json`.
    pub fn plan_file(&self, name: &str) -> Run {
        self.run(&[
            "plan",
            "-i",
            "inventory.yaml",
            &format!("plans/{name}.yaml"),
            "-o",
            &format!("{name}.json"),
        ])
    }

    /// `ferry plan` then `ferry apply` of `plans/NAME.yaml`: changes planned, applied cleanly.
    pub fn deploy(&self, name: &str) {
        self.plan_file(name).expect_code(2);
        self.run(&["apply", &format!("{name}.json")]).expect_code(0);
    }

    /// `ferry backout -i inventory.yaml --app demo --site SITE [EXTRA...]`.
    pub fn backout(&self, site: &str, extra: &[&str]) -> Run {
        let mut args = vec![
            "backout",
            "-i",
            "inventory.yaml",
            "--app",
            "demo",
            "--site",
            site,
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ferry starts")
    }

    /// The release `site` serves, read from the target directory itself.
    pub fn current(&self, site: &str) -> Option<String> {
        let link =
            std::fs::read_link(self.path().join("targets").join(site).join("demo/current")).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }

    pub fn hang(&self, site: &str) {
        std::fs::write(self.path().join(format!("hang-{site}")), "").unwrap();
    }

    pub fn release(&self, site: &str) {
        let _ = std::fs::remove_file(self.path().join(format!("hang-{site}")));
    }

    /// Waits until the health check of `site` is held by [`Workspace::hang`].
    pub fn wait_hanging(&self, site: &str) {
        let marker = self.path().join(format!("hanging-{site}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !marker.exists() {
            assert!(
                Instant::now() < deadline,
                "health check of {site} never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The ledger's complete entries. A test that polls while an apply writes may read a line
    /// whose end is not written yet: only lines ended by a newline are entries.
    pub fn ledger(&self) -> Vec<serde_json::Value> {
        if self.state.is_some() {
            let out = self
                .run(&["--output", "json", "ledger", "show"])
                .expect_code(0)
                .stdout();
            return out
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        }
        let text = std::fs::read_to_string(self.ledger_path()).unwrap_or_default();
        let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn events(&self, event: &str) -> Vec<serde_json::Value> {
        self.ledger()
            .into_iter()
            .filter(|e| e["event"] == event)
            .collect()
    }
}

/// A finished run, with readable assertions.
pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    #[track_caller]
    pub fn stdout_has(&self, s: &str) -> &Self {
        assert!(
            self.stdout().contains(s),
            "stdout lacks {s:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    #[track_caller]
    pub fn stderr_has(&self, s: &str) -> &Self {
        assert!(
            self.stderr().contains(s),
            "stderr lacks {s:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout().trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", self.stdout()))
    }
}

/// Real OpenSSH servers for one test, started by `ci/sshd.sh` on 127.NET.1..n:2222.
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub net: String,
    pub n: usize,
}

fn sshd_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/sshd.sh")
}

impl Fleet {
    /// `net` must be unique per test (e.g. "31.0"): tests run in parallel.
    pub fn start(n: usize, net: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new(sshd_script())
            .args([
                "start",
                &dir.path().display().to_string(),
                &n.to_string(),
                net,
            ])
            .output()
            .expect("ci/sshd.sh runs");
        assert!(
            out.status.success(),
            "could not start the test sshd fleet (ci/test.sh installs OpenSSH with `ci/sshd.sh install`):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir,
            net: net.to_owned(),
            n,
        }
    }

    pub fn address(&self, k: usize) -> String {
        format!("127.{}.{k}", self.net)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Stops endpoint k: its listener and every session (a dead endpoint).
    pub fn kill(&self, k: usize) {
        let ok = Command::new(sshd_script())
            .args([
                "kill-one",
                &self.path().display().to_string(),
                &k.to_string(),
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill-one {k}");
    }

    /// Cuts endpoint k's network (its packets dropped on the loopback); it keeps running.
    /// Mended when the fleet is dropped, whatever happened.
    pub fn cut(&self, k: usize) {
        self.sshd(&[
            "cut-one",
            &self.path().display().to_string(),
            &k.to_string(),
        ]);
    }

    pub fn mend(&self, k: usize) {
        self.sshd(&[
            "mend-one",
            &self.path().display().to_string(),
            &k.to_string(),
        ]);
    }

    fn sshd(&self, args: &[&str]) {
        let out = Command::new(sshd_script()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ci/sshd.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn restart(&self, k: usize) {
        let ok = Command::new(sshd_script())
            .args([
                "start-one",
                &self.path().display().to_string(),
                &k.to_string(),
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "start-one {k}");
    }

    /// The release endpoint k serves, read from its disk.
    pub fn current(&self, k: usize, app: &str) -> Option<String> {
        let link = std::fs::read_link(self.path().join(format!("ep-{k}/home/ferry/{app}/current")))
            .ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }

    /// Inventory: sites clinic-a.. each with one endpoint, app `demo` over ssh.
    pub fn inventory(&self, ws: &Workspace, known_hosts: &Path) -> String {
        let sites = ["clinic-a", "clinic-b", "clinic-c", "clinic-d", "clinic-e"];
        let mut s = String::from("version: 1\nsites:\n");
        for k in 1..=self.n {
            s.push_str(&format!(
                "  - {{ id: {}, tier: prod, endpoints: [ep-{k}] }}\n",
                sites[k - 1]
            ));
        }
        s.push_str("endpoints:\n");
        for k in 1..=self.n {
            s.push_str(&format!(
                "  - id: ep-{k}\n    address: {}\n    connection: {{ protocol: ssh, user: root, port: 2222, identity: \"file:{}\", known_hosts: {}, root: {}, connect_timeout_seconds: 3, command_timeout_seconds: 20 }}\n    hardware: {{ cpus: 1, memory_mb: 512, disk_gb: 1, os: \"{}\" }}\n",
                self.address(k),
                self.path().join("id_ed25519").display(),
                known_hosts.display(),
                self.path().join(format!("ep-{k}/home/ferry")).display(),
                os_id(),
            ));
        }
        let list: Vec<&str> = sites[..self.n].to_vec();
        s.push_str(&format!(
            "apps:\n  - id: demo\n    version: 1.0.0\n    artifact: \"artifacts/{{version}}\"\n    target: ssh\n    sites: [{}]\n    health_check: {{ command: [sh, bin/health], timeout_seconds: 8, interval_ms: 100 }}\n    config: [{{ template: templates/app.conf.tera, dest: app.conf }}]\n    env: {{ FERRY_IT_HANG_DIR: \"{}\" }}\n",
            list.join(", "),
            ws.path().display()
        ));
        s
    }
}

/// This machine's OS id (`debian`...), as the SSH driver observes it.
fn os_id() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("ID="))
        .unwrap_or("linux")
        .trim_matches('"')
        .to_owned()
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for k in 1..=self.n {
            let _ = Command::new(sshd_script())
                .args([
                    "mend-one",
                    &self.path().display().to_string(),
                    &k.to_string(),
                ])
                .status();
        }
        let _ = Command::new(sshd_script())
            .args(["stop", &self.path().display().to_string()])
            .status();
    }
}

/// A throwaway PostgreSQL cluster for one test, made by `ci/postgres.sh` (initdb as the
/// postgres user) on 127.0.0.1:`port`; role `probe` with password `probe-secret`, database
/// `app`. Stopped when dropped.
pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

fn postgres_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/postgres.sh")
}

impl Postgres {
    /// `port` must be unique per test: tests run in parallel.
    pub fn start(port: u16) -> Self {
        Self::start_with(port, "")
    }

    /// A cluster that takes TCP connections over TLS only, its certificate signed by a
    /// throwaway CA ([`Postgres::ca_file`]).
    pub fn start_tls(port: u16) -> Self {
        Self::start_with(port, "tls")
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("pg/ca.crt")
    }

    fn start_with(port: u16, tls: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new(postgres_script())
            .args([
                "start",
                &dir.path().display().to_string(),
                &port.to_string(),
                tls,
            ])
            .output()
            .expect("ci/postgres.sh runs");
        assert!(
            out.status.success(),
            "could not start the test PostgreSQL cluster (ci/test.sh installs it with `ci/postgres.sh install`):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir, port }
    }

    /// Runs `sql` in database `app` as the superuser; its output (unaligned, tuples only).
    #[track_caller]
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new(postgres_script())
            .args([
                "psql",
                &self.dir.path().display().to_string(),
                &self.port.to_string(),
                sql,
            ])
            .output()
            .expect("ci/postgres.sh runs");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The inventory's `databases:` entry for it, the password read from `file:pg-password`,
    /// over plain TCP (loopback).
    pub fn database(&self, id: &str) -> String {
        self.database_with(id, "tls: disable")
    }

    /// The entry with `tls` settings of the caller's (`tls: verify-full, ca_file: ...`).
    pub fn database_with(&self, id: &str, tls: &str) -> String {
        format!(
            "  - {{ id: {id}, engine: postgres, postgres: {{ host: 127.0.0.1, port: {}, dbname: app, user: probe, password: \"file:pg-password\", timeout: 5s, {tls} }} }}\n",
            self.port
        )
    }
}

impl Postgres {
    /// Stops the server at once (`pg_ctl -m immediate`), as a crash or a lost host would.
    pub fn stop_now(&self) {
        self.script(&["stop", &self.dir.path().display().to_string()]);
    }

    /// Starts the stopped server again on its port.
    pub fn restart(&self) {
        self.script(&[
            "restart",
            &self.dir.path().display().to_string(),
            &self.port.to_string(),
        ]);
    }

    #[track_caller]
    fn script(&self, args: &[&str]) {
        let out = Command::new(postgres_script())
            .args(args)
            .output()
            .expect("ci/postgres.sh runs");
        assert!(
            out.status.success(),
            "ci/postgres.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(postgres_script())
            .args(["stop", &self.dir.path().display().to_string()])
            .output();
    }
}

/// An app's admin endpoint, the test's own HTTP/1.1 server on loopback: `GET /metrics` answers
/// `{"launches_2x": N, "queue": {"depth": D}}` from its state, `POST /admin/launch/stop` and
/// `/start` flip whether 2.x launches are invoked, `GET`/`DELETE /admin/records` count and wipe
/// a gateway's records; every request is logged.
pub struct Admin {
    pub port: u16,
    pub state: std::sync::Arc<std::sync::Mutex<AdminState>>,
}

#[derive(Debug, Default)]
pub struct AdminState {
    pub launching: bool,
    pub queue: u64,
    /// Patient records a query-gateway holds (`GET /admin/records`, `DELETE` wipes them).
    pub records: u64,
    /// When set, every request must carry `authorization: TOKEN` (else 401).
    pub token: Option<String>,
    pub log: Vec<String>,
}

impl Admin {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(AdminState {
            launching: true,
            ..Default::default()
        }));
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = Self::serve(conn, &s);
            }
        });
        Self { port, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn serve(
        mut conn: std::net::TcpStream,
        state: &std::sync::Mutex<AdminState>,
    ) -> std::io::Result<()> {
        use std::io::{BufRead, BufReader, Read, Write};
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut length = 0usize;
        let mut authorization = None;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            if h.trim().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if h.to_ascii_lowercase().starts_with("authorization:") {
                authorization = Some(h["authorization:".len()..].trim().to_owned());
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let request = line.trim().to_owned();
        let (status, reply) = {
            let mut st = state.lock().unwrap();
            st.log.push(request.clone());
            let denied = st.token.is_some() && st.token != authorization;
            match request.split(' ').take(2).collect::<Vec<_>>()[..] {
                _ if denied => (401, "{\"error\": \"unauthorized\"}".into()),
                ["GET", "/metrics"] => (
                    200,
                    format!(
                        "{{\"launches_2x\": {}, \"queue\": {{\"depth\": {}}}}}",
                        u8::from(st.launching),
                        st.queue
                    ),
                ),
                ["POST", "/admin/launch/stop"] => {
                    st.launching = false;
                    (200, "{\"launching\": false}".into())
                }
                ["GET", "/admin/records"] => (200, format!("{{\"count\": {}}}", st.records)),
                ["DELETE", "/admin/records"] => {
                    st.records = 0;
                    (200, "{\"wiped\": true}".into())
                }
                ["POST", "/admin/launch/start"] => {
                    st.launching = true;
                    (200, "{\"launching\": true}".into())
                }
                _ => (404, "{}".into()),
            }
        };
        write!(
            conn,
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
            reply.len()
        )?;
        conn.flush()
    }
}

/// One moto server on `addr:5000` for one test. Fails loudly when moto cannot start.
pub struct Moto {
    dir: tempfile::TempDir,
    addr: String,
}

impl Moto {
    pub fn start(addr: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = repo().join("ci/moto.sh");
        let out = Command::new("bash")
            .arg(&script)
            .args(["install"])
            .output()
            .expect("ci/moto.sh runs");
        assert!(
            out.status.success(),
            "ci/moto.sh install failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("bash")
            .arg(&script)
            .args(["start", dir.path().to_str().unwrap(), addr, "5000"])
            .output()
            .expect("ci/moto.sh runs");
        assert!(
            out.status.success(),
            "moto did not start on {addr}:5000: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir,
            addr: addr.to_owned(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}:5000", self.addr)
    }

    /// Runs Python with `rds` and `s3`, boto3 clients of this server; returns stdout.
    pub fn py(&self, code: &str) -> String {
        let prelude = format!(
            "import boto3, json, datetime\nkw = dict(endpoint_url='{}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\nrds = boto3.client('rds', **kw)\ns3 = boto3.client('s3', **kw)\n",
            self.url()
        );
        let out = Command::new("python3")
            .arg("-c")
            .arg(format!("{prelude}{code}"))
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("ci/moto.sh"))
            .args(["stop", self.dir.path().to_str().unwrap()])
            .status();
    }
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `cmd` with `stdin` written to it; its output (stdout and stderr captured).
pub fn output_with_stdin(cmd: &mut Command, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} cannot start: {e}"));
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(stdin.as_bytes())
        .expect("the child reads its stdin");
    child.wait_with_output().expect("the child ends")
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Team state for a test: a PostgreSQL cluster whose schema `ferry` was set up by `ferry
/// state init` as an owner role, used by a role that may only SELECT and INSERT the ledger.
pub struct TeamState {
    pub pg: Postgres,
}

impl TeamState {
    pub fn start(port: u16) -> Self {
        let pg = Postgres::start(port);
        pg.sql(
            "CREATE ROLE ferry_owner LOGIN PASSWORD 'owner-secret'; \
             GRANT CREATE ON DATABASE app TO ferry_owner; \
             CREATE ROLE ferry_app LOGIN PASSWORD 'app-secret'",
        );
        let team = Self { pg };
        std::fs::write(team.pg.dir.path().join("owner-pw"), "owner-secret").unwrap();
        std::fs::write(team.pg.dir.path().join("app-pw"), "app-secret").unwrap();
        let out = Command::new(BIN)
            .args([
                "--state",
                &team.url_as("ferry_owner", "owner-pw"),
                "state",
                "init",
                "--grant",
                "ferry_app",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ferry state init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        team
    }

    fn url_as(&self, role: &str, pw: &str) -> String {
        format!(
            "postgres://{role}@127.0.0.1:{}/app?sslmode=disable&password=file:{}",
            self.pg.port,
            self.pg.dir.path().join(pw).display()
        )
    }

    /// The store as ferry's runners reach it.
    pub fn url(&self) -> String {
        self.url_as("ferry_app", "app-pw")
    }
}

/// A CA and a server certificate it signed for 127.0.0.1 (Debian's openssl): writes
/// `ca.pem`, returns the server's `(cert.pem, key.pem)`.
pub fn certificate(dir: &std::path::Path) -> (String, String) {
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-subj", "/CN=standin-ca", "-days", "1"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca);
    let mut csr = vec!["req", "-subj", "/CN=kube-standin"];
    csr.extend(ec);
    csr.extend(["-keyout", "key.pem", "-out", "server.csr"]);
    openssl(&csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    (read("cert.pem"), read("key.pem"))
}

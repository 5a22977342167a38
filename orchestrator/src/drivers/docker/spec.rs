//! The container ferry wants, computed from the inventory and the release: names, labels,
//! the Engine API body and the digest that recognises it again. Pure: no Docker calls.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use serde::Serialize;

use crate::drivers::RenderedFile;
use crate::model::{DockerApp, RestartPolicy as Restart};

/// Label keys ferry puts on every container it makes; observation finds containers by them.
pub const LABEL_MANAGED: &str = "ferry.managed-by";
pub const LABEL_APP: &str = "ferry.app";
pub const LABEL_SITE: &str = "ferry.site";
pub const LABEL_VERSION: &str = "ferry.version";
pub const LABEL_PLAN: &str = "ferry.plan";
/// Digest of everything the container was made from (secrets by name only).
pub const LABEL_SPEC: &str = "ferry.spec";
/// What `docker update` can change behind ferry's back, as made: checked for drift.
pub const LABEL_RESTART: &str = "ferry.restart";
pub const LABEL_MEMORY: &str = "ferry.memory";
pub const LABEL_NANO_CPUS: &str = "ferry.nano-cpus";

pub use ferry_core::container::{ENV_FILE_DEST, Mount, Port, image_ref, parse_port, parse_volume};

/// `ferry-SITE-APP-VERSION`, with characters Docker refuses in names replaced by `_`.
pub fn container_name(site: &str, app: &str, version: &str) -> String {
    format!("ferry-{site}-{app}-{version}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `KEY=VALUE` lines of a rendered `env_template`; blank lines and `#` comments are skipped.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        // The line's text is never echoed: a mistyped line may hold a value.
        let Some((k, v)) = l.split_once('=') else {
            return Err(format!(
                "line {} is not KEY=VALUE (its text is not shown: it may hold a value)",
                n + 1
            ));
        };
        let k = k.trim();
        if !crate::secret::is_env_name(k) {
            return Err(format!(
                "line {}: the text before `=` is not a variable name ([A-Za-z_][A-Za-z0-9_]*; not shown: it may hold a value)",
                n + 1
            ));
        }
        out.push((k.to_owned(), v.to_owned()));
    }
    Ok(out)
}

/// What a container is made from; its digest (label `ferry.spec`) recognises it on the host.
#[derive(Debug, Clone)]
pub struct Desired {
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub body: ContainerCreateBody,
    /// Files copied into the container before it starts.
    pub files: Vec<RenderedFile>,
    pub digest: String,
    /// Networks after the first, connected one by one after the container is created (an
    /// engine older than API 1.44 refuses more than one network at create).
    pub extra_networks: Vec<(String, EndpointSettings)>,
}

/// Digest input: everything but secret values (a digest of a secret in a label is a leak).
#[derive(Serialize)]
struct DigestInput<'a> {
    image_id: &'a str,
    command: &'a Option<Vec<String>>,
    env: &'a [(String, String)],
    secret_names: Vec<&'a str>,
    ports: &'a [String],
    volumes: &'a [String],
    networks: &'a [String],
    restart: &'a str,
    memory: i64,
    nano_cpus: i64,
    healthcheck: Option<(&'a [String], u64, u64, u32)>,
    /// Left out when 0, so containers made before it existed keep their digest.
    #[serde(skip_serializing_if = "is_zero")]
    healthcheck_start_period_ms: u64,
    files: Vec<(&'a str, String)>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub struct Inputs<'a> {
    pub site: &'a str,
    pub app_id: &'a str,
    pub version: &'a str,
    pub plan_id: &'a str,
    pub app: &'a DockerApp,
    /// Image id the reference resolves to on the host.
    pub image_id: &'a str,
    /// Plain environment: the app's `env`, then the rendered `env_template` (which wins).
    pub files: &'a [RenderedFile],
    pub env: &'a [(String, String)],
    pub secrets: &'a [(String, String)],
}

pub fn desired(i: &Inputs<'_>) -> Result<Desired, String> {
    let d = i.app;
    let mut env: BTreeMap<String, String> = i.env.iter().cloned().collect();
    let mut files = Vec::new();
    for f in i.files {
        if f.dest == ENV_FILE_DEST {
            for (k, v) in parse_env_file(&f.contents).map_err(|e| format!("env_template: {e}"))? {
                env.insert(k, v);
            }
        } else {
            files.push(f.clone());
        }
    }
    let env: Vec<(String, String)> = env.into_iter().collect();
    let memory = d.memory_mb.map_or(0, |m| (m * 1024 * 1024) as i64);
    let nano_cpus = d.cpus.map_or(0, |c| (c * 1e9).round() as i64);
    let digest = {
        let input = DigestInput {
            image_id: i.image_id,
            command: &d.command,
            env: &env,
            secret_names: i.secrets.iter().map(|(k, _)| k.as_str()).collect(),
            ports: &d.ports,
            volumes: &d.volumes,
            networks: &d.networks,
            restart: d.restart.as_str(),
            memory,
            nano_cpus,
            healthcheck: d
                .healthcheck
                .as_ref()
                .map(|h| (h.test.as_slice(), h.interval_ms, h.timeout_ms, h.retries)),
            healthcheck_start_period_ms: d.healthcheck.as_ref().map_or(0, |h| h.start_period_ms),
            files: files
                .iter()
                .map(|f| {
                    (
                        f.dest.as_str(),
                        crate::load::sha256_hex(f.contents.as_bytes()),
                    )
                })
                .collect(),
        };
        crate::load::sha256_hex(&serde_json::to_vec(&input).expect("digest input serializes"))
    };
    let labels: BTreeMap<String, String> = [
        (LABEL_MANAGED, "ferry".to_owned()),
        (LABEL_APP, i.app_id.to_owned()),
        (LABEL_SITE, i.site.to_owned()),
        (LABEL_VERSION, i.version.to_owned()),
        (LABEL_PLAN, i.plan_id.to_owned()),
        (LABEL_SPEC, digest.clone()),
        (LABEL_RESTART, d.restart.as_str().to_owned()),
        (LABEL_MEMORY, memory.to_string()),
        (LABEL_NANO_CPUS, nano_cpus.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    let mut exposed: std::collections::BTreeSet<String> = Default::default();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &d.ports {
        let p = parse_port(p)?;
        let key = format!("{}/{}", p.container_port, p.proto);
        exposed.insert(key.clone());
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: p.host_ip.clone(),
                host_port: Some(p.host_port.to_string()),
            });
    }
    let mut binds = Vec::new();
    for v in &d.volumes {
        parse_volume(v)?;
        binds.push(v.clone());
    }
    let mut attach = d.networks.iter().map(|n| {
        (
            n.clone(),
            endpoint(&crate::model::resource_name(i.app_id), n),
        )
    });
    let endpoints: HashMap<String, EndpointSettings> = attach.next().into_iter().collect();
    let extra_networks: Vec<(String, EndpointSettings)> = attach.collect();
    let mut full_env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    full_env.extend(i.secrets.iter().map(|(k, v)| format!("{k}={v}")));
    full_env.push(format!("FERRY_VERSION={}", i.version));
    let body = ContainerCreateBody {
        image: Some(i.image_id.to_owned()),
        cmd: d.command.clone(),
        env: Some(full_env),
        labels: Some(labels.clone().into_iter().collect()),
        exposed_ports: (!exposed.is_empty()).then(|| exposed.into_iter().collect()),
        healthcheck: d.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(
                std::iter::once("CMD".to_owned())
                    .chain(h.test.iter().cloned())
                    .collect(),
            ),
            interval: Some((h.interval_ms * 1_000_000) as i64),
            timeout: Some((h.timeout_ms * 1_000_000) as i64),
            retries: Some(i64::from(h.retries)),
            start_period: (h.start_period_ms > 0).then(|| (h.start_period_ms * 1_000_000) as i64),
            ..Default::default()
        }),
        host_config: Some(HostConfig {
            binds: (!binds.is_empty()).then_some(binds),
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            restart_policy: Some(RestartPolicy {
                name: Some(restart_name(d.restart)),
                maximum_retry_count: None,
            }),
            memory: (memory > 0).then_some(memory),
            nano_cpus: (nano_cpus > 0).then_some(nano_cpus),
            network_mode: d.networks.first().cloned(),
            ..Default::default()
        }),
        networking_config: (!endpoints.is_empty()).then_some(bollard::models::NetworkingConfig {
            endpoints_config: Some(endpoints),
        }),
        ..Default::default()
    };
    Ok(Desired {
        name: container_name(i.site, &crate::model::resource_name(i.app_id), i.version),
        image: image_ref(d, i.version),
        labels,
        body,
        files,
        digest,
        extra_networks,
    })
}

/// How the container joins network `n`: under the app's name as an alias on a user-defined
/// network; Docker's own `bridge`, `host` and `none` take no alias (the engine refuses one).
fn endpoint(app: &str, n: &str) -> EndpointSettings {
    let builtin = matches!(n, "bridge" | "host" | "none" | "default");
    EndpointSettings {
        aliases: (!builtin).then(|| vec![app.to_owned()]),
        ..Default::default()
    }
}

fn restart_name(r: Restart) -> RestartPolicyNameEnum {
    match r {
        Restart::No => RestartPolicyNameEnum::NO,
        Restart::Always => RestartPolicyNameEnum::ALWAYS,
        Restart::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
        Restart::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
    }
}

/// The restart policy a label value (as `restart_reported` writes it) names.
pub fn restart_named(s: &str) -> RestartPolicyNameEnum {
    match s {
        "always" => RestartPolicyNameEnum::ALWAYS,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        _ => RestartPolicyNameEnum::NO,
    }
}

/// The restart policy name as the Engine API reports it (`""` and `no` are the same).
pub fn restart_reported(r: Option<&RestartPolicyNameEnum>) -> &'static str {
    match r {
        Some(RestartPolicyNameEnum::ALWAYS) => "always",
        Some(RestartPolicyNameEnum::UNLESS_STOPPED) => "unless-stopped",
        Some(RestartPolicyNameEnum::ON_FAILURE) => "on-failure",
        _ => "no",
    }
}

/// A tar archive holding `files` at their absolute paths, for the Engine API's archive upload.
pub fn files_tar(files: &[RenderedFile]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for f in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(f.contents.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(
            &mut h,
            f.dest.trim_start_matches('/'),
            f.contents.as_bytes(),
        )?;
    }
    b.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PullPolicy, UpdateOrder};

    fn app() -> DockerApp {
        DockerApp {
            image: "lab/web:{version}".into(),
            pull: PullPolicy::Never,
            command: None,
            ports: vec!["127.0.0.1:18080:80".into()],
            volumes: vec!["webdata:/data".into(), "/srv/x:/x:ro".into()],
            networks: vec![],
            restart: Restart::UnlessStopped,
            memory_mb: Some(64),
            cpus: Some(0.5),
            healthcheck: None,
            env_template: None,
            strategy: UpdateOrder::StopFirst,
            stop_timeout_seconds: 5,
        }
    }

    #[test]
    fn ports_and_volumes_parse_or_say_why_not() {
        assert_eq!(
            parse_port("127.0.0.1:8080:80/udp").unwrap(),
            Port {
                host_ip: Some("127.0.0.1".into()),
                host_port: 8080,
                container_port: 80,
                proto: "udp".into()
            }
        );
        assert_eq!(parse_port("8080:80").unwrap().host_ip, None);
        assert!(
            parse_port("80")
                .unwrap_err()
                .contains("wrong number of parts")
        );
        assert!(parse_port("x:80").unwrap_err().contains("host port `x`"));
        assert!(parse_port("1:2/sctp").unwrap_err().contains("tcp or udp"));
        assert!(matches!(
            parse_volume("data:/var/lib/x:ro").unwrap(),
            Mount::Volume {
                read_only: true,
                ..
            }
        ));
        assert!(matches!(parse_volume("/a:/b").unwrap(), Mount::Bind { .. }));
        assert!(parse_volume("data:rel").unwrap_err().contains("absolute"));
        assert!(parse_volume("a b:/x").unwrap_err().contains("neither"));
    }

    #[test]
    fn names_are_safe_for_docker() {
        assert_eq!(
            container_name("lab-1", "web", "2.0.0+build.7"),
            "ferry-lab-1-web-2.0.0_build.7"
        );
    }

    #[test]
    fn env_files_parse_with_line_numbers() {
        assert_eq!(
            parse_env_file("# c\n\nA=1\nB = x=y\n").unwrap(),
            vec![("A".into(), "1".into()), ("B".into(), " x=y".into())]
        );
        let e = parse_env_file("A=1\nPASSWORD hunter2\n").unwrap_err();
        assert!(e.starts_with("line 2 is not KEY=VALUE"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = parse_env_file("A=1\nhunter2 x=1\n").unwrap_err();
        assert!(e.starts_with("line 2: the text before"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn the_digest_covers_the_spec_but_not_secret_values() {
        let a = app();
        let files = vec![
            RenderedFile {
                dest: ENV_FILE_DEST.into(),
                contents: "MODE=prod\n".into(),
            },
            RenderedFile {
                dest: "/etc/web.conf".into(),
                contents: "x\n".into(),
            },
        ];
        let mk = |secret: &str, app: &DockerApp| {
            let secrets = vec![("TOKEN".to_owned(), secret.to_owned())];
            desired(&Inputs {
                site: "lab",
                app_id: "web",
                version: "2",
                plan_id: "p",
                app,
                image_id: "sha256:abc",
                files: &files,
                env: &[("MODE".into(), "dev".into())],
                secrets: &secrets,
            })
            .unwrap()
        };
        let d1 = mk("one", &a);
        let d2 = mk("two", &a);
        assert_eq!(d1.digest, d2.digest, "secret values are not in the digest");
        let mut b = a.clone();
        b.memory_mb = Some(128);
        assert_ne!(d1.digest, mk("one", &b).digest);
        let env = d1.body.env.clone().unwrap();
        assert!(
            env.contains(&"MODE=prod".to_owned()),
            "env_template wins: {env:?}"
        );
        assert!(env.contains(&"TOKEN=one".to_owned()));
        assert!(env.contains(&"FERRY_VERSION=2".to_owned()));
        assert_eq!(
            d1.files.len(),
            1,
            "the env file is not copied into the container"
        );
        assert_eq!(d1.name, "ferry-lab-web-2");
        assert_eq!(d1.labels[LABEL_MEMORY], (64 * 1024 * 1024).to_string());
        assert!(
            !serde_json::to_string(&d1.labels).unwrap().contains("one"),
            "labels hold no secret"
        );
        let hc = d1.body.host_config.unwrap();
        assert_eq!(hc.nano_cpus, Some(500_000_000));
        assert_eq!(
            hc.port_bindings.unwrap()["80/tcp"].as_ref().unwrap()[0]
                .host_port
                .as_deref(),
            Some("18080")
        );
    }

    #[test]
    fn files_are_archived_at_their_paths() {
        let tar = files_tar(&[RenderedFile {
            dest: "/etc/app/web.conf".into(),
            contents: "hello".into(),
        }])
        .unwrap();
        let mut a = tar::Archive::new(tar.as_slice());
        let e = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str(), Some("etc/app/web.conf"));
    }
}

//! Inventory v1: sites, hardware endpoints, clouds, apps, databases and buckets.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole inventory file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// Format version of this file; must be 1.
    pub version: u32,
    #[serde(default)]
    pub sites: Vec<Site>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub clouds: Vec<Cloud>,
    #[serde(default)]
    pub apps: Vec<App>,
    #[serde(default)]
    pub databases: Vec<Database>,
    #[serde(default)]
    pub buckets: Vec<Bucket>,
    /// People who may approve plan gates, with the roles they hold and their public keys.
    #[serde(default)]
    pub approvers: Vec<Approver>,
    /// Rules for maintenance windows across the estate.
    #[serde(default)]
    pub maintenance: Maintenance,
    /// Who is told of a change, how, and how long before it starts (the DIBR guide checks the
    /// lead time against the time between the plan's approval and its apply).
    #[serde(default)]
    pub communications: Vec<Notice>,
    /// Who the actors recorded in the ledger are: an OS user, CI job or `--actor` name mapped
    /// to a named person (the DIBR guide shows people, not logins).
    #[serde(default)]
    pub actors: BTreeMap<String, String>,
    /// Lookups by id, built on first use: an estate of 10,000 sites is looked up once per
    /// target, so a scan per lookup would make planning quadratic.
    #[serde(skip)]
    #[schemars(skip)]
    index: Index,
}

/// Positions by id, and each app's sites; built once from the lists it indexes (which are
/// not changed after loading).
#[derive(Debug, Default)]
struct Index(std::sync::OnceLock<Indexed>);

#[derive(Debug)]
struct Indexed {
    sites: std::collections::HashMap<String, usize>,
    apps: std::collections::HashMap<String, usize>,
    clouds: std::collections::HashMap<String, usize>,
    endpoints: std::collections::HashMap<String, usize>,
    databases: std::collections::HashMap<String, usize>,
    /// Per app (by position): the sites it runs on.
    app_sites: Vec<std::collections::HashSet<String>>,
}

impl Clone for Index {
    /// A copy indexes itself again on first use (its lists may be changed before).
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for Index {
    /// A cache: never part of what an inventory is.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

fn positions<'a>(ids: impl Iterator<Item = &'a str>) -> std::collections::HashMap<String, usize> {
    let mut m = std::collections::HashMap::new();
    for (i, id) in ids.enumerate() {
        // The first of duplicate ids wins, as a scan would find it (validation reports them).
        m.entry(id.to_owned()).or_insert(i);
    }
    m
}

/// Someone who signs approvals. Auditors verify signatures offline with `public_key`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approver {
    pub name: String,
    /// Roles held (plan gates name the role that must approve them).
    pub roles: Vec<String>,
    /// `ed25519:BASE64` (printed by `ferry keygen`).
    pub public_key: String,
    /// Secret reference to the signing key, used by `ferry approve` on the approver's machine.
    #[serde(default)]
    pub signing_key: Option<String>,
}

/// Environment tier of a site, in promotion order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Dev,
    Sqa,
    Uat,
    Preprod,
    Prod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// A notice given before a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notice {
    /// Who is told (e.g. "clinic staff", "help desk").
    pub audience: String,
    /// How (e.g. "email to clinic-ops@example.org", "status page").
    pub channel: String,
    /// How long before the change starts, in hours.
    pub lead_time_hours: u32,
}

/// Rules for maintenance windows: which tiers' sites must declare one (a site without a
/// window is otherwise unrestricted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    #[serde(default)]
    pub windows_required_for: Vec<Tier>,
}

/// A place where apps run: a clinic, a lab, a cloud region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub id: String,
    pub tier: Tier,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub maintenance_window: Option<MaintenanceWindow>,
    /// Who does what at this site (release manager, site contact, approver...).
    #[serde(default)]
    pub roles: Vec<RoleAssignment>,
    /// Clouds (by id) that host this site's apps.
    #[serde(default)]
    pub clouds: Vec<String>,
    /// Hardware endpoints (by id) at this site.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Endpoint id of the jump host (site hub) through which this site's endpoints are reached.
    #[serde(default)]
    pub jump: Option<String>,
    /// Who may order a back-out or rollback at this site (people, by name); the DIBR guide
    /// names them, and says so when none is declared.
    #[serde(default)]
    pub backout_authority: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    pub days: Vec<Weekday>,
    /// Local start time, `HH:MM`.
    pub start: String,
    pub duration_minutes: u32,
    /// IANA time zone name, e.g. `America/Chicago`.
    pub timezone: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleAssignment {
    pub role: String,
    pub name: String,
    #[serde(default)]
    pub contact: Option<String>,
}

/// On-premise hardware reached over the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub id: String,
    pub address: String,
    pub connection: Connection,
    /// Required hardware facts; plans check observed facts against them.
    pub hardware: Hardware,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// Only `ssh` is defined in format v1.
    pub protocol: String,
    pub user: String,
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// Secret reference (`env:NAME` or `file:PATH`) to the private key; without it the SSH
    /// agent (`SSH_AUTH_SOCK`) is used.
    #[serde(default)]
    pub identity: Option<String>,
    /// known_hosts file (relative to the inventory) that host keys are strictly checked against.
    #[serde(default)]
    pub known_hosts: Option<String>,
    /// Endpoint id of a jump host (a site hub or bastion); overrides the site's `jump`.
    #[serde(default)]
    pub jump: Option<String>,
    /// Secret reference to the private key's passphrase.
    #[serde(default)]
    pub identity_passphrase: Option<String>,
    /// Directory on the endpoint holding ferry's releases (one folder per app).
    #[serde(default = "default_remote_root")]
    pub root: String,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
    /// Deadline of each remote command (upload, unpack, switch...).
    #[serde(default = "default_command_timeout")]
    pub command_timeout_seconds: u64,
}

fn default_remote_root() -> String {
    "/opt/ferry".into()
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_command_timeout() -> u64 {
    300
}

fn default_ssh_port() -> u16 {
    22
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    pub cpus: u32,
    pub memory_mb: u64,
    pub disk_gb: u64,
    pub os: String,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum CloudKind {
    Aws,
    Kubernetes,
    Docker,
    Local,
}

impl CloudKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CloudKind::Aws => "aws",
            CloudKind::Kubernetes => "kubernetes",
            CloudKind::Docker => "docker",
            CloudKind::Local => "local",
        }
    }
}

/// A cloud: an AWS account, a Kubernetes cluster, a Docker host, or the embedded local target.
///
/// The section named after `kind` holds its connection settings; settings of the other kinds
/// are kept as opaque maps until their drivers define them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cloud {
    pub id: String,
    pub kind: CloudKind,
    #[serde(default)]
    pub local: Option<LocalCloud>,
    #[serde(default)]
    pub aws: Option<AwsCloud>,
    #[serde(default)]
    pub kubernetes: Option<KubernetesCloud>,
    #[serde(default)]
    pub docker: Option<DockerCloud>,
}

/// An AWS account in one region. Credentials are secret references resolved when a call is
/// made (never written anywhere); `endpoint_url` points the SDK at another endpoint (a VPC
/// endpoint, or the moto stand-in the tests use).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsCloud {
    /// Account id (12 digits); recorded with every operation for the audit trail.
    pub account: String,
    pub region: String,
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Static keys, as secret references (`env:`/`file:`), overriding the default chain.
    /// Without them ferry uses AWS's default credential chain: environment variables, the
    /// shared config and credentials files (`profile`, SSO), web identity (CI OIDC, EKS IRSA),
    /// container and instance roles; what it provides is refreshed before it expires.
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub session_token: Option<String>,
    /// The profile of the shared config files the default chain reads (default: `default`,
    /// or `AWS_PROFILE`).
    #[serde(default)]
    pub profile: Option<String>,
    /// Attempts of one call when AWS throttles or a 5xx/connection error occurs (backoff
    /// between them).
    #[serde(default = "default_aws_attempts")]
    pub max_attempts: u32,
    /// Deadline of one API call.
    #[serde(default = "default_aws_timeout")]
    pub timeout_seconds: u64,
}

fn default_aws_attempts() -> u32 {
    5
}

fn default_aws_timeout() -> u64 {
    30
}

/// A Kubernetes cluster, reached through a kubeconfig file (and one of its contexts) or, when
/// ferry itself runs in a pod, through the pod's service account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesCloud {
    /// Kubeconfig file, relative to the inventory file. Required unless `in_cluster`.
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// Context of the kubeconfig to use; its current context when absent.
    #[serde(default)]
    pub context: Option<String>,
    /// Use the service account of the pod ferry runs in (no kubeconfig).
    #[serde(default)]
    pub in_cluster: bool,
    /// Attempts of one API call when the server answers 429 or 5xx or cannot be reached
    /// (backoff between them).
    #[serde(default = "default_kube_attempts")]
    pub max_attempts: u32,
    /// Deadline of one API call (rollout waits have the app's own deadline).
    #[serde(default = "default_kube_timeout")]
    pub timeout_seconds: u64,
}

fn default_kube_attempts() -> u32 {
    5
}

fn default_kube_timeout() -> u64 {
    30
}

/// How a Kubernetes app is made: its manifests, where they go, how long a rollout may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesApp {
    /// Namespace of the app's objects and of its release records; `{site}` is replaced by the
    /// site id (`ehr-{site}`).
    pub namespace: String,
    /// Tera templates (multi-document YAML), relative to the inventory file. They see `app`,
    /// `version`, `site`, `tier`, `location`, `target`, `env`, `namespace` and `values`.
    pub manifests: Vec<String>,
    /// Values for the templates (`{{ values.replicas }}`).
    #[serde(default)]
    pub values: BTreeMap<String, serde_json::Value>,
    /// Deadline for every Deployment/StatefulSet/DaemonSet of a release to be rolled out.
    #[serde(default = "default_rollout_timeout")]
    pub rollout_timeout_seconds: u64,
    /// A container of the new pods that stays in an image pull error, a crash loop or a
    /// configuration error for this long, at every look, fails the rollout before its
    /// deadline (kubectl only warns: such states can pass).
    #[serde(default = "default_stuck_seconds")]
    pub stuck_seconds: u64,
}

fn default_rollout_timeout() -> u64 {
    300
}

fn default_stuck_seconds() -> u64 {
    60
}

impl KubernetesApp {
    /// The namespace of the app on `site`.
    pub fn namespace_for(&self, site: &str) -> String {
        self.namespace.replace("{site}", site)
    }
}

/// A Docker host: the Engine API over a local socket, or over TCP with mutual TLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerCloud {
    /// `unix:///var/run/docker.sock` (the default) or `tcp://HOST:2376` (needs `tls`).
    #[serde(default = "default_docker_host")]
    pub host: String,
    /// Client certificate, key and the CA that signed the daemon's certificate, as `file:`
    /// secret references (relative to the inventory file).
    #[serde(default)]
    pub tls: Option<DockerTls>,
    /// Deadline of each Engine API call (pulls and health waits have their own).
    #[serde(default = "default_docker_timeout")]
    pub timeout_seconds: u64,
    /// Credentials for private registries (ECR, GHCR, Harbor...): the engine does not read
    /// the client's Docker config, so a pull carries them (`X-Registry-Auth`).
    #[serde(default)]
    pub registries: Vec<RegistryLogin>,
}

/// A registry login: the registry host as images name it (`ghcr.io`,
/// `123456789012.dkr.ecr.eu-west-1.amazonaws.com`, `harbor.lab:5000`), and the user and
/// password as secret references (`env:`/`file:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryLogin {
    pub server: String,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerTls {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

fn default_docker_host() -> String {
    "unix:///var/run/docker.sock".into()
}

fn default_docker_timeout() -> u64 {
    60
}

/// How a Docker app's container is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerApp {
    /// Image reference; `{version}` is replaced by the version deployed (`lab/web:{version}`).
    pub image: String,
    #[serde(default)]
    pub pull: PullPolicy,
    /// Command (argv form) replacing the image's default command.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Published ports, `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Mounts, `VOLUME_NAME:/path[:ro]` (named volume, never removed by ferry) or
    /// `/host/path:/path[:ro]`.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Networks the container joins (they must exist); the app id is its alias on each.
    #[serde(default)]
    pub networks: Vec<String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub memory_mb: Option<u64>,
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Docker's own health check; ferry also waits for Docker's health status when the image
    /// defines one.
    #[serde(default)]
    pub healthcheck: Option<DockerHealthcheck>,
    /// Tera template rendered to `KEY=VALUE` lines: the container's environment (with `env`
    /// and, at apply time only, `secrets`).
    #[serde(default)]
    pub env_template: Option<String>,
    /// `start-first`: the new container is started and healthy before the old one stops (no
    /// downtime; cannot publish host ports). `stop-first`: the old one stops first.
    #[serde(default)]
    pub strategy: UpdateOrder,
    /// Seconds a container is given to stop before it is killed.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_seconds: u32,
}

fn default_stop_timeout() -> u32 {
    10
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// The image must already be on the Docker host; checked when the plan is made.
    Never,
    #[default]
    IfMissing,
    Always,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    Always,
    #[default]
    UnlessStopped,
    OnFailure,
}

impl RestartPolicy {
    /// The name the Engine API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::OnFailure => "on-failure",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    #[default]
    StartFirst,
    StopFirst,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerHealthcheck {
    /// Command (argv form) run inside the container; exit status 0 means healthy.
    pub test: Vec<String>,
    #[serde(default = "default_docker_hc_interval")]
    pub interval_ms: u64,
    #[serde(default = "default_docker_hc_interval")]
    pub timeout_ms: u64,
    #[serde(default = "default_docker_hc_retries")]
    pub retries: u32,
    /// Time the container gets to start before failed probes count (Docker's
    /// `start_period`); 0: none.
    #[serde(default)]
    pub start_period_ms: u64,
}

fn default_docker_hc_interval() -> u64 {
    1000
}

fn default_docker_hc_retries() -> u32 {
    3
}

/// The embedded local target: releases are unpacked below `root`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalCloud {
    /// Directory holding one folder per app; relative paths are relative to the inventory file.
    pub root: String,
}

/// Where an app runs on each of its sites.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// The site's `local` cloud.
    Local,
    /// The site's `docker` cloud.
    Docker,
    /// The site's `kubernetes` cloud.
    Kubernetes,
    /// Every hardware endpoint of the site, over SSH.
    Ssh,
    /// A database's RDS instance (`databases`): the target of snapshot and restore steps,
    /// never of an app.
    Rds,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Local => "local",
            TargetKind::Docker => "docker",
            TargetKind::Kubernetes => "kubernetes",
            TargetKind::Ssh => "ssh",
            TargetKind::Rds => "rds",
        }
    }

    /// The cloud kind that hosts this target kind, if it is a cloud.
    pub fn cloud_kind(self) -> Option<CloudKind> {
        match self {
            TargetKind::Local => Some(CloudKind::Local),
            TargetKind::Docker => Some(CloudKind::Docker),
            TargetKind::Kubernetes => Some(CloudKind::Kubernetes),
            TargetKind::Ssh => None,
            TargetKind::Rds => Some(CloudKind::Aws),
        }
    }
}

/// An application and the version of record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub id: String,
    /// The version of record; release plans move sites to other versions.
    pub version: String,
    /// Release artifact; `{version}` is replaced by the version being deployed. A directory, or
    /// for `ssh` targets also a `.tar.gz`; relative paths are relative to the inventory file.
    /// Docker apps name an image in `docker.image` instead.
    #[serde(default)]
    pub artifact: String,
    pub target: TargetKind,
    /// Sites (by id) where this app is installed.
    pub sites: Vec<String>,
    /// Required but for `docker` apps that have a `docker.healthcheck`.
    #[serde(default)]
    pub health_check: HealthCheck,
    /// Command run in the app directory after the switch (argv form).
    #[serde(default)]
    pub restart: Option<Vec<String>>,
    /// Apps (by id) that must be released before this one on the same site.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Configuration files rendered from Tera templates into each release.
    #[serde(default)]
    pub config: Vec<ConfigTemplate>,
    /// Plain environment for the app's commands.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secret environment: name -> secret reference (`env:NAME` or `file:PATH`). Values are
    /// resolved at apply time only and never written to plans, logs or the ledger.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// How many releases to keep on a target (at least 2, so back-out is possible).
    #[serde(default = "default_keep_releases")]
    pub keep_releases: u32,
    /// For `docker` targets: the image and how its container is made.
    #[serde(default)]
    pub docker: Option<DockerApp>,
    /// For `kubernetes` targets: the manifests and their namespace.
    #[serde(default)]
    pub kubernetes: Option<KubernetesApp>,
    /// Major versions that run side by side on the same sites, each its own release line
    /// (`APP@MAJOR` in plans: its own release directory, container or Kubernetes release,
    /// history and back-out). Empty: one line.
    #[serde(default)]
    pub lines: Vec<Line>,
    /// A version catalog with a lifecycle (`ferry versions`): release plans deploy only
    /// active versions whose artifact is one of their revisions. Absent: any version.
    #[serde(default)]
    pub lifecycle: Option<Lifecycle>,
    /// Set on the app of one line (`ecrnow@3`) made from an app with `lines`.
    #[serde(skip)]
    #[schemars(skip)]
    pub line: Option<u64>,
}

impl App {
    /// The app the line belongs to (`ecrnow` for `ecrnow@3`), or the app itself.
    pub fn base_id(&self) -> &str {
        self.id.split_once('@').map_or(self.id.as_str(), |(b, _)| b)
    }
}

/// An app's id where `@` is not allowed (a container name or network alias, a Kubernetes label
/// value or object name): one line of an app (`ecrnow@3`) is `ecrnow-v3`.
pub fn resource_name(app_id: &str) -> String {
    app_id.replace('@', "-v")
}

/// The major version of a version string: its leading digits (`3` of `3.0.1`, `v3.1`).
pub fn major_of(version: &str) -> Option<u64> {
    let digits: String = version
        .trim_start_matches(['v', 'V'])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// An app's version lifecycle rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// How version ids are written: `semver` (`3.1.0`) or `template` (`concept.lang.vN`).
    #[serde(default)]
    pub scheme: crate::versions::Scheme,
    /// Majors of one lineage active at once (the previous and the latest, by default).
    #[serde(default = "default_max_active_majors")]
    pub max_active_majors: u32,
    /// The role (held by approvers of the inventory) whose signed approval a purge needs.
    /// Without it, nothing of this app can be purged.
    #[serde(default)]
    pub purge_role: Option<String>,
    /// The catalog's name when several apps (the same artifacts on local and ssh targets,
    /// say) share one; default: the app's id.
    #[serde(default)]
    pub catalog: Option<String>,
}

impl App {
    /// The version catalog the app's versions are kept in, if it has a lifecycle.
    pub fn catalog(&self) -> Option<&str> {
        self.lifecycle
            .as_ref()
            .map(|l| l.catalog.as_deref().unwrap_or(self.base_id()))
    }
}

impl Lifecycle {
    pub fn policy(&self) -> crate::versions::Policy {
        crate::versions::Policy {
            scheme: self.scheme,
            max_active_majors: self.max_active_majors,
        }
    }
}

fn default_max_active_majors() -> u32 {
    2
}

/// One major version line of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub major: u64,
}

fn default_keep_releases() -> u32 {
    5
}

/// How ferry decides that a release is healthy: a command, or an HTTP GET, run where the app
/// runs (on the endpoint for `ssh`, inside the container for `docker`), retried until
/// `timeout_seconds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Command (argv form) run in the release directory; exit status 0 means healthy.
    #[serde(default)]
    pub command: Vec<String>,
    /// URL that must answer 2xx (checked with curl, or wget where curl is missing).
    #[serde(default)]
    pub http: Option<String>,
    /// Deadline for the check to pass, retried until then.
    #[serde(default = "default_health_timeout")]
    pub timeout_seconds: u64,
    #[serde(default = "default_health_interval")]
    pub interval_ms: u64,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            command: Vec::new(),
            http: None,
            timeout_seconds: default_health_timeout(),
            interval_ms: default_health_interval(),
        }
    }
}

impl HealthCheck {
    /// The command that performs the check.
    /// wget gets no `-T`: Debian's static busybox (the wget of many small images) crashes
    /// with SIGSEGV on it; every attempt is bounded by ferry's own deadline instead.
    pub fn argv(&self) -> Vec<String> {
        match &self.http {
            Some(url) => vec![
                "sh".into(),
                "-c".into(),
                r#"if command -v curl >/dev/null 2>&1; then exec curl -fsS -o /dev/null --max-time 10 "$1"; else exec wget -q -O /dev/null "$1"; fi"#.into(),
                "ferry-http-check".into(),
                url.clone(),
            ],
            None => self.command.clone(),
        }
    }
}

fn default_health_timeout() -> u64 {
    30
}

fn default_health_interval() -> u64 {
    500
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigTemplate {
    /// Template path, relative to the inventory file.
    pub template: String,
    /// Destination path inside the release directory.
    pub dest: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub id: String,
    /// The AWS cloud of an RDS instance.
    #[serde(default)]
    pub cloud: String,
    pub engine: String,
    /// RDS DB instance identifier.
    #[serde(default)]
    pub identifier: String,
    #[serde(default)]
    pub site: Option<String>,
    /// How ferry connects to it with SQL (condition gates, `record` probes): a plain
    /// PostgreSQL database, or the SQL side of an RDS entry. A database is RDS (`cloud` and
    /// `identifier`), reachable by SQL (`postgres`), or both.
    #[serde(default)]
    pub postgres: Option<PostgresConnection>,
    /// How many of ferry's own snapshots of the instance `ferry snapshot prune` keeps (the
    /// newest); manual snapshots count toward the region's quota.
    #[serde(default)]
    pub snapshot_retention: Option<u32>,
}

impl Database {
    /// Whether this entry is an RDS instance (snapshots, restores...).
    pub fn is_rds(&self) -> bool {
        !self.cloud.is_empty() || !self.identifier.is_empty()
    }
}

/// A PostgreSQL connection; the password is a secret reference, never a literal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresConnection {
    pub host: String,
    #[serde(default = "pg_port")]
    pub port: u16,
    pub dbname: String,
    pub user: String,
    /// `env:NAME` or `file:PATH`.
    #[serde(default)]
    pub password: Option<String>,
    /// Deadline for connecting and for each query.
    #[serde(default = "ten_s")]
    pub timeout: String,
    /// `verify-full` (the default): TLS, the server's certificate checked against the system's
    /// roots and `ca_file`, and its name against `host`; `disable`: plain TCP (loopback, a
    /// private test network).
    #[serde(default)]
    pub tls: PgTls,
    /// PEM file of the CA that signed the server's certificate (the RDS CA bundle, a site's own
    /// CA), relative to the inventory file.
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// How a PostgreSQL connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PgTls {
    #[default]
    VerifyFull,
    Disable,
}

fn pg_port() -> u16 {
    5432
}

fn ten_s() -> String {
    "10s".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub id: String,
    pub cloud: String,
    pub name: String,
    #[serde(default)]
    pub site: Option<String>,
}

impl Inventory {
    fn indexed(&self) -> &Indexed {
        self.index.0.get_or_init(|| Indexed {
            sites: positions(self.sites.iter().map(|s| s.id.as_str())),
            apps: positions(self.apps.iter().map(|a| a.id.as_str())),
            clouds: positions(self.clouds.iter().map(|c| c.id.as_str())),
            endpoints: positions(self.endpoints.iter().map(|e| e.id.as_str())),
            databases: positions(self.databases.iter().map(|d| d.id.as_str())),
            app_sites: self
                .apps
                .iter()
                .map(|a| a.sites.iter().cloned().collect())
                .collect(),
        })
    }
    pub fn site(&self, id: &str) -> Option<&Site> {
        self.indexed().sites.get(id).map(|&i| &self.sites[i])
    }
    pub fn app(&self, id: &str) -> Option<&App> {
        self.indexed().apps.get(id).map(|&i| &self.apps[i])
    }
    pub fn cloud(&self, id: &str) -> Option<&Cloud> {
        self.indexed().clouds.get(id).map(|&i| &self.clouds[i])
    }
    pub fn endpoint(&self, id: &str) -> Option<&Endpoint> {
        self.indexed()
            .endpoints
            .get(id)
            .map(|&i| &self.endpoints[i])
    }
    pub fn bucket(&self, id: &str) -> Option<&Bucket> {
        self.buckets.iter().find(|b| b.id == id)
    }
    pub fn database(&self, id: &str) -> Option<&Database> {
        self.indexed()
            .databases
            .get(id)
            .map(|&i| &self.databases[i])
    }
    /// The inventory with each app that has `lines` replaced by one app per line, named
    /// `APP@MAJOR` (what plans, targets and the ledger name), so that every later step treats a
    /// line as an app of its own. Called once the inventory is validated.
    pub fn with_lines(mut self) -> Self {
        let apps = std::mem::take(&mut self.apps);
        for app in apps {
            if app.lines.is_empty() {
                self.apps.push(app);
                continue;
            }
            for line in &app.lines {
                let mut one = app.clone();
                one.id = format!("{}@{}", app.id, line.major);
                one.lines = Vec::new();
                one.line = Some(line.major);
                self.apps.push(one);
            }
        }
        // Apps that depend on a lined app depend on each of its lines.
        let lined: BTreeMap<String, Vec<String>> = self
            .apps
            .iter()
            .filter_map(|a| {
                let (base, _) = a.id.split_once('@')?;
                Some((base.to_owned(), a.id.clone()))
            })
            .fold(BTreeMap::new(), |mut m, (b, id)| {
                m.entry(b).or_insert_with(Vec::new).push(id);
                m
            });
        for app in &mut self.apps {
            app.depends_on = app
                .depends_on
                .iter()
                .flat_map(|d| lined.get(d).cloned().unwrap_or_else(|| vec![d.clone()]))
                .collect();
        }
        self.index = Index::default();
        self
    }

    /// Whether app `app_id` runs on `site_id`.
    pub fn app_on_site(&self, app_id: &str, site_id: &str) -> bool {
        let ix = self.indexed();
        ix.apps
            .get(app_id)
            .is_some_and(|&i| ix.app_sites[i].contains(site_id))
    }
}

//! `ferry publish`: a channel's next signed version. The root is made on first use (the
//! publishing key for every role); after that the key must be the root's. Artifacts are
//! immutable: a version already published with other bytes is refused.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tough::editor::RepositoryEditor;
use tough::editor::signed::SignedRole;
use tough::key_source::KeySource;
use tough::schema::{KeyHolder, RoleKeys, RoleType, Root};
use tough::sign::Sign;

use super::{ChannelKey, Desired};

/// One site's desired state and the files its artifacts come from.
#[derive(Debug, Clone)]
pub struct SiteRelease {
    pub desired: Desired,
    /// Each artifact's target name and its packed `.tar.gz`.
    pub artifacts: Vec<(String, PathBuf)>,
}

/// What a publish wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    pub channel: String,
    /// The version of targets, snapshot and timestamp now (one more than before).
    pub version: u64,
    pub expires: String,
    pub sites: Vec<String>,
    pub targets: usize,
    pub root_created: bool,
    /// Files uploaded to the channel's bucket, when it is kept in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploaded: Option<usize>,
}

fn err(what: &str) -> impl Fn(tough::error::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Writes `sites` to the channel at `dir` as its next version (one more than both the
/// folder's and `published_before`, the last the publisher recorded: a folder rolled back
/// does not make it reuse a number), signed with `seed`, valid for `expires` from now.
pub async fn publish(
    dir: &Path,
    seed: [u8; 32],
    expires: chrono::Duration,
    sites: &[SiteRelease],
    published_before: u64,
) -> Result<Published, String> {
    let meta = dir.join("metadata");
    let targets = dir.join("targets");
    for d in [&meta, &targets] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let keys: Vec<Box<dyn KeySource>> = vec![Box::new(ChannelKey(seed))];
    let root_created = ensure_root(&meta, seed, &keys).await?;
    for s in sites {
        for (name, src) in &s.artifacts {
            place_artifact(&targets, name, src)?;
        }
        let doc = serde_json::to_vec_pretty(&s.desired).expect("serializes");
        let path = targets.join(super::site_target(&s.desired.site));
        write_file(&path, &doc)?;
    }
    let mut editor = RepositoryEditor::new(meta.join("root.json"))
        .await
        .map_err(err("root.json"))?;
    let mut count = 0;
    for (name, path) in files_under(&targets)? {
        let (_, target) = RepositoryEditor::build_target(&path)
            .await
            .map_err(err(&name))?;
        editor
            .add_target(name.as_str(), target)
            .map_err(err(&name))?;
        count += 1;
    }
    let version = previous_version(&meta).max(published_before) + 1;
    let v = NonZeroU64::new(version).expect("above 0");
    let until = chrono::Utc::now() + expires;
    editor
        .targets_version(v)
        .map_err(err("targets"))?
        .targets_expires(until)
        .map_err(err("targets"))?
        .snapshot_version(v)
        .snapshot_expires(until)
        .timestamp_version(v)
        .timestamp_expires(until);
    let signed = editor.sign(&keys).await.map_err(err("signing"))?;
    signed.write(&meta).await.map_err(err("writing metadata"))?;
    Ok(Published {
        channel: dir.display().to_string(),
        version,
        expires: until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        sites: sites.iter().map(|s| s.desired.site.clone()).collect(),
        targets: count,
        root_created,
        uploaded: None,
    })
}

/// The channel's root: made with `seed`'s key for every role if there is none; otherwise it
/// must trust that key (a publisher with another key is refused).
async fn ensure_root(
    meta: &Path,
    seed: [u8; 32],
    keys: &[Box<dyn KeySource>],
) -> Result<bool, String> {
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|e| format!("channel key: {e}"))?;
    let key = pair.tuf_key();
    let id = key.key_id().map_err(|e| format!("channel key: {e}"))?;
    let path = meta.join("root.json");
    if path.exists() {
        let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let root: tough::schema::Signed<Root> =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if !root.signed.keys.contains_key(&id) {
            return Err(format!(
                "{}: this key is not one the channel's root trusts; publish with the channel's key",
                path.display()
            ));
        }
        return Ok(false);
    }
    let role = || RoleKeys {
        keyids: vec![id.clone()],
        threshold: NonZeroU64::MIN,
        _extra: HashMap::new(),
    };
    let root = Root {
        spec_version: "1.0.0".into(),
        consistent_snapshot: false,
        version: NonZeroU64::MIN,
        expires: chrono::Utc::now() + chrono::Duration::days(365 * 5),
        keys: HashMap::from([(id.clone(), key)]),
        roles: HashMap::from([
            (RoleType::Root, role()),
            (RoleType::Snapshot, role()),
            (RoleType::Targets, role()),
            (RoleType::Timestamp, role()),
        ]),
        _extra: HashMap::new(),
    };
    let holder = KeyHolder::Root(root.clone());
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let signed = SignedRole::new(root, &holder, keys, &rng)
        .await
        .map_err(err("signing the root"))?;
    write_file(&meta.join("1.root.json"), signed.buffer())?;
    write_file(&path, signed.buffer())?;
    Ok(true)
}

/// Copies a packed artifact in; one already there must be the same bytes.
fn place_artifact(targets: &Path, name: &str, src: &Path) -> Result<(), String> {
    let dest = targets.join(name);
    let bytes = std::fs::read(src).map_err(|e| format!("{}: {e}", src.display()))?;
    match std::fs::read(&dest) {
        Ok(old) if old == bytes => Ok(()),
        Ok(_) => Err(format!(
            "{name} is already published with other content: a published version is immutable (publish a new version)"
        )),
        Err(_) => write_file(&dest, &bytes),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    crate::durable::write_atomic(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every file under `dir`, as (target name with `/`, path), sorted.
fn files_under(dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        for e in rd.filter_map(Result::ok) {
            let p = e.path();
            let ft = e.file_type().map_err(|e| format!("{}: {e}", p.display()))?;
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let rel = p.strip_prefix(dir).expect("under dir");
                let name = rel.to_string_lossy().replace('\\', "/");
                out.push((name, p));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The timestamp's version now (0: never published).
fn previous_version(meta: &Path) -> u64 {
    std::fs::read(meta.join("timestamp.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["signed"]["version"].as_u64())
        .unwrap_or(0)
}

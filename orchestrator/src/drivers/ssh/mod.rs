//! The SSH driver: releases on on-premise endpoints, over real SSH (russh), with strict
//! host-key checking, optional jump host, and the same release layout as the local target.
//!
//! One connection per endpoint is kept for the life of the driver and reused by every verb;
//! a broken connection is dropped and made again on the next use. Every remote action has a
//! deadline, so an endpoint that disappears mid-wave is a failure, never a hang.

pub mod known_hosts;
mod script;
pub mod session;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

pub use crate::drivers::endpoints::SshTarget;
pub use session::{HostSpec, Session, SshError};

use super::health::{Attempt, until_healthy};
use super::{Driver, DriverError, ReleaseBundle, ReleaseMarker, TargetSpec, redact};
use crate::artifact;
use crate::plan::Undo;
use crate::target::Observed;

#[derive(Debug, Clone, Copy)]
enum HookKind {
    Restart,
    Health,
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<Session>>>>;

/// A release tarball and its SHA-256, packed once for every endpoint that receives it.
type PackedCell = tokio::sync::OnceCell<Arc<(Vec<u8>, String)>>;
type Packed = Arc<PackedCell>;

#[derive(Default)]
pub struct SshDriver {
    pool: Mutex<HashMap<String, Slot>>,
    /// The release markers the last observation of an app directory saw (version → marker
    /// line), keyed by endpoint and directory: the next apply there uses them instead of a
    /// preflight round trip, once. A stale entry is safe: a release it says is there but is
    /// gone makes the switch exit 4, and the release is uploaded after all; one it missed is
    /// uploaded again.
    seen: Mutex<HashMap<String, BTreeMap<String, String>>>,
    /// Tarballs being packed or sent, by their content (artifact, rendered files, marker):
    /// the endpoints of a wave that receive the same release share one, packed once instead
    /// of once per endpoint. Held weakly, so a tarball lives only while an upload uses it.
    packing: Mutex<HashMap<String, std::sync::Weak<PackedCell>>>,
}

/// What makes two tarballs the same: the artifact's path and planned digest, every rendered
/// file (lengths first, so no two lists encode alike) and the marker.
fn pack_key(release: &ReleaseBundle, marker: &str) -> String {
    let mut s = format!(
        "{}\0{}\0{}\0",
        release.artifact.display(),
        release.artifact_sha256,
        marker
    );
    for f in &release.files {
        s.push_str(&format!(
            "{}:{}:{}:{}\0",
            f.dest.len(),
            f.dest,
            f.contents.len(),
            f.contents
        ));
    }
    crate::load::sha256_hex(s.as_bytes())
}

fn seen_key(t: &SshTarget, dir: &str) -> String {
    format!("{}\0{dir}", t.host.id)
}

/// The `marker=VERSION JSON` lines of an observation.
fn markers_of(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("marker="))
        .filter_map(|l| l.split_once(' '))
        .map(|(v, m)| (v.to_owned(), m.to_owned()))
        .collect()
}

fn ssh_of(spec: &TargetSpec) -> Result<&SshTarget, DriverError> {
    spec.ssh.as_ref().ok_or_else(|| DriverError::Failed {
        target: spec.target.id.clone(),
        action: "resolve",
        message: "no SSH endpoint for this target".into(),
    })
}

fn app_dir(t: &SshTarget, spec: &TargetSpec) -> String {
    format!("{}/{}", t.root.trim_end_matches('/'), spec.target.app)
}

/// The release as one gzipped tarball: the artifact (a directory, or a .tar.gz whose entries
/// are copied), then the rendered files, then the release marker (last, so a release with a
/// marker is complete). The artifact is hashed while it is packed, in the same pass, so what
/// is sent is what matches the planned digest; every header is made by ferry (mode 0644/0755,
/// owner 0, no setuid), whatever the artifact's own headers said. Returns the tarball and the
/// artifact's digest as packed.
fn pack(
    path: &std::path::Path,
    files: &[super::RenderedFile],
    marker: &str,
) -> Result<(Vec<u8>, String), artifact::ArtifactError> {
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(enc);
    tar.follow_symlinks(false);
    let mut add = |rel: &std::path::Path, item: artifact::Item<'_>, mtime: u64| {
        append(&mut tar, rel, item, mtime)
    };
    let (digest, tree) = if path.is_file() {
        artifact::read_tarball(path, &mut add)?
    } else {
        let mut with_mtime = |rel: &std::path::Path, item: artifact::Item<'_>| {
            let mtime = std::fs::symlink_metadata(path.join(rel))
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            add(rel, item, mtime)
        };
        let tree = artifact::walk_hashed(path, &mut with_mtime)?;
        (artifact::tree_digest(&tree), tree)
    };
    let io = |source| artifact::ArtifactError::Io {
        path: "release tarball".into(),
        source,
    };
    for f in files {
        artifact::check_dest(&tree, &f.dest)?;
        let mut data = f.contents.as_bytes();
        append(
            &mut tar,
            std::path::Path::new(&f.dest),
            artifact::Item::File {
                exec: false,
                reader: &mut data,
            },
            0,
        )
        .map_err(io)?;
    }
    let mut data = marker.as_bytes();
    append(
        &mut tar,
        std::path::Path::new(script::MARKER),
        artifact::Item::File {
            exec: false,
            reader: &mut data,
        },
        0,
    )
    .map_err(io)?;
    let bytes = tar.into_inner().and_then(|e| e.finish()).map_err(io)?;
    Ok((bytes, digest))
}

/// Appends one entry with a header of ferry's own. A file's content is read whole first, so
/// the header's size is what follows it even if the file changes meanwhile (the digest then
/// differs, and the release is refused).
fn append<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    rel: &std::path::Path,
    item: artifact::Item<'_>,
    mtime: u64,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    match item {
        artifact::Item::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, rel, std::io::empty())
        }
        artifact::Item::Link(target) => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, rel, target)
        }
        artifact::Item::File { exec, reader } => {
            let mut data = Vec::new();
            reader.read_to_end(&mut data)?;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if exec { 0o755 } else { 0o644 });
            header.set_size(data.len() as u64);
            tar.append_data(&mut header, rel, data.as_slice())
        }
    }
}

impl SshDriver {
    pub fn new() -> Self {
        Self::default()
    }

    async fn session(&self, t: &SshTarget) -> Result<Arc<Session>, SshError> {
        let slot = self
            .pool
            .lock()
            .expect("pool lock")
            .entry(t.host.id.clone())
            .or_default()
            .clone();
        let mut guard = slot.lock().await;
        if let Some(s) = guard.as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let s = Arc::new(Session::connect(&t.host, t.jump.as_ref()).await?);
        *guard = Some(s.clone());
        Ok(s)
    }

    /// The shared tarball cell for `key`: the one an endpoint is packing or sending now, or a
    /// new one (dead cells are swept as new ones are made).
    fn packing_cell(&self, key: String) -> Packed {
        let mut map = self.packing.lock().expect("packing lock");
        if let Some(cell) = map.get(&key).and_then(std::sync::Weak::upgrade) {
            return cell;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let cell = Packed::default();
        map.insert(key, Arc::downgrade(&cell));
        cell
    }

    /// Packs the release (off the async threads) and checks that the artifact packed is the
    /// one planned; returns the tarball and its SHA-256.
    async fn pack_checked(
        spec: &TargetSpec,
        release: &ReleaseBundle,
        marker: String,
    ) -> Result<Arc<(Vec<u8>, String)>, DriverError> {
        let path = release.artifact.clone();
        let expected = release.artifact_sha256.clone();
        let target = spec.target.id.clone();
        let files = release.files.clone();
        tokio::task::spawn_blocking(move || -> Result<Arc<(Vec<u8>, String)>, DriverError> {
            let (bytes, found) = pack(&path, &files, &marker).map_err(|e| DriverError::Failed {
                target: target.clone(),
                action: "pack release",
                message: format!("{}: {e}", path.display()),
            })?;
            if found != expected {
                return Err(DriverError::ArtifactChanged {
                    target: target.clone(),
                    path: path.display().to_string(),
                    expected,
                    found,
                });
            }
            let sha = crate::load::sha256_hex(&bytes);
            Ok(Arc::new((bytes, sha)))
        })
        .await
        .map_err(|e| DriverError::Failed {
            target: spec.target.id.clone(),
            action: "pack release",
            message: e.to_string(),
        })?
    }

    fn forget(&self, t: &SshTarget) {
        self.pool.lock().expect("pool lock").remove(&t.host.id);
    }

    fn transport(&self, t: &SshTarget, e: SshError) -> DriverError {
        self.forget(t);
        DriverError::Ssh(Box::new(e))
    }

    /// Runs a script; a transport failure drops the pooled connection.
    async fn run(
        &self,
        spec: &TargetSpec,
        script: &str,
        timeout: Duration,
    ) -> Result<session::Output, DriverError> {
        let t = ssh_of(spec)?;
        let started = Instant::now();
        let s = self.session(t).await.map_err(|e| self.transport(t, e))?;
        let connected = started.elapsed();
        let out = s
            .run(script, timeout)
            .await
            .map_err(|e| self.transport(t, e));
        tracing::debug!(endpoint = %t.host.id, connect_ms = connected.as_millis() as u64, total_ms = started.elapsed().as_millis() as u64, what = script.lines().find(|l| l.starts_with("A=") || l.starts_with("cd ") || l.starts_with("cur=")).unwrap_or_default(), "remote command");
        out
    }

    /// Runs a script that must succeed; returns its stdout.
    async fn must(
        &self,
        spec: &TargetSpec,
        action: &'static str,
        script: &str,
    ) -> Result<String, DriverError> {
        let t = ssh_of(spec)?;
        let out = self.run(spec, script, t.command_timeout).await?;
        if out.code == Some(0) {
            Ok(out.stdout)
        } else {
            let detail = redact(
                out.stderr.trim(),
                spec.secrets.iter().map(|(_, s)| s.expose()),
            );
            Err(DriverError::Failed {
                target: spec.target.id.clone(),
                action,
                message: format!("{}: {detail}", exit_text(out.code)),
            })
        }
    }

    /// Runs an app command (restart or health) with its environment; output redacted.
    async fn hook(
        &self,
        spec: &TargetSpec,
        kind: HookKind,
        argv: &[String],
        version: &str,
        timeout: Duration,
    ) -> Result<session::Output, DriverError> {
        let t = ssh_of(spec)?;
        let mut env: Vec<(&str, &str)> = vec![
            ("FERRY_APP", spec.target.app.as_str()),
            ("FERRY_SITE", spec.target.site.as_str()),
            ("FERRY_VERSION", version),
        ];
        env.extend(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        env.extend(spec.secrets.iter().map(|(k, v)| (k.as_str(), v.expose())));
        let dir = app_dir(t, spec);
        let text = match kind {
            HookKind::Restart => script::hook(&dir, &env, argv),
            HookKind::Health => script::health(&dir, version, &env, argv),
        }
        .map_err(|e| DriverError::Failed {
            target: spec.target.id.clone(),
            action: "prepare command",
            message: e.to_string(),
        })?;
        let mut out = self.run(spec, &text, timeout).await?;
        let secrets = || spec.secrets.iter().map(|(_, s)| s.expose());
        out.stderr = redact(&out.stderr, secrets());
        out.stdout = redact(&out.stdout, secrets());
        Ok(out)
    }

    async fn restart(&self, spec: &TargetSpec, version: &str) -> Result<(), DriverError> {
        if let Some(argv) = &spec.app.restart {
            let out = self
                .hook(
                    spec,
                    HookKind::Restart,
                    argv,
                    version,
                    Duration::from_secs(spec.app.health_check.timeout_seconds),
                )
                .await?;
            if out.code != Some(0) {
                return Err(DriverError::Failed {
                    target: spec.target.id.clone(),
                    action: "restart",
                    message: format!("{}: {}", exit_text(out.code), tail(&out)),
                });
            }
        }
        Ok(())
    }

    /// Runs a switch script (exit 4: the release is not there), then restarts the app.
    async fn switch_with(
        &self,
        spec: &TargetSpec,
        script: &str,
        version: &str,
    ) -> Result<(), DriverError> {
        let t = ssh_of(spec)?;
        spec.check_fence()?;
        let out = self.run(spec, script, t.command_timeout).await?;
        match out.code {
            Some(0) => {}
            Some(4) => {
                return Err(DriverError::MissingRelease {
                    target: spec.target.id.clone(),
                    version: version.to_owned(),
                });
            }
            c => {
                return Err(DriverError::Failed {
                    target: spec.target.id.clone(),
                    action: "install and switch",
                    message: format!("{}: {}", exit_text(c), out.stderr.trim()),
                });
            }
        }
        self.restart(spec, version).await
    }
}

/// `exit 3`, or what it means that there was no exit status.
fn exit_text(code: Option<u32>) -> String {
    code.map_or_else(
        || "no exit status (the command was killed or the connection dropped)".to_owned(),
        |c| format!("exit {c}"),
    )
}

fn tail(out: &session::Output) -> String {
    let t = format!("{}{}", out.stderr, out.stdout);
    let t = t.trim();
    let start = t.char_indices().rev().nth(400).map_or(0, |(i, _)| i);
    t[start..].to_owned()
}

fn parse_observation(stdout: &str) -> Observed {
    let mut o = Observed::default();
    let mut facts = BTreeMap::new();
    let num = |v: &str| v.trim().parse::<u64>().unwrap_or(0);
    for line in stdout.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "current" if !v.is_empty() => o.current = Some(v.to_owned()),
            "release" => o.releases.push(v.to_owned()),
            "cpus" => {
                facts.insert("cpus".into(), v.trim().to_owned());
            }
            "memory_kb" => {
                facts.insert("memory_mb".into(), (num(v) / 1024).to_string());
            }
            "disk_total_kb" => {
                facts.insert("disk_gb".into(), (num(v) / (1024 * 1024)).to_string());
            }
            "disk_free_kb" => {
                facts.insert("disk_free_gb".into(), (num(v) / (1024 * 1024)).to_string());
            }
            "os" => {
                facts.insert("os".into(), v.trim().to_owned());
            }
            _ => {}
        }
    }
    o.releases.sort();
    o.facts = facts;
    o
}

#[async_trait]
impl Driver for SshDriver {
    async fn observe(&self, spec: &TargetSpec) -> Result<Observed, DriverError> {
        let t = ssh_of(spec)?;
        let dir = app_dir(t, spec);
        let stdout = self
            .must(spec, "observe", &script::observe(&dir, &t.root))
            .await?;
        self.seen
            .lock()
            .expect("seen lock")
            .insert(seen_key(t, &dir), markers_of(&stdout));
        Ok(parse_observation(&stdout))
    }

    async fn apply(&self, spec: &TargetSpec, release: &ReleaseBundle) -> Result<(), DriverError> {
        // Round trips are what a deploy costs (sshd spends ~0.1 s on each command), so a step
        // after an observation is two of them: upload+install+switch+prune, and health (in
        // verify); without one, a preflight first asks whether the release is there.
        let t = ssh_of(spec)?;
        let dir = app_dir(t, spec);
        let seen = self
            .seen
            .lock()
            .expect("seen lock")
            .remove(&seen_key(t, &dir));
        let present: Option<ReleaseMarker> = match &seen {
            Some(markers) => markers
                .get(&release.version)
                .and_then(|m| serde_json::from_str(m).ok()),
            None => {
                let pre = self
                    .must(
                        spec,
                        "preflight",
                        &script::preflight(&dir, &release.version),
                    )
                    .await?;
                serde_json::from_str(pre.trim()).ok()
            }
        };
        let wanted = ReleaseMarker::for_bundle(release);
        if present.is_some_and(|m| m.same_content(&wanted)) {
            let text = script::switch_and_prune(&dir, &release.version, spec.app.keep_releases);
            match self.switch_with(spec, &text, &release.version).await {
                // Seen there, gone since: uploaded after all.
                Err(DriverError::MissingRelease { .. }) if seen.is_some() => {}
                done => return done,
            }
        }
        let marker = serde_json::to_string(&wanted).expect("marker serializes");
        let cell = self.packing_cell(pack_key(release, &marker));
        let packed = cell
            .get_or_try_init(|| Self::pack_checked(spec, release, marker))
            .await?
            .clone();
        let (bytes, sha) = (&packed.0, &packed.1);
        let command = script::install(&dir, &release.version, sha, spec.app.keep_releases);
        spec.check_fence()?;
        let s = self.session(t).await.map_err(|e| self.transport(t, e))?;
        let out = s
            .exec_with_input(&command, bytes, "upload and install", t.command_timeout)
            .await
            .map_err(|e| self.transport(t, e))?;
        drop(cell);
        if out.code != Some(0) {
            return Err(DriverError::Failed {
                target: spec.target.id.clone(),
                action: "upload and install",
                message: format!("{}: {}", exit_text(out.code), out.stderr.trim()),
            });
        }
        self.restart(spec, &release.version).await
    }

    async fn verify(&self, spec: &TargetSpec, version: &str) -> Result<(), DriverError> {
        let hc = &spec.app.health_check;
        let argv = hc.argv();
        until_healthy(&spec.target.id, hc, |left| {
            let argv = &argv;
            async move {
                match self.hook(spec, HookKind::Health, argv, version, left).await {
                    Ok(out) if out.code == Some(0) => Attempt::Healthy,
                    // The health script exits 97 when `current` is another release.
                    Ok(out) if out.code == Some(97) => Attempt::Fatal(DriverError::Failed {
                        target: spec.target.id.clone(),
                        action: "verify",
                        message: format!("{}, expected {version}", out.stderr.trim()),
                    }),
                    Ok(out) => {
                        Attempt::Unhealthy(format!("{}: {}", exit_text(out.code), tail(&out)))
                    }
                    Err(DriverError::Ssh(e)) if matches!(*e, SshError::Timeout { .. }) => {
                        Attempt::TimedOut
                    }
                    Err(e) => Attempt::Fatal(e),
                }
            }
        })
        .await
    }

    async fn undo(&self, spec: &TargetSpec, undo: &Undo) -> Result<(), DriverError> {
        let t = ssh_of(spec)?;
        let dir = app_dir(t, spec);
        match undo {
            Undo::SwitchTo { version, .. } => {
                self.switch_with(spec, &script::switch(&dir, version), version)
                    .await?;
                self.verify(spec, version).await
            }
            Undo::Uninstall => {
                spec.check_fence()?;
                self.must(spec, "uninstall", &script::uninstall(&dir))
                    .await
                    .map(|_| ())
            }
            // Operation steps (snapshots) are never handed to a release driver.
            Undo::Keep => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the artifact's modes (setuid, group-writable), the tarball ferry sends has its
    /// own headers: 0755 or 0644, owner 0; what is packed is what is hashed.
    #[test]
    fn the_release_tarball_has_ferrys_own_headers() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("bin")).unwrap();
        std::fs::write(d.path().join("bin/run"), "x").unwrap();
        std::fs::write(d.path().join("data"), "y").unwrap();
        std::fs::set_permissions(
            d.path().join("bin/run"),
            std::fs::Permissions::from_mode(0o4775),
        )
        .unwrap();
        std::fs::set_permissions(
            d.path().join("data"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        let files = vec![crate::drivers::RenderedFile {
            dest: "bin/app.conf".into(),
            contents: "c".into(),
        }];
        let (bytes, digest) = pack(d.path(), &files, "{}").unwrap();
        assert_eq!(digest, artifact::digest(d.path()).unwrap());
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let mut modes = BTreeMap::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            modes.insert(e.path().unwrap().display().to_string(), h.mode().unwrap());
        }
        assert_eq!(modes["bin/run"], 0o755);
        assert_eq!(modes["data"], 0o644);
        assert_eq!(modes["bin/app.conf"], 0o644);
        assert!(modes.contains_key(script::MARKER));
    }

    #[test]
    fn observation_parses_releases_and_facts() {
        let o = parse_observation(
            "current=2.0\nrelease=1.0\nrelease=2.0\ncpus=4\nmemory_kb=8048576\ndisk_total_kb=209715200\ndisk_free_kb=104857600\nos=debian 12\n",
        );
        assert_eq!(o.current.as_deref(), Some("2.0"));
        assert_eq!(o.releases, ["1.0", "2.0"]);
        assert_eq!(o.facts["cpus"], "4");
        assert_eq!(o.facts["memory_mb"], "7859");
        assert_eq!(o.facts["disk_gb"], "200");
        assert_eq!(o.facts["disk_free_gb"], "100");
        assert_eq!(o.facts["os"], "debian 12");
        assert_eq!(parse_observation("current=\n").current, None);
    }
}

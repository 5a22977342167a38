//! The embedded local target: releases in a directory, switched by an atomic symlink.
//!
//! Layout under `<cloud.local.root>/<site>/<app>/`:
//! `releases/<version>/` (each with `.ferry-release.json` once complete), `current` ->
//! `releases/<version>`. A release is built in a staging folder and renamed into place, and
//! `current` is replaced by `rename(2)`, so a crash at any point leaves either the old or the
//! new release serving, never half of one.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use super::health::{Attempt, until_healthy};
use super::process::{RunError, run};
use super::{Driver, DriverError, MARKER_FILE, ReleaseBundle, ReleaseMarker, TargetSpec};
use crate::artifact;
use crate::plan::Undo;
use crate::target::Observed;

#[derive(Debug, Clone, Copy, Default)]
pub struct LocalDriver;

fn app_dir(spec: &TargetSpec) -> Result<PathBuf, DriverError> {
    let root = spec
        .cloud
        .as_ref()
        .and_then(|c| c.local.as_ref())
        .map(|l| l.root.clone())
        .ok_or_else(|| DriverError::Failed {
            target: spec.target.id.clone(),
            action: "resolve",
            message: "cloud has no `local` section".into(),
        })?;
    Ok(spec
        .base_dir
        .join(root)
        .join(&spec.target.site)
        .join(&spec.target.app))
}

fn io_err(
    spec: &TargetSpec,
    action: impl Into<String>,
) -> impl FnOnce(std::io::Error) -> DriverError {
    let target = spec.target.id.clone();
    let action = action.into();
    move |source| DriverError::Io {
        target,
        action,
        source,
    }
}

fn current_version(dir: &Path) -> Option<String> {
    let link = fs::read_link(dir.join("current")).ok()?;
    link.file_name().map(|n| n.to_string_lossy().into_owned())
}

fn read_marker(release: &Path) -> Option<ReleaseMarker> {
    serde_json::from_slice(&fs::read(release.join(MARKER_FILE)).ok()?).ok()
}

/// Points `current` at `releases/<version>` atomically, and makes the switch durable.
fn switch(dir: &Path, version: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(".current.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(Path::new("releases").join(version), &tmp)?;
    fs::rename(&tmp, dir.join("current"))?;
    fs::File::open(dir)?.sync_all()
}

fn build_release(
    spec: &TargetSpec,
    dir: &Path,
    release: &ReleaseBundle,
) -> Result<(), DriverError> {
    let releases = dir.join("releases");
    let target_dir = releases.join(&release.version);
    let wanted = ReleaseMarker::for_bundle(release);
    if read_marker(&target_dir).is_some_and(|m| m.same_content(&wanted)) {
        return Ok(()); // already built by an earlier (interrupted) run
    }
    fs::create_dir_all(&releases)
        .map_err(io_err(spec, format!("create {}", releases.display())))?;
    let staging = releases.join(format!(
        ".staging-{}-{}",
        release.version,
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&staging);
    let artifact_err = |e: artifact::ArtifactError| DriverError::Failed {
        target: spec.target.id.clone(),
        action: "copy artifact",
        message: format!("{}: {e}", release.artifact.display()),
    };
    // One pass: what is hashed is what was copied, so the artifact cannot be swapped between
    // the check and the copy.
    let built = artifact::copy_tree(&release.artifact, &staging)
        .map_err(artifact_err)
        .and_then(|(found, tree)| {
            if found != release.artifact_sha256 {
                return Err(DriverError::ArtifactChanged {
                    target: spec.target.id.clone(),
                    path: release.artifact.display().to_string(),
                    expected: release.artifact_sha256.clone(),
                    found,
                });
            }
            for f in &release.files {
                artifact::write_into(&staging, &tree, &f.dest, f.contents.as_bytes())
                    .map_err(artifact_err)?;
            }
            let marker = serde_json::to_vec_pretty(&wanted).expect("marker serializes");
            artifact::create_new(&staging.join(MARKER_FILE), 0o644)
                .and_then(|mut f| std::io::Write::write_all(&mut f, &marker))
                .map_err(io_err(spec, "write release marker"))
        });
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    if target_dir.exists() {
        // Incomplete or different leftovers under the same version: replace them.
        let aside = releases.join(format!(
            ".replaced-{}-{}",
            release.version,
            std::process::id()
        ));
        fs::rename(&target_dir, &aside).map_err(io_err(spec, "move aside old release"))?;
        let _ = fs::remove_dir_all(&aside);
    }
    fs::rename(&staging, &target_dir).map_err(io_err(spec, "install release"))?;
    fs::File::open(&releases)
        .and_then(|d| d.sync_all())
        .map_err(io_err(spec, "sync releases"))?;
    Ok(())
}

/// Removes the oldest complete releases beyond `keep`, never `current` nor `protect`.
fn prune(dir: &Path, keep: usize, protect: Option<&str>) {
    let releases = dir.join("releases");
    let current = current_version(dir);
    let Ok(rd) = fs::read_dir(&releases) else {
        return;
    };
    let mut all: Vec<(std::time::SystemTime, String)> = rd
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let t = fs::metadata(e.path().join(MARKER_FILE))
                .and_then(|m| m.modified())
                .ok()?;
            Some((t, e.file_name().to_string_lossy().into_owned()))
        })
        .collect();
    all.sort();
    let excess = all.len().saturating_sub(keep);
    for (_, v) in all.into_iter().take(excess) {
        if Some(v.as_str()) != current.as_deref() && Some(v.as_str()) != protect {
            let _ = fs::remove_dir_all(releases.join(v));
        }
    }
}

impl LocalDriver {
    async fn run_hook(
        &self,
        spec: &TargetSpec,
        dir: &Path,
        argv: &[String],
        what: &str,
        timeout: Duration,
    ) -> Result<super::process::CommandOutput, DriverError> {
        let version = current_version(dir).unwrap_or_default();
        let env = [
            ("FERRY_APP", spec.target.app.as_str()),
            ("FERRY_SITE", spec.target.site.as_str()),
            ("FERRY_VERSION", version.as_str()),
        ];
        match run(spec, argv, &dir.join("current"), &env, timeout).await {
            Ok(o) => Ok(o),
            Err(RunError::Timeout) => Err(DriverError::Timeout {
                target: spec.target.id.clone(),
                what: what.to_owned(),
                seconds: timeout.as_secs(),
            }),
            Err(RunError::Spawn(source)) => Err(DriverError::Io {
                target: spec.target.id.clone(),
                action: format!("start {what} command `{}`", argv[0]),
                source,
            }),
        }
    }

    async fn restart(&self, spec: &TargetSpec, dir: &Path) -> Result<(), DriverError> {
        let Some(argv) = &spec.app.restart else {
            return Ok(());
        };
        let out = self
            .run_hook(
                spec,
                dir,
                argv,
                "restart",
                Duration::from_secs(spec.app.health_check.timeout_seconds),
            )
            .await?;
        if out.success {
            Ok(())
        } else {
            Err(DriverError::Failed {
                target: spec.target.id.clone(),
                action: "restart",
                message: format!("{}: {}", out.status(), out.tail),
            })
        }
    }

    async fn switch_to(
        &self,
        spec: &TargetSpec,
        dir: &Path,
        version: &str,
    ) -> Result<(), DriverError> {
        if read_marker(&dir.join("releases").join(version)).is_none() {
            return Err(DriverError::MissingRelease {
                target: spec.target.id.clone(),
                version: version.to_owned(),
            });
        }
        spec.check_fence()?;
        let d = dir.to_owned();
        let v = version.to_owned();
        blocking(move || switch(&d, &v))
            .await
            .map_err(io_err(spec, "switch current"))?;
        self.restart(spec, dir).await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

#[async_trait]
impl Driver for LocalDriver {
    async fn observe(&self, spec: &TargetSpec) -> Result<Observed, DriverError> {
        let dir = app_dir(spec)?;
        let releases_dir = dir.join("releases");
        let mut releases = Vec::new();
        match fs::read_dir(&releases_dir) {
            Ok(rd) => {
                for e in rd.filter_map(Result::ok) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !name.starts_with('.') && read_marker(&e.path()).is_some() {
                        releases.push(name);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(spec, format!("read {}", releases_dir.display()))(e)),
        }
        releases.sort();
        Ok(Observed {
            current: current_version(&dir),
            releases,
            facts: Default::default(),
            drift: vec![],
        })
    }

    async fn apply(&self, spec: &TargetSpec, release: &ReleaseBundle) -> Result<(), DriverError> {
        let dir = app_dir(spec)?;
        let previous = current_version(&dir);
        {
            let (s, d, r) = (spec.clone(), dir.clone(), release.clone());
            tokio::task::spawn_blocking(move || build_release(&s, &d, &r))
                .await
                .map_err(|e| DriverError::Failed {
                    target: spec.target.id.clone(),
                    action: "build release",
                    message: e.to_string(),
                })??;
        }
        self.switch_to(spec, &dir, &release.version).await?;
        let keep = spec.app.keep_releases as usize;
        let d = dir.clone();
        let _ = tokio::task::spawn_blocking(move || prune(&d, keep, previous.as_deref())).await;
        Ok(())
    }

    async fn verify(&self, spec: &TargetSpec, version: &str) -> Result<(), DriverError> {
        let dir = app_dir(spec)?;
        let current = current_version(&dir);
        if current.as_deref() != Some(version) {
            return Err(DriverError::Failed {
                target: spec.target.id.clone(),
                action: "verify",
                message: format!(
                    "`current` is {}, expected {version}",
                    current.as_deref().unwrap_or("(none)")
                ),
            });
        }
        let hc = &spec.app.health_check;
        let argv = hc.argv();
        until_healthy(&spec.target.id, hc, |left| {
            let (dir, argv) = (&dir, &argv);
            async move {
                match self.run_hook(spec, dir, argv, "health check", left).await {
                    Ok(out) if out.success => Attempt::Healthy,
                    Ok(out) => Attempt::Unhealthy(format!("{}: {}", out.status(), out.tail)),
                    Err(DriverError::Timeout { .. }) => Attempt::TimedOut,
                    Err(e) => Attempt::Fatal(e),
                }
            }
        })
        .await
    }

    async fn undo(&self, spec: &TargetSpec, undo: &Undo) -> Result<(), DriverError> {
        let dir = app_dir(spec)?;
        match undo {
            Undo::SwitchTo { version, .. } => {
                self.switch_to(spec, &dir, version).await?;
                self.verify(spec, version).await
            }
            Undo::Uninstall => {
                spec.check_fence()?;
                let d = dir.clone();
                blocking(move || match fs::remove_file(d.join("current")) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && !d.exists() => Ok(()),
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => fs::File::open(&d)?.sync_all(),
                })
                .await
                .map_err(io_err(spec, "remove current"))
            }
            // Operation steps (snapshots) are never handed to a release driver.
            Undo::Keep => Ok(()),
        }
    }
}

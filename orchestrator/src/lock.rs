//! The apply lock: one apply per state directory, with an owner and a lease.
//!
//! The lock is a JSON file naming its holder and when its lease ends; the holder renews the
//! lease while it works. Checking and taking the lock happens under a short `flock` on a
//! guard file, so two processes cannot both take it. A lock whose lease has run out, or whose
//! holder process is gone from this host, may be taken over; the caller records the takeover.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub actor: String,
    pub host: String,
    pub pid: u32,
    pub plan_id: String,
    pub acquired_at_ms: u64,
    pub lease_until_ms: u64,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (pid {} on {}, plan {}, lease until {})",
            self.actor,
            self.pid,
            self.host,
            self.plan_id,
            fmt_ms(self.lease_until_ms)
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another apply holds the lock: {0}; wait for it, or for its lease to expire")]
    Held(Box<LockHolder>),
    #[error("lock file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the lock was taken over by {0} while this apply held it")]
    Lost(Box<LockHolder>),
}

/// How a lock was acquired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    Fresh,
    /// A stale lock was replaced; says whose and why.
    TakenOver {
        previous: LockHolder,
        reason: String,
    },
}

#[derive(Debug)]
pub struct ApplyLock {
    path: PathBuf,
    holder: LockHolder,
    lease: Duration,
}

impl ApplyLock {
    pub fn acquire(
        state_dir: &Path,
        actor: &str,
        plan_id: &str,
        lease: Duration,
    ) -> Result<(Self, Acquired), LockError> {
        let path = state_dir.join("apply.lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let guard = guard(state_dir).map_err(io)?;
        let now = now_ms();
        let holder = LockHolder {
            actor: actor.to_owned(),
            host: hostname(),
            pid: std::process::id(),
            plan_id: plan_id.to_owned(),
            acquired_at_ms: now,
            lease_until_ms: now + lease.as_millis() as u64,
        };
        let how = match read_holder(&path).map_err(io)? {
            None => Acquired::Fresh,
            Some(prev) => {
                let reason = if prev.lease_until_ms < now {
                    format!("lease expired at {}", fmt_ms(prev.lease_until_ms))
                } else if prev.host == holder.host && !process_alive(prev.pid) {
                    format!("holder process {} is gone from this host", prev.pid)
                } else {
                    return Err(LockError::Held(Box::new(prev)));
                };
                Acquired::TakenOver {
                    previous: prev,
                    reason,
                }
            }
        };
        write_holder(&path, &holder).map_err(io)?;
        drop(guard);
        Ok((
            Self {
                path,
                holder,
                lease,
            },
            how,
        ))
    }

    pub fn holder(&self) -> &LockHolder {
        &self.holder
    }

    /// Extends the lease; fails if someone else took the lock meanwhile.
    pub fn renew(&mut self) -> Result<(), LockError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let io = |source| LockError::Io {
            path: self.path.clone(),
            source,
        };
        let _guard = guard(dir).map_err(io)?;
        match read_holder(&self.path).map_err(io)? {
            Some(h)
                if h.pid == self.holder.pid
                    && h.host == self.holder.host
                    && h.acquired_at_ms == self.holder.acquired_at_ms => {}
            Some(other) => return Err(LockError::Lost(Box::new(other))),
            None => {}
        }
        self.holder.lease_until_ms = now_ms() + self.lease.as_millis() as u64;
        write_holder(&self.path, &self.holder).map_err(io)
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Removes the lock if it is still ours.
    pub fn release(&self) -> Result<(), LockError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let io = |source| LockError::Io {
            path: self.path.clone(),
            source,
        };
        let _guard = guard(dir).map_err(io)?;
        if let Some(h) = read_holder(&self.path).map_err(io)?
            && h.pid == self.holder.pid
            && h.host == self.holder.host
        {
            std::fs::remove_file(&self.path).map_err(io)?;
        }
        Ok(())
    }
}

/// The current holder of the lock in `state_dir`, if any.
pub fn current_holder(state_dir: &Path) -> std::io::Result<Option<LockHolder>> {
    read_holder(&state_dir.join("apply.lock"))
}

fn guard(dir: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("apply.lock.guard"))?;
    f.lock()?;
    Ok(f)
}

fn read_holder(path: &Path) -> std::io::Result<Option<LockHolder>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok().or_else(|| {
            // An unreadable lock (torn write) is treated as expired, held by nobody known.
            Some(LockHolder {
                actor: "unknown".into(),
                host: String::new(),
                pid: 0,
                plan_id: String::new(),
                acquired_at_ms: 0,
                lease_until_ms: 0,
            })
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_holder(path: &Path, holder: &LockHolder) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(holder).expect("holder serializes"))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists; it sends nothing.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn fmt_ms(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let (lock, how) =
            ApplyLock::acquire(dir.path(), "alice", "p1", Duration::from_secs(60)).unwrap();
        assert_eq!(how, Acquired::Fresh);
        let err = ApplyLock::acquire(dir.path(), "bob", "p2", Duration::from_secs(60)).unwrap_err();
        assert!(err.to_string().contains("alice"), "{err}");
        lock.release().unwrap();
        assert!(ApplyLock::acquire(dir.path(), "bob", "p2", Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn expired_lease_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let stale = LockHolder {
            actor: "crashed".into(),
            host: "elsewhere".into(),
            pid: 1,
            plan_id: "p0".into(),
            acquired_at_ms: 1,
            lease_until_ms: 2,
        };
        write_holder(&dir.path().join("apply.lock"), &stale).unwrap();
        let (_lock, how) =
            ApplyLock::acquire(dir.path(), "bob", "p2", Duration::from_secs(60)).unwrap();
        match how {
            Acquired::TakenOver { previous, reason } => {
                assert_eq!(previous, stale);
                assert!(reason.contains("lease expired"), "{reason}");
            }
            Acquired::Fresh => panic!("expected a takeover"),
        }
    }

    #[test]
    fn dead_local_holder_is_taken_over_before_lease_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let stale = LockHolder {
            actor: "crashed".into(),
            host: hostname(),
            pid,
            plan_id: "p0".into(),
            acquired_at_ms: 1,
            lease_until_ms: now_ms() + 600_000,
        };
        write_holder(&dir.path().join("apply.lock"), &stale).unwrap();
        let (_lock, how) =
            ApplyLock::acquire(dir.path(), "bob", "p2", Duration::from_secs(60)).unwrap();
        assert!(
            matches!(how, Acquired::TakenOver { ref reason, .. } if reason.contains("gone")),
            "{how:?}"
        );
    }

    #[test]
    fn renew_detects_a_lost_lock() {
        let dir = tempfile::tempdir().unwrap();
        let (mut lock, _) =
            ApplyLock::acquire(dir.path(), "alice", "p1", Duration::from_secs(60)).unwrap();
        let other = LockHolder {
            actor: "bob".into(),
            host: "h".into(),
            pid: 7,
            plan_id: "p2".into(),
            acquired_at_ms: 5,
            lease_until_ms: u64::MAX,
        };
        write_holder(&dir.path().join("apply.lock"), &other).unwrap();
        assert!(matches!(lock.renew(), Err(LockError::Lost(_))));
    }
}

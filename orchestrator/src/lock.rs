//! The apply lock: one apply per state directory, with an owner, a lease and a fence.
//!
//! The lock is a JSON file naming its holder, a fresh random `token` per acquisition (the
//! lock's generation) and when its lease ends; the holder renews the lease while it works.
//! Checking and taking the lock happens under a short `flock` on a guard file, so two
//! processes cannot both take it.
//!
//! Is the holder alive? Each holder also keeps an `flock` on its own file
//! `apply.lock.<token>.live` for its whole life: the kernel drops it when the process dies,
//! `kill -9` included, whatever pid namespace or container it ran in. On the same kernel (same
//! boot id) that answers exactly; a free live lock means the holder is gone and the lock may be
//! taken over at once. Otherwise (another host on shared storage, or a lock written by an older
//! ferry) only the lease can tell.
//!
//! When has the lease run out? On the same boot, by `CLOCK_BOOTTIME` (monotonic, immune to
//! wall-clock steps): the holder writes it at every renewal. Across hosts, by wall clocks,
//! tolerating [`MAX_CLOCK_SKEW`] between them. A holder that is alive but stopped renewing
//! (paused, hung) loses the lock when its lease runs out; it is then *fenced*: every ledger
//! append and every driver action of a run checks [`Fence::check`] first, so it cannot act or
//! record after the takeover, and renewal never recreates a lock it no longer holds.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How far apart two hosts' wall clocks may be before a lease is misjudged (hosts sharing a
/// state directory on network storage; one host uses its monotonic clock instead).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(10);

const LOCK_FILE: &str = "apply.lock";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub actor: String,
    pub host: String,
    pub pid: u32,
    pub plan_id: String,
    pub acquired_at_ms: u64,
    pub lease_until_ms: u64,
    /// This acquisition's generation: random, never reused. Empty in locks of older ferry.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`) of the holder.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub boot_id: String,
    /// `CLOCK_BOOTTIME` at the last renewal, and the lease length, in milliseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub renewed_boottime_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease_ms: u64,
    /// The lock's epoch in a shared state store: one more at every acquisition or break;
    /// every ledger row an apply writes carries it (0 for the local lock file).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    /// When the holder process started (`/proc/PID/stat`, clock ticks since boot): with the
    /// boot id, tells a dead holder from a new process that reused its pid.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pid_start: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
    #[error("the lock was broken or released by someone else while this apply held it")]
    Vanished,
    #[error("apply lock in {location}: {reason}")]
    Store { location: String, reason: String },
}

impl LockError {
    /// The same error again (`io::Error` is not `Clone`: kind and text are kept).
    pub fn duplicate(&self) -> Self {
        match self {
            LockError::Held(h) => LockError::Held(h.clone()),
            LockError::Io { path, source } => LockError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            LockError::Lost(h) => LockError::Lost(h.clone()),
            LockError::Vanished => LockError::Vanished,
            LockError::Store { location, reason } => LockError::Store {
                location: location.clone(),
                reason: reason.clone(),
            },
        }
    }
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

pub use crate::state::Fence;

/// The local lock's fence: the lock file names the run's token.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileFence {
    path: PathBuf,
    token: String,
}

impl crate::state::FenceCheck for FileFence {
    fn check(&self) -> Result<(), LockError> {
        match read_holder(&self.path) {
            Ok(Some(h)) if h.token == self.token => Ok(()),
            Ok(Some(h)) => Err(LockError::Lost(Box::new(h))),
            Ok(None) => Err(LockError::Vanished),
            Err(source) => Err(LockError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn generation(&self) -> &str {
        &self.token
    }
}

#[derive(Debug)]
pub struct ApplyLock {
    path: PathBuf,
    holder: LockHolder,
    lease: Duration,
    /// Held (flock) for the life of this lock: the kernel releases it if the process dies.
    live: Option<(PathBuf, File)>,
}

impl ApplyLock {
    pub fn acquire(
        state_dir: &Path,
        actor: &str,
        plan_id: &str,
        lease: Duration,
    ) -> Result<(Self, Acquired), LockError> {
        let path = state_dir.join(LOCK_FILE);
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
            token: uuid::Uuid::new_v4().simple().to_string(),
            boot_id: boot_id(),
            renewed_boottime_ms: boottime_ms(),
            lease_ms: lease.as_millis() as u64,
            ..LockHolder::default()
        };
        let how = match read_holder(&path).map_err(io)? {
            None => Acquired::Fresh,
            Some(prev) => {
                let reason = takeover_reason(state_dir, &prev, &holder)
                    .ok_or_else(|| LockError::Held(Box::new(prev.clone())))?;
                Acquired::TakenOver {
                    previous: prev,
                    reason,
                }
            }
        };
        let live_path = live_file(state_dir, &holder.token);
        let live = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&live_path)
            .and_then(|f| f.try_lock().map_err(std::io::Error::from).map(|()| f))
            .map_err(io)?;
        write_holder(&path, &holder).map_err(io)?;
        remove_dead_live_files(state_dir, &holder.token);
        drop(guard);
        Ok((
            Self {
                path,
                holder,
                lease,
                live: Some((live_path, live)),
            },
            how,
        ))
    }

    pub fn holder(&self) -> &LockHolder {
        &self.holder
    }

    pub fn fence(&self) -> Fence {
        Fence::new(FileFence {
            path: self.path.clone(),
            token: self.holder.token.clone(),
        })
    }

    /// Extends the lease; fails if someone else took the lock meanwhile or the file is gone
    /// (it is never written again then: a lock lost is lost).
    pub fn renew(&mut self) -> Result<(), LockError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let io = |source| LockError::Io {
            path: self.path.clone(),
            source,
        };
        let _guard = guard(dir).map_err(io)?;
        match read_holder(&self.path).map_err(io)? {
            Some(h) if h.token == self.holder.token => {}
            Some(other) => return Err(LockError::Lost(Box::new(other))),
            None => return Err(LockError::Vanished),
        }
        self.holder.lease_until_ms = now_ms() + self.lease.as_millis() as u64;
        self.holder.renewed_boottime_ms = boottime_ms();
        write_holder(&self.path, &self.holder).map_err(io)
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Removes the lock if it is still ours (same token); `Ok(false)` if it was not.
    pub fn release(&mut self) -> Result<bool, LockError> {
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_owned();
        let io = |source| LockError::Io {
            path: self.path.clone(),
            source,
        };
        let _guard = guard(&dir).map_err(io)?;
        let ours =
            matches!(read_holder(&self.path).map_err(io)?, Some(h) if h.token == self.holder.token);
        if ours {
            std::fs::remove_file(&self.path).map_err(io)?;
            crate::durable::sync_dir(&dir).map_err(io)?;
        }
        if let Some((live_path, file)) = self.live.take() {
            let _ = std::fs::remove_file(&live_path);
            drop(file);
        }
        Ok(ours)
    }
}

/// Why `prev` may be taken over now, or `None` while it holds the lock.
fn takeover_reason(state_dir: &Path, prev: &LockHolder, me: &LockHolder) -> Option<String> {
    let same_kernel = !prev.boot_id.is_empty() && prev.boot_id == me.boot_id;
    if same_kernel && !prev.token.is_empty() && !holder_alive(state_dir, &prev.token) {
        return Some(format!(
            "holder process {} is gone from this host (its live lock died with it)",
            prev.pid
        ));
    }
    let expired = if same_kernel && prev.lease_ms > 0 && prev.renewed_boottime_ms > 0 {
        prev.renewed_boottime_ms + prev.lease_ms < me.renewed_boottime_ms
    } else {
        prev.lease_until_ms + (MAX_CLOCK_SKEW.as_millis() as u64) < me.acquired_at_ms
    };
    if !expired {
        return None;
    }
    let alive = if same_kernel && !prev.token.is_empty() {
        "; the holder is still running but stopped renewing: it is fenced off and cannot act or record any more"
    } else {
        ""
    };
    Some(format!(
        "lease expired at {}{alive}",
        fmt_ms(prev.lease_until_ms)
    ))
}

fn live_file(state_dir: &Path, token: &str) -> PathBuf {
    state_dir.join(format!("{LOCK_FILE}.{token}.live"))
}

/// Whether the process holding `token` still holds its live lock (on this kernel).
fn holder_alive(state_dir: &Path, token: &str) -> bool {
    match File::open(live_file(state_dir, token)) {
        Ok(f) => matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

/// Live files of holders that are gone (their flock is free), but this one's.
fn remove_dead_live_files(state_dir: &Path, mine: &str) {
    let Ok(rd) = std::fs::read_dir(state_dir) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(token) = name
            .strip_prefix(&format!("{LOCK_FILE}."))
            .and_then(|n| n.strip_suffix(".live"))
            && token != mine
            && !holder_alive(state_dir, token)
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The holder of the lock in `state_dir`, and whether it could be taken over now (gone from
/// this host, or its lease run out).
pub fn status(state_dir: &Path) -> std::io::Result<Option<(LockHolder, bool)>> {
    let Some(h) = read_holder(&state_dir.join(LOCK_FILE))? else {
        return Ok(None);
    };
    let me = LockHolder {
        acquired_at_ms: now_ms(),
        boot_id: boot_id(),
        renewed_boottime_ms: boottime_ms(),
        ..LockHolder::default()
    };
    let free = takeover_reason(state_dir, &h, &me).is_some();
    Ok(Some((h, free)))
}

/// Removes the lock whoever holds it (`ferry lock break`); the holder it named, if any. Its
/// run is fenced from then on (its token is gone).
pub fn break_file(state_dir: &Path) -> std::io::Result<Option<LockHolder>> {
    let _guard = guard(state_dir)?;
    let path = state_dir.join(LOCK_FILE);
    let Some(h) = read_holder(&path)? else {
        return Ok(None);
    };
    std::fs::remove_file(&path)?;
    crate::durable::sync_dir(state_dir)?;
    Ok(Some(h))
}

/// The current holder of the lock in `state_dir`, if any.
pub fn current_holder(state_dir: &Path) -> std::io::Result<Option<LockHolder>> {
    read_holder(&state_dir.join(LOCK_FILE))
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
                token: String::new(),
                boot_id: String::new(),
                ..LockHolder::default()
            })
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_holder(path: &Path, holder: &LockHolder) -> std::io::Result<()> {
    crate::durable::write_atomic(
        path,
        &serde_json::to_vec_pretty(holder).expect("holder serializes"),
    )
}

/// When process `pid` started (field 22 of `/proc/PID/stat`), if it is running and not a
/// zombie.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: fields after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether a holder recorded on this host and boot is gone: its pid runs no more, or runs a
/// process started at another time. `None` when this host cannot tell (another host or boot,
/// or a holder that did not record its start).
pub fn holder_gone(h: &LockHolder) -> Option<bool> {
    if h.boot_id.is_empty() || h.boot_id != boot_id() || h.host != hostname() || h.pid_start == 0 {
        return None;
    }
    Some(process_start(h.pid) != Some(h.pid_start))
}

pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// This kernel's boot id; empty where the kernel does not say.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `CLOCK_BOOTTIME` in milliseconds: monotonic, counting suspend, the same for every process
/// of one boot.
fn boottime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn fmt_ms(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn other(host: &str, lease_until_ms: u64) -> LockHolder {
        LockHolder {
            actor: "crashed".into(),
            host: host.into(),
            pid: 1,
            plan_id: "p0".into(),
            acquired_at_ms: 1,
            lease_until_ms,
            ..LockHolder::default()
        }
    }

    #[test]
    fn second_acquire_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let (mut lock, how) =
            ApplyLock::acquire(dir.path(), "alice", "p1", Duration::from_secs(60)).unwrap();
        assert_eq!(how, Acquired::Fresh);
        let err = ApplyLock::acquire(dir.path(), "bob", "p2", Duration::from_secs(60)).unwrap_err();
        assert!(err.to_string().contains("alice"), "{err}");
        assert!(lock.release().unwrap());
        assert!(ApplyLock::acquire(dir.path(), "bob", "p2", Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn expired_lease_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let stale = other("elsewhere", 2);
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

    /// Another host's lease just past its end is within the tolerated clock skew.
    #[test]
    fn a_lease_from_another_host_gets_the_skew_tolerance() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = other("elsewhere", now_ms() - 2_000);
        h.token = "t".into();
        h.boot_id = "another-kernel".into();
        write_holder(&dir.path().join("apply.lock"), &h).unwrap();
        assert!(matches!(
            ApplyLock::acquire(dir.path(), "bob", "p2", Duration::from_secs(60)),
            Err(LockError::Held(_))
        ));
    }

    /// The holder's live lock, not its pid: a holder that died (its flock went with it) is
    /// taken over at once; one alive is not, even when its pid means nothing here.
    #[test]
    fn liveness_is_the_holders_own_flock() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, _) =
            ApplyLock::acquire(dir.path(), "alice", "p1", Duration::from_secs(600)).unwrap();
        // Pretend alice's pid is one that does not exist here (another pid namespace).
        let mut h = a.holder.clone();
        h.pid = 999_999;
        write_holder(&a.path, &h).unwrap();
        assert!(matches!(
            ApplyLock::acquire(dir.path(), "bob", "p2", Duration::from_secs(60)),
            Err(LockError::Held(_))
        ));
        // Alice dies: the kernel drops her flock (here: the file is closed).
        drop(a.live.take());
        let (_b, how) =
            ApplyLock::acquire(dir.path(), "bob", "p2", Duration::from_secs(60)).unwrap();
        assert!(
            matches!(how, Acquired::TakenOver { ref reason, .. } if reason.contains("gone")),
            "{how:?}"
        );
    }

    #[test]
    fn renew_detects_a_lost_or_removed_lock_and_never_recreates_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut lock, _) =
            ApplyLock::acquire(dir.path(), "alice", "p1", Duration::from_secs(60)).unwrap();
        let fence = lock.fence();
        fence.check().unwrap();
        let mut bob = other("h", u64::MAX);
        bob.token = "bobs".into();
        write_holder(&dir.path().join("apply.lock"), &bob).unwrap();
        assert!(matches!(lock.renew(), Err(LockError::Lost(_))));
        assert!(matches!(fence.check(), Err(LockError::Lost(_))));
        std::fs::remove_file(dir.path().join("apply.lock")).unwrap();
        assert!(matches!(lock.renew(), Err(LockError::Vanished)));
        assert!(!dir.path().join("apply.lock").exists(), "not recreated");
        assert!(matches!(fence.check(), Err(LockError::Vanished)));
        assert!(!lock.release().unwrap(), "nothing of ours to release");
    }

    /// A lock of the same holder re-acquired has a new token: the old fence does not pass.
    #[test]
    fn each_acquisition_is_its_own_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, _) =
            ApplyLock::acquire(dir.path(), "alice", "p1", Duration::from_secs(60)).unwrap();
        let old = a.fence();
        a.release().unwrap();
        let (b, _) =
            ApplyLock::acquire(dir.path(), "alice", "p1", Duration::from_secs(60)).unwrap();
        assert_ne!(old, b.fence());
        assert!(old.check().is_err());
        b.fence().check().unwrap();
    }
}

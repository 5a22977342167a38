//! Durable, link-safe file writes: a new file under an unpredictable name, created with
//! `O_EXCL | O_NOFOLLOW` (so a planted symlink or file is never followed or reused), written,
//! `fsync`ed, renamed over the destination, and the directory `fsync`ed so the rename itself
//! survives a crash.

use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, 0o644)
}

/// [`write_atomic`] with the new file's permission bits (an executable: `0o755`).
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let written = crate::artifact::create_new(&tmp, mode).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// `fsync` of a directory: makes a create, rename or remove in it durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_never_follows_a_planted_link() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("apply.lock");
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        // Old-style predictable temp names, planted as links: not used.
        for pid in [std::process::id(), 1, 2] {
            std::os::unix::fs::symlink(&victim, d.path().join(format!("apply.tmp.{pid}"))).unwrap();
        }
        write_atomic(&target, b"one").unwrap();
        write_atomic(&target, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "two");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "no temp file is left behind");
    }
}

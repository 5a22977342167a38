//! Release artifacts on disk: a stable digest of a directory tree, and copying one.
//!
//! The digest covers relative paths, file contents, the executable bit and symlink targets, in
//! sorted order, so the same tree gives the same digest on any machine.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// SHA-256 of a file, or of a directory tree as described above.
pub fn digest(path: &Path) -> io::Result<String> {
    let meta = fs::metadata(path)?;
    if meta.is_file() {
        return Ok(hex::encode(Sha256::digest(fs::read(path)?)));
    }
    let mut hasher = Sha256::new();
    let mut entries = Vec::new();
    walk(path, Path::new(""), &mut entries)?;
    entries.sort();
    for rel in entries {
        let full = path.join(&rel);
        let meta = fs::symlink_metadata(&full)?;
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        if meta.file_type().is_symlink() {
            hasher.update(b"L");
            hasher.update(fs::read_link(&full)?.to_string_lossy().as_bytes());
        } else if meta.is_dir() {
            hasher.update(b"D");
        } else {
            hasher.update(if meta.permissions().mode() & 0o111 != 0 {
                b"X"
            } else {
                b"F"
            });
            hasher.update(Sha256::digest(fs::read(&full)?));
        }
        hasher.update([0]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<std::path::PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let r = rel.join(entry.file_name());
        let ft = entry.file_type()?;
        out.push(r.clone());
        if ft.is_dir() {
            walk(root, &r, out)?;
        }
    }
    Ok(())
}

/// Copies a directory tree (files with their modes, symlinks as symlinks) into `dst`.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    fs::create_dir_all(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = entry.file_type()?;
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if ft.is_dir() {
            copy_tree(&from, &to)?;
        } else {
            fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_stable_and_sensitive() {
        let a = tempfile::tempdir().unwrap();
        fs::create_dir(a.path().join("bin")).unwrap();
        fs::write(a.path().join("bin/run"), "echo hi").unwrap();
        fs::write(a.path().join("VERSION"), "1.0.0").unwrap();
        let d1 = digest(a.path()).unwrap();
        let b = tempfile::tempdir().unwrap();
        copy_tree(a.path(), b.path()).unwrap();
        assert_eq!(d1, digest(b.path()).unwrap());
        fs::set_permissions(b.path().join("bin/run"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(d1, digest(b.path()).unwrap(), "mode change must show");
        fs::write(a.path().join("VERSION"), "1.0.1").unwrap();
        assert_ne!(d1, digest(a.path()).unwrap(), "content change must show");
    }
}

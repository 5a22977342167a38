//! Release artifacts on disk: a stable digest of a directory tree (or a release tarball), the
//! rules an artifact must keep to be released, and copying or packing one while hashing
//! exactly the bytes that are copied.
//!
//! The digest covers relative paths, file contents, the executable bit and symlink targets, in
//! sorted order, so the same tree gives the same digest on any machine. It covers exactly what
//! ferry releases: files are written 0644, or 0755 when any execute bit is set, owned by the
//! deploying user; setuid, setgid and sticky bits and owners are never carried over.
//!
//! Rules (checked when the plan is made and again while copying): names are UTF-8; entries are
//! directories, regular files or symlinks (no devices, FIFOs, sockets or hard links); every
//! symlink resolves, step by step, inside the tree (no absolute target, no `..` that climbs
//! out, at most 40 links deep); the release marker name is ferry's; a rendered file's `dest`
//! never passes through or replaces a symlink or a directory of the artifact. So a write into a
//! release can never follow a link out of it.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::drivers::MARKER_FILE;

/// Symlinks followed while resolving one path, as the kernel's own limit (`ELOOP`).
const MAX_LINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: a name that is not UTF-8 (artifacts' names must be UTF-8)")]
    NotUtf8 { path: String },
    #[error("{path}: a {kind}; artifacts hold only directories, regular files and symlinks")]
    Special { path: String, kind: &'static str },
    #[error("{path}: symlink to `{target}` leads outside the artifact; links must stay inside it")]
    LinkEscapes { path: String, target: String },
    #[error("{path}: more than {MAX_LINKS} symlinks deep")]
    TooManyLinks { path: String },
    #[error("{path}: `{MARKER_FILE}` is ferry's release marker; an artifact may not contain it")]
    Reserved { path: String },
    #[error("{path}: {why}")]
    BadEntry { path: String, why: String },
    #[error("configuration file `{dest}`: {why}; a rendered file is never written through a link")]
    Dest { dest: String, why: String },
}

/// What one entry of an artifact is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// A regular file: executable or not, and the SHA-256 of its content.
    File {
        exec: bool,
        sha256: [u8; 32],
    },
    Link(String),
}

/// Every entry of an artifact by relative path (component order, as the digest sorts them).
pub type Tree = BTreeMap<PathBuf, Kind>;

/// The digest of a tree, as described in the module docs.
pub fn tree_digest(tree: &Tree) -> String {
    let mut hasher = Sha256::new();
    for (rel, kind) in tree {
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        match kind {
            Kind::Link(target) => {
                hasher.update(b"L");
                hasher.update(target.as_bytes());
            }
            Kind::Dir => hasher.update(b"D"),
            Kind::File { exec, sha256 } => {
                hasher.update(if *exec { b"X" } else { b"F" });
                hasher.update(sha256);
            }
        }
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// SHA-256 of a file (a release tarball, hashed as bytes), or of a directory tree; a tree
/// that breaks the rules above is an error naming the entry.
pub fn digest(path: &Path) -> Result<String, ArtifactError> {
    let meta = fs::metadata(path).map_err(io_at(path))?;
    if meta.is_file() {
        let mut f = fs::File::open(path).map_err(io_at(path))?;
        let mut h = HashingReader::new(&mut f);
        io::copy(&mut h, &mut io::sink()).map_err(io_at(path))?;
        return Ok(hex::encode(h.finish()));
    }
    let tree = scan(path)?;
    Ok(tree_digest(&tree))
}

/// Reads a directory tree without following any link, every file hashed, checked against
/// the rules.
pub fn scan(root: &Path) -> Result<Tree, ArtifactError> {
    walk_hashed(root, &mut |_, _| Ok(()))
}

/// Checks the link and marker rules over a whole tree.
pub fn check_tree(tree: &Tree) -> Result<(), ArtifactError> {
    if tree.contains_key(Path::new(MARKER_FILE)) {
        return Err(ArtifactError::Reserved {
            path: MARKER_FILE.into(),
        });
    }
    for (rel, kind) in tree {
        if let Kind::Link(target) = kind {
            resolve_link(tree, rel, target)?;
        }
    }
    Ok(())
}

/// Follows `link` (at `rel`) through the tree; an error if any step leaves it.
fn resolve_link(tree: &Tree, rel: &Path, target: &str) -> Result<PathBuf, ArtifactError> {
    let escapes = || ArtifactError::LinkEscapes {
        path: rel.display().to_string(),
        target: target.to_owned(),
    };
    let mut at: Vec<String> = parent_parts(rel);
    let mut pending: Vec<String> = Vec::new();
    push_target(&mut pending, target).ok_or_else(escapes)?;
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => {}
            ".." => {
                at.pop().ok_or_else(escapes)?;
            }
            name => {
                at.push(name.to_owned());
                let here: PathBuf = at.iter().collect();
                if let Some(Kind::Link(next)) = tree.get(&here) {
                    hops += 1;
                    if hops > MAX_LINKS {
                        return Err(ArtifactError::TooManyLinks {
                            path: rel.display().to_string(),
                        });
                    }
                    at.pop();
                    push_target(&mut pending, next).ok_or_else(escapes)?;
                }
            }
        }
    }
    Ok(at.iter().collect())
}

fn parent_parts(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.pop();
    parts
}

/// Queues a link target's components (reversed, for `pop`); `None` for an absolute target.
fn push_target(pending: &mut Vec<String>, target: &str) -> Option<()> {
    if target.starts_with('/') || target.is_empty() {
        return None;
    }
    for part in target.split('/').rev().filter(|p| !p.is_empty()) {
        pending.push(part.to_owned());
    }
    Some(())
}

/// A rendered file may be written at `dest` (relative to the release): no component before it
/// is a symlink or a file of the artifact, and `dest` itself is not a symlink or directory.
pub fn check_dest(tree: &Tree, dest: &str) -> Result<(), ArtifactError> {
    let bad = |why: String| ArtifactError::Dest {
        dest: dest.to_owned(),
        why,
    };
    let rel = Path::new(dest);
    if rel.is_absolute()
        || dest
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(bad("must be a relative path without `.` or `..`".into()));
    }
    if rel == Path::new(MARKER_FILE) {
        return Err(bad(format!("`{MARKER_FILE}` is ferry's release marker")));
    }
    let mut here = PathBuf::new();
    let parts: Vec<_> = rel.components().collect();
    for (i, c) in parts.iter().enumerate() {
        here.push(c);
        let last = i + 1 == parts.len();
        match tree.get(&here) {
            Some(Kind::Link(t)) => {
                return Err(bad(format!(
                    "`{}` in the artifact is a symlink (to `{t}`)",
                    here.display()
                )));
            }
            Some(Kind::Dir) if last => {
                return Err(bad("the artifact has a directory there".into()));
            }
            Some(Kind::File { .. }) if !last => {
                return Err(bad(format!(
                    "`{}` in the artifact is a file",
                    here.display()
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// One entry as the walker hands it over; a file's content is read through `reader`.
pub enum Item<'a> {
    Dir,
    Link(String),
    File {
        exec: bool,
        reader: &'a mut dyn Read,
    },
}

/// Walks `root/rel` in sorted order without following links, hashing every file's bytes as
/// `visit` reads them (what it leaves unread is read and hashed too). Returns the tree, with
/// the digest of exactly the bytes `visit` was given.
pub fn walk_hashed(
    root: &Path,
    visit: &mut dyn FnMut(&Path, Item<'_>) -> io::Result<()>,
) -> Result<Tree, ArtifactError> {
    let mut tree = Tree::new();
    walk(root, Path::new(""), &mut |rel, item| {
        let kind = match item {
            Item::Dir => {
                visit(rel, Item::Dir)?;
                Kind::Dir
            }
            Item::Link(t) => {
                visit(rel, Item::Link(t.clone()))?;
                Kind::Link(t)
            }
            Item::File { exec, reader } => {
                let mut h = HashingReader::new(reader);
                visit(
                    rel,
                    Item::File {
                        exec,
                        reader: &mut h,
                    },
                )?;
                io::copy(&mut h, &mut io::sink())?;
                Kind::File {
                    exec,
                    sha256: h.finish(),
                }
            }
        };
        tree.insert(rel.to_owned(), kind);
        Ok(())
    })?;
    check_tree(&tree)?;
    Ok(tree)
}

/// The walk behind [`scan`] and [`walk_hashed`]: entries sorted by name, directories before
/// their contents, files opened with `O_NOFOLLOW`.
fn walk(
    root: &Path,
    rel: &Path,
    visit: &mut dyn FnMut(&Path, Item<'_>) -> io::Result<()>,
) -> Result<(), ArtifactError> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(io_at(&dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_at(&dir))?;
    names.sort();
    for name in names {
        let r = rel.join(&name);
        if name.to_str().is_none() {
            return Err(ArtifactError::NotUtf8 {
                path: r.to_string_lossy().into_owned(),
            });
        }
        let full = root.join(&r);
        let meta = fs::symlink_metadata(&full).map_err(io_at(&full))?;
        let ft = meta.file_type();
        let at = io_at(&r);
        if ft.is_symlink() {
            let t = fs::read_link(&full).map_err(io_at(&full))?;
            let t = t.to_str().ok_or_else(|| ArtifactError::NotUtf8 {
                path: r.display().to_string(),
            })?;
            visit(&r, Item::Link(t.to_owned())).map_err(at)?;
        } else if ft.is_dir() {
            visit(&r, Item::Dir).map_err(at)?;
            walk(root, &r, visit)?;
        } else if ft.is_file() {
            let mut f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&full)
                .map_err(io_at(&full))?;
            let exec = meta.permissions().mode() & 0o111 != 0;
            visit(
                &r,
                Item::File {
                    exec,
                    reader: &mut f,
                },
            )
            .map_err(at)?;
        } else {
            return Err(ArtifactError::Special {
                path: r.display().to_string(),
                kind: special_kind(&ft),
            });
        }
    }
    Ok(())
}

fn special_kind(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

/// Copies a directory tree into `dst` (which must not exist), hashing exactly what is written;
/// returns the digest of the copy. Files are created new (`O_EXCL | O_NOFOLLOW`) with mode
/// 0644/0755, directories 0755, links as links.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(String, Tree), ArtifactError> {
    fs::create_dir(dst).map_err(io_at(dst))?;
    let tree = walk_hashed(src, &mut |rel, item| place(&dst.join(rel), item))?;
    Ok((tree_digest(&tree), tree))
}

/// One item written at `to`: a file created new (0644/0755), a directory 0755, a link as a link.
fn place(to: &Path, item: Item<'_>) -> io::Result<()> {
    match item {
        Item::Dir => fs::DirBuilder::new().mode(0o755).create(to),
        Item::Link(t) => std::os::unix::fs::symlink(t, to),
        Item::File { exec, reader } => {
            let mut out = create_new(to, if exec { 0o755 } else { 0o644 })?;
            io::copy(reader, &mut out).map(|_| ())
        }
    }
}

/// Unpacks a release tarball into `dst` (which must not exist) under [`read_tarball`]'s
/// rules, writing as [`copy_tree`] does; returns the digest of the tarball's bytes.
pub fn unpack_tarball(path: &Path, dst: &Path) -> Result<String, ArtifactError> {
    fs::create_dir(dst).map_err(io_at(dst))?;
    let (digest, _) = read_tarball(path, &mut |rel, item, _| {
        if rel.as_os_str().is_empty() {
            return Ok(());
        }
        place(&dst.join(rel), item)
    })?;
    Ok(digest)
}

/// Writes `contents` at `dest` under `release` (a tree ferry built), after [`check_dest`]:
/// missing directories are made, an artifact file there is replaced, nothing is followed.
pub fn write_into(
    release: &Path,
    tree: &Tree,
    dest: &str,
    contents: &[u8],
) -> Result<(), ArtifactError> {
    check_dest(tree, dest)?;
    let path = release.join(dest);
    let mut dir = release.to_owned();
    let parts: Vec<_> = Path::new(dest).components().collect();
    for c in &parts[..parts.len() - 1] {
        dir.push(c);
        match fs::DirBuilder::new().mode(0o755).create(&dir) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let m = fs::symlink_metadata(&dir).map_err(io_at(&dir))?;
                if !m.is_dir() {
                    return Err(ArtifactError::Dest {
                        dest: dest.to_owned(),
                        why: format!("`{}` is not a directory", dir.display()),
                    });
                }
            }
            r => r.map_err(io_at(&dir))?,
        }
    }
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(&path)(e)),
        _ => {}
    }
    let mut f = create_new(&path, 0o644).map_err(io_at(&path))?;
    f.write_all(contents).map_err(io_at(&path))
}

/// Reads a release tarball (`.tar.gz`) through `visit`, entry by entry, under the same rules
/// as a tree: names relative, UTF-8 and without `..`; only directories, regular files and
/// symlinks; links that stay inside. Returns the SHA-256 of the file's bytes (all of them, as
/// read) and the tree. `visit` also gets each entry's mtime.
pub fn read_tarball(
    path: &Path,
    visit: &mut dyn FnMut(&Path, Item<'_>, u64) -> io::Result<()>,
) -> Result<(String, Tree), ArtifactError> {
    let file = fs::File::open(path).map_err(io_at(path))?;
    let mut raw = HashingReader::new(file);
    let mut tree = Tree::new();
    {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&mut raw));
        for entry in archive.entries().map_err(io_at(path))? {
            let mut entry = entry.map_err(io_at(path))?;
            let (rel, kind) = tar_entry_kind(&entry)?;
            let mtime = entry.header().mtime().unwrap_or(0);
            let item = match &kind {
                Kind::Dir => Item::Dir,
                Kind::Link(t) => Item::Link(t.clone()),
                Kind::File { exec, .. } => Item::File {
                    exec: *exec,
                    reader: &mut entry,
                },
            };
            if rel.as_os_str().is_empty() {
                continue; // `./` itself
            }
            visit(&rel, item, mtime).map_err(io_at(&rel))?;
            tree.insert(rel, kind);
        }
    }
    let sha = hex::encode(raw.finish());
    check_tree(&tree)?;
    Ok((sha, tree))
}

/// An entry's relative path and kind, or why it cannot be released.
fn tar_entry_kind<R: Read>(entry: &tar::Entry<'_, R>) -> Result<(PathBuf, Kind), ArtifactError> {
    let raw = entry.path_bytes();
    let name = std::str::from_utf8(&raw).map_err(|_| ArtifactError::NotUtf8 {
        path: String::from_utf8_lossy(&raw).into_owned(),
    })?;
    let bad = |why: &str| ArtifactError::BadEntry {
        path: name.to_owned(),
        why: why.to_owned(),
    };
    let p = Path::new(name);
    if p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(bad("an absolute name or one with `..`"));
    }
    let rel: PathBuf = p
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let mode = entry.header().mode().unwrap_or(0o644);
    let kind = match entry.header().entry_type() {
        tar::EntryType::Directory => Kind::Dir,
        tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File {
            exec: mode & 0o111 != 0,
            sha256: [0; 32],
        },
        tar::EntryType::Symlink => {
            let t = entry
                .link_name_bytes()
                .ok_or_else(|| bad("a symlink without a target"))?;
            let t = std::str::from_utf8(&t).map_err(|_| ArtifactError::NotUtf8 {
                path: name.to_owned(),
            })?;
            Kind::Link(t.to_owned())
        }
        tar::EntryType::Link => return Err(bad("a hard link; artifacts hold no hard links")),
        other => {
            return Err(bad(&format!(
                "a tar entry of type {other:?}; artifacts hold only directories, regular files and symlinks"
            )));
        }
    };
    Ok((rel, kind))
}

/// The digest an artifact is planned with, after checking it against the rules and the app's
/// rendered files (`dests`): a directory tree, or a `.tar.gz` file hashed as bytes.
pub fn inspect(path: &Path, dests: &[&str]) -> Result<String, ArtifactError> {
    let meta = fs::metadata(path).map_err(io_at(path))?;
    let (sha, tree) = if meta.is_file() {
        read_tarball(path, &mut |_, _, _| Ok(()))?
    } else {
        let tree = scan(path)?;
        (tree_digest(&tree), tree)
    };
    for d in dests {
        check_dest(&tree, d)?;
    }
    Ok(sha)
}

/// A file created new, never through a link: `O_CREAT | O_EXCL | O_NOFOLLOW`.
pub fn create_new(path: &Path, mode: u32) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads through to an inner reader, hashing every byte that passes.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }
    /// Reads what is left (so the hash covers the whole input), then returns the hash.
    pub fn finish(mut self) -> [u8; 32] {
        let _ = io::copy(&mut self, &mut io::sink());
        self.hasher.finalize().into()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)], links: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let p = d.path().join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, c).unwrap();
        }
        for (p, t) in links {
            let p = d.path().join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(t, p).unwrap();
        }
        d
    }

    #[test]
    fn digest_is_stable_and_sensitive() {
        let a = tempfile::tempdir().unwrap();
        fs::create_dir(a.path().join("bin")).unwrap();
        fs::write(a.path().join("bin/run"), "echo hi").unwrap();
        fs::write(a.path().join("VERSION"), "1.0.0").unwrap();
        let d1 = digest(a.path()).unwrap();
        let b = tempfile::tempdir().unwrap();
        let dst = b.path().join("copy");
        let (copied, _) = copy_tree(a.path(), &dst).unwrap();
        assert_eq!(d1, copied, "the copy's digest is the source's");
        assert_eq!(d1, digest(&dst).unwrap());
        fs::set_permissions(dst.join("bin/run"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(d1, digest(&dst).unwrap(), "mode change must show");
        fs::write(a.path().join("VERSION"), "1.0.1").unwrap();
        assert_ne!(d1, digest(a.path()).unwrap(), "content change must show");
    }

    /// The digest of a tree did not change with the rules: plans made before still verify.
    #[test]
    fn digest_format_is_unchanged() {
        let a = dir_with(
            &[("VERSION", "1.0.0"), ("a-b", "x"), ("a/b", "y")],
            &[("l", "VERSION")],
        );
        let mut h = Sha256::new();
        for (rel, kind, body) in [
            ("VERSION", b"F", Sha256::digest(b"1.0.0").to_vec()),
            ("a", b"D", vec![]),
            ("a/b", b"F", Sha256::digest(b"y").to_vec()),
            ("a-b", b"F", Sha256::digest(b"x").to_vec()),
            ("l", b"L", b"VERSION".to_vec()),
        ] {
            h.update(rel.as_bytes());
            h.update([0]);
            h.update(kind);
            h.update(&body);
            h.update([0]);
        }
        assert_eq!(digest(a.path()).unwrap(), hex::encode(h.finalize()));
    }

    #[test]
    fn copies_keep_modes_normalised() {
        let a = dir_with(&[("bin/run", "x"), ("data", "y")], &[]);
        fs::set_permissions(a.path().join("bin/run"), fs::Permissions::from_mode(0o4775)).unwrap();
        fs::set_permissions(a.path().join("data"), fs::Permissions::from_mode(0o666)).unwrap();
        let b = tempfile::tempdir().unwrap();
        copy_tree(a.path(), &b.path().join("c")).unwrap();
        let mode = |p: &str| {
            fs::metadata(b.path().join("c").join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(
            mode("bin/run"),
            0o755,
            "setuid and group write are not carried over"
        );
        assert_eq!(mode("data"), 0o644);
    }

    #[test]
    fn links_that_leave_the_tree_are_refused() {
        for (link, target) in [
            ("conf", "/etc"),
            ("conf", "../outside"),
            ("a/b/up", "../../.."),
            ("a/b/p", "."),
        ] {
            let mut links = vec![(link, target)];
            // `a/b/p -> .` stays inside, but `q -> p/../../..` through it climbs out.
            if link == "a/b/p" {
                links.push(("a/b/q", "p/../../.."));
            }
            let d = dir_with(&[("a/b/f", "x")], &links);
            let e = scan(d.path()).unwrap_err();
            assert!(
                matches!(e, ArtifactError::LinkEscapes { .. }),
                "{link} -> {target}: {e}"
            );
        }
        let loop_ = dir_with(&[], &[("a", "b"), ("b", "a")]);
        assert!(matches!(
            scan(loop_.path()).unwrap_err(),
            ArtifactError::TooManyLinks { .. }
        ));
    }

    #[test]
    fn links_inside_the_tree_are_kept() {
        let d = dir_with(
            &[("lib/libx.so.1", "x"), ("share/doc", "d")],
            &[
                ("lib/libx.so", "libx.so.1"),
                ("bin/docs", "../share"),
                ("here", "."),
                ("dangling", "not-there/yet"),
            ],
        );
        let tree = scan(d.path()).unwrap();
        assert!(matches!(tree[Path::new("bin/docs")], Kind::Link(_)));
    }

    #[test]
    fn the_marker_name_and_special_files_are_refused() {
        let d = dir_with(&[(MARKER_FILE, "{}")], &[]);
        assert!(matches!(
            scan(d.path()).unwrap_err(),
            ArtifactError::Reserved { .. }
        ));
        let d = dir_with(&[], &[(MARKER_FILE, "/tmp/elsewhere")]);
        assert!(scan(d.path()).is_err());
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path in our own temp dir.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(matches!(
            scan(d.path()).unwrap_err(),
            ArtifactError::Special { .. }
        ));
    }

    #[test]
    fn non_utf8_names_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(std::ffi::OsStr::from_bytes(b"bad\xff")), "x").unwrap();
        assert!(matches!(
            scan(d.path()).unwrap_err(),
            ArtifactError::NotUtf8 { .. }
        ));
    }

    #[test]
    fn dests_through_links_are_refused() {
        let d = dir_with(&[("etc/base.conf", "x"), ("file", "y")], &[("conf", "etc")]);
        let tree = scan(d.path()).unwrap();
        for bad in [
            "conf/app.conf",
            "conf",
            "etc",
            "file/x",
            "../x",
            "/abs",
            "a/./b",
            MARKER_FILE,
        ] {
            assert!(check_dest(&tree, bad).is_err(), "{bad}");
        }
        for good in [
            "app.conf",
            "etc/app.conf",
            "etc/base.conf",
            "new/dir/app.conf",
        ] {
            check_dest(&tree, good).unwrap();
        }
    }

    fn tarball(
        build: impl FnOnce(&mut tar::Builder<flate2::write::GzEncoder<Vec<u8>>>),
    ) -> tempfile::NamedTempFile {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        build(&mut b);
        let bytes = b.into_inner().unwrap().finish().unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        fs::write(f.path(), bytes).unwrap();
        f
    }

    fn entry(kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(0);
        h
    }

    #[test]
    fn tarballs_keep_the_same_rules() {
        let good = tarball(|b| {
            let mut h = entry(tar::EntryType::Regular, 0o4755);
            h.set_size(2);
            b.append_data(&mut h, "bin/run", &b"hi"[..]).unwrap();
            b.append_link(
                &mut entry(tar::EntryType::Symlink, 0o777),
                "run2",
                "bin/run",
            )
            .unwrap();
        });
        let (sha, tree) = read_tarball(good.path(), &mut |_, _, _| Ok(())).unwrap();
        assert_eq!(
            sha,
            digest(good.path()).unwrap(),
            "a tarball is hashed as bytes"
        );
        assert!(matches!(
            tree[Path::new("bin/run")],
            Kind::File { exec: true, .. }
        ));
        assert_eq!(inspect(good.path(), &["etc/app.conf"]).unwrap(), sha);
        assert!(
            inspect(good.path(), &["run2"]).is_err(),
            "a dest onto a link"
        );

        let escaping = tarball(|b| {
            b.append_link(&mut entry(tar::EntryType::Symlink, 0o777), "conf", "/etc")
                .unwrap();
        });
        assert!(matches!(
            read_tarball(escaping.path(), &mut |_, _, _| Ok(())).unwrap_err(),
            ArtifactError::LinkEscapes { .. }
        ));
        let hard = tarball(|b| {
            b.append_link(
                &mut entry(tar::EntryType::Link, 0o644),
                "shadow",
                "/etc/shadow",
            )
            .unwrap();
        });
        let e = read_tarball(hard.path(), &mut |_, _, _| Ok(())).unwrap_err();
        assert!(e.to_string().contains("hard link"), "{e}");
        let device = tarball(|b| {
            b.append_data(
                &mut entry(tar::EntryType::Char, 0o644),
                "dev/mem",
                std::io::empty(),
            )
            .unwrap();
        });
        assert!(read_tarball(device.path(), &mut |_, _, _| Ok(())).is_err());
        let dotdot = tarball(|b| {
            let mut h = entry(tar::EntryType::Regular, 0o644);
            h.as_old_mut().name[..9].copy_from_slice(b"../escape");
            h.set_cksum();
            b.append(&h, std::io::empty()).unwrap();
        });
        let e = read_tarball(dotdot.path(), &mut |_, _, _| Ok(())).unwrap_err();
        assert!(e.to_string().contains("`..`"), "{e}");
    }

    #[test]
    fn write_into_never_follows_a_link() {
        let outside = tempfile::tempdir().unwrap();
        let d = dir_with(&[("etc/keep", "x")], &[]);
        let rel = tempfile::tempdir().unwrap();
        let release = rel.path().join("r");
        let (_, tree) = copy_tree(d.path(), &release).unwrap();
        write_into(&release, &tree, "etc/app.conf", b"secret=1").unwrap();
        assert_eq!(fs::read(release.join("etc/app.conf")).unwrap(), b"secret=1");
        // A link planted after the scan (the tree does not know it) is still not followed.
        std::os::unix::fs::symlink(outside.path().join("x.conf"), release.join("etc/late.conf"))
            .unwrap();
        write_into(&release, &tree, "etc/late.conf", b"s").unwrap();
        assert!(!outside.path().join("x.conf").exists());
        std::os::unix::fs::symlink(outside.path(), release.join("sub")).unwrap();
        assert!(write_into(&release, &tree, "sub/app.conf", b"s").is_err());
        assert!(!outside.path().join("app.conf").exists());
    }
}

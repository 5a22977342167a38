//! The shell scripts the SSH driver runs on an endpoint. Pure: values in, POSIX sh text out;
//! every value is quoted. Layout under the endpoint's root, as for the local target:
//! `<root>/<app>/releases/<version>/` with `.ferry-release.json`, and `current` -> release.

use shell_escape::unix::escape;

pub use crate::drivers::MARKER_FILE as MARKER;

fn q(s: &str) -> String {
    escape(s.into()).into_owned()
}

/// Prints `current=`, `release=` lines, each complete release's marker (`marker=VERSION
/// JSON`: what lets an apply skip its preflight round trip) and hardware facts (`cpus=`,
/// `memory_kb=`, `disk_total_kb=`, `disk_free_kb=`, `os=`). Shell built-ins wherever
/// possible: on a busy endpoint every extra process costs more than the command itself.
pub fn observe(app_dir: &str, root: &str) -> String {
    format!(
        r#"set -u
A={app}
# `cd -P` resolves the link and sets $PWD: the release `current` names, without a process.
cur=
if cd -P "$A/current" 2>/dev/null; then cur=$PWD; cd /; fi
echo "current=${{cur##*/}}"
for d in "$A"/releases/*/; do
  d=${{d%/}}
  if [ -f "$d/{MARKER}" ]; then
    echo "release=${{d##*/}}"
    m=; read -r m < "$d/{MARKER}" || :
    echo "marker=${{d##*/}} $m"
  fi
done
n=0
while read -r k _; do case $k in processor) n=$((n + 1)) ;; esac; done < /proc/cpuinfo
echo "cpus=$n"
while read -r k v _; do [ "$k" = MemTotal: ] && echo "memory_kb=$v"; done < /proc/meminfo
p={root}
while [ ! -e "$p" ]; do p=${{p%/*}}; [ -z "$p" ] && p=/; done
df -Pk "$p" | {{ read -r _; read -r _ total _ free _; echo "disk_total_kb=$total"; echo "disk_free_kb=$free"; }}
if [ -r /etc/os-release ]; then . /etc/os-release; echo "os=${{ID:-unknown}} ${{VERSION_ID:-}}"; else echo "os=unknown"; fi
"#,
        app = q(app_dir),
        root = q(root),
    )
}

/// Prints the release marker of `version`, if that release is complete.
pub fn preflight(app_dir: &str, version: &str) -> String {
    format!(
        "cat {app}/releases/{ver}/{MARKER} 2>/dev/null || true\n",
        app = q(app_dir),
        ver = q(version)
    )
}

/// One command line that receives the release tarball on stdin (artifact, rendered files and
/// the release marker, packed by ferry), checks its SHA-256, unpacks it into a staging folder,
/// renames that into `releases/<version>`, switches `current` and prunes old releases (never
/// the one `current` named before: a back-out returns to it). It holds paths, the version and
/// a checksum only (no secret), so it may travel as the exec command.
pub fn install(app_dir: &str, version: &str, sha256: &str, keep: u32) -> String {
    let body = format!(
        r#"set -eu
A={app}
V={ver}
[ -d "$A/.incoming" ] && [ -d "$A/releases" ] || mkdir -p "$A/.incoming" "$A/releases"
T="$A/.incoming/$V.tar.gz.$$"
S="$A/releases/.staging-$$"
trap 'rm -rf "$T" "$S"' EXIT
trap 'exit 130' HUP INT TERM
# Leftovers of runs that died (kill -9, a cut link), an hour old: looked for with a glob
# first, since on a busy endpoint every process costs more than the command itself.
for f in "$A"/.incoming/*.tar.gz.* "$A"/releases/.staging-*; do
  if [ -e "$f" ]; then
    find "$A/.incoming" "$A/releases" -maxdepth 1 \( -name '*.tar.gz.*' -o -name '.staging-*' \) -mmin +60 -exec rm -rf {{}} + 2>/dev/null || true
    break
  fi
done
umask 022
cat > "$T"
set -- $(sha256sum "$T")
if [ "$1" != {sha} ]; then echo "uploaded release checksum $1 does not match {sha_plain}" >&2; exit 3; fi
mkdir "$S"
tar -xzf "$T" -C "$S" --no-same-owner
# The marker's time is the install's (the tarball's are fixed): prune keeps the newest.
touch "$S/{MARKER}"
R="$A/releases/$V"
if [ -e "$R" ]; then mv "$R" "$S.old"; rm -rf "$S.old"; fi
mv "$S" "$R"
{previous}{switch}{prune}"#,
        app = q(app_dir),
        ver = q(version),
        sha = q(sha256),
        sha_plain = sha256,
        previous = previous_body(keep),
        switch = switch_body(),
        prune = prune_body(keep),
    );
    format!("sh -c {}", q(&body))
}

/// Keeps in `$P` the release `current` names before the switch, which prune must not remove;
/// read only when there are more releases than prune keeps (a process saved otherwise).
fn previous_body(keep: u32) -> String {
    format!(
        r#"P=
set -- "$A"/releases/*/
if [ "$#" -gt {keep} ]; then P=$(readlink "$A/current" 2>/dev/null || true); P=${{P##*/}}; fi
"#
    )
}

/// Switches `current` to `$V`.
fn switch_body() -> String {
    format!(
        r#"if [ ! -f "$A/releases/$V/{MARKER}" ]; then echo "release $V is not on this endpoint" >&2; exit 4; fi
ln -sfn "releases/$V" "$A/.current.tmp"
mv -Tf "$A/.current.tmp" "$A/current"
sync "$A" "$A/releases" 2>/dev/null || true
"#
    )
}

/// Removes releases beyond the newest `keep`, never `$V` nor `$P` (set before the switch).
fn prune_body(keep: u32) -> String {
    format!(
        r#"set -- "$A"/releases/*/
if [ "$#" -gt {keep} ]; then
  n=0
  for m in $(ls -1t "$A"/releases/*/{MARKER} 2>/dev/null); do
    d=${{m%/*}}; v=${{d##*/}}; n=$((n + 1))
    if [ "$n" -gt {keep} ] && [ "$v" != "$V" ] && [ "$v" != "$P" ]; then rm -rf "$d"; fi
  done
fi
"#
    )
}

/// Points `current` at `releases/<version>` atomically (rename of a fresh symlink); exit 4
/// when that release is not on the endpoint. With `keep`, also prunes old releases.
pub fn switch(app_dir: &str, version: &str) -> String {
    format!(
        "set -eu\nA={}\nV={}\n{}",
        q(app_dir),
        q(version),
        switch_body()
    )
}

pub fn switch_and_prune(app_dir: &str, version: &str, keep: u32) -> String {
    format!(
        "set -eu\nA={}\nV={}\n{}{}{}",
        q(app_dir),
        q(version),
        previous_body(keep),
        switch_body(),
        prune_body(keep)
    )
}

pub fn uninstall(app_dir: &str) -> String {
    format!("set -eu\nrm -f {}/current\n", q(app_dir))
}

/// An environment name that is not `[A-Za-z_][A-Za-z0-9_]*`: it would be shell text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{}` is not an environment variable name; refusing to put it in a script", .0.escape_debug())]
pub struct BadEnvName(pub String);

/// Runs an app command (restart, health) in `current` with its environment. The script, and
/// so every secret in it, travels on stdin. Values are quoted; names cannot be, so a name
/// that is not a plain identifier is refused here too, whatever validation said.
pub fn hook(app_dir: &str, env: &[(&str, &str)], argv: &[String]) -> Result<String, BadEnvName> {
    let mut s = format!("set -eu\ncd {}/current\n", q(app_dir));
    for (k, v) in env {
        if !crate::secret::is_env_name(k) {
            return Err(BadEnvName((*k).to_owned()));
        }
        s.push_str(&format!("export {k}={}\n", q(v)));
    }
    let cmd: Vec<String> = argv.iter().map(|a| q(a)).collect();
    s.push_str(&format!("exec {}\n", cmd.join(" ")));
    Ok(s)
}

/// Checks that `current` is `version`, then runs the health command (exit 97: not current).
pub fn health(
    app_dir: &str,
    version: &str,
    env: &[(&str, &str)],
    argv: &[String],
) -> Result<String, BadEnvName> {
    // `cd -P` resolves `current` and sets $PWD to the release it names (no process).
    let check = format!(
        "cur=\nif cd -P {}/current 2>/dev/null; then cur=$PWD; fi\nif [ \"${{cur##*/}}\" != {} ]; then echo \"current is ${{cur##*/}}\" >&2; exit 97; fi\n",
        q(app_dir),
        q(version)
    );
    Ok(format!("{check}{}", hook(app_dir, env, argv)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted() {
        assert!(install("/r/a b", "1.0", "abc", 3).starts_with("sh -c '"));
        let s = hook(
            "/opt/ferry/app",
            &[("TOKEN", "a'b $(rm -rf /)")],
            &["sh".into(), "bin/health".into()],
        )
        .unwrap();
        assert!(s.contains(r#"export TOKEN='a'\''b $(rm -rf /)'"#), "{s}");
        assert!(s.ends_with("exec sh bin/health\n"), "{s}");
    }

    /// A name is shell text, so one that is not an identifier never reaches a script.
    #[test]
    fn env_names_that_are_shell_text_are_refused() {
        for bad in ["LOG=1; id > /tmp/x; X", "A B", "$(id)", "1X", "", "X\nid"] {
            let e = hook("/r/a", &[(bad, "v")], &["true".into()]).unwrap_err();
            assert_eq!(e, BadEnvName(bad.to_owned()));
            assert!(health("/r/a", "1", &[(bad, "v")], &["true".into()]).is_err());
        }
        assert!(hook("/r/a", &[("_OK_1", "v")], &["true".into()]).is_ok());
    }

    #[test]
    fn scripts_parse_as_posix_sh() {
        for script in [
            observe("/r/app", "/r"),
            preflight("/r/app", "1.0"),
            switch("/r/app", "1.0"),
            switch_and_prune("/r/app", "1.0", 3),
            uninstall("/r/app"),
            health("/r/app", "1.0", &[("A", "b")], &["true".into()]).unwrap(),
        ] {
            let out = std::process::Command::new("sh")
                .arg("-n")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{script}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// `dir` as a gzipped tarball, by tar.
    fn tarball(dir: &std::path::Path) -> Vec<u8> {
        std::process::Command::new("tar")
            .args(["-czf", "-", "-C"])
            .arg(dir)
            .arg(".")
            .output()
            .unwrap()
            .stdout
    }

    /// The switch keeps what `current` named before (a back-out returns to it), whatever
    /// `keep` says; older releases go.
    #[test]
    fn prune_keeps_the_release_current_named_before_the_switch() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app").display().to_string();
        for v in ["a", "b", "c"] {
            let src = tempfile::tempdir().unwrap();
            std::fs::write(src.path().join(MARKER), "{}").unwrap();
            let tgz = tarball(src.path());
            let sha = crate::load::sha256_hex(&tgz);
            let mut child = std::process::Command::new("sh")
                .arg("-c")
                .arg(install(&app, v, &sha, 1))
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(&tgz).unwrap();
            assert!(child.wait().unwrap().success());
        }
        let mut left: Vec<String> = std::fs::read_dir(dir.path().join("app/releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["b", "c"]);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(switch_and_prune(&app, "b", 1))
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(dir.path().join("app/releases/c").exists(), "c was current");
    }

    /// The install command runs for real against a local directory: stdin in, release out.
    #[test]
    fn install_command_unpacks_switches_and_checks_the_checksum() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app").display().to_string();
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("VERSION"), "1.0").unwrap();
        std::fs::write(src.path().join(MARKER), "{}").unwrap();
        let tgz = tarball(src.path());
        let sha = crate::load::sha256_hex(&tgz);
        let run = |sha: &str| {
            let mut child = std::process::Command::new("sh")
                .arg("-c")
                .arg(install(&app, "1.0", sha, 3))
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(&tgz).unwrap();
            child.wait_with_output().unwrap()
        };
        let bad = run("0000");
        assert_eq!(
            bad.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&bad.stderr)
        );
        assert!(
            std::fs::read_link(dir.path().join("app/current")).is_err(),
            "nothing switched on a bad checksum"
        );
        let left = |sub: &str| {
            std::fs::read_dir(dir.path().join("app").join(sub))
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        assert!(
            left(".incoming").is_empty(),
            "upload left behind: {:?}",
            left(".incoming")
        );
        assert!(
            left("releases").is_empty(),
            "staging left behind: {:?}",
            left("releases")
        );
        let ok = run(&sha);
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("app/current")).unwrap(),
            std::path::Path::new("releases/1.0")
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("app/current/VERSION")).unwrap(),
            "1.0"
        );
    }
}

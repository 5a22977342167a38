//! The shell scripts the SSH driver runs on an endpoint. Pure: values in, POSIX sh text out;
//! every value is quoted. Layout under the endpoint's root, as for the local target:
//! `<root>/<app>/releases/<version>/` with `.ferry-release.json`, and `current` -> release.

use shell_escape::unix::escape;

use crate::drivers::RenderedFile;

pub const MARKER: &str = ".ferry-release.json";

fn q(s: &str) -> String {
    escape(s.into()).into_owned()
}

/// Prints `current=`, `release=` lines and hardware facts (`cpus=`, `memory_kb=`,
/// `disk_total_kb=`, `disk_free_kb=`, `os=`).
pub fn observe(app_dir: &str, root: &str) -> String {
    format!(
        r#"set -u
A={app}
cur=$(readlink "$A/current" 2>/dev/null || true)
echo "current=${{cur##*/}}"
for d in "$A"/releases/*/; do
  [ -f "$d{MARKER}" ] && echo "release=$(basename "$d")"
done
echo "cpus=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
echo "memory_kb=$(awk '/^MemTotal:/ {{print $2}}' /proc/meminfo)"
p={root}
while [ ! -e "$p" ]; do p=$(dirname "$p"); done
df -Pk "$p" | awk 'NR==2 {{print "disk_total_kb=" $2; print "disk_free_kb=" $4}}'
if [ -r /etc/os-release ]; then . /etc/os-release; echo "os=${{ID:-unknown}} ${{VERSION_ID:-}}"; else echo "os=$(uname -s)"; fi
"#,
        app = q(app_dir),
        root = q(root),
    )
}

/// Prints `current=` and then the release marker of `version`, if that release is complete.
pub fn preflight(app_dir: &str, version: &str) -> String {
    format!(
        "cur=$(readlink {app}/current 2>/dev/null || true)\necho \"current=${{cur##*/}}\"\ncat {app}/releases/{ver}/{MARKER} 2>/dev/null || true\n",
        app = q(app_dir),
        ver = q(version)
    )
}

/// `mkdir -p` of the upload folder and `cat >` of the upload, as one command line (no secrets).
pub fn upload_command(app_dir: &str, remote: &str) -> String {
    format!(
        "mkdir -p {} {}/releases && cat > {}",
        q(&incoming_dir(app_dir)),
        q(app_dir),
        q(remote)
    )
}

pub fn incoming_dir(app_dir: &str) -> String {
    format!("{app_dir}/.incoming")
}

/// Checks the uploaded tarball, unpacks it into a staging folder with the rendered files and
/// the marker, and renames it into `releases/<version>`.
pub fn install(
    app_dir: &str,
    version: &str,
    tarball: &str,
    sha256: &str,
    files: &[RenderedFile],
    marker_json: &str,
) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut s = format!(
        r#"set -eu
A={app}
T={tarball}
got=$(sha256sum "$T" | cut -d' ' -f1)
if [ "$got" != {sha} ]; then echo "uploaded artifact checksum $got does not match {sha_plain}" >&2; rm -f "$T"; exit 3; fi
S="$A/releases/.staging-{ver_plain}-$$"
rm -rf "$S"
mkdir -p "$S"
tar -xzf "$T" -C "$S"
"#,
        app = q(app_dir),
        tarball = q(tarball),
        sha = q(sha256),
        sha_plain = sha256,
        ver_plain = version.replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-',
            "_"
        ),
    );
    for f in files {
        s.push_str(&format!("mkdir -p \"$(dirname \"$S\"/{dest})\"\nprintf '%s' {data} | base64 -d > \"$S\"/{dest}\n", dest = q(&f.dest), data = q(&b64.encode(&f.contents))));
    }
    s.push_str(&format!(
        r#"printf '%s' {marker} | base64 -d > "$S/{MARKER}"
R="$A/releases/"{ver}
if [ -e "$R" ]; then mv "$R" "$S.replaced"; rm -rf "$S.replaced"; fi
mv "$S" "$R"
rm -f "$T"
sync "$A/releases" 2>/dev/null || sync
"#,
        marker = q(&b64.encode(marker_json)),
        ver = q(version),
    ));
    s
}

/// Points `current` at `releases/<version>` atomically (rename of a fresh symlink).
pub fn switch(app_dir: &str, version: &str) -> String {
    format!(
        r#"set -eu
A={app}
if [ ! -f "$A/releases/"{ver}/{MARKER} ]; then echo "release "{ver}" is not on this endpoint" >&2; exit 4; fi
ln -sfn "releases/"{ver} "$A/.current.tmp"
mv -Tf "$A/.current.tmp" "$A/current"
sync "$A" 2>/dev/null || sync
"#,
        app = q(app_dir),
        ver = q(version),
    )
}

pub fn uninstall(app_dir: &str) -> String {
    format!("set -eu\nrm -f {}/current\n", q(app_dir))
}

/// Runs an app command (restart, health) in `current` with its environment. The script, and
/// so every secret in it, travels on stdin.
pub fn hook(app_dir: &str, env: &[(&str, &str)], argv: &[String]) -> String {
    let mut s = format!("set -eu\ncd {}/current\n", q(app_dir));
    for (k, v) in env {
        s.push_str(&format!("export {k}={}\n", q(v)));
    }
    let cmd: Vec<String> = argv.iter().map(|a| q(a)).collect();
    s.push_str(&format!("exec {}\n", cmd.join(" ")));
    s
}

/// Checks that `current` is `version`, then runs the health command (exit 97: not current).
pub fn health(app_dir: &str, version: &str, env: &[(&str, &str)], argv: &[String]) -> String {
    let check = format!(
        "cur=$(readlink {}/current 2>/dev/null || true)\nif [ \"${{cur##*/}}\" != {} ]; then echo \"current is ${{cur##*/}}\" >&2; exit 97; fi\n",
        q(app_dir),
        q(version)
    );
    format!("{check}{}", hook(app_dir, env, argv))
}

/// Removes the oldest complete releases beyond `keep`, never `current` nor `protect`.
pub fn prune(app_dir: &str, keep: u32, protect: Option<&str>) -> String {
    format!(
        r#"set -u
A={app}
cur=$(readlink "$A/current" 2>/dev/null || true); cur=${{cur##*/}}
keep={keep}
n=0
for m in $(ls -1t "$A"/releases/*/{MARKER} 2>/dev/null); do
  d=$(dirname "$m"); v=$(basename "$d")
  n=$((n + 1))
  if [ "$n" -gt "$keep" ] && [ "$v" != "$cur" ] && [ "$v" != {protect} ]; then rm -rf "$d"; fi
done
"#,
        app = q(app_dir),
        protect = q(protect.unwrap_or("")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted() {
        let s = hook(
            "/opt/ferry/app",
            &[("TOKEN", "a'b $(rm -rf /)")],
            &["sh".into(), "bin/health".into()],
        );
        assert!(s.contains(r#"export TOKEN='a'\''b $(rm -rf /)'"#), "{s}");
        assert!(s.ends_with("exec sh bin/health\n"), "{s}");
    }

    #[test]
    fn scripts_parse_as_posix_sh() {
        let files = [RenderedFile {
            dest: "conf/app.conf".into(),
            contents: "x = 'y'\n".into(),
        }];
        for script in [
            observe("/r/app", "/r"),
            install(
                "/r/app",
                "1.0",
                "/r/app/.incoming/1.0.tgz",
                "abc",
                &files,
                "{}",
            ),
            switch("/r/app", "1.0"),
            preflight("/r/app", "1.0"),
            health("/r/app", "1.0", &[("A", "b")], &["true".into()]),
            uninstall("/r/app"),
            prune("/r/app", 3, Some("0.9")),
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
}

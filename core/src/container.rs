//! A Docker app's container settings as the inventory writes them (published ports, volumes,
//! the image reference of a version): parsed and checked here, turned into Engine API calls by
//! the Docker driver.

use serde::Serialize;

use crate::model::DockerApp;

/// Destination of the rendered `env_template` among a bundle's files (never a real path:
/// docker apps' files have absolute destinations).
pub const ENV_FILE_DEST: &str = "(environment)";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    pub host_ip: Option<String>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: String,
}

/// `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]`.
pub fn parse_port(s: &str) -> Result<Port, String> {
    let bad =
        |why: &str| format!("`{s}`: {why} (expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp])");
    let (rest, proto) = match s.rsplit_once('/') {
        Some((r, p)) if p == "tcp" || p == "udp" => (r, p.to_owned()),
        Some(_) => return Err(bad("protocol must be tcp or udp")),
        None => (s, "tcp".to_owned()),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, cont) = match parts.as_slice() {
        [h, c] => (None, *h, *c),
        [ip, h, c] if !ip.is_empty() => (Some((*ip).to_owned()), *h, *c),
        _ => return Err(bad("wrong number of parts")),
    };
    let num = |p: &str, what: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad(&format!("{what} `{p}` is not a port number"))),
        }
    };
    Ok(Port {
        host_ip: ip,
        host_port: num(host, "host port")?,
        container_port: num(cont, "container port")?,
        proto,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Mount {
    /// A named volume: data that outlives containers; ferry never removes it.
    Volume {
        name: String,
        target: String,
        read_only: bool,
    },
    Bind {
        source: String,
        target: String,
        read_only: bool,
    },
}

/// `VOLUME_NAME:/path[:ro]` or `/host/path:/path[:ro]`.
pub fn parse_volume(s: &str) -> Result<Mount, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, target, read_only) = match parts.as_slice() {
        [a, b] => (*a, *b, false),
        [a, b, "ro"] => (*a, *b, true),
        [a, b, "rw"] => (*a, *b, false),
        _ => {
            return Err(format!(
                "`{s}`: expected VOLUME_NAME:/path[:ro] or /host/path:/path[:ro]"
            ));
        }
    };
    if !target.starts_with('/') {
        return Err(format!(
            "`{s}`: the container path `{target}` must be absolute"
        ));
    }
    if src.starts_with('/') {
        Ok(Mount::Bind {
            source: src.to_owned(),
            target: target.to_owned(),
            read_only,
        })
    } else if !src.is_empty()
        && src
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        Ok(Mount::Volume {
            name: src.to_owned(),
            target: target.to_owned(),
            read_only,
        })
    } else {
        Err(format!(
            "`{s}`: `{src}` is neither a volume name ([A-Za-z0-9_.-]) nor an absolute host path"
        ))
    }
}

/// The registry an image reference names (`harbor.lab:5000/ehr/web:1` → `harbor.lab:5000`):
/// its first part when that has a `.` or a `:` or is `localhost`; Docker Hub otherwise.
pub fn registry_of(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The image reference of `version`. A tag cannot hold `+` (Docker answers `invalid
/// reference format`), so semver build metadata is written with `_`, as Helm and OCI
/// registries do (`1.4.0+build.7` is tag `1.4.0_build.7`); every other character a ferry
/// version may hold is valid in a tag.
pub fn image_ref(app: &DockerApp, version: &str) -> String {
    app.image.replace("{version}", &version.replace('+', "_"))
}

#[cfg(test)]
mod image_tests {
    use super::*;

    #[test]
    fn build_metadata_becomes_a_valid_tag() {
        let app: DockerApp =
            serde_json::from_value(serde_json::json!({"image": "ehr/web:{version}"})).unwrap();
        assert_eq!(image_ref(&app, "1.4.0+build.7"), "ehr/web:1.4.0_build.7");
        assert_eq!(image_ref(&app, "1.4.0"), "ehr/web:1.4.0");
    }

    #[test]
    fn the_registry_of_an_image() {
        assert_eq!(registry_of("ehr/web:1"), "docker.io");
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("ghcr.io/org/web:1"), "ghcr.io");
        assert_eq!(
            registry_of("127.0.0.1:5443/ferry-test/web:1"),
            "127.0.0.1:5443"
        );
        assert_eq!(registry_of("localhost/web"), "localhost");
    }
}

#!/usr/bin/env bash
# A private image registry for the Docker tests: Debian's docker-registry (the CNCF
# distribution registry) with htpasswd logins, started by a test on a loopback port with its own
# configuration and storage (ci/registry.sh start PORT DIR USER PASSWORD). The Docker engine
# treats 127.0.0.0/8 registries as insecure-allowed, so no TLS is needed on loopback.
set -euo pipefail

case "${1:-}" in
install)
  if ! command -v docker-registry >/dev/null || ! command -v htpasswd >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry apache2-utils >/dev/null
  fi
  # Debian starts a system registry on :5000; the tests run their own.
  service docker-registry stop >/dev/null 2>&1 || true
  echo "docker-registry: $(docker-registry --version 2>&1 | head -1)"
  ;;
start)
  port="${2:?port}"
  dir="${3:?directory}"
  user="${4:?user}"
  password="${5:?password}"
  mkdir -p "$dir/data"
  htpasswd -Bbn "$user" "$password" >"$dir/htpasswd"
  cat >"$dir/config.yml" <<CONF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
auth:
  htpasswd:
    realm: ferry-test
    path: $dir/htpasswd
CONF
  nohup docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
  echo $! >"$dir/registry.pid"
  for _ in $(seq 100); do
    if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "docker-registry listening on 127.0.0.1:$port"
      exit 0
    fi
    sleep 0.1
  done
  echo "docker-registry did not start on 127.0.0.1:$port; its log:" >&2
  cat "$dir/registry.log" >&2 || true
  exit 1
  ;;
stop)
  dir="${2:?directory}"
  if [ -f "$dir/registry.pid" ]; then kill "$(cat "$dir/registry.pid")" 2>/dev/null || true; fi
  ;;
*)
  echo "usage: ci/registry.sh install | start PORT DIR USER PASSWORD | stop DIR" >&2
  exit 2
  ;;
esac

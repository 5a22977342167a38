#!/usr/bin/env bash
# Proxies for the tests that reach a Kubernetes API server through HTTPS_PROXY/HTTP_PROXY:
# Debian's tinyproxy (HTTP CONNECT; ci/proxy.sh start PORT DIR) and microsocks (SOCKS5;
# ci/proxy.sh socks PORT DIR), each started by the test itself on a loopback port. Debian starts a system tinyproxy on install; it is stopped here
# so that only the tests' own instances run.
set -euo pipefail

# Waits until something listens on 127.0.0.1:$1 (a name for messages in $2).
listening() {
  for _ in $(seq 50); do
    if (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
      echo "$2 listening on 127.0.0.1:$1"
      return 0
    fi
    sleep 0.1
  done
  echo "$2 did not start on 127.0.0.1:$1" >&2
  return 1
}

case "${1:-}" in
install)
  if ! command -v tinyproxy >/dev/null || ! command -v microsocks >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tinyproxy microsocks >/dev/null
  fi
  service tinyproxy stop >/dev/null 2>&1 || true
  pkill -x tinyproxy 2>/dev/null || true
  echo "tinyproxy: $(tinyproxy -v 2>&1 | head -1)"
  ;;
start)
  port="${2:?port}"
  dir="${3:?directory for the configuration and log}"
  mkdir -p "$dir"
  # CONNECT to any port (no ConnectPort line), from loopback only; every request logged.
  cat >"$dir/tinyproxy.conf" <<CONF
Port $port
Listen 127.0.0.1
Timeout 30
LogFile "$dir/tinyproxy.log"
LogLevel Connect
PidFile "$dir/tinyproxy.pid"
MaxClients 50
Allow 127.0.0.1
CONF
  tinyproxy -c "$dir/tinyproxy.conf"
  listening "$port" tinyproxy || { cat "$dir/tinyproxy.log" >&2 || true; exit 1; }
  ;;
socks)
  # A SOCKS5 proxy (Debian's microsocks) for `socks5://` proxy URLs.
  port="${2:?port}"
  dir="${3:?directory for the pid file}"
  mkdir -p "$dir"
  nohup microsocks -i 127.0.0.1 -p "$port" >"$dir/microsocks.log" 2>&1 &
  echo $! >"$dir/microsocks.pid"
  listening "$port" microsocks
  ;;
stop)
  dir="${2:?directory}"
  for pid in "$dir/tinyproxy.pid" "$dir/microsocks.pid"; do
    if [ -f "$pid" ]; then kill "$(cat "$pid")" 2>/dev/null || true; fi
  done
  ;;
*)
  echo "usage: ci/proxy.sh install | start PORT DIR | socks PORT DIR | stop DIR" >&2
  exit 2
  ;;
esac

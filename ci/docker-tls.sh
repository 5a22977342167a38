#!/usr/bin/env bash
# The machine's Docker engine behind mutual TLS on a loopback TCP port, as a remote Docker host
# is reached (tcp://HOST:2376 with client certificates).
#
#   ci/docker-tls.sh install            install stunnel from apt if it is missing
#   ci/docker-tls.sh start DIR PORT     make a CA, a server certificate for 127.0.0.1 and a client
#                                       certificate in DIR, and listen on 127.0.0.1:PORT (stunnel
#                                       terminates TLS, demands a client certificate signed by
#                                       the CA, and forwards to /var/run/docker.sock)
#
# stunnel, not socat: socat's OpenSSL server sets no session id context, so a client that resumes
# a TLS session with a client certificate (rustls does) is refused with an internal error.
#   ci/docker-tls.sh stop DIR           stop that listener
#
# DIR receives ca.pem, server.pem, server-key.pem, client.pem, client-key.pem, and
# rogue-client.pem / rogue-client-key.pem signed by another CA (must be refused).
set -euo pipefail

install() {
  if ! command -v stunnel >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stunnel4 >/dev/null
  fi
}

cert() { # DIR NAME CA_PREFIX EXT
  local dir=$1 name=$2 ca=$3 ext=$4
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$name-key.pem" 2>>"$dir/openssl.log"
  openssl req -new -key "$dir/$name-key.pem" -subj "/CN=ferry-test-$name" -out "$dir/$name.csr" 2>>"$dir/openssl.log"
  printf '%s\n' "$ext" >"$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/$ca.pem" -CAkey "$dir/$ca-key.pem" \
    -CAcreateserial -days 2 -sha256 -extfile "$dir/$name.ext" -out "$dir/$name.pem" 2>>"$dir/openssl.log"
}

ca() { # DIR NAME
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=ferry-test-$2" -keyout "$1/$2-key.pem" -out "$1/$2.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>>"$1/openssl.log"
}

start() {
  local dir=$1 port=$2
  command -v stunnel >/dev/null || { echo "stunnel is not installed: run ci/docker-tls.sh install" >&2; exit 1; }
  mkdir -p "$dir"
  # A failing step says why (set -e would end the script silently).
  trap 'echo "ci/docker-tls.sh start failed at line $LINENO:" >&2; cat "$dir/openssl.log" >&2 2>/dev/null' ERR
  ca "$dir" ca
  ca "$dir" rogue-ca
  cert "$dir" server ca "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1"
  cert "$dir" client ca "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
  cert "$dir" rogue-client rogue-ca "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
  cat >"$dir/stunnel.conf" <<EOF
pid = $dir/stunnel.pid
output = $dir/stunnel.log
[docker]
accept = 127.0.0.1:$port
connect = /var/run/docker.sock
cert = $dir/server.pem
key = $dir/server-key.pem
CAfile = $dir/ca.pem
verifyChain = yes
requireCert = yes
EOF
  stunnel "$dir/stunnel.conf" </dev/null >/dev/null 2>&1
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then exit 0; fi
    sleep 0.05
  done
  echo "stunnel did not listen on 127.0.0.1:$port: $(cat "$dir/stunnel.log" 2>/dev/null)" >&2
  exit 1
}

stop() {
  local dir=$1
  if [ -f "$dir/stunnel.pid" ]; then
    kill "$(cat "$dir/stunnel.pid")" 2>/dev/null || true
  fi
}

case "${1:-}" in
  install) install ;;
  start) start "$2" "$3" ;;
  stop) stop "$2" ;;
  *) echo "usage: $0 install | start DIR PORT | stop DIR" >&2; exit 2 ;;
esac

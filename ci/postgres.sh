#!/usr/bin/env bash
# PostgreSQL clusters for tests, from Debian's packages: each test makes its own throwaway
# cluster (initdb as the postgres user) on a loopback port of its choosing.
#
#   ci/postgres.sh install                  install Debian's postgresql if initdb is missing
#   ci/postgres.sh start DIR PORT [tls]     initdb in DIR/pg (owned by postgres), start it on
#                                           127.0.0.1:PORT with its socket in DIR/pg; a login
#                                           role `probe` (password `probe-secret`) and a
#                                           database `app` owned by postgres; returns once it
#                                           answers. With `tls`: a throwaway CA (DIR/pg/ca.crt)
#                                           signs the server's certificate (IP 127.0.0.1) and
#                                           TCP connections must use TLS (hostssl)
#   ci/postgres.sh psql DIR PORT SQL        run SQL in database `app` as the superuser (socket)
#   ci/postgres.sh stop DIR                 stop it (immediate)
#   ci/postgres.sh restart DIR PORT         start a stopped cluster again
#
# Tests run with fsync off (their clusters are thrown away); PG_FSYNC=on for a benchmark that
# must pay for durability like production does.
#
# Local (socket) connections are trusted, TCP ones need a password (scram-sha-256): ferry's
# probes connect over TCP with the password from a secret reference, as they would in a site.
set -euo pipefail

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

install() {
  if ! bindir >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  bindir >/dev/null || { echo "PostgreSQL's initdb is missing after install" >&2; exit 1; }
  reserve_ports
}

# The tests' clusters listen on fixed ports 55400-55499, inside the kernel's ephemeral range
# (32768-60999): a client socket that happens to get one of them (the bucket tests open
# thousands) makes a cluster fail to start with "Address already in use". Reserve them, keeping
# whatever else is reserved. Where /proc/sys is read-only, say so and go on.
reserve_ports() {
  local f=/proc/sys/net/ipv4/ip_local_reserved_ports cur
  cur=$(cat "$f" 2>/dev/null || true)
  case ",$cur," in *",55400-55499,"*) return 0 ;; esac
  if ! echo "${cur:+$cur,}55400-55499" >"$f" 2>/dev/null; then
    echo "warning: cannot reserve ports 55400-55499 from the ephemeral range ($f is read-only)" >&2
  fi
}

as_pg() {
  runuser -u postgres -- "$@"
}

# A CA and a server certificate for 127.0.0.1, owned by postgres; TCP only over TLS.
tls_setup() {
  local pg=$1
  command -v openssl >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; }
  (
    cd "$pg"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
      -subj "/CN=ferry test CA" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
      -days 2 -extfile ext 2>/dev/null
    chown postgres: server.key server.crt
    chmod 600 server.key
  )
  cat >>"$pg/data/postgresql.conf" <<CONF
ssl = on
ssl_cert_file = '$pg/server.crt'
ssl_key_file = '$pg/server.key'
CONF
  sed -i 's/^host /hostssl /' "$pg/data/pg_hba.conf"
}

start() {
  local dir=$1 port=$2 tls=${3:-} bin
  bin=$(bindir) || { echo "PostgreSQL is not installed: run ci/postgres.sh install" >&2; exit 1; }
  mkdir -p "$dir/pg"
  chmod 755 "$dir"
  chown postgres: "$dir/pg"
  as_pg "$bin/initdb" -D "$dir/pg/data" --auth-local=trust --auth-host=scram-sha-256 \
    -U postgres >"$dir/pg/initdb.log" 2>&1 || { cat "$dir/pg/initdb.log" >&2; exit 1; }
  if [ "$tls" = tls ]; then tls_setup "$dir/pg"; fi
  as_pg "$bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w -t 30 \
    -o "-p $port -k $dir/pg -c listen_addresses=127.0.0.1 -c fsync=${PG_FSYNC:-off}" start >/dev/null ||
    { cat "$dir/pg/server.log" >&2; exit 1; }
  as_pg "$bin/psql" -q -h "$dir/pg" -p "$port" -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE probe LOGIN PASSWORD 'probe-secret'" -c "CREATE DATABASE app" >/dev/null
  as_pg "$bin/psql" -q -h "$dir/pg" -p "$port" -d app -v ON_ERROR_STOP=1 \
    -c "GRANT SELECT ON ALL TABLES IN SCHEMA public TO probe" \
    -c "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO probe" >/dev/null
}

psql_run() {
  local dir=$1 port=$2 sql=$3 bin
  bin=$(bindir)
  as_pg "$bin/psql" -qAt -h "$dir/pg" -p "$port" -d app -v ON_ERROR_STOP=1 -c "$sql"
}

stop() {
  local dir=$1 bin
  bin=$(bindir) || exit 0
  if [ -f "$dir/pg/data/postmaster.pid" ]; then
    as_pg "$bin/pg_ctl" -D "$dir/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
}

restart() {
  local dir=$1 port=$2 bin
  bin=$(bindir)
  as_pg "$bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w -t 30 \
    -o "-p $port -k $dir/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null ||
    { cat "$dir/pg/server.log" >&2; exit 1; }
}

case "${1:-}" in
  install) install ;;
  start) start "$2" "$3" "${4:-}" ;;
  psql) psql_run "$2" "$3" "$4" ;;
  stop) stop "$2" ;;
  restart) restart "$2" "$3" ;;
  *) echo "usage: $0 install | start DIR PORT [tls] | psql DIR PORT SQL | stop DIR | restart DIR PORT" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# State backend append throughput (not a test; not run by CI): PostgreSQL team state against the
# local file backend, side by side, with 1, 8 and 64 concurrent writers on one handle (an
# apply's concurrent steps: group-committed), plus 8 and 64 separate clients (own connections:
# separate runners on one store) for PostgreSQL. The cluster is Debian's PostgreSQL, started
# here WITH fsync (as production runs it); the local ledger is on the disk holding the
# repository. Ends with one line (entries/s):
#   state-bench: pg_1=… pg_8=… pg_64=… local_1=… local_8=… local_64=…
set -euo pipefail
cd "$(dirname "$0")/.."
port=${BENCH_PG_PORT:-55498}
work=$(mktemp -d -p "$(pwd)" .bench-state.XXXXXX)
trap 'ci/postgres.sh stop "$work" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
ci/postgres.sh install >/dev/null
PG_FSYNC=on ci/postgres.sh start "$work" "$port"
ci/postgres.sh psql "$work" "$port" "CREATE ROLE bench LOGIN PASSWORD 'bench-secret'; GRANT CREATE ON DATABASE app TO bench" >/dev/null
echo bench-secret >"$work/pw"
url() { echo "postgres://bench@127.0.0.1:$port/app?sslmode=disable&password=file:$work/pw&schema=$1"; }
cargo build --release --locked --quiet -p ferry --example state_bench
bin="${CARGO_TARGET_DIR:-target}/release/examples/state_bench"
line="state-bench:"
run() { # backend place writers mode
  local per=$(( 20000 / $3 )) out
  out=$("$bin" "$2" "$3" "$per" "$4")
  echo "$out" >&2
  echo "$out" | sed 's/.*eps=//'
}
for w in 1 8 64; do
  line="$line pg_$w=$(run pg "$(url s$w)" "$w" shared)"
done
for w in 1 8 64; do
  mkdir -p "$work/local$w"
  line="$line local_$w=$(run local "$work/local$w" "$w" shared)"
done
extra="state-bench-clients:"
for w in 8 64; do
  extra="$extra pg_clients_$w=$(run pg "$(url c$w)" "$w" clients)"
done
echo "$extra"
echo "$line"

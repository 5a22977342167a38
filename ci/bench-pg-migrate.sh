#!/usr/bin/env bash
# Benchmark: move the same generated PostgreSQL database (~1 GB: a table holding ~60% of the
# data, a uuid-keyed table of bytea and jsonb, a table without a primary key, small tables,
# sequences, timestamptz, numeric and NULLs) between two clusters from Debian's packages,
# three ways, side by side, each into a fresh empty database:
#   ferry     `ferry plan` + `ferry apply` of a `kind: migration` plan: preflight, schema,
#             chunked COPY -> COPY (binary) in parallel, indexes, VERIFICATION of every chunk on
#             both sides (row count + SHA-256), sequences; every chunk a ledger record
#   pg_dump   `pg_dump -Fc -Z0 | pg_restore` (no verification, no resume)
#   pgcopydb  Debian's `pgcopydb clone` (parallel copy and index builds, no row verification)
# All three use the same superuser over TCP, the same parallelism (JOBS), the same machine.
# The last line is the result:
#   pg-migrate: ferry_s=… pg_dump_s=… pgcopydb_s=… vs_pg_dump=… vs_pgcopydb=…
# (each vs_ is ferry's time over the other's).
#
# Usage: ci/bench-pg-migrate.sh [SCALE=1]   (SCALE 1 = ~1 GB; needs root for apt)
# ROUNDS=3: each tool runs ROUNDS times, the order turned each round; medians are compared.
set -euo pipefail
SCALE=${1:-1}
JOBS=${JOBS:-4}
ROUNDS=${ROUNDS:-3}   # each tool this many times, in turned order; the medians are compared
ONLY=${ONLY:-}   # ferry, pg_dump or pgcopydb: run that one alone
SRC_PORT=55601
DST_PORT=55602
cd "$(dirname "$0")/.."
ROOT=$(pwd)

ci/postgres.sh install
command -v pgcopydb >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgcopydb >/dev/null
# FERRY_BIN: a ferry binary to measure instead of this checkout's (to compare two builds).
if [ -z "${FERRY_BIN:-}" ]; then cargo build --release --locked --quiet -p ferry; fi
FERRY=${FERRY_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ferry}

WORK=$(mktemp -d /tmp/ferry-pgbench.XXXXXX)
cleanup() { ci/postgres.sh stop "$WORK/src" || true; ci/postgres.sh stop "$WORK/dst" || true; rm -rf "$WORK"; }
# KEEP=1 leaves both clusters running and the work directory in place (to run `ferry migrate
# verify` again on the same data); stop them with ci/postgres.sh stop DIR/src and DIR/dst.
if [ -z "${KEEP:-}" ]; then trap cleanup EXIT; else trap 'echo "kept: $WORK" >&2' EXIT; fi
chmod 755 "$WORK"
mkdir -p "$WORK/src" "$WORK/dst"
ci/postgres.sh start "$WORK/src" $SRC_PORT >/dev/null
ci/postgres.sh start "$WORK/dst" $DST_PORT >/dev/null
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg() { runuser -u postgres -- "$@"; }
for d in src dst; do
  port=$SRC_PORT; [ $d = dst ] && port=$DST_PORT
  as_pg "$BIN/psql" -qX -h "$WORK/$d/pg" -p $port -d postgres -c "ALTER ROLE postgres PASSWORD 'bench'" >/dev/null
done
psql_src() { as_pg "$BIN/psql" -qX -v ON_ERROR_STOP=1 -h "$WORK/src/pg" -p $SRC_PORT -d app "$@"; }
psql_dst() { as_pg "$BIN/psql" -qX -v ON_ERROR_STOP=1 -h "$WORK/dst/pg" -p $DST_PORT -d postgres "$@"; }

echo "== generating the source database (scale $SCALE)" >&2
N_BIG=$((4200000 * SCALE)); N_DOCS=$((250000 * SCALE)); N_LOGS=$((1500000 * SCALE))
psql_src <<SQL
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM probe;
CREATE TABLE big (id bigserial PRIMARY KEY, account int NOT NULL, label text, amount numeric(14,2),
  at timestamptz, attrs jsonb);
INSERT INTO big (account, label, amount, at, attrs)
  SELECT g % 10007, md5(g::text) || repeat('x', g % 60), (g % 100000) / 7.0,
         '2020-01-01'::timestamptz + g * interval '7 s',
         CASE WHEN g % 5 = 0 THEN NULL ELSE jsonb_build_object('g', g, 'tag', 't' || (g % 13)) END
  FROM generate_series(1, $N_BIG) g;
CREATE INDEX big_account ON big (account);
CREATE TABLE docs (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), body bytea, meta jsonb, created timestamptz);
INSERT INTO docs (body, meta, created)
  SELECT decode(repeat(md5(g::text), 12), 'hex'), jsonb_build_object('n', g, 'kind', g % 3),
         CASE WHEN g % 11 = 0 THEN NULL ELSE now() - g * interval '1 min' END
  FROM generate_series(1, $N_DOCS) g;
CREATE TABLE logs (at timestamptz, level text, msg text);
INSERT INTO logs SELECT '2024-01-01'::timestamptz + g * interval '1 s', (ARRAY['info','warn','error'])[1 + g % 3],
  'request ' || g || ' took ' || (g % 997) || ' ms'
  FROM generate_series(1, $N_LOGS) g;
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE);
INSERT INTO users (name, email) SELECT 'user ' || g, CASE WHEN g % 4 = 0 THEN NULL ELSE 'u' || g || '@example.org' END
  FROM generate_series(1, 20000) g;
VACUUM ANALYZE;
SQL
SIZE=$(psql_src -At -c "SELECT pg_size_pretty(pg_database_size('app'))")
echo "source database: $SIZE" >&2

now() { date +%s.%N; }
# CPU seconds one cluster has used so far (user + system): its postmaster, its live processes,
# and the backends it has reaped (each connection's backend) — to show where a tool's time went.
cluster_cpu() {
  local pm t p
  pm=$(head -n 1 "$WORK/$1/pg/data/postmaster.pid")
  t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")
  for p in $(pgrep -P "$pm"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}
servers_cpu() { echo "$(cluster_cpu src) $(cluster_cpu dst)"; }
# Prints the servers' CPU between two servers_cpu readings.
cpu_note() {
  python3 -c "import sys; a=[int(x) for x in sys.argv[1].split()]; b=[int(x) for x in sys.argv[2].split()]; \
hz=$(getconf CLK_TCK); print(f'  servers: source {(b[0]-a[0])/hz:.1f} + target {(b[1]-a[1])/hz:.1f} CPU-s')" "$1" "$2"
}
# /usr/bin/time's line for a tool and the programs it started.
timefmt() { echo "  $1 itself: %U user + %S system CPU-s (with the programs it started)"; }
# A fresh, empty target database, and both servers' dirty pages written out first: without the
# CHECKPOINTs the first tool measured pays for writing the generated source (1 GB, dirty in
# shared buffers and the OS cache) and each later one for the previous tool's target.
fresh() {
  psql_dst -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" -c CHECKPOINT >/dev/null
  psql_src -c CHECKPOINT >/dev/null
  sync
}

# ferry
run_ferry() {
  fresh bench_ferry
  cd "$WORK"
  rm -rf .ferry move.json
  echo bench > pw
  cat > inventory.yaml <<YAML
version: 1
sites: [{ id: bench, tier: sqa, clouds: [local] }]
clouds: [{ id: local, kind: local, local: { root: targets } }]
apps: []
databases:
  - { id: src, engine: postgres, postgres: { host: 127.0.0.1, port: $SRC_PORT, dbname: app, user: postgres, password: "file:pw", tls: disable } }
  - { id: dst, engine: postgres, postgres: { host: 127.0.0.1, port: $DST_PORT, dbname: bench_ferry, user: postgres, password: "file:pw", tls: disable } }
YAML
  cat > move.yaml <<YAML
version: 1
kind: migration
name: bench
source: src
target: dst
max_parallel: $JOBS
chunk_rows: 250000
YAML
  export FERRY_STATE_DIR=$WORK/.ferry FERRY_ACTOR=bench
  # The plan is made (and reviewed) before the change window; its time is shown, not counted.
  p0=$(now)
  "$FERRY" plan -i inventory.yaml move.yaml -o move.json >/dev/null || [ $? -eq 2 ]
  PLAN_S=$(echo "$(now) - $p0" | bc)
  c0=$(servers_cpu); t0=$(now)
  /usr/bin/time -o "$WORK/ferry.time" -f "$(timefmt ferry)" "$FERRY" apply move.json >/dev/null 2>"$WORK/ferry.err" ||
    { cat "$WORK/ferry.err" >&2; exit 1; }
  t1=$(now); c1=$(servers_cpu)
  FERRY_S=$(echo "$t1 - $t0" | bc)
  CHUNKS=$(grep -c '"event":"chunk_copied"' .ferry/ledger.jsonl)
  echo "ferry: ${FERRY_S}s ($CHUNKS chunks, verified; \`ferry plan\` before it: ${PLAN_S}s, not counted)" >&2
  cat "$WORK/ferry.time" >&2; cpu_note "$c0" "$c1" >&2
  python3 - .ferry/ledger.jsonl >&2 <<'PY'
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["event"] == "step_succeeded":
        print(f"  {e['to']:<20} {e.get('duration_ms', 0) / 1000:7.2f}s")
    if e["event"] == "migration_verified":
        for t in e["detail"]["report"]["tables"]:
            checks = t.get("chunk_checks", [])
            streamed = sum(1 for c in checks if c.get("source_from_copy"))
            target = sum(1 for c in checks if c.get("target_from_stream"))
            print(f"    verify {t['table']:<16} {t['source_rows']:>9} rows {t['chunks']:>3} chunk(s) {t['duration_ms'] / 1000:7.2f}s"
                  f" (source of {streamed} from the copy's stream, target of {target} read as a stream)")
PY
  cd "$ROOT"
}

# pg_dump | pg_restore
run_pg_dump() {
  fresh bench_pgdump
  export PGPASSWORD=bench
  c0=$(servers_cpu); t0=$(now)
  /usr/bin/time -o "$WORK/pg_dump.time" -f "$(timefmt "pg_dump | pg_restore")" bash -c "set -o pipefail; \
    '$BIN/pg_dump' -Fc -Z0 -h 127.0.0.1 -p $SRC_PORT -U postgres -d app |
    '$BIN/pg_restore' --no-owner -h 127.0.0.1 -p $DST_PORT -U postgres -d bench_pgdump"
  t1=$(now); c1=$(servers_cpu)
  PGDUMP_S=$(echo "$t1 - $t0" | bc)
  echo "pg_dump | pg_restore: ${PGDUMP_S}s" >&2
  cat "$WORK/pg_dump.time" >&2; cpu_note "$c0" "$c1" >&2
}

# pgcopydb clone
run_pgcopydb() {
  fresh bench_pgcopydb
  rm -rf "$WORK/pgcopydb"
  c0=$(servers_cpu); t0=$(now)
  /usr/bin/time -o "$WORK/pgcopydb.time" -f "$(timefmt pgcopydb)" pgcopydb clone --source "postgres://postgres:bench@127.0.0.1:$SRC_PORT/app" \
    --target "postgres://postgres:bench@127.0.0.1:$DST_PORT/bench_pgcopydb" \
    --dir "$WORK/pgcopydb" --table-jobs $JOBS --index-jobs $JOBS --no-owner >"$WORK/pgcopydb.log" 2>&1 ||
    { tail -20 "$WORK/pgcopydb.log" >&2; exit 1; }
  t1=$(now); c1=$(servers_cpu)
  PGCOPYDB_S=$(echo "$t1 - $t0" | bc)
  echo "pgcopydb clone: ${PGCOPYDB_S}s" >&2
  cat "$WORK/pgcopydb.time" >&2; cpu_note "$c0" "$c1" >&2
}

# One untimed pass first (pg_dump | pg_restore into a database dropped afterwards): a cluster
# fresh from initdb creates and zero-fills a new WAL segment for every 16 MB written, which the
# first tool measured would pay for alone; after this pass every tool writes into recycled ones.
echo "== warm-up (untimed)" >&2
fresh bench_warmup
PGPASSWORD=bench "$BIN/pg_dump" -Fc -Z0 -h 127.0.0.1 -p $SRC_PORT -U postgres -d app |
  PGPASSWORD=bench "$BIN/pg_restore" --no-owner -h 127.0.0.1 -p $DST_PORT -U postgres -d bench_warmup
psql_dst -c "DROP DATABASE bench_warmup" >/dev/null

# ROUNDS rounds, each tool once per round, the order turned by one each round (no tool always
# goes first or last on a VM whose speed drifts); each tool's time is its median.
TOOLS=(ferry pg_dump pgcopydb)
declare -A TIMES=()
for ((r = 0; r < ROUNDS; r++)); do
  echo "== round $((r + 1)) of $ROUNDS" >&2
  for ((i = 0; i < ${#TOOLS[@]}; i++)); do
    tool=${TOOLS[$(((i + r) % ${#TOOLS[@]}))]}
    if [ -n "$ONLY" ] && [ "$ONLY" != "$tool" ]; then continue; fi
    "run_$tool"
    case $tool in
      ferry) TIMES[$tool]+="$FERRY_S " ;;
      pg_dump) TIMES[$tool]+="$PGDUMP_S " ;;
      pgcopydb) TIMES[$tool]+="$PGCOPYDB_S " ;;
    esac
  done
done
median() { python3 -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" $1; }
for tool in "${TOOLS[@]}"; do
  [ -n "${TIMES[$tool]:-}" ] && echo "$tool: ${TIMES[$tool]}-> median $(median "${TIMES[$tool]}")s" >&2
done
[ -n "$ONLY" ] && exit 0

FERRY_S=$(median "${TIMES[ferry]}") PGDUMP_S=$(median "${TIMES[pg_dump]}") PGCOPYDB_S=$(median "${TIMES[pgcopydb]}")
ratio() { echo "scale=2; $1 / $2" | bc; }
echo "pg-migrate: ferry_s=$FERRY_S pg_dump_s=$PGDUMP_S pgcopydb_s=$PGCOPYDB_S vs_pg_dump=$(ratio $FERRY_S $PGDUMP_S) vs_pgcopydb=$(ratio $FERRY_S $PGCOPYDB_S) rounds=$ROUNDS source=${SIZE// /}"

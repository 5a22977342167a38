#!/usr/bin/env bash
# Benchmark: copy the same set of objects (many small, some large enough for multipart) from a
# bucket on one S3 endpoint to a bucket on another, three ways, side by side, each into an empty
# target prefix:
#   ferry   `ferry plan` + `ferry apply` of a `kind: migration` plan with one bucket copy:
#           listing, streaming copy with SHA-256 and Content-MD5 (multipart above 8 MiB, parts
#           recorded), every object a ledger record, THEN the verification step, which reads
#           every object back from the target and checks it against the manifest
#   rclone  Debian's `rclone copy --checksum` (MD5 compared where both sides have one)
#   awscli  Debian's `aws s3 sync`: one command cannot span two endpoints, so the objects go
#           down to a local directory and up again (two syncs, timed together)
# The endpoints are two `s3s-fs` servers (crate s3s-fs 0.14.1, the last that builds with this
# machine's Rust; installed once with `cargo install` under ~/.cache/s3s) on loopback, each
# with its own data directory: moto is too slow to measure throughput. Every tool runs with 8
# transfers at once. The last line is the result:
#   s3: ferry_mib_s=… rclone_mib_s=… awscli_mib_s=… vs_rclone=…
# (vs_rclone is ferry's throughput over rclone's: above 1 is faster).
#
# Usage: ci/bench-s3.sh [SCALE=1]   (SCALE 1 = 2,000 objects of 64 KiB + 8 of 64 MiB, ~640 MiB)
set -euo pipefail
SCALE=${1:-1}
ONLY=${ONLY:-}   # ferry, rclone or awscli: run that one alone; KEEP=1 leaves the servers up
N_SMALL=$((2000 * SCALE))
N_LARGE=$((8 * SCALE))
PORT_A=58101
PORT_B=58102
cd "$(dirname "$0")/.."
ROOT=$(pwd)

S3S=${S3S_FS:-$HOME/.cache/s3s/bin/s3s-fs}
if [ ! -x "$S3S" ]; then
  CARGO_TARGET_DIR=$HOME/.cache/s3s/target cargo install --quiet --locked s3s-fs@0.14.1 \
    --features binary --root "$HOME/.cache/s3s"
fi
command -v rclone >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone >/dev/null
[ -x /usr/bin/aws ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq awscli >/dev/null
AWS=/usr/bin/aws
[ -x /usr/bin/time ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
cargo build --release --locked --quiet -p ferry
FERRY=${CARGO_TARGET_DIR:-$ROOT/target}/release/ferry

WORK=$(mktemp -d /tmp/ferry-s3bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
if [ -z "${KEEP:-}" ]; then trap cleanup EXIT; else trap 'echo "kept: $WORK (servers ${PIDS[*]} on $PORT_A, $PORT_B)" >&2' EXIT; fi
mkdir -p "$WORK/a" "$WORK/b" "$WORK/data" "$WORK/down" "$WORK/ws/plans"
for side in a b; do
  port=$PORT_A; [ $side = b ] && port=$PORT_B
  "$S3S" --host 127.0.0.1 --port $port --access-key bench --secret-key benchsecret "$WORK/$side" \
    >"$WORK/$side.log" 2>&1 &
  PIDS+=($!)
done
for port in $PORT_A $PORT_B; do
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 0.1
  done
done

# Plain HTTP on loopback: a CA bundle set for other work would make rclone refuse to start.
unset AWS_CA_BUNDLE
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret AWS_DEFAULT_REGION=us-east-1
export RCLONE_CONFIG_A_TYPE=s3 RCLONE_CONFIG_A_PROVIDER=Other RCLONE_CONFIG_A_ACCESS_KEY_ID=bench \
  RCLONE_CONFIG_A_SECRET_ACCESS_KEY=benchsecret RCLONE_CONFIG_A_ENDPOINT=http://127.0.0.1:$PORT_A \
  RCLONE_CONFIG_A_FORCE_PATH_STYLE=true
export RCLONE_CONFIG_B_TYPE=s3 RCLONE_CONFIG_B_PROVIDER=Other RCLONE_CONFIG_B_ACCESS_KEY_ID=bench \
  RCLONE_CONFIG_B_SECRET_ACCESS_KEY=benchsecret RCLONE_CONFIG_B_ENDPOINT=http://127.0.0.1:$PORT_B \
  RCLONE_CONFIG_B_FORCE_PATH_STYLE=true
aws_a() { $AWS --endpoint-url "http://127.0.0.1:$PORT_A" "$@"; }
aws_b() { $AWS --endpoint-url "http://127.0.0.1:$PORT_B" "$@"; }

echo "== generating $N_SMALL objects of 64 KiB and $N_LARGE of 64 MiB" >&2
python3 - "$WORK/data" "$N_SMALL" "$N_LARGE" <<'PY'
import os, sys
d, n_small, n_large = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# Flat: rclone 1.60 lists s3s-fs's "directories" wrongly (it sends `delimiter=`).
for i in range(n_small):
    open(f"{d}/small-{i:06d}.bin", "wb").write(os.urandom(64 * 1024))
for i in range(n_large):
    open(f"{d}/large-{i:03d}.bin", "wb").write(os.urandom(64 * 1024 * 1024))
PY
aws_a s3 mb s3://src >/dev/null
aws_b s3 mb s3://dst >/dev/null
rclone copy --transfers 16 "$WORK/data" a:src/data
BYTES=$(du -sb "$WORK/data" | cut -f1)
MIB=$(python3 -c "print($BYTES / 1048576)")
echo "source: $(find "$WORK/data" -type f | wc -l) objects, $MIB MiB" >&2

empty_target() { rclone purge "b:dst/$1" 2>/dev/null || true; }
now() { date +%s.%N; }
# CPU seconds both servers have used so far (user + system), to show where a tool's time went.
servers_cpu() {
  local t=0 p
  for p in "${PIDS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  python3 -c "print($t / $(getconf CLK_TCK))"
}
cpu_note() { python3 -c "print(f'servers {$2 - $1:.1f} CPU-s')"; }
rate() { python3 -c "print(f'{$MIB / ($2 - $1):.1f}')"; }

# Objects a tool left under dst/PREFIX/ (aws CLI: rclone would HEAD the path first, see below).
count() { aws_b s3 ls --recursive "s3://dst/$1/" | wc -l; }
ferry_s=""; rclone_s=""; aws_s=""
if [ -z "$ONLY" ] || [ "$ONLY" = ferry ]; then
  cat >"$WORK/ws/inventory.yaml" <<YAML
version: 1
sites:
  - { id: hq, tier: prod, clouds: [onprem, cloud] }
clouds:
  - { id: onprem, kind: aws, aws: { account: "111111111111", region: us-east-1, endpoint_url: "http://127.0.0.1:$PORT_A" } }
  - { id: cloud, kind: aws, aws: { account: "222222222222", region: us-east-1, endpoint_url: "http://127.0.0.1:$PORT_B" } }
apps: []
buckets:
  - { id: src, cloud: onprem, name: src }
  - { id: dst, cloud: cloud, name: dst }
YAML
  cat >"$WORK/ws/plans/move.yaml" <<YAML
version: 1
kind: migration
name: s3-bench
buckets:
  - { name: data, source: src, prefix: data/, target: dst, target_prefix: ferry/, max_parallel: 8 }
YAML
  (cd "$WORK/ws" && "$FERRY" plan -i inventory.yaml plans/move.yaml -o move.json >/dev/null) || [ $? -eq 2 ]
  c0=$(servers_cpu); t0=$(now)
  (cd "$WORK/ws" && /usr/bin/time -f "ferry itself: %U user + %S system CPU-s, %M KiB peak" \
    "$FERRY" apply move.json >"$WORK/ferry.out" 2>"$WORK/ferry.err") || { cat "$WORK/ferry.out" "$WORK/ferry.err" >&2; exit 1; }
  t1=$(now); c1=$(servers_cpu)
  tail -1 "$WORK/ferry.err" >&2; cpu_note "$c0" "$c1" >&2
  ferry_s=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
  cat "$WORK/ferry.out" "$WORK/ferry.err" | grep -E "bucket\.(copy|verify)" >&2 || true
  echo "ferry: ${ferry_s}s ($(rate "$t0" "$t1") MiB/s, verification included; $(count ferry) objects)" >&2
fi
if [ -z "$ONLY" ] || [ "$ONLY" = rclone ]; then
  # rclone HEADs a source path that is not a bucket root to see whether it is a file, and
  # s3s-fs answers a HEAD of a "directory" with 500 after a while, which rclone retries for
  # ~90 s; and it cannot list a bucket root of s3s-fs (it sends `delimiter=`). So rclone copies
  # from the bucket root the keys it is given (--files-from-raw: one HEAD per object instead of
  # a listing), into dst/rclone/data/.
  (cd "$WORK/data" && ls | sed 's|^|data/|') >"$WORK/keys"
  c0=$(servers_cpu); t0=$(now)
  /usr/bin/time -f "rclone itself: %U user + %S system CPU-s, %M KiB peak" \
    rclone copy --checksum --transfers 8 --files-from-raw "$WORK/keys" a:src b:dst/rclone
  t1=$(now); c1=$(servers_cpu); cpu_note "$c0" "$c1" >&2
  rclone_s=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
  echo "rclone: ${rclone_s}s ($(rate "$t0" "$t1") MiB/s; $(count rclone) objects)" >&2
fi
if [ -z "$ONLY" ] || [ "$ONLY" = awscli ]; then
  $AWS configure set default.s3.max_concurrent_requests 8
  t0=$(now)
  aws_a s3 sync --only-show-errors s3://src/data "$WORK/down"
  aws_b s3 sync --only-show-errors "$WORK/down" s3://dst/awscli
  t1=$(now)
  aws_s=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
  echo "awscli: ${aws_s}s ($(rate "$t0" "$t1") MiB/s, down and up; $(count awscli) objects)" >&2
fi

python3 - "$MIB" "$ferry_s" "$rclone_s" "$aws_s" <<'PY'
import sys
mib = float(sys.argv[1])
rates = [f"{mib / float(s):.1f}" if s else "-" for s in sys.argv[2:5]]
vs = f"{float(rates[0]) / float(rates[1]):.2f}" if rates[0] != "-" and rates[1] != "-" else "-"
print(f"s3: ferry_mib_s={rates[0]} rclone_mib_s={rates[1]} awscli_mib_s={rates[2]} vs_rclone={vs}")
PY

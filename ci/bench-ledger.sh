#!/usr/bin/env bash
# Ledger append throughput (not a test; not run by CI): group commit against one fsync per
# entry, with 1, 8 and 64 concurrent writers, on a ledger in DIR (default: a temp dir on the
# disk holding the repository). Ends with one line:
#   ledger: group_1=… group_8=… group_64=… single_1=… single_8=… single_64=… (entries/s)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-$(mktemp -d -p "$(pwd)" .bench-ledger.XXXXXX)}
trap 'rm -rf "$dir"' EXIT
cargo build --release --locked --quiet -p ferry --example ledger_bench
bin="${CARGO_TARGET_DIR:-target}/release/examples/ledger_bench"
line="ledger:"
for mode in group single; do
  for w in 1 8 64; do
    per=$(( 20000 / w ))
    [ "$mode" = single ] && per=$(( 4000 / w ))
    out=$("$bin" "$dir" "$w" "$per" "$mode")
    echo "$out"
    line="$line ${mode}_$w=$(echo "$out" | sed 's/.*eps=//')"
  done
done
echo "$line"

#!/usr/bin/env bash
# Coverage-guided fuzzing of ferry's parsers (issue 16): cargo-afl (AFL++ on stable Rust) runs
# each target of fuzz/ (inventory, release_plan, runbook, saved_plan, ledger, known_hosts)
# from its committed corpus under fuzz/corpus/TARGET. Not in CI's time: hours of machine time
# for the full count.
#
#   ci/fuzz.sh [TARGET...]
#   FUZZ_EXECS   executions per target (default 10000000)
#   FUZZ_SECONDS instead: run each target this long (a time-boxed campaign)
#   FUZZ_OUT     AFL++'s output folder (default /tmp/ferry-fuzz); crashes and hangs land in
#                FUZZ_OUT/TARGET/default/{crashes,hangs}: each becomes a regression test
#                with its input
#   FUZZ_MIN     also minimise each target's queue into fuzz/corpus/TARGET (afl-cmin) after it
#
# Ends with one line: `fuzz: targets=N execs=... crashes=... hangs=...`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
execs="${FUZZ_EXECS:-10000000}"
out="${FUZZ_OUT:-/tmp/ferry-fuzz}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(inventory release_plan runbook saved_plan ledger known_hosts)

if ! cargo afl --version >/dev/null 2>&1; then
  cargo install --locked cargo-afl
fi
# cargo-afl builds its own AFL++ (afl-fuzz and the runtime its instrumented binaries link)
# once, from the sources it ships; a C compiler and make are all it needs (`cargo install` does
# it too; a second build is refused, and a missing one makes the build below fail loudly).
cargo afl config --build >/dev/null 2>&1 || true
cargo afl build --release --locked

limit="-E $execs"
[ -z "${FUZZ_SECONDS:-}" ] || limit="-V $FUZZ_SECONDS"
total_crashes=0
total_hangs=0
for t in "${targets[@]}"; do
  mkdir -p "$out/$t"
  start=$(date +%s)
  # -E: stop after that many executions; no UI; the CPU governor and core dumps are the
  # machine's business (containers cannot change them).
  AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 \
    cargo afl fuzz -i "corpus/$t" -o "$out/$t" $limit -t 2000 -- "target/release/$t" \
    >"$out/$t.log" 2>&1 || { echo "$t: afl-fuzz failed, see $out/$t.log" >&2; tail -20 "$out/$t.log" >&2; exit 1; }
  stats="$out/$t/default/fuzzer_stats"
  done_execs=$(awk -F': *' '$1 ~ /^execs_done/ {print $2}' "$stats")
  crashes=$(find "$out/$t/default/crashes" -type f -name 'id:*' | wc -l)
  hangs=$(find "$out/$t/default/hangs" -type f -name 'id:*' | wc -l)
  edges=$(awk -F': *' '$1 ~ /^edges_found/ {print $2}' "$stats")
  echo "$t: execs=$done_execs edges=$edges crashes=$crashes hangs=$hangs seconds=$(( $(date +%s) - start ))"
  total_crashes=$((total_crashes + crashes))
  total_hangs=$((total_hangs + hangs))
  if [ -n "${FUZZ_MIN:-}" ]; then
    tmp=$(mktemp -d)
    # cargo-afl's own AFL++ (4.40c) tools, its afl-showmap first on PATH (Debian's 4.04c lacks
    # options they pass). Its afl-cmin is now a Python script that found "0 unique tuples" in
    # these persistent-mode targets and minimised a corpus to nothing; the shell version
    # (afl-cmin.bash) works. An empty result never replaces a corpus.
    afl_bin=$(dirname "$(ls -d "$HOME"/.local/share/afl.rs/*/afl.rs-*/afl/bin/afl-fuzz | head -1)")
    PATH="$afl_bin:$PATH" AFL_SKIP_CPUFREQ=1 "$afl_bin/afl-cmin.bash" -i "$out/$t/default/queue" \
      -o "$tmp/min" -- "target/release/$t" >/dev/null
    kept=$(find "$tmp/min" -type f | wc -l)
    if [ "$kept" -eq 0 ]; then
      echo "$t: afl-cmin kept no input; corpus/$t left as it was" >&2
    else
      # Names git and every filesystem take: each input its digest. The hand-written seeds
      # (any name that is not a digest) stay as they were: AFL++ trims its copies of them.
      mkdir "$tmp/named"
      for f in "$tmp/min"/*; do
        mv "$f" "$tmp/named/$(sha256sum "$f" | cut -c1-16)"
      done
      for f in "corpus/$t"/*; do
        case "${f##*/}" in
          [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]) ;;
          *) cp "$f" "$tmp/named/" ;;
        esac
      done
      rm -rf "corpus/$t" && mv "$tmp/named" "corpus/$t"
      echo "$t: corpus minimised to $kept inputs"
    fi
    rm -rf "$tmp"
  fi
done
echo "fuzz: targets=${#targets[@]} limit=${limit// /=} crashes=$total_crashes hangs=$total_hangs"

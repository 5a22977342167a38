#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
#
# The foundation's tests need no server: the embedded local target works on the file system.
# Drivers that need servers (sshd, Docker, moto, PostgreSQL) add their start-up here, and a
# test that needs a missing server fails; it never passes by skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== toolchain"
cargo --version
rustc --version

echo "== format"
cargo fmt --all -- --check

echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== tests"
# insta must not write snapshots in CI: a changed snapshot is a failure to look at.
export INSTA_UPDATE=no
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  # nextest does not run doctests.
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi

echo "== demo"
cargo run --locked --quiet -- demo >/dev/null
echo "demo: ok"

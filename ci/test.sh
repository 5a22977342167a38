#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
#
# Whatever a test needs is installed here (OpenSSH and busybox-static from apt, test images built
# for the running Docker engine, moto from PyPI); each test starts its own servers
# (ci/sshd.sh start ...) on its own loopback addresses. A test whose server is missing fails;
# it never passes by skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== toolchain"
cargo --version
rustc --version

echo "== servers"
# Real servers the integration tests start for themselves: OpenSSH (tests run ci/sshd.sh).
ci/sshd.sh install
# The machine's Docker engine and the test images built from Debian's static busybox (the
# Docker tests run this too, and fail saying so when no engine answers).
ci/docker-images.sh
# stunnel, which puts the engine behind mutual TLS on loopback for the tcp:// + TLS test.
ci/docker-tls.sh install
# Debian's docker-registry with htpasswd logins: the private-registry pull test starts one.
ci/registry.sh install
# PostgreSQL from Debian's packages: the condition-gate tests make their own clusters (initdb as
# the postgres user, ci/postgres.sh start) on loopback ports.
ci/postgres.sh install
# moto (PyPI, pinned): the AWS stand-in the RDS tests start on loopback (ci/moto.sh start).
ci/moto.sh install
# Kubernetes: no API server can be installed here; the tests start an in-process STAND-IN
# (crate kube-standin), or use a real cluster when FERRY_TEST_KUBECONFIG is set. The proxy
# tests reach it through Debian's tinyproxy (started by the test, ci/proxy.sh start).
ci/proxy.sh install
# Debian's chromium: the DIBR tests open the generated HTML page headless and print it to PDF;
# poppler-utils (pdftotext) reads the PDFs back.
if ! command -v chromium >/dev/null || ! command -v pdftotext >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium poppler-utils >/dev/null
fi

# Debian's runit: a real service manager restarts the agent in its tests (systemd cannot be
# PID 1 here); the tests start their own runsv.
if ! command -v runsv >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runit >/dev/null
fi

echo "== format"
cargo fmt --all -- --check

echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== demo"
cargo run --locked --quiet -- demo >/dev/null
echo "demo: ok"

echo "== layering"
# ferry-core knows nothing of the async runtime, SSH, Docker, Kubernetes clients, AWS or HTTP:
# a dependency on any of them fails the build here.
forbidden='^(tokio|tokio-util|russh|bollard|kube|kube-client|aws-sdk-rds|aws-sdk-s3|aws-config|aws-smithy-runtime|hyper|hyper-util|reqwest|rustls|mio)$'
core_deps=$(cargo tree --locked -p ferry-core -e normal --prefix none | sed 's/ v.*//' | sort -u)
if echo "$core_deps" | grep -E "$forbidden"; then
  echo "ferry-core must not depend on the crates above" >&2
  exit 1
fi
echo "ferry-core: $(echo "$core_deps" | wc -l) crates, none of them a runtime, driver or network client"

echo "== small build"
# The SSH-only ferry an on-premise agent ships: no AWS SDK, kube or bollard; it runs the demo.
# (rustls is in it: condition gates and quiesce calls speak HTTPS in every build.)
small=$(cargo tree --locked -p ferry --no-default-features --features ssh -e normal --prefix none | sed 's/ v.*//' | sort -u)
if echo "$small" | grep -E '^(bollard|kube|kube-client|aws-sdk-rds|aws-sdk-s3)$'; then
  echo "the SSH-only build links the crates above" >&2
  exit 1
fi
cargo build --release --locked --quiet -p ferry --no-default-features --features ssh
small_bin="${CARGO_TARGET_DIR:-target}/release/ferry"
"$small_bin" demo >/dev/null
echo "small build: ok ($(stat -c %s "$small_bin") bytes), demo passed"

echo "== tests"
# insta must not write snapshots in CI: a changed snapshot is a failure to look at.
export INSTA_UPDATE=no
# The crate has no doctests; nextest's summary is the suite's closing line.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

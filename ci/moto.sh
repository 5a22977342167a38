#!/usr/bin/env bash
# The AWS stand-in for tests: moto's server (RDS and S3 APIs) from PyPI, on loopback.
#
#   ci/moto.sh install                 install moto[server] (pinned) with pip if missing
#   ci/moto.sh start DIR ADDR PORT     start one moto server on ADDR:PORT, pid in DIR/moto.pid,
#                                      log in DIR/moto.log; returns once it answers
#   ci/moto.sh stop DIR                stop it
#
# Each test starts its own servers (two of them stand for two clouds). moto makes instances and
# snapshots `available` at once; slow transitions are covered by the driver's unit tests.
set -euo pipefail
MOTO_VERSION=5.2.5

install() {
  if ! python3 -c "import moto, flask; assert moto.__version__ == '$MOTO_VERSION'" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >/dev/null
  fi
  python3 -c "import moto, boto3" || { echo "moto is not importable after install" >&2; exit 1; }
  patch_list_parts
}

# moto 5.2.5 answers ListParts with a <ListPartsResponse> root; S3 answers <ListPartsResult>
# (https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListParts.html), and aws-sdk-s3 refuses
# anything else (botocore does not check the root). The stand-in is made to answer as S3 does,
# not ferry to accept what S3 never sends. Idempotent.
patch_list_parts() {
  python3 - <<'PY'
import pathlib, moto.s3.responses as r
p = pathlib.Path(r.__file__)
s = p.read_text()
marker = "# ferry: ListPartsResult"
if marker not in s:
    old = '''        self.data["Action"] = "ListParts"
        status, headers, body = self.serialized(ActionResult(result))
'''
    assert old in s, "moto's list_parts changed: review ci/moto.sh's patch"
    new = old + f'''        {marker}
        body = body.replace(b"ListPartsResponse", b"ListPartsResult") if isinstance(body, bytes) else body.replace("ListPartsResponse", "ListPartsResult")
'''
    p.write_text(s.replace(old, new))
PY
}

start() {
  local dir=$1 addr=$2 port=$3
  mkdir -p "$dir"
  python3 -m moto.server -H "$addr" -p "$port" >"$dir/moto.log" 2>&1 &
  echo $! >"$dir/moto.pid"
  for _ in $(seq 1 150); do
    if python3 - "$addr" "$port" <<'PY' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/moto-api/", timeout=1)
PY
    if ! kill -0 "$(cat "$dir/moto.pid")" 2>/dev/null; then
      echo "moto server on $addr:$port exited:" >&2; cat "$dir/moto.log" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "moto server on $addr:$port did not answer within 15 s" >&2
  cat "$dir/moto.log" >&2
  exit 1
}

stop() {
  local dir=$1
  if [ -f "$dir/moto.pid" ]; then
    kill "$(cat "$dir/moto.pid")" 2>/dev/null || true
    rm -f "$dir/moto.pid"
  fi
}

case "${1:-}" in
  install) install ;;
  start) start "$2" "$3" "$4" ;;
  stop) stop "$2" ;;
  *) echo "usage: $0 install | start DIR ADDR PORT | stop DIR" >&2; exit 2 ;;
esac

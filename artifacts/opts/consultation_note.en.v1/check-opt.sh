#!/bin/sh
# Health check of a template release: exactly one OPT, named after its own template_id.
set -eu
n=0
for f in *.opt; do
  [ -f "$f" ] || { echo "no .opt file in the release" >&2; exit 1; }
  id=${f%.opt}
  grep -q "<template_id><value>$id</value></template_id>" "$f" || { echo "$f: template_id is not $id" >&2; exit 1; }
  n=$((n + 1))
done
[ "$n" -eq 1 ] || { echo "$n .opt files in one release" >&2; exit 1; }

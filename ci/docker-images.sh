#!/usr/bin/env bash
# Test images for the Docker driver, built here: no registry can be reached, so nothing is pulled.
#
#   ci/docker-images.sh        check the Docker engine, install busybox-static (apt) if missing,
#                              and build the images below if they are not there yet
#
# Images (FROM scratch + Debian's static busybox, a few hundred KB each):
#   ferry-test/web:1.0.0, ferry-test/web:2.0.0   busybox httpd on :80 serving /version and /health
#   ferry-test/web:3.0.0-bad                     same, but /health is missing (404): never healthy
#   ferry-test/web:4.0.0-crash                   exits at once with status 3
# Every image is labelled ferry.test=1 so they are easy to find and remove.
set -euo pipefail

if ! docker info >/dev/null 2>&1; then
  echo "no Docker engine answers (docker info failed): the Docker driver's tests need one" >&2
  exit 1
fi

# One builder at a time: nextest runs tests as separate processes that may all ask at once.
exec 9>/tmp/ferry-docker-images.lock
flock 9

TAGS="ferry-test/web:1.0.0 ferry-test/web:2.0.0 ferry-test/web:3.0.0-bad ferry-test/web:4.0.0-crash"
# shellcheck disable=SC2086
if docker image inspect $TAGS >/dev/null 2>&1; then
  exit 0
fi

if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed"; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
fi

build() { # TAG HEALTH(yes|no) CMD
  local tag=$1 health=$2 cmd=$3 ctx
  if docker image inspect "$tag" >/dev/null 2>&1; then
    return 0
  fi
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' RETURN
  mkdir -p "$ctx/www"
  cp /bin/busybox "$ctx/busybox"
  echo "${tag##*:}" >"$ctx/www/version"
  if [ "$health" = yes ]; then echo ok >"$ctx/www/health"; fi
  cat >"$ctx/Dockerfile" <<EOF
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY www /www
LABEL ferry.test=1
CMD $cmd
EOF
  # The legacy builder (no buildx plugin here) warns that it is deprecated: keep that quiet.
  local out
  out=$(DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" 2>&1) || { echo "$out" >&2; exit 1; }
  echo "built $tag"
}

serve='["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]'
build ferry-test/web:1.0.0 yes "$serve"
build ferry-test/web:2.0.0 yes "$serve"
build ferry-test/web:3.0.0-bad no "$serve"
build ferry-test/web:4.0.0-crash yes '["/bin/sh", "-c", "exit 3"]'

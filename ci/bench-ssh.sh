#!/usr/bin/env bash
# Benchmark: deploy the same small release to N loopback SSH endpoints three ways, side by side:
#   ferry   `ferry plan` + `ferry apply` (observe, upload, unpack, switch, health check, ledger)
#   ansible ansible-core from apt, forks=N: copy, file, unarchive, file (link), command
#   floor   a hand-written parallel loop: scp the tarball, then one ssh that unpacks, switches
#           and runs the health command (two connections per endpoint)
#   floor1  the tighter floor: the tarball piped into a single ssh command that unpacks,
#           switches and checks (one connection per endpoint)
# Every tool uses strict host-key checking against the same known_hosts and curve25519 key
# exchange. Each run goes to fresh directories. The last line is the result:
#   ssh-fanout-N: ferry=<s>s ansible=<s>s floor=<s>s floor1=<s>s vs_ansible=<ansible/ferry>
#                 vs_floor=<ferry/floor> vs_floor1=<ferry/floor1> apply=<s>s (apply alone, the plan
#                 made beforehand) apply_vs_floor1=<apply/floor1> oneshot=<s>s (`ferry apply
#                 --auto-approve`: plan and apply in one process, one connection per endpoint)
#                 oneshot_vs_floor1=<oneshot/floor1>
#
# Usage: ci/bench-ssh.sh [N=50]      (needs root for apt; installs OpenSSH and ansible-core)
#        FERRY_BIN=/path/to/ferry ci/bench-ssh.sh 50   (measure that binary, build nothing)
#        SKIP_ANSIBLE=1 ci/bench-ssh.sh 200             (ansible not run: ansible=0)
set -euo pipefail
N=${1:-50}
NET=50.0
cd "$(dirname "$0")/.."
ROOT=$(pwd)

ci/sshd.sh install
if ! command -v ansible-playbook >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ansible-core >/dev/null
fi
# FERRY_BIN: measure that binary instead of building this checkout (before/after comparisons).
if [ -n "${FERRY_BIN:-}" ]; then
  FERRY=$FERRY_BIN
else
  cargo build --release --locked --quiet
  FERRY=${CARGO_TARGET_DIR:-$ROOT/target}/release/ferry
fi

WORK=$(mktemp -d /tmp/ferry-bench.XXXXXX)
FLEET=$WORK/fleet
cleanup() { ci/sshd.sh stop "$FLEET" >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT
ci/sshd.sh start "$FLEET" "$N" "$NET" >/dev/null
# All three tools log in as a dedicated deploy account with a plain /bin/sh, as endpoints are
# set up in practice. (Logging in as root here would source root's ~/.bashrc, which runs
# `pyenv init` on this image: ~0.12 s of CPU on every command, for every tool.)
BUSER=ferrybench
id "$BUSER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /bin/sh "$BUSER"
# Not locked ("!"): sshd without PAM refuses locked accounts even for key logins.
usermod -p "*" "$BUSER"
chmod 755 "$WORK" "$FLEET"
for k in $(seq 1 "$N"); do chmod 755 "$FLEET/ep-$k"; chown -R "$BUSER" "$FLEET/ep-$k/home"; done
mkdir -p "$WORK/ansible-remote" && chown "$BUSER" "$WORK/ansible-remote"

# The release: a VERSION file, a health command and ~256 KiB of payload.
REL=$WORK/release/1.0.0
mkdir -p "$REL/bin" "$REL/lib"
echo 1.0.0 > "$REL/VERSION"
printf '#!/bin/sh\ntest "$(cat VERSION)" = 1.0.0\n' > "$REL/bin/health"
head -c 262144 /dev/urandom > "$REL/lib/payload.bin"
tar -C "$REL" -czf "$WORK/release-1.0.0.tar.gz" .

SSH_OPTS=(-o StrictHostKeyChecking=yes -o UserKnownHostsFile="$FLEET/known_hosts" -o KexAlgorithms=curve25519-sha256 -o BatchMode=yes -i "$FLEET/id_ed25519" -o ConnectTimeout=10)
addr() { echo "127.$NET.$1"; }
now() { date +%s.%N; }

# --- ferry ---------------------------------------------------------------------------------
F=$WORK/ferry
mkdir -p "$F/artifacts" && cp -r "$WORK/release/1.0.0" "$F/artifacts/1.0.0"
{
  echo "version: 1"
  echo "sites: [{ id: bench, tier: prod, endpoints: [$(for k in $(seq 1 "$N"); do printf 'ep-%s%s' "$k" "$([ "$k" -lt "$N" ] && echo ', ')"; done)] }]"
  echo "endpoints:"
  for k in $(seq 1 "$N"); do
    echo "  - { id: ep-$k, address: $(addr "$k"), connection: { protocol: ssh, user: $BUSER, port: 2222, identity: \"file:$FLEET/id_ed25519\", known_hosts: $FLEET/known_hosts, root: $FLEET/ep-$k/home/ferry }, hardware: { cpus: 1, memory_mb: 1, disk_gb: 1, os: linux }}"
  done
  echo "apps: [{ id: app, version: 1.0.0, artifact: \"artifacts/{version}\", target: ssh, sites: [bench], health_check: { command: [sh, bin/health] } }]"
} > "$F/inventory.yaml"
# os: linux is waived: the benchmark is about fan-out, not readiness.
{
  echo "version: 1"
  echo "kind: release"
  echo "name: bench"
  echo "releases: [{ app: app, version: 1.0.0 }]"
  echo "waves: [{ name: all, sites: [bench], max_parallel: $N }]"
  echo "on_failure: halt"
  echo "waivers:"
  for k in $(seq 1 "$N"); do echo "  - { endpoint: ep-$k, reason: \"benchmark endpoint, os not checked\" }"; done
} > "$F/plan.yaml"
t0=$(now)
(cd "$F" && "$FERRY" --state-dir "$F/.ferry" plan -i inventory.yaml plan.yaml -o plan.json >/dev/null) || [ $? -eq 2 ]
tp=$(now)
(cd "$F" && "$FERRY" --state-dir "$F/.ferry" apply plan.json >/dev/null 2>"$F/apply.log") || { cat "$F/apply.log"; exit 1; }
t1=$(now)
ferry_s=$(echo "$t1 - $t0" | bc)
ferry_apply_s=$(echo "$t1 - $tp" | bc)
for k in $(seq 1 "$N"); do test "$(readlink "$FLEET/ep-$k/home/ferry/app/current")" = releases/1.0.0; done

# --- ferry, one run: `ferry apply --auto-approve` plans and applies in one process (the saved
# plan written and recorded all the same), through one connection per endpoint; fresh
# directories and state.
F1=$WORK/ferry1
mkdir -p "$F1" && cp -r "$F/artifacts" "$F/plan.yaml" "$F1/"
sed "s#/home/ferry }#/home/ferry1 }#" "$F/inventory.yaml" > "$F1/inventory.yaml"
t0=$(now)
(cd "$F1" && "$FERRY" --state-dir "$F1/.ferry" apply --auto-approve -i inventory.yaml plan.yaml -o plan.json >/dev/null 2>"$F1/apply.log") || { cat "$F1/apply.log"; exit 1; }
t1=$(now)
oneshot_s=$(echo "$t1 - $t0" | bc)
for k in $(seq 1 "$N"); do test "$(readlink "$FLEET/ep-$k/home/ferry1/app/current")" = releases/1.0.0; done

# --- ansible -------------------------------------------------------------------------------
A=$WORK/ansible
mkdir -p "$A"
{
  echo "[endpoints]"
  for k in $(seq 1 "$N"); do echo "ep-$k ansible_host=$(addr "$k") root_dir=$FLEET/ep-$k/home/ansible"; done
  echo "[endpoints:vars]"
  echo "ansible_port=2222"
  echo "ansible_user=$BUSER"
  echo "ansible_remote_tmp=$WORK/ansible-remote"
  echo "ansible_ssh_private_key_file=$FLEET/id_ed25519"
  echo "ansible_ssh_common_args='-o StrictHostKeyChecking=yes -o UserKnownHostsFile=$FLEET/known_hosts -o KexAlgorithms=curve25519-sha256'"
  echo "ansible_python_interpreter=/usr/bin/python3"
} > "$A/hosts"
cat > "$A/deploy.yml" <<YML
- hosts: endpoints
  gather_facts: false
  tasks:
    - file: { path: "{{ root_dir }}/app/releases/1.0.0", state: directory }
    - copy: { src: "$WORK/release-1.0.0.tar.gz", dest: "{{ root_dir }}/app/release-1.0.0.tar.gz" }
    - unarchive: { src: "{{ root_dir }}/app/release-1.0.0.tar.gz", dest: "{{ root_dir }}/app/releases/1.0.0", remote_src: true }
    - file: { src: "releases/1.0.0", dest: "{{ root_dir }}/app/current", state: link }
    - command: { cmd: sh bin/health, chdir: "{{ root_dir }}/app/current" }
YML
ansible_s=0
[ -n "${SKIP_ANSIBLE:-}" ] || {
t0=$(now)
ANSIBLE_HOST_KEY_CHECKING=True ANSIBLE_FORKS=$N ANSIBLE_LOCAL_TEMP=$A/tmp ANSIBLE_SSH_CONTROL_PATH_DIR=$A/cp \
  ansible-playbook -i "$A/hosts" "$A/deploy.yml" >"$A/run.log" 2>&1 || { tail -30 "$A/run.log"; exit 1; }
t1=$(now)
ansible_s=$(echo "$t1 - $t0" | bc)
for k in $(seq 1 "$N"); do test "$(readlink "$FLEET/ep-$k/home/ansible/app/current")" = releases/1.0.0; done
}

# --- floor ---------------------------------------------------------------------------------
deploy_one() {
  local k=$1 a d
  a=$(addr "$k"); d=$FLEET/ep-$k/home/floor/app
  # Two connections: the upload, then one command that unpacks, switches and checks.
  scp -q "${SSH_OPTS[@]}" -P 2222 "$WORK/release-1.0.0.tar.gz" "$BUSER@$a:$FLEET/ep-$k/home/floor-1.0.0.tar.gz" &&
  ssh "${SSH_OPTS[@]}" -p 2222 "$BUSER@$a" "mkdir -p $d/releases/1.0.0 && tar -xzf $FLEET/ep-$k/home/floor-1.0.0.tar.gz -C $d/releases/1.0.0 && ln -sfn releases/1.0.0 $d/.current.tmp && mv -Tf $d/.current.tmp $d/current && cd $d/current && sh bin/health"
}
t0=$(now)
pids=()
for k in $(seq 1 "$N"); do deploy_one "$k" & pids+=($!); done
for p in "${pids[@]}"; do wait "$p"; done
t1=$(now)
floor_s=$(echo "$t1 - $t0" | bc)
for k in $(seq 1 "$N"); do test "$(readlink "$FLEET/ep-$k/home/floor/app/current")" = releases/1.0.0; done

# --- floor1: one connection per endpoint ---------------------------------------------------
deploy_one_conn() {
  local k=$1 a d
  a=$(addr "$k"); d=$FLEET/ep-$k/home/floor1/app
  ssh "${SSH_OPTS[@]}" -p 2222 "$BUSER@$a" "mkdir -p $d/releases/1.0.0 && tar -xzf - -C $d/releases/1.0.0 && ln -sfn releases/1.0.0 $d/.current.tmp && mv -Tf $d/.current.tmp $d/current && cd $d/current && sh bin/health" \
    < "$WORK/release-1.0.0.tar.gz"
}
t0=$(now)
pids=()
for k in $(seq 1 "$N"); do deploy_one_conn "$k" & pids+=($!); done
for p in "${pids[@]}"; do wait "$p"; done
t1=$(now)
floor1_s=$(echo "$t1 - $t0" | bc)
for k in $(seq 1 "$N"); do test "$(readlink "$FLEET/ep-$k/home/floor1/app/current")" = releases/1.0.0; done

printf 'ssh-fanout-%s: ferry=%.2fs ansible=%.2fs floor=%.2fs floor1=%.2fs vs_ansible=%.1f vs_floor=%.2f vs_floor1=%.2f apply=%.2fs apply_vs_floor1=%.2f oneshot=%.2fs oneshot_vs_floor1=%.2f\n' \
  "$N" "$ferry_s" "$ansible_s" "$floor_s" "$floor1_s" "$(echo "$ansible_s / $ferry_s" | bc -l)" \
  "$(echo "$ferry_s / $floor_s" | bc -l)" "$(echo "$ferry_s / $floor1_s" | bc -l)" \
  "$ferry_apply_s" "$(echo "$ferry_apply_s / $floor1_s" | bc -l)" \
  "$oneshot_s" "$(echo "$oneshot_s / $floor1_s" | bc -l)"

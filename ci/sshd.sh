#!/usr/bin/env bash
# Test SSH endpoints: real OpenSSH sshd instances on loopback addresses.
#
#   ci/sshd.sh install                 install OpenSSH from apt if it is missing
#   ci/sshd.sh start DIR N [NET]       start N sshd on 127.NET.1 .. 127.NET.N (NET default 0.0 is
#                                      not allowed; e.g. 20.0 -> 127.20.0.k), port 2222
#   ci/sshd.sh stop DIR                stop every sshd started in DIR (and their sessions)
#   ci/sshd.sh kill-one DIR K          stop endpoint K (listener and sessions): a dead endpoint
#   ci/sshd.sh start-one DIR K         start endpoint K again, same host key
#   ci/sshd.sh cut-one DIR K           cut endpoint K's network: its packets are dropped on the
#                                      loopback (sshd and its sessions keep running)
#   ci/sshd.sh mend-one DIR K          restore endpoint K's network
#
# DIR receives: client key (id_ed25519), known_hosts (every endpoint's host key), and per
# endpoint K: ep-K/{sshd_config,host_ed25519_key,pid,home/}. One sshd listens on one address
# (an sshd listens on at most 16), each with its own host key; strict host-key checking stays
# on in tests. Only loopback addresses are used.
set -euo pipefail
PORT=2222

need_sshd() {
  command -v /usr/sbin/sshd >/dev/null || { echo "sshd is not installed: run ci/sshd.sh install" >&2; exit 1; }
}

install() {
  if ! command -v /usr/sbin/sshd >/dev/null || ! command -v ssh-keygen >/dev/null \
    || ! command -v iptables >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client iptables >/dev/null
  fi
  mkdir -p /run/sshd
  chmod 0755 /run/sshd
}

addr() { echo "127.$2.$1"; }  # K NET

start_one() {
  local dir=$1 k=$2 net
  net=$(cat "$dir/net")
  local ep="$dir/ep-$k" a
  a=$(addr "$k" "$net")
  kill_one "$dir" "$k" 2>/dev/null || true
  /usr/sbin/sshd -f "$ep/sshd_config" -E "$ep/sshd.log"
  # Wait until it listens.
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/$a/$PORT") 2>/dev/null; then return 0; fi
    sleep 0.02
  done
  echo "sshd $k on $a:$PORT did not start; see $ep/sshd.log" >&2
  exit 1
}

kill_one() {
  local dir=$1 k=$2 ep pid
  ep="$dir/ep-$k"
  [[ -f "$ep/pid" ]] || return 0
  pid=$(cat "$ep/pid")
  # The listener and every session it forked.
  pkill -KILL -P "$pid" 2>/dev/null || true
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$ep/pid"
}

start() {
  local dir=$1 n=$2 net=${3:-20.0}
  need_sshd
  mkdir -p /run/sshd "$dir"
  dir=$(cd "$dir" && pwd)
  echo "$net" > "$dir/net"
  [[ -f "$dir/id_ed25519" ]] || ssh-keygen -q -t ed25519 -N '' -C ferry-test -f "$dir/id_ed25519"
  : > "$dir/known_hosts"
  for k in $(seq 1 "$n"); do
    local ep="$dir/ep-$k" a
    a=$(addr "$k" "$net")
    mkdir -p "$ep/home"
    [[ -f "$ep/host_ed25519_key" ]] || ssh-keygen -q -t ed25519 -N '' -C "ep-$k" -f "$ep/host_ed25519_key"
    cp "$dir/id_ed25519.pub" "$ep/authorized_keys"
    cat > "$ep/sshd_config" <<CFG
ListenAddress $a:$PORT
HostKey $ep/host_ed25519_key
PidFile $ep/pid
AuthorizedKeysFile $ep/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
MaxStartups 200
MaxSessions 100
LogLevel INFO
Subsystem sftp internal-sftp
CFG
    echo "[$a]:$PORT $(cut -d' ' -f1,2 "$ep/host_ed25519_key.pub")" >> "$dir/known_hosts"
    start_one "$dir" "$k"
  done
  echo "started $n sshd on 127.$net.1-$n:$PORT in $dir"
}

stop() {
  local dir=$1
  for ep in "$dir"/ep-*; do
    [[ -d "$ep" ]] || continue
    kill_one "$dir" "${ep##*/ep-}"
  done
}

# The rules that cut endpoint K: both directions of its port, on the loopback only (nothing
# leaves the machine), tagged so that mend removes exactly them.
cut_rules() {
  local dir=$1 k=$2 a tag
  a=$(addr "$k" "$(cat "$dir/net")")
  tag="ferry-cut-$(basename "$dir")-$k"
  echo "INPUT -i lo -d $a -p tcp --dport $PORT -m comment --comment $tag -j DROP"
  echo "INPUT -i lo -s $a -p tcp --sport $PORT -m comment --comment $tag -j DROP"
}

cut_one() {
  local rule
  while read -r rule; do
    # shellcheck disable=SC2086
    iptables -w -I $rule
  done < <(cut_rules "$1" "$2")
}

mend_one() {
  local rule
  while read -r rule; do
    # shellcheck disable=SC2086
    while iptables -w -D $rule 2>/dev/null; do :; done
  done < <(cut_rules "$1" "$2")
}

case "${1:-}" in
  install) install ;;
  start) start "$2" "$3" "${4:-20.0}" ;;
  stop) stop "$2" ;;
  kill-one) kill_one "$2" "$3" ;;
  start-one) need_sshd; start_one "$2" "$3" ;;
  cut-one) cut_one "$2" "$3" ;;
  mend-one) mend_one "$2" "$3" ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac

#!/usr/bin/env bash
# Runs the IM figures of bench/RESULTS.md (issue 12): builds release, starts the all-in-one
# with IM on and a fresh store, runs each scenario RUNS times, stops it, removes the store.
# Writes one JSON line per run to $OUT.
#
#   tools/bench-im.sh [fsync|p2p|rate|group|sync|idle|all]   (default: all)
#
# Several may be given comma-separated (`p2p,rate,group`); they run in the order above.
#
# p2p: PAIRS senders to PAIRS receivers, each sender as fast as its acks come back, for
# P2P_SECS. rate: the same pairs paced at RATE messages/s in total for RATE_SECS. group: one
# GROUP_MEMBERS-member group, all online, GROUP_RATE messages/s from GROUP_SENDERS members for
# GROUP_SECS. sync: a user misses SYNC_MESSAGES messages, then connects and pulls them
# (SYNC_REPS times per run). idle: 19,000 idle connections, goim then IM (`conns
# --im-secret`), each against a freshly started server, server RSS per connection. fsync:
# write + fdatasync of 4 KiB in the store's directory.
#
# Before each measured run the script waits (up to LOAD_WAIT seconds) for the 1-minute load
# average to drop to LOAD_MAX: the machine has 2 cores and other work may be running.
#
# Environment: OUT (default bench/results.jsonl), RUNS (2), PAIRS (1000), P2P_SECS (10),
# RATE (1000), RATE_SECS (30), GROUP_MEMBERS (500), GROUP_SENDERS (5), GROUP_RATE (10),
# GROUP_SECS (30), SYNC_MESSAGES (2000), SYNC_REPS (3), IDLE (19000), LOAD_MAX (1.5),
# LOAD_WAIT (180), CARGO_TARGET_DIR (default target), STORE (/tmp/starling-bench-im).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
# Whether scenario $1 was asked for.
want() { [[ $what == all || ,$what, == *,$1,* ]]; }
OUT=${OUT:-bench/results.jsonl}
RUNS=${RUNS:-2}
PAIRS=${PAIRS:-1000}
P2P_SECS=${P2P_SECS:-10}
RATE=${RATE:-1000}
RATE_SECS=${RATE_SECS:-30}
GROUP_MEMBERS=${GROUP_MEMBERS:-500}
GROUP_SENDERS=${GROUP_SENDERS:-5}
GROUP_RATE=${GROUP_RATE:-10}
GROUP_SECS=${GROUP_SECS:-30}
SYNC_MESSAGES=${SYNC_MESSAGES:-2000}
SYNC_REPS=${SYNC_REPS:-3}
IDLE=${IDLE:-19000}
LOAD_MAX=${LOAD_MAX:-1.5}
LOAD_WAIT=${LOAD_WAIT:-180}
STORE=${STORE:-/tmp/starling-bench-im}
TARGET=${CARGO_TARGET_DIR:-target}

cargo build --release --locked -p starling -p starling-bench
B=$TARGET/release/starling-bench
tmp=$(mktemp -d)
server_pid=
stop_server() {
  if [[ -n $server_pid ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
  rm -rf "$STORE"
}
cleanup() {
  stop_server
  rm -rf "$tmp"
}
trap cleanup EXIT

TCP=3101 HTTP=3111
SECRET=bench-secret-0123456789abcdef ADMIN=bench-admin
cat >"$tmp/starling.toml" <<EOF
[comet.tcp]
bind = ["127.0.0.1:$TCP"]
[logic.http]
bind = "127.0.0.1:$HTTP"
[im]
enabled = true
token_secret = "$SECRET"
admin_token = "$ADMIN"
path = "$STORE"
send_rate = 1000000
max_group_members = 2000
[log]
filter = "warn"
EOF

# A server with an empty store.
fresh() {
  stop_server
  "$TARGET/release/starling" --config "$tmp/starling.toml" >"$tmp/starling.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/$TCP) 2>/dev/null && return
    sleep 0.1
  done
  cat "$tmp/starling.log" >&2
  echo "the server did not start" >&2
  exit 1
}

# Waits for the machine to be quiet enough to measure; says what the load was.
calm() {
  local waited=0
  while awk -v max="$LOAD_MAX" '{exit !($1 > max)}' /proc/loadavg && ((waited < LOAD_WAIT)); do
    sleep 10
    waited=$((waited + 10))
  done
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (waited ${waited}s)" >&2
}

run() { # label, args...
  local label=$1
  shift
  calm
  echo "== $label" >&2
  "$B" "$@" --label "$label" | tee -a "$OUT"
}

if want fsync; then
  mkdir -p "$STORE"
  for r in $(seq "$RUNS"); do
    calm
    "$B" im fsync --dir "$STORE" -n 500 | tee -a "$OUT"
  done
  rm -rf "$STORE"
fi
if want p2p || want rate || want group || want sync; then
  fresh
  im=(--addr "127.0.0.1:$TCP" --secret "$SECRET" --pid "$server_pid")
  for r in $(seq "$RUNS"); do
    if want p2p; then
      run "im-p2p-$r" im p2p "${im[@]}" --pairs "$PAIRS" --duration "${P2P_SECS}s"
    fi
    if want rate; then
      run "im-rate-$r" im p2p "${im[@]}" --pairs "$PAIRS" --rate "$RATE" \
        --duration "${RATE_SECS}s"
    fi
    if want group; then
      run "im-group-$r" im group "${im[@]}" --http "127.0.0.1:$HTTP" --admin-token "$ADMIN" \
        --members "$GROUP_MEMBERS" --senders "$GROUP_SENDERS" --rate "$GROUP_RATE" \
        --duration "${GROUP_SECS}s"
    fi
    if want sync; then
      run "im-sync-$r" im sync "${im[@]}" -m "$SYNC_MESSAGES" --reps "$SYNC_REPS"
    fi
  done
  stop_server
fi
if want idle; then
  for r in $(seq "$RUNS"); do
    fresh
    run "idle-goim-$r" conns --peer starling --addr "127.0.0.1:$TCP" -n "$IDLE" \
      --inflight 500 --hold 5s --pid "$server_pid"
    fresh
    run "idle-im-$r" conns --peer starling --addr "127.0.0.1:$TCP" -n "$IDLE" \
      --inflight 500 --hold 5s --pid "$server_pid" --im-secret "$SECRET"
  done
  stop_server
fi

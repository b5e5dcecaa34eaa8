#!/usr/bin/env bash
# Runs the figures of bench/RESULTS.md: Starling (release build) side by side with
# redis-server, nats-server and Mosquitto, each started here on a spare port and stopped after.
# Installs the peers with apt-get when absent. Writes one JSON line per run to $OUT.
#
#   tools/bench-peers.sh [memory|burst|pinned|steady|idle|floor|keys|ws|all]   (default: all)
#   tools/bench-peers.sh im [p2p|rate|group|offline|idle|all]
#
# im: Starling's IM side by side with ejabberd (issue 16), each server on one core: see
# tools/bench-im-peers.sh, which it runs. Not part of `all`.
#
# burst: 200 room messages as fast as each peer accepts them, WINDOW of them unacknowledged
# (pipelined), the same window for every peer. pinned: the same bursts with each server
# restarted on core 0 alone and the client on core 1 alone (taskset), so a single-threaded
# peer and Starling (then one comet worker) are compared on equal cores.
#
# Environment: OUT (default bench/results.jsonl), RUNS (default 2), SUBS (default 10000),
# STEADY_SECS (default 200), BATCH_WAIT (default 1ms: the subscribers' and the floor's reader
# pause after a wake-up that found sockets ready, in the one-message-per-second runs; 0s reads
# as soon as anything is ready), WINDOW (default 200: the whole burst in flight, so the peer,
# not the publisher's round trips, is the limit).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
if [[ $what == im ]]; then
  shift
  exec tools/bench-im-peers.sh "$@"
fi
OUT=${OUT:-bench/results.jsonl}
RUNS=${RUNS:-2}
SUBS=${SUBS:-10000}
STEADY_SECS=${STEADY_SECS:-200}
BATCH_WAIT=${BATCH_WAIT:-1ms}
WINDOW=${WINDOW:-200}

need() {
  command -v "$1" >/dev/null 2>&1 && return
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null
}
need redis-server redis-server
need nats-server nats-server
need mosquitto mosquitto
need taskset util-linux

cargo build --release --locked -p starling -p starling-bench
B=target/release/starling-bench
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# Spare ports, far from goim's.
REDIS=16379 NATS=14222 MQTT=11883 TCP=13101 WS=13102 HTTP=13111

cat >"$tmp/starling.toml" <<EOF
[comet.tcp]
bind = ["0.0.0.0:$TCP"]
[comet.websocket]
bind = ["0.0.0.0:$WS"]
[logic.http]
bind = "0.0.0.0:$HTTP"
[log]
filter = "warn"
EOF
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n' "$MQTT" >"$tmp/mosquitto.conf"

# SERVER_CPUS: when set, servers start on those cores only (taskset -c).
SERVER_CPUS=
start() { # name, command...
  local name=$1
  shift
  if [[ -n $SERVER_CPUS ]]; then
    set -- taskset -c "$SERVER_CPUS" "$@"
  fi
  "$@" >"$tmp/$name.log" 2>&1 &
  pids+=($!)
  eval "${name}_pid=$!"
  sleep 1
}

# A fresh server per memory run: its RSS before is that of a server with no connections.
fresh() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
  start starling target/release/starling --config "$tmp/starling.toml"
  start redis redis-server --port "$REDIS" --save '' --appendonly no --protected-mode no \
    --maxclients 100000 --client-output-buffer-limit "pubsub 0 0 0"
  start nats nats-server -a 127.0.0.1 -p "$NATS"
  start mosquitto mosquitto -c "$tmp/mosquitto.conf"
}

# CLIENT_CPUS: when set, the bench client (and its subscriber processes) run on those cores.
CLIENT_CPUS=
run() { # label, args...
  local label=$1
  shift
  echo "== $label" >&2
  local pin=()
  [[ -z $CLIENT_CPUS ]] || pin=(taskset -c "$CLIENT_CPUS")
  "${pin[@]}" "$B" "$@" --label "$label" | tee -a "$OUT"
}

peers() { # yields: peer addr push pid
  echo "starling 127.0.0.1:$TCP 127.0.0.1:$HTTP $starling_pid"
  echo "redis 127.0.0.1:$REDIS 127.0.0.1:$REDIS $redis_pid"
  echo "nats 127.0.0.1:$NATS 127.0.0.1:$NATS $nats_pid"
  echo "mqtt 127.0.0.1:$MQTT 127.0.0.1:$MQTT $mosquitto_pid"
}

if [[ $what == memory || $what == all ]]; then
  for r in $(seq "$RUNS"); do
    fresh
    while read -r peer addr _push pid; do
      run "memory-$peer-$r" conns --peer "$peer" --addr "$addr" -n 19000 --inflight 500 \
        --hold 5s --pid "$pid"
    done < <(peers)
  done
fi
fresh
if [[ $what == burst || $what == all ]]; then
  for r in $(seq "$RUNS"); do
    while read -r peer addr push pid; do
      run "burst-$peer-$r" fanout --peer "$peer" --addr "$addr" --push "$push" -n "$SUBS" \
        -m 200 -s 64 --window "$WINDOW" --pid "$pid"
    done < <(peers)
  done
fi
if [[ $what == pinned || $what == all ]]; then
  SERVER_CPUS=0 CLIENT_CPUS=1
  fresh
  for r in $(seq "$RUNS"); do
    while read -r peer addr push pid; do
      run "pinned-$peer-$r" fanout --peer "$peer" --addr "$addr" --push "$push" -n "$SUBS" \
        -m 200 -s 64 --window "$WINDOW" --pid "$pid"
    done < <(peers)
  done
  SERVER_CPUS='' CLIENT_CPUS=''
  fresh
fi
if [[ $what == steady || $what == all ]]; then
  for r in $(seq "$RUNS"); do
    while read -r peer addr push pid; do
      [[ $peer == starling || $peer == redis ]] || continue
      run "steady-$peer-$r" fanout --peer "$peer" --addr "$addr" --push "$push" -n "$SUBS" \
        -m "$STEADY_SECS" -s 64 --msg-rate 1 --batch-wait "$BATCH_WAIT" --pid "$pid" \
        --plot "bench/steady-$peer-$r.png"
    done < <(peers)
  done
fi
if [[ $what == idle || $what == all ]]; then
  # What the steady runs' connections cost besides deliveries: the same subscribers,
  # heartbeating at the bench's default 30 s, no messages; CPU over a 60 s hold.
  for r in $(seq "$RUNS"); do
    while read -r peer addr _push pid; do
      [[ $peer == starling || $peer == redis ]] || continue
      run "idle-$peer-$r" conns --peer "$peer" --addr "$addr" -n "$SUBS" --hold 60s \
        --heartbeat 30s --pid "$pid"
    done < <(peers)
  done
fi
if [[ $what == keys || $what == all ]]; then
  # 1:1 pushes: message s goes to subscriber s % SUBS, two messages per subscriber.
  for r in $(seq "$RUNS"); do
    while read -r peer addr push pid; do
      run "keys-$peer-$r" fanout --peer "$peer" --addr "$addr" --push "$push" -n "$SUBS" \
        -m $((SUBS * 2)) -s 64 --keys --pid "$pid"
    done < <(peers)
  done
fi
if [[ $what == ws || $what == all ]]; then
  for r in $(seq "$RUNS"); do
    run "burst-starling-ws-$r" fanout --peer starling-ws --addr "127.0.0.1:$WS" \
      --push "127.0.0.1:$HTTP" -n "$SUBS" -m 200 -s 64 --window "$WINDOW" --pid "$starling_pid"
  done
fi
if [[ $what == floor || $what == all ]]; then
  for r in $(seq "$RUNS"); do
    echo "== floor-$r" >&2
    "$B" floor -n 9000 --rounds 20 -s 64 --batch-wait "$BATCH_WAIT" | tee -a "$OUT"
  done
fi

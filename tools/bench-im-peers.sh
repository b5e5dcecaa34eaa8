#!/usr/bin/env bash
# Issue 16: Starling's IM side by side with ejabberd (Debian's package), the same client and
# the same scenarios in one run, each server on core 0 alone and the client on core 1 alone
# (taskset). `tools/bench-peers.sh im` runs this. Installs ejabberd with apt-get when absent
# (its system service is stopped and disabled; this script starts its own). Builds the
# release binaries first (`cargo build --release -p starling -p starling-bench`). Appends one
# JSON line per scenario, server and run to $OUT.
#
#   tools/bench-im-peers.sh [p2p|rate|group|offline|idle|all]   (default: all; comma-separated)
#
# Scenarios (each RUNS times, Starling then ejabberd):
#   p2p      PAIRS sender → receiver pairs, one message in flight per sender, as fast as
#            acknowledged, P2P_SECS (Starling: SendAck; ejabberd: XEP-0198 <a h>).
#   rate     the same pairs paced at RATE messages/s in total for RATE_SECS: ack and delivery
#            latency.
#   group    GROUP_MEMBERS members all online (Starling: a group; ejabberd: a MUC room),
#            GROUP_SENDERS senders, GROUP_RATE messages/s for GROUP_SECS.
#   offline  OFFLINE_MESSAGES stored for a user who then connects (Starling: IM_SYNC and pulls;
#            ejabberd: mod_offline's flood after initial presence), OFFLINE_REPS users.
#   idle     IDLE_SIZES connected idle users (Starling: IM connections; ejabberd: available
#            sessions), a freshly started server for each size: RSS growth per user.
# Server CPU per message is in the p2p and rate lines (`server_cpu_us_per_msg`).
#
# Starling: the all-in-one, `[im]` with the embedded store at `durability = "sync"` (every
# acknowledged message fdatasync'd), one comet worker. ejabberd: tools/ejabberd/ejabberd.yml
# (mnesia archive, no per-message sync).
#
# Environment: OUT (bench/results.jsonl), RUNS (2), PAIRS (500), P2P_SECS (20), RATE (1000),
# RATE_SECS (30), GROUP_MEMBERS (500), GROUP_SENDERS (5), GROUP_RATE (10), GROUP_SECS (30),
# OFFLINE_MESSAGES (2000), OFFLINE_REPS (3), IDLE_SIZES ("5000 19000"), SERVER_CPUS (0),
# CLIENT_CPUS (1), CARGO_TARGET_DIR (target), LABEL (a prefix for the JSON lines' labels).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
want() { [[ $what == all || ,$what, == *,$1,* ]]; }
for w in ${what//,/ }; do
  case $w in
    all | p2p | rate | group | offline | idle) ;;
    *)
      echo "bench-im-peers: unknown scenario '$w' (p2p, rate, group, offline, idle, all)" >&2
      exit 2
      ;;
  esac
done
OUT=${OUT:-bench/results.jsonl}
RUNS=${RUNS:-2}
PAIRS=${PAIRS:-500}
P2P_SECS=${P2P_SECS:-20}
RATE=${RATE:-1000}
RATE_SECS=${RATE_SECS:-30}
GROUP_MEMBERS=${GROUP_MEMBERS:-500}
GROUP_SENDERS=${GROUP_SENDERS:-5}
GROUP_RATE=${GROUP_RATE:-10}
GROUP_SECS=${GROUP_SECS:-30}
OFFLINE_MESSAGES=${OFFLINE_MESSAGES:-2000}
OFFLINE_REPS=${OFFLINE_REPS:-3}
IDLE_SIZES=${IDLE_SIZES:-5000 19000}
SERVER_CPUS=${SERVER_CPUS:-0}
CLIENT_CPUS=${CLIENT_CPUS:-1}
TARGET=${CARGO_TARGET_DIR:-target}
LABEL=${LABEL:-}

if ! command -v ejabberdctl >/dev/null 2>&1; then
  echo "bench-im-peers: installing ejabberd" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q ejabberd >/dev/null
fi
# The package's own service (port 5222) is not the one measured.
(service ejabberd stop || true) >/dev/null 2>&1
(update-rc.d ejabberd disable || true) >/dev/null 2>&1
command -v taskset >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q util-linux >/dev/null

cargo build --release --locked -p starling -p starling-bench
B=$TARGET/release/starling-bench
tmp=$(mktemp -d /tmp/bench-im-peers.XXXXXX)
server_pid= server=
stop_server() {
  if [[ $server == ejabberd ]]; then
    ejabberdctl --ctl-config "$tmp/ejabberd/ejabberdctl.cfg" --node "$EJ_NODE" stop >/dev/null 2>&1 || true
  fi
  if [[ -n $server_pid ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  # ejabberdctl's foreground leaves beam behind when killed, and beam is not this shell's
  # child: wait until it is gone (the next server takes its port).
  pkill -f "beam.smp.*-sname $EJ_NODE" 2>/dev/null || true
  for _ in $(seq 100); do
    pgrep -f "beam.smp.*-sname $EJ_NODE" >/dev/null || break
    sleep 0.1
  done
  pkill -9 -f "beam.smp.*-sname $EJ_NODE" 2>/dev/null || true
  server_pid= server=
  rm -rf "$tmp/store" "$tmp/ejabberd/spool"
}
cleanup() {
  stop_server
  rm -rf "$tmp"
}
trap cleanup EXIT

TCP=13101 HTTP=13111 XMPP=15222
EJ_NODE=starling-bench-ejabberd@localhost
SECRET=bench-secret-0123456789abcdef ADMIN=bench-admin
cat >"$tmp/starling.toml" <<EOF
[comet]
workers = 1
[comet.tcp]
bind = ["127.0.0.1:$TCP"]
[logic.http]
bind = "127.0.0.1:$HTTP"
[im]
enabled = true
token_secret = "$SECRET"
admin_token = "$ADMIN"
path = "$tmp/store"
durability = "sync"
send_rate = 1000000
max_group_members = 2000
[log]
filter = "warn"
EOF
mkdir -p "$tmp/ejabberd"
sed -e "s/@PORT@/$XMPP/; s/@HOST@/bench.local/" tools/ejabberd/ejabberd.yml >"$tmp/ejabberd/ejabberd.yml"
# ejabberdctl runs the server as the `ejabberd` user through su, whose PAM session resets
# the open-files limit to 1024 (19,000 users need more): it runs as this user instead, with
# this shell's limit.
cat >"$tmp/ejabberd/ejabberdctl.cfg" <<EOF
EXEC_CMD=as_current_user
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"
EJABBERD_CONFIG_PATH=$tmp/ejabberd/ejabberd.yml
EJABBERD_PID_PATH=$tmp/ejabberd/ejabberd.pid
EOF

wait_port() { # port
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
    sleep 0.1
  done
  echo "bench-im-peers: nothing listens on $1" >&2
  cat "$tmp"/*.log >&2 || true
  exit 1
}

# A freshly started server with an empty store, on SERVER_CPUS.
fresh() { # starling|ejabberd
  stop_server
  server=$1
  if [[ $1 == starling ]]; then
    taskset -c "$SERVER_CPUS" "$TARGET/release/starling" --config "$tmp/starling.toml" \
      >"$tmp/starling.log" 2>&1 &
    server_pid=$!
    wait_port "$TCP"
  else
    mkdir -p "$tmp/ejabberd/spool" "$tmp/ejabberd/logs"
    taskset -c "$SERVER_CPUS" ejabberdctl --config "$tmp/ejabberd/ejabberd.yml" \
      --ctl-config "$tmp/ejabberd/ejabberdctl.cfg" --spool "$tmp/ejabberd/spool" \
      --logs "$tmp/ejabberd/logs" --node "$EJ_NODE" foreground >"$tmp/ejabberd.log" 2>&1 &
    wait_port "$XMPP"
    server_pid=$(pgrep -f "beam.smp.*-sname $EJ_NODE" | head -1)
  fi
}

run() { # label, args...
  local label=$LABEL$1
  shift
  echo "== $label" >&2
  taskset -c "$CLIENT_CPUS" "$B" "$@" --label "$label" | tee -a "$OUT"
}

args() { # the scenario's common arguments for $server
  if [[ $server == starling ]]; then
    echo "im" "$1" --addr "127.0.0.1:$TCP" --secret "$SECRET" --pid "$server_pid"
  else
    echo "xmpp" "$1" --addr "127.0.0.1:$XMPP" --pid "$server_pid"
  fi
}

if want p2p || want rate || want group || want offline; then
  for r in $(seq "$RUNS"); do
    for s in starling ejabberd; do
      fresh "$s"
      if want p2p; then
        # shellcheck disable=SC2046
        run "peers-im-p2p-$s-$r" $(args p2p) --pairs "$PAIRS" --duration "${P2P_SECS}s"
      fi
      if want rate; then
        # shellcheck disable=SC2046
        run "peers-im-rate-$s-$r" $(args p2p) --pairs "$PAIRS" --rate "$RATE" \
          --duration "${RATE_SECS}s"
      fi
      if want group; then
        extra=()
        [[ $s == starling ]] && extra=(--http "127.0.0.1:$HTTP" --admin-token "$ADMIN")
        # shellcheck disable=SC2046
        run "peers-im-group-$s-$r" $(args group) "${extra[@]}" --members "$GROUP_MEMBERS" \
          --senders "$GROUP_SENDERS" --rate "$GROUP_RATE" --duration "${GROUP_SECS}s"
      fi
      if want offline; then
        if [[ $s == starling ]]; then
          # shellcheck disable=SC2046
          run "peers-im-offline-$s-$r" $(args sync) -m "$OFFLINE_MESSAGES" --reps "$OFFLINE_REPS"
        else
          # shellcheck disable=SC2046
          run "peers-im-offline-$s-$r" $(args offline) -m "$OFFLINE_MESSAGES" \
            --reps "$OFFLINE_REPS"
        fi
      fi
    done
  done
  stop_server
fi
if want idle; then
  for r in $(seq "$RUNS"); do
    for n in $IDLE_SIZES; do
      fresh starling
      run "peers-im-idle-$n-starling-$r" conns --peer starling --addr "127.0.0.1:$TCP" -n "$n" \
        --inflight 500 --hold 5s --pid "$server_pid" --im-secret "$SECRET"
      fresh ejabberd
      run "peers-im-idle-$n-ejabberd-$r" xmpp idle --addr "127.0.0.1:$XMPP" -n "$n" \
        --pid "$server_pid"
    done
  done
  stop_server
fi

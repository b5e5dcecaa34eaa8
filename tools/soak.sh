#!/usr/bin/env bash
# The soak of issue 15 (not in CI): `starling-bench soak` against the split deployment
# (tools/lib/split.sh: comet, logic, job, Redis, tansu, PostgreSQL on this machine's
# loopback), with Redis paused (SIGSTOP, then SIGCONT) for BLIP_SECS every BLIP_EVERY seconds
# while the clients run. The bench samples every server process (RSS, fds, threads) before
# the clients, during the run and after teardown (SETTLE later), and at the end checks every
# acknowledged message in the stored logs.
#
#   tools/soak.sh                     10,000 connections, 30 minutes (the issue's figures)
#   CONNS=1000 MINUTES=3 tools/soak.sh   a smoke run
#
# Writes: OUT (bench/soak.jsonl) gets the bench's summary line with the blips added;
# SAMPLES (bench/soak-samples.jsonl) the samples, one JSON line each; PLOT
# (bench/soak-rss.png) each process's RSS over the run.
#
# Environment: CONNS (10000), MINUTES (30), CHURN (% per minute, 5), P2P_RATE (msg/s, 200),
# GROUP_COUNT (4), GROUP_SIZE (100), GROUP_RATE (msg/s per group, 2), ROOMS (50), ROOM_RATE
# (pushes/s, 5), SAMPLE_EVERY (10s), WARMUP (5m; 1m when MINUTES < 10), SETTLE (60s),
# BLIP_EVERY (s, 240), BLIP_SECS (5), BLIP_FIRST (s after the bench starts, 90), LABEL, and
# those of tools/lib/split.sh (BASE_PORT, default 3400 here; PG_POOL, PG_BIN, TANSU,
# CARGO_TARGET_DIR), PROFILE (release; debug runs the debug build, for a quick smoke run),
# BUILD (0: use the binaries already built), COMET_LOG (comet's log filter; by default its
# workers log each close, with its reason and peer, at debug), LOGS (where the servers' logs
# are copied when the run ends, /tmp/soak-logs).
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-10000}
MINUTES=${MINUTES:-30}
CHURN=${CHURN:-5}
P2P_RATE=${P2P_RATE:-200}
GROUP_COUNT=${GROUP_COUNT:-4}
GROUP_SIZE=${GROUP_SIZE:-100}
GROUP_RATE=${GROUP_RATE:-2}
ROOMS=${ROOMS:-50}
ROOM_RATE=${ROOM_RATE:-5}
SAMPLE_EVERY=${SAMPLE_EVERY:-10s}
if awk -v m="$MINUTES" 'BEGIN { exit !(m < 10) }'; then
  WARMUP=${WARMUP:-1m}
else
  WARMUP=${WARMUP:-5m}
fi
SETTLE=${SETTLE:-60s}
BLIP_EVERY=${BLIP_EVERY:-240}
BLIP_SECS=${BLIP_SECS:-5}
BLIP_FIRST=${BLIP_FIRST:-90}
LABEL=${LABEL:-soak-${CONNS}x${MINUTES}m}
OUT=${OUT:-bench/soak.jsonl}
SAMPLES=${SAMPLES:-bench/soak-samples.jsonl}
PLOT=${PLOT:-bench/soak-rss.png}
BASE_PORT=${BASE_PORT:-3400}
COMET_LOG=${COMET_LOG:-warn,starling_comet::worker=debug}
LOGS=${LOGS:-/tmp/soak-logs}
TARGET=${CARGO_TARGET_DIR:-target}

# shellcheck source=tools/lib/split.sh
source tools/lib/split.sh
split_init
blipper=
cleanup() {
  set +e # tear everything down whatever fails on the way
  [[ -n $blipper ]] && kill "$blipper" 2>/dev/null && wait "$blipper" 2>/dev/null
  [[ -n ${pids[redis]:-} ]] && kill -CONT "${pids[redis]}" 2>/dev/null
  [[ -n ${tmp:-} ]] && mkdir -p "$LOGS" && cp "$tmp"/*.log "$LOGS"/ &&
    echo "soak: the servers' logs are in $LOGS" >&2
  split_down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PROFILE=${PROFILE:-release}
build=(--locked)
[[ $PROFILE == release ]] && build+=(--release)
[[ ${BUILD:-1} == 0 ]] ||
  cargo build "${build[@]}" -p starling-comet -p starling-logic-node -p starling-job -p starling-bench
B=$TARGET/$PROFILE/starling-bench

split_up
split_warmup "$B"
procs=()
for name in comet logic job redis tansu postgres; do
  procs+=(--proc "$name=${pids[$name]}")
done
# Each tier's tokio tasks (starling_tokio_alive_tasks), from its /metrics.
procs+=(--scrape "comet=127.0.0.1:$COPS" --scrape "logic=127.0.0.1:$HTTP" --scrape "job=127.0.0.1:$JOPS")

# Redis blips: SIGSTOP keeps its sockets open and its data, as a stalled server would; every
# blip is logged as a JSON line (wall-clock ms, as the samples' unix_ms).
blips=$tmp/blips.jsonl
: >"$blips"
(
  # `sleep & wait`: the TERM trap runs at once, not when a long sleep ends.
  trap 'kill -CONT '"${pids[redis]}"' 2>/dev/null; kill $! 2>/dev/null; exit 0' TERM
  sleep "$BLIP_FIRST" & wait $!
  while :; do
    t=$(date +%s%3N)
    kill -STOP "${pids[redis]}"
    sleep "$BLIP_SECS" & wait $!
    kill -CONT "${pids[redis]}"
    echo "{\"stop_unix_ms\":$t,\"cont_unix_ms\":$(date +%s%3N)}" >>"$blips"
    sleep "$BLIP_EVERY" & wait $!
  done
) &
blipper=$!

rm -f "$SAMPLES"
"$B" soak --addr "127.0.0.1:$TCP" --secret "$SECRET" --http "127.0.0.1:$HTTP" \
  --admin-token "$ADMIN" "${procs[@]}" --label "$LABEL" --conns "$CONNS" \
  --minutes "$MINUTES" --churn-per-min "$CHURN" --p2p-rate "$P2P_RATE" --groups "$GROUP_COUNT" \
  --group-size "$GROUP_SIZE" --group-rate "$GROUP_RATE" --rooms "$ROOMS" \
  --room-rate "$ROOM_RATE" --sample-every "$SAMPLE_EVERY" --warmup "$WARMUP" \
  --settle "$SETTLE" --samples "$SAMPLES" --plot "$PLOT" >"$tmp/soak.json" &
bench=$!
# The blips stop with the traffic (the first "drain" sample, within SAMPLE_EVERY): the
# bench's drain and final check run without them.
while kill -0 "$bench" 2>/dev/null && ! grep -q '"phase":"drain"' "$SAMPLES" 2>/dev/null; do
  sleep 1
done
kill "$blipper" 2>/dev/null && wait "$blipper" 2>/dev/null
blipper=
kill -CONT "${pids[redis]}"
wait "$bench"

# Warnings and errors: DEBUG lines (comet's closes) are not counted, whatever they name.
notable() { grep -v ' DEBUG ' "$1" | grep -iE 'error|warn'; }
warnings=$(for n in logic job comet; do
  printf '%s %s\n' "$n" "$(notable "$tmp/$n.log" | wc -l)"
done | jq -Rn '[inputs | split(" ") | {(.[0]): (.[1] | tonumber)}] | add')
jq -c --slurpfile blips "$blips" --argjson warnings "$warnings" \
  '. + {blips: $blips, blip_secs: '"$BLIP_SECS"', log_warnings: $warnings}' "$tmp/soak.json" |
  tee -a "$OUT"
for n in logic job comet; do
  if notable "$tmp/$n.log" >/dev/null; then
    echo "== $n logged (first 10 warnings/errors):" >&2
    notable "$tmp/$n.log" | head -n 10 >&2 || true
  fi
done

#!/usr/bin/env bash
# What permessage-deflate (RFC 7692) costs on comet's WebSocket (bench/RESULTS.md, "WebSocket
# compression"): the all-in-one (release build) with `comet.websocket.permessage_deflate` on,
# measured with starling-bench's WebSocket client that does not offer it (`starling-ws`) and
# the one that does (`starling-ws-deflate`), a fresh server for each run:
#   - idle: CONNS connections held 5 s: server RSS per connection;
#   - busy: a room of SUBS subscribers, MESSAGES pushes of SIZE bytes, WINDOW in flight,
#     once filled with words (`--fill text`: compresses as chat text does) and once with
#     random bytes (`--fill random`: does not compress, deflate's CPU for nothing): server
#     CPU per delivery, and comet's deflate counters (bytes before and after).
# One JSON line per run to $OUT, then the `starling_comet_ws_deflate_*` lines after each busy
# run, prefixed with its label.
#
#   tools/bench-deflate.sh     # env: OUT (bench/results-deflate.jsonl), RUNS (2), CONNS (5000),
#                              #      SUBS (2000), MESSAGES (200), SIZE (512), WINDOW (10)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results-deflate.jsonl}
RUNS=${RUNS:-2}
CONNS=${CONNS:-5000}
SUBS=${SUBS:-2000}
MESSAGES=${MESSAGES:-200}
SIZE=${SIZE:-512}
WINDOW=${WINDOW:-10}

cargo build --release --locked -p starling -p starling-bench
T=${CARGO_TARGET_DIR:-target}/release
tmp=$(mktemp -d)
server=
cleanup() {
  [[ -z $server ]] || kill "$server" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# Spare ports, far from goim's and from tools/bench-peers.sh's.
TCP=23101 WS=23102 HTTP=23111
cat >"$tmp/starling.toml" <<EOF
[comet]
lame_duck = "0s"
[comet.tcp]
bind = ["127.0.0.1:$TCP"]
[comet.websocket]
bind = ["127.0.0.1:$WS"]
permessage_deflate = true
[logic.http]
bind = "127.0.0.1:$HTTP"
[log]
filter = "warn"
EOF

fresh() {
  [[ -z $server ]] || { kill "$server"; wait "$server" 2>/dev/null || true; }
  "$T/starling" --config "$tmp/starling.toml" >"$tmp/starling.log" 2>&1 &
  server=$!
  for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$HTTP/metrics" >/dev/null && return
    sleep 0.1
  done
  echo "the all-in-one did not start: $(cat "$tmp/starling.log")" >&2
  exit 1
}

for r in $(seq "$RUNS"); do
  for peer in starling-ws starling-ws-deflate; do
    fresh
    echo "== idle-$peer-$r" >&2
    "$T/starling-bench" conns --peer "$peer" --addr "127.0.0.1:$WS" -n "$CONNS" --hold 5s \
      --pid "$server" --label "idle-$peer-$r" | tee -a "$OUT"
    for fill in text random; do
      fresh
      label="busy-$fill-$peer-$r"
      echo "== $label" >&2
      "$T/starling-bench" fanout --peer "$peer" --addr "127.0.0.1:$WS" \
        --push "127.0.0.1:$HTTP" -n "$SUBS" -m "$MESSAGES" -s "$SIZE" --fill "$fill" \
        --window "$WINDOW" --pid "$server" --label "$label" | tee -a "$OUT"
      curl -sf "http://127.0.0.1:$HTTP/metrics" | grep '^starling_comet_ws_deflate' |
        sed "s/^/$label /" | tee -a "$OUT"
    done
  done
done

#!/usr/bin/env bash
# Runs the IM figures of bench/RESULTS.md for the split deployment (issue 13): the same 1:1
# and group scenarios as tools/bench-im.sh, against separate comet, logic and job processes
# with Redis, a Kafka-protocol broker (tansu) and PostgreSQL, all on this machine's loopback,
# and beside them the all-in-one (tools/bench-im.sh) in the same invocation.
#
#   tools/bench-im-split.sh [aio|split|all]   (default: all)
#
# aio: `tools/bench-im.sh fsync,p2p,rate,group` (the all-in-one, embedded store).
# split: builds release, starts (tools/lib/split.sh) redis-server, tansu (topic with 3 partitions), PostgreSQL (a
# fresh cluster: fsync on, synchronous_commit on, pg_stat_statements), logic (IM on, store
# postgres), job and comet, each on its own loopback port with its log in a temp dir; waits
# until a small warm-up send is delivered end to end; measures the broker's produce latency
# (idle); then runs each scenario RUNS times (p2p as fast as acks come, p2p at RATE msg/s, the
# GROUP_MEMBERS-member group), then tears everything down (also on error or ^C).
#
# Every split run writes its starling-bench JSON line (CPU seconds of each process over the
# measured window in server_cpu.procs_s) and then a "split-components" line: Redis commands
# and PostgreSQL transactions per message, WAL fsyncs and their mean time, the statements'
# mean execution times, what PostgreSQL's client backends were doing (pg_stat_activity sampled
# every 0.2 s) and, in the paced runs, the broker's produce latency under that load.
#
# The broker's produce latency is taken from outside: a goim room push over logic's HTTP API
# (POST /goim/push/room) is answered only after the broker acknowledged it (acks=all), so its
# time is HTTP on loopback plus one produce; nobody is in the room, so job's part is nothing.
#
# Environment: as tools/bench-im.sh (OUT, RUNS, PAIRS, P2P_SECS, RATE, RATE_SECS,
# GROUP_MEMBERS, GROUP_SENDERS, GROUP_RATE, GROUP_SECS, LOAD_MAX, LOAD_WAIT, CARGO_TARGET_DIR),
# plus PG_POOL (logic's im.postgres_pool, 16 = the default), PG_BIN (the directory of initdb and
# postgres, default the highest /usr/lib/postgresql/*/bin), TANSU (default tansu on PATH or
# ~/.cargo/bin/tansu), PROBES (produce-latency probes per measurement, 200), BASE_PORT (3200:
# comet TCP +1, comet gRPC +9, logic HTTP +11, logic gRPC +19, Redis +79, broker +92, PostgreSQL
# +54).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
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
LOAD_MAX=${LOAD_MAX:-1.5}
LOAD_WAIT=${LOAD_WAIT:-180}
PG_POOL=${PG_POOL:-16}
PROBES=${PROBES:-200}
BASE_PORT=${BASE_PORT:-3200}
TARGET=${CARGO_TARGET_DIR:-target}
export OUT RUNS PAIRS P2P_SECS RATE RATE_SECS GROUP_MEMBERS GROUP_SENDERS GROUP_RATE \
  GROUP_SECS LOAD_MAX LOAD_WAIT

if [[ $what == aio || $what == all ]]; then
  tools/bench-im.sh fsync,p2p,rate,group
fi
[[ $what == split || $what == all ]] || exit 0

# shellcheck source=tools/lib/split.sh
source tools/lib/split.sh
split_init
cleanup() {
  set +e # tear everything down whatever fails on the way
  [[ -n ${sampler:-} ]] && kill "$sampler" 2>/dev/null
  [[ -n ${prober:-} ]] && kill "$prober" 2>/dev/null
  split_down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo build --release --locked -p starling-comet -p starling-logic-node -p starling-job \
  -p starling-bench
B=$TARGET/release/starling-bench

calm() {
  local waited=0
  while awk -v max="$LOAD_MAX" '{exit !($1 > max)}' /proc/loadavg && ((waited < LOAD_WAIT)); do
    sleep 10
    waited=$((waited + 10))
  done
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (waited ${waited}s)" >&2
}

# --- the deployment (tools/lib/split.sh) -------------------------------------------------

split_up
procs=()
for name in comet logic job redis tansu postgres; do
  procs+=(--proc "$name=${pids[$name]}")
done
im=(--addr "127.0.0.1:$TCP" --secret "$SECRET" --pid "${pids[logic]}" "${procs[@]}")
split_warmup "$B"

# --- component probes -------------------------------------------------------------------

# PROBES room pushes one after another on one connection; prints one JSON object with the
# percentiles of their times (ms) and how many were answered code 0.
produce_probe() {
  local url="http://127.0.0.1:$HTTP/goim/push/room?operation=1000&type=live&room=probe"
  local args=() i
  for ((i = 0; i < PROBES; i++)); do args+=("$url"); done
  curl -s -d x -w '\nT %{time_total}\n' "${args[@]}" >"$tmp/probe.out" 2>/dev/null || true
  local ok
  ok=$(grep -c '"code":0' "$tmp/probe.out" || true)
  grep '^T ' "$tmp/probe.out" | awk '{print $2 * 1000}' | sort -n | awk -v ok="$ok" '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "{\"n\":0}"; exit }
      q = "p50 0.5 p90 0.9 p99 0.99"; split(q, a, " ")
      printf "{\"n\":%d,\"ok\":%d", NR, ok
      for (i = 1; i < 6; i += 2) { k = int(a[i+1] * NR + 0.5); if (k < 1) k = 1; if (k > NR) k = NR; printf ",\"%s_ms\":%.3f", a[i], v[k] }
      printf ",\"max_ms\":%.3f}\n", v[NR]
    }'
}

redis_stats() { # "cmd calls usec" lines
  redis-cli -p "$REDIS" info commandstats |
    sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),usec=\([0-9]*\),.*/\1 \2 \3/p'
}
pg_counters() { # JSON: commits, WAL syncs and their time (ms), WAL bytes
  sql "SELECT json_build_object('commits', (SELECT xact_commit FROM pg_stat_database WHERE datname = 'starling'),
    'rollbacks', (SELECT xact_rollback FROM pg_stat_database WHERE datname = 'starling'),
    'wal_sync', wal_sync, 'wal_sync_ms', wal_sync_time, 'wal_write', wal_write,
    'wal_bytes', wal_bytes) FROM pg_stat_wal"
}
# What PostgreSQL's client backends are doing, every 0.2 s, into $tmp/activity (one line per
# state and count per sample).
start_sampler() {
  printf '%s\n' "SELECT 'S', count(*) FROM pg_stat_activity WHERE pid = pg_backend_pid()
    UNION ALL SELECT state || ' ' || coalesce(wait_event_type || ':' || wait_event, 'running'), count(*)
    FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname = 'starling'
    AND pid <> pg_backend_pid() GROUP BY 1;" '\watch 0.2' >"$tmp/watch.sql"
  "$PG_BIN/psql" -h 127.0.0.1 -p "$PG" -U postgres -XAtq -d starling -F '|' \
    -f "$tmp/watch.sql" >"$tmp/activity" 2>/dev/null &
  sampler=$!
}
stop_sampler() { # JSON: mean number of backends in each state over the samples
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  sampler=
  awk -F'|' '$1 == "S" { n++; next } NF == 2 { c[$1] += $2 }
    END { printf "{\"samples\":%d", n; for (k in c) printf ",\"%s\":%.2f", k, c[k] / (n ? n : 1); print "}" }' \
    "$tmp/activity"
}

run() { # label, starling-bench args...: one measured run plus its component line
  local label=$1
  shift
  calm
  echo "== $label" >&2
  redis_stats >"$tmp/redis.before"
  local pg_before
  pg_before=$(pg_counters)
  sql 'SELECT pg_stat_statements_reset()' >/dev/null
  start_sampler
  if [[ $label == *rate* ]]; then
    # The broker's produce latency under this load, from a third of the way in.
    (sleep $((RATE_SECS / 3)) && produce_probe >"$tmp/probe.json") &
    prober=$!
  else
    echo null >"$tmp/probe.json"
  fi
  "$B" "$@" --label "$label" >"$tmp/run.json" || {
    for n in logic job comet; do tail -n 10 "$tmp/$n.log" >&2; done
    exit 1
  }
  if [[ -n ${prober:-} ]]; then
    wait "$prober" || true
    prober=
  fi
  local activity pg_after statements redis
  activity=$(stop_sampler)
  pg_after=$(pg_counters)
  statements=$(sql "SELECT coalesce(json_agg(s), '[]') FROM (SELECT left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS query,
      calls, round(mean_exec_time::numeric, 4) AS mean_ms, round(total_exec_time::numeric, 1) AS total_ms
    FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'starling')
    ORDER BY total_exec_time DESC LIMIT 10) s")
  redis=$(redis_stats | awk 'NR == FNR { c[$1] = $2; u[$1] = $3; next }
    { d = $2 - c[$1]; if (d > 0) printf "%s\"%s\":{\"calls\":%d,\"usec\":%d}", (n++ ? "," : ""), $1, d, $3 - u[$1] }
    BEGIN { printf "{" } END { print "}" }' "$tmp/redis.before" -)
  cat "$tmp/run.json" >>"$OUT"
  jq -c --arg lbl "$label" --argjson pb "$pg_before" --argjson pa "$pg_after" \
    --argjson st "$statements" --argjson act "$activity" --argjson redis "$redis" \
    --argjson probe "$(cat "$tmp/probe.json")" '
    (.acked) as $m
    | {scenario: "split-components", "label": $lbl, messages: $m,
       deliveries: (.deliveries // .delivered),
       cpu_s: .server_cpu.procs_s, client_cpu_s: .client_cpu_s,
       cpu_us_per_msg: (.server_cpu.procs_s | with_entries(.value = (.value * 1e6 / ($m | if . > 0 then . else 1 end) | round))),
       redis: $redis,
       redis_calls_per_msg: (([$redis[] | .calls] | add // 0) / ($m | if . > 0 then . else 1 end)),
       pg: {commits: ($pa.commits - $pb.commits), rollbacks: ($pa.rollbacks - $pb.rollbacks),
            wal_syncs: ($pa.wal_sync - $pb.wal_sync),
            wal_sync_mean_ms: (($pa.wal_sync_ms - $pb.wal_sync_ms) / ([($pa.wal_sync - $pb.wal_sync), 1] | max)),
            commits_per_wal_sync: (($pa.commits - $pb.commits) / ([($pa.wal_sync - $pb.wal_sync), 1] | max)),
            wal_bytes_per_msg: (($pa.wal_bytes - $pb.wal_bytes) / ($m | if . > 0 then . else 1 end)),
            backends: $act, statements: $st},
       produce_under_load: $probe}' "$tmp/run.json" | tee -a "$OUT"
}

calm
echo "== produce latency, idle" >&2
echo "{\"scenario\":\"split-produce-idle\",\"probe\":$(produce_probe)}" | tee -a "$OUT"

for r in $(seq "$RUNS"); do
  run "split-p2p-$r" im p2p "${im[@]}" --pairs "$PAIRS" --duration "${P2P_SECS}s"
  run "split-rate-$r" im p2p "${im[@]}" --pairs "$PAIRS" --rate "$RATE" \
    --duration "${RATE_SECS}s"
  run "split-group-$r" im group "${im[@]}" --http "127.0.0.1:$HTTP" --admin-token "$ADMIN" \
    --members "$GROUP_MEMBERS" --senders "$GROUP_SENDERS" --rate "$GROUP_RATE" \
    --duration "${GROUP_SECS}s"
done

for n in logic job comet tansu; do
  if grep -qiE 'error|warn' "$tmp/$n.log"; then
    echo "== $n logged (first 10 warnings/errors):" >&2
    grep -m 10 -iE "error|warn" "$tmp/$n.log" >&2 || true
  fi
done

# shellcheck shell=bash
# The split deployment on this machine's loopback, sourced by tools/bench-im-split.sh and
# tools/soak.sh: redis-server, tansu (a Kafka-protocol broker; topic with 3 partitions),
# PostgreSQL (a fresh cluster: fsync on, synchronous_commit on, pg_stat_statements), logic (IM
# on, store postgres), job and comet, each on its own port with its log in $tmp.
#
#   split_init          checks the programs, sets the ports below and makes $tmp
#   split_up            starts everything (pids[NAME], stop order in order[])
#   split_warmup BENCH  small sends until one is delivered end to end (job has read comet
#                       from the Redis registry)
#   split_down          stops everything in reverse order and removes $tmp
#
# Inputs (environment or variables set before sourcing): BASE_PORT (3200: comet TCP +1, comet
# gRPC +9, logic HTTP +11 (also its /metrics), logic gRPC +19, comet's [metrics] +90, job's
# [metrics] +91, Redis +79, broker +92, PostgreSQL +54), PG_POOL
# (logic's im.postgres_pool, 16), PG_BIN (the directory of initdb and postgres, default the
# highest /usr/lib/postgresql/*/bin), TANSU (default tansu on PATH or ~/.cargo/bin/tansu),
# TARGET (cargo's target directory), PROFILE (its release or debug build: release), COMET_LOG
# (comet's `[log] filter`, warn). The caller sets its own traps; its cleanup calls split_down.

split_init() {
  BASE_PORT=${BASE_PORT:-3200}
  PG_POOL=${PG_POOL:-16}
  TARGET=${TARGET:-${CARGO_TARGET_DIR:-target}}
  PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
  TANSU=${TANSU:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
  local p
  for p in redis-server redis-cli curl jq "$TANSU" "$PG_BIN/initdb" "$PG_BIN/postgres" "$PG_BIN/psql"; do
    command -v "$p" >/dev/null || { echo "missing: $p" >&2; exit 1; }
  done
  TCP=$((BASE_PORT + 1)) CGRPC=$((BASE_PORT + 9)) HTTP=$((BASE_PORT + 11))
  LGRPC=$((BASE_PORT + 19)) REDIS=$((BASE_PORT + 79)) KAFKA=$((BASE_PORT + 92))
  PG=$((BASE_PORT + 54)) COPS=$((BASE_PORT + 90)) JOPS=$((BASE_PORT + 91))
  SECRET=bench-secret-0123456789abcdef ADMIN=bench-admin TOPIC=goim-push-topic
  tmp=$(mktemp -d /tmp/starling-bench-split.XXXXXX)
  chmod 755 "$tmp" # PostgreSQL runs as its own user and must reach its directory.
  declare -gA pids=()
  order=() # start order; stopped in reverse
  # PostgreSQL refuses to run as root: run it as its own user then (setpriv execs, so the
  # postmaster keeps the pid we started).
  as_pg=(env LC_ALL=C)
  ((EUID == 0)) && as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups -- env LC_ALL=C)
  return 0
}

stop_all() {
  local i name
  for ((i = ${#order[@]} - 1; i >= 0; i--)); do
    name=${order[i]}
    # PostgreSQL: SIGINT is its fast shutdown (SIGTERM waits for every client).
    kill "-$([[ $name == postgres ]] && echo INT || echo TERM)" "${pids[$name]}" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "${pids[$name]}" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "${pids[$name]}" 2>/dev/null || true
    wait "${pids[$name]}" 2>/dev/null || true
  done
  order=()
}

split_down() {
  stop_all
  [[ -n ${tmp:-} ]] && rm -rf "$tmp"
  return 0
}

die() { # name: the failing process's log tail, then exit
  echo "== $1 failed; the end of $tmp/$1.log:" >&2
  tail -n 40 "$tmp/$1.log" >&2 || true
  exit 1
}

start() { # name, command...: runs it in the background, its output in $tmp/name.log
  local name=$1
  shift
  "$@" >"$tmp/$name.log" 2>&1 &
  pids[$name]=$!
  order+=("$name")
}

wait_port() { # name, port: until something listens, or the process died / 30 s passed
  for _ in $(seq 300); do
    kill -0 "${pids[$1]}" 2>/dev/null || die "$1"
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return
    sleep 0.1
  done
  echo "$1 did not listen on $2 within 30 s" >&2
  die "$1"
}

psql_() { "$PG_BIN/psql" -h 127.0.0.1 -p "$PG" -U postgres -XAtq -v ON_ERROR_STOP=1 "$@"; }
sql() { psql_ -d starling -c "$1"; }

split_up() {
  mkdir -p "$tmp/redis" "$tmp/tansu" "$tmp/pg"
  start redis redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no \
    --protected-mode no --dir "$tmp/redis"
  wait_port redis "$REDIS"

  (cd "$tmp/tansu" && exec "$TANSU" broker --listener-url "tcp://127.0.0.1:$KAFKA" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA" --storage-engine sqlite://tansu.db) \
    >"$tmp/tansu.log" 2>&1 &
  pids[tansu]=$!
  order+=(tansu)
  wait_port tansu "$KAFKA"
  "$TANSU" topic create "$TOPIC" --broker "tcp://127.0.0.1:$KAFKA" --partitions 3 \
    >>"$tmp/tansu.log" 2>&1 || die tansu

  ((EUID == 0)) && chown postgres: "$tmp/pg"
  "${as_pg[@]}" "$PG_BIN/initdb" -D "$tmp/pg/data" -U postgres --auth=trust -E UTF8 \
    --no-locale -N >"$tmp/initdb.log" 2>&1 || die initdb
  # Durability as in production: fsync on, every commit waits for its WAL flush. The rest is
  # bookkeeping for the component figures (statement times, WAL sync timing).
  start postgres "${as_pg[@]}" "$PG_BIN/postgres" -D "$tmp/pg/data" -p "$PG" -h 127.0.0.1 \
    -k "$tmp/pg" -c fsync=on -c synchronous_commit=on -c max_connections=100 \
    -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all \
    -c track_wal_io_timing=on
  for _ in $(seq 300); do
    kill -0 "${pids[postgres]}" 2>/dev/null || die postgres
    psql_ -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.1
  done
  psql_ -d postgres -c 'CREATE DATABASE starling' || die postgres
  sql 'CREATE EXTENSION pg_stat_statements' || die postgres

  cat >"$tmp/logic.toml" <<EOF
[logic.http]
bind = "127.0.0.1:$HTTP"
[grpc]
bind = "127.0.0.1:$LGRPC"
[redis]
url = "redis://127.0.0.1:$REDIS"
[kafka]
brokers = ["127.0.0.1:$KAFKA"]
topic = "$TOPIC"
[im]
enabled = true
store = "postgres"
postgres_url = "postgres://postgres@127.0.0.1:$PG/starling"
postgres_pool = $PG_POOL
token_secret = "$SECRET"
admin_token = "$ADMIN"
send_rate = 1000000
max_group_members = 2000
[log]
filter = "warn"
EOF
  cat >"$tmp/job.toml" <<EOF
[kafka]
brokers = ["127.0.0.1:$KAFKA"]
topic = "$TOPIC"
[redis]
url = "redis://127.0.0.1:$REDIS"
[metrics]
bind = "127.0.0.1:$JOPS"
[log]
filter = "warn"
EOF
  cat >"$tmp/comet.toml" <<EOF
[comet]
server_id = "comet1"
[comet.tcp]
bind = ["127.0.0.1:$TCP"]
[comet.websocket]
bind = []
tls_bind = []
[grpc]
bind = "127.0.0.1:$CGRPC"
[logic]
addrs = ["127.0.0.1:$LGRPC"]
[redis]
url = "redis://127.0.0.1:$REDIS"
[metrics]
bind = "127.0.0.1:$COPS"
[log]
filter = "${COMET_LOG:-warn}"
EOF
  start logic "$TARGET/${PROFILE:-release}/logic" --config "$tmp/logic.toml"
  wait_port logic "$HTTP" # bound once the IM store is open
  start job "$TARGET/${PROFILE:-release}/job" --config "$tmp/job.toml"
  start comet "$TARGET/${PROFILE:-release}/comet" --config "$tmp/comet.toml"
  wait_port comet "$TCP"
}

split_warmup() { # starling-bench path
  # job learns comet from the Redis registry (every 5 s): until then a delivery has nowhere
  # to go. Send small warm-ups until one is delivered entirely (also warms PostgreSQL's caches).
  local attempt ready=
  for attempt in $(seq 10); do
    if "$1" im p2p --addr "127.0.0.1:$TCP" --secret "$SECRET" --pairs 20 --duration 2s \
      --label warmup 2>"$tmp/warmup.log" |
      jq -e '.acked > 0 and .lost == 0 and .delivered == .acked' >/dev/null; then
      ready=1
      break
    fi
    sleep 2
  done
  if [[ -z $ready ]]; then
    tail -n 20 "$tmp/warmup.log" >&2
    for n in logic job comet; do tail -n 5 "$tmp/$n.log" >&2; done
    echo "the split deployment never delivered a warm-up message" >&2
    exit 1
  fi
  echo "split deployment up after $attempt warm-up(s): $tmp" >&2
}

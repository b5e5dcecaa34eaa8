#!/usr/bin/env bash
# The test command (README). Installs what the tests need when it is absent:
#   - redis-server (Debian's package) and iproute2 (`ip netns`, for the multi-host tests);
#   - postgresql (Debian's package: the IM store's PostgreSQL tests run its initdb and
#     postgres binaries, as the `postgres` user when root; the system cluster the package
#     starts is stopped and kept from starting again);
#   - nodejs, when absent, for goim's own JavaScript client (tools/goim-compat), and npm
#     for the TypeScript SDK's build and tests (sdk/js) and for the `ws` package
#     (tools/ws-deflate, a permessage-deflate client);
#   - tansu, a Kafka-protocol broker (crates.io), under cargo's bin directory: about 15
#     minutes to build the first time, reused after.
# The tests start their own Redis, broker and PostgreSQL on spare ports and stop them when
# they end.
# Then it builds the tier binaries (the multi-host tests run them as processes), runs every
# test of the workspace, the integration tests again on comet's epoll driver (the fallback
# when io_uring is unavailable), and the TypeScript SDK's tests. The multi-host tests
# (distributed, im_distributed, im_cluster, im_cluster_outage) need root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
    if command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null ||
            { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
    else
        echo "test.sh: please install $* (no apt-get here)" >&2
        exit 1
    fi
}

if ! command -v redis-server >/dev/null; then
    echo "test.sh: installing redis-server"
    apt_install redis-server
    # The package may start a system instance; the tests run their own.
    (service redis-server stop || true) >/dev/null 2>&1
fi
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && [ -z "${STARLING_PG_BIN:-}" ]; then
    echo "test.sh: installing postgresql"
    apt_install postgresql
    # The package starts a system cluster on 5432; the tests run their own.
    (service postgresql stop || true) >/dev/null 2>&1
    (update-rc.d postgresql disable || true) >/dev/null 2>&1
fi
command -v ip >/dev/null || apt_install iproute2
# goim's own JavaScript client runs under Node (starling/tests/goim_js.rs; Node 20 or newer).
command -v node >/dev/null || apt_install nodejs
# npm, for Node's `ws` package: a real permessage-deflate client (starling/tests/ws_deflate_js.rs
# runs `npm ci` in tools/ws-deflate when its node_modules is absent).
command -v npm >/dev/null || apt_install npm
# goim's own Go benchmark client builds offline against Debian's glog (starling/tests/goim_go.rs).
command -v go >/dev/null || apt_install golang-go
[ -d /usr/share/gocode/src/github.com/golang/glog ] || apt_install golang-glog-dev

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if [ -z "${STARLING_TANSU:-}" ] && ! command -v tansu >/dev/null && [ ! -x "$cargo_bin/tansu" ]; then
    echo "test.sh: installing tansu 0.6.0 (a Kafka-protocol broker; ~15 min the first time)"
    cargo install tansu --version 0.6.0 --locked --features libsql --quiet
fi

# One build per run: incremental state (gigabytes under target/debug/incremental) buys nothing.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo build --workspace --bins --locked
cargo test --workspace --locked
STARLING_TEST_DRIVER=epoll cargo test --locked -p starling --tests
# The TypeScript SDK (sdk/js): built with tsc, tested under Node's test runner against the
# all-in-one binary built above (each test file starts its own on spare ports). npm installs
# the SDK's dev dependencies from its lock file.
target_dir="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)"
(cd sdk/js && npm ci --no-audit --no-fund && npm run build && STARLING_BIN="$target_dir/debug/starling" npm test)

# The web chat app (app/): its committed bundle (app/dist, embedded in starling) must be what
# its sources (and the SDK's, sdk/js/src) build to, so it is rebuilt and any difference fails;
# then its end-to-end tests run in Debian's Chromium (never a downloaded browser) against the
# starling binary built above, and refresh docs/screenshots/.
command -v chromium >/dev/null || apt_install chromium
(cd app && npm ci --no-audit --no-fund --loglevel=error && npm run build)
if ! git diff --exit-code -- app/dist || [ -n "$(git status --porcelain -- app/dist)" ]; then
    echo "test.sh: app/dist differs from what app/src and sdk/js/src build to: run 'npm run build' in app/ and commit app/dist" >&2
    exit 1
fi
(cd app && STARLING_BIN="$target_dir/debug/starling" npm test)

# Last, a short fuzzing run (30 s per target; skipped with a reason without nightly Rust).
./tools/fuzz.sh 30

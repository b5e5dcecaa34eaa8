#!/usr/bin/env bash
# Runs every test of the workspace, and the integration tests again on comet's epoll driver
# (the fallback when io_uring is unavailable). Later issues add here the servers the tests
# need (Redis, a Kafka-protocol broker), installed when absent, on spare ports, stopped after.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked
STARLING_TEST_DRIVER=epoll cargo test --locked -p starling --tests

#!/usr/bin/env bash
# Runs every test of the workspace. Later issues add here the servers the tests need (Redis,
# a Kafka-protocol broker), installed when absent, started on spare ports and stopped after.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked

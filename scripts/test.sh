#!/usr/bin/env bash
# The test command: installs missing prerequisites, then runs every test
# (unit and end-to-end, against PostgreSQL servers the tests start themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
cargo test --workspace --locked "$@"

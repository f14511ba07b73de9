#!/usr/bin/env bash
# The long version of the hostile-client suite (tests/tests/hostile.rs): bigger decompression
# bombs (up to 2 GiB of zeros), 15,000 idle connections, 480 hoarded frames per connection,
# 200 produce-vs-delete rounds. CI runs the short version as part of scripts/test.sh.
# Usage: ./scripts/hostile.sh [extra nextest args, e.g. a filter: -E 'test(bomb)']
# Env: STRATA_BIN (default: a fresh debug build), STRATA_HOSTILE_KEYS (see MERGED_KEYS in
# tests/tests/hostile.rs). The tests run one at a time so their RSS figures do not mix.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${STRATA_BIN:-}" ]; then
    cargo build -p strata-cli
    export STRATA_BIN="$PWD/target/debug/strata"
fi
export HOSTILE_LONG=1
exec cargo nextest run -p strata-tests --test hostile --no-fail-fast --test-threads 1 \
    --no-capture "$@"

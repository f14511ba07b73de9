#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need (idempotently: only
# what is missing), checks formatting and lints, builds the broker, then runs every test.
# Usage: ./scripts/test.sh   (CI runs exactly this via .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages: kcat (librdkafka 2.0.2 on bookworm) for client tests, librdkafka-dev for the
# rdperf bench tool's headers.
missing_apt=()
command -v kcat >/dev/null 2>&1 || missing_apt+=(kcat)
[ -f /usr/include/librdkafka/rdkafka.h ] || missing_apt+=(librdkafka-dev)
if [ ${#missing_apt[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing_apt[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_apt[@]}"
fi

# PyPI clients: confluent-kafka (bundles librdkafka 2.x), kafka-python (pure Python), aiokafka
# (asyncio, for consumer groups) and the codec libraries kafka-python needs for snappy, lz4, zstd.
python_modules="confluent_kafka kafka aiokafka snappy cramjam lz4 zstandard"
if ! python3 -c "import ${python_modules// /, }" >/dev/null 2>&1; then
    log "installing Python packages"
    python3 -m pip install --quiet --disable-pip-version-check \
        confluent-kafka kafka-python aiokafka python-snappy cramjam lz4 zstandard
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "building the strata binary for the integration tests"
cargo build --quiet -p strata-cli
export STRATA_BIN="$PWD/target/debug/strata"

log "running every test"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi

#!/usr/bin/env bash
# Install what the tests need and run the whole test suite:
#   unit + integration tests (cargo), lint gates, a bounded fuzzing run of
#   every cargo-fuzz target, and the end-to-end tests
#   with real Chromium and FFmpeg (WHIP) peers in a private network namespace.
# Needs root (apt-get, network namespaces). Bounded: every test has timeouts.
set -euo pipefail
cd "$(dirname "$0")"

echo "==> installing test dependencies"
./scripts/install-test-deps.sh

echo "==> format and lint gates"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

echo "==> building the server (release)"
cargo build --release --locked -p sfu

echo "==> unit and integration tests"
cargo test --workspace --locked

echo "==> fuzzing every parser of network input for a bounded time (seed corpus in fuzz/corpus)"
FUZZ_TOOLCHAIN=stable FUZZ_JOBS=2 ./scripts/fuzz.sh "${FUZZ_SECONDS:-10}"

echo "==> Helm chart: lint, render every option, Kubernetes schemas, the server starts with it"
SFU_BIN="$PWD/target/release/sfu" ./tests/helm/run.sh

echo "==> end-to-end tests (Chromium, FFmpeg WHIP) in a network namespace"
SFU_BIN="$PWD/target/release/sfu" ./tests/e2e/run.sh

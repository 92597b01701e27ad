#!/usr/bin/env bash
# Install what the tests need and run the whole test suite:
#   unit + integration tests (cargo), lint gates, a bounded fuzzing run of
#   every cargo-fuzz target, and the end-to-end tests
#   with real Chromium and FFmpeg (WHIP) peers in a private network namespace.
# Needs root (apt-get, network namespaces). Bounded: every test has timeouts.
set -euo pipefail
cd "$(dirname "$0")"
# A clean clone gains nothing from incremental caches; they cost gigabytes of
# disk (a CI run once failed with "No space left on device").
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Each stage says when it starts (seconds since the suite began).
stage() { echo "==> $* (at ${SECONDS}s)"; }

stage "installing test dependencies"
./scripts/install-test-deps.sh

stage "format and lint gates"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# One build serves the tests and the end-to-end runs: the `ci` profile is
# the release build with the project's own debug assertions and overflow
# checks on (Cargo.toml), so no second (debug) build of every dependency.
stage "building the server (ci profile: release + the project's assertions)"
cargo build --profile ci --locked -p sfu

# The fuzz targets build while the tests run: the tests mostly wait on
# real peers and timers, and the build, at the lowest priority, takes only
# the CPU they leave.
export FUZZ_TOOLCHAIN=stable FUZZ_JOBS=2 FUZZ_CODEGEN_UNITS=16
fuzz_log=$(mktemp)
setsid nice -n 19 ./scripts/fuzz.sh build >"$fuzz_log" 2>&1 &
fuzz_build=$!
# Its own process group: stopped with the suite if a test fails.
trap 'kill -- -"$fuzz_build" 2>/dev/null || true' EXIT

stage "unit and integration tests (fuzz targets building beside them)"
cargo test --profile ci --workspace --locked

stage "fuzzing every parser of network input for a bounded time (seed corpus in fuzz/corpus)"
if ! wait "$fuzz_build"; then
    cat "$fuzz_log"
    echo "building the fuzz targets failed" >&2
    exit 1
fi
rm -f "$fuzz_log"
./scripts/fuzz.sh "${FUZZ_SECONDS:-10}"

stage "Helm chart: lint, render every option, Kubernetes schemas, the server starts with it"
SFU_BIN="$PWD/target/ci/sfu" ./tests/helm/run.sh

stage "end-to-end tests (Chromium, FFmpeg WHIP) in a network namespace"
SFU_BIN="$PWD/target/ci/sfu" ./tests/e2e/run.sh
stage "all passed"

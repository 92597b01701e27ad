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

# The fuzz targets build in the background from here on, at the lowest
# priority: they take the CPU the builds leave idle and, above all, what
# the tests leave while they wait on real peers and timers.
export FUZZ_TOOLCHAIN=stable FUZZ_JOBS=2 FUZZ_CODEGEN_UNITS=16
fuzz_log=$(mktemp)
# Job control gives it a process group of its own (stopped with the suite
# if a step fails) in the same session: a new session (setsid) would be a
# scheduler autogroup of its own, which gets an equal share whatever its
# nice value.
set -m
nice -n 19 ./scripts/fuzz.sh build >"$fuzz_log" 2>&1 &
fuzz_build=$!
set +m
trap 'kill -- -"$fuzz_build" 2>/dev/null || true' EXIT

stage "format and lint gates"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

stage "building the server (release)"
cargo build --release --locked -p sfu

stage "unit and integration tests"
# Six test threads on two cores: most integration tests wait on timers,
# real sockets and other processes, not the CPU (measured: cluster.rs 74 s
# with the default two threads, 31 s with eight, the same CPU seconds; the
# whole stage ~240 s -> ~160 s).
cargo test --workspace --locked -- --test-threads=6

stage "fuzzing every parser of network input for a bounded time (seed corpus in fuzz/corpus)"
if ! wait "$fuzz_build"; then
    cat "$fuzz_log"
    echo "building the fuzz targets failed" >&2
    exit 1
fi
rm -f "$fuzz_log"
./scripts/fuzz.sh "${FUZZ_SECONDS:-8}"

stage "Helm chart: lint, render every option, Kubernetes schemas, the server starts with it"
SFU_BIN="$PWD/target/release/sfu" ./tests/helm/run.sh

stage "end-to-end tests (Chromium, FFmpeg WHIP) in a network namespace"
SFU_BIN="$PWD/target/release/sfu" ./tests/e2e/run.sh
stage "all passed"

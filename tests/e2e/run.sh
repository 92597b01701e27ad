#!/usr/bin/env bash
# Run the end-to-end tests inside a private network namespace that has only
# `lo`: the server, Chromium and FFmpeg all talk over 127.0.0.1 there, so
# WebRTC uses loopback ICE candidates and nothing leaves the machine.
# Usage: SFU_BIN=target/release/sfu tests/e2e/run.sh [test files...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export SFU_BIN="${SFU_BIN:-$root/target/release/sfu}"
[ -x "$SFU_BIN" ] || { echo "server binary $SFU_BIN missing: cargo build --release -p sfu" >&2; exit 1; }

ns="sfue2e-$$-$RANDOM"
export SFU_E2E_NS="$ns"   # tests name extra namespaces "$ns-<suffix>"
cleanup() {
  # Kill anything still running in our namespaces, then remove them.
  for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$ns(-|\$)" || true); do
    for pid in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$n" 2>/dev/null || true
  done
}
trap cleanup EXIT
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up

mkdir -p "$here/artifacts"
cd "$here"
if [ "$#" -gt 0 ]; then tests=("$@"); else tests=(*.test.mjs); fi
# TAP on stdout and into a file; a failure's digest is printed last, so the
# reason is in the tail of a long CI log, not only in its middle.
results="$here/artifacts/results.tap"
status=0
ip netns exec "$ns" node --test --test-concurrency=1 --test-timeout=240000 \
  --test-reporter=tap --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$results" "${tests[@]}" || status=$?
if [ "$status" -ne 0 ]; then
  echo "==> e2e failures (from $results):"
  awk '/^not ok/ { p = 1 } p { print } p && /^  \.\.\.$/ { p = 0 }' "$results"
fi
exit "$status"

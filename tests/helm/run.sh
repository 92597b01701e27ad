#!/usr/bin/env bash
# Validate the Helm chart (tests/helm/check_chart.py) inside a private network
# namespace with only `lo`: the check starts the server on 0.0.0.0:8080.
# Usage: SFU_BIN=target/release/sfu tests/helm/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export SFU_BIN="${SFU_BIN:-$root/target/release/sfu}"
export HELM="${HELM:-$root/tests/e2e/.tools/bin/helm}"
ns="sfuhelm-$$-$RANDOM"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
timeout 600 ip netns exec "$ns" python3 "$here/check_chart.py"

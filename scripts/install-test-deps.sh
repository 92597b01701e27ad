#!/usr/bin/env bash
# Install what the test suite needs on Debian (idempotent; needs root):
#   chromium (real browser peer), iproute2 + iptables (network namespaces),
#   playwright-core (drives Chromium; no browser download), PyAV (FFmpeg 8
#   with its WHIP muxer, libx264 and libopus bundled in the wheel).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v node >/dev/null || need_apt+=(nodejs npm)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
if ((${#need_apt[@]})); then
  echo "apt: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -d tests/e2e/node_modules/playwright-core ]; then
  (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
fi

if ! python3 -c 'import av, sys; sys.exit(0 if "whip" in av.formats_available else 1)' 2>/dev/null; then
  python3 -m pip install --quiet 'av==18.1.0' 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages 'av==18.1.0'
fi
echo "test dependencies ready: $(chromium --version 2>/dev/null | head -1), PyAV $(python3 -c 'import av; print(av.__version__)')"

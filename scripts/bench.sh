#!/usr/bin/env bash
# The load benchmarks of BENCHMARKS.md: each scenario against a fresh
# release server (so its peak RSS is that scenario's), with the server's
# pid for CPU and memory, plus the raw UDP relay baseline. The server's
# per-address HTTP rate limit is off: every virtual client shares 127.0.0.1. JSON results go
# to target/bench/<name>.json, a summary line per run to stdout.
#
#   scripts/bench.sh [name ...]     (default: all; names below)
#
# Not part of the test suite: figures, not assertions.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p sfu -p loadtest >/dev/null
out=target/bench
mkdir -p "$out"
port=18180
lt=target/release/sfu-loadtest

run() { # name, loadtest args...
  local name=$1; shift
  target/release/sfu serve --http-addr 127.0.0.1:$port --log warn \
    --max-participants-per-room 5000 --http-rate-limit 0 >"$out/$name-server.log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
  "$lt" "$@" --url http://127.0.0.1:$port --server-pid "$pid" --json >"$out/$name.json" || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$out/$name.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); s = r["server"]; p = s.get("process") or {}
print(f'{sys.argv[2]:>22}: {r["streams_connected"]}/{r["streams_requested"]} connected, '
      f'loss {r["frame_loss_pct"]:.3f}%, delay p50/p99/max {r["one_way_delay_ms"]["p50"]:.1f}/'
      f'{r["one_way_delay_ms"]["p99"]:.1f}/{r["one_way_delay_ms"]["max"]:.0f} ms '
      f'(audio p99 {r["audio_delay_ms"]["p99"]:.1f}), {r["received_mbps"]:.0f} Mbit/s, '
      f'layers {r["layer_distribution"]}, server {p.get("cpu_secs", 0):.1f} CPU s '
      f'peak {p.get("peak_rss_mb", 0):.0f} MB, {s.get("packets_sent_per_cpu_sec") or 0:.0f} pkts/CPU-s, '
      f'generator {r["generator"]["cpu_secs"]:.1f} CPU s, {"PASS" if r["passed"] else "FAIL"}')
PY
}

soak() { # the 10-minute soak: table output (it has a time series)
  target/release/sfu serve --http-addr 127.0.0.1:$port --log warn --session-timeout-secs 10 \
    --http-rate-limit 0 >"$out/soak-server.log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
  "$lt" soak --url http://127.0.0.1:$port --server-pid "$pid" --duration 600 --ramp 10 \
    --participants 5 --viewers 50 --layers 3 --churn-per-sec 1 --sample-secs 60 --room soak \
    | tee "$out/soak.txt" || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

all=(relay broadcast-100 broadcast-250 broadcast-250-1layer conference-10 conference-25 audio-500 audio-1000 audio-2000)
names=("${@:-${all[@]}}")
for n in "${names[@]}"; do
  case $n in
    relay) "$lt" relay-baseline --fanout 100 --pps 1000 --duration 10 ;;
    broadcast-100) run "$n" broadcast --viewers 100 --layers 3 --ramp 5 --duration 20 --room b100 ;;
    broadcast-250) run "$n" broadcast --viewers 250 --layers 3 --ramp 10 --duration 20 --room b250 ;;
    broadcast-250-1layer) run "$n" broadcast --viewers 250 --layers 1 --ramp 10 --duration 20 --room b250s ;;
    conference-10) run "$n" conference --participants 10 --layers 3 --ramp 5 --duration 20 --room c10 ;;
    conference-25) run "$n" conference --participants 25 --layers 3 --ramp 10 --duration 20 --room c25 ;;
    audio-500) run "$n" audio-room --speakers 4 --listeners 500 --ramp 10 --duration 20 --room a500 ;;
    audio-1000) run "$n" audio-room --speakers 4 --listeners 1000 --ramp 15 --duration 20 --room a1000 ;;
    audio-2000) run "$n" audio-room --speakers 4 --listeners 2000 --ramp 20 --duration 20 --room a2000 ;;
    soak) soak ;;
    *) echo "unknown benchmark $n (one of: ${all[*]})" >&2; exit 2 ;;
  esac
done

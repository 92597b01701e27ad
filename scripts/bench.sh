#!/usr/bin/env bash
# The load benchmarks of BENCHMARKS.md: each scenario against a fresh
# release server (so its peak RSS is that scenario's), with the server's
# pid for CPU and memory, plus the raw UDP relay baseline. The server's
# per-address HTTP rate limit is off: every virtual client shares 127.0.0.1. JSON results go
# to target/bench/<name>.json, a summary line per run to stdout.
#
#   scripts/bench.sh [name ...]     (default: all; names below)
#   SERVER_ARGS="--spread-viewers-at 0" scripts/bench.sh broadcast-500-1layer
#                                   (extra flags for the server: an A/B)
#   SFU_BIN=/path/to/older/sfu scripts/bench.sh broadcast-100
#                                   (another build of the server: a before/after)
#
# `cluster` runs redis-server and three nodes sharing it (a publisher on the
# first, viewers round-robin over all three: direct vs relayed viewers and
# CPU per node; table in target/bench/cluster.txt). `meeting-nodes` runs a
# conference of 8 on one node, then over two nodes (a satellite bridged to
# the room's node; target/bench/meeting-2nodes.txt).
#
# Not part of the test suite: figures, not assertions.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p sfu -p loadtest >/dev/null
out=target/bench
mkdir -p "$out"
port=18180
lt=target/release/sfu-loadtest
sfu=${SFU_BIN:-target/release/sfu}

run() { # name, loadtest args...
  local name=$1; shift
  "$sfu" serve --http-addr 127.0.0.1:$port --log warn \
    --max-participants-per-room 5000 --http-rate-limit 0 ${SERVER_ARGS:-} >"$out/$name-server.log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
  "$lt" "$@" --url http://127.0.0.1:$port --server-pid "$pid" --json >"$out/$name.json" || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$out/$name.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); s = r["server"]; p = s.get("process") or {}
k = r["first_keyframe_ms"]
print(f'{sys.argv[2]:>22}: {r["streams_connected"]}/{r["streams_requested"]} connected, '
      f'loss {r["frame_loss_pct"]:.3f}% (packets {r["packet_loss_pct"]:.3f}%), delay p50/p99/max {r["one_way_delay_ms"]["p50"]:.1f}/'
      f'{r["one_way_delay_ms"]["p99"]:.1f}/{r["one_way_delay_ms"]["max"]:.0f} ms '
      f'(audio p99 {r["audio_delay_ms"]["p99"]:.1f}, keyframes p99 {r["keyframe_delay_ms"]["p99"]:.1f}), '
      f'first keyframe p50/p99 {k["p50"]:.0f}/{k["p99"]:.0f} ms ({r["video_lines_without_keyframe"]} lines without), {r["received_mbps"]:.0f} Mbit/s, '
      f'layers {r["layer_distribution"]}'
      f'{" (frames per layer " + str(r["video_frames_by_layer"]) + ")" if "svc" in r["settings"] else ""}, '
      f'server {p.get("cpu_secs", 0):.1f} CPU s '
      f'peak {p.get("peak_rss_mb", 0):.0f} MB, {s.get("packets_sent_per_cpu_sec") or 0:.0f} pkts/CPU-s, '
      f'generator {r["generator"]["cpu_secs"]:.1f} CPU s, '
      f'socket drops server/generator {p.get("udp_receive_drops")}/{r["generator"].get("udp_receive_drops")}, '
      f'timer lag p99 <= {(s.get("timer_lag") or {}).get("p99_at_most_secs")} s, '
      f'stale audio dropped {s.get("stale_audio_frames")}, '
      f'{"PASS" if r["passed"] else "FAIL"}')
PY
}

soak() { # the 10-minute soak: table output (it has a time series)
  "$sfu" serve --http-addr 127.0.0.1:$port --log warn --session-timeout-secs 10 \
    --http-rate-limit 0 >"$out/soak-server.log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
  "$lt" soak --url http://127.0.0.1:$port --server-pid "$pid" --duration 600 --ramp 10 \
    --participants 5 --viewers 50 --layers 3 --churn-per-sec 1 --sample-secs 60 --room soak \
    | tee "$out/soak.txt" || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

# Processes a cluster run started (Redis first), stopped on any exit.
started=()
stop_pids() { # TERM, up to 10 s, then KILL
  [ $# -gt 0 ] || return 0
  kill "$@" 2>/dev/null || true
  for _ in $(seq 100); do
    local alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  kill -9 "$@" 2>/dev/null || true
  wait "$@" 2>/dev/null || true
}
stop_started() { # the nodes, then Redis (so they can deregister)
  [ ${#started[@]} -gt 0 ] || return 0
  stop_pids "${started[@]:1}"
  stop_pids "${started[0]}"
  started=()
}
trap stop_started EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

udp_drops() { # the kernel's UDP InErrors, RcvbufErrors, SndbufErrors (all sockets)
  awk '/^Udp:/ { if (h) { print $4, $6, $7; exit } h = 1 }' /proc/net/snmp
}

start_cluster() { # name, n: redis-server + nodes n1..n<n> (CLUSTER_ARGS added); sets urls, pids
  command -v redis-server >/dev/null || { echo "$1: redis-server not installed (Debian package redis-server)" >&2; return 1; }
  local rport; rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$out/$1-redis.log" 2>&1 &
  started+=($!)
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$rport") 2>/dev/null && break; sleep 0.1; done
  urls=() pids=()
  for i in $(seq "$2"); do
    local p=$((port + i))
    "$sfu" serve --http-addr 127.0.0.1:$p --node-id n$i --redis-url redis://127.0.0.1:$rport \
      --workers 1 --http-rate-limit 0 --max-participants-per-room 5000 --drain-grace-secs 2 --log warn \
      ${CLUSTER_ARGS:-} >"$out/$1-n$i.log" 2>&1 &
    started+=($!); pids+=($!); urls+=("http://127.0.0.1:$p")
  done
  for u in "${urls[@]}"; do
    for _ in $(seq 50); do curl -sf "$u/healthz" >/dev/null && break; sleep 0.1; done
  done
  sleep 1 # every node's first heartbeat is in Redis
}

cpu_ticks() { # utime+stime of each pid (clock ticks)
  for p in "$@"; do awk '{ print $14 + $15 }' "/proc/$p/stat"; done | paste -sd' '
}

meeting_nodes() { # a 3-layer conference of 8 over two nodes (4 each, bridged) vs on one node
  run meeting-1node conference --participants 8 --layers 3 --ramp 5 --duration 20 --room m8
  local urls pids
  start_cluster meeting 2 || return 1
  local before; before=$(cpu_ticks "${pids[@]}")
  timeout 120 "$lt" conference --participants 8 --layers 3 --ramp 5 --duration 20 --room m8 \
    --nodes "$(IFS=,; echo "${urls[*]}")" --url "${urls[0]}" --json >"$out/meeting-2nodes.json" || true
  local after; after=$(cpu_ticks "${pids[@]}")
  stop_started
  python3 - "$out/meeting-2nodes.json" "$before" "$after" "$(getconf CLK_TCK)" <<'PY' | tee "$out/meeting-2nodes.txt"
import json, sys
r = json.load(open(sys.argv[1])); hz = float(sys.argv[4])
cpu = [(int(b) - int(a)) / hz for a, b in zip(sys.argv[2].split(), sys.argv[3].split())]
print(f'meeting-2nodes: {r["streams_connected"]}/{r["streams_requested"]} connected, '
      f'loss {r["frame_loss_pct"]:.3f}%, delay p50/p99/max {r["one_way_delay_ms"]["p50"]:.1f}/'
      f'{r["one_way_delay_ms"]["p99"]:.1f}/{r["one_way_delay_ms"]["max"]:.0f} ms '
      f'(audio p99 {r["audio_delay_ms"]["p99"]:.1f}), layers {r["layer_distribution"]}, '
      f'node CPU s {[round(c, 1) for c in cpu]} (sum {sum(cpu):.1f}), '
      f'generator {r["generator"]["cpu_secs"]:.1f} CPU s, '
      f'generator socket drops {r["generator"].get("udp_receive_drops")}, '
      f'{"PASS" if r["passed"] else "FAIL"}')
PY
}

cluster() { # redis-server + nodes n1..n3; publisher on n1, viewers round-robin
  local urls pids
  start_cluster cluster 3 || return 1
  local nodes pidlist udp_before
  nodes=$(IFS=,; echo "${urls[*]}"); pidlist=$(IFS=,; echo "${pids[*]}")
  udp_before=$(udp_drops)
  timeout 120 "$lt" cluster --nodes "$nodes" --server-pids "$pidlist" --viewers 60 --layers 3 \
    --ramp 10 --duration 20 --room cl60 --json >"$out/cluster.json" || true
  echo "UDP datagrams dropped on this machine during the run (InErrors RcvbufErrors SndbufErrors): $udp_before -> $(udp_drops)" >"$out/cluster.txt"
  stop_started
  python3 - "$out/cluster.json" <<'PY' | tee -a "$out/cluster.txt"
import json, sys
r = json.load(open(sys.argv[1])); a = r["report"]
q = lambda d: f'{d["p50"]:.1f}/{d["p99"]:.1f}/{d["max"]:.0f}'
print(f'cluster: {a["streams_connected"]}/{a["streams_requested"]} connected, loss {a["frame_loss_pct"]:.3f}%, '
      f'delay p50/p99/max {q(a["one_way_delay_ms"])} ms, layers {a["layer_distribution"]}, '
      f'room on {r["room_node"]}, {"PASS" if r["passed"] else "FAIL"}')
for name in ("direct", "relayed"):
    p = r[name]
    print(f'  {name:>7}: {p["connected"]}/{p["viewers"]}, loss {p["frame_loss_pct"]:.3f}% '
          f'(audio {p["audio_loss_pct"]:.3f} / video {p["video_loss_pct"]:.3f}), delay {q(p["one_way_delay_ms"])} ms, '
          f'video {q(p["video_delay_ms"])}, audio {q(p["audio_delay_ms"])}, join {q(p["join_ms"])}, '
          f'layers {p["layer_distribution"]}, video frames by layer {p["video_frames_by_layer"]}, '
          f'{p["payload_kbps_per_viewer"]:.0f} kbit/s payload per viewer')
    print(f'           worst video delay by second {[round(x) for x in p["video_delay_max_ms_by_second"]]}')
    print(f'           video frames lost by second {p["video_lost_by_second"]}')
for n in r["nodes"]:
    pr = n.get("process") or {}
    v = n["served"]; c = n["counters"]
    print(f'  {n["id"] or n["url"]} ({"origin" if n["origin"] else "edge"}): served {v["viewers"]}, '
          f'loss {v["frame_loss_pct"]:.3f}%, video {q(v["video_delay_ms"])} ms, '
          f'participants {n["participants_at_end"]}, {pr.get("cpu_secs", 0):.1f} CPU s, peak {pr.get("peak_rss_mb", 0):.0f} MB, '
          f'{n["packets_sent"] or 0:.0f} packets out ({n["sent_mbps"] or 0:.1f} Mbit/s), '
          f'{n["packets_sent_per_cpu_sec"] or 0:.0f} per CPU-s, NACKs / PLIs in {c.get("sfu_nacks_received_total", "-")} / '
          f'{c.get("sfu_plis_received_total", "-")}, keyframe requests out {c.get("sfu_keyframe_requests_sent_total", "-")}')
print(f'  generator {a["generator"]["cpu_secs"]:.1f} CPU s')
PY
  head -1 "$out/cluster.txt"
}

all=(relay broadcast-100 broadcast-100-svc broadcast-100-svc-av1 broadcast-250 broadcast-250-1layer broadcast-400 broadcast-500-1layer conference-10 conference-25 conference-25-grid conference-50 audio-500 audio-1000 audio-2000 audio-2000-1speaker relay-audio-2000 cluster meeting-nodes)
names=("${@:-${all[@]}}")
for n in "${names[@]}"; do
  case $n in
    relay) "$lt" relay-baseline --fanout 100 --pps 1000 --duration 10 ;;
    broadcast-100) run "$n" broadcast --viewers 100 --layers 3 --ramp 5 --duration 20 --room b100 ;;
    # Scalable VP9 (L3T3_KEY) at broadcast-100's total rate (150+500+2500 kbit/s).
    broadcast-100-svc) run "$n" broadcast --viewers 100 --svc L3T3 --svc-kbps 300,800,2050 --ramp 5 --duration 20 --room b100svc ;;
    # The same as AV1 with the dependency descriptor (libaom's L3T3_KEY shape).
    broadcast-100-svc-av1) run "$n" broadcast --viewers 100 --svc L3T3 --svc-codec av1 --svc-kbps 300,800,2050 --ramp 5 --duration 20 --room b100av1 ;;
    broadcast-250) run "$n" broadcast --viewers 250 --layers 3 --ramp 10 --duration 20 --room b250 ;;
    broadcast-250-1layer) run "$n" broadcast --viewers 250 --layers 1 --ramp 10 --duration 20 --room b250s ;;
    broadcast-400) run "$n" broadcast --viewers 400 --layers 3 --ramp 5 --duration 20 --room b400 ;;
    broadcast-500-1layer) run "$n" broadcast --viewers 500 --layers 1 --ramp 5 --duration 20 --room b500s ;;
    conference-10) run "$n" conference --participants 10 --layers 3 --ramp 5 --duration 20 --room c10 ;;
    conference-25) run "$n" conference --participants 25 --layers 3 --ramp 10 --duration 20 --room c25 ;;
    conference-25-grid) run "$n" conference --participants 25 --layers 3 --tile-width 320 --talking 2 --ramp 10 --duration 20 --room c25g ;;
    conference-50) run "$n" conference --participants 50 --layers 3 --visible 16 --tile-width 320 --talking 2 --ramp 15 --duration 20 --room c50 ;;
    audio-500) run "$n" audio-room --speakers 4 --listeners 500 --ramp 10 --duration 20 --room a500 ;;
    audio-1000) run "$n" audio-room --speakers 4 --listeners 1000 --ramp 15 --duration 20 --room a1000 ;;
    audio-2000) run "$n" audio-room --speakers 4 --listeners 2000 --ramp 20 --duration 20 --room a2000 ;;
    audio-2000-1speaker) run "$n" audio-room --speakers 1 --listeners 2000 --ramp 20 --duration 20 --room a2000s ;;
    relay-audio-2000) "$lt" relay-baseline --fanout 2000 --pps 200 --duration 10 ;;
    soak) soak ;;
    cluster) cluster ;;
    meeting-nodes) meeting_nodes ;;
    *) echo "unknown benchmark $n (one of: ${all[*]})" >&2; exit 2 ;;
  esac
done

#!/usr/bin/env bash
# Run every cargo-fuzz target in fuzz/ for a bounded time and fail if any
# of them crashes (panic, failed assertion, sanitizer report, timeout, OOM).
#
#   scripts/fuzz.sh [seconds-per-target]      (default 30)
#   scripts/fuzz.sh build                     (only build the targets)
#
# Toolchain: with FUZZ_TOOLCHAIN=nightly (the default when a nightly toolchain
# is installed) the targets build with AddressSanitizer. With
# FUZZ_TOOLCHAIN=stable (the default otherwise, and what test.sh uses so that
# CI needs nothing but the one stable toolchain) they build without a
# sanitizer: RUSTC_BOOTSTRAP=1 lets stable rustc take the -Z flags
# libFuzzer's instrumentation needs. The project has no `unsafe` code, so the
# sanitizer adds little; panics, failed assertions, timeouts and OOMs are
# caught either way. FUZZ_PROFILE=dev builds without optimisation: about 40 %
# less build time but 4-30x fewer executions per second, so test.sh keeps
# release. FUZZ_CODEGEN_UNITS=16 lets rustc split each crate again (cargo
# fuzz builds release with one codegen unit, for up to 3x faster runs):
# test.sh sets it, its 10-second runs gain less than the build costs. Installs cargo-fuzz if it is missing. Seeds come from fuzz/corpus/<target>/ (read
# only, committed); what libFuzzer discovers goes to fuzz/generated/ (ignored
# by git). Crashing inputs land in fuzz/artifacts/<target>/. Logs:
# fuzz/generated/logs/<target>.log.
#
# Bounded: one build (timeout), then one run per target with libFuzzer's
# -max_total_time plus a hard `timeout` around it.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-30}"
build_only=false
if [ "$secs" = build ]; then
    build_only=true
elif ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: $0 [seconds-per-target | build]" >&2
    exit 2
fi

toolchain="${FUZZ_TOOLCHAIN:-}"
if [ -z "$toolchain" ]; then
    if cargo +nightly --version >/dev/null 2>&1; then toolchain=nightly; else toolchain=stable; fi
fi
case "$toolchain" in
    nightly) fuzz=(cargo +nightly fuzz) ; mode=(--sanitizer address) ;;
    stable) export RUSTC_BOOTSTRAP=1; fuzz=(cargo fuzz) ; mode=(--sanitizer none) ;;
    *) echo "FUZZ_TOOLCHAIN must be nightly or stable" >&2; exit 2 ;;
esac
case "${FUZZ_PROFILE:-release}" in
    release) ;;
    dev) mode+=(--dev) ;;
    *) echo "FUZZ_PROFILE must be release or dev" >&2; exit 2 ;;
esac
if [ -n "${FUZZ_CODEGEN_UNITS:-}" ]; then
    mode+=(--codegen-units "$FUZZ_CODEGEN_UNITS")
fi
echo "==> fuzzing with the $toolchain toolchain (${mode[*]})"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    timeout 1800 cargo install cargo-fuzz --locked
fi

echo "==> building fuzz targets"
timeout 3600 "${fuzz[@]}" build "${mode[@]}"
if $build_only; then
    exit 0
fi

mapfile -t targets < <("${fuzz[@]}" list)
if [ "${#targets[@]}" -eq 0 ]; then
    echo "no fuzz targets found" >&2
    exit 1
fi

mkdir -p fuzz/generated/logs
# Targets run FUZZ_JOBS at a time (default 1; each target is single-threaded,
# so one per core keeps every run at full speed).
jobs="${FUZZ_JOBS:-1}"
status_dir=$(mktemp -d)
trap 'rm -rf "$status_dir"' EXIT
run_target() {
    local t=$1 log="fuzz/generated/logs/$1.log"
    mkdir -p "fuzz/generated/$t" "fuzz/corpus/$t"
    # The first corpus directory receives new inputs; the seeds stay as they are.
    if timeout $((secs + 300)) "${fuzz[@]}" run "${mode[@]}" "$t" \
        "fuzz/generated/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
        echo ok >"$status_dir/$t"
    else
        echo failed >"$status_dir/$t"
    fi
}
echo "==> ${#targets[@]} targets, ${secs}s each, $jobs at a time"
running=0
for t in "${targets[@]}"; do
    run_target "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait
failed=()
for t in "${targets[@]}"; do
    log="fuzz/generated/logs/$t.log"
    if [ "$(cat "$status_dir/$t" 2>/dev/null)" = ok ]; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
        echo "    $t ok: ${runs:-?} runs, ${rate:-?} exec/s"
    else
        echo "    $t FAILED (see $log and fuzz/artifacts/$t/):"
        grep -E "panicked|ERROR: |SUMMARY|Test unit written" "$log" | head -n 10 | sed 's/^/    /' || true
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "==> crashing targets: ${failed[*]}" >&2
    exit 1
fi
echo "==> all ${#targets[@]} targets ran ${secs}s without a crash"

#!/usr/bin/env bash
# The GPU check: run on a machine with an NVIDIA GPU against prebuilt binaries
# (the GPU machine has no Rust). About 6–8 minutes on an H100.
#
#   scripts/gpu-bundle.sh            # here: release binaries into .gpu-bundle/
#   scripts/gpu-check.sh OUT_DIR     # there: verify every kernel, sanitizers, trinity run, benches
#
# Writes logs and results under OUT_DIR. Never changes clocks, power limits or modes.
set -uo pipefail
out=${1:-${OUT:-gpu-check-out}}
bundle=${BUNDLE:-.gpu-bundle}
mkdir -p "$out/results"
status=0
log() { echo "== $*" | tee -a "$out/summary.txt"; }
step() { # name, command...
    local name=$1
    shift
    log "$name"
    "$@" >"$out/$name.txt" 2>&1
    local rc=$?
    tail -n 5 "$out/$name.txt"
    echo "$name: exit $rc" | tee -a "$out/summary.txt"
    [ $rc -eq 0 ] || status=1
}

log "libraries and device (a missing library shows here first)"
{ ldconfig -p | grep -E 'libcuda\.so|libcublas|libcublasLt|libnvidia-ml' || echo "(none found by ldconfig)"; } | tee "$out/libraries.txt"
{ nvidia-smi || echo "nvidia-smi failed"; } | tee "$out/nvidia-smi.txt"

step info "$bundle/trinity" info
step verify-cuda "$bundle/trinity" verify --backend cuda
if command -v compute-sanitizer >/dev/null; then
    step memcheck timeout 240 compute-sanitizer --tool memcheck --error-exitcode 3 "$bundle/trinity" verify --backend cuda --small
    step racecheck timeout 240 compute-sanitizer --tool racecheck --error-exitcode 3 "$bundle/trinity" verify --backend cuda --small
else
    log "compute-sanitizer not found: sanitizers skipped"
fi
step run "$bundle/trinity" run --results-dir "$out/results" ${TRINITY_COST_PER_HOUR:+--cost-per-hour $TRINITY_COST_PER_HOUR}
for b in "$bundle"/bench-*; do
    [ -x "$b" ] || continue
    step "$(basename "$b")" "$b" --bench --warm-up-time 0.3 --measurement-time 1
done
exit $status

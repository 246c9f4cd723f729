#!/usr/bin/env bash
# The GPU check: run on a machine with an NVIDIA GPU against prebuilt binaries.
#
#   scripts/gpu-bundle.sh            # here: builds release binaries into .gpu-bundle/
#   scripts/gpu-check.sh OUT_DIR     # there: verifies every kernel, runs the benches
#
# Writes logs under OUT_DIR. Never changes clocks, power limits or modes.
set -uo pipefail
out=${1:-${OUT:-gpu-check-out}}
bundle=${BUNDLE:-.gpu-bundle}
mkdir -p "$out"
log() { echo "== $*" | tee -a "$out/summary.txt"; }

log "libraries"
{ ldconfig -p | grep -E 'libcuda\.so|libcublas|libcublasLt|libnvidia-ml' || echo "(none found by ldconfig)"; } | tee "$out/libraries.txt"
{ nvidia-smi || echo "nvidia-smi failed"; } | tee "$out/nvidia-smi.txt"

log "trinity info"
"$bundle/trinity" info 2>&1 | tee "$out/info.txt"

log "trinity verify --backend cuda"
"$bundle/trinity" verify --backend cuda 2>&1 | tee "$out/verify-cuda.txt"
verify_status=${PIPESTATUS[0]}
echo "verify exit status: $verify_status" | tee -a "$out/summary.txt"

if command -v compute-sanitizer >/dev/null; then
    log "compute-sanitizer memcheck"
    compute-sanitizer --tool memcheck "$bundle/trinity" verify --backend cuda >"$out/memcheck.txt" 2>&1
    tail -n 3 "$out/memcheck.txt" | tee -a "$out/summary.txt"
fi

log "benches (short measurement time)"
for b in "$bundle"/bench-*; do
    [ -x "$b" ] || continue
    "$b" --bench --warm-up-time 0.5 --measurement-time 2 2>&1 | tee -a "$out/benches.txt"
done
exit "$verify_status"

#!/usr/bin/env bash
# The GPU check: run on a machine with an NVIDIA GPU against prebuilt binaries
# (the GPU machine has no Rust). About 6–8 minutes on an H100.
#
#   scripts/gpu-bundle.sh            # here: release binaries into .gpu-bundle/
#   scripts/gpu-check.sh OUT_DIR     # there: verify every kernel, sanitizers, trinity run, benches
#
# Writes few files (a lent GPU machine returns at most 8): OUT_DIR/summary.txt
# (one line per step with its exit status), OUT_DIR/check.log (everything),
# and OUT_DIR/results/<run>.json + .md. Never changes clocks, power limits or modes.
# TRINITY_REQUIRE_GPU=1 and an explicit --backend cuda everywhere: nothing falls back to the CPU.
set -uo pipefail
# Every CUDA test, verify and bench fails (instead of skipping or falling back)
# when the GPU cannot be used.
export TRINITY_REQUIRE_GPU=1
out=${1:-${OUT:-gpu-check-out}}
bundle=${BUNDLE:-.gpu-bundle}
mkdir -p "$out/results"
log="$out/check.log"
status=0
say() { echo "== $*" | tee -a "$out/summary.txt" "$log"; }
step() { # name, command...
    local name=$1
    shift
    say "$name: $*"
    "$@" >>"$log" 2>&1
    local rc=$?
    echo "$name: exit $rc" | tee -a "$out/summary.txt"
    [ $rc -eq 0 ] || status=1
}

say "libraries and device (a missing library shows here first)"
{ ldconfig -p | grep -E 'libcuda\.so|libcublas|libcublasLt|libnvidia-ml' || echo "(none found by ldconfig)"; } | tee -a "$out/summary.txt" "$log"
{ nvidia-smi || echo "nvidia-smi failed"; } >>"$log" 2>&1
say "driver version and UUIDs (NVML's, then the one CUDA device 0 reports in trinity info)"
{ nvidia-smi --query-gpu=index,name,driver_version,uuid,pci.bus_id --format=csv || echo "nvidia-smi query failed"; } | tee -a "$out/summary.txt" "$log"
{ "$bundle/trinity" info | grep -E "GPU|UUID|driver|compute" || true; } | tee -a "$out/summary.txt" "$log"

step info "$bundle/trinity" info
step verify-cuda "$bundle/trinity" verify --backend cuda
if command -v compute-sanitizer >/dev/null; then
    step memcheck timeout 240 compute-sanitizer --tool memcheck --error-exitcode 3 "$bundle/trinity" verify --backend cuda --small
    step racecheck timeout 240 compute-sanitizer --tool racecheck --error-exitcode 3 "$bundle/trinity" verify --backend cuda --small
    step synccheck timeout 240 compute-sanitizer --tool synccheck --error-exitcode 3 "$bundle/trinity" verify --backend cuda --small
else
    say "compute-sanitizer not found: sanitizers skipped"
fi
for f in model/tests/fixtures/*/; do
    step "fixture-$(basename "$f")" python3 scripts/check-fixture.py "$bundle/trinity" "${f%/}" --backend cuda
done
for shape in bitnet_b1_58-large bitnet-b1.58-2B-4T bitnet_b1_58-3B; do
    step "bench-model-$shape" "$bundle/trinity" bench-model --shape "$shape" -p 512 -n 128 -r 3 --backend cuda
done
step run "$bundle/trinity" run --backend cuda --results-dir "$out/results" ${TRINITY_COST_PER_HOUR:+--cost-per-hour $TRINITY_COST_PER_HOUR}
for b in "$bundle"/bench-*; do
    [ -x "$b" ] || continue
    step "$(basename "$b")" "$b" --bench --warm-up-time 0.3 --measurement-time 1
done
grep -E "^(ratio|ceiling)|THROTTLED|\| (pp|tg)[0-9]+ \||max \|logit diff\|" "$log" >>"$out/summary.txt" || true
exit $status

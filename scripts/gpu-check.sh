#!/usr/bin/env bash
# The GPU check: run on a machine with an NVIDIA GPU against prebuilt binaries
# (the GPU machine has no Rust).
#
#   scripts/gpu-bundle.sh            # here: release binaries into .gpu-bundle/
#   scripts/gpu-check.sh OUT_DIR     # there: verify every kernel, fixtures, trinity run, sanitizers, benches
#
# Steps run in order of importance, each under its own time limit, and the whole
# check stops starting steps at DEADLINE_S seconds (default 450): a lent GPU
# machine's minutes are few, and a hang in one step must not eat the others.
# Writes few files (a lent GPU machine returns at most 8): OUT_DIR/summary.txt
# (one line per step with its exit status), OUT_DIR/check.log (everything),
# OUT_DIR/torch-matmul.json and OUT_DIR/results/<run>.json + .md.
# ONLY="step names" runs just those steps; BENCH_FILTER is passed to the Criterion benches.
# Never changes clocks, power limits or modes.
# TRINITY_REQUIRE_GPU=1 and an explicit --backend cuda everywhere: nothing falls back to the CPU.
set -uo pipefail
export TRINITY_REQUIRE_GPU=1
out=${1:-${OUT:-gpu-check-out}}
bundle=${BUNDLE:-.gpu-bundle}
deadline=${DEADLINE_S:-450}
mkdir -p "$out/results"
log="$out/check.log"
status=0
SECONDS=0
say() { echo "== $*" | tee -a "$out/summary.txt" "$log"; }
step() { # name, time limit in seconds, command...
    local name=$1 limit=$2
    shift 2
    # ONLY="verify-cuda run ..." runs just those steps (a second try on a lent machine).
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then
        return
    fi
    local left=$((deadline - SECONDS))
    if [ $left -lt 20 ]; then
        echo "$name: skipped (out of time at ${SECONDS}s)" | tee -a "$out/summary.txt"
        return
    fi
    [ $limit -le $left ] || limit=$left
    say "$name (limit ${limit}s, at ${SECONDS}s): $*"
    local t0=$SECONDS
    timeout -k 5 "$limit" "$@" >>"$log" 2>&1
    local rc=$?
    echo "$name: exit $rc in $((SECONDS - t0))s$([ $rc -eq 124 ] && echo ' (timed out)')" | tee -a "$out/summary.txt"
    [ $rc -eq 0 ] || status=1
}

# cuBLAS and NVML may sit outside the loader's cache (the toolkit's lib64, the
# driver's mount, PyTorch's wheels): add the folders that hold them.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/nvidia/lib64 \
    $(python3 -c 'import nvidia, os; [print(os.path.join(p, s, "lib")) for p in nvidia.__path__ for s in os.listdir(p)]' 2>/dev/null); do
    [ -d "$d" ] && ls "$d" 2>/dev/null | grep -qE '^lib(cublas|cublasLt|nvidia-ml|cuda)\.so' && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
export LD_LIBRARY_PATH
say "libraries and device (a missing library shows here first); LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
{ ldconfig -p | grep -E 'libcuda\.so|libcublas|libcublasLt|libnvidia-ml' || echo "(none found by ldconfig)"; } | tee -a "$out/summary.txt" "$log"
{ nvidia-smi || echo "nvidia-smi failed"; } >>"$log" 2>&1
say "driver version and UUIDs (NVML's, then the one CUDA device 0 reports in trinity info)"
{ nvidia-smi --query-gpu=index,name,driver_version,uuid,pci.bus_id,clocks.sm,clocks.max.sm,power.limit --format=csv || echo "nvidia-smi query failed"; } | tee -a "$out/summary.txt" "$log"
{ timeout 60 "$bundle/trinity" info 2>&1 | grep -E "GPU|UUID|driver|compute|error|Error" || true; } | tee -a "$out/summary.txt" "$log"

step info 60 "$bundle/trinity" info
step verify-cuda 120 "$bundle/trinity" verify --backend cuda
for f in model/tests/fixtures/*/; do
    step "fixture-$(basename "$f")" 60 python3 scripts/check-fixture.py "$bundle/trinity" "${f%/}" --backend cuda
done
# The speed issue's GPU bars first: 2B-4T with a 16-bit head, decode at context 128 (and pp512 beside
# the same model with cuBLAS FP16 linears, timed in the same run), then decode at context 2048.
step bench-model-2B-4T-f16 150 "$bundle/trinity" bench-model --shape bitnet-b1.58-2B-4T -p 512 -n 128 -r 3 \
    --backend cuda --lm-head f16 --results-dir "$out/results"
step bench-model-2B-4T-f16-d2048 120 "$bundle/trinity" bench-model --shape bitnet-b1.58-2B-4T -p 512 -n 128 -d 2048 -r 3 \
    --backend cuda --lm-head f16 --f16-baseline off --results-dir "$out/results"
step torch-matmul 90 python3 scripts/torch-matmul-baseline.py --json "$out/torch-matmul.json"
step run 240 "$bundle/trinity" run --backend cuda --results-dir "$out/results" ${TRINITY_COST_PER_HOUR:+--cost-per-hour $TRINITY_COST_PER_HOUR}
if command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck synccheck; do
        step "$tool" 90 compute-sanitizer --tool $tool --error-exitcode 3 "$bundle/trinity" verify --backend cuda --small
    done
else
    say "compute-sanitizer not found: sanitizers skipped"
fi
# Each also times pp512 of the same model with cuBLAS FP16 linears (the prefill bar's baseline).
for shape in bitnet_b1_58-large bitnet-b1.58-2B-4T bitnet_b1_58-3B; do
    step "bench-model-$shape" 120 "$bundle/trinity" bench-model --shape "$shape" -p 512 -n 128 -r 3 --backend cuda --results-dir "$out/results"
done
# The decode step op by op instead of the replayed CUDA graph (the graph's gain, same card, same run).
step "bench-model-2B-4T-f16-no-graph" 120 env TRINITY_NO_CUDA_GRAPH=1 "$bundle/trinity" bench-model --shape bitnet-b1.58-2B-4T \
    -p 512 -n 128 -r 3 --backend cuda --lm-head f16 --no-results --f16-baseline off
# The int8 head beside the 16-bit one (above).
for head in int8; do
    step "bench-model-2B-4T-$head" 120 "$bundle/trinity" bench-model --shape bitnet-b1.58-2B-4T -p 512 -n 128 -r 3 \
        --backend cuda --lm-head "$head" --f16-baseline off --results-dir "$out/results"
done
for b in "$bundle"/bench-*; do
    [ -x "$b" ] || continue
    step "$(basename "$b")" 120 "$b" --bench --warm-up-time 0.2 --measurement-time 0.5 ${BENCH_FILTER:-}
done
say "done at ${SECONDS}s"
grep -E "^(ratio|ceiling)|^prefill vs|THROTTLED|\| (pp|tg)[0-9]+(@d[0-9]+)? |max \|logit diff\||torch\.matmul|^\| fp(16|32) " "$log" >>"$out/summary.txt" || true
exit $status

#!/usr/bin/env bash
# Assembles the embedded PTX of the `trinity` binary with `ptxas -v` for
# sm_80 and sm_90, prints registers and spills per kernel, and fails on a
# ptxas error, an unresolved `.extern .func`, a spill, a stack frame, or a kernel that lacks
# the instruction it exists for (mma.sync in the GEMM, dp4a in the GEMV).
# Usage: scripts/ptxas-check.sh PTXAS OUT_DIR [TRINITY_BINARY]
set -euo pipefail
ptxas=$1
out=$2
bin=${3:-target/debug/trinity}
[ -x "$bin" ] || cargo build -q -p trinity-cli
mkdir -p "$out"
"$bin" ptx --out "$out" >/dev/null
status=0
for arch in sm_80 sm_90; do
    ptx="$out/trinity_$arch.ptx"
    if grep -n '\.extern \.func' "$ptx"; then
        echo "FAIL: unresolved .extern .func in $ptx"
        status=1
    fi
    if ! "$ptxas" -arch="$arch" -v "$ptx" -o "$out/trinity_$arch.cubin" 2>"$out/ptxas_$arch.log"; then
        cat "$out/ptxas_$arch.log"
        echo "FAIL: ptxas rejected $ptx"
        status=1
        continue
    fi
    echo "-- $arch: registers and spills per kernel"
    awk '/Compiling entry function/ { gsub(/\x27/, "", $7); name = $7 }
         /spill stores/ && name != "" { spills = $5 " spill stores, " $9 " spill loads" }
         /Used [0-9]+ registers/ && name != "" { printf "   %-28s %s regs, %s\n", name, $5, spills; name = "" }' "$out/ptxas_$arch.log"
    if grep -A1 'Function properties for [a-z]' "$out/ptxas_$arch.log" | grep -E '[1-9][0-9]* bytes spill (stores|loads)'; then
        echo "FAIL: spills in a kernel for $arch"
        status=1
    fi
    # A stack frame without spills is an array the compiler could not keep in
    # registers (a loop not unrolled, a run-time index): every access goes to
    # local memory. The GEMMs and the GEMV had one until the first GPU run.
    if grep -A1 'Function properties for [a-z]' "$out/ptxas_$arch.log" | grep -E '[1-9][0-9]* bytes stack frame'; then
        echo "FAIL: a kernel keeps a stack frame (local memory) for $arch"
        status=1
    fi
done
for pair in "ternary_gemm_f32:mma.sync" "ternary_gemm_f16:mma.sync" "ternary_gemv_f32:dp4a" "ternary_gemv_f16:dp4a"; do
    kernel=${pair%%:*}
    instr=${pair#*:}
    if ! grep -q "^.visible .entry $kernel(" "$out/trinity_sm_90.ptx"; then
        echo "FAIL: no kernel $kernel"
        status=1
    else
        body=$(awk -v k="$kernel" '$0 ~ "^.visible .entry "k"\\(" {on=1} on && /^}/ {on=0} on' "$out/trinity_sm_90.ptx")
        if ! grep -q "$instr" <<<"$body"; then
            echo "FAIL: $kernel has no $instr"
            status=1
        fi
    fi
done
exit $status

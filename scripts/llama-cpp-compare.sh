#!/usr/bin/env bash
# llama.cpp beside Trinity on this CPU, same shapes, same thread count, same run.
#
# Builds llama.cpp from the llama-cpp-python source distribution on PyPI (its
# vendor/llama.cpp; no other network), writes random-weight GGUFs of the
# published BitNet shapes with llama.cpp's own gguf-py (scripts/make-bitnet-gguf.py),
# quantizes them to TQ2_0 with llama-quantize, then, ROUNDS times over,
#   llama-bench -p P -n N -d DEPTH -r R -t THREADS -ctk/-ctv LLAMA_KV -fa LLAMA_FA   on each GGUF, and
#   trinity bench-model --shape S -p P -n N -d DEPTH -r R -t THREADS --backend cpu --lm-head H   for each head H
# and prints both tables each time. THREADS (default: every core) goes to
# both engines. HEADS: Trinity's lm_head precisions
# (the issue's bar is the 16-bit head, the int8 one reported beside it; llama.cpp's
# TQ2_0 files keep the head in Q6_K).
#
# Why rounds: this machine's memory bandwidth moves by half within minutes, so
# one llama-bench run followed by one Trinity run compares two different
# machines. Alternating them ROUNDS times gives each engine every kind of
# minute, and a ratio per round compares neighbours. Each round's JSON goes
# to OUT_DIR/round-K/ (Trinity's in the results schema too), and
# scripts/llama-cpp-summary.py writes OUT_DIR/summary.md: every sample of all
# rounds (mean ± sd) and the per-round Trinity / llama.cpp ratios.
#
# DEPTH > 0 runs the decode test after DEPTH tokens in the cache on both
# engines (llama-bench's `-d`, bench-model's `-d`: tgN@dDEPTH), where the KV
# cache's reads weigh beside the weights'. llama-bench then runs no prefill
# test (its `-d` would put one at that depth too, and bench-model's prefill
# starts from an empty cache). LLAMA_KV is llama.cpp's cache type (its own
# default f16; f32 is Trinity's, for a like-for-like cache), LLAMA_FA its
# flash attention (on, off or its default auto, which takes it on the CPU:
# at depth 1920 on the Zen 5 EPYC, off decoded b1.58-large at 30.5 tok/s and
# on at 16.9, 2B-4T 23.8 and 19.1; at depth 0 alike, 2026-12-06).
#
# LLAMA_BUILDS: the llama.cpp builds to run, each beside Trinity in every
# round: `native` (GGML_NATIVE=ON, the compiler's -march=native) and
# `generic` (GGML_NATIVE=OFF: AVX2, FMA, F16C, no AVX-512). Both by default,
# because the faster one depends on the machine: on the Zen 5 EPYC the
# generic build ran b1.58-large's TQ2_0 pp512 / tg128 at 247–270 / 88 tok/s
# and the native one at 195–207 / 73 (2026-12-06, alternated), so a
# comparison with the native build alone flattered Trinity by a fifth.
# Trinity takes the best path of this CPU unless TRINITY_CPU_PATH says
# otherwise (e.g. TRINITY_CPU_PATH=avx2 LLAMA_BUILDS=generic: both engines on
# AVX2, as on this project's machines without AVX-512); the summary names
# the int8 instruction its prefill used.
#
# Usage: scripts/llama-cpp-compare.sh [OUT_DIR] [SHAPES...]
#   env: P (512), N (128), R (3), ROUNDS (3), THREADS (nproc), DEPTH (0), LLAMA_KV (f16), LLAMA_FA (auto),
#        LLAMA_BUILDS ("native generic"), LLAMA_CPP_PYTHON (0.3.36), TYPES ("TQ2_0"), HEADS ("f16 int8")
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/llama-cpp}
shift || true
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=(bitnet_b1_58-large bitnet-b1.58-2B-4T)
P=${P:-512}; N=${N:-128}; R=${R:-3}; ROUNDS=${ROUNDS:-3}; THREADS=${THREADS:-$(nproc)}
DEPTH=${DEPTH:-0}; LLAMA_KV=${LLAMA_KV:-f16}; LLAMA_FA=${LLAMA_FA:-auto}
llama_pp=$P
[ "$DEPTH" -eq 0 ] || llama_pp=0
version=${LLAMA_CPP_PYTHON:-0.3.36}
types=${TYPES:-TQ2_0}
heads=${HEADS:-f16 int8}
mkdir -p "$out"
out=$(cd "$out" && pwd)

src="$out/llama_cpp_python-$version/vendor/llama.cpp"
if [ ! -d "$src" ]; then
    echo "== fetching llama-cpp-python $version (sdist) from PyPI"
    url=$(curl -fsSL https://pypi.org/simple/llama-cpp-python/ \
        | grep -o "href=\"[^\"]*llama_cpp_python-$version.tar.gz[^\"]*\"" | head -1 | sed 's/^href="//; s/"$//; s/#.*//')
    [ -n "$url" ] || { echo "no sdist of llama-cpp-python $version on PyPI"; exit 1; }
    curl -fsSL -o "$out/llama-cpp-python.tar.gz" "$url"
    tar -xzf "$out/llama-cpp-python.tar.gz" -C "$out"
fi
command -v cmake >/dev/null || python3 -m pip install -q cmake
# gguf-py, which writes the GGUFs, needs numpy.
python3 -c "import numpy" 2>/dev/null || python3 -m pip install -q numpy

builds=${LLAMA_BUILDS:-native generic}
for b in $builds; do
    case "$b" in
        native) native=ON ;;
        generic) native=OFF ;;
        *) echo "LLAMA_BUILDS: unknown build $b (native or generic)"; exit 1 ;;
    esac
    dir="$src/build-$b"
    if [ ! -x "$dir/bin/llama-bench" ] || [ ! -x "$dir/bin/llama-quantize" ]; then
        echo "== building llama.cpp (llama-bench, llama-quantize) in build-$b, GGML_NATIVE=$native"
        cmake -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE="$native" -DLLAMA_CURL=OFF \
            -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >"$out/cmake-$b.log" 2>&1 \
            || { tail -30 "$out/cmake-$b.log"; exit 1; }
        cmake --build "$dir" -j"$(nproc)" --target llama-bench llama-quantize >"$out/build-$b.log" 2>&1 \
            || { tail -30 "$out/build-$b.log"; exit 1; }
    fi
done
# The GGUFs are written by the first build's tools (the files do not depend on the build).
bin="$src/build-${builds%% *}/bin"
# llama-bench's JSON names its build (`build_commit` 0c1e570 for llama-cpp-python 0.3.36).

cargo build --release -q -p trinity-cli
trinity=target/release/trinity

for shape in "${shapes[@]}"; do
    f16="$out/$shape-f16.gguf"
    if [ ! -f "$f16" ]; then
        echo "== writing $f16 (random ternary weights, gguf-py)"
        PYTHONPATH="$src/gguf-py" python3 scripts/make-bitnet-gguf.py "$shape" "$f16"
    fi
    for t in $types; do
        q="$out/$shape-$t.gguf"
        [ -f "$q" ] || "$bin/llama-quantize" "$f16" "$q" "$t" >"$out/quantize-$shape-$t.log" 2>&1 \
            || { tail -20 "$out/quantize-$shape-$t.log"; exit 1; }
    done
done

# The summary reads every round-* under OUT_DIR: a former run's rounds go
# first (a longer run's round 3 would be summarized beside this run's).
rm -rf "$out"/round-*
for round in $(seq 1 "$ROUNDS"); do
    dir="$out/round-$round"
    mkdir -p "$dir"
    for shape in "${shapes[@]}"; do
        for t in $types; do
            for b in $builds; do
                echo "== round $round/$ROUNDS: llama.cpp $t ($b build), $shape"
                json="$dir/llama-bench-$shape-$t+$b.json"
                "$src/build-$b/bin/llama-bench" -m "$out/$shape-$t.gguf" -p "$llama_pp" -n "$N" -d "$DEPTH" -r "$R" \
                    -t "$THREADS" -ctk "$LLAMA_KV" -ctv "$LLAMA_KV" -fa "$LLAMA_FA" -o json 2>/dev/null >"$json"
                python3 scripts/llama-cpp-summary.py --table "$json"
            done
        done
        for h in $heads; do
            echo "== round $round/$ROUNDS: Trinity, $shape, $h lm_head"
            "$trinity" bench-model --shape "$shape" -p "$P" -n "$N" -d "$DEPTH" -r "$R" -t "$THREADS" --backend cpu --lm-head "$h" \
                -o json --results-dir "$dir" 2>/dev/null >"$dir/trinity-$shape-$h.json"
            python3 scripts/llama-cpp-summary.py --table "$dir/trinity-$shape-$h.json"
        done
    done
done

python3 scripts/llama-cpp-summary.py "$out" | tee "$out/summary.md"

#!/usr/bin/env python3
"""The tables of scripts/llama-cpp-compare.sh, from the JSON its rounds wrote.

    llama-cpp-summary.py --table FILE   one run's table: llama-bench's JSON
                                        (a list of tests) or `trinity bench-model
                                        -o json` (one object)
    llama-cpp-summary.py OUT_DIR        the summary of OUT_DIR/round-*/: every
                                        sample of every round per engine (mean ± sd)
                                        and Trinity / llama.cpp per round

A ratio per round divides two runs minutes apart, so a machine whose
bandwidth moved between rounds moves both; the pooled means do not have
that protection, which is why both are printed. Standard library only.
"""

import glob
import json
import os
import re
import statistics
import sys


def mean_sd(xs):
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(xs):
    if not xs:
        return "–"
    m, sd = mean_sd(xs)
    return f"{m:.2f} ± {sd:.2f} ({len(xs)})"


def load(path):
    with open(path) as f:
        return json.load(f)


def llama_tests(runs):
    """{'pp': samples, 'tg': samples}, the test names, and the build, of a llama-bench JSON."""
    out, names, build = {}, {}, None
    for t in runs:
        kind = "pp" if t["n_gen"] == 0 else "tg"
        out[kind] = list(t["samples_ts"])
        names[kind] = (f"pp{t['n_prompt']}" if kind == "pp" else f"tg{t['n_gen']}") + depth(t.get("n_depth"))
        build = t.get("build_commit")
    return out, names, build


def depth(d):
    """A test name's depth suffix, as llama-bench and bench-model write it (none at depth 0)."""
    return f"@d{d}" if d else ""


def attention_setup(t):
    """A llama-bench test's KV cache types and flash attention."""
    fa = {1: "on", 0: "off", -1: "auto"}.get(t.get("flash_attn"), "not reported")
    return f"K {t.get('type_k')}, V {t.get('type_v')}, flash attention {fa}"


def trinity_tests(run):
    out = {"pp": list(run["pp"]["samples"]), "tg": list(run["tg"]["samples"])}
    names = {"pp": f"pp{run['pp']['tokens']}", "tg": f"tg{run['tg']['tokens']}" + depth(run["tg"].get("depth"))}
    return out, names


def table(path):
    data = load(path)
    print("| engine | test | tokens/s (mean ± sd (samples)) |")
    print("|---|---|---|")
    if isinstance(data, list):
        tests, names, build = llama_tests(data)
        for k in ("pp", "tg"):
            if k in tests:
                print(f"| llama.cpp {build} | {names[k]} | {fmt(tests[k])} |")
    else:
        tests, names = trinity_tests(data)
        frac = data["tg"].get("fraction_of_bound")
        for k in ("pp", "tg"):
            extra = f" ({100 * frac:.1f} % of the read bandwidth)" if k == "tg" and frac else ""
            print(f"| Trinity, {data['lm_head']} head | {names[k]} | {fmt(tests[k])}{extra} |")
    print()


def summary(out_dir):
    rounds = sorted(glob.glob(os.path.join(out_dir, "round-*")), key=lambda d: int(d.rsplit("-", 1)[1]))
    if not rounds:
        sys.exit(f"{out_dir}: no round-* directories (run scripts/llama-cpp-compare.sh first)")
    # (shape, engine) -> per round {'pp': [...], 'tg': [...]}; engines: ('llama', type) or ('trinity', head).
    runs, names, builds, bandwidth, fracs = {}, {}, set(), [], {}
    threads = {"llama.cpp": set(), "Trinity": set()}
    kv_types, instructions = set(), set()
    for r, d in enumerate(rounds):
        for path in sorted(glob.glob(os.path.join(d, "*.json"))):
            base = os.path.basename(path)
            m = re.fullmatch(r"(llama-bench|trinity)-(.+)-([^-]+)\.json", base)
            if not m:
                continue  # Trinity's results-schema files
            tool, shape, variant = m.groups()
            data = load(path)
            if tool == "llama-bench":
                tests, n, build = llama_tests(data)
                builds.add(build)
                threads["llama.cpp"].update(t.get("n_threads") for t in data)
                kv_types.update(attention_setup(t) for t in data)
                key = (shape, ("llama.cpp", variant))
            else:
                tests, n = trinity_tests(data)
                threads["Trinity"].add(data.get("threads"))
                instructions.add(data.get("int8_peak_instruction"))
                key = (shape, ("Trinity", variant))
                bandwidth += data.get("bandwidth_samples") or []
                if data["tg"].get("fraction_of_bound") is not None:
                    fracs.setdefault(key, []).append(data["tg"]["fraction_of_bound"])
            names.update(n)
            runs.setdefault(key, {})[r] = tests
    shapes = sorted({s for s, _ in runs})
    pp, tg = names.get("pp", "pp"), names.get("tg", "tg")
    print(f"# llama.cpp beside Trinity on the CPU: {len(rounds)} alternated rounds")
    print()
    print(f"llama.cpp build {', '.join(sorted(b for b in builds if b))}; every sample of every round pooled.")
    # Threads as each engine's JSON reports them (Trinity's files before `-t` name none).
    counts = {e: ", ".join(str(t) for t in sorted(ts - {None})) or "not reported" for e, ts in threads.items()}
    print(f"Threads: llama.cpp {counts['llama.cpp']}, Trinity {counts['Trinity']}.")
    print(f"KV cache: llama.cpp {'; '.join(sorted(kv_types)) or 'not reported'}; Trinity f32.")
    # llama.cpp's variants are `TYPE+BUILD` (scripts/llama-cpp-compare.sh's LLAMA_BUILDS).
    print(
        "llama.cpp builds: native = GGML_NATIVE=ON (-march=native), generic = GGML_NATIVE=OFF (AVX2, FMA, F16C); "
        f"Trinity's prefill instruction: {', '.join(sorted(i for i in instructions if i)) or 'not reported'}."
    )
    print()
    print(f"| shape | engine | {pp} tok/s | {tg} tok/s | {tg} of bound |")
    print("|---|---|---|---|---|")
    for shape in shapes:
        for (s, eng), per_round in sorted(runs.items(), key=lambda kv: (kv[0][1][0] != "llama.cpp", kv[0][1][1])):
            if s != shape:
                continue
            pooled = {k: [x for t in per_round.values() for x in t.get(k, [])] for k in ("pp", "tg")}
            label = f"{eng[0]} {eng[1]}" + (" head" if eng[0] == "Trinity" else "")
            f = fracs.get((s, eng))
            bound = f"{100 * statistics.fmean(f):.1f} %" if f else "–"
            print(f"| {shape} | {label} | {fmt(pooled['pp'])} | {fmt(pooled['tg'])} | {bound} |")
    print()
    print(f"Trinity / llama.cpp per round (round means), then the median of the rounds:")
    print()
    print(f"| shape | Trinity head / llama.cpp type | {pp} | {tg} |")
    print("|---|---|---|---|")
    for shape in shapes:
        peers = [e for s, e in runs if s == shape and e[0] == "llama.cpp"]
        ours = [e for s, e in runs if s == shape and e[0] == "Trinity"]
        for o in sorted(ours):
            for p in sorted(peers):
                a, b = runs[(shape, o)], runs[(shape, p)]
                cells = []
                for k in ("pp", "tg"):
                    ratios = [
                        statistics.fmean(a[r][k]) / statistics.fmean(b[r][k])
                        for r in sorted(set(a) & set(b))
                        if a[r].get(k) and b[r].get(k)
                    ]
                    cells.append(
                        ", ".join(f"{x:.2f}×" for x in ratios) + f" (median {statistics.median(ratios):.2f}×)"
                        if ratios
                        else "–"
                    )
                print(f"| {shape} | {o[1]} / {p[1]} | {cells[0]} | {cells[1]} |")
    if bandwidth:
        print()
        print(
            f"Read bandwidth measured after each Trinity decode repetition: {min(bandwidth) / 1e9:.1f}–"
            f"{max(bandwidth) / 1e9:.1f} GB/s (median {statistics.median(bandwidth) / 1e9:.1f})."
        )


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "--table":
        table(args[1])
    elif len(args) == 1 and not args[0].startswith("-"):
        summary(args[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

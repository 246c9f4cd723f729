#!/usr/bin/env python3
"""The original workflow's two headline figures, timed with PyTorch on the same card as a Trinity run:
torch.matmul FP32 4096 x 4096 x 4096 and FP16 [16384, 4096] x [4096, 4096]^T.

Median and spread of CUDA-event timings (after warm-up), printed as Markdown lines and one JSON object,
so the GPU check's log puts them beside Trinity's SGEMM and FP16 baselines from the same run.

Usage: scripts/torch-matmul-baseline.py [--json OUT.json]
"""
import json
import statistics
import sys

import torch


def time_matmul(a, b, reps=30):
    for _ in range(5):
        torch.matmul(a, b)
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.matmul(a, b)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    return times


def main():
    if not torch.cuda.is_available():
        print("torch: no CUDA device", file=sys.stderr)
        return 1
    dev = torch.device("cuda")
    # FP32 without TF32, as the original workflow's figure (torch's default for matmul).
    torch.backends.cuda.matmul.allow_tf32 = False
    cases = []
    a = torch.randn(4096, 4096, device=dev, dtype=torch.float32)
    b = torch.randn(4096, 4096, device=dev, dtype=torch.float32)
    cases.append(("fp32 4096x4096x4096", 4096, 4096, 4096, time_matmul(a, b)))
    a = torch.randn(16384, 4096, device=dev, dtype=torch.float16)
    w = torch.randn(4096, 4096, device=dev, dtype=torch.float16)
    cases.append(("fp16 [16384,4096]x[4096,4096]^T", 16384, 4096, 4096, time_matmul(a, w.t())))
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda, "cases": []}
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) on {out['device']}")
    print("| torch.matmul | median ms | spread (p10-p90) ms | TFLOP/s |")
    print("|---|---|---|---|")
    for name, m, n, k, t in cases:
        t.sort()
        med = statistics.median(t)
        p10, p90 = t[len(t) // 10], t[(len(t) * 9) // 10]
        tflops = 2 * m * n * k / med / 1e12
        print(f"| {name} | {med * 1e3:.3f} | {p10 * 1e3:.3f}-{p90 * 1e3:.3f} | {tflops:.1f} |")
        out["cases"].append({"name": name, "m": m, "n": n, "k": k, "median_s": med, "p10_s": p10, "p90_s": p90,
                             "tflops": tflops, "samples": len(t)})
    if len(sys.argv) > 2 and sys.argv[1] == "--json":
        with open(sys.argv[2], "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

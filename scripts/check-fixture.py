#!/usr/bin/env python3
"""Checks `trinity logits` and `trinity generate --temperature 0` on one committed BitNet fixture
against the reference outputs in its expected.json (logits within 1e-4, identical greedy tokens), and
`trinity logits --linears dense-f16` (the cuBLAS FP16 baseline on cuda) against its `dense_f16_logits`
(within 1e-3 of the largest logit).

Usage: scripts/check-fixture.py TRINITY_BINARY FIXTURE_DIR [--backend cuda]
"""
import json
import subprocess
import sys

trinity, fixture = sys.argv[1], sys.argv[2]
backend = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--backend" else "auto"
want = json.load(open(f"{fixture}/expected.json"))
ids = ",".join(map(str, want["prompt_ids"]))
run = lambda *a: json.loads(subprocess.run([trinity, *a, "--model", fixture, "--backend", backend], check=True, capture_output=True, text=True).stdout)
got = run("logits", "--prompt-ids", ids)
diff = max(abs(g - w) for gr, wr in zip(got["logits"], want["logits"]) for g, w in zip(gr, wr))
gen = run("generate", "--prompt-ids", ids, "--temperature", "0", "--format", "json", "--max-tokens", str(len(want["greedy_ids"])))
dense = run("logits", "--prompt-ids", ids, "--linears", "dense-f16")
dense_diff = max(abs(g - w) for gr, wr in zip(dense["logits"], want["dense_f16_logits"]) for g, w in zip(gr, wr))
dense_scale = max(abs(w) for wr in want["dense_f16_logits"] for w in wr)
ok = diff <= 1e-4 and gen["new_ids"] == want["greedy_ids"] and dense_diff <= 1e-3 * dense_scale
print(f"{fixture}: max |logit diff| {diff:.3g}, dense f16 {dense_diff:.3g} (of {dense_scale:.3g}), "
      f"greedy {'identical' if gen['new_ids'] == want['greedy_ids'] else 'DIFFERENT'}, "
      f"prefill {gen['prefill_tokens_per_s']:.1f} tok/s, decode {gen['decode_tokens_per_s']:.1f} tok/s: {'ok' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)

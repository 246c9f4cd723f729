#!/usr/bin/env python3
"""Checks `trinity logits` and `trinity generate --temperature 0` on one committed BitNet fixture
against the reference outputs in its expected.json (logits within 1e-4, identical greedy tokens).

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
ok = diff <= 1e-4 and gen["new_ids"] == want["greedy_ids"]
print(f"{fixture}: max |logit diff| {diff:.3g}, greedy {'identical' if gen['new_ids'] == want['greedy_ids'] else 'DIFFERENT'}, "
      f"prefill {gen['prefill_tokens_per_s']:.1f} tok/s, decode {gen['decode_tokens_per_s']:.1f} tok/s: {'ok' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)

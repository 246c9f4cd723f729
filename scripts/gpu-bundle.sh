#!/usr/bin/env bash
# Builds the release `trinity` binary and the Criterion bench binaries into
# .gpu-bundle/ (ignored by git), to be carried to a GPU machine that has no Rust
# (stripped: the whole bundle must stay well under the 64 MiB a device call carries).
set -euo pipefail
cd "$(dirname "$0")/.."
export TRINITY_REQUIRE_PTX=1
cargo build --release -p trinity-cli
mkdir -p .gpu-bundle
cp target/release/trinity .gpu-bundle/
cargo bench -p trinity-benches --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "bench" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])' \
    | while read -r name exe; do cp "$exe" ".gpu-bundle/bench-$name"; done
# Debug line tables make each binary ~40 MB; a lent GPU machine takes 64 MiB in all.
strip --strip-debug .gpu-bundle/*
du -ch .gpu-bundle/* | tail -n 1
ls -la .gpu-bundle

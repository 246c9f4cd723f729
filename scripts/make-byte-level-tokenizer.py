#!/usr/bin/env python3
"""A byte-level BPE tokenizer.json whose tokens spell multi-byte characters a byte at a time.

Writes model/tests/fixtures/byte-level-tokenizer.json: a BPE model without merges over
GPT-2's byte-level alphabet (the scheme of Llama 3's vocabulary, and so 2B-4T's), one
token per byte, 256 tokens. The ids hf-bitlinear-f32 generates greedily from its
expected.json prompt (its `greedy_ids`) take the bytes of TEXT in order, so that
generation spells TEXT with its characters cut across tokens; every other id takes one
of the remaining bytes, in order. Tests of streamed text copy it next to that
fixture's weights as tokenizer.json.

No dependencies: python3 scripts/make-byte-level-tokenizer.py
"""

import json
from pathlib import Path

TEXT = "é日ok!"
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "model" / "tests" / "fixtures"


def byte_level_char(b: int) -> str:
    """GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others for U+0100 on, in order."""

    def printable(x: int) -> bool:
        return ord("!") <= x <= ord("~") or 0xA1 <= x <= 0xAC or 0xAE <= x <= 0xFF

    if printable(b):
        return chr(b)
    return chr(256 + sum(1 for x in range(b) if not printable(x)))


def main() -> None:
    greedy = json.loads((FIXTURES / "hf-bitlinear-f32" / "expected.json").read_text())["greedy_ids"]
    text = TEXT.encode()
    assert len(greedy) == len(text) and len(set(greedy)) == len(greedy), (greedy, text)
    by_id = dict(zip(greedy, text))
    rest = iter(b for b in range(256) if b not in text)
    vocab = {byte_level_char(by_id[i] if i in by_id else next(rest)): i for i in range(256)}
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": None,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [],
        },
    }
    out = FIXTURES / "byte-level-tokenizer.json"
    out.write_text(json.dumps(tokenizer, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}: ids {greedy} spell {TEXT!r}")


if __name__ == "__main__":
    main()

"""Writes a random-weight GGUF of a published BitNet shape for llama.cpp's `bitnet` architecture.

Usage: PYTHONPATH=<llama.cpp>/gguf-py python3 make-bitnet-gguf.py SHAPE OUT.gguf
(run by scripts/llama-cpp-compare.sh, with llama.cpp's own gguf-py from the same source tree).

Linear weights are ternary {-1, 0, +1} times one scale, stored as F16 (llama-quantize then makes
TQ2_0 or others); norms are ones (F32); the token embedding is N(0, 1)-ish F16 and doubles as the
output head (tied), as in Trinity's `--shape` models. The vocabulary is a plain SentencePiece-style
list (`<unk>`, `<s>`, `</s>`, then `t<i>`): llama-bench never tokenizes text, it only needs one.
Shapes match Trinity's `trinity_model::config::shape`.
"""
import sys

import numpy as np
import gguf

SHAPES = {
    # hidden, intermediate, layers, heads, kv_heads, vocab, rope_theta, context
    "bitnet_b1_58-large": (1536, 4096, 24, 16, 16, 32002, 10000.0, 2048),
    "bitnet_b1_58-3B": (3200, 8640, 26, 32, 32, 32002, 10000.0, 2048),
    "bitnet-b1.58-2B-4T": (2560, 6912, 30, 20, 5, 128256, 500000.0, 4096),
}


def main():
    name, path = sys.argv[1], sys.argv[2]
    if name not in SHAPES:
        sys.exit(f"unknown shape {name}: one of {', '.join(SHAPES)}")
    h, ff, layers, heads, kv, vocab, theta, ctx = SHAPES[name]
    hd = h // heads
    rng = np.random.default_rng(1)
    w = gguf.GGUFWriter(path, "bitnet", use_temp_file=False)
    w.add_name(f"{name} (random weights)")
    w.add_context_length(ctx)
    w.add_embedding_length(h)
    w.add_feed_forward_length(ff)
    w.add_block_count(layers)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("llama")
    tokens = ["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(3, vocab)]
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * vocab)
    w.add_token_types([gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.NORMAL] * (vocab - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def ternary(out, inp):
        return (rng.integers(-1, 2, size=(out, inp), dtype=np.int8).astype(np.float16) * np.float16(1.0 / np.sqrt(inp)))

    ones = lambda n: np.ones(n, dtype=np.float32)
    w.add_tensor("token_embd.weight", rng.uniform(-1, 1, size=(vocab, h)).astype(np.float16))
    w.add_tensor("output_norm.weight", ones(h))
    for i in range(layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones(h))
        w.add_tensor(p + "attn_q.weight", ternary(heads * hd, h))
        w.add_tensor(p + "attn_k.weight", ternary(kv * hd, h))
        w.add_tensor(p + "attn_v.weight", ternary(kv * hd, h))
        w.add_tensor(p + "attn_sub_norm.weight", ones(h))
        w.add_tensor(p + "attn_output.weight", ternary(h, heads * hd))
        w.add_tensor(p + "ffn_norm.weight", ones(h))
        w.add_tensor(p + "ffn_gate.weight", ternary(ff, h))
        w.add_tensor(p + "ffn_up.weight", ternary(ff, h))
        w.add_tensor(p + "ffn_sub_norm.weight", ones(ff))
        w.add_tensor(p + "ffn_down.weight", ternary(h, ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

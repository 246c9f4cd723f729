#!/usr/bin/env python3
"""Tiny random BitNet checkpoints and the outputs of the reference implementations.

Pinned: torch==2.9.1, transformers==4.57.6, safetensors==0.8.0, tokenizers==0.22.2
(pip install torch==2.9.1 transformers==4.57.6 safetensors==0.8.0 tokenizers==0.22.2).

Writes model/tests/fixtures/<name>/{config.json, model.safetensors (or shards + index),
tokenizer.json, expected.json}. expected.json holds, for a fixed prompt, the logits of
every prompt position (float32, as the reference computes them), the greedy
continuation (argmax of a full recompute at each step), and the prompt's logits of
the dense f16 baseline (`dense_f16_logits`: every ternary linear replaced by its
weights in f16 over f16-rounded inputs, see `DenseF16Linear`).

- hf-bitlinear-f32: transformers' BitNetForCausalLM, packed offline weights,
  linear_class bitlinear (weight_scale divides), f32 tensors, GQA, tied embeddings
  without an lm_head tensor, relu2, two safetensors shards with an index.
- hf-autobitlinear-bf16: the same architecture, linear_class autobitlinear
  (weight_scale multiplies), bf16 tensors, tied embeddings with an lm_head tensor.
- hf-online-bf16: the bf16 master (quantization_mode online: latent weights
  ternarized on the fly by transformers' AutoBitLinear).
- hf-bitlinear-f32-long: hf-bitlinear-f32's conventions in one shard, a context
  of 256, and a 192-token random prompt: expected.json holds its logits at every
  position of the prompt and of its 16 greedy tokens (`long_outputs`), rounded to
  six decimals.
- onebitllm-f16: 1bitLLM's BitnetForCausalLM architecture (latent fp16 weights,
  inner_attn_ln / ffn_layernorm, SiLU, full multi-head attention, untied lm_head),
  computed by the PyTorch reference below (1bitLLM's code is not part of transformers).

The references run in float32 (bf16/fp16 tensors are upcast exactly) with eager attention.
"""
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # transformers' BitLinear helpers are torch.compile'd

import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BitNetConfig, BitNetForCausalLM
from transformers.integrations.bitnet import AutoBitLinear, BitLinear, pack_weights

PINS = {"torch": "2.9.1", "transformers": "4.57.6"}
for mod, want in (("torch", torch.__version__), ("transformers", transformers.__version__)):
    if not want.startswith(PINS[mod]):
        sys.exit(f"{mod} {want} is installed; this script is pinned to {PINS[mod]}")

OUT = Path(__file__).resolve().parent.parent / "model" / "tests" / "fixtures"
VOCAB = 64
PROMPT = [1, 17, 5, 42, 9, 33, 12, 60]
NEW_TOKENS = 8
# The long-context fixture: more positions than one tile of the GPU's prefill
# attention (32) and three chunks of its split decode attention (64 each).
LONG_PROMPT = 192
LONG_NEW_TOKENS = 16
LONG_CONTEXT = 256
LONG_PROMPT_SEED = 7
WORDS = [f"w{i}" for i in range(VOCAB - 3)]


# A chat template in the shape of 2B-4T's, over words the tiny vocabulary has.
TOKENIZER_CONFIG = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "chat_template": "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}w1 {% else %}w2 {% endif %}"
    "{{ message['content'] }} {{ eos_token }} {% endfor %}{% if add_generation_prompt %}w2{% endif %}",
}


def tokenizer_json():
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for i, w in enumerate(WORDS):
        vocab[w] = i + 3
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    return tok.to_str()


def hf_config(**kw):
    base = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=32,
        rms_norm_eps=1e-5,
        hidden_act="relu2",
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        attention_bias=False,
    )
    base.update(kw)
    cfg = BitNetConfig(**base)
    cfg._attn_implementation = "eager"
    return cfg


def linear_names(cfg):
    for i in range(cfg.num_hidden_layers):
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            yield f"model.layers.{i}.self_attn.{n}"
        for n in ("gate_proj", "up_proj", "down_proj"):
            yield f"model.layers.{i}.mlp.{n}"


def get_module(model, dotted):
    m = model
    for part in dotted.split("."):
        m = getattr(m, part)
    return m


def set_module(model, dotted, new):
    parent, _, leaf = dotted.rpartition(".")
    setattr(get_module(model, parent), leaf, new)


def randomize_norms(model, g):
    for name, p in model.named_parameters():
        if "norm" in name or "layernorm" in name:
            with torch.no_grad():
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))


class DenseF16Linear(nn.Module):
    """The linear of the cuBLAS FP16 baseline (Trinity's `Linears::DenseF16`): the
    ternary module's effective weights rounded to f16, over its input rounded to f16,
    summed in f32. The weights are read back through the module itself on the
    identity matrix: a one-hot row quantizes to int8 without error, so each output
    is one weight exactly as the module applies it (scale included)."""

    def __init__(self, lin):
        super().__init__()
        with torch.no_grad():
            self.w = lin(torch.eye(lin.in_features)).T.contiguous().half().float()

    def forward(self, x):
        return F.linear(x.half().float(), self.w)


def dense_f16_logits(model, forward):
    """The prompt's logits with every ternary linear replaced by `DenseF16Linear`."""
    lins = [(n, m) for n, m in model.named_modules() if isinstance(m, (BitLinear, AutoBitLinear, BitLinear158))]
    with torch.no_grad():
        for n, m in lins:
            set_module(model, n, DenseF16Linear(m))
        logits = forward(torch.tensor([PROMPT]))[0].float()
        for n, m in lins:
            set_module(model, n, m)
    return logits.tolist()


def expected_outputs(forward, model):
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        logits = forward(ids)[0].float()
        seq = list(PROMPT)
        greedy = []
        for _ in range(NEW_TOKENS):
            nxt = int(forward(torch.tensor([seq]))[0, -1].argmax())
            greedy.append(nxt)
            seq.append(nxt)
    return {
        "prompt_ids": PROMPT,
        "logits": logits.tolist(),
        "greedy_ids": greedy,
        "dense_f16_logits": dense_f16_logits(model, forward),
    }


def write(name, config_dict, tensors, expected, shards=1):
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    for f in d.glob("*.safetensors"):
        f.unlink()
    (d / "config.json").write_text(json.dumps(config_dict, indent=1, sort_keys=True) + "\n")
    (d / "tokenizer.json").write_text(tokenizer_json())
    (d / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=1) + "\n")
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    if shards == 1:
        save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
        idx = d / "model.safetensors.index.json"
        if idx.exists():
            idx.unlink()
    else:
        keys = sorted(tensors)
        weight_map = {}
        for s in range(shards):
            part = keys[s::shards]
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            save_file({k: tensors[k] for k in part}, str(d / fname), metadata={"format": "pt"})
            weight_map.update({k: fname for k in part})
        (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    (d / "expected.json").write_text(json.dumps(expected) + "\n")
    print(f"{name}: {sum(f.stat().st_size for f in d.iterdir())} bytes")


def long_outputs(forward):
    """A long prompt's logits at every position the reference evaluates: the
    prompt's, then each greedy token's but the last (a full recompute at each
    step picks the next token, as in `expected_outputs`)."""
    g = torch.Generator().manual_seed(LONG_PROMPT_SEED)
    prompt = [1] + torch.randint(3, VOCAB, (LONG_PROMPT - 1,), generator=g).tolist()
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(LONG_NEW_TOKENS):
            seq.append(int(forward(torch.tensor([seq]))[0, -1].argmax()))
        logits = forward(torch.tensor([seq[:-1]]))[0].float()
    return {
        "prompt_ids": prompt,
        "greedy_ids": seq[len(prompt):],
        "logits": [[round(x, 6) for x in row] for row in logits.tolist()],
    }


def hf_packed(name, linear_class, dtype, tie_with_tensor, shards, seed, long=False):
    g = torch.Generator().manual_seed(seed)
    cfg = hf_config(
        tie_word_embeddings=True,
        rope_theta=10000.0 if dtype == torch.float32 else 500000.0,
        max_position_embeddings=LONG_CONTEXT if long else 32,
    )
    cfg.quantization_config = {
        "quant_method": "bitnet",
        "linear_class": linear_class,
        "quantization_mode": "offline",
    }
    model = BitNetForCausalLM(cfg).float().eval()
    randomize_norms(model, g)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.randn(VOCAB, cfg.hidden_size, generator=g))
    tensors = {}
    for lin in linear_names(cfg):
        old = get_module(model, lin)
        out_f, in_f = old.out_features, old.in_features
        trits = torch.randint(-1, 2, (out_f, in_f), generator=g).to(torch.float32)
        packed = pack_weights(trits.clone())
        if linear_class == "bitlinear":
            scale = torch.rand(1, generator=g) * 2 + 1.0  # divides the output
            new = BitLinear(in_f, out_f, bias=False, dtype=torch.float32)
        else:
            scale = torch.rand(1, generator=g) * 0.5 + 0.3  # multiplies the output
            new = AutoBitLinear(in_f, out_f, bias=False, dtype=torch.float32, online_quant=False)
        with torch.no_grad():
            if linear_class == "bitlinear":
                new.weight.copy_(packed)
            else:
                # AutoBitLinear unpacks at load (its load hook); do the same with transformers' own unpacker.
                from transformers.integrations.bitnet import unpack_weights
                new.weight.copy_(unpack_weights(packed, dtype=torch.float32))
            # Round the scale through the stored dtype so both sides use the same value.
            new.weight_scale.copy_(scale.to(dtype).float())
        set_module(model, lin, new.eval())
        tensors[f"{lin}.weight"] = packed
        tensors[f"{lin}.weight_scale"] = scale.to(dtype)
    # Every float tensor goes through the stored dtype first, so the reference sees the stored values.
    for pname, p in list(model.named_parameters()):
        if pname.startswith("lm_head") or any(pname.startswith(l) for l in linear_names(cfg)):
            continue
        stored = p.detach().to(dtype)
        with torch.no_grad():
            p.copy_(stored.float())
        tensors[pname] = stored
    model.tie_weights()
    if tie_with_tensor:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    forward = lambda ids: model(ids).logits  # noqa: E731
    expected = long_outputs(forward) if long else expected_outputs(forward, model)
    config = cfg.to_dict()
    config["architectures"] = ["BitNetForCausalLM"]
    config.pop("_attn_implementation_autoset", None)
    config["torch_dtype"] = "float32" if dtype == torch.float32 else "bfloat16"
    write(name, config, tensors, expected, shards)


def hf_online(name, seed):
    g = torch.Generator().manual_seed(seed)
    cfg = hf_config(tie_word_embeddings=True, rope_theta=500000.0)
    cfg.quantization_config = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"}
    model = BitNetForCausalLM(cfg).float().eval()
    randomize_norms(model, g)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.randn(VOCAB, cfg.hidden_size, generator=g))
    tensors = {}
    for lin in linear_names(cfg):
        old = get_module(model, lin)
        new = AutoBitLinear(old.in_features, old.out_features, bias=False, online_quant=True)
        latent = (torch.randn(old.out_features, old.in_features, generator=g) * 0.05).to(torch.bfloat16)
        with torch.no_grad():
            new.weight.copy_(latent.float())
        set_module(model, lin, new.eval())
        tensors[f"{lin}.weight"] = latent
    for pname, p in list(model.named_parameters()):
        if pname.startswith("lm_head") or any(pname.startswith(l) for l in linear_names(cfg)):
            continue
        stored = p.detach().to(torch.bfloat16)
        with torch.no_grad():
            p.copy_(stored.float())
        tensors[pname] = stored
    model.tie_weights()
    expected = expected_outputs(lambda ids: model(ids).logits, model)
    config = cfg.to_dict()
    config["architectures"] = ["BitNetForCausalLM"]
    config.pop("_attn_implementation_autoset", None)
    config["torch_dtype"] = "bfloat16"
    write(name, config, tensors, expected)


# ---- 1bitLLM's BitnetForCausalLM, as its published modeling code computes it ----

def weight_quant(w):
    s = 1.0 / w.abs().mean().clamp(min=1e-5)
    return (w * s).round().clamp(-1, 1) / s


def activation_quant(x):
    s = 127.0 / x.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
    return (x * s).round().clamp(-128, 127) / s


class BitLinear158(nn.Linear):
    def forward(self, x):
        return F.linear(activation_quant(x), weight_quant(self.weight))


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        v = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(v + self.eps))


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


class OneBitLlm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        h, i, heads, hd = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"], c["hidden_size"] // c["num_attention_heads"]
        self.hd = hd
        self.embed_tokens = nn.Embedding(c["vocab_size"], h)
        self.layers = nn.ModuleList()
        for _ in range(c["num_hidden_layers"]):
            layer = nn.Module()
            layer.input_layernorm = RMSNorm(h, c["rms_norm_eps"])
            layer.post_attention_layernorm = RMSNorm(h, c["rms_norm_eps"])
            att = nn.Module()
            for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
                setattr(att, n, BitLinear158(h, h, bias=False))
            att.inner_attn_ln = RMSNorm(h, c["rms_norm_eps"])
            mlp = nn.Module()
            mlp.gate_proj = BitLinear158(h, i, bias=False)
            mlp.up_proj = BitLinear158(h, i, bias=False)
            mlp.down_proj = BitLinear158(i, h, bias=False)
            mlp.ffn_layernorm = RMSNorm(i, c["rms_norm_eps"])
            layer.self_attn, layer.mlp = att, mlp
            self.layers.append(layer)
        self.norm = RMSNorm(h, c["rms_norm_eps"])
        self.lm_head = nn.Linear(h, c["vocab_size"], bias=False)

    def forward(self, ids):
        c, hd = self.c, self.hd
        b, t = ids.shape
        heads = c["num_attention_heads"]
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        freqs = torch.arange(t).float()[:, None] * inv[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        x = self.embed_tokens(ids)
        mask = torch.full((t, t), float("-inf")).triu(1)
        for L in self.layers:
            a = L.input_layernorm(x)
            q = L.self_attn.q_proj(a).view(b, t, heads, hd).transpose(1, 2)
            k = L.self_attn.k_proj(a).view(b, t, heads, hd).transpose(1, 2)
            v = L.self_attn.v_proj(a).view(b, t, heads, hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            s = (q @ k.transpose(2, 3)) * hd**-0.5 + mask
            p = F.softmax(s, dim=-1, dtype=torch.float32)
            o = (p @ v).transpose(1, 2).reshape(b, t, -1)
            x = x + L.self_attn.o_proj(L.self_attn.inner_attn_ln(o))
            a = L.post_attention_layernorm(x)
            m = F.silu(L.mlp.gate_proj(a)) * L.mlp.up_proj(a)
            x = x + L.mlp.down_proj(L.mlp.ffn_layernorm(m))
        return self.lm_head(self.norm(x))


def onebitllm(name, seed):
    g = torch.Generator().manual_seed(seed)
    c = {
        "architectures": ["BitnetForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 32,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float16",
    }
    model = OneBitLlm(c).eval()
    tensors = {}
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname or "layernorm" in pname or "inner_attn_ln" in pname:
                val = 1.0 + 0.2 * torch.randn(p.shape, generator=g)
            elif "embed" in pname or "lm_head" in pname:
                val = torch.randn(p.shape, generator=g) * 0.5
            else:
                val = torch.randn(p.shape, generator=g) * 0.05
            stored = val.to(torch.float16)
            p.copy_(stored.float())
            key = pname if pname.startswith("lm_head") else "model." + pname
            tensors[key] = stored
    expected = expected_outputs(lambda ids: model(ids), model)
    write(name, c, tensors, expected)


FIXTURES = {
    "hf-bitlinear-f32": lambda: hf_packed(
        "hf-bitlinear-f32", "bitlinear", torch.float32, tie_with_tensor=False, shards=2, seed=1
    ),
    "hf-autobitlinear-bf16": lambda: hf_packed(
        "hf-autobitlinear-bf16", "autobitlinear", torch.bfloat16, tie_with_tensor=True, shards=1, seed=2
    ),
    "hf-online-bf16": lambda: hf_online("hf-online-bf16", seed=3),
    "onebitllm-f16": lambda: onebitllm("onebitllm-f16", seed=4),
    "hf-bitlinear-f32-long": lambda: hf_packed(
        "hf-bitlinear-f32-long", "bitlinear", torch.float32, tie_with_tensor=False, shards=1, seed=5, long=True
    ),
}

if __name__ == "__main__":
    # Every fixture, or the ones named: `make-bitnet-fixtures.py hf-bitlinear-f32-long`.
    # Each has its own seeded generator, so one alone comes out as it does among all
    # (bit for bit on the same CPU kind; another CPU's float sums may move a logit by ~1e-6).
    names = sys.argv[1:] or list(FIXTURES)
    unknown = [n for n in names if n not in FIXTURES]
    if unknown:
        sys.exit(f"unknown fixture {unknown[0]!r}; known: {', '.join(FIXTURES)}")
    for n in names:
        torch.manual_seed(0)
        FIXTURES[n]()

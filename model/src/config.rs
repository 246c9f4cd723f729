//! # `config.json`: the architecture facts, and nothing hard-coded
//!
//! Both BitNet families are read from the checkpoint's own `config.json`:
//! Hugging Face's `BitNetForCausalLM` (`microsoft/bitnet-b1.58-2B-4T`: packed
//! offline weights, or the bf16 master with `quantization_mode: online`) and
//! 1bitLLM's `BitnetForCausalLM` (`bitnet_b1_58-large`, `-3B`: latent fp16
//! weights, SiLU, `inner_attn_ln` / `ffn_layernorm` sub-norms).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{ModelError, ModelResult, io_err};

/// The two architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Hugging Face transformers' `BitNetForCausalLM`.
    HfBitNet,
    /// 1bitLLM's `BitnetForCausalLM`.
    OneBitLlm,
}

/// The gated MLP's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `relu(x)²`.
    Relu2,
    /// `x · sigmoid(x)`.
    Silu,
}

/// How the checkpoint stores its ternary linears, and what their scale means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// Packed `uint8 [out/4, in]` with a `weight_scale` that divides the output (`linear_class: bitlinear`).
    PackedDivide,
    /// Packed, `weight_scale` multiplies the output (`linear_class: autobitlinear`).
    PackedMultiply,
    /// Latent float weights, ternarized at load with absmean (`quantization_mode: online`, and 1bitLLM).
    Latent,
}

/// Everything the forward pass needs to know, from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Which architecture.
    pub architecture: Architecture,
    /// `hidden_size`.
    pub hidden: usize,
    /// `intermediate_size`.
    pub intermediate: usize,
    /// `num_hidden_layers`.
    pub layers: usize,
    /// `num_attention_heads`.
    pub heads: usize,
    /// `num_key_value_heads` (default: `num_attention_heads`).
    pub kv_heads: usize,
    /// `head_dim` (default: `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// `vocab_size`.
    pub vocab: usize,
    /// `rms_norm_eps`.
    pub rms_norm_eps: f32,
    /// `rope_theta` or `rope_parameters.rope_theta`.
    pub rope_theta: f32,
    /// `tie_word_embeddings` (default false, as transformers').
    pub tie_word_embeddings: bool,
    /// `max_position_embeddings`: the context.
    pub max_position_embeddings: usize,
    /// `hidden_act`.
    pub activation: Activation,
    /// How the ternary linears are stored.
    pub weights: WeightFormat,
    /// End-of-sequence token ids (`eos_token_id`, a number or a list).
    pub eos_token_ids: Vec<u32>,
    /// `bos_token_id`, when given.
    pub bos_token_id: Option<u32>,
}

impl ModelConfig {
    /// Reads `config.json`.
    pub fn load(path: &Path) -> ModelResult<ModelConfig> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        let v: Value = serde_json::from_str(&text).map_err(|source| ModelError::Json { path: path.into(), source })?;
        Self::from_json(&v, path)
    }

    /// Parses a `config.json` value (`path` names it in errors).
    pub fn from_json(v: &Value, path: &Path) -> ModelResult<ModelConfig> {
        let p = || PathBuf::from(path);
        let bad = |key: &'static str, value: &Value, reason: &str| ModelError::BadValue {
            path: p(),
            key,
            value: value.to_string(),
            reason: reason.to_owned(),
        };
        let usize_key = |key: &'static str| -> ModelResult<Option<usize>> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => match x.as_u64() {
                    Some(n) if n > 0 => Ok(Some(n as usize)),
                    _ => Err(bad(key, x, "expected a positive integer")),
                },
            }
        };
        let required = |key: &'static str| -> ModelResult<usize> {
            usize_key(key)?.ok_or(ModelError::MissingKey { path: p(), key })
        };
        let float_key = |key: &'static str, x: &Value| -> ModelResult<f32> {
            match x.as_f64() {
                Some(f) if f.is_finite() && f > 0.0 => Ok(f as f32),
                _ => Err(bad(key, x, "expected a positive number")),
            }
        };
        let arch_name = v
            .get("architectures")
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
            .and_then(|a| a.as_str())
            .ok_or(ModelError::MissingKey { path: p(), key: "architectures" })?;
        let architecture = match arch_name {
            "BitNetForCausalLM" => Architecture::HfBitNet,
            "BitnetForCausalLM" => Architecture::OneBitLlm,
            other => return Err(ModelError::UnknownArchitecture { path: p(), name: other.to_owned() }),
        };
        let hidden = required("hidden_size")?;
        let heads = required("num_attention_heads")?;
        let kv_heads = usize_key("num_key_value_heads")?.unwrap_or(heads);
        if !heads.is_multiple_of(kv_heads) {
            return Err(bad("num_key_value_heads", &v["num_key_value_heads"], "must divide num_attention_heads"));
        }
        let head_dim = match usize_key("head_dim")? {
            Some(d) => d,
            None if hidden.is_multiple_of(heads) => hidden / heads,
            None => return Err(bad("hidden_size", &v["hidden_size"], "not a multiple of num_attention_heads")),
        };
        if !head_dim.is_multiple_of(2) {
            return Err(bad("head_dim", &Value::from(head_dim), "RoPE needs an even head_dim"));
        }
        let rms = v.get("rms_norm_eps").ok_or(ModelError::MissingKey { path: p(), key: "rms_norm_eps" })?;
        let rope = match (v.get("rope_theta"), v.get("rope_parameters").and_then(|r| r.get("rope_theta"))) {
            (Some(x), _) if !x.is_null() => float_key("rope_theta", x)?,
            (_, Some(x)) => float_key("rope_theta", x)?,
            _ => return Err(ModelError::MissingKey { path: p(), key: "rope_theta" }),
        };
        // Refuse what this forward pass does not compute, rather than answer wrongly.
        let scaling = v.get("rope_scaling").filter(|x| !x.is_null()).or_else(|| {
            v.get("rope_parameters")
                .filter(|r| r.get("rope_type").and_then(|t| t.as_str()).is_some_and(|t| t != "default"))
        });
        if let Some(x) = scaling
            && x.get("rope_type").and_then(|t| t.as_str()) != Some("default")
        {
            return Err(bad("rope_scaling", x, "scaled RoPE is not supported (only the default rotary embedding)"));
        }
        for key in ["attention_bias", "mlp_bias"] {
            if let Some(x) = v.get(key)
                && x.as_bool() == Some(true)
            {
                return Err(bad(key, x, "BitNet linears have no bias; biased checkpoints are not supported"));
            }
        }
        let act = v.get("hidden_act").ok_or(ModelError::MissingKey { path: p(), key: "hidden_act" })?;
        let activation = match act.as_str() {
            Some("relu2") => Activation::Relu2,
            Some("silu") => Activation::Silu,
            _ => return Err(bad("hidden_act", act, "Trinity runs relu2 and silu")),
        };
        let weights = match architecture {
            Architecture::OneBitLlm => WeightFormat::Latent,
            Architecture::HfBitNet => {
                let q = v.get("quantization_config");
                let mode = q.and_then(|q| q.get("quantization_mode")).and_then(|m| m.as_str()).unwrap_or("offline");
                let class = q.and_then(|q| q.get("linear_class")).and_then(|m| m.as_str()).unwrap_or("bitlinear");
                match (q, mode, class) {
                    (None, _, _) => WeightFormat::Latent,
                    (Some(_), "online", _) => WeightFormat::Latent,
                    (Some(_), "offline", "bitlinear") => WeightFormat::PackedDivide,
                    (Some(_), "offline", "autobitlinear") => WeightFormat::PackedMultiply,
                    (Some(q), _, _) => {
                        return Err(bad(
                            "quantization_config",
                            q,
                            "expected quantization_mode offline|online and linear_class bitlinear|autobitlinear",
                        ));
                    }
                }
            }
        };
        let ids = |key: &'static str| -> ModelResult<Vec<u32>> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(vec![]),
                Some(Value::Number(n)) => {
                    n.as_u64().map(|i| vec![i as u32]).ok_or_else(|| bad(key, &v[key], "not a token id"))
                }
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| x.as_u64().map(|i| i as u32).ok_or_else(|| bad(key, x, "not a token id")))
                    .collect(),
                Some(x) => Err(bad(key, x, "expected a token id or a list of them")),
            }
        };
        Ok(ModelConfig {
            architecture,
            hidden,
            intermediate: required("intermediate_size")?,
            layers: required("num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            vocab: required("vocab_size")?,
            rms_norm_eps: float_key("rms_norm_eps", rms)?,
            rope_theta: rope,
            tie_word_embeddings: v.get("tie_word_embeddings").and_then(|t| t.as_bool()).unwrap_or(false),
            max_position_embeddings: required("max_position_embeddings")?,
            activation,
            weights,
            eos_token_ids: ids("eos_token_id")?,
            bos_token_id: ids("bos_token_id")?.first().copied(),
        })
    }
}

/// The published shapes `bench-model --shape` builds with random weights
/// (no checkpoint needed): `bitnet-b1.58-2B-4T`, `bitnet_b1_58-large`, `bitnet_b1_58-3B`.
pub fn shape(name: &str) -> Option<ModelConfig> {
    let base = |hidden, intermediate, layers, heads, kv_heads, vocab, act, theta, tied, ctx, arch| ModelConfig {
        architecture: arch,
        hidden,
        intermediate,
        layers,
        heads,
        kv_heads,
        head_dim: hidden / heads,
        vocab,
        rms_norm_eps: 1e-5,
        rope_theta: theta,
        tie_word_embeddings: tied,
        max_position_embeddings: ctx,
        activation: act,
        weights: WeightFormat::Latent,
        eos_token_ids: vec![],
        bos_token_id: None,
    };
    Some(match name {
        "bitnet-b1.58-2B-4T" => {
            base(2560, 6912, 30, 20, 5, 128_256, Activation::Relu2, 500_000.0, true, 4096, Architecture::HfBitNet)
        }
        "bitnet_b1_58-large" => {
            base(1536, 4096, 24, 16, 16, 32_002, Activation::Silu, 10_000.0, false, 2048, Architecture::OneBitLlm)
        }
        "bitnet_b1_58-3B" => {
            base(3200, 8640, 26, 32, 32, 32_002, Activation::Silu, 10_000.0, false, 2048, Architecture::OneBitLlm)
        }
        _ => return None,
    })
}

/// The names [`shape`] knows.
pub const SHAPES: &[&str] = &["bitnet-b1.58-2B-4T", "bitnet_b1_58-large", "bitnet_b1_58-3B"];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "architectures": ["BitNetForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 64,
            "rms_norm_eps": 1e-5, "rope_parameters": {"rope_theta": 500000.0}, "max_position_embeddings": 32,
            "hidden_act": "relu2", "eos_token_id": [2, 7],
            "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"}
        })
    }

    #[test]
    fn reads_every_fact_from_the_file() {
        let c = ModelConfig::from_json(&base(), Path::new("c.json")).unwrap();
        assert_eq!((c.head_dim, c.kv_heads, c.rope_theta), (16, 2, 500000.0));
        assert_eq!(c.weights, WeightFormat::PackedMultiply);
        assert_eq!(c.eos_token_ids, vec![2, 7]);
        assert!(!c.tie_word_embeddings);
    }

    #[test]
    fn missing_and_bad_keys_are_named() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("hidden_size");
        let e = ModelConfig::from_json(&v, Path::new("m/config.json")).unwrap_err().to_string();
        assert_eq!(e, "m/config.json: missing key `hidden_size`");
        let mut v = base();
        v["hidden_act"] = json!("gelu");
        let e = ModelConfig::from_json(&v, Path::new("c.json")).unwrap_err().to_string();
        assert!(e.contains("`hidden_act` = \"gelu\""), "{e}");
        let mut v = base();
        v["architectures"] = json!(["LlamaForCausalLM"]);
        let e = ModelConfig::from_json(&v, Path::new("c.json")).unwrap_err().to_string();
        assert!(e.contains("architecture `LlamaForCausalLM` is not supported"), "{e}");
        let mut v = base();
        v["num_key_value_heads"] = json!(3);
        assert!(ModelConfig::from_json(&v, Path::new("c.json")).is_err());
        let mut v = base();
        v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0});
        let e = ModelConfig::from_json(&v, Path::new("c.json")).unwrap_err().to_string();
        assert!(e.contains("scaled RoPE is not supported"), "{e}");
        let mut v = base();
        v["attention_bias"] = json!(true);
        assert!(ModelConfig::from_json(&v, Path::new("c.json")).unwrap_err().to_string().contains("no bias"));
        let mut v = base();
        v.as_object_mut().unwrap().remove("rope_parameters");
        let e = ModelConfig::from_json(&v, Path::new("c.json")).unwrap_err().to_string();
        assert!(e.contains("missing key `rope_theta`"), "{e}");
    }
}

//! # The BitNet b1.58 forward pass (both architectures)
//!
//! Per layer, as transformers' `BitNetForCausalLM` (and 1bitLLM's
//! `BitnetForCausalLM`) compute it: RMSNorm → q, k, v (one activation
//! quantization shared by the three) → rotate-half RoPE → causal attention
//! (GQA) → sub-norm (`attn_sub_norm` / `inner_attn_ln`) → o_proj → residual →
//! RMSNorm → gate, up (one quantization) → relu² or SiLU · up → sub-norm
//! (`ffn_sub_norm` / `ffn_layernorm`) → down → residual; then the final norm and
//! the lm_head, a float GEMM over the (possibly tied) embedding.
//!
//! Every op is a kernel of the [`Device`] (ternary linears with per-token
//! absmax int8 activations and 2-bit weights; RMSNorm, RoPE, attention, the
//! gated activation, the residual add, the embedding gather, the KV-cache
//! write and the lm_head GEMM): activations and the KV cache stay on the
//! device between ops, and only the logits come back.

use std::path::Path;

use trinity::{Buffer, Device, TernaryBuffer};

use crate::checkpoint::Checkpoint;
use crate::config::{Architecture, ModelConfig};
use crate::error::{ModelError, ModelResult};

use crate::weights::load_linear;

/// One decoder layer's weights.
#[derive(Debug)]
struct Layer {
    input_norm: Buffer<f32>,
    q: TernaryBuffer,
    k: TernaryBuffer,
    v: TernaryBuffer,
    o: TernaryBuffer,
    attn_sub_norm: Buffer<f32>,
    post_norm: Buffer<f32>,
    gate: TernaryBuffer,
    up: TernaryBuffer,
    down: TernaryBuffer,
    ffn_sub_norm: Buffer<f32>,
}

/// A loaded model on a device.
#[derive(Debug)]
pub struct BitNet {
    /// The architecture facts.
    pub config: ModelConfig,
    device: Device,
    embed: Buffer<f32>,
    /// `None` when tied to the embedding.
    lm_head: Option<Buffer<f32>>,
    layers: Vec<Layer>,
    final_norm: Buffer<f32>,
    rope_cos: Buffer<f32>,
    rope_sin: Buffer<f32>,
}

/// The KV cache of one sequence, preallocated to the context.
#[derive(Debug)]
pub struct KvCache {
    /// Per layer: keys, `kv_heads × context × head_dim`, on the device.
    k: Vec<Buffer<f32>>,
    /// Per layer: values, same layout.
    v: Vec<Buffer<f32>>,
    /// Positions filled.
    len: usize,
    context: usize,
}

impl KvCache {
    /// Tokens cached so far.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The context it was sized for.
    pub fn context(&self) -> usize {
        self.context
    }
}

impl BitNet {
    /// Loads the model in directory `dir` onto `device`.
    pub fn load(dir: &Path, device: &Device) -> ModelResult<BitNet> {
        let config = ModelConfig::load(&dir.join("config.json"))?;
        let ck = Checkpoint::open(dir)?;
        let c = &config;
        let (h, kvd, qd) = (c.hidden, c.kv_heads * c.head_dim, c.heads * c.head_dim);
        let embed = device.upload(&ck.f32_tensor("model.embed_tokens.weight", &[c.vocab, h])?)?;
        let lm_head = match c.tie_word_embeddings {
            true => None,
            false => Some(device.upload(&ck.f32_tensor("lm_head.weight", &[c.vocab, h])?)?),
        };
        let (attn_sub, ffn_sub) = match c.architecture {
            Architecture::HfBitNet => ("self_attn.attn_sub_norm", "mlp.ffn_sub_norm"),
            Architecture::OneBitLlm => ("self_attn.inner_attn_ln", "mlp.ffn_layernorm"),
        };
        let mut layers = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let p = format!("model.layers.{i}");
            let lin = |name: &str, out: usize, inp: usize| -> ModelResult<TernaryBuffer> {
                let w = load_linear(&ck, &format!("{p}.{name}"), out, inp, c.weights)?;
                Ok(device.upload_ternary(&w)?)
            };
            let norm = |name: &str, n: usize| -> ModelResult<Buffer<f32>> {
                Ok(device.upload(&ck.f32_tensor(&format!("{p}.{name}.weight"), &[n])?)?)
            };
            layers.push(Layer {
                input_norm: norm("input_layernorm", h)?,
                q: lin("self_attn.q_proj", qd, h)?,
                k: lin("self_attn.k_proj", kvd, h)?,
                v: lin("self_attn.v_proj", kvd, h)?,
                o: lin("self_attn.o_proj", h, qd)?,
                attn_sub_norm: norm(attn_sub, qd)?,
                post_norm: norm("post_attention_layernorm", h)?,
                gate: lin("mlp.gate_proj", c.intermediate, h)?,
                up: lin("mlp.up_proj", c.intermediate, h)?,
                down: lin("mlp.down_proj", h, c.intermediate)?,
                ffn_sub_norm: norm(ffn_sub, c.intermediate)?,
            });
        }
        let final_norm = device.upload(&ck.f32_tensor("model.norm.weight", &[h])?)?;
        let (cos, sin) = trinity::cpu::rope_tables(c.head_dim, c.rope_theta, c.max_position_embeddings);
        let (rope_cos, rope_sin) = (device.upload(&cos)?, device.upload(&sin)?);
        Ok(BitNet { config, device: device.clone(), embed, lm_head, layers, final_norm, rope_cos, rope_sin })
    }

    /// A model of `config`'s shapes with random weights (uniform trits, unit
    /// norms, N(0, 1)-ish embeddings), for benchmarks without a checkpoint.
    pub fn random(config: ModelConfig, device: &Device, seed: u64) -> ModelResult<BitNet> {
        use rand::{RngExt, SeedableRng};
        let c = &config;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (h, kvd, qd) = (c.hidden, c.kv_heads * c.head_dim, c.heads * c.head_dim);
        let mut lin = |out: usize, inp: usize| -> ModelResult<TernaryBuffer> {
            let w = trinity::ternary::DeviceTernary::random(out, inp, 1.0 / (inp as f32).sqrt(), &mut rng);
            Ok(device.upload_ternary(&w)?)
        };
        let ones = |n: usize| device.upload(&vec![1.0f32; n]);
        let mut layers = Vec::with_capacity(c.layers);
        for _ in 0..c.layers {
            layers.push(Layer {
                input_norm: ones(h)?,
                q: lin(qd, h)?,
                k: lin(kvd, h)?,
                v: lin(kvd, h)?,
                o: lin(h, qd)?,
                attn_sub_norm: ones(qd)?,
                post_norm: ones(h)?,
                gate: lin(c.intermediate, h)?,
                up: lin(c.intermediate, h)?,
                down: lin(h, c.intermediate)?,
                ffn_sub_norm: ones(c.intermediate)?,
            });
        }
        let table: Vec<f32> = (0..c.vocab * h).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let embed = device.upload(&table)?;
        drop(table);
        let (cos, sin) = trinity::cpu::rope_tables(c.head_dim, c.rope_theta, c.max_position_embeddings);
        let (rope_cos, rope_sin) = (device.upload(&cos)?, device.upload(&sin)?);
        let final_norm = ones(h)?;
        Ok(BitNet { config, device: device.clone(), embed, lm_head: None, layers, final_norm, rope_cos, rope_sin })
    }

    /// Bytes read per decode token: the 2-bit linears and the f32 lm_head.
    pub fn decode_bytes(&self) -> usize {
        let ternary: usize = self
            .layers
            .iter()
            .map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down].iter().map(|w| w.words.len() * 4).sum::<usize>())
            .sum();
        ternary + self.lm_head.as_ref().unwrap_or(&self.embed).len() * 4
    }

    /// The device it runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// An empty KV cache for up to `context` tokens (at most `max_position_embeddings`).
    pub fn new_cache(&self, context: usize) -> ModelResult<KvCache> {
        let context = context.min(self.config.max_position_embeddings);
        let per_layer = self.config.kv_heads * context * self.config.head_dim;
        let mut k = Vec::with_capacity(self.config.layers);
        let mut v = Vec::with_capacity(self.config.layers);
        for _ in 0..self.config.layers {
            k.push(self.device.alloc(per_layer)?);
            v.push(self.device.alloc(per_layer)?);
        }
        Ok(KvCache { k, v, len: 0, context })
    }

    /// Runs `tokens` after what `cache` holds; returns the logits
    /// (`vocab` floats) of every new position when `all_logits`, else of the last one.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, all_logits: bool) -> ModelResult<Vec<Vec<f32>>> {
        let c = &self.config;
        if tokens.is_empty() {
            return Err(ModelError::EmptyPrompt);
        }
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= c.vocab) {
            return Err(ModelError::TokenOutOfRange { id, vocab: c.vocab });
        }
        if cache.len + tokens.len() > cache.context {
            return Err(ModelError::ContextExceeded {
                what: "the sequence",
                len: cache.len + tokens.len(),
                context: cache.context,
            });
        }
        let (m, h, pos0) = (tokens.len(), c.hidden, cache.len);
        let (qd, hd, eps) = (c.heads * c.head_dim, c.head_dim, c.rms_norm_eps);
        let dev = &self.device;
        let act = match c.activation {
            crate::config::Activation::Relu2 => trinity::ops::ACT_RELU2,
            crate::config::Activation::Silu => trinity::ops::ACT_SILU,
        };
        let ids = dev.upload(tokens)?;
        let mut x = dev.alloc::<f32>(m * h)?;
        dev.embedding(&self.embed, &ids, &mut x, h)?;
        let mut normed = dev.alloc::<f32>(m * h)?;
        for (li, layer) in self.layers.iter().enumerate() {
            dev.rms_norm(&x, &layer.input_norm, &mut normed, eps)?;
            let [mut q, mut k, v] = self.linears(&normed, m, h, [&layer.q, &layer.k, &layer.v])?;
            dev.rope(&mut q, &self.rope_cos, &self.rope_sin, c.heads, hd, pos0)?;
            dev.rope(&mut k, &self.rope_cos, &self.rope_sin, c.kv_heads, hd, pos0)?;
            dev.kv_write(&k, &mut cache.k[li], c.kv_heads, hd, pos0, cache.context)?;
            dev.kv_write(&v, &mut cache.v[li], c.kv_heads, hd, pos0, cache.context)?;
            let mut att = dev.alloc::<f32>(m * qd)?;
            dev.attention(&q, &cache.k[li], &cache.v[li], &mut att, pos0, c.heads, c.kv_heads, hd, cache.context)?;
            let mut att_n = dev.alloc::<f32>(m * qd)?;
            dev.rms_norm(&att, &layer.attn_sub_norm, &mut att_n, eps)?;
            let [o] = self.linears(&att_n, m, qd, [&layer.o])?;
            dev.add(&mut x, &o)?;
            dev.rms_norm(&x, &layer.post_norm, &mut normed, eps)?;
            let [mut gate, up] = self.linears(&normed, m, h, [&layer.gate, &layer.up])?;
            dev.gated(&mut gate, &up, act)?;
            let mut gate_n = dev.alloc::<f32>(m * c.intermediate)?;
            dev.rms_norm(&gate, &layer.ffn_sub_norm, &mut gate_n, eps)?;
            let [d] = self.linears(&gate_n, m, c.intermediate, [&layer.down])?;
            dev.add(&mut x, &d)?;
        }
        cache.len += m;
        let rows = if all_logits { m } else { 1 };
        let last = dev.tail(&x, rows * h)?;
        let mut last_n = dev.alloc::<f32>(rows * h)?;
        dev.rms_norm(&last, &self.final_norm, &mut last_n, eps)?;
        let mut logits = dev.alloc::<f32>(rows * c.vocab)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        dev.sgemm(&last_n, head, &mut logits, rows, c.vocab, h)?;
        let logits = dev.download(&logits)?;
        Ok(logits.chunks(c.vocab).map(<[f32]>::to_vec).collect())
    }

    /// Ternary linears that read the same activations: one quantization, `N` matmuls.
    fn linears<const N: usize>(
        &self,
        x: &Buffer<f32>,
        m: usize,
        k: usize,
        ws: [&TernaryBuffer; N],
    ) -> ModelResult<[Buffer<f32>; N]> {
        let dev = &self.device;
        let mut q = dev.alloc_quantized(m, k)?;
        dev.quantize(x, &mut q)?;
        let mut outs = Vec::with_capacity(N);
        for w in ws {
            let mut y = dev.alloc::<f32>(m * w.rows)?;
            dev.ternary_linear(&q, w, &mut y)?;
            outs.push(y);
        }
        Ok(outs.try_into().expect("N outputs"))
    }
}

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
//! The ternary linears run on the [`Device`]'s kernels (per-token absmax int8
//! activations, 2-bit weights). The float parts ([`crate::math`]) run on host
//! memory, which is where `cpu` and `emu` buffers live; on `cuda` they have no
//! kernels yet, and [`BitNet::load`] says so.

use std::path::Path;

use trinity::{Buffer, Device, KernelError, TernaryBuffer};

use crate::checkpoint::Checkpoint;
use crate::config::{Architecture, ModelConfig};
use crate::error::{ModelError, ModelResult};
use crate::math;
use crate::weights::load_linear;

/// One decoder layer's weights.
#[derive(Debug)]
struct Layer {
    input_norm: Vec<f32>,
    q: TernaryBuffer,
    k: TernaryBuffer,
    v: TernaryBuffer,
    o: TernaryBuffer,
    attn_sub_norm: Vec<f32>,
    post_norm: Vec<f32>,
    gate: TernaryBuffer,
    up: TernaryBuffer,
    down: TernaryBuffer,
    ffn_sub_norm: Vec<f32>,
}

/// A loaded model on a device.
#[derive(Debug)]
pub struct BitNet {
    /// The architecture facts.
    pub config: ModelConfig,
    device: Device,
    embed: Vec<f32>,
    lm_head: Buffer<f32>,
    layers: Vec<Layer>,
    final_norm: Vec<f32>,
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
}

/// The KV cache of one sequence, preallocated to the context.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Per layer: keys, `kv_heads × context × head_dim`.
    k: Vec<Vec<f32>>,
    /// Per layer: values, same layout.
    v: Vec<Vec<f32>>,
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
        if device.cuda().is_some() {
            return Err(ModelError::Kernel(KernelError::Unsupported {
                op: "the BitNet forward pass (RMSNorm, RoPE and attention have no CUDA kernels yet; use --backend cpu or emu)",
                backend: "cuda",
            }));
        }
        let config = ModelConfig::load(&dir.join("config.json"))?;
        let ck = Checkpoint::open(dir)?;
        let c = &config;
        let (h, kvd, qd) = (c.hidden, c.kv_heads * c.head_dim, c.heads * c.head_dim);
        let embed = ck.f32_tensor("model.embed_tokens.weight", &[c.vocab, h])?;
        let lm_head_host =
            if c.tie_word_embeddings { None } else { Some(ck.f32_tensor("lm_head.weight", &[c.vocab, h])?) };
        let lm_head = device.upload(lm_head_host.as_deref().unwrap_or(&embed))?;
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
            let norm = |name: &str, n: usize| ck.f32_tensor(&format!("{p}.{name}.weight"), &[n]);
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
        let final_norm = ck.f32_tensor("model.norm.weight", &[h])?;
        let (rope_cos, rope_sin) = math::rope_tables(c.head_dim, c.rope_theta, c.max_position_embeddings);
        Ok(BitNet { config, device: device.clone(), embed, lm_head, layers, final_norm, rope_cos, rope_sin })
    }

    /// A model of `config`'s shapes with random weights (uniform trits, unit
    /// norms, N(0, 1)-ish embeddings), for benchmarks without a checkpoint.
    pub fn random(config: ModelConfig, device: &Device, seed: u64) -> ModelResult<BitNet> {
        use rand::{RngExt, SeedableRng};
        if device.cuda().is_some() {
            return Err(ModelError::Kernel(KernelError::Unsupported {
                op: "the BitNet forward pass (RMSNorm, RoPE and attention have no CUDA kernels yet; use --backend cpu or emu)",
                backend: "cuda",
            }));
        }
        let c = &config;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (h, kvd, qd) = (c.hidden, c.kv_heads * c.head_dim, c.heads * c.head_dim);
        let mut lin = |out: usize, inp: usize| -> ModelResult<TernaryBuffer> {
            let w = trinity::ternary::DeviceTernary::random(out, inp, 1.0 / (inp as f32).sqrt(), &mut rng);
            Ok(device.upload_ternary(&w)?)
        };
        let mut layers = Vec::with_capacity(c.layers);
        for _ in 0..c.layers {
            layers.push(Layer {
                input_norm: vec![1.0; h],
                q: lin(qd, h)?,
                k: lin(kvd, h)?,
                v: lin(kvd, h)?,
                o: lin(h, qd)?,
                attn_sub_norm: vec![1.0; qd],
                post_norm: vec![1.0; h],
                gate: lin(c.intermediate, h)?,
                up: lin(c.intermediate, h)?,
                down: lin(h, c.intermediate)?,
                ffn_sub_norm: vec![1.0; c.intermediate],
            });
        }
        let embed: Vec<f32> = (0..c.vocab * h).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let lm_head = device.upload(&embed)?;
        let (rope_cos, rope_sin) = math::rope_tables(c.head_dim, c.rope_theta, c.max_position_embeddings);
        Ok(BitNet {
            config,
            device: device.clone(),
            embed,
            lm_head,
            layers,
            final_norm: vec![1.0; h],
            rope_cos,
            rope_sin,
        })
    }

    /// Bytes read per decode token: the 2-bit linears and the f32 lm_head.
    pub fn decode_bytes(&self) -> usize {
        let ternary: usize = self
            .layers
            .iter()
            .map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down].iter().map(|w| w.words.len() * 4).sum::<usize>())
            .sum();
        ternary + self.lm_head.len() * 4
    }

    /// The device it runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// An empty KV cache for up to `context` tokens (at most `max_position_embeddings`).
    pub fn new_cache(&self, context: usize) -> KvCache {
        let context = context.min(self.config.max_position_embeddings);
        let per_layer = self.config.kv_heads * context * self.config.head_dim;
        KvCache {
            k: vec![vec![0.0; per_layer]; self.config.layers],
            v: vec![vec![0.0; per_layer]; self.config.layers],
            len: 0,
            context,
        }
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
        let (qd, kvd) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let mut x: Vec<f32> = tokens.iter().flat_map(|&t| self.embed[t as usize * h..][..h].iter().copied()).collect();
        for (li, layer) in self.layers.iter().enumerate() {
            let mut a = x.clone();
            math::rms_norm(&mut a, &layer.input_norm, c.rms_norm_eps);
            let [mut q, mut k, v] = self.linears(&a, m, h, [&layer.q, &layer.k, &layer.v])?;
            math::rope(&mut q, c.heads, c.head_dim, pos0, &self.rope_cos, &self.rope_sin);
            math::rope(&mut k, c.kv_heads, c.head_dim, pos0, &self.rope_cos, &self.rope_sin);
            for r in 0..m {
                for kh in 0..c.kv_heads {
                    let dst = (kh * cache.context + pos0 + r) * c.head_dim;
                    let src = r * kvd + kh * c.head_dim;
                    cache.k[li][dst..dst + c.head_dim].copy_from_slice(&k[src..src + c.head_dim]);
                    cache.v[li][dst..dst + c.head_dim].copy_from_slice(&v[src..src + c.head_dim]);
                }
            }
            let mut att = vec![0f32; m * qd];
            math::attention(
                &q,
                &cache.k[li],
                &cache.v[li],
                &mut att,
                m,
                pos0,
                c.heads,
                c.kv_heads,
                c.head_dim,
                cache.context,
            );
            math::rms_norm(&mut att, &layer.attn_sub_norm, c.rms_norm_eps);
            let [o] = self.linears(&att, m, qd, [&layer.o])?;
            x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
            let mut a = x.clone();
            math::rms_norm(&mut a, &layer.post_norm, c.rms_norm_eps);
            let [mut gate, up] = self.linears(&a, m, h, [&layer.gate, &layer.up])?;
            math::gated(&mut gate, &up, c.activation);
            math::rms_norm(&mut gate, &layer.ffn_sub_norm, c.rms_norm_eps);
            let [d] = self.linears(&gate, m, c.intermediate, [&layer.down])?;
            x.iter_mut().zip(&d).for_each(|(x, d)| *x += d);
        }
        cache.len += m;
        let rows = if all_logits { m } else { 1 };
        let mut last = x[(m - rows) * h..].to_vec();
        math::rms_norm(&mut last, &self.final_norm, c.rms_norm_eps);
        let dx = self.device.upload(&last)?;
        let mut logits = self.device.alloc::<f32>(rows * c.vocab)?;
        self.device.sgemm(&dx, &self.lm_head, &mut logits, rows, c.vocab, h)?;
        let logits = self.device.download(&logits)?;
        Ok(logits.chunks(c.vocab).map(<[f32]>::to_vec).collect())
    }

    /// Ternary linears that read the same activations: one quantization, `N` matmuls.
    fn linears<const N: usize>(
        &self,
        x: &[f32],
        m: usize,
        k: usize,
        ws: [&TernaryBuffer; N],
    ) -> ModelResult<[Vec<f32>; N]> {
        let dev = &self.device;
        let dx = dev.upload(x)?;
        let mut q = dev.alloc_quantized(m, k)?;
        dev.quantize(&dx, &mut q)?;
        let mut outs = Vec::with_capacity(N);
        for w in ws {
            let mut y = dev.alloc::<f32>(m * w.rows)?;
            dev.ternary_linear(&q, w, &mut y)?;
            outs.push(dev.download(&y)?);
        }
        Ok(outs.try_into().expect("N outputs"))
    }
}

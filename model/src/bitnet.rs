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
//! absmax int8 activations and 2-bit weights, each RMSNorm in front of a
//! linear fused with that quantization; RoPE, attention, the gated
//! activation, the residual add, the embedding gather, the KV-cache write and
//! the lm_head GEMM in f32, f16 or int8): activations and the KV cache stay
//! on the device between ops, and only the logits come back. A pass's
//! buffers live in a workspace the cache keeps, so decode steps reuse them;
//! on cuda a decode step is a CUDA graph, captured once and replayed.

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
    /// The head in a reduced precision, when one was chosen ([`BitNet::set_head_precision`]).
    reduced_head: Option<ReducedHead>,
    layers: Vec<Layer>,
    final_norm: Buffer<f32>,
    rope_cos: Buffer<f32>,
    rope_sin: Buffer<f32>,
    /// The dense f16 copies of the linears, when [`Linears::DenseF16`] is chosen.
    dense: Option<Vec<DenseLayer>>,
    /// Names these weights (new at load and at each head change): a cache's
    /// workspace, and the CUDA graph in it, are reused only by the model they were made for.
    id: u64,
}

/// The next [`BitNet::id`].
fn next_model_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The precision of the lm_head's weights in the logits GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadPrecision {
    /// f32 as loaded: the reference's logits, on every backend.
    #[default]
    F32,
    /// f16: half the bytes of the largest single read of a decode step (the
    /// 16-bit head other engines keep).
    F16,
    /// int8 with one absmax scale per row: a quarter of the bytes.
    Int8,
}

impl HeadPrecision {
    /// The name `--lm-head` takes.
    pub fn name(self) -> &'static str {
        match self {
            HeadPrecision::F32 => "f32",
            HeadPrecision::F16 => "f16",
            HeadPrecision::Int8 => "int8",
        }
    }
}

impl std::fmt::Display for HeadPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for HeadPrecision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(HeadPrecision::F32),
            "f16" => Ok(HeadPrecision::F16),
            "int8" => Ok(HeadPrecision::Int8),
            other => Err(format!("lm_head precision `{other}`: expected f32, f16 or int8")),
        }
    }
}

/// How the linears of the decoder layers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Linears {
    /// BitNet b1.58: 2-bit ternary weights, per-token int8 activations (the model).
    #[default]
    Ternary,
    /// The baseline a ternary engine is measured against: the same weights
    /// as dense f16 (`trit · scale`), the normalized activations rounded to
    /// f16 instead of quantized to int8, a 16-bit GEMM per linear (cuBLAS
    /// `GemmEx` on cuda) with f32 accumulation. Everything else (norms,
    /// RoPE, attention, the head) runs the same kernels as the ternary model,
    /// op by op (no fusion into the int8 quantizer, no CUDA graph).
    DenseF16,
}

impl Linears {
    /// `ternary` or `dense-f16`.
    pub fn name(self) -> &'static str {
        match self {
            Linears::Ternary => "ternary",
            Linears::DenseF16 => "dense-f16",
        }
    }
}

impl std::fmt::Display for Linears {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Linears {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ternary" => Ok(Linears::Ternary),
            "dense-f16" => Ok(Linears::DenseF16),
            other => Err(format!("linears `{other}`: expected ternary or dense-f16")),
        }
    }
}

/// One decoder layer's linears as dense f16 (the [`Linears::DenseF16`] baseline).
#[derive(Debug)]
struct DenseLayer {
    q: trinity::F16Weights,
    k: trinity::F16Weights,
    v: trinity::F16Weights,
    o: trinity::F16Weights,
    gate: trinity::F16Weights,
    up: trinity::F16Weights,
    down: trinity::F16Weights,
}

/// The lm_head in a reduced precision.
#[derive(Debug)]
enum ReducedHead {
    F16(Buffer<half::f16>),
    Int8 { values: Buffer<i8>, scales: Buffer<f32> },
}

/// KV caches preallocated to the context: one slot per sequence, so the
/// rows of a batch (one decode token of each running sequence, a prompt chunk
/// beside them) each write and read their own sequence's slot.
#[derive(Debug)]
pub struct KvCache {
    /// Per layer: keys, `slots × kv_heads × context × head_dim`, on the device.
    k: Vec<Buffer<f32>>,
    /// Per layer: values, same layout.
    v: Vec<Buffer<f32>>,
    /// Positions filled, per slot.
    lens: Vec<usize>,
    context: usize,
    /// The last forward pass's buffers, reused by the next pass of the same
    /// shape (every decode step after the first).
    workspace: Option<Box<Workspace>>,
}

impl KvCache {
    /// Tokens cached in slot 0 (the only slot of [`BitNet::new_cache`]).
    pub fn len(&self) -> usize {
        self.lens[0]
    }
    /// Whether slot 0 is empty.
    pub fn is_empty(&self) -> bool {
        self.lens[0] == 0
    }
    /// Tokens cached in `slot`.
    pub fn slot_len(&self, slot: usize) -> usize {
        self.lens.get(slot).copied().unwrap_or(0)
    }
    /// The number of slots.
    pub fn slots(&self) -> usize {
        self.lens.len()
    }
    /// Forgets what `slot` holds (its sequence ended); the memory stays allocated.
    pub fn clear(&mut self, slot: usize) {
        if let Some(l) = self.lens.get_mut(slot) {
            *l = 0;
        }
    }
    /// Keeps the first `len` positions of `slot` (what lies there stays valid), dropping the rest.
    pub fn truncate(&mut self, slot: usize, len: usize) {
        if let Some(l) = self.lens.get_mut(slot) {
            *l = (*l).min(len);
        }
    }
    /// The context each slot was sized for.
    pub fn context(&self) -> usize {
        self.context
    }
}

/// What [`BitNet::step`] returns for each chunk of the batch, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// The greedy next token (the device's argmax of the chunk's last logits).
    pub greedy: Vec<u32>,
    /// The logits themselves, when asked for.
    pub logits: Option<Vec<Vec<f32>>>,
}

/// One sequence's share of a batched forward pass: its new tokens, run after
/// what its cache slot holds.
#[derive(Debug, Clone, Copy)]
pub struct SeqChunk<'a> {
    /// The sequence's KV-cache slot.
    pub slot: usize,
    /// Its new tokens (one for a decode step; a prompt or part of one).
    pub tokens: &'a [u32],
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
        Ok(BitNet {
            config,
            device: device.clone(),
            embed,
            lm_head,
            reduced_head: None,
            id: next_model_id(),
            layers,
            final_norm,
            rope_cos,
            rope_sin,
            dense: None,
        })
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
        Ok(BitNet {
            config,
            device: device.clone(),
            embed,
            lm_head: None,
            reduced_head: None,
            id: next_model_id(),
            layers,
            final_norm,
            rope_cos,
            rope_sin,
            dense: None,
        })
    }

    /// Bytes of weights read per decode token: the 2-bit linears and the
    /// lm_head in its precision (int8: its row scales too).
    pub fn decode_bytes(&self) -> usize {
        let ternary: usize = self
            .layers
            .iter()
            .map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down].iter().map(|w| w.words.len() * 4).sum::<usize>())
            .sum();
        let head = self.config.vocab * self.config.hidden;
        ternary
            + match self.head_precision() {
                HeadPrecision::F32 => head * 4,
                HeadPrecision::F16 => head * 2,
                HeadPrecision::Int8 => head + self.config.vocab * 4,
            }
    }

    /// Bytes of KV cache a decode step reads per cached position: keys and
    /// values (f32) of every layer and KV head.
    pub fn kv_bytes_per_position(&self) -> usize {
        let c = &self.config;
        c.layers * 2 * c.kv_heads * c.head_dim * std::mem::size_of::<f32>()
    }

    /// Weights of the ternary linears: the int8 multiply-adds of one token's matmuls.
    pub fn linear_weights(&self) -> usize {
        let c = &self.config;
        let (qd, kvd) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        c.layers * (2 * qd * c.hidden + 2 * kvd * c.hidden + 3 * c.intermediate * c.hidden)
    }

    /// The precision the lm_head runs in.
    pub fn head_precision(&self) -> HeadPrecision {
        match self.reduced_head {
            None => HeadPrecision::F32,
            Some(ReducedHead::F16(_)) => HeadPrecision::F16,
            Some(ReducedHead::Int8 { .. }) => HeadPrecision::Int8,
        }
    }

    /// Runs the lm_head in `precision` from now on, made from the f32 head
    /// (which stays: the embedding may share it), on every backend (the
    /// `head_gemv_f16` / `head_gemv_i8` kernels; on the CPU, its own GEMV).
    pub fn set_head_precision(&mut self, precision: HeadPrecision) -> ModelResult<()> {
        self.id = next_model_id();
        if precision == HeadPrecision::F32 {
            self.reduced_head = None;
            return Ok(());
        }
        let f32_head = self.device.download(self.lm_head.as_ref().unwrap_or(&self.embed))?;
        let (h, ld) = (self.config.hidden, trinity::head_row_len(self.config.hidden));
        let dev = &self.device;
        // Row by row in parallel (2B-4T's head is 82 M values); each row's values do not depend on the split.
        use rayon::prelude::*;
        let rows = f32_head.par_chunks(h);
        self.reduced_head = Some(match precision {
            HeadPrecision::F16 => {
                let mut v = vec![half::f16::ZERO; self.config.vocab * ld];
                v.par_chunks_mut(ld).zip(rows).for_each(|(dst, row)| {
                    for (d, &x) in dst.iter_mut().zip(row) {
                        *d = half::f16::from_f32(x);
                    }
                });
                ReducedHead::F16(dev.upload(&v)?)
            }
            _ => {
                let mut values = vec![0i8; self.config.vocab * ld];
                let scales: Vec<f32> = values
                    .par_chunks_mut(ld)
                    .zip(rows)
                    .map(|(dst, row)| {
                        let (q, s) = trinity::cpu::quantize_head_row(row);
                        dst[..h].copy_from_slice(&q);
                        s
                    })
                    .collect();
                ReducedHead::Int8 { values: dev.upload(&values)?, scales: dev.upload(&scales)? }
            }
        });
        Ok(())
    }

    /// How the linears run.
    pub fn linears(&self) -> Linears {
        match self.dense {
            None => Linears::Ternary,
            Some(_) => Linears::DenseF16,
        }
    }

    /// Runs the linears as `linears` from now on. [`Linears::DenseF16`] makes
    /// dense f16 copies of every linear on the device (2 bytes per weight,
    /// eight times the ternary weights, which stay); [`Linears::Ternary`]
    /// frees them.
    pub fn set_linears(&mut self, linears: Linears) -> ModelResult<()> {
        self.id = next_model_id();
        self.dense = None;
        if linears == Linears::Ternary {
            return Ok(());
        }
        let dev = &self.device;
        let mut dense = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let d = |w: &TernaryBuffer| dev.dense_f16_weights(w);
            dense.push(DenseLayer {
                q: d(&l.q)?,
                k: d(&l.k)?,
                v: d(&l.v)?,
                o: d(&l.o)?,
                gate: d(&l.gate)?,
                up: d(&l.up)?,
                down: d(&l.down)?,
            });
        }
        self.dense = Some(dense);
        Ok(())
    }

    /// The device it runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// An empty KV cache for one sequence of up to `context` tokens (at most `max_position_embeddings`).
    pub fn new_cache(&self, context: usize) -> ModelResult<KvCache> {
        self.new_batch_cache(1, context)
    }

    /// Empty KV caches for `slots` sequences of up to `context` tokens each.
    pub fn new_batch_cache(&self, slots: usize, context: usize) -> ModelResult<KvCache> {
        let context = context.min(self.config.max_position_embeddings);
        let per_layer = slots.max(1) * self.config.kv_heads * context * self.config.head_dim;
        let mut k = Vec::with_capacity(self.config.layers);
        let mut v = Vec::with_capacity(self.config.layers);
        for _ in 0..self.config.layers {
            k.push(self.device.alloc(per_layer)?);
            v.push(self.device.alloc(per_layer)?);
        }
        Ok(KvCache { k, v, lens: vec![0; slots.max(1)], context, workspace: None })
    }

    /// Runs `tokens` after what slot 0 of `cache` holds; returns the logits
    /// (`vocab` floats) of every new position when `all_logits`, else of the last one.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, all_logits: bool) -> ModelResult<Vec<Vec<f32>>> {
        self.check_tokens(tokens, cache.len(), cache.context)?;
        let rows: Vec<usize> = match all_logits {
            true => (0..tokens.len()).collect(),
            false => vec![tokens.len() - 1],
        };
        self.run(cache, &[SeqChunk { slot: 0, tokens }], &rows, |logits| self.download_rows(logits))
    }

    /// One batched step over several sequences: each chunk's tokens run after
    /// what its slot holds, all rows through every linear together (the
    /// weights are read once for the batch). Returns the logits of each
    /// chunk's last token, in order. A row's result does not depend on the
    /// other rows of the batch.
    pub fn forward_batch(&self, cache: &mut KvCache, chunks: &[SeqChunk<'_>]) -> ModelResult<Vec<Vec<f32>>> {
        self.run_checked(cache, chunks, |logits| self.download_rows(logits))
    }

    /// [`forward_batch`](Self::forward_batch) with greedy sampling on the
    /// device: the argmax of each chunk's last logits (the first largest, as
    /// `torch.argmax`), so only the ids come back — and the logits too when
    /// `with_logits` (for sequences that sample).
    pub fn step(&self, cache: &mut KvCache, chunks: &[SeqChunk<'_>], with_logits: bool) -> ModelResult<StepOutput> {
        self.run_checked(cache, chunks, |logits| {
            let mut ids = self.device.alloc::<u32>(chunks.len())?;
            self.device.argmax(logits, self.config.vocab, &mut ids)?;
            let rows = match with_logits {
                true => Some(self.download_rows(logits)?),
                false => None,
            };
            Ok(StepOutput { greedy: self.device.download(&ids)?, logits: rows })
        })
    }

    fn download_rows(&self, logits: &Buffer<f32>) -> ModelResult<Vec<Vec<f32>>> {
        let host = self.device.download(logits)?;
        Ok(host.chunks(self.config.vocab).map(<[f32]>::to_vec).collect())
    }

    /// Checks a batch, then runs it; `then` gets the logits of each chunk's last token, on the device.
    fn run_checked<R>(
        &self,
        cache: &mut KvCache,
        chunks: &[SeqChunk<'_>],
        then: impl FnOnce(&Buffer<f32>) -> ModelResult<R>,
    ) -> ModelResult<R> {
        if chunks.is_empty() {
            return Err(ModelError::EmptyPrompt);
        }
        let mut rows = Vec::with_capacity(chunks.len());
        let mut end = 0;
        for (i, ch) in chunks.iter().enumerate() {
            if ch.slot >= cache.slots() || chunks[..i].iter().any(|o| o.slot == ch.slot) {
                return Err(ModelError::BadBatch(format!(
                    "slot {} is outside the cache's {} slots or appears twice in one step",
                    ch.slot,
                    cache.slots()
                )));
            }
            self.check_tokens(ch.tokens, cache.lens[ch.slot], cache.context)?;
            end += ch.tokens.len();
            rows.push(end - 1);
        }
        self.run(cache, chunks, &rows, then)
    }

    fn check_tokens(&self, tokens: &[u32], cached: usize, context: usize) -> ModelResult<()> {
        let vocab = self.config.vocab;
        if tokens.is_empty() {
            return Err(ModelError::EmptyPrompt);
        }
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::TokenOutOfRange { id, vocab });
        }
        if cached + tokens.len() > context {
            return Err(ModelError::ContextExceeded { what: "the sequence", len: cached + tokens.len(), context });
        }
        Ok(())
    }

    /// The forward pass over the (checked) rows of `chunks`; `then` gets the
    /// logits of `logit_rows`, on the device. The buffers come from the
    /// cache's workspace when the last pass had this shape (a decode step
    /// after the first), else from a new one that the cache keeps.
    fn run<R>(
        &self,
        cache: &mut KvCache,
        chunks: &[SeqChunk<'_>],
        logit_rows: &[usize],
        then: impl FnOnce(&Buffer<f32>) -> ModelResult<R>,
    ) -> ModelResult<R> {
        let dev = &self.device;
        let mut tokens = Vec::new();
        let mut places = Vec::new();
        for ch in chunks {
            let start = cache.lens[ch.slot];
            tokens.extend_from_slice(ch.tokens);
            places.extend((0..ch.tokens.len()).map(|i| (ch.slot, start + i)));
        }
        let m = tokens.len();
        let which: Vec<u32> = logit_rows.iter().map(|&r| r as u32).collect();
        let key = WorkspaceKey { model: self.id, rows: m, logit_rows: which.clone() };
        let mut ws = match cache.workspace.take() {
            Some(ws) if ws.key == key => ws,
            _ => Box::new(Workspace::new(self, key, cache.slots(), cache.context)?),
        };
        let (slots, positions): (Vec<u32>, Vec<u32>) = places.iter().map(|&(s, p)| (s as u32, p as u32)).unzip();
        dev.write(&tokens, &mut ws.tokens)?;
        dev.write(&slots, &mut ws.places.slots)?;
        dev.write(&positions, &mut ws.places.positions)?;
        if ws.picked.is_some() {
            dev.write(&which, &mut ws.which)?;
        }
        let issued = self.issue_step(&mut ws, cache);
        if issued.is_ok() {
            for ch in chunks {
                cache.lens[ch.slot] += ch.tokens.len();
            }
        }
        let out = issued.and_then(|()| then(&ws.logits));
        cache.workspace = Some(ws);
        out
    }

    /// Issues a pass over the workspace's inputs: as a replay of its CUDA
    /// graph on cuda from the pass's second use on (captured then), else op by op.
    fn issue_step(&self, ws: &mut Workspace, cache: &mut KvCache) -> ModelResult<()> {
        if let Device::Cpu = self.device {
            // A pass is a hundred or more short ops: on a pool thread each splits
            // its work in place instead of handing it to the pool and waiting.
            return trinity::cpu::on_pool_thread(|| match &self.dense {
                Some(dense) => self.issue_dense_ops(dense, ws, cache),
                None => self.issue_ops(ws, cache),
            });
        }
        if let Some(dense) = &self.dense {
            return self.issue_dense_ops(dense, ws, cache);
        }
        let Device::Cuda(g) = &self.device else { return self.issue_ops(ws, cache) };
        ws.uses += 1;
        if ws.uses < 2 || ws.graph_failed || cuda_graphs_disabled() {
            return self.issue_ops(ws, cache);
        }
        if ws.graph.is_none() {
            // The model's own errors (none is expected: the shapes were checked) leave as they are.
            let mut model_err = None;
            let captured = g.capture(|| match self.issue_ops(ws, cache) {
                Ok(()) => Ok(()),
                Err(ModelError::Kernel(e)) => Err(e),
                Err(e) => {
                    model_err = Some(e);
                    Err(trinity::KernelError::Unsupported { op: "the decode step", backend: "cuda" })
                }
            });
            if let Some(e) = model_err {
                return Err(e);
            }
            match captured {
                Ok(graph) => ws.graph = Some(StepGraph(graph)),
                Err(e) => {
                    eprintln!("warning: capturing the decode step as a CUDA graph failed ({e}); running it op by op");
                    ws.graph_failed = true;
                    return self.issue_ops(ws, cache);
                }
            }
        }
        let graph = ws.graph.as_ref().map(|g| &g.0).expect("captured above");
        Ok(g.replay(graph)?)
    }

    /// The ops of a forward pass over the workspace's inputs, into its buffers.
    fn issue_ops(&self, ws: &mut Workspace, cache: &mut KvCache) -> ModelResult<()> {
        let c = &self.config;
        let (h, eps) = (c.hidden, c.rms_norm_eps);
        let dev = &self.device;
        let act = self.activation_id();
        let ws = &mut *ws;
        dev.embedding(&self.embed, &ws.tokens, &mut ws.x, h)?;
        if let Some(first) = self.layers.first() {
            dev.rms_norm_quantize(&ws.x, &first.input_norm, eps, &mut ws.x_q)?;
        }
        for (li, layer) in self.layers.iter().enumerate() {
            // `x_q` holds this layer's normalized, quantized input (the previous
            // layer's last op, or the one above for the first).
            dev.ternary_linears(&ws.x_q, &[&layer.q, &layer.k, &layer.v], &mut ws.qkv)?;
            self.issue_attention(ws, cache, li)?;
            dev.rms_norm_quantize(&ws.att, &layer.attn_sub_norm, eps, &mut ws.att_q)?;
            dev.ternary_linears(&ws.att_q, &[&layer.o], std::slice::from_mut(&mut ws.o))?;
            dev.add_rms_norm_quantize(&mut ws.x, &ws.o, &layer.post_norm, eps, &mut ws.x_q)?;
            dev.ternary_linears(&ws.x_q, &[&layer.gate, &layer.up], &mut ws.gate_up)?;
            let [gate, up] = &mut ws.gate_up;
            dev.gated_rms_norm_quantize(gate, up, act, &layer.ffn_sub_norm, eps, &mut ws.ffn_q)?;
            dev.ternary_linears(&ws.ffn_q, &[&layer.down], std::slice::from_mut(&mut ws.down))?;
            match self.layers.get(li + 1) {
                Some(next) => dev.add_rms_norm_quantize(&mut ws.x, &ws.down, &next.input_norm, eps, &mut ws.x_q)?,
                None => dev.add(&mut ws.x, &ws.down)?,
            }
        }
        self.issue_head(ws)
    }

    /// The same pass with the dense f16 linears of the [`Linears::DenseF16`]
    /// baseline: each norm in f32, then the f16 GEMMs; attention and the head as above.
    fn issue_dense_ops(&self, dense: &[DenseLayer], ws: &mut Workspace, cache: &mut KvCache) -> ModelResult<()> {
        let c = &self.config;
        let (h, eps) = (c.hidden, c.rms_norm_eps);
        let dev = &self.device;
        let act = self.activation_id();
        let mut d = match ws.dense.take() {
            Some(d) => d,
            None => DenseScratch::new(self, ws.key.rows)?,
        };
        let result = (|| -> ModelResult<()> {
            dev.embedding(&self.embed, &ws.tokens, &mut ws.x, h)?;
            for (li, (layer, w)) in self.layers.iter().zip(dense).enumerate() {
                dev.rms_norm(&ws.x, &layer.input_norm, &mut d.hidden, eps)?;
                dev.dense_f16_linears(&d.hidden, &mut d.hidden_f16, &[&w.q, &w.k, &w.v], &mut ws.qkv)?;
                self.issue_attention(ws, cache, li)?;
                dev.rms_norm(&ws.att, &layer.attn_sub_norm, &mut d.heads, eps)?;
                dev.dense_f16_linears(&d.heads, &mut d.heads_f16, &[&w.o], std::slice::from_mut(&mut ws.o))?;
                dev.add(&mut ws.x, &ws.o)?;
                dev.rms_norm(&ws.x, &layer.post_norm, &mut d.hidden, eps)?;
                dev.dense_f16_linears(&d.hidden, &mut d.hidden_f16, &[&w.gate, &w.up], &mut ws.gate_up)?;
                let [gate, up] = &mut ws.gate_up;
                dev.gated(gate, up, act)?;
                dev.rms_norm(gate, &layer.ffn_sub_norm, &mut d.inner, eps)?;
                dev.dense_f16_linears(&d.inner, &mut d.inner_f16, &[&w.down], std::slice::from_mut(&mut ws.down))?;
                dev.add(&mut ws.x, &ws.down)?;
            }
            Ok(())
        })();
        ws.dense = Some(d);
        result?;
        self.issue_head(ws)
    }

    /// The activation's kernel id.
    fn activation_id(&self) -> u32 {
        match self.config.activation {
            crate::config::Activation::Relu2 => trinity::ops::ACT_RELU2,
            crate::config::Activation::Silu => trinity::ops::ACT_SILU,
        }
    }

    /// RoPE on the workspace's q and k, both into layer `li`'s cache, and attention into `att`.
    fn issue_attention(&self, ws: &mut Workspace, cache: &mut KvCache, li: usize) -> ModelResult<()> {
        let c = &self.config;
        let (hd, ctx) = (c.head_dim, cache.context);
        let [q, k, v] = &mut ws.qkv;
        let (kc, vc) = (&mut cache.k[li], &mut cache.v[li]);
        let (cos, sin, dims) = (&self.rope_cos, &self.rope_sin, [c.heads, c.kv_heads, hd, ctx]);
        self.device.rope_kv_write(q, k, v, kc, vc, cos, sin, &ws.places, dims)?;
        let (kc, vc) = (&cache.k[li], &cache.v[li]);
        let scratch = &mut ws.att_scratch;
        self.device.attention(q, kc, vc, &mut ws.att, &ws.places, c.heads, c.kv_heads, hd, ctx, scratch)?;
        Ok(())
    }

    /// The final norm and the lm_head over the rows that give logits.
    fn issue_head(&self, ws: &mut Workspace) -> ModelResult<()> {
        let c = &self.config;
        let (h, eps) = (c.hidden, c.rms_norm_eps);
        let dev = &self.device;
        // The rows whose logits are wanted, gathered (the embedding kernel over `x` as the table).
        let n = ws.key.logit_rows.len();
        let picked = match &mut ws.picked {
            None => &ws.x,
            Some(picked) => {
                dev.embedding(&ws.x, &ws.which, picked, h)?;
                picked
            }
        };
        dev.rms_norm(picked, &self.final_norm, &mut ws.picked_n, eps)?;
        match &self.reduced_head {
            None => {
                dev.sgemm(&ws.picked_n, self.lm_head.as_ref().unwrap_or(&self.embed), &mut ws.logits, n, c.vocab, h)?
            }
            Some(ReducedHead::F16(w)) => dev.head_gemm_f16(&ws.picked_n, w, &mut ws.logits, n, c.vocab, h)?,
            Some(ReducedHead::Int8 { values, scales }) => {
                dev.head_gemm_i8(&ws.picked_n, values, scales, &mut ws.logits, n, c.vocab, h)?
            }
        }
        Ok(())
    }
}

/// What a workspace was made for: a model's weights, a number of rows and the rows that give logits.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WorkspaceKey {
    model: u64,
    rows: usize,
    logit_rows: Vec<u32>,
}

/// The device buffers of one forward pass of `m` rows: its inputs (token
/// ids, places, the rows that give logits), every activation, and the
/// logits. Fixed addresses, so a pass over them can be captured as a CUDA
/// graph and replayed with new inputs written in.
#[derive(Debug)]
struct Workspace {
    key: WorkspaceKey,
    tokens: Buffer<u32>,
    /// Its bounds are the cache's (every slot, every position below the
    /// context), not this pass's, so a replayed graph fits every later step.
    places: trinity::RowPlaces,
    which: Buffer<u32>,
    x: Buffer<f32>,
    x_q: trinity::QuantizedBuffer,
    qkv: [Buffer<f32>; 3],
    att: Buffer<f32>,
    att_scratch: trinity::AttentionScratch,
    att_q: trinity::QuantizedBuffer,
    o: Buffer<f32>,
    gate_up: [Buffer<f32>; 2],
    ffn_q: trinity::QuantizedBuffer,
    down: Buffer<f32>,
    /// The gathered rows, when not every row gives logits.
    picked: Option<Buffer<f32>>,
    picked_n: Buffer<f32>,
    logits: Buffer<f32>,
    /// The baseline's buffers, made by a [`Linears::DenseF16`] model's first pass over it.
    dense: Option<DenseScratch>,
    /// Passes issued over it (on cuda the second one captures the graph).
    uses: u32,
    graph: Option<StepGraph>,
    graph_failed: bool,
}

impl Workspace {
    fn new(model: &BitNet, key: WorkspaceKey, slots: usize, context: usize) -> ModelResult<Workspace> {
        let (c, dev) = (&model.config, &model.device);
        let (m, n) = (key.rows, key.logit_rows.len());
        let (h, qd, kvd) = (c.hidden, c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let f = |len: usize| dev.alloc::<f32>(len);
        Ok(Workspace {
            tokens: dev.alloc(m)?,
            places: trinity::RowPlaces {
                slots: dev.alloc(m)?,
                positions: dev.alloc(m)?,
                max_slot: slots - 1,
                max_pos: context - 1,
            },
            which: dev.alloc(n)?,
            x: f(m * h)?,
            x_q: dev.alloc_quantized(m, h)?,
            qkv: [f(m * qd)?, f(m * kvd)?, f(m * kvd)?],
            att: f(m * qd)?,
            att_scratch: trinity::AttentionScratch::new(),
            att_q: dev.alloc_quantized(m, qd)?,
            o: f(m * h)?,
            gate_up: [f(m * c.intermediate)?, f(m * c.intermediate)?],
            ffn_q: dev.alloc_quantized(m, c.intermediate)?,
            down: f(m * h)?,
            // Logit rows are increasing row indices, so n = m means every row in order.
            picked: if n == m { None } else { Some(f(n * h)?) },
            picked_n: f(n * h)?,
            logits: f(n * c.vocab)?,
            dense: None,
            key,
            uses: 0,
            graph: None,
            graph_failed: false,
        })
    }
}

/// The normalized activations of the [`Linears::DenseF16`] baseline, in f32
/// and rounded to f16 for the GEMMs, at each of the three input widths.
#[derive(Debug)]
struct DenseScratch {
    /// `m × hidden` (q / k / v and gate / up read it).
    hidden: Buffer<f32>,
    hidden_f16: Buffer<half::f16>,
    /// `m × heads · head_dim` (o_proj reads it).
    heads: Buffer<f32>,
    heads_f16: Buffer<half::f16>,
    /// `m × intermediate` (down_proj reads it).
    inner: Buffer<f32>,
    inner_f16: Buffer<half::f16>,
}

impl DenseScratch {
    fn new(model: &BitNet, m: usize) -> ModelResult<DenseScratch> {
        let (c, dev) = (&model.config, &model.device);
        let (h, qd, inner) = (c.hidden, c.heads * c.head_dim, c.intermediate);
        Ok(DenseScratch {
            hidden: dev.alloc(m * h)?,
            hidden_f16: dev.alloc(m * h)?,
            heads: dev.alloc(m * qd)?,
            heads_f16: dev.alloc(m * qd)?,
            inner: dev.alloc(m * inner)?,
            inner_f16: dev.alloc(m * inner)?,
        })
    }
}

/// A decode step captured as a CUDA graph (`Debug` by name only).
struct StepGraph(trinity::cuda::CudaGraph);

// SAFETY: cudarc leaves `CudaGraph` `!Send` only because it holds the driver's
// graph handles as raw pointers. Those handles belong to the process, not to a
// thread: `CudaGraph::launch` binds its context to the calling thread first,
// and dropping it destroys the handles through the driver, which any thread
// may do. A `StepGraph` is reached only through its `Workspace`, so moving it
// never lets two threads launch it at once.
unsafe impl Send for StepGraph {}

// A model is shared between threads and a cache moves to whichever thread runs
// a pass over it (on the CPU, a rayon pool thread; in `trinity serve`, the
// batching loop's).
const _: () = {
    const fn send<T: Send>() {}
    const fn send_sync<T: Send + Sync>() {}
    send::<KvCache>();
    send_sync::<BitNet>();
};

impl std::fmt::Debug for StepGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StepGraph")
    }
}

/// `TRINITY_NO_CUDA_GRAPH=1` runs every decode step op by op (to compare with the replayed graph).
fn cuda_graphs_disabled() -> bool {
    std::env::var_os("TRINITY_NO_CUDA_GRAPH").is_some_and(|v| v == "1")
}

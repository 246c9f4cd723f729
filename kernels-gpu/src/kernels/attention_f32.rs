//! Causal attention of new query rows against a KV cache (prefill and decode), f32.

use crate::device::*;
use crate::kernel;
use crate::launch::LaunchConfig;

/// Threads per block of `attention_f32`.
pub const ATTENTION_THREADS: u32 = 128;

/// One block per (row, head); the scores of up to `context` positions and 32
/// scratch words in dynamic shared memory.
pub const fn attention_geometry(rows: usize, heads: usize, context: usize) -> LaunchConfig {
    LaunchConfig::linear((rows * heads) as u32, ATTENTION_THREADS, ((context + 32) * 4) as u32)
}

/// Checks the query side of an attention request (the cache side is
/// [`kv_cache_check`](crate::kernels::kv_cache_check)).
#[cfg(not(target_arch = "nvptx64"))]
pub fn attention_check(
    rows: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    q: usize,
    out: usize,
) -> Result<(), String> {
    if rows == 0 || heads == 0 || kv_heads == 0 || head_dim == 0 || !heads.is_multiple_of(kv_heads) {
        return Err("empty shape, or KV heads that do not divide the heads".into());
    }
    crate::launch::check_len("queries", q, rows * heads * head_dim)?;
    crate::launch::check_len("output", out, rows * heads * head_dim)
}

kernel! {
    /// `out = softmax(q · kᵀ · scale, causal) · v` for each query row and head;
    /// row `r` belongs to the sequence in cache slot `slot[r]`, sits at position
    /// `pos[r]` and sees that slot's positions `0 ..= pos[r]` (written before).
    /// Query head `h` reads KV head `h / (heads / kv_heads)` (GQA).
    ///
    /// # Safety
    /// `q` and `out` hold `rows · heads · head_dim`; `slot` and `pos` hold `rows`;
    /// `k` and `v` hold `slots · kv_heads · context · head_dim` (slot, head, position)
    /// with every `slot[r] < slots` and `pos[r] < context`; launched with
    /// [`attention_geometry`] (blocks a multiple of 32 threads).
    ///
    /// # Parameters
    /// - `q`: the rotated queries; `k`, `v`: the cache; `out`: the attention output.
    /// - `slot`, `pos`: each row's cache slot and position.
    /// - `scale`: `head_dim^-0.5`.
    ///
    /// # Thread mapping
    /// One block per (row, head). Threads stride over positions for the scores,
    /// then over the `head_dim` output elements for the weighted sum.
    ///
    /// # Tiling
    /// The row's scores live in shared memory; max and sum are block reductions
    /// (softmax in f32). Memory-bound on the cache: one pass over K, one over V.
    pub unsafe fn attention_f32(
        q: In<f32>, k: In<f32>, v: In<f32>, out: Out<f32>, slot: In<u32>, pos: In<u32>, rows: u32, heads: u32,
        kv_heads: u32, head_dim: u32, context: u32, scale: f32
    ) {
        let (t, nt) = (thread_idx_x(), block_dim_x());
        let b = block_idx_x();
        let (row, h) = (b / heads, b % heads);
        if row >= rows {
            return; // the whole block: no barrier is skipped by part of it
        }
        let kvh = h / (heads / kv_heads);
        let len = pos.get(row as usize) + 1;
        let qb = ((row * heads + h) * head_dim) as usize;
        let cb = ((slot.get(row as usize) * kv_heads + kvh) * context * head_dim) as usize;
        let scratch = context;
        let mut m = f32::NEG_INFINITY;
        let mut p = t;
        while p < len {
            let kb = cb + (p * head_dim) as usize;
            let mut dot = 0.0f32;
            for d in 0..head_dim as usize {
                dot = fma(q.get(qb + d), k.get(kb + d), dot);
            }
            let s = dot * scale;
            shared_store_f32(p, s);
            m = if s > m { s } else { m };
            p += nt;
        }
        let max = block_max_f32(m, scratch);
        let mut sum = 0.0f32;
        let mut p = t;
        while p < len {
            let e = exp_f32(shared_load_f32(p) - max);
            shared_store_f32(p, e);
            sum += e;
            p += nt;
        }
        let total = block_sum_f32(sum, scratch);
        let mut d = t;
        while d < head_dim {
            let mut acc = 0.0f32;
            for p in 0..len {
                acc = fma(shared_load_f32(p) / total, v.get(cb + (p * head_dim + d) as usize), acc);
            }
            out.set(qb + d as usize, acc);
            d += nt;
        }
    }
}

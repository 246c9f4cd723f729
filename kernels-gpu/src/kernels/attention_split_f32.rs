//! Decode attention split across blocks (flash-decoding), pass 1: each block
//! takes one chunk of a row's cached positions for one head.

use crate::device::*;
use crate::kernel;
use crate::launch::LaunchConfig;

/// Cached positions per block of `attention_split_f32`.
pub const ATTENTION_SPLIT_CHUNK: u32 = 64;
/// Threads per block of `attention_split_f32` and `attention_combine_f32`.
pub const ATTENTION_SPLIT_THREADS: u32 = 128;
/// Below this many (row, head) pairs the one-block-per-pair kernel leaves
/// most of a GPU idle on a long context, and the split kernels take over.
pub const ATTENTION_SPLIT_MAX_PAIRS: usize = 256;

/// The chunks a context of up to `max_pos + 1` positions splits into.
pub const fn attention_splits(max_pos: usize) -> usize {
    (max_pos + 1).div_ceil(ATTENTION_SPLIT_CHUNK as usize)
}

/// Whether `attention` splits: few (row, head) pairs and more than one chunk of positions.
pub const fn attention_uses_split(rows: usize, heads: usize, max_pos: usize) -> bool {
    rows * heads < ATTENTION_SPLIT_MAX_PAIRS && attention_splits(max_pos) > 1
}

/// One block per (row · head, chunk): `splits` blocks in y; the chunk's
/// scores and 32 scratch words in shared memory.
pub const fn attention_split_geometry(rows: usize, heads: usize, splits: usize) -> LaunchConfig {
    LaunchConfig {
        grid: [(rows * heads) as u32, splits as u32, 1],
        block: [ATTENTION_SPLIT_THREADS, 1, 1],
        shared_bytes: (ATTENTION_SPLIT_CHUNK + 32) * 4,
    }
}

kernel! {
    /// For row `r`, head `h` and chunk `c` of positions `[64c, 64c + 64) ∩ [0, pos[r]]`:
    /// the chunk's score maximum `m`, `l = Σ e^(s − m)` and the unnormalized
    /// `o = Σ e^(s − m) · v`, with `s = q · k · scale`; `attention_combine_f32`
    /// merges the chunks. A chunk past the row's position writes `l = 0`.
    ///
    /// # Safety
    /// As `attention_f32` for `q`, `k`, `v`, `slot`, `pos`; `part_o` holds
    /// `rows · heads · splits · head_dim` and `part_ml` `rows · heads · splits · 2`;
    /// every `pos[r] < splits · 64`; launched with [`attention_split_geometry`].
    ///
    /// # Parameters
    /// - `q`: the rotated queries; `k`, `v`: the cache (slot, KV head, position, dim).
    /// - `part_o`, `part_ml`: per (row · head, chunk): `o` (`head_dim` values), then `(m, l)`.
    /// - `slot`, `pos`: each row's cache slot and position; `scale`: `head_dim^-0.5`.
    ///
    /// # Thread mapping
    /// Block (`r · heads + h`, `c`). Scores: a warp per position, lanes over
    /// `head_dim` (coalesced reads of a key row), a butterfly sum. Weighted
    /// sum: threads over `head_dim`, each through the chunk's positions
    /// (coalesced reads of value rows).
    ///
    /// # Tiling
    /// The chunk's 64 scores live in shared memory; max and sum are block
    /// reductions. A long context becomes many blocks, so a decode step's few
    /// (row, head) pairs fill the GPU instead of a handful of its SMs.
    pub unsafe fn attention_split_f32(
        q: In<f32>, k: In<f32>, v: In<f32>, part_o: Out<f32>, part_ml: Out<f32>, slot: In<u32>, pos: In<u32>,
        rows: u32, heads: u32, kv_heads: u32, head_dim: u32, context: u32, scale: f32
    ) {
        let (t, nt) = (thread_idx_x(), block_dim_x());
        let (b, c, splits) = (block_idx_x(), block_idx_y(), grid_dim_y());
        let (row, h) = (b / heads, b % heads);
        if row >= rows {
            return; // the whole block
        }
        let part = (b * splits + c) as usize;
        let start = c * ATTENTION_SPLIT_CHUNK;
        let len = pos.get(row as usize) + 1;
        if start >= len {
            // The whole block: an empty chunk, weight 0 in the combine.
            if t == 0 {
                part_ml.set(2 * part, f32::NEG_INFINITY);
                part_ml.set(2 * part + 1, 0.0);
            }
            return;
        }
        let n = if len - start < ATTENTION_SPLIT_CHUNK { len - start } else { ATTENTION_SPLIT_CHUNK };
        let kvh = h / (heads / kv_heads);
        let qb = (b * head_dim) as usize;
        let cb = ((slot.get(row as usize) * kv_heads + kvh) * context * head_dim) as usize;
        let (lane, warp, warps) = (lane_id(), warp_id(), nt / 32);
        let mut i = warp;
        while i < n {
            let kb = cb + ((start + i) * head_dim) as usize;
            let mut dot = 0.0f32;
            let mut d = lane;
            while d < head_dim {
                dot = fma(q.get(qb + d as usize), k.get(kb + d as usize), dot);
                d += 32;
            }
            let s = warp_sum_f32(dot) * scale;
            if lane == 0 {
                shared_store_f32(i, s);
            }
            i += warps;
        }
        sync_threads();
        let scratch = ATTENTION_SPLIT_CHUNK;
        let mut m = f32::NEG_INFINITY;
        let mut i = t;
        while i < n {
            let s = shared_load_f32(i);
            m = if s > m { s } else { m };
            i += nt;
        }
        let max = block_max_f32(m, scratch);
        let mut sum = 0.0f32;
        let mut i = t;
        while i < n {
            let e = exp_f32(shared_load_f32(i) - max);
            shared_store_f32(i, e);
            sum += e;
            i += nt;
        }
        // Its barriers also publish the weights stored just above.
        let l = block_sum_f32(sum, scratch);
        let vb = cb + (start * head_dim) as usize;
        let mut d = t;
        while d < head_dim {
            let mut acc = 0.0f32;
            for i in 0..n {
                acc = fma(shared_load_f32(i), v.get(vb + (i * head_dim + d) as usize), acc);
            }
            part_o.set(part * head_dim as usize + d as usize, acc);
            d += nt;
        }
        if t == 0 {
            part_ml.set(2 * part, max);
            part_ml.set(2 * part + 1, l);
        }
    }
}

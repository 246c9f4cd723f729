//! Decode attention split across blocks (flash-decoding), pass 2: the
//! chunks' partial softmax sums merged into each row's output.

use crate::device::*;
use crate::kernel;
use crate::launch::LaunchConfig;

use super::ATTENTION_SPLIT_THREADS;

/// One block per (row, head).
pub const fn attention_combine_geometry(rows: usize, heads: usize) -> LaunchConfig {
    LaunchConfig::linear((rows * heads) as u32, ATTENTION_SPLIT_THREADS, 0)
}

kernel! {
    /// `out = Σ_c e^(m_c − M) · o_c / Σ_c e^(m_c − M) · l_c` over the chunks
    /// `c` of `attention_split_f32` with `l_c > 0`, `M` the largest of their `m_c`:
    /// the softmax-weighted sum over all of the row's positions.
    ///
    /// # Safety
    /// `part_o` holds `pairs · splits · head_dim` and `part_ml` `pairs · splits · 2`
    /// as `attention_split_f32` wrote them (chunk 0 of every pair non-empty);
    /// `out` holds `pairs · head_dim`; launched with [`attention_combine_geometry`].
    ///
    /// # Parameters
    /// - `part_o`, `part_ml`: the split pass's partial outputs and `(m, l)` pairs.
    /// - `out`: `pairs × head_dim`, the attention output (`pairs = rows · heads`).
    ///
    /// # Thread mapping
    /// One block per (row, head); threads over `head_dim`, each reading the
    /// chunks' `(m, l)` (a few words, from L1) and its column of `o`.
    ///
    /// # Tiling
    /// None.
    pub unsafe fn attention_combine_f32(
        part_o: In<f32>, part_ml: In<f32>, out: Out<f32>, pairs: u32, head_dim: u32, splits: u32
    ) {
        let b = block_idx_x();
        if b >= pairs {
            return;
        }
        let base = (b * splits) as usize;
        let mut top = f32::NEG_INFINITY;
        for c in 0..splits as usize {
            let (m, l) = (part_ml.get(2 * (base + c)), part_ml.get(2 * (base + c) + 1));
            if l > 0.0 && m > top {
                top = m;
            }
        }
        let mut total = 0.0f32;
        for c in 0..splits as usize {
            let (m, l) = (part_ml.get(2 * (base + c)), part_ml.get(2 * (base + c) + 1));
            if l > 0.0 {
                total = fma(l, exp_f32(m - top), total);
            }
        }
        let mut d = thread_idx_x();
        while d < head_dim {
            let mut acc = 0.0f32;
            for c in 0..splits as usize {
                let (m, l) = (part_ml.get(2 * (base + c)), part_ml.get(2 * (base + c) + 1));
                if l > 0.0 {
                    acc = fma(part_o.get((base + c) * head_dim as usize + d as usize), exp_f32(m - top), acc);
                }
            }
            out.set(b as usize * head_dim as usize + d as usize, acc / total);
            d += block_dim_x();
        }
    }
}

//! RMSNorm fused with the per-token int8 quantization of its output: the
//! activation pass in front of every BitNet linear (input_layernorm before
//! q/k/v, post_attention_layernorm before gate/up, the sub-norms before o_proj
//! and down_proj) in one launch, and the normalized rows never reach memory.

use crate::device::*;
use crate::kernel;
use crate::launch::LaunchConfig;
use crate::matmul::{QUANTIZE_SHARED_BYTES, QUANTIZE_THREADS, activation_scale, quantize_value};

use super::row_rms_inv;

/// The fused kernel's launch: one 256-thread block per row (blocks stride over
/// rows), 32 shared scratch words; the same block shape as `rms_norm_f32` and
/// the quantizer, so its sums are theirs bit for bit.
pub const fn rms_norm_quantize_geometry(rows: usize, max_blocks: u32) -> LaunchConfig {
    LaunchConfig::per_item(rows as u64, max_blocks, QUANTIZE_THREADS, QUANTIZE_SHARED_BYTES)
}

kernel! {
    /// Per row: `y = w · (x · inv)` with `inv = 1 / sqrt(mean(x²) + eps)`
    /// (exactly as `rms_norm_f32`), then `y` quantized as `quantize_f32`
    /// does it: `scale = 127 / max(absmax(y), 1e-5)`, `q = clamp(round_ties_even(y · scale), −128, 127)`,
    /// the row's scale and the sum of its int8 values.
    ///
    /// # Safety
    /// `x` holds `rows · cols` values, `w` holds `cols`; `q` holds
    /// `rows · k_pad` bytes (`k_pad ≥ cols`, columns past `cols` are written
    /// as 0); `scales` and `sums` hold `rows`; the launch is
    /// [`rms_norm_quantize_geometry`] (blocks of a multiple of 32 threads,
    /// 32 shared words).
    ///
    /// # Parameters
    /// - `x`: `rows × cols` f32 activations (the residual stream or a sublayer's output).
    /// - `w`: the norm's weight; `eps`: the config's `rms_norm_eps`.
    /// - `q`, `scales`, `sums`: the int8 rows (padded to `k_pad`), per-row scales and sums, as the quantizer writes them.
    ///
    /// # Thread mapping
    /// One block per row (blocks stride over rows); threads stride over columns.
    ///
    /// # Tiling
    /// None: three passes over the row, which a block's first pass brings into
    /// L1 (sum of squares; absmax of `y`; quantize), `y` recomputed in
    /// registers each time instead of stored; block reductions through 32 shared words.
    pub unsafe fn rms_norm_quantize_f32(
        x: In<f32>, w: In<f32>, q: Out<i8>, scales: Out<f32>, sums: Out<i32>, rows: u32, cols: u32, k_pad: u32, eps: f32
    ) {
        let mut row = block_idx_x();
        while row < rows {
            rms_norm_quantize_row(x, w, q, scales, sums, row, cols, k_pad, eps);
            row += grid_dim_x();
        }
    }
}

/// Body of the fused pre-norm kernels (`add_rms_norm_quantize_f32`,
/// `gated_rms_norm_quantize_f32`): per row `x ← combine(x, other)` (stored),
/// then [`rms_norm_quantize_row`] of the new `x`. Each thread updates the
/// columns it later reads (the same stride), so it reads only its own writes.
///
/// # Safety
/// `x` and `other` hold `rows · cols` values (they may not alias); the rest
/// as `rms_norm_quantize_f32`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn combine_rms_norm_quantize_body(
    x: Out<f32>,
    other: In<f32>,
    combine: impl Fn(f32, f32) -> f32,
    w: In<f32>,
    q: Out<i8>,
    scales: Out<f32>,
    sums: Out<i32>,
    [rows, cols, k_pad]: [u32; 3],
    eps: f32,
) {
    let (t, nt) = (thread_idx_x(), block_dim_x());
    let mut row = block_idx_x();
    while row < rows {
        let base = row as usize * cols as usize;
        let mut k = t;
        while k < cols {
            let i = base + k as usize;
            // SAFETY: k < cols within row < rows.
            unsafe { x.set(i, combine(x.get(i), other.get(i))) };
            k += nt;
        }
        // SAFETY: forwarded; row < rows.
        unsafe { rms_norm_quantize_row(x.as_in(), w, q, scales, sums, row, cols, k_pad, eps) };
        row += grid_dim_x();
    }
}

/// One row of `rms_norm_quantize_f32` (and of its fused-add variant).
///
/// # Safety
/// As `rms_norm_quantize_f32`, with `row < rows`; every thread of the block calls it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn rms_norm_quantize_row(
    x: In<f32>,
    w: In<f32>,
    q: Out<i8>,
    scales: Out<f32>,
    sums: Out<i32>,
    row: u32,
    cols: u32,
    k_pad: u32,
    eps: f32,
) {
    let (t, nt) = (thread_idx_x(), block_dim_x());
    let base = row as usize * cols as usize;
    // SAFETY: the row is inside `x` (the caller's contract), likewise below.
    let inv = unsafe { row_rms_inv(x, base, cols, eps) };
    let mut m = 0.0f32;
    let mut k = t;
    while k < cols {
        // SAFETY: k < cols.
        m = m.max(abs_f32(unsafe { w.get(k as usize) * (x.get(base + k as usize) * inv) }));
        k += nt;
    }
    // SAFETY: 32 scratch words at 0.
    let scale = activation_scale(unsafe { block_max_f32(m, 0) });
    let out = row as usize * k_pad as usize;
    let mut sum = 0i32;
    let mut k = t;
    while k < k_pad {
        let v = if k < cols {
            // SAFETY: k < cols.
            quantize_value(unsafe { w.get(k as usize) * (x.get(base + k as usize) * inv) }, scale)
        } else {
            0
        };
        sum += v as i32;
        // SAFETY: k < k_pad within the row's output.
        unsafe { q.set(out + k as usize, v) };
        k += nt;
    }
    // SAFETY: 32 scratch words at 0.
    let total = unsafe { block_sum_i32(sum, 0) };
    if t == 0 {
        // SAFETY: row < rows.
        unsafe {
            scales.set(row as usize, scale);
            sums.set(row as usize, total);
        }
    }
}

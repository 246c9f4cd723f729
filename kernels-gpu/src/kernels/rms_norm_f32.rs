//! RMSNorm of f32 rows (every BitNet norm and sub-norm).

use crate::device::*;
use crate::kernel;
use crate::launch::LaunchConfig;

/// Threads per block of `rms_norm_f32`.
pub const RMS_NORM_THREADS: u32 = 256;

/// One block per row, striding over rows; 32 shared scratch words.
pub const fn rms_norm_geometry(rows: usize, max_blocks: u32) -> LaunchConfig {
    LaunchConfig::per_item(rows as u64, max_blocks, RMS_NORM_THREADS, 32 * 4)
}

/// Checks an RMSNorm request.
#[cfg(not(target_arch = "nvptx64"))]
pub fn rms_norm_check(rows: usize, cols: usize, x: usize, w: usize, y: usize) -> Result<(), String> {
    if rows == 0 || cols == 0 {
        return Err("empty matrix".into());
    }
    crate::launch::check_len("input", x, rows * cols)?;
    crate::launch::check_len("weight", w, cols)?;
    crate::launch::check_len("output", y, rows * cols)
}

/// `1 / sqrt(mean(x²) + eps)` of the row of `cols` values at `base`: a block
/// reduction every thread of the block must reach (32 shared words at 0).
/// `rms_norm_f32` and `rms_norm_quantize_f32` both use it, so their norms agree bit for bit.
///
/// # Safety
/// `base + cols` is within `x`; launched as [`rms_norm_geometry`] (a multiple of 32 threads, 32 shared words).
#[inline(always)]
pub unsafe fn row_rms_inv(x: In<f32>, base: usize, cols: u32, eps: f32) -> f32 {
    let (t, nt) = (thread_idx_x(), block_dim_x());
    let mut s = 0.0f32;
    let mut k = t;
    while k < cols {
        // SAFETY: k < cols, within the row (the caller's contract).
        let v = unsafe { x.get(base + k as usize) };
        s = fma(v, v, s);
        k += nt;
    }
    // SAFETY: the 32 scratch words at 0 (the caller's contract).
    let total = unsafe { block_sum_f32(s, 0) };
    1.0 / sqrt_f32(total / cols as f32 + eps)
}

kernel! {
    /// `y = w · x / sqrt(mean(x²) + eps)` per row, as transformers' RMSNorm in f32.
    ///
    /// # Safety
    /// `x` and `y` hold `rows · cols` values (they may not alias), `w` holds
    /// `cols`; blocks of a multiple of 32 threads with 128 bytes of dynamic
    /// shared memory (see [`rms_norm_geometry`]).
    ///
    /// # Parameters
    /// - `x`: `rows × cols` input; `w`: the norm's weight; `y`: the output.
    /// - `eps`: the config's `rms_norm_eps`.
    ///
    /// # Thread mapping
    /// One block per row (blocks stride over rows); threads stride over columns.
    ///
    /// # Tiling
    /// None: one pass for the sum of squares (a block reduction), one to scale.
    pub unsafe fn rms_norm_f32(x: In<f32>, w: In<f32>, y: Out<f32>, rows: u32, cols: u32, eps: f32) {
        let (t, nt) = (thread_idx_x(), block_dim_x());
        let mut row = block_idx_x();
        while row < rows {
            let base = row as usize * cols as usize;
            let inv = row_rms_inv(x, base, cols, eps);
            let mut k = t;
            while k < cols {
                y.set(base + k as usize, w.get(k as usize) * (x.get(base + k as usize) * inv));
                k += nt;
            }
            row += grid_dim_x();
        }
    }
}

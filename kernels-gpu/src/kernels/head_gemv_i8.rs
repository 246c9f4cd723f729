//! The lm_head GEMV with int8 weights and one scale per row: f32 activations → f32 logits.

use crate::device::{In, Out};
use crate::head::{HeadI8, head_gemv_body};
use crate::kernel;

kernel! {
    /// `c[i][j] = scales[j] · Σ_k a[i][k] · w[j][k]` for every activation row
    /// `i < m` and vocabulary row `j < n`: the weights int8 (absmax per row,
    /// `scales[j] = absmax / 127`), the sums f32, the scale applied once at the end.
    ///
    /// # Safety
    /// `a` holds `m · k` values; `w` holds `n` rows of `head::head_row_len(k)`
    /// bytes (zeros past `k`) from a 16-byte aligned base, as `n ·
    /// head_row_len(k) / 4` words; `scales` holds `n`; `c` holds `m · n`; the
    /// launch is `head::head_gemv_geometry(n)` (blocks of 8 warps).
    ///
    /// # Parameters
    /// - `a`: `m × k` normalized hidden states, row-major.
    /// - `w`, `scales`: the head's int8 rows and their scales.
    /// - `c`: `m × n` logits, row-major.
    ///
    /// # Thread mapping
    /// As `head_gemv_f16`: a warp per vocabulary row, lane `l` reads 128-bit
    /// chunks (16 weights) `l, l + 32, …`, a butterfly sum, the row's scale.
    ///
    /// # Tiling
    /// None: the head streams from global memory once; `a` stays in L1.
    pub unsafe fn head_gemv_i8(a: In<f32>, w: In<u32>, scales: In<f32>, c: Out<f32>, m: u32, n: u32, k: u32) {
        head_gemv_body::<HeadI8, true>(a, w, scales, c, m, n, k)
    }
}

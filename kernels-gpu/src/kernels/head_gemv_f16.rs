//! The lm_head GEMV with f16 weights: f32 activations × f16 head → f32 logits.

use crate::device::{In, Out};
use crate::head::{HeadF16, head_gemv_body};
use crate::kernel;

kernel! {
    /// `c[i][j] = Σ_k a[i][k] · w[j][k]` for every activation row `i < m` and
    /// vocabulary row `j < n`, the weights f16, the sums f32.
    ///
    /// # Safety
    /// `a` holds `m · k` values; `w` holds `n` rows of `head::head_row_len(k)`
    /// halves (zeros past `k`) from a 16-byte aligned base, as `n ·
    /// head_row_len(k) / 2` words; `c` holds `m · n`; the launch is
    /// `head::head_gemv_geometry(n)` (blocks of 8 warps).
    ///
    /// # Parameters
    /// - `a`: `m × k` normalized hidden states (the final RMSNorm's output), row-major.
    /// - `w`: the head's rows in f16; `scales`: unused (the int8 kernel's row scales).
    /// - `c`: `m × n` logits, row-major.
    ///
    /// # Thread mapping
    /// Each warp owns vocabulary row `j`, rows striding by `8 · gridDim`; lane
    /// `l` reads 128-bit chunks `l, l + 32, …` of it (a warp reads 512
    /// contiguous bytes per step), and sums them against `a` with one FMA per
    /// weight; a butterfly sum gives the logit. One pass over the row per
    /// activation row: the passes after the first find it in L1.
    ///
    /// # Tiling
    /// None: the head streams from global memory once (the decode step's
    /// largest read); `a` (a few rows of `k` floats) stays in L1.
    pub unsafe fn head_gemv_f16(a: In<f32>, w: In<u32>, scales: In<f32>, c: Out<f32>, m: u32, n: u32, k: u32) {
        head_gemv_body::<HeadF16, false>(a, w, scales, c, m, n, k)
    }
}

//! Ternary GEMV (decode, M ≤ 8): int8 activations × device-layout ternary weights → f32.

use crate::device::{In, Out};
use crate::kernel;
use crate::matmul::gemv_body;

kernel! {
    /// `y[m][n] = dequantize(Σ_k trit(w[n][k]) · x[m][k])` for `m < M ≤ 8`.
    ///
    /// # Safety
    /// `x` holds `m · k_pad / 4` words of int8 activations (zero past K),
    /// `x_scales`/`x_sums` hold `m`, `w` holds `n · k_pad / 16` device-layout
    /// words (see `format::device_layout`), `y` holds `m · n`; `k_pad` is a
    /// multiple of 64; `m ≤ 8`; blocks of 256 threads with
    /// `matmul::gemv_shared_bytes(m, k_pad)` of dynamic shared memory.
    ///
    /// # Parameters
    /// - `x`, `x_scales`, `x_sums`: the quantizer's output.
    /// - `w`, `w_scale`: the weights and their absmean scale.
    /// - `y`: `m × n` outputs, row-major.
    ///
    /// # Thread mapping
    /// Each warp owns an output row `n`, rows striding by `8 · gridDim`; lane
    /// `l` reads 128-bit weight chunks `l, l + 32, …` of the row (coalesced: a
    /// warp reads 512 contiguous bytes per step). One pass over the rows per
    /// activation row, with a single register accumulator (passes after the
    /// first read the weights from L1); see `matmul::gemv_body`.
    ///
    /// # Tiling
    /// The activations (`m × k_pad` bytes) are staged in shared memory once per
    /// block, transposed within 64-byte chunks so the lanes' reads are
    /// conflict-free; weights stream from global memory and are unpacked in
    /// registers with one shift and mask per 4 weights into `dp4a` operands
    /// (codes `trit + 1`; the activation row sum is subtracted at the end).
    pub unsafe fn ternary_gemv_f32(
        x: In<u32>, x_scales: In<f32>, x_sums: In<i32>, w: In<u32>, w_scale: f32, y: Out<f32>, m: u32, n: u32, k_pad: u32
    ) {
        gemv_body(x, x_scales, x_sums, w, w_scale, y, m, n, k_pad)
    }
}

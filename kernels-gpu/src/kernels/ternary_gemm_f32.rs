//! Ternary GEMM (prefill): int8 tensor cores (`mma.sync.m16n8k32`) → f32.

use crate::device::{In, Out};
use crate::kernel;
use crate::matmul::gemm_body;

kernel! {
    /// `y[m][n] = dequantize(Σ_k trit(w[n][k]) · x[m][k])` for any M, N and
    /// K (edges guarded; K padded to 64 by the data layouts).
    ///
    /// # Safety
    /// `x` holds `m · k_pad / 4` words of int8 activations (zero past K),
    /// `x_scales` holds `m`, `w` holds `n · k_pad / 16` device-layout words,
    /// `y` holds `m · n`; `k_pad` is a positive multiple of 64; grid
    /// `(ceil(n/128), ceil(m/128))` of 256-thread blocks with
    /// `matmul::GEMM_SHARED_BYTES` of dynamic shared memory.
    ///
    /// # Parameters
    /// - `x`, `x_scales`: the quantizer's output (its sums are not needed:
    ///   weights are unpacked to true trits here).
    /// - `w`, `w_scale`: the weights and their absmean scale.
    /// - `y`: `m × n` outputs, row-major.
    ///
    /// # Thread mapping
    /// A block computes a 128 × 128 tile of `y`; its 8 warps are 2 (M) × 4
    /// (N), each owning 64 × 32 = 4 × 4 mma tiles of 16 × 8 (64 int32
    /// accumulators per thread).
    ///
    /// # Tiling
    /// K advances 64 at a time. Each step's A tile (128 × 64 int8) and B tile
    /// (128 × 64 trits, unpacked from 2 bits to int8 on the way into shared
    /// memory) sit in shared memory with rows padded to 80 bytes (conflict-free
    /// fragment loads); double-buffered: the next step's global loads are in
    /// registers while the current step's 32 mma per warp run.
    pub unsafe fn ternary_gemm_f32(
        x: In<u32>, x_scales: In<f32>, w: In<u32>, w_scale: f32, y: Out<f32>, m: u32, n: u32, k_pad: u32
    ) {
        gemm_body(x, x_scales, w, w_scale, y, m, n, k_pad)
    }
}

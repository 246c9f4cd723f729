//! Grouped ternary GEMV (decode, M ≤ 8): one launch for up to three weight
//! matrices that share their int8 activations (q / k / v, gate / up) → f16.

use crate::device::{In, Out};
use crate::kernel;
use crate::matmul::{GemvGroup, gemv_many_body};

kernel! {
    /// `y_i[m][n] = dequantize(Σ_k trit(w_i[n][k]) · x[m][k])` for each matrix
    /// `i < 3` of the group and `m < M ≤ 8`: `ternary_gemv_f16` over every
    /// matrix at once, so small matrices (a 2B-4T layer's k and v: 640 rows,
    /// 80 blocks) share one grid with the large one instead of leaving SMs idle
    /// in launches of their own.
    ///
    /// # Safety
    /// `x` holds `m · k_pad / 4` words of int8 activations (zero past K),
    /// `x_scales`/`x_sums` hold `m`; each `w_i` holds `n_i · k_pad / 16`
    /// device-layout words (see `format::device_layout`) and each `y_i` holds
    /// `m · n_i` (`n_i = 0`: matrix `i` unused, its pointers never read);
    /// `k_pad` is a multiple of 64; `m ≤ 8`; blocks of 256 threads with
    /// `matmul::gemv_shared_bytes(m, k_pad)` of dynamic shared memory
    /// (`matmul::gemv_many_geometry`).
    ///
    /// # Parameters
    /// - `x`, `x_scales`, `x_sums`: the quantizer's output.
    /// - `w0`…`w2`, `s0`…`s2`: the weights and their absmean scales.
    /// - `y0`…`y2`: `m × n_i` outputs, row-major.
    /// - `n0`…`n2`: each matrix's rows.
    ///
    /// # Thread mapping
    /// The matrices' rows are numbered one after another (`n0 + n1 + n2` in
    /// all); warp `w` of block `b` owns row `8b + w`, striding by
    /// `8 · gridDim`, and each lane reads 128-bit weight chunks of it as in
    /// `ternary_gemv_f16`.
    ///
    /// # Tiling
    /// As `ternary_gemv_f16`: the activations staged once per block in shared
    /// memory, weights streamed from global memory and unpacked in registers.
    pub unsafe fn ternary_gemv_many_f16(
        x: In<u32>, x_scales: In<f32>, x_sums: In<i32>,
        w0: In<u32>, w1: In<u32>, w2: In<u32>, s0: f32, s1: f32, s2: f32,
        y0: Out<u16>, y1: Out<u16>, y2: Out<u16>, n0: u32, n1: u32, n2: u32, m: u32, k_pad: u32
    ) {
        let group = GemvGroup { w: [w0, w1, w2], w_scale: [s0, s1, s2], y: [y0, y1, y2], n: [n0, n1, n2] };
        gemv_many_body(x, x_scales, x_sums, group, m, k_pad)
    }
}

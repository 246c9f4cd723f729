//! The residual add fused with the RMSNorm + int8 quantization after it.

use crate::device::*;
use crate::kernel;

use super::combine_rms_norm_quantize_body;

kernel! {
    /// The residual add fused with the norm after it: per row `x ← x + delta`
    /// (stored), then exactly `rms_norm_quantize_f32` of the new `x`. A
    /// BitNet layer ends both sublayers this way (`x += o_proj(…)` then the
    /// post-attention norm; `x += down_proj(…)` then the next layer's input
    /// norm): one launch and one pass over `x` fewer each.
    ///
    /// # Safety
    /// `x` and `delta` hold `rows · cols` values (they may not alias); the
    /// rest as `rms_norm_quantize_f32`.
    ///
    /// # Parameters
    /// - `x`: the residual stream, updated in place; `delta`: the sublayer's output.
    /// - `w`, `eps`, `q`, `scales`, `sums`: as `rms_norm_quantize_f32`.
    ///
    /// # Thread mapping
    /// As `rms_norm_quantize_f32`; each thread adds the columns it later
    /// reads (the same stride), so it reads only its own writes.
    ///
    /// # Tiling
    /// As `rms_norm_quantize_f32`, after one pass that adds and stores.
    pub unsafe fn add_rms_norm_quantize_f32(
        x: Out<f32>, delta: In<f32>, w: In<f32>, q: Out<i8>, scales: Out<f32>, sums: Out<i32>, rows: u32, cols: u32,
        k_pad: u32, eps: f32
    ) {
        combine_rms_norm_quantize_body(x, delta, |a, d| a + d, w, q, scales, sums, [rows, cols, k_pad], eps)
    }
}

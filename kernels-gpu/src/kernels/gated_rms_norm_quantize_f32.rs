//! The gated MLP activation fused with the RMSNorm + int8 quantization after
//! it (BitNet's `ffn_sub_norm` in front of down_proj).

use crate::device::*;
use crate::kernel;

use super::{combine_rms_norm_quantize_body, gated_value};

kernel! {
    /// Per row `gate ← act(gate) · up` (stored, exactly as `gated_f32`), then
    /// exactly `rms_norm_quantize_f32` of the new `gate`: one launch and one
    /// pass over the row fewer than the two.
    ///
    /// # Safety
    /// `gate` and `up` hold `rows · cols` values (they may not alias); `act`
    /// is `ACT_RELU2` or `ACT_SILU`; the rest as `rms_norm_quantize_f32`.
    ///
    /// # Parameters
    /// - `gate`: gate_proj's output, replaced by the gated product; `up`: up_proj's output.
    /// - `act`: the activation (`ACT_RELU2`, `ACT_SILU`).
    /// - `w`, `eps`, `q`, `scales`, `sums`: as `rms_norm_quantize_f32`.
    ///
    /// # Thread mapping
    /// As `rms_norm_quantize_f32`; each thread gates the columns it later
    /// reads (the same stride), so it reads only its own writes.
    ///
    /// # Tiling
    /// As `rms_norm_quantize_f32`, after one pass that gates and stores.
    pub unsafe fn gated_rms_norm_quantize_f32(
        gate: Out<f32>, up: In<f32>, w: In<f32>, q: Out<i8>, scales: Out<f32>, sums: Out<i32>, rows: u32,
        cols: u32, k_pad: u32, eps: f32, act: u32
    ) {
        combine_rms_norm_quantize_body(gate, up, |g, u| gated_value(g, u, act), w, q, scales, sums, [rows, cols, k_pad], eps)
    }
}

//! The gated MLP activation fused with the RMSNorm + int8 quantization after
//! it (BitNet's `ffn_sub_norm` in front of down_proj).

use crate::device::*;
use crate::kernel;

use super::{gated_value, rms_norm_quantize_row};

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
        let (t, nt) = (thread_idx_x(), block_dim_x());
        let mut row = block_idx_x();
        while row < rows {
            let base = row as usize * cols as usize;
            let mut k = t;
            while k < cols {
                let i = base + k as usize;
                gate.set(i, gated_value(gate.get(i), up.get(i), act));
                k += nt;
            }
            rms_norm_quantize_row(gate.as_in(), w, q, scales, sums, row, cols, k_pad, eps);
            row += grid_dim_x();
        }
    }
}

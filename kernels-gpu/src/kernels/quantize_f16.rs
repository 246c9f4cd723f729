//! Per-token absmax int8 quantization of f16 rows (IEEE half bits) (BitNet b1.58's A8).

use crate::device::{In, Out};
use crate::kernel;
use crate::matmul::quantize_body;

kernel! {
    /// Quantizes each row of `x` to int8: `scale = 127 / max(absmax, 1e-5)`,
    /// `q = clamp(round_ties_even(x · scale), −128, 127)`; also writes the row's
    /// scale and the sum of its int8 values (the GEMV subtracts it, since it
    /// multiplies by codes `trit + 1`).
    ///
    /// # Safety
    /// `x` holds `rows · cols` values; `q` holds `rows · k_pad` bytes
    /// (`k_pad ≥ cols`, columns past `cols` are written as 0); `scales` and
    /// `sums` hold `rows`; block size a multiple of 32 (256 used);
    /// `matmul::QUANTIZE_SHARED_BYTES` of dynamic shared memory.
    ///
    /// # Parameters
    /// - `x`: `rows × cols` activations, row-major.
    /// - `q`, `scales`, `sums`: the int8 rows (padded to `k_pad`), per-row scales and sums.
    ///
    /// # Thread mapping
    /// One block per row (blocks stride over rows); threads stride over columns.
    ///
    /// # Tiling
    /// None: two passes over the row (absmax, then quantize), block reductions through 32 shared words.
    pub unsafe fn quantize_f16(x: In<u16>, q: Out<i8>, scales: Out<f32>, sums: Out<i32>, rows: u32, cols: u32, k_pad: u32) {
        quantize_body(x, q, scales, sums, rows, cols, k_pad)
    }
}

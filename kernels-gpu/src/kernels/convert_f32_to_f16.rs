//! f32 → f16 activations: what a 16-bit GEMM (the cuBLAS FP16 baseline's
//! linears) reads.

use crate::device::*;
use crate::kernel;

kernel! {
    /// `out[i] ← f16(x[i])`, IEEE half bits rounded to nearest even
    /// (`cvt.rn.f16.f32`; overflow gives ±∞).
    ///
    /// # Safety
    /// `x` and `out` hold `n` values.
    ///
    /// # Parameters
    /// - `x`: f32 values; `out`: their f16 bits; `n`: the count.
    ///
    /// # Thread mapping
    /// One thread per element (`gated_f32::elementwise_geometry`).
    ///
    /// # Tiling
    /// None.
    pub unsafe fn convert_f32_to_f16(x: In<f32>, out: Out<u16>, n: u32) {
        let i = global_thread_x();
        if i < n {
            out.set(i as usize, f32_to_f16(x.get(i as usize)));
        }
    }
}

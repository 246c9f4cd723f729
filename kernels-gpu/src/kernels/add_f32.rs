//! The residual connection: `x ← x + y`, f32.

use crate::device::*;
use crate::kernel;

kernel! {
    /// `x[i] ← x[i] + y[i]`.
    ///
    /// # Safety
    /// `x` and `y` hold `n` values.
    ///
    /// # Parameters
    /// - `x`: the residual stream, updated; `y`: the sublayer's output.
    ///
    /// # Thread mapping
    /// One thread per element (`gated_f32::elementwise_geometry`).
    ///
    /// # Tiling
    /// None.
    pub unsafe fn add_f32(x: Out<f32>, y: In<f32>, n: u32) {
        let i = global_thread_x();
        if i < n {
            x.set(i as usize, x.get(i as usize) + y.get(i as usize));
        }
    }
}

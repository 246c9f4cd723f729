//! The gated MLP activation: `gate ← act(gate) · up` (relu² or SiLU), f32.

use crate::device::*;
use crate::kernel;
use crate::launch::LaunchConfig;

/// `act` of `gated_f32`: relu(x)².
pub const ACT_RELU2: u32 = 0;
/// `act` of `gated_f32`: x · sigmoid(x).
pub const ACT_SILU: u32 = 1;

/// One thread per element, 256 per block.
pub const fn elementwise_geometry(n: usize) -> LaunchConfig {
    LaunchConfig::cover(n, 256)
}

kernel! {
    /// `gate[i] ← act(gate[i]) · up[i]`.
    ///
    /// # Safety
    /// `gate` and `up` hold `n` values; `act` is [`ACT_RELU2`] or [`ACT_SILU`] (others trap).
    ///
    /// # Parameters
    /// - `gate`: the gate projection, overwritten; `up`: the up projection.
    ///
    /// # Thread mapping
    /// One thread per element.
    ///
    /// # Tiling
    /// None.
    pub unsafe fn gated_f32(gate: Out<f32>, up: In<f32>, n: u32, act: u32) {
        let i = global_thread_x();
        if i >= n {
            return;
        }
        gate.set(i as usize, gated_value(gate.get(i as usize), up.get(i as usize), act));
    }
}

/// `act(g) · u` for `act` one of [`ACT_RELU2`], [`ACT_SILU`] (anything else traps).
#[inline(always)]
pub(crate) fn gated_value(g: f32, u: f32, act: u32) -> f32 {
    let a = match act {
        ACT_RELU2 => {
            let r = if g > 0.0 { g } else { 0.0 };
            r * r
        }
        ACT_SILU => g / (1.0 + exp_f32(-g)),
        _ => trap(),
    };
    a * u
}

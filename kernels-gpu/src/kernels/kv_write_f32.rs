//! Appends new key or value rows to a KV cache.

use crate::device::*;
use crate::kernel;

kernel! {
    /// `cache[kh][pos0 + r][d] = x[r][kh][d]`: new rows into the head-major cache.
    ///
    /// # Safety
    /// `x` holds `rows · kv_heads · head_dim`; `cache` holds `kv_heads · context · head_dim`;
    /// `pos0 + rows ≤ context`.
    ///
    /// # Parameters
    /// - `x`: keys or values of the new rows; `cache`: the layer's cache.
    ///
    /// # Thread mapping
    /// One thread per element of `x` (`gated_f32::elementwise_geometry`).
    ///
    /// # Tiling
    /// None.
    pub unsafe fn kv_write_f32(x: In<f32>, cache: Out<f32>, rows: u32, kv_heads: u32, head_dim: u32, pos0: u32, context: u32) {
        let i = global_thread_x();
        if i >= rows * kv_heads * head_dim {
            return;
        }
        let d = i % head_dim;
        let kh = (i / head_dim) % kv_heads;
        let r = i / (head_dim * kv_heads);
        cache.set(((kh * context + pos0 + r) * head_dim + d) as usize, x.get(i as usize));
    }
}

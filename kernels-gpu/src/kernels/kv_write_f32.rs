//! Writes new key or value rows into a slotted KV cache.

use crate::device::*;
use crate::kernel;

/// Checks a KV write (or the cache side of an attention request): `x` of
/// `rows × kv_heads × head_dim`, `slots`/`positions` of `rows`, a cache of
/// whole `kv_heads × context × head_dim` slots, and the largest slot and
/// position inside it. Returns the number of slots.
#[cfg(not(target_arch = "nvptx64"))]
#[allow(clippy::too_many_arguments)]
pub fn kv_cache_check(
    rows: usize,
    kv_heads: usize,
    head_dim: usize,
    context: usize,
    places: usize,
    max_slot: usize,
    max_pos: usize,
    cache: usize,
) -> Result<usize, String> {
    let per_slot = kv_heads * context * head_dim;
    if rows == 0 || per_slot == 0 || !cache.is_multiple_of(per_slot) || cache == 0 {
        return Err(format!("a cache of {cache} values is not whole slots of {kv_heads}×{context}×{head_dim}"));
    }
    if cache > u32::MAX as usize {
        return Err(format!("a cache of {cache} values is past 32-bit indexing"));
    }
    crate::launch::check_len("row slots and positions", places, rows)?;
    let slots = cache / per_slot;
    if max_slot >= slots {
        return Err(format!("slot {max_slot} is outside the cache's {slots} slots"));
    }
    if max_pos >= context {
        return Err(format!("position {max_pos} is outside the cache's context of {context}"));
    }
    Ok(slots)
}

kernel! {
    /// `cache[slot[r]][kh][pos[r]][d] = x[r][kh][d]`: new rows into the
    /// head-major cache of their sequence's slot.
    ///
    /// # Safety
    /// `x` holds `rows · kv_heads · head_dim`; `slot` and `pos` hold `rows`;
    /// `cache` holds `slots · kv_heads · context · head_dim` with every
    /// `slot[r] < slots` and `pos[r] < context` (see [`kv_cache_check`]).
    ///
    /// # Parameters
    /// - `x`: keys or values of the new rows; `cache`: the layer's cache.
    /// - `slot`, `pos`: each row's cache slot and position.
    ///
    /// # Thread mapping
    /// One thread per element of `x` (`gated_f32::elementwise_geometry`).
    ///
    /// # Tiling
    /// None.
    pub unsafe fn kv_write_f32(
        x: In<f32>, cache: Out<f32>, slot: In<u32>, pos: In<u32>, rows: u32, kv_heads: u32, head_dim: u32, context: u32
    ) {
        let i = global_thread_x();
        if i >= rows * kv_heads * head_dim {
            return;
        }
        let d = i % head_dim;
        let kh = (i / head_dim) % kv_heads;
        let r = (i / (head_dim * kv_heads)) as usize;
        let at = ((slot.get(r) * kv_heads + kh) * context + pos.get(r)) * head_dim + d;
        cache.set(at as usize, x.get(i as usize));
    }
}

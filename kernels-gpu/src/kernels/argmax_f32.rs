//! The index of each row's largest value: greedy sampling on the device, so a
//! decode step downloads one id per sequence instead of the vocabulary's logits.

use crate::device::*;
use crate::kernel;
use crate::launch::LaunchConfig;

/// Threads per block of `argmax_f32`.
pub const ARGMAX_THREADS: u32 = 256;

/// One block per row (blocks stride over rows); 32 shared `u64` scratch words.
pub const fn argmax_geometry(rows: usize, max_blocks: u32) -> LaunchConfig {
    LaunchConfig::per_item(rows as u64, max_blocks, ARGMAX_THREADS, 32 * 8)
}

/// Checks an argmax request: `x` of `rows × cols`, one output per row.
#[cfg(not(target_arch = "nvptx64"))]
pub fn argmax_check(rows: usize, cols: usize, x: usize, out: usize) -> Result<(), String> {
    if rows == 0 || cols == 0 || cols > u32::MAX as usize {
        return Err("empty rows, or rows longer than 32-bit indexing".into());
    }
    crate::launch::check_len("input", x, rows * cols)?;
    crate::launch::check_len("output", out, rows)
}

/// A `u64` whose unsigned order is "larger value first, then smaller index":
/// the value's bits made monotonic (negatives flipped, positives with the sign
/// bit set) above the complemented index; NaN maps to 0 and never wins.
#[inline(always)]
pub fn argmax_key(v: f32, index: u32) -> u64 {
    let b = if v == 0.0 { 0 } else { v.to_bits() }; // −0 ties with +0, as in torch
    let ordered = if v.is_nan() {
        0
    } else if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    };
    ((ordered as u64) << 32) | (u32::MAX - index) as u64
}

/// The index a key holds.
#[inline(always)]
pub fn argmax_index(key: u64) -> u32 {
    u32::MAX - key as u32
}

#[inline(always)]
fn warp_max_u64(mut k: u64) -> u64 {
    let mut mask = 16;
    while mask > 0 {
        let hi = shfl_xor((k >> 32) as u32, mask);
        let lo = shfl_xor(k as u32, mask);
        let other = ((hi as u64) << 32) | lo as u64;
        k = if other > k { other } else { k };
        mask /= 2;
    }
    k
}

kernel! {
    /// `out[r] = argmax(x[r])`: the first index of the largest value (NaN never wins; a
    /// row of NaNs gives 0), as `torch.argmax` on finite logits.
    ///
    /// # Safety
    /// `x` holds `rows · cols` values and `out` holds `rows`; blocks of a
    /// multiple of 32 threads with 256 bytes of dynamic shared memory (see [`argmax_geometry`]).
    ///
    /// # Parameters
    /// - `x`: the logits, `rows × cols`; `out`: one index per row.
    ///
    /// # Thread mapping
    /// One block per row (blocks stride over rows); threads stride over columns.
    ///
    /// # Tiling
    /// None: each thread keeps its best key ([`argmax_key`]), then a warp and
    /// a block maximum over the keys.
    pub unsafe fn argmax_f32(x: In<f32>, out: Out<u32>, rows: u32, cols: u32) {
        let (t, nt) = (thread_idx_x(), block_dim_x());
        let mut row = block_idx_x();
        while row < rows {
            let base = row as usize * cols as usize;
            let mut best = 0u64;
            let mut k = t;
            while k < cols {
                let key = argmax_key(x.get(base + k as usize), k);
                best = if key > best { key } else { best };
                k += nt;
            }
            let w = warp_max_u64(best);
            if lane_id() == 0 {
                shared_store_u64(warp_id(), w);
            }
            sync_threads();
            let warps = nt.div_ceil(32);
            let mine = if lane_id() < warps { shared_load_u64(lane_id()) } else { 0 };
            let total = warp_max_u64(mine);
            if t == 0 {
                out.set(row as usize, argmax_index(total));
            }
            sync_threads();
            row += grid_dim_x();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_values_then_first_index() {
        let k = argmax_key;
        assert!(k(1.0, 5) > k(0.5, 0));
        assert!(k(-0.5, 9) > k(-1.0, 0));
        assert_eq!(k(0.0, 3), k(-0.0, 3));
        assert!(k(0.0, 3) > k(-1e-30, 0) && k(1e-30, 9) > k(0.0, 0));
        assert!(k(2.0, 1) > k(2.0, 7), "ties go to the smaller index");
        assert!(k(f32::NEG_INFINITY, 4) > k(f32::NAN, 0), "NaN never wins");
        assert!(k(f32::INFINITY, 4) > k(f32::MAX, 0));
        assert_eq!(argmax_index(k(3.5, 123_456)), 123_456);
    }
}

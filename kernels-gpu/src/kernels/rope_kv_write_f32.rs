//! The step between q / k / v and attention, fused: RoPE on the query and key
//! rows, and the new key and value rows written into the KV cache.

use crate::device::*;
use crate::kernel;
use crate::launch::LaunchConfig;

/// One thread per rotated (query or key) pair and per value element.
pub const fn rope_kv_write_geometry(rows: usize, heads: usize, kv_heads: usize, head_dim: usize) -> LaunchConfig {
    let half = head_dim / 2;
    LaunchConfig::cover(rows * heads * half + rows * kv_heads * half + rows * kv_heads * head_dim, 256)
}

/// Rotates the pair `(p, p + half)` of the row at `base` of `x` by table entry `t`;
/// returns the rotated pair (also stored back).
///
/// # Safety
/// `base + p + half` is within `x`; `t` within the tables.
#[inline(always)]
unsafe fn rotate_pair(
    x: Out<f32>,
    cos: In<f32>,
    sin: In<f32>,
    base: usize,
    p: usize,
    half: usize,
    t: usize,
) -> (f32, f32) {
    // SAFETY: the caller's contract.
    unsafe {
        let (c, s) = (cos.get(t), sin.get(t));
        let (a, b) = (x.get(base + p), x.get(base + p + half));
        let (ra, rb) = (a * c - b * s, b * c + a * s);
        x.set(base + p, ra);
        x.set(base + p + half, rb);
        (ra, rb)
    }
}

kernel! {
    /// `rope_f32` on `q` (`rows × heads × head_dim`) and on `k` (`rows ×
    /// kv_heads × head_dim`), both in place, then `kv_write_f32` of the
    /// rotated `k` into `k_cache` and of `v` into `v_cache`: the same values
    /// as those four launches, in one.
    ///
    /// # Safety
    /// As `rope_f32` for `q` and `k` (tables reaching every row's position)
    /// and as `kv_write_f32` for the two caches (every row's slot and position
    /// inside them); `v` holds as many values as `k`; `head_dim` is even;
    /// launched with [`rope_kv_write_geometry`].
    ///
    /// # Parameters
    /// - `q`, `k`: the projected queries and keys, rotated in place; `v`: the values.
    /// - `k_cache`, `v_cache`: one layer's cache (`slots × kv_heads × context × head_dim`).
    /// - `cos`, `sin`: the RoPE tables (`position × head_dim / 2`).
    /// - `slot`, `pos`: each row's cache slot and position.
    ///
    /// # Thread mapping
    /// Threads `0 … rows·heads·half` rotate a query pair; the next
    /// `rows·kv_heads·half` rotate a key pair and write it to the cache; the
    /// last `rows·kv_heads·head_dim` copy a value element to the cache.
    ///
    /// # Tiling
    /// None: elementwise.
    pub unsafe fn rope_kv_write_f32(
        q: Out<f32>, k: Out<f32>, v: In<f32>, k_cache: Out<f32>, v_cache: Out<f32>, cos: In<f32>, sin: In<f32>,
        slot: In<u32>, pos: In<u32>, rows: u32, heads: u32, kv_heads: u32, head_dim: u32, context: u32
    ) {
        let half = head_dim / 2;
        let (q_pairs, k_pairs) = (rows * heads * half, rows * kv_heads * half);
        let mut i = global_thread_x();
        if i < q_pairs {
            let (rh, p) = (i / half, i % half);
            let t = (pos.get((rh / heads) as usize) * half + p) as usize;
            rotate_pair(q, cos, sin, (rh * head_dim) as usize, p as usize, half as usize, t);
            return;
        }
        i -= q_pairs;
        if i < k_pairs {
            let (rh, p) = (i / half, i % half);
            let (r, kh) = ((rh / kv_heads) as usize, rh % kv_heads);
            let t = (pos.get(r) * half + p) as usize;
            let (a, b) = rotate_pair(k, cos, sin, (rh * head_dim) as usize, p as usize, half as usize, t);
            let at = (((slot.get(r) * kv_heads + kh) * context + pos.get(r)) * head_dim + p) as usize;
            k_cache.set(at, a);
            k_cache.set(at + half as usize, b);
            return;
        }
        i -= k_pairs;
        if i < rows * kv_heads * head_dim {
            let d = i % head_dim;
            let kh = (i / head_dim) % kv_heads;
            let r = (i / (head_dim * kv_heads)) as usize;
            let at = ((slot.get(r) * kv_heads + kh) * context + pos.get(r)) * head_dim + d;
            v_cache.set(at as usize, v.get(i as usize));
        }
    }
}

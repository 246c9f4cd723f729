//! Causal attention of a prompt chunk against the KV cache (prefill), f32:
//! key and value tiles in shared memory, read by 16 query rows at once.

use crate::device::*;
use crate::kernel;
use crate::launch::LaunchConfig;

/// Query rows per block (4 per warp).
pub const ATTENTION_PREFILL_ROWS: u32 = 16;
/// Positions per key / value tile: one per lane.
pub const ATTENTION_PREFILL_TILE: u32 = 32;
/// Threads per block: 4 warps.
pub const ATTENTION_PREFILL_THREADS: u32 = 128;
/// The largest head dimension (each lane keeps 8 output elements of a row).
pub const ATTENTION_PREFILL_MAX_HEAD_DIM: usize = 256;
const ROWS_PER_WARP: u32 = ATTENTION_PREFILL_ROWS / (ATTENTION_PREFILL_THREADS / 32);
const _: () = assert!(ROWS_PER_WARP == 4, "update the unrolled! lists over a warp's rows");
const _: () = assert!(ATTENTION_PREFILL_MAX_HEAD_DIM == 8 * 32, "update the unrolled! lists over a lane's outputs");

/// Whether `attention` runs this kernel: more query rows than one block's
/// (a prompt chunk, not a decode step) and a head dimension it holds.
pub const fn attention_uses_prefill(rows: usize, head_dim: usize) -> bool {
    rows > ATTENTION_PREFILL_ROWS as usize && head_dim <= ATTENTION_PREFILL_MAX_HEAD_DIM
}

/// Shared memory of a block: the key tile (rows padded by one word, so the
/// lanes' reads of different positions fall in different banks), the value
/// tile and the block's query rows.
pub const fn attention_prefill_shared_bytes(head_dim: usize) -> u32 {
    let tile = ATTENTION_PREFILL_TILE as usize;
    ((tile * (head_dim + 1) + tile * head_dim + ATTENTION_PREFILL_ROWS as usize * head_dim) * 4) as u32
}

/// One block per 16 query rows (x) and head (y).
pub const fn attention_prefill_geometry(rows: usize, heads: usize, head_dim: usize) -> LaunchConfig {
    LaunchConfig {
        grid: [(rows as u32).div_ceil(ATTENTION_PREFILL_ROWS), heads as u32, 1],
        block: [ATTENTION_PREFILL_THREADS, 1, 1],
        shared_bytes: attention_prefill_shared_bytes(head_dim),
    }
}

kernel! {
    /// `out = softmax(q · kᵀ · scale, causal) · v` for each query row and head,
    /// as `attention_f32` (row `r` sees positions `0 ..= pos[r]` of cache slot
    /// `slot[r]`; query head `h` reads KV head `h / (heads / kv_heads)`), with
    /// an online softmax over tiles of 32 positions.
    ///
    /// # Safety
    /// `q` and `out` hold `rows · heads · head_dim`; `slot` and `pos` hold `rows`;
    /// `k` and `v` hold `slots · kv_heads · context · head_dim` (slot, head, position)
    /// with every `slot[r] < slots` and `pos[r] < context`; `head_dim ≤ 256`;
    /// launched with [`attention_prefill_geometry`].
    ///
    /// # Parameters
    /// - `q`: the rotated queries; `k`, `v`: the cache; `out`: the attention output.
    /// - `slot`, `pos`: each row's cache slot and position.
    /// - `scale`: `head_dim^-0.5`.
    ///
    /// # Thread mapping
    /// Block `(x, h)`: query rows `16x … 16x + 15`, head `h`; warp `w` owns rows
    /// `16x + 4w … 16x + 4w + 3`. For each tile, lane `l` scores position
    /// `start + l` against a row, and accumulates output elements `l, l + 32, …`
    /// of it (the weights passed by shuffles).
    ///
    /// # Tiling
    /// The block's query rows sit in shared memory. When all 16 rows belong to
    /// one cache slot (a prompt chunk), each key / value tile is loaded into
    /// shared memory once, coalesced, and read by all 16 rows: the cache is read
    /// from global memory once per 16 rows instead of once per row. Otherwise
    /// (rows of several sequences) each row reads its own slot's keys and values
    /// from global memory. Per row each lane keeps the running maximum, sum and
    /// its output elements in registers; the softmax is in f32.
    pub unsafe fn attention_prefill_f32(
        q: In<f32>, k: In<f32>, v: In<f32>, out: Out<f32>, slot: In<u32>, pos: In<u32>, rows: u32, heads: u32,
        kv_heads: u32, head_dim: u32, context: u32, scale: f32
    ) {
        let (t, nt, lane, warp) = (thread_idx_x(), block_dim_x(), lane_id(), warp_id());
        let (r0, h) = (block_idx_x() * ATTENTION_PREFILL_ROWS, block_idx_y());
        let kvh = h / (heads / kv_heads);
        let hd = head_dim;
        let block_rows = if rows - r0 < ATTENTION_PREFILL_ROWS { rows - r0 } else { ATTENTION_PREFILL_ROWS };
        // Block-uniform facts (every thread reads the same values): the first
        // row's slot, whether every row shares it, and the longest row.
        let first_slot = slot.get(r0 as usize);
        let mut shared_kv = true;
        let mut longest = 0;
        for i in 0..block_rows {
            let r = (r0 + i) as usize;
            shared_kv &= slot.get(r) == first_slot;
            let len = pos.get(r) + 1;
            longest = if len > longest { len } else { longest };
        }
        let (k_tile, v_tile) = (0, ATTENTION_PREFILL_TILE * (hd + 1));
        let q_rows = v_tile + ATTENTION_PREFILL_TILE * hd;
        let mut i = t;
        while i < block_rows * hd {
            let (rr, d) = (i / hd, i % hd);
            shared_store_f32(q_rows + i, q.get((((r0 + rr) * heads + h) * hd + d) as usize));
            i += nt;
        }
        sync_threads();
        let tile_base = ((first_slot * kv_heads + kvh) * context * hd) as usize;
        let mut m = [f32::NEG_INFINITY; ROWS_PER_WARP as usize];
        let mut l = [0.0f32; ROWS_PER_WARP as usize];
        let mut acc = [[0.0f32; 8]; ROWS_PER_WARP as usize];
        let mut start = 0;
        while start < longest {
            let n = if longest - start < ATTENTION_PREFILL_TILE { longest - start } else { ATTENTION_PREFILL_TILE };
            if shared_kv {
                // The previous tile's readers are done before it is overwritten.
                sync_threads();
                let base = tile_base + (start * hd) as usize;
                let mut i = t;
                while i < n * hd {
                    let (p, d) = (i / hd, i % hd);
                    shared_store_f32(k_tile + p * (hd + 1) + d, k.get(base + i as usize));
                    shared_store_f32(v_tile + i, v.get(base + i as usize));
                    i += nt;
                }
                sync_threads();
            }
            crate::unrolled!(ri in [0, 1, 2, 3] => {
                let rr = warp * ROWS_PER_WARP + ri as u32;
                let r = r0 + rr;
                let len = if rr < block_rows { pos.get(r as usize) + 1 } else { 0 };
                if start < len {
                    let cb = ((slot.get(r as usize) * kv_heads + kvh) * context * hd) as usize;
                    let p = start + lane;
                    let valid = p < len;
                    // Positions < len < start + n: inside the loaded tile.
                    let mut s = f32::NEG_INFINITY;
                    if valid {
                        let mut dot = 0.0f32;
                        for d in 0..hd {
                            let key = if shared_kv {
                                shared_load_f32(k_tile + lane * (hd + 1) + d)
                            } else {
                                k.get(cb + (p * hd + d) as usize)
                            };
                            dot = fma(shared_load_f32(q_rows + rr * hd + d), key, dot);
                        }
                        s = dot * scale;
                    }
                    // Lane 0's position is valid (start < len): the maximum is finite.
                    let tile_max = warp_max_f32(s);
                    let m_new = if tile_max > m[ri] { tile_max } else { m[ri] };
                    let alpha = exp_f32(m[ri] - m_new);
                    let w = if valid { exp_f32(s - m_new) } else { 0.0 };
                    l[ri] = l[ri] * alpha + warp_sum_f32(w);
                    m[ri] = m_new;
                    crate::unrolled!(j in [0, 1, 2, 3, 4, 5, 6, 7] => {
                        acc[ri][j] *= alpha;
                    });
                    let valid_n = if len - start < ATTENTION_PREFILL_TILE { len - start } else { ATTENTION_PREFILL_TILE };
                    for jj in 0..valid_n {
                        let wj = f32::from_bits(shfl_idx(w.to_bits(), jj));
                        crate::unrolled!(j in [0, 1, 2, 3, 4, 5, 6, 7] => {
                            let d = lane + 32 * j as u32;
                            if d < hd {
                                let value = if shared_kv {
                                    shared_load_f32(v_tile + jj * hd + d)
                                } else {
                                    v.get(cb + ((start + jj) * hd + d) as usize)
                                };
                                acc[ri][j] = fma(wj, value, acc[ri][j]);
                            }
                        });
                    }
                }
            });
            start += ATTENTION_PREFILL_TILE;
        }
        crate::unrolled!(ri in [0, 1, 2, 3] => {
            let rr = warp * ROWS_PER_WARP + ri as u32;
            if rr < block_rows {
                let ob = (((r0 + rr) * heads + h) * hd) as usize;
                crate::unrolled!(j in [0, 1, 2, 3, 4, 5, 6, 7] => {
                    let d = lane + 32 * j as u32;
                    if d < hd {
                        out.set(ob + d as usize, acc[ri][j] / l[ri]);
                    }
                });
            }
        });
    }
}

//! TriHash (Curl-P-81) proof-of-work search, bit-sliced.

use crate::curl::{
    self, GPU_THREADS, GPU_WORDS, HASH_TRITS, LANE_TRITS, LANES_PER_BATCH, NONCE_TRITS, STATE_TRITS, broadcast,
    gpu_rounds, gpu_word, lane_trit_words, slot,
};
use crate::device::{
    In, Out, block_dim_x, block_idx_x, grid_dim_x, shared_load_u64, shared_store_u64, sync_threads, thread_idx_x, trap,
};
use crate::kernel;

kernel! {
    /// Tries nonce indices `first_batch·128 .. (first_batch + batches)·128`
    /// (the canonical enumeration of [`crate::curl`]) and records every one
    /// whose hash ends in at least `mwm` zero trits.
    ///
    /// # Safety
    /// `base` holds 729 trits; `hits` holds `1 + capacity` words with `hits[0]`
    /// zeroed by the caller; launched with 243 threads per block (anything
    /// else traps) and `curl::GPU_SHARED_BYTES` of dynamic shared memory;
    /// `batches · 128 < 2³²`; `mwm ≤ 243`.
    ///
    /// # Parameters
    /// - `base`: the state to start from, natural order: trits `0..162` are the
    ///   last block of the transaction before its nonce, `243..729` the
    ///   mid-state after absorbing the rest; `162..243` (the nonce) is ignored.
    /// - `first_batch`, `batches`: the range of 128-nonce batches.
    /// - `mwm`: trailing zero trits required.
    /// - `hits`: `hits[0]` counts the hits; `hits[1 + k]` is the offset
    ///   `v − first_batch·128` of the k-th hit recorded (up to `capacity`, in no order).
    ///
    /// # Thread mapping
    /// One block (243 threads, 3 trits each) per batch, blocks striding over
    /// batches; bit `b` of sliced word `w` is lane `32w + b`.
    ///
    /// # Tiling
    /// The whole sliced state of a batch (4 words × 729 trits × lo/hi, twice
    /// for ping-pong) lives in shared memory in slot order; one barrier per round.
    pub unsafe fn trihash_pow(base: In<i8>, first_batch: u64, batches: u32, mwm: u32, hits: Out<u32>, capacity: u32) {
        if block_dim_x() as usize != GPU_THREADS {
            trap();
        }
        let t = thread_idx_x() as usize;
        let mut local = block_idx_x();
        while local < batches {
            let batch = first_batch + local as u64;
            let mut j = t;
            while j < STATE_TRITS {
                let s = slot(j) as u32;
                for w in 0..GPU_WORDS {
                    let (lo, hi) = if !(HASH_TRITS - NONCE_TRITS..HASH_TRITS).contains(&j) {
                        broadcast(base.get(j))
                    } else if j - (HASH_TRITS - NONCE_TRITS) < LANE_TRITS {
                        lane_trit_words(w, j - (HASH_TRITS - NONCE_TRITS))
                    } else {
                        broadcast(curl::balanced_digit(batch, j - (HASH_TRITS - NONCE_TRITS) - LANE_TRITS))
                    };
                    shared_store_u64(gpu_word(0, w as u32, s), lo as u64 | (hi as u64) << 32);
                }
                j += GPU_THREADS;
            }
            sync_threads();
            gpu_rounds(t as u32);
            if t < GPU_WORDS {
                let mut zero = !0u32;
                for j in HASH_TRITS - mwm as usize..HASH_TRITS {
                    let v = shared_load_u64(gpu_word(1, t as u32, slot(j) as u32));
                    zero &= v as u32 & (v >> 32) as u32;
                }
                while zero != 0 {
                    let b = zero.trailing_zeros();
                    zero &= zero - 1;
                    let offset = local * LANES_PER_BATCH as u32 + 32 * t as u32 + b;
                    let k = hits.atomic_add(0, 1);
                    if k < capacity {
                        hits.set(1 + k as usize, offset);
                    }
                }
            }
            local += grid_dim_x();
        }
    }
}

//! TriHash (Curl-P-81) of many independent 243-trit messages, bit-sliced.

use crate::curl::{GPU_THREADS, GPU_WORDS, HASH_TRITS, LANES_PER_BATCH, STATE_TRITS, gpu_rounds, gpu_word, slot};
use crate::device::{
    In, Out, block_dim_x, block_idx_x, grid_dim_x, shared_load_u64, shared_store_u64, sync_threads, thread_idx_x, trap,
};
use crate::kernel;

kernel! {
    /// Hashes `count` messages of one 243-trit block each: absorb into a zero
    /// state, one transform, squeeze 243 trits.
    ///
    /// # Safety
    /// `messages` and `digests` hold `count · 243` trits; launched with 243
    /// threads per block (anything else traps) and `curl::GPU_SHARED_BYTES`
    /// of dynamic shared memory.
    ///
    /// # Parameters
    /// - `messages`: `count × 243` trits, one message per row.
    /// - `digests`: `count × 243` trits out.
    /// - `count`: number of messages.
    ///
    /// # Thread mapping
    /// One block (243 threads) per group of 128 messages, striding over
    /// groups; message `128g + 32w + b` is bit `b` of sliced word `w`.
    ///
    /// # Tiling
    /// As `trihash_pow`: the sliced state in shared memory, one barrier per round.
    pub unsafe fn trihash_batch(messages: In<i8>, digests: Out<i8>, count: u32) {
        if block_dim_x() as usize != GPU_THREADS {
            trap();
        }
        let t = thread_idx_x() as usize;
        let groups = (count as usize).div_ceil(LANES_PER_BATCH);
        let mut group = block_idx_x() as usize;
        while group < groups {
            let first = group * LANES_PER_BATCH;
            let mut j = t;
            while j < STATE_TRITS {
                for w in 0..GPU_WORDS {
                    let (mut lo, mut hi) = (!0u32, !0u32);
                    if j < HASH_TRITS {
                        for b in 0..32 {
                            let m = first + 32 * w + b;
                            if m < count as usize {
                                let trit = messages.get(m * HASH_TRITS + j);
                                lo &= !(((trit == 1) as u32) << b);
                                hi &= !(((trit == -1) as u32) << b);
                            }
                        }
                    }
                    shared_store_u64(gpu_word(0, w as u32, slot(j) as u32), lo as u64 | (hi as u64) << 32);
                }
                j += GPU_THREADS;
            }
            sync_threads();
            gpu_rounds(t as u32);
            let mut j = t;
            while j < HASH_TRITS {
                for w in 0..GPU_WORDS {
                    let v = shared_load_u64(gpu_word(1, w as u32, slot(j) as u32));
                    let (lo, hi) = (v as u32, (v >> 32) as u32);
                    for b in 0..32 {
                        let m = first + 32 * w + b;
                        if m < count as usize {
                            let trit = ((hi >> b) & 1) as i8 - ((lo >> b) & 1) as i8;
                            digests.set(m * HASH_TRITS + j, trit);
                        }
                    }
                }
                j += GPU_THREADS;
            }
            // The next group's initialisation overwrites buffer 0, which nobody
            // reads any more; buffer 1 is rewritten only after its barrier.
            group += grid_dim_x() as usize;
        }
    }
}

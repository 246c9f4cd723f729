//! # Curl-P-81 (TriHash) pieces shared by the kernels and the host
//!
//! The definition: a 729-trit state; a transform of 81 rounds, each
//! `new[i] = T[old[idx[i]] + 4·old[idx[i+1]] + 5]` with
//! `T = [1, 0, −1, 2, 1, −1, 0, 2, −1, 1, 0]` and `idx[i] = 364·i mod 729`.
//!
//! ## Bit-sliced encoding
//! A trit over many independent states is a pair of machine words `(lo, hi)`,
//! one bit lane per state: −1 = (1, 0), 0 = (1, 1), +1 = (0, 1). In that
//! encoding one transform step is [`sliced_step`] (seven logic operations,
//! checked against `T` over all nine inputs in the tests).
//!
//! ## Slot order on the GPU
//! The GPU keeps the state in shared memory in *slot* order: slot `s` holds
//! natural trit `364·s mod 729`. Then both inputs of new trit `i` sit in
//! consecutive slots `i` and `i + 1` (conflict-free loads across a warp), and
//! the output goes to slot [`slot`]`(i) = 727·i mod 729` (727 = 364⁻¹ mod 729).
//!
//! ## Canonical nonce enumeration
//! Proof-of-work nonce index `v` (a `u64`) names an 81-trit nonce: with
//! `batch = v / 128` and `lane = v % 128`, nonce trit `p < 5` is digit `p` of
//! `lane` in base 3, minus one, and nonce trit `p ≥ 5` is balanced-ternary digit
//! `p − 5` of `batch`. A GPU block (or a CPU sliced unit) tries 128 lanes of one
//! batch at once; every backend enumerates the same nonces, so the sets of
//! nonces they find in a range must be identical.

use core::ops::{BitAnd, BitOr, BitXor, Not};

/// Trits in the state.
pub const STATE_TRITS: usize = 729;
/// Trits absorbed or squeezed per block (the rate).
pub const HASH_TRITS: usize = 243;
/// Rounds of the transform.
pub const ROUNDS: usize = 81;
/// Nonce trits at the end of a transaction.
pub const NONCE_TRITS: usize = 81;
/// Nonces tried together by one GPU block or CPU sliced unit's batch.
pub const LANES_PER_BATCH: usize = 128;
/// Leading nonce trits that encode the lane (3⁵ = 243 ≥ 128).
pub const LANE_TRITS: usize = 5;
/// 32-bit words per sliced trit on the GPU (128 lanes).
pub const GPU_WORDS: usize = LANES_PER_BATCH / 32;
/// Threads per GPU block: three trits each.
pub const GPU_THREADS: usize = HASH_TRITS;
/// The truth table `T`, indexed by `a + 4b + 5`.
pub const TRUTH_TABLE: [i8; 11] = [1, 0, -1, 2, 1, -1, 0, 2, -1, 1, 0];

/// The slot (GPU shared-memory position) of natural trit `j`.
#[inline(always)]
pub const fn slot(j: usize) -> usize {
    (727 * j) % STATE_TRITS
}

/// One bit-sliced transform step: the new trit from `a = old[idx[i]]` and `b = old[idx[i+1]]`.
#[inline(always)]
pub fn sliced_step<T>(a_lo: T, a_hi: T, b_lo: T, b_hi: T) -> (T, T)
where
    T: Copy + BitAnd<Output = T> + BitOr<Output = T> + BitXor<Output = T> + Not<Output = T>,
{
    let delta = (a_lo | !b_hi) & (b_lo ^ a_hi);
    (!delta, (a_lo ^ b_hi) | delta)
}

/// The all-lanes `(lo, hi)` words of one trit.
#[inline(always)]
pub const fn broadcast(trit: i8) -> (u32, u32) {
    ((if trit == 1 { 0 } else { !0 }), (if trit == -1 { 0 } else { !0 }))
}

/// Digit `k` (from the least significant) of `n` in balanced ternary.
#[inline(always)]
pub fn balanced_digit(mut n: u64, k: usize) -> i8 {
    let mut i = 0;
    loop {
        let r = (n % 3) as i8;
        let trit = if r == 2 { -1 } else { r };
        if i == k {
            return trit;
        }
        n = n / 3 + (r == 2) as u64;
        i += 1;
        if n == 0 {
            return 0;
        }
    }
}

/// Nonce trit `p` of nonce index `v` (see the module docs).
#[inline(always)]
pub fn nonce_trit(v: u64, p: usize) -> i8 {
    let (batch, lane) = (v / LANES_PER_BATCH as u64, v % LANES_PER_BATCH as u64);
    if p < LANE_TRITS {
        let mut d = lane;
        for _ in 0..p {
            d /= 3;
        }
        (d % 3) as i8 - 1
    } else {
        balanced_digit(batch, p - LANE_TRITS)
    }
}

/// The sliced `(lo, hi)` words for lanes `32·w .. 32·w + 32` of nonce trit
/// `p < LANE_TRITS` (the lane-dependent trits).
#[inline(always)]
pub fn lane_trit_words(w: usize, p: usize) -> (u32, u32) {
    let (mut lo, mut hi) = (0u32, 0u32);
    for b in 0..32 {
        let t = nonce_trit((32 * w + b) as u64, p);
        lo |= ((t != 1) as u32) << b;
        hi |= ((t != -1) as u32) << b;
    }
    (lo, hi)
}

/// Index (in `u64` words) of slot `s`, sliced word `w`, ping-pong buffer `k`
/// of a block's TriHash state in dynamic shared memory.
#[inline(always)]
pub const fn gpu_word(k: u32, w: u32, s: u32) -> u32 {
    (k * GPU_WORDS as u32 + w) * STATE_TRITS as u32 + s
}

/// Runs the 81 rounds on a block's sliced state in shared memory.
///
/// The state starts in buffer 0 (slot order, `lo | hi << 32` per word, see
/// [`gpu_word`]) and ends in buffer 1 (81 is odd). Thread `t` of the 243
/// computes new trits `t`, `t + 243`, `t + 486`, reading slots `i`, `i + 1`
/// and writing slot [`slot`]`(i)`; those indices are computed once, before the
/// rounds, so the round loop is loads, logic and stores only. Every thread of
/// the block must call it (it contains barriers).
///
/// # Safety
/// The launch has [`GPU_SHARED_BYTES`] of dynamic shared memory, buffer 0 is
/// initialised and a barrier followed, and `thread < 243`.
#[inline(always)]
pub unsafe fn gpu_rounds(thread: u32) {
    let n = STATE_TRITS as u32;
    let indices = |k: u32| {
        let i = thread + k * GPU_THREADS as u32;
        (i, if i + 1 == n { 0 } else { i + 1 }, slot(i as usize) as u32)
    };
    // Three explicit trits (not a loop over an index array) keep the indices
    // in registers; a runtime-indexed array would live in local memory.
    let (t0, t1, t2) = (indices(0), indices(1), indices(2));
    for round in 0..ROUNDS as u32 {
        let (src, dst) = (round & 1, (round & 1) ^ 1);
        // SAFETY: forwarded from this function's contract.
        unsafe {
            gpu_trit(src, dst, t0);
            gpu_trit(src, dst, t1);
            gpu_trit(src, dst, t2);
        }
        crate::device::sync_threads();
    }
}

/// One new trit, all sliced words: reads slots `a`, `b` of buffer `src`,
/// writes slot `out` of buffer `dst`.
///
/// # Safety
/// As [`gpu_rounds`].
#[inline(always)]
unsafe fn gpu_trit(src: u32, dst: u32, (a, b, out): (u32, u32, u32)) {
    for w in 0..GPU_WORDS as u32 {
        // SAFETY: every index is below 2·GPU_WORDS·729 words, the launch's shared size.
        unsafe {
            let x = crate::device::shared_load_u64(gpu_word(src, w, a));
            let y = crate::device::shared_load_u64(gpu_word(src, w, b));
            let (lo, hi) = sliced_step(x as u32, (x >> 32) as u32, y as u32, (y >> 32) as u32);
            crate::device::shared_store_u64(gpu_word(dst, w, out), lo as u64 | (hi as u64) << 32);
        }
    }
}

/// Shared memory one TriHash block needs, bytes.
pub const GPU_SHARED_BYTES: usize = 2 * GPU_WORDS * STATE_TRITS * 8;

/// The TriHash kernels' launch: one 243-thread block per 128-lane batch, at
/// most `max_blocks` blocks striding over `batches`, the sliced state in
/// dynamic shared memory.
pub const fn trihash_geometry(batches: u64, max_blocks: u32) -> crate::launch::LaunchConfig {
    crate::launch::LaunchConfig::per_item(batches, max_blocks, GPU_THREADS as u32, GPU_SHARED_BYTES as u32)
}

/// Checks a proof-of-work search request (`trihash_pow`).
#[cfg(not(target_arch = "nvptx64"))]
pub fn trihash_pow_check(batches: u64, mwm: usize) -> Result<(), String> {
    if mwm > HASH_TRITS {
        return Err(format!("mwm {mwm} exceeds the 243 trits of a hash"));
    }
    if batches == 0 {
        return Err("nothing to search (0 batches)".into());
    }
    if batches * LANES_PER_BATCH as u64 > u32::MAX as u64 {
        return Err(format!("{batches} batches: the nonce offsets of one launch must fit 32 bits"));
    }
    Ok(())
}

/// Checks a batch-hash request (`trihash_batch`): `trits` of input and `out` of output.
#[cfg(not(target_arch = "nvptx64"))]
pub fn trihash_batch_check(trits: usize, out: usize) -> Result<(), String> {
    if trits == 0 || !trits.is_multiple_of(HASH_TRITS) {
        return Err(format!("{trits} trits: messages must be a non-empty whole number of 243-trit blocks"));
    }
    crate::launch::check_len("digests", out, trits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(t: i8) -> (u8, u8) {
        ((t != 1) as u8, (t != -1) as u8)
    }

    #[test]
    fn sliced_step_is_the_truth_table() {
        for a in -1i8..=1 {
            for b in -1i8..=1 {
                let ((al, ah), (bl, bh)) = (enc(a), enc(b));
                let (lo, hi) = sliced_step(al, ah, bl, bh);
                let want = TRUTH_TABLE[(a + 4 * b + 5) as usize];
                assert_eq!((lo & 1, hi & 1), enc(want), "a={a} b={b}");
            }
        }
    }

    #[test]
    fn slots_make_the_inputs_neighbours() {
        for s in 0..STATE_TRITS {
            assert_eq!(slot(364 * s % STATE_TRITS), s);
        }
    }

    #[test]
    fn balanced_digits_reconstruct_the_number() {
        for n in [0u64, 1, 2, 3, 4, 13, 14, 40, 41, 12345, u64::MAX] {
            let v: i128 = (0..42).map(|k| balanced_digit(n, k) as i128 * 3i128.pow(k as u32)).sum();
            assert_eq!(v, n as i128);
        }
    }

    #[test]
    fn nonce_indices_name_distinct_nonces() {
        let mut seen = std::collections::HashSet::new();
        for v in 0..2000u64 {
            let n: Vec<i8> = (0..NONCE_TRITS).map(|p| nonce_trit(v, p)).collect();
            assert!(seen.insert(n), "nonce {v} repeats");
        }
    }
}

//! # The AVX-512 VNNI GEMV of the CPU ternary matmul (decode, M ≤ 2)
//!
//! Decode reads every weight once, so the question is whether the arithmetic
//! keeps up with the memory. The AVX2 GEMV ([`super::avx2`]) spends about 21
//! instructions per 32 bytes of weights and row; on a 2-core Zen 5 EPYC it
//! ran a 2B-4T layer held in the L3 at 57 GB/s, no faster than the read
//! bandwidth of 50–70 GB/s measured beside it, so it was the arithmetic that
//! bounded decode. This path does a whole 256-weight block (one 512-bit load
//! of 16 words) in 12 instructions per row:
//!
//! - the activations are the AVX2 path's permuted blocks: extraction `j`
//!   (`(w >> 2j) & 0x03` in every byte) of a block's 16 words holds the codes
//!   of weights `16q + 4j + b` at byte `4q + b`, which is where the permuted
//!   activations put those weights, 64 contiguous bytes at `256·blk + 64j`;
//! - `vpdpbusd` multiplies the codes (unsigned) by the activations (signed)
//!   and sums each four products into 32-bit lanes, so no 16-bit stage and no
//!   widening are needed;
//! - [`ROWS`] weight rows share each activation load, and each row has two
//!   accumulators (even and odd extractions) so the chains of `vpdpbusd`
//!   never wait on each other's latency.
//!
//! The weights are prefetched [`PREFETCH_WORDS`] words ahead (short rows
//! defeat the hardware prefetcher), a task's first lines before its first
//! row starts. The `ROWS` rows of a group are contiguous, so each step
//! prefetches `ROWS` consecutive lines and the prefetches walk memory in
//! address order; a line per row at the same offset into each row (as the
//! AVX2 GEMV does) streamed a 2B-4T-sized stack of layers ~5 % slower
//! (8 alternated rounds on the Zen 5 EPYC, 2026-12-06).
//!
//! Bounds: a sum is at most `2 · 128 · K`, far inside i32.

use std::arch::x86_64::*;

use super::BLOCK;
use super::vnni::extract;

/// How far ahead of the current read the prefetches run, in words (8 KiB).
const PREFETCH_WORDS: usize = 2048;
/// Weight rows that share each activation load.
const ROWS: usize = super::GEMV_GROUP;
/// Words per block: one 512-bit load.
const BLOCK_WORDS: usize = BLOCK / 16;

/// The first [`PREFETCH_WORDS`] words of a task's rows, prefetched before its
/// first group starts (the in-loop prefetches run that far ahead of the reads).
pub(super) fn prefetch_task_start(task: &[u32]) {
    for line in task.chunks(16).take(PREFETCH_WORDS / 16) {
        // SAFETY: prefetch is a hint and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
    }
}

/// Σ code · a of a group's [`ROWS`] weight rows against the `m` (1 or 2)
/// permuted activation rows `acts[..m]`, for [`super::gemv_task`].
///
/// # Safety
/// The CPU has AVX-512 F/BW/VNNI; every activation row holds at least
/// `16 · rows[0].len()` bytes rounded up to a whole block.
#[inline]
pub(super) unsafe fn group_dots(rows: &[&[u32]; ROWS], acts: &[&[i8]; 2], m: usize) -> [[i32; 2]; ROWS] {
    // SAFETY: the caller's contract.
    unsafe { if m == 1 { gemv_rows::<1>(rows, &[acts[0]]).map(|d| [d[0], 0]) } else { gemv_rows::<2>(rows, acts) } }
}

/// The four permuted activation vectors of block `blk` of row `a`.
///
/// # Safety
/// The CPU has AVX-512 F; `a` holds at least `256 · (blk + 1)` bytes.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn block_acts(a: &[i8], blk: usize) -> [__m512i; 4] {
    // SAFETY: `256·blk + 64·3 + 64 ≤ a.len()` (the caller's contract).
    std::array::from_fn(|j| unsafe { _mm512_loadu_si512(a.as_ptr().add(BLOCK * blk + 64 * j).cast()) })
}

/// `acc[r] += Σ codes · a[r]` over one block, even extractions into
/// `acc[r][0]`, odd ones into `acc[r][1]`.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
fn block_dot<const R: usize>(acc: &mut [[__m512i; 2]; R], c: &[__m512i; 4], a: &[[__m512i; 4]; R]) {
    for (acc_r, a_r) in acc.iter_mut().zip(a) {
        acc_r[0] = _mm512_dpbusd_epi32(acc_r[0], c[0], a_r[0]);
        acc_r[1] = _mm512_dpbusd_epi32(acc_r[1], c[1], a_r[1]);
        acc_r[0] = _mm512_dpbusd_epi32(acc_r[0], c[2], a_r[2]);
        acc_r[1] = _mm512_dpbusd_epi32(acc_r[1], c[3], a_r[3]);
    }
}

/// Σ code · a for `ROWS` weight rows (all of one length) × `R` activation rows.
/// The rows are consecutive in memory from `rows[0]` on (only the prefetches,
/// hints, rely on it).
///
/// # Safety
/// The CPU has AVX-512 F/BW/VNNI; every activation row holds at least
/// `16 · rows[0].len()` bytes rounded up to a whole block.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn gemv_rows<const R: usize>(rows: &[&[u32]; ROWS], acts: &[&[i8]; R]) -> [[i32; R]; ROWS] {
    let words = rows[0].len();
    let full = words / BLOCK_WORDS;
    let mut acc = [[[_mm512_setzero_si512(); 2]; R]; ROWS];
    for blk in 0..full {
        // SAFETY: block `blk` lies inside the padded activation rows (the contract).
        let a: [[__m512i; 4]; R] = std::array::from_fn(|r| unsafe { block_acts(acts[r], blk) });
        for (i, (acc_i, row)) in acc.iter_mut().zip(rows).enumerate() {
            // The group's rows are contiguous: its lines are prefetched in
            // address order, `ROWS` a step (a hint: it never faults, so the
            // address may run past the rows).
            let ahead = ROWS * BLOCK_WORDS * blk + 16 * i + PREFETCH_WORDS;
            _mm_prefetch::<_MM_HINT_T0>(rows[0].as_ptr().wrapping_add(ahead).cast());
            // SAFETY: `16·blk + 16 ≤ 16 · full ≤ words`.
            let c = extract(unsafe { _mm512_loadu_si512(row.as_ptr().add(BLOCK_WORDS * blk).cast()) });
            block_dot(acc_i, &c, &a);
        }
    }
    let live = words - BLOCK_WORDS * full;
    if live > 0 {
        // SAFETY: the last, partial block lies inside the padded activation rows.
        let a: [[__m512i; 4]; R] = std::array::from_fn(|r| unsafe { block_acts(acts[r], full) });
        for (acc_i, row) in acc.iter_mut().zip(rows) {
            // SAFETY: the mask limits the load to the `live` words left in the row;
            // past them the codes are 0 and so are the activations.
            let c = extract(unsafe {
                _mm512_maskz_loadu_epi32((1u16 << live) - 1, row.as_ptr().add(BLOCK_WORDS * full).cast())
            });
            block_dot(acc_i, &c, &a);
        }
    }
    acc.map(|row| row.map(|[e, o]| _mm512_reduce_add_epi32(_mm512_add_epi32(e, o))))
}

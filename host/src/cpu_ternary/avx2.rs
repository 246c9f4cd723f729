//! # The AVX2 paths of the CPU ternary matmul
//!
//! Both read the activations permuted per 256-weight block as the module
//! above lays them out: extraction `j` of the 8 words at `16·blk + 8·h` meets
//! the 32 bytes at `256·blk + 64·j + 32·h`.
//!
//! - **Decode** ([`group_dots`], M ≤ 2): weights stream from memory once, so
//!   the path is built around the memory system. Each 64-byte line of a
//!   weight row is prefetched [`PREFETCH_WORDS`] words ahead: rows of 1536
//!   weights are only six lines long, too short for the hardware prefetcher
//!   to lock on before the next row starts (without it, the decode of
//!   b1.58-large's linears ran at 2.3 GB/s against 18 GB/s of read bandwidth).
//!   The four rows of a group are contiguous, and their lines are prefetched
//!   in address order (a line per row at the same offset into each row was
//!   ~4 % slower over a 2B-4T-sized stack on a Zen 5 EPYC, 2026-12-06).
//!   Four weight rows share each activation load. Products are summed in
//!   16-bit lanes for eight half-blocks before one `vpmaddwd` widens them.
//! - **Prefill** ([`gemm_task`], M > 2): a task's weight rows are decoded once
//!   into a panel of codes (one byte per weight, in the permuted order), then
//!   an int8 micro-kernel of 2 weight rows × 4 activation rows runs over the
//!   panel, with no decoding in its inner loop: per 32 bytes of K, 6 loads for
//!   8 `vpmaddubsw` + 8 16-bit adds, widened to i32 every 32 steps.
//!
//! Bounds of the 16-bit sums: a code is at most 2 and an activation at most
//! 128 in magnitude, so one `vpmaddubsw` lane (two products) is at most 512
//! and never saturates; eight half-blocks of four extractions (decode) or 32
//! steps (prefill) stay at or below 16 384.

use std::arch::x86_64::*;

use super::{BLOCK, OutputColumns, ROWS_PER_TASK};
use crate::buffer::OutputElem;
use crate::matmul::{QuantizedRef, dequantize_by, dequantize_factor};
use crate::ternary::TernaryRef;

/// How far ahead of the current read each weight row prefetches, in words
/// (8 KiB): enough lines in flight per thread to cover the memory latency at
/// this path's rate (measured best among 1–16 KiB on a 2-core EPYC).
const PREFETCH_WORDS: usize = 2048;
/// Weight rows that share each activation load in the decode path.
const GEMV_ROWS: usize = super::GEMV_GROUP;
/// Half-blocks summed in 16 bits before widening (decode): 8 × 2048 ≤ 16 384.
const GEMV_WIDEN_EVERY: usize = 8;
/// 32-byte steps summed in 16 bits before widening (prefill): 32 × 512 = 16 384
/// (even: [`gemm_micro`] takes two steps per pass).
const GEMM_WIDEN_EVERY: usize = 32;
/// Weight rows of the prefill micro-kernel.
const GEMM_ROWS: usize = 2;
/// Activation rows of the prefill micro-kernel.
const GEMM_ACTS: usize = 4;
// Both epilogues reduce eight accumulators at once ([`hsum8`]): the prefill
// tile's, and a decode group's rows × two activation rows.
const _: () = assert!(GEMM_ROWS * GEMM_ACTS == 8 && GEMV_ROWS * 2 == 8);

/// Decode: Σ code · a of a group's [`GEMV_ROWS`] weight rows against the
/// `m` (1 or 2) permuted activation rows `acts[..m]`, for [`super::gemv_task`].
///
/// # Safety
/// The CPU has AVX2; every activation row holds at least `16 · rows[0].len()`
/// bytes rounded up to a whole block.
#[inline]
pub(super) unsafe fn group_dots(rows: &[&[u32]; GEMV_ROWS], acts: &[&[i8]; 2], m: usize) -> [[i32; 2]; GEMV_ROWS] {
    // SAFETY: the caller's contract.
    unsafe { if m == 1 { gemv_rows::<1>(rows, &[acts[0]]).map(|d| [d[0], 0]) } else { gemv_rows::<2>(rows, acts) } }
}

/// The decoded extractions of 8 words: byte `4q + b` of extraction `j` is
/// the code of weight `16q + 4j + b` of the block.
#[inline]
#[target_feature(enable = "avx2")]
fn extract(words: __m256i) -> [__m256i; 4] {
    let mask = _mm256_set1_epi32(0x0303_0303);
    [
        _mm256_and_si256(words, mask),
        _mm256_and_si256(_mm256_srli_epi32::<2>(words), mask),
        _mm256_and_si256(_mm256_srli_epi32::<4>(words), mask),
        _mm256_and_si256(_mm256_srli_epi32::<6>(words), mask),
    ]
}

/// Σ code · a over one half-block, in 16-bit lanes (at most 2048 each).
#[inline]
#[target_feature(enable = "avx2")]
fn half_dot(c: &[__m256i; 4], a: &[__m256i; 4]) -> __m256i {
    let s01 = _mm256_add_epi16(_mm256_maddubs_epi16(c[0], a[0]), _mm256_maddubs_epi16(c[1], a[1]));
    let s23 = _mm256_add_epi16(_mm256_maddubs_epi16(c[2], a[2]), _mm256_maddubs_epi16(c[3], a[3]));
    _mm256_add_epi16(s01, s23)
}

/// The four permuted activation vectors of half-block `h` of row `a`.
///
/// # Safety
/// `a` holds at least `256 · (h / 2 + 1)` bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn half_acts(a: &[i8], h: usize) -> [__m256i; 4] {
    let at = (h / 2) * BLOCK + 32 * (h % 2);
    // SAFETY: `at + 64·3 + 32 ≤ 256 · (h / 2 + 1)`, within `a` (the caller's contract).
    std::array::from_fn(|j| unsafe { _mm256_loadu_si256(a.as_ptr().add(at + 64 * j).cast()) })
}

/// The lane sums of eight vectors, in order, in 10 instructions where eight
/// separate reductions take ~40: the micro-kernels' epilogue. On a Zen 5 EPYC
/// (Criterion `cpu-ternary` at m512 under `TRINITY_CPU_PATH=avx2`, 2026-12-06)
/// it took the GEMM from 10.34 to 9.51 ms (4096 × 1536) and from 9.44 to 9.05
/// ms (2560²). Integer sums, so the order of the additions does not matter.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum8(v: [__m256i; 8]) -> [i32; 8] {
    // Each `hadd` sums neighbouring lanes within each 128-bit half: after two
    // rounds, lane `i` of each half holds half `0`/`1`'s sum of vector `i`
    // (of the first four vectors in `ab`, of the last four in `cd`).
    let ab = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    let cd = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    let low_halves = _mm256_permute2x128_si256::<0x20>(ab, cd);
    let high_halves = _mm256_permute2x128_si256::<0x31>(ab, cd);
    let mut out = [0i32; 8];
    // SAFETY: 8 lanes into 8 integers.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), _mm256_add_epi32(low_halves, high_halves)) };
    out
}

/// Σ code · a for `GEMV_ROWS` weight rows (all of one length) × `R` activation rows.
/// The rows are consecutive in memory from `rows[0]` on (only the prefetches,
/// hints, rely on it).
///
/// # Safety
/// The CPU has AVX2; every activation row holds at least `16 · rows[0].len()`
/// bytes rounded up to a whole block.
#[target_feature(enable = "avx2")]
unsafe fn gemv_rows<const R: usize>(rows: &[&[u32]; GEMV_ROWS], acts: &[&[i8]; R]) -> [[i32; R]; GEMV_ROWS] {
    let ones = _mm256_set1_epi16(1);
    let words = rows[0].len();
    let full = words / 8;
    let mut acc32 = [[_mm256_setzero_si256(); R]; GEMV_ROWS];
    let mut h = 0;
    while h < full {
        let end = (h + GEMV_WIDEN_EVERY).min(full);
        let mut acc16 = [[_mm256_setzero_si256(); R]; GEMV_ROWS];
        while h < end {
            // SAFETY: half-block `h` lies inside the padded rows (the contract).
            let a: [[__m256i; 4]; R] = std::array::from_fn(|r| unsafe { half_acts(acts[r], h) });
            for (i, (acc, row)) in acc16.iter_mut().zip(rows).enumerate() {
                if h % 2 == 0 {
                    // The group's rows are contiguous: one line a row every two
                    // half-blocks, in address order (a hint: it never faults,
                    // so the address may run past the rows).
                    let ahead = GEMV_ROWS * 8 * h + 16 * i + PREFETCH_WORDS;
                    _mm_prefetch::<_MM_HINT_T0>(rows[0].as_ptr().wrapping_add(ahead).cast());
                }
                // SAFETY: `8h + 8 ≤ 8 · full ≤ words`.
                let c = extract(unsafe { _mm256_loadu_si256(row.as_ptr().add(8 * h).cast()) });
                for (acc_r, a_r) in acc.iter_mut().zip(&a) {
                    *acc_r = _mm256_add_epi16(*acc_r, half_dot(&c, a_r));
                }
            }
            h += 1;
        }
        for (a32, a16) in acc32.iter_mut().zip(&acc16) {
            for (x, y) in a32.iter_mut().zip(a16) {
                *x = _mm256_add_epi32(*x, _mm256_madd_epi16(*y, ones));
            }
        }
    }
    let live = words - 8 * full;
    if live > 0 {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let load_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(live as i32), lanes);
        // SAFETY: the last half-block lies inside the padded activation rows.
        let a: [[__m256i; 4]; R] = std::array::from_fn(|r| unsafe { half_acts(acts[r], full) });
        for (acc, row) in acc32.iter_mut().zip(rows) {
            // SAFETY: the mask limits the load to the `live` words left in the row.
            let c = extract(unsafe { _mm256_maskload_epi32(row.as_ptr().add(8 * full).cast(), load_mask) });
            for (acc_r, a_r) in acc.iter_mut().zip(&a) {
                *acc_r = _mm256_add_epi32(*acc_r, _mm256_madd_epi16(half_dot(&c, a_r), ones));
            }
        }
    }
    // The group's sums, row-major, padded to eight vectors with zeros (`R` is 1 or 2).
    let zero = _mm256_setzero_si256();
    let sums = hsum8(std::array::from_fn(|k| if k % 2 < R { acc32[k / 2][k % 2] } else { zero }));
    std::array::from_fn(|i| std::array::from_fn(|r| sums[2 * i + r]))
}

/// Prefill: weight rows `first_row ..` of this task (at most
/// [`ROWS_PER_TASK`]) against every activation row, into columns
/// `first_row ..` of `out`; `panel` is the thread's scratch for the decoded codes.
///
/// # Safety
/// The CPU has AVX2; `act` holds `x.rows` permuted rows of `stride` bytes, a
/// whole number of blocks holding at least `16 · w.words_per_row()`; no other
/// task writes these columns of `out`.
pub(super) unsafe fn gemm_task<O: OutputElem>(
    x: &QuantizedRef<'_>,
    w: &TernaryRef<'_>,
    (act, stride): (&[i8], usize),
    first_row: usize,
    out: &OutputColumns<'_, O>,
    panel: &mut Vec<u8>,
) {
    let (m, wpr) = (x.rows, w.words_per_row());
    let rows_here = (w.rows() - first_row).min(ROWS_PER_TASK);
    // Every row is written whole below, so the scratch is not cleared; the
    // padding row of an odd count is read but its results are dropped.
    panel.resize(rows_here.next_multiple_of(GEMM_ROWS) * stride, 0);
    for (i, codes) in panel.chunks_exact_mut(stride).take(rows_here).enumerate() {
        // SAFETY: AVX2 is present (the contract); `codes` holds `stride ≥ 16 · wpr`
        // bytes rounded up to whole blocks.
        unsafe { decode_row(&w.words()[(first_row + i) * wpr..][..wpr], codes) };
    }
    let panel = &panel[..];
    for m0 in (0..m).step_by(GEMM_ACTS) {
        let ma = (m - m0).min(GEMM_ACTS);
        let acts: [&[i8]; GEMM_ACTS] = std::array::from_fn(|r| &act[(m0 + r.min(ma - 1)) * stride..][..stride]);
        // One division per activation row and task (a division per output was
        // a tenth of the task's time).
        let factors: [f32; GEMM_ACTS] =
            std::array::from_fn(|r| dequantize_factor(w.scale(), x.scales[m0 + r.min(ma - 1)]));
        let sums: [i32; GEMM_ACTS] = std::array::from_fn(|r| x.sums[m0 + r.min(ma - 1)]);
        // Each activation row's outputs of the task, gathered to be written as one run.
        let mut tile = [[0f32; ROWS_PER_TASK]; GEMM_ACTS];
        for r0 in (0..rows_here).step_by(GEMM_ROWS) {
            let codes: [&[u8]; GEMM_ROWS] = std::array::from_fn(|i| &panel[(r0 + i) * stride..][..stride]);
            // SAFETY: AVX2 is present; every row here is `stride` bytes, whole blocks.
            let dots = unsafe { gemm_micro(&codes, &acts) };
            for (i, d) in dots.iter().enumerate() {
                for r in 0..GEMM_ACTS {
                    tile[r][r0 + i] = dequantize_by(d[r] - sums[r], factors[r]);
                }
            }
        }
        for (r, vals) in tile.iter().enumerate().take(ma) {
            // SAFETY: these columns are this task's (the contract); no other segment is held.
            let seg = unsafe { out.segment(m0 + r, first_row, rows_here) };
            for (o, &v) in seg.iter_mut().zip(vals) {
                *o = O::from_f32(v);
            }
        }
    }
}

/// One weight row's codes, one byte each, in the activations' permuted order
/// (zeros past the row's last word, where the activations are zero too).
///
/// # Safety
/// The CPU has AVX2; `out.len()` is `words.len()` rounded up to 16, times 16.
#[target_feature(enable = "avx2")]
unsafe fn decode_row(words: &[u32], out: &mut [u8]) {
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for h in 0..out.len() / 128 {
        let live = words.len().saturating_sub(8 * h).min(8);
        let load_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(live as i32), lanes);
        // SAFETY: the mask limits the load to the words left in the row
        // (none: the pointer is not dereferenced).
        let c = extract(unsafe { _mm256_maskload_epi32(words.as_ptr().wrapping_add(8 * h).cast(), load_mask) });
        let at = (h / 2) * BLOCK + 32 * (h % 2);
        for (j, cj) in c.iter().enumerate() {
            // SAFETY: `at + 64j + 32 ≤ out.len()` (the contract).
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(at + 64 * j).cast(), *cj) };
        }
    }
}

/// Σ code · a for 2 rows of decoded codes × 4 activation rows (all of one
/// length, a multiple of 64).
///
/// The inner loop takes two 32-byte steps per pass and indexes every row by
/// one byte offset: its scalar work was half its instructions (two
/// induction variables and a shifted copy, per step), and Zen 3 dispatches
/// six per cycle. On a 2-core Zen 3 EPYC (2026-12-08, one thread, L1-resident
/// rows of 1536 bytes, 40 alternated rounds) this loop ran 1.19–1.22× the
/// one-step loop with a step index (median ratio of two runs).
///
/// # Safety
/// The CPU has AVX2; every slice is at least as long as `codes[0]`.
#[target_feature(enable = "avx2")]
unsafe fn gemm_micro(codes: &[&[u8]; GEMM_ROWS], acts: &[&[i8]; GEMM_ACTS]) -> [[i32; GEMM_ACTS]; GEMM_ROWS] {
    const STEPS_PER_PASS: usize = 2;
    let ones = _mm256_set1_epi16(1);
    let len = codes[0].len();
    debug_assert_eq!(len % (32 * STEPS_PER_PASS), 0);
    let c_rows: [*const u8; GEMM_ROWS] = std::array::from_fn(|i| codes[i].as_ptr());
    // Bytes as the codes' pointers are, so that one offset register serves both.
    let a_rows: [*const u8; GEMM_ACTS] = std::array::from_fn(|r| acts[r].as_ptr().cast());
    let mut acc32 = [[_mm256_setzero_si256(); GEMM_ACTS]; GEMM_ROWS];
    let mut at = 0;
    while at < len {
        let end = (at + 32 * GEMM_WIDEN_EVERY).min(len);
        let mut acc16 = [[_mm256_setzero_si256(); GEMM_ACTS]; GEMM_ROWS];
        while at < end {
            for step in 0..STEPS_PER_PASS {
                let at = at + 32 * step;
                // SAFETY: `at + 32 ≤ len` for every slice (the contract).
                let c: [__m256i; GEMM_ROWS] =
                    std::array::from_fn(|i| unsafe { _mm256_loadu_si256(c_rows[i].add(at).cast()) });
                for r in 0..GEMM_ACTS {
                    // SAFETY: as above.
                    let a = unsafe { _mm256_loadu_si256(a_rows[r].add(at).cast()) };
                    for i in 0..GEMM_ROWS {
                        acc16[i][r] = _mm256_add_epi16(acc16[i][r], _mm256_maddubs_epi16(c[i], a));
                    }
                }
            }
            at += 32 * STEPS_PER_PASS;
        }
        for (a32, a16) in acc32.iter_mut().zip(&acc16) {
            for (x, y) in a32.iter_mut().zip(a16) {
                *x = _mm256_add_epi32(*x, _mm256_madd_epi16(*y, ones));
            }
        }
    }
    let sums = hsum8(std::array::from_fn(|k| acc32[k / GEMM_ACTS][k % GEMM_ACTS]));
    std::array::from_fn(|i| std::array::from_fn(|r| sums[i * GEMM_ACTS + r]))
}

//! # The AVX-512 VNNI path of the CPU ternary matmul (prefill)
//!
//! A register-blocked GEMM in the layout `vpdpbusd` is built for: each 512-bit
//! accumulator holds 16 *output columns* (weight rows) of one activation row,
//! so no horizontal sums are needed and each accumulator is stored as one
//! contiguous run of the output row.
//!
//! - **Weights** ([`gemm_task`]): a task's [`ROWS_PER_TASK`] weight rows are
//!   decoded once into a panel of codes (`trit + 1`, one byte each) in "VNNI
//!   layout": for each group of four consecutive K and each group of 16
//!   weight rows, 64 bytes where byte `4·i + t` is the code of row `i` at
//!   `K = 4·g + t`. The device layout makes this cheap: extraction `j` of word
//!   `q` of a row holds exactly the codes of `K = 16·q + 4·j ..+4` in one
//!   32-bit lane, so word `q` of 16 rows (a 16 × 16 transpose of words in
//!   registers) and four shift-and-masks give four panel vectors.
//! - **Activations**: read in their natural order, straight from the
//!   quantized rows (no permutation, no copy). Each step broadcasts four
//!   bytes of one activation row to all 16 lanes (`vpbroadcastd` from memory).
//! - **Micro-kernel** ([`micro_kernel`]): [`ACTS`] activation rows ×
//!   [`VECS`] × 16 weight rows, `ACTS · VECS` accumulators (24 of the 32
//!   registers): per step, `VECS` panel loads and `ACTS` broadcasts feed
//!   `ACTS · VECS` `vpdpbusd`, so the loads stay well under the products.
//! - **Epilogue**: `(sum − Σa) · (w_scale / x_scale)`, the two IEEE operations of
//!   [`dequantize`](crate::matmul::dequantize) in the same order, 16 lanes at
//!   a time, written in place into the task's own columns of the output.
//!
//! Bounds: one sum is at most `2 · 128 · K`, far inside i32 for any K here.

use std::arch::x86_64::*;

use super::OutputColumns;
use crate::buffer::OutputElem;
use crate::matmul::{QuantizedRef, dequantize_factor};
use crate::ternary::TernaryRef;

/// Weight rows per 512-bit accumulator (its i32 lanes).
const LANES: usize = 16;
/// Accumulators across the weight rows of one activation row in the micro-kernel.
const VECS: usize = 3;
/// Activation rows of the micro-kernel.
const ACTS: usize = 8;
/// Weight rows per parallel task: the micro-kernel's width.
pub(super) const ROWS_PER_TASK: usize = VECS * LANES;
/// Bytes of the panel per group of four K: `VECS` vectors of 64 bytes.
const GROUP_BYTES: usize = VECS * 64;
/// Activation rows the tasks of one parallel pass share (at most): 1 MiB at
/// K = 1024, 6.75 MiB at 2B-4T's largest K, inside the L3; a 16 384-row
/// batch read whole by every task ran at ~55 % of the 512-row speed.
pub(super) const ACT_ROWS_PER_PASS: usize = 1024;

/// Prefill: weight rows `first_row ..` of this task (at most
/// [`ROWS_PER_TASK`]) against activation rows `acts`, into columns
/// `first_row ..` of `out`. `panel` is this thread's scratch.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VNNI; no other task writes these columns of `out`.
pub(super) unsafe fn gemm_task<O: OutputElem>(
    x: &QuantizedRef<'_>,
    w: &TernaryRef<'_>,
    first_row: usize,
    acts: std::ops::Range<usize>,
    out: &OutputColumns<'_, O>,
    panel: &mut Vec<u8>,
) {
    let wpr = w.words_per_row();
    assert!(x.k_pad >= 16 * wpr, "activation rows of {} bytes for weight rows of {wpr} words", x.k_pad);
    let rows_here = (w.rows() - first_row).min(ROWS_PER_TASK);
    let groups = 4 * wpr;
    // `decode_panel` writes every byte of the first `groups` groups.
    panel.resize(groups * GROUP_BYTES, 0);
    // SAFETY: the caller's contract (the CPU); the panel holds `4 · wpr` groups.
    unsafe { decode_panel(&w.words()[first_row * wpr..][..rows_here * wpr], wpr, rows_here, panel) };
    assert!(acts.end <= x.rows, "activation rows {acts:?} of {}", x.rows);
    let mut m0 = acts.start;
    while m0 < acts.end {
        let rows = (acts.end - m0).min(ACTS);
        let cols = (first_row, rows_here, w.scale());
        // SAFETY: the CPU and the columns (the caller's contract); `block` checks the slices.
        unsafe {
            match rows {
                8 => block::<8, O>(x, m0, panel, groups, out, cols),
                7 => block::<7, O>(x, m0, panel, groups, out, cols),
                6 => block::<6, O>(x, m0, panel, groups, out, cols),
                5 => block::<5, O>(x, m0, panel, groups, out, cols),
                4 => block::<4, O>(x, m0, panel, groups, out, cols),
                3 => block::<3, O>(x, m0, panel, groups, out, cols),
                2 => block::<2, O>(x, m0, panel, groups, out, cols),
                _ => block::<1, O>(x, m0, panel, groups, out, cols),
            }
        }
        m0 += rows;
    }
}

/// Activation rows `m0 .. m0 + R` × the task's weight rows (`first_row ..`,
/// `rows_here` of them, scale `w_scale`), dequantized into their cells of `out`.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VNNI; no other task writes columns
/// `first_row .. first_row + rows_here` of `out`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn block<const R: usize, O: OutputElem>(
    x: &QuantizedRef<'_>,
    m0: usize,
    panel: &[u8],
    groups: usize,
    out: &OutputColumns<'_, O>,
    (first_row, rows_here, w_scale): (usize, usize, f32),
) {
    let (acts, stride) = (x.values(), x.k_pad);
    assert!(
        R <= ACTS
            && panel.len() >= groups * GROUP_BYTES
            && 4 * groups <= stride
            && acts.len() >= (m0 + R) * stride
            && x.sums.len() >= m0 + R
            && x.scales.len() >= m0 + R
    );
    // SAFETY: the bounds just checked.
    let acc = unsafe { micro_kernel::<R>(panel.as_ptr(), acts[m0 * stride..].as_ptr(), stride, groups) };
    for (i, row) in acc.iter().enumerate() {
        let r = m0 + i;
        let sum = _mm512_set1_epi32(x.sums[r]);
        // `dequantize_by` 16 lanes at a time: (acc − Σa) as f32 · factor.
        let scale = _mm512_set1_ps(dequantize_factor(w_scale, x.scales[r]));
        for (v, &a) in row.iter().enumerate() {
            let c0 = v * LANES;
            if c0 >= rows_here {
                break;
            }
            let vals = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(a, sum)), scale);
            // SAFETY: columns `first_row + c0 ..` are this task's (the
            // contract), and no other segment is held; AVX-512 F is enabled here.
            unsafe { out.store_lanes(r, first_row + c0, LANES.min(rows_here - c0), vals) };
        }
    }
}

/// `ACTS · VECS` accumulators over `groups` steps of four K.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VNNI; `panel` points at `groups · GROUP_BYTES`
/// readable bytes and `acts` at `R` rows of `stride` bytes, each with at least
/// `4 · groups` readable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn micro_kernel<const R: usize>(
    panel: *const u8,
    acts: *const i8,
    stride: usize,
    groups: usize,
) -> [[__m512i; VECS]; R] {
    let mut acc = [[_mm512_setzero_si512(); VECS]; R];
    for g in 0..groups {
        // SAFETY: group `g` of the panel and bytes `4g .. 4g + 4` of each row (the contract).
        unsafe {
            let c: [__m512i; VECS] =
                std::array::from_fn(|v| _mm512_loadu_si512(panel.add(g * GROUP_BYTES + 64 * v).cast()));
            for (r, row) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_epi32(acts.add(r * stride + 4 * g).cast::<i32>().read_unaligned());
                for (s, &cv) in row.iter_mut().zip(&c) {
                    *s = _mm512_dpbusd_epi32(*s, cv, a);
                }
            }
        }
    }
    acc
}

/// The task's weight rows (`rows` rows of `wpr` words, contiguous) into the
/// panel: group `4q + j`, vector `v` holds extraction `j` of word `q` of rows
/// `16v ..`; rows past `rows` are zeros (their sums are dropped). Every byte
/// of the first `4 · wpr` groups is written. Blocks of
/// 16 words × 16 rows are transposed in registers (a gather per word was 7 %
/// of the GEMM's time).
///
/// # Safety
/// The CPU has AVX-512 F; `panel` holds `4 · wpr` groups; `words` holds `rows · wpr` words.
#[target_feature(enable = "avx512f")]
unsafe fn decode_panel(words: &[u32], wpr: usize, rows: usize, panel: &mut [u8]) {
    assert!(words.len() >= rows * wpr && panel.len() >= 4 * wpr * GROUP_BYTES && rows <= ROWS_PER_TASK);
    // The task's rows are one contiguous run that comes from memory: asking
    // for all of it at once keeps many lines in flight, where the 16-row
    // loads below would wait on each line in turn.
    for line in words[..rows * wpr].chunks(16) {
        _mm_prefetch::<_MM_HINT_T1>(line.as_ptr().cast());
    }
    for v in 0..VECS {
        let live = rows.saturating_sub(v * LANES).min(LANES);
        if live == 0 {
            // No rows here (the last task of a matrix): zero codes, whose sums are dropped.
            for g in 0..4 * wpr {
                panel[g * GROUP_BYTES + 64 * v..][..64].fill(0);
            }
            continue;
        }
        for q0 in (0..wpr).step_by(LANES) {
            let nq = (wpr - q0).min(LANES);
            let lanes = crate::cpu::first_lanes(nq);
            let block: [__m512i; LANES] = std::array::from_fn(|i| {
                if i < live {
                    // SAFETY: words `q0 .. q0 + nq` of row `16v + i < rows`,
                    // inside `words`; masked-off lanes touch no memory.
                    unsafe { _mm512_maskz_loadu_epi32(lanes, words[(v * LANES + i) * wpr + q0..].as_ptr().cast()) }
                } else {
                    _mm512_setzero_si512()
                }
            });
            for (t, wv) in transpose16(block).into_iter().enumerate().take(nq) {
                let q = q0 + t;
                for (j, c) in extract(wv).into_iter().enumerate() {
                    let at = &mut panel[(4 * q + j) * GROUP_BYTES + 64 * v..][..64];
                    // SAFETY: 64 bytes into a 64-byte slice.
                    unsafe { _mm512_storeu_si512(at.as_mut_ptr().cast(), c) };
                }
            }
        }
    }
}

/// The four extractions of 16 device-layout words: lane `q` of extraction `j`
/// holds, one per byte, the codes of weights `16q + 4j .. 16q + 4j + 4`.
/// Shared by the VNNI and AMX weight panels and the VNNI decode GEMV.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn extract(words: __m512i) -> [__m512i; 4] {
    let mask = _mm512_set1_epi32(0x0303_0303);
    [
        _mm512_and_si512(words, mask),
        _mm512_and_si512(_mm512_srli_epi32::<2>(words), mask),
        _mm512_and_si512(_mm512_srli_epi32::<4>(words), mask),
        _mm512_and_si512(_mm512_srli_epi32::<6>(words), mask),
    ]
}

/// A 16 × 16 transpose of 32-bit elements: lane `i` of output `j` is lane
/// `j` of input `i`. Pairs of rows interleave by 32 bits, then by 64, then
/// the 128-bit quarters are exchanged in two rounds.
#[target_feature(enable = "avx512f")]
fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
    // t[2k], t[2k+1]: rows 2k, 2k+1 interleaved (columns 4L, 4L+1 and 4L+2, 4L+3 of quarter L).
    let t: [__m512i; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 { _mm512_unpacklo_epi32(a, b) } else { _mm512_unpackhi_epi32(a, b) }
    });
    // u[4g + c], quarter L: column 4L + c of rows 4g .. 4g + 4.
    let u: [__m512i; 16] = std::array::from_fn(|i| {
        let (g, c) = (i / 4, i % 4);
        let (a, b) = (t[4 * g + c / 2], t[4 * g + 2 + c / 2]);
        if c % 2 == 0 { _mm512_unpacklo_epi64(a, b) } else { _mm512_unpackhi_epi64(a, b) }
    });
    let mut o = [_mm512_setzero_si512(); 16];
    for c in 0..4 {
        let v0 = _mm512_shuffle_i32x4::<0x44>(u[c], u[4 + c]);
        let v1 = _mm512_shuffle_i32x4::<0xEE>(u[c], u[4 + c]);
        let v2 = _mm512_shuffle_i32x4::<0x44>(u[8 + c], u[12 + c]);
        let v3 = _mm512_shuffle_i32x4::<0xEE>(u[8 + c], u[12 + c]);
        o[c] = _mm512_shuffle_i32x4::<0x88>(v0, v2);
        o[4 + c] = _mm512_shuffle_i32x4::<0xDD>(v0, v2);
        o[8 + c] = _mm512_shuffle_i32x4::<0x88>(v1, v3);
        o[12 + c] = _mm512_shuffle_i32x4::<0xDD>(v1, v3);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels_gpu::format::device_layout::interleave;

    #[test]
    fn the_panel_is_in_vnni_layout() {
        if !super::super::has_vnni() {
            eprintln!("skipped: no AVX-512 VNNI on this CPU");
            return;
        }
        // 37 rows (two full vectors and a partial one), and 20 (one full, one
        // partial, one with no rows), of 36 words (two blocks of 16 and a
        // partial one); code of (row, k) known. The panel starts as garbage:
        // every byte must be written.
        let wpr = 36;
        let code = |r: usize, k: usize| ((r * 7 + k * 3 + k / 5) % 3) as u8;
        for rows in [37, 20] {
            let words: Vec<u32> = (0..rows * wpr)
                .map(|i| interleave(std::array::from_fn(|b| code(i / wpr, 16 * (i % wpr) + b) as u32)))
                .collect();
            let mut panel = vec![0xAAu8; 4 * wpr * GROUP_BYTES];
            // SAFETY: the CPU was checked above; the sizes are the contract's.
            unsafe { decode_panel(&words, wpr, rows, &mut panel) };
            for g in 0..4 * wpr {
                for v in 0..VECS {
                    for i in 0..LANES {
                        for t in 0..4 {
                            let got = panel[g * GROUP_BYTES + 64 * v + 4 * i + t];
                            let r = LANES * v + i;
                            let want = if r < rows { code(r, 4 * g + t) } else { 0 };
                            assert_eq!(got, want, "{rows} rows: group {g}, row {r}, byte {t}");
                        }
                    }
                }
            }
        }
    }
}

//! # Prefill attention on AVX2: eight query rows at a time
//!
//! [`super::attention_blocks`]' block for CPUs with AVX2 and FMA but not
//! AVX-512 (or under `TRINITY_CPU_PATH=avx2`): a block of up to [`QB`] rows of
//! one slot takes one head at a time with its queries transposed, one 8-lane
//! vector per head dimension, so each key is read once per block and a score
//! needs no horizontal sum. What differs is the width, and that AVX2 has no
//! lane masks: `head_dim` must be a multiple of 8 (64, 96 and 128 are), and
//! the caller keeps the row-at-a-time path for any other.
//!
//! - **Scores**: eight keys at a time (eight independent FMA chains), times
//!   `1/√head_dim`, into `scores[key][row]`.
//! - **Softmax**: along the keys with the rows in the lanes (the 8-lane `exp`);
//!   row `i` sees keys `0 .. lens[i]` (causal): a compare of the key's index
//!   with the rows' lengths stands in for AVX-512's mask, and the later
//!   scores become zero weights.
//! - **Weighted sum**: four rows at a time over column groups of 16 values
//!   (then 8), so each value row is loaded once for the four: 4 × 2 sums in
//!   registers beside the two loaded vectors and the broadcast weight.
//!
//! The sums run in another order than the row-at-a-time path's, within the
//! tolerance every backend's attention is held to against the f64 reference.

use std::arch::x86_64::*;

use super::attention_blocks::{Cols, Kv, head_inputs};
use super::vector_exp::exp_avx2;

/// Query rows per block (the lanes of a vector).
pub(super) const QB: usize = 8;
/// Keys scored at once (independent FMA chains).
const KEYS: usize = 8;
/// Rows sharing each value load in the weighted sum.
const ROWS: usize = 4;

/// Attention of the block's rows (`lens.len() ≤ QB` rows of `q` and `out`,
/// `heads × head_dim` each) over their slot's cache; row `i` sees `lens[i] ≥ 1` keys.
/// `scores` and `qt` are this thread's scratch.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn attention_block(
    q: &[f32],
    out: &mut [f32],
    lens: &[usize],
    kv: &Kv<'_>,
    scores: &mut Vec<f32>,
    qt: &mut Vec<f32>,
) {
    let (nb, d, heads) = (lens.len(), kv.head_dim, kv.heads);
    assert!((1..=QB).contains(&nb) && lens.iter().all(|l| (1..=kv.context).contains(l)), "block rows and lengths");
    assert!(d.is_multiple_of(8), "head_dim {d}: the AVX2 block takes whole 8-value chunks");
    let max_len = lens.iter().copied().max().unwrap_or(1);
    let scale = _mm256_set1_ps((d as f32).powf(-0.5));
    let mut lens8 = [0i32; QB];
    for (l, &n) in lens8.iter_mut().zip(lens) {
        *l = n as i32;
    }
    // SAFETY: 8 i32 from an 8-element array.
    let lens_v = unsafe { _mm256_loadu_si256(lens8.as_ptr().cast()) };
    // Lanes whose row sees key `j`: all ones where `j < lens[i]`.
    let seen = |j: usize| _mm256_castsi256_ps(_mm256_cmpgt_epi32(lens_v, _mm256_set1_epi32(j as i32)));
    scores.clear();
    scores.resize(max_len * QB, 0.0);
    qt.clear();
    qt.resize(d * QB, 0.0);
    for h in 0..heads {
        let (keys, values) = head_inputs(q, qt, kv, h, nb, QB, max_len);
        // Scores, KEYS keys at a time, then one at a time.
        let mut j = 0;
        while j < max_len {
            let n = if max_len - j >= KEYS { KEYS } else { 1 };
            let mut acc = [_mm256_setzero_ps(); KEYS];
            // SAFETY: keys `j .. j + n ≤ max_len` of `keys` (max_len × d) and `qt` (d × 8).
            unsafe {
                if n == KEYS {
                    score_keys::<KEYS>(qt, &keys[j * d..][..KEYS * d], d, &mut acc);
                } else {
                    score_keys::<1>(qt, &keys[j * d..][..d], d, &mut acc);
                }
            }
            for (u, a) in acc.iter().enumerate().take(n) {
                // SAFETY: row `j + u < max_len` of `scores` (max_len × 8).
                unsafe { _mm256_storeu_ps(scores.as_mut_ptr().add((j + u) * QB), _mm256_mul_ps(*a, scale)) };
            }
            j += n;
        }
        // Softmax along the keys, one row per lane.
        let mut max = _mm256_set1_ps(f32::NEG_INFINITY);
        for j in 0..max_len {
            // SAFETY: row `j` of `scores`.
            let s = unsafe { _mm256_loadu_ps(scores.as_ptr().add(j * QB)) };
            max = _mm256_blendv_ps(max, _mm256_max_ps(max, s), seen(j));
        }
        let mut total = _mm256_setzero_ps();
        for j in 0..max_len {
            let at = scores[j * QB..][..QB].as_mut_ptr();
            // SAFETY: row `j` of `scores`, 8 lanes.
            let s = unsafe { _mm256_loadu_ps(at) };
            // A lane with no key seen has a max of −∞: its `exp` sees the clamp's
            // top, finite, and the mask zeroes it like any unseen key.
            let p = _mm256_and_ps(exp_avx2(_mm256_sub_ps(s, max)), seen(j));
            total = _mm256_add_ps(total, p);
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(at, p) };
        }
        let mut totals = [0f32; QB];
        // SAFETY: 8 lanes into an 8-element array.
        unsafe { _mm256_storeu_ps(totals.as_mut_ptr(), total) };
        // The weighted sum, ROWS rows at a time, column groups of 16 (then 8).
        for i0 in (0..nb).step_by(ROWS) {
            let rows = (nb - i0).min(ROWS);
            let len = lens[i0..i0 + rows].iter().copied().max().unwrap_or(1);
            let mut c = 0;
            while c < d {
                let outs: [usize; ROWS] = std::array::from_fn(|r| ((i0 + r.min(rows - 1)) * heads + h) * d + c);
                let cols = Cols { scores, values, i0, len, d, c };
                // SAFETY: AVX2 and FMA (this function's contract); each group
                // reads and writes columns `c .. c + 8·V ≤ d` (`d` a multiple of 8).
                unsafe {
                    if d - c >= 16 {
                        weighted_group::<2>(&cols, out, &outs, rows, &totals[i0..]);
                        c += 16;
                    } else {
                        weighted_group::<1>(&cols, out, &outs, rows, &totals[i0..]);
                        c += 8;
                    }
                }
            }
        }
    }
}

/// `acc[u] = Σ_t qt[t] · keys[u][t]` for `N` keys (`N × d` of `keys`), the
/// block's rows in the lanes.
///
/// # Safety
/// The CPU has AVX2 and FMA; `qt` holds `d × 8` floats and `keys` `N × d`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn score_keys<const N: usize>(qt: &[f32], keys: &[f32], d: usize, acc: &mut [__m256; KEYS]) {
    assert!(N <= KEYS && qt.len() >= d * QB && keys.len() >= N * d);
    for t in 0..d {
        // SAFETY: `t < d`: 8 lanes of `qt` and element `t` of each key (checked above).
        unsafe {
            let qv = _mm256_loadu_ps(qt.as_ptr().add(t * QB));
            for (u, a) in acc.iter_mut().enumerate().take(N) {
                *a = _mm256_fmadd_ps(qv, _mm256_set1_ps(*keys.get_unchecked(u * d + t)), *a);
            }
        }
    }
}

/// `out[outs[r] ..][.. 8·V] = Σ_j scores[j][i0 + r] · values[j][c ..] / totals[r]`
/// for the group's `rows` rows.
///
/// # Safety
/// The CPU has AVX2 and FMA; `c + 8·V ≤ d` and each `outs[r]` starts a
/// `d`-long row segment of `out` at column `c`.
#[target_feature(enable = "avx2,fma")]
unsafe fn weighted_group<const V: usize>(
    g: &Cols<'_>,
    out: &mut [f32],
    outs: &[usize; ROWS],
    rows: usize,
    totals: &[f32],
) {
    let mut acc = [[_mm256_setzero_ps(); V]; ROWS];
    for j in 0..g.len {
        let p = &g.scores[j * QB + g.i0..][..ROWS];
        let row = &g.values[j * g.d + g.c..][..8 * V];
        // SAFETY: `8·V` values of this row (the slice above).
        let vals: [__m256; V] = std::array::from_fn(|v| unsafe { _mm256_loadu_ps(row.as_ptr().add(8 * v)) });
        for (r, a) in acc.iter_mut().enumerate().take(rows) {
            let w = _mm256_set1_ps(p[r]);
            for (x, &val) in a.iter_mut().zip(&vals) {
                *x = _mm256_fmadd_ps(w, val, *x);
            }
        }
    }
    for (r, a) in acc.iter().enumerate().take(rows) {
        let inv = _mm256_set1_ps(1.0 / totals[r]);
        let dst = &mut out[outs[r]..][..8 * V];
        for (v, &x) in a.iter().enumerate() {
            // SAFETY: `8·V` floats of this row's segment (the slice above).
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(8 * v), _mm256_mul_ps(x, inv)) };
        }
    }
}

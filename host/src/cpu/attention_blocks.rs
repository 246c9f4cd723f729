//! # Prefill attention on AVX-512: sixteen query rows at a time
//!
//! The rows of a prompt chunk share their slot, so they read the same keys
//! and values. A block of up to [`QB`] of them takes one head at a time and
//! keeps its queries transposed, one 16-lane vector per head dimension: the
//! scores of one key for all the block's queries are `head_dim` FMAs with the
//! key's elements broadcast. No horizontal sum per score, and each key is
//! read once per block instead of once per row.
//!
//! - **Scores**: eight keys at a time (eight independent FMA chains), times
//!   `1/√head_dim`, into `scores[key][row]`.
//! - **Softmax**: along the keys with the rows in the lanes (a vector `exp`,
//!   tested against `f32::exp`); row `i` sees
//!   keys `0 .. lens[i]` (causal), its later scores become zero weights.
//!   The weights are left unnormalized; the output is divided by their sum.
//! - **Weighted sum**: four rows at a time over column groups of up to 64
//!   values, so each value row is loaded once for the four.
//!
//! The sums run in another order than the row-at-a-time path's, within the
//! tolerance every backend's attention is held to against the f64 reference.

use std::arch::x86_64::*;

use super::vector_exp::exp;

/// Query rows per block (the lanes of a vector).
pub(super) const QB: usize = 16;
/// Keys scored at once (independent FMA chains).
const KEYS: usize = 8;
/// Rows sharing each value load in the weighted sum.
const ROWS: usize = 4;

/// The block's caches and shape: keys and values of `slot` (`kv_heads ×
/// context × head_dim` each per slot), `heads` query heads.
pub(super) struct Kv<'a> {
    pub k_cache: &'a [f32],
    pub v_cache: &'a [f32],
    pub slot: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub context: usize,
}

/// Attention of the block's rows (`lens.len() ≤ QB` rows of `q` and `out`,
/// `heads × head_dim` each) over their slot's cache; row `i` sees `lens[i] ≥ 1` keys.
/// `scores` and `qt` are this thread's scratch.
///
/// # Safety
/// The CPU has AVX-512 F.
#[target_feature(enable = "avx512f")]
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
    let max_len = lens.iter().copied().max().unwrap_or(1);
    let scale = _mm512_set1_ps((d as f32).powf(-0.5));
    let mut lens16 = [0i32; QB];
    for (l, &n) in lens16.iter_mut().zip(lens) {
        *l = n as i32;
    }
    // SAFETY: 16 i32 from a 16-element array.
    let lens_v = unsafe { _mm512_loadu_si512(lens16.as_ptr().cast()) };
    scores.clear();
    scores.resize(max_len * QB, 0.0);
    qt.clear();
    qt.resize(d * QB, 0.0);
    for h in 0..heads {
        let (keys, values) = head_inputs(q, qt, kv, h, nb, QB, max_len);
        // Scores, KEYS keys at a time, then one at a time (a fixed count, so
        // the FMA loop has no per-key branch).
        let mut j = 0;
        while j < max_len {
            let n = if max_len - j >= KEYS { KEYS } else { 1 };
            let mut acc = [_mm512_setzero_ps(); KEYS];
            // SAFETY: keys `j .. j + n ≤ max_len` of `keys` (max_len × d) and `qt` (d × 16).
            unsafe {
                if n == KEYS {
                    score_keys::<KEYS>(qt, &keys[j * d..][..KEYS * d], d, &mut acc);
                } else {
                    score_keys::<1>(qt, &keys[j * d..][..d], d, &mut acc);
                }
            }
            for (u, a) in acc.iter().enumerate().take(n) {
                // SAFETY: row `j + u < max_len` of `scores` (max_len × 16).
                unsafe { _mm512_storeu_ps(scores.as_mut_ptr().add((j + u) * QB), _mm512_mul_ps(*a, scale)) };
            }
            j += n;
        }
        // Softmax along the keys, one row per lane.
        let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
        for j in 0..max_len {
            let seen = _mm512_cmplt_epi32_mask(_mm512_set1_epi32(j as i32), lens_v);
            // SAFETY: row `j` of `scores`.
            let s = unsafe { _mm512_loadu_ps(scores.as_ptr().add(j * QB)) };
            max = _mm512_mask_max_ps(max, seen, max, s);
        }
        let mut total = _mm512_setzero_ps();
        for j in 0..max_len {
            let seen = _mm512_cmplt_epi32_mask(_mm512_set1_epi32(j as i32), lens_v);
            let at = scores[j * QB..][..QB].as_mut_ptr();
            // SAFETY: row `j` of `scores`, 16 lanes.
            let s = unsafe { _mm512_loadu_ps(at) };
            let p = _mm512_maskz_mov_ps(seen, exp(_mm512_sub_ps(s, max)));
            total = _mm512_add_ps(total, p);
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(at, p) };
        }
        let mut totals = [0f32; QB];
        // SAFETY: 16 lanes into a 16-element array.
        unsafe { _mm512_storeu_ps(totals.as_mut_ptr(), total) };
        // The weighted sum, ROWS rows at a time, column groups of up to 64.
        for i0 in (0..nb).step_by(ROWS) {
            let rows = (nb - i0).min(ROWS);
            let len = lens[i0..i0 + rows].iter().copied().max().unwrap_or(1);
            let mut c = 0;
            while c < d {
                let left = d - c;
                let outs: [usize; ROWS] = std::array::from_fn(|r| ((i0 + r.min(rows - 1)) * heads + h) * d + c);
                let cols = Cols { scores, values, i0, len, d, c };
                // SAFETY: AVX-512 F (this function's contract); each group
                // reads and writes columns `c .. c + width ≤ d`.
                unsafe {
                    if left >= 64 {
                        weighted_group::<4>(&cols, [!0; 4], out, &outs, rows, &totals[i0..]);
                        c += 64;
                    } else if left >= 32 {
                        weighted_group::<2>(&cols, [!0; 2], out, &outs, rows, &totals[i0..]);
                        c += 32;
                    } else if left >= 16 {
                        weighted_group::<1>(&cols, [!0], out, &outs, rows, &totals[i0..]);
                        c += 16;
                    } else {
                        weighted_group::<1>(&cols, [(1u16 << left) - 1], out, &outs, rows, &totals[i0..]);
                        c = d;
                    }
                }
            }
        }
    }
}

/// Head `h`'s first `len` keys and values in the block's slot, with the
/// block's `rows` queries of head `h` transposed into `qt` (`d × qb`: row `i`
/// in lane `i`). Shared by this block and the AVX2 one (`qb` = 16 or 8).
pub(super) fn head_inputs<'a>(
    q: &[f32],
    qt: &mut [f32],
    kv: &Kv<'a>,
    h: usize,
    rows: usize,
    qb: usize,
    len: usize,
) -> (&'a [f32], &'a [f32]) {
    let d = kv.head_dim;
    for i in 0..rows {
        for (t, &x) in q[(i * kv.heads + h) * d..][..d].iter().enumerate() {
            qt[t * qb + i] = x;
        }
    }
    let base = (kv.slot * kv.kv_heads + h / (kv.heads / kv.kv_heads)) * kv.context * d;
    (&kv.k_cache[base..][..len * d], &kv.v_cache[base..][..len * d])
}

/// `acc[u] = Σ_t qt[t] · keys[u][t]` for `N` keys (`N × d` of `keys`), the
/// block's rows in the lanes.
///
/// # Safety
/// The CPU has AVX-512 F; `qt` holds `d × 16` floats and `keys` `N × d`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn score_keys<const N: usize>(qt: &[f32], keys: &[f32], d: usize, acc: &mut [__m512; KEYS]) {
    assert!(N <= KEYS && qt.len() >= d * QB && keys.len() >= N * d);
    for t in 0..d {
        // SAFETY: `t < d`: 16 lanes of `qt` and element `t` of each key (checked above).
        unsafe {
            let qv = _mm512_loadu_ps(qt.as_ptr().add(t * QB));
            for (u, a) in acc.iter_mut().enumerate().take(N) {
                *a = _mm512_fmadd_ps(qv, _mm512_set1_ps(*keys.get_unchecked(u * d + t)), *a);
            }
        }
    }
}

/// What one column group of the weighted sum reads (here and in the AVX2 block).
pub(super) struct Cols<'a> {
    /// `keys × QB` weights (`QB`: the block's lanes, 16 here and 8 in the AVX2 block).
    pub scores: &'a [f32],
    /// `keys × d` values.
    pub values: &'a [f32],
    /// The first of the group's rows (its lane in `scores`).
    pub i0: usize,
    /// Keys any of the group's rows sees.
    pub len: usize,
    pub d: usize,
    /// The first column.
    pub c: usize,
}

/// `out[outs[r] ..][.. 16·V] = Σ_j scores[j][i0 + r] · values[j][c ..] / totals[r]`
/// for the group's `rows` rows, the columns of vector `v` limited by `masks[v]`.
///
/// # Safety
/// The CPU has AVX-512 F; the masked columns lie inside `d` and each `outs[r]`
/// starts `d`-long row segment of `out` at column `c`.
#[target_feature(enable = "avx512f")]
unsafe fn weighted_group<const V: usize>(
    g: &Cols<'_>,
    masks: [__mmask16; V],
    out: &mut [f32],
    outs: &[usize; ROWS],
    rows: usize,
    totals: &[f32],
) {
    let mut acc = [[_mm512_setzero_ps(); V]; ROWS];
    for j in 0..g.len {
        let p = &g.scores[j * QB + g.i0..][..ROWS.min(QB - g.i0)];
        let row = &g.values[j * g.d + g.c..];
        let vals: [__m512; V] = std::array::from_fn(|v| {
            // SAFETY: the mask keeps the load inside this row's columns `c .. d`.
            unsafe { _mm512_maskz_loadu_ps(masks[v], row.as_ptr().add(16 * v)) }
        });
        for (r, a) in acc.iter_mut().enumerate().take(rows) {
            let w = _mm512_set1_ps(p[r]);
            for (x, &val) in a.iter_mut().zip(&vals) {
                *x = _mm512_fmadd_ps(w, val, *x);
            }
        }
    }
    for (r, a) in acc.iter().enumerate().take(rows) {
        let inv = _mm512_set1_ps(1.0 / totals[r]);
        let dst = &mut out[outs[r]..];
        for (v, &x) in a.iter().enumerate() {
            // SAFETY: the mask keeps the store inside this row's columns `c .. d`.
            unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr().add(16 * v), masks[v], _mm512_mul_ps(x, inv)) };
        }
    }
}

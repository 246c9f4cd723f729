//! # Prefill attention on AVX-512: thirty-two query rows at a time
//!
//! The rows of a prompt chunk share their slot, so they read the same keys
//! and values. A block of up to [`QB`] of them takes one head at a time and
//! keeps its queries transposed, two 16-lane vectors (the block's two halves)
//! per head dimension: the scores of one key for all the block's queries are
//! `2 · head_dim` FMAs with the key's elements broadcast. No horizontal sum
//! per score, and each key is read once per block instead of once per row.
//!
//! - **Scores**: eight keys at a time for both halves (sixteen independent
//!   FMA chains; each broadcast key element feeds two of them, where a
//!   16-row block spent a load on every FMA), times `1/√head_dim`, into
//!   `scores[key][row]`. A block of at most 16 rows scores one half.
//! - **Softmax**: along the keys with the rows in the lanes, half by half (a
//!   vector `exp`, tested against `f32::exp`); row `i` sees keys
//!   `0 .. lens[i]` (causal), its later scores become zero weights.
//!   The weights are left unnormalized; the output is divided by their sum.
//! - **Weighted sum**: four rows at a time over column groups of up to 96
//!   values, so each value row is loaded once for the four.
//!
//! The sums run in another order than the row-at-a-time path's, within the
//! tolerance every backend's attention is held to against the f64 reference.

use std::arch::x86_64::*;

use super::vector_exp::exp;

/// Query rows per block: two vectors of [`LANES`].
pub(super) const QB: usize = 2 * LANES;
/// The fewest rows a chunk takes blocks for: one vector's worth.
pub(super) const MIN_ROWS: usize = LANES;
/// Rows per vector.
const LANES: usize = 16;
/// Keys scored at once (independent FMA chains per half).
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
    let halves = nb.div_ceil(LANES);
    // The keys each half's rows see (its longest row's).
    let half_len: [usize; 2] =
        std::array::from_fn(|hf| lens.iter().skip(hf * LANES).take(LANES).max().copied().unwrap_or(0));
    let scale = _mm512_set1_ps((d as f32).powf(-0.5));
    let mut lens32 = [0i32; QB];
    for (l, &n) in lens32.iter_mut().zip(lens) {
        *l = n as i32;
    }
    // SAFETY: 16 i32 from each half of a 32-element array.
    let lens_v: [__m512i; 2] =
        std::array::from_fn(|hf| unsafe { _mm512_loadu_si512(lens32.as_ptr().add(hf * LANES).cast()) });
    scores.clear();
    scores.resize(max_len * QB, 0.0);
    // Zeros past the block's rows: the second half's lanes of a short block score to 0.
    qt.clear();
    qt.resize(d * QB, 0.0);
    for h in 0..heads {
        let (keys, values) = head_inputs(q, qt, kv, h, nb, QB, max_len);
        // Scores, KEYS keys at a time, then one at a time (a fixed count, so
        // the FMA loop has no per-key branch).
        let mut j = 0;
        while j < max_len {
            let n = if max_len - j >= KEYS { KEYS } else { 1 };
            let mut acc = [[_mm512_setzero_ps(); 2]; KEYS];
            // SAFETY: keys `j .. j + n ≤ max_len` of `keys` (max_len × d) and `qt` (d × QB).
            unsafe {
                match (n == KEYS, halves) {
                    (true, 2) => score_keys::<KEYS, 2>(qt, &keys[j * d..][..KEYS * d], d, &mut acc),
                    (true, _) => score_keys::<KEYS, 1>(qt, &keys[j * d..][..KEYS * d], d, &mut acc),
                    (false, 2) => score_keys::<1, 2>(qt, &keys[j * d..][..d], d, &mut acc),
                    (false, _) => score_keys::<1, 1>(qt, &keys[j * d..][..d], d, &mut acc),
                }
            }
            for (u, a) in acc.iter().enumerate().take(n) {
                for (hf, &a) in a.iter().enumerate().take(halves) {
                    // SAFETY: row `j + u < max_len` of `scores` (max_len × QB), half `hf`.
                    unsafe {
                        _mm512_storeu_ps(scores.as_mut_ptr().add((j + u) * QB + hf * LANES), _mm512_mul_ps(a, scale))
                    };
                }
            }
            j += n;
        }
        // Softmax along the keys, one row per lane, half by half.
        let mut totals = [0f32; QB];
        for hf in 0..halves {
            let len = half_len[hf];
            let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
            for j in 0..len {
                let seen = _mm512_cmplt_epi32_mask(_mm512_set1_epi32(j as i32), lens_v[hf]);
                // SAFETY: row `j` of `scores`, half `hf`.
                let s = unsafe { _mm512_loadu_ps(scores.as_ptr().add(j * QB + hf * LANES)) };
                max = _mm512_mask_max_ps(max, seen, max, s);
            }
            let mut total = _mm512_setzero_ps();
            for j in 0..len {
                let seen = _mm512_cmplt_epi32_mask(_mm512_set1_epi32(j as i32), lens_v[hf]);
                let at = scores[j * QB + hf * LANES..][..LANES].as_mut_ptr();
                // SAFETY: row `j` of `scores`, 16 lanes of half `hf`.
                let s = unsafe { _mm512_loadu_ps(at) };
                let p = _mm512_maskz_mov_ps(seen, exp(_mm512_sub_ps(s, max)));
                total = _mm512_add_ps(total, p);
                // SAFETY: as above.
                unsafe { _mm512_storeu_ps(at, p) };
            }
            // SAFETY: 16 lanes into half `hf` of a 32-element array.
            unsafe { _mm512_storeu_ps(totals.as_mut_ptr().add(hf * LANES), total) };
        }
        // The weighted sum, ROWS rows at a time, column groups of up to 96.
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
                    if (96..128).contains(&left) {
                        // Six vectors in one pass (a 96-wide head, as bitnet_b1_58-large's):
                        // each weight broadcast once for all of them.
                        weighted_group::<6>(&cols, [!0; 6], out, &outs, rows, &totals[i0..]);
                        c += 96;
                    } else if left >= 64 {
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
/// in column `i`). Shared by this block and the AVX2 one (`qb` = 32 or 8).
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

/// `acc[u][hf] = Σ_t qt[t][hf] · keys[u][t]` for `N` keys (`N × d` of
/// `keys`) and the first `HV` halves of the block, its rows in the lanes.
///
/// # Safety
/// The CPU has AVX-512 F; `qt` holds `d × QB` floats and `keys` `N × d`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn score_keys<const N: usize, const HV: usize>(
    qt: &[f32],
    keys: &[f32],
    d: usize,
    acc: &mut [[__m512; 2]; KEYS],
) {
    assert!(N <= KEYS && HV <= 2 && qt.len() >= d * QB && keys.len() >= N * d);
    for t in 0..d {
        // SAFETY: `t < d`: the halves of `qt`'s row `t` and element `t` of each key (checked above).
        unsafe {
            let qv: [__m512; HV] = std::array::from_fn(|hf| _mm512_loadu_ps(qt.as_ptr().add(t * QB + hf * LANES)));
            for (u, a) in acc.iter_mut().enumerate().take(N) {
                let k = _mm512_set1_ps(*keys.get_unchecked(u * d + t));
                for (x, &qv) in a.iter_mut().zip(&qv) {
                    *x = _mm512_fmadd_ps(qv, k, *x);
                }
            }
        }
    }
}

/// What one column group of the weighted sum reads (here and in the AVX2 block).
pub(super) struct Cols<'a> {
    /// `keys × QB` weights (`QB`: the block's rows, 32 here and 8 in the AVX2 block).
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

//! # Decode attention on AVX2: a KV head's query heads at once, 8 lanes
//!
//! [`super::attention_groups`]' task for CPUs with AVX2 and FMA but not
//! AVX-512 (or under `TRINITY_CPU_PATH=avx2`): the same grouping (each key and
//! value row loaded once for the `G` query heads of its KV head), the same
//! unnormalized result for flash-decoding's split, the same prefetch. What
//! differs is the width, and that AVX2 has no lane masks: `head_dim` must be
//! a multiple of 8 (64, 96 and 128 are), and the caller keeps the
//! head-at-a-time path for any other.
//!
//! - **Scores**: per key, each 8-value chunk is loaded once and multiplied into
//!   the `G` queries' accumulators, `C` of them per query taking the chunks in
//!   turn (`G · C = 8`, so eight FMA chains hide the FMA latency whatever the
//!   group), then one horizontal sum per query.
//! - **Softmax**: [`super::exp_shifted`] (8-lane `exp` on this path).
//! - **Weighted sum**: column blocks of `8 · V` values whose `G × V` sums stay
//!   in registers across the rows: `G · V ≤ 12` of AVX2's 16, beside the
//!   broadcast weight and the loaded values (2B-4T's groups of 4 with `V = 3`
//!   ran its 30 layers' caches at ctx 1024 in 6.0–6.4 ms against 7.0–7.2 with
//!   `V = 2`, alternated, on a Zen 5 EPYC under `TRINITY_CPU_PATH=avx2`).
//!
//! The sums run in another order than the head-at-a-time path's, within the
//! tolerance every backend's attention is held to against the f64 reference.

use std::arch::x86_64::*;

use super::attention_groups::checked_head_dim;
use super::{ATTENTION_PREFETCH_BYTES, exp_shifted};

/// `attention_group` of [`super::attention_groups`] in 8 lanes: one row's
/// attention for the `G` query heads of one KV head over `len` cached
/// positions, unnormalized (`out[g] = Σ_j e^(s_gj − max_g) · v_j`,
/// `parts[g] = (max_g, Σ_j e^(s_gj − max_g))`). `C` accumulators per query
/// for the scores, `V` vectors per column block.
///
/// - `q`: the `G` queries, `G × head_dim`, `head_dim` a multiple of 8.
/// - `keys`, `values`: the KV head's cached positions, `len × head_dim` each.
/// - `out`: the `G` heads' sums, `G × head_dim`.
/// - `parts`: the `G` heads' (max, total).
/// - `scores`: this thread's scratch (resized to `G × len`).
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn attention_group<const G: usize, const C: usize, const V: usize>(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    len: usize,
    out: &mut [f32],
    parts: &mut [(f32, f32)],
    scores: &mut Vec<f32>,
) {
    let d = checked_head_dim(G, q, keys, values, len, out, parts);
    assert!(d.is_multiple_of(8), "head_dim {d}: whole 8-value chunks only");
    scores.clear();
    scores.resize(G * len, 0.0);
    let scale = (d as f32).powf(-0.5);
    for j in 0..len {
        let key = &keys[j * d..][..d];
        let mut acc = [[_mm256_setzero_ps(); C]; G];
        for (c, k) in key.chunks_exact(8).enumerate() {
            // A hint: it never faults, so the address may run past the keys.
            _mm_prefetch::<_MM_HINT_T0>(k.as_ptr().cast::<i8>().wrapping_add(ATTENTION_PREFETCH_BYTES));
            // SAFETY: 8 values of the key.
            let k = unsafe { _mm256_loadu_ps(k.as_ptr()) };
            for (g, a) in acc.iter_mut().enumerate() {
                // SAFETY: 8 values of query `g` (`d` values at `g · d`, `8 · c + 8 ≤ d`).
                let x = unsafe { _mm256_loadu_ps(q[g * d + 8 * c..].as_ptr()) };
                a[c % C] = _mm256_fmadd_ps(x, k, a[c % C]);
            }
        }
        for (g, a) in acc.iter().enumerate() {
            let sum = a[1..].iter().fold(a[0], |s, x| _mm256_add_ps(s, *x));
            scores[g * len + j] = horizontal_sum(sum) * scale;
        }
    }
    for (g, part) in parts.iter_mut().enumerate() {
        *part = exp_shifted(&mut scores[g * len..][..len]);
    }
    let mut c = 0;
    while c < d {
        // The last block may be narrower: `live` vectors of the `V`.
        let live = ((d - c) / 8).min(V);
        let mut acc = [[_mm256_setzero_ps(); V]; G];
        for j in 0..len {
            let row = &values[j * d + c..][..8 * live];
            let x: [__m256; V] = std::array::from_fn(|v| {
                if v >= live {
                    return _mm256_setzero_ps();
                }
                let at = row[8 * v..].as_ptr();
                _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>().wrapping_add(ATTENTION_PREFETCH_BYTES));
                // SAFETY: 8 values of the row (`8 · v + 8 ≤ 8 · live`).
                unsafe { _mm256_loadu_ps(at) }
            });
            for (g, a) in acc.iter_mut().enumerate() {
                let w = _mm256_set1_ps(scores[g * len + j]);
                for (a, x) in a.iter_mut().zip(&x) {
                    *a = _mm256_fmadd_ps(w, *x, *a);
                }
            }
        }
        for (g, a) in acc.iter().enumerate() {
            for (v, a) in a.iter().enumerate().take(live) {
                // SAFETY: 8 of head `g`'s `d` outputs (`c + 8 · v + 8 ≤ d`).
                unsafe { _mm256_storeu_ps(out[g * d + c + 8 * v..][..8].as_mut_ptr(), *a) };
            }
        }
        c += 8 * live;
    }
}

/// The sum of a vector's 8 lanes.
#[target_feature(enable = "avx2")]
fn horizontal_sum(x: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

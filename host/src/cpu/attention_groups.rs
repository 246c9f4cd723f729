//! # Decode attention on AVX-512: a KV head's query heads at once
//!
//! With grouped-query attention, `G = heads / kv_heads` query heads read the
//! same keys and values. Taking them one head at a time streams a layer's
//! cache from memory once and then reads it again from the L2 for each other
//! head of its group; here one task takes the whole group, so each key and
//! value row is loaded once and used `G` times while the next rows stream in.
//! Without GQA (`G = 1`) it is the plain head-at-a-time path, with the same
//! inlined scores, vector softmax and 128-column value blocks.
//!
//! A task may take a part of the cached positions (flash-decoding's split):
//! its softmax is left unnormalized and returned with its max and total, and
//! the caller ([`super::attention`]) combines the parts. 2B-4T has five KV
//! heads, so one decode row was five tasks on two threads (one thread took
//! three); split in two, ten tasks share them evenly.
//!
//! - **Scores**: per key, each 16-value chunk of the key is loaded once and
//!   multiplied into the `G` queries' accumulators (two per query, alternate
//!   chunks, so the FMA chains are half as long), then one horizontal sum per
//!   query, times `1/√head_dim`, into `scores[g][key]`.
//! - **Softmax**: per query, [`super::exp_shifted`] (`e^(s − max)`, the
//!   max and the total returned, not divided).
//! - **Weighted sum**: column blocks of `16 · V` values whose `G × V` sums stay
//!   in registers across the rows; each value vector is loaded once for the
//!   `G` queries.
//!
//! Keys and values are prefetched [`super::ATTENTION_PREFETCH_BYTES`] ahead
//! (the values in every column block: a block touches only its own lines of
//! each row, so the next block's come from memory too).
//! The sums run in another order than the head-at-a-time path's, within the
//! tolerance every backend's attention is held to against the f64 reference.

use std::arch::x86_64::*;

use super::{ATTENTION_PREFETCH_BYTES, exp_shifted, first_lanes};

/// One row's attention for the `G` query heads of one KV head, over `len`
/// cached positions, unnormalized: `out[g] = Σ_j e^(s_gj − max_g) · v_j` and
/// `parts[g] = (max_g, Σ_j e^(s_gj − max_g))`, so `out[g] / parts[g].1` is the
/// attention over these positions.
///
/// - `q`: the `G` queries, `G × head_dim` (consecutive heads of the row).
/// - `keys`, `values`: the KV head's cached positions, `len × head_dim` each.
/// - `out`: the `G` heads' sums, `G × head_dim`.
/// - `parts`: the `G` heads' (max, total).
/// - `scores`: this thread's scratch (resized to `G × len`).
///
/// # Safety
/// The CPU has AVX-512 F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn attention_group<const G: usize, const V: usize>(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    len: usize,
    out: &mut [f32],
    parts: &mut [(f32, f32)],
    scores: &mut Vec<f32>,
) {
    let d = checked_head_dim(G, q, keys, values, len, out, parts);
    scores.clear();
    scores.resize(G * len, 0.0);
    let scale = (d as f32).powf(-0.5);
    let chunks = d.div_ceil(16);
    for j in 0..len {
        let key = keys[j * d..].as_ptr();
        let mut acc = [[_mm512_setzero_ps(); 2]; G];
        for c in (0..chunks).step_by(2) {
            for (half, c) in [c, c + 1].into_iter().enumerate() {
                let at = key.wrapping_add(16 * c);
                // A hint: it never faults, so the address may run past the keys.
                _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>().wrapping_add(ATTENTION_PREFETCH_BYTES));
                let live = first_lanes(d.saturating_sub(16 * c));
                // SAFETY: the mask limits the load to the key's `d` values (none
                // past an odd last chunk, hence the wrapping addresses).
                let k = unsafe { _mm512_maskz_loadu_ps(live, at) };
                for (g, a) in acc.iter_mut().enumerate() {
                    // SAFETY: as above, in query `g` (`d` values at `g · d`).
                    let x = unsafe { _mm512_maskz_loadu_ps(live, q.as_ptr().wrapping_add(g * d + 16 * c)) };
                    a[half] = _mm512_fmadd_ps(x, k, a[half]);
                }
            }
        }
        for (g, a) in acc.iter().enumerate() {
            scores[g * len + j] = _mm512_reduce_add_ps(_mm512_add_ps(a[0], a[1])) * scale;
        }
    }
    for (g, part) in parts.iter_mut().enumerate() {
        *part = exp_shifted(&mut scores[g * len..][..len]);
    }
    for c in (0..d).step_by(16 * V) {
        let masks: [u16; V] = std::array::from_fn(|v| first_lanes(d.saturating_sub(c + 16 * v)));
        let mut acc = [[_mm512_setzero_ps(); V]; G];
        for j in 0..len {
            let row = values[j * d..].as_ptr();
            let x: [__m512; V] = std::array::from_fn(|v| {
                let at = row.wrapping_add(c + 16 * v);
                if masks[v] != 0 {
                    _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>().wrapping_add(ATTENTION_PREFETCH_BYTES));
                }
                // SAFETY: the mask limits the load to the row's `d` values (a vector
                // wholly past them has no lane set, hence the wrapping address).
                unsafe { _mm512_maskz_loadu_ps(masks[v], at) }
            });
            for (g, a) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_ps(scores[g * len + j]);
                for (a, x) in a.iter_mut().zip(&x) {
                    *a = _mm512_fmadd_ps(w, *x, *a);
                }
            }
        }
        for (g, a) in acc.iter().enumerate() {
            for (v, a) in a.iter().enumerate() {
                // SAFETY: as above, into head `g`'s `d` outputs.
                unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().wrapping_add(g * d + c + 16 * v), masks[v], *a) };
            }
        }
    }
}

/// The head dimension of a group task's operands (`q` holds `groups` heads),
/// after checking that they hold what the task reads and writes.
pub(super) fn checked_head_dim(
    groups: usize,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    len: usize,
    out: &[f32],
    parts: &[(f32, f32)],
) -> usize {
    let d = q.len() / groups;
    assert!(
        d > 0
            && len > 0
            && q.len() == groups * d
            && out.len() == groups * d
            && parts.len() == groups
            && keys.len() >= len * d
            && values.len() >= len * d,
        "attention group shapes"
    );
    d
}

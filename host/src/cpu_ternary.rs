//! # The CPU's ternary matmul: int8 activations × device-layout trits
//!
//! The weights stay in the device layout (16 interleaved 2-bit codes per
//! word), so the CPU reads 2 bits per weight like the GPU does. Codes are
//! `trit + 1` (0, 1, 2), unsigned, which is what the unsigned × signed byte
//! dot products of x86 want; the activation row sum is subtracted at the end.
//!
//! - **AVX-512 VNNI** (chosen at run time): a 512-bit load holds 256 weights;
//!   `(w >> 2j) & 0x03` gives, in byte `4q + b`, the code of weight
//!   `16q + 4j + b`. The activations of each full 256-weight block are
//!   permuted once per call to match (`perm[64j + 4q + b] = a[16q + 4j + b]`),
//!   so each extraction meets one contiguous 64-byte activation vector in
//!   `vpdpbusd`. Four activation rows share each decoded weight vector.
//! - **Portable**: the same arithmetic, four weights at a time.
//!
//! Rows of the output are split across rayon's pool; integer results are
//! exact, so this path equals the scalar reference bit for bit.

use rayon::prelude::*;

use crate::matmul::{Precision, QuantizedActivations, dequantize};
use crate::ternary::DeviceTernary;
use kernels_gpu::format::device_layout::codes;

/// Weights per AVX-512 block.
const BLOCK: usize = 256;
/// Activation rows that share one decoded weight vector.
const MR: usize = 4;

/// Which path runs on this CPU.
pub fn simd_level() -> &'static str {
    if has_vnni() { "avx512-vnni" } else { "portable" }
}

fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The activations with each full 256-weight block permuted for the AVX-512 path.
fn permute_blocks(x: &QuantizedActivations) -> Vec<i8> {
    let mut out = x.values().to_vec();
    let full = x.k_pad / BLOCK;
    for (row_out, row_in) in out.chunks_mut(x.k_pad).zip(x.values().chunks(x.k_pad)) {
        for blk in 0..full {
            let (o, i) = (&mut row_out[blk * BLOCK..][..BLOCK], &row_in[blk * BLOCK..][..BLOCK]);
            for j in 0..4 {
                for q in 0..16 {
                    o[64 * j + 4 * q..][..4].copy_from_slice(&i[16 * q + 4 * j..][..4]);
                }
            }
        }
    }
    out
}

/// `Y = dequantize(X · Wᵀ)` for any M; see the module docs.
pub fn ternary_matmul(x: &QuantizedActivations, w: &DeviceTernary, precision: Precision) -> Vec<f32> {
    let (m, n) = (x.rows, w.rows());
    let vnni = has_vnni();
    let act = if vnni { permute_blocks(x) } else { x.values().to_vec() };
    // Output transposed (n × m), so each parallel chunk owns whole weight rows.
    let mut yt = vec![0f32; n * m];
    const ROWS_PER_TASK: usize = 16;
    yt.par_chunks_mut(ROWS_PER_TASK * m).enumerate().for_each(|(task, chunk)| {
        let mut dots = [0i32; MR];
        for (local, out_row) in chunk.chunks_mut(m).enumerate() {
            let row = task * ROWS_PER_TASK + local;
            let words = &w.words()[row * w.words_per_row()..][..w.words_per_row()];
            for m0 in (0..m).step_by(MR) {
                let rows = (m - m0).min(MR);
                let acts: [&[i8]; MR] = std::array::from_fn(|r| {
                    let rr = (m0 + r).min(m - 1);
                    &act[rr * x.k_pad..][..x.k_pad]
                });
                dot_rows(words, &acts, vnni, &mut dots);
                for r in 0..rows {
                    let v = dequantize(dots[r] - x.sums[m0 + r], w.scale(), x.scales[m0 + r]);
                    out_row[m0 + r] = precision.round(v);
                }
            }
        }
    });
    let mut y = vec![0f32; m * n];
    for (c, row) in yt.chunks(m.max(1)).enumerate() {
        for (r, &v) in row.iter().enumerate() {
            y[r * n + c] = v;
        }
    }
    y
}

/// Σ code·a over one weight row for `MR` activation rows.
fn dot_rows(words: &[u32], acts: &[&[i8]; MR], vnni: bool, out: &mut [i32; MR]) {
    let full_words = if vnni { (words.len() * 16 / BLOCK) * (BLOCK / 16) } else { 0 };
    *out = [0; MR];
    #[cfg(target_arch = "x86_64")]
    if vnni {
        // SAFETY: the CPU has AVX-512 F/BW/VNNI (checked by `has_vnni`).
        *out = unsafe { dot_rows_vnni(&words[..full_words], acts) };
    }
    // Portable path (and the AVX-512 path's tail): natural activation order.
    for (wi, &word) in words.iter().enumerate().skip(full_words) {
        for j in 0..4u32 {
            let c = codes(word, j);
            let k = 16 * wi + 4 * j as usize;
            for (o, a) in out.iter_mut().zip(acts) {
                let av = u32::from_le_bytes([a[k] as u8, a[k + 1] as u8, a[k + 2] as u8, a[k + 3] as u8]);
                *o = kernels_gpu::device::dp4a_reference(c, av, *o);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn dot_rows_vnni(words: &[u32], acts: &[&[i8]; MR]) -> [i32; MR] {
    use std::arch::x86_64::*;
    let mask = _mm512_set1_epi32(0x0303_0303);
    let mut acc = [_mm512_setzero_si512(); MR];
    for (blk, chunk) in words.chunks_exact(BLOCK / 16).enumerate() {
        // SAFETY: 16 words = 64 bytes are readable; unaligned load.
        let wv = unsafe { _mm512_loadu_si512(chunk.as_ptr().cast()) };
        let c = [
            _mm512_and_si512(wv, mask),
            _mm512_and_si512(_mm512_srli_epi32::<2>(wv), mask),
            _mm512_and_si512(_mm512_srli_epi32::<4>(wv), mask),
            _mm512_and_si512(_mm512_srli_epi32::<6>(wv), mask),
        ];
        for (j, cj) in c.iter().enumerate() {
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: the permuted block has 64 bytes at offset 64j.
                let av = unsafe { _mm512_loadu_si512(acts[r][blk * BLOCK + 64 * j..].as_ptr().cast()) };
                *a = _mm512_dpbusd_epi32(*a, *cj, av);
            }
        }
    }
    acc.map(|a| _mm512_reduce_add_epi32(a))
}

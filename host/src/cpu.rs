//! # The CPU paths: fast, multithreaded, SIMD where it pays
//!
//! What the `cpu` arm of every op in [`crate::ops`] runs, on host slices.
//! The scalar references the other backends are checked against are in
//! [`crate::reference`], written on their own (they share no arithmetic helper
//! with these paths or with the kernels).

use half::f16;
use rayon::prelude::*;

use crate::buffer::ActivationElem;
use kernels_gpu::format;

/// `unpack_i8` on the CPU.
pub fn unpack_i8(words: &[u32], rows: usize, cols: usize, out: &mut [i8]) {
    if cols == 0 || rows == 0 {
        return;
    }
    let wpr = format::words_per_row(cols);
    out.par_chunks_mut(cols).zip(words.par_chunks(wpr)).for_each(|(row, words)| {
        for (chunk, &word) in row.chunks_mut(format::WEIGHTS_PER_WORD).zip(words) {
            for (j, o) in chunk.iter_mut().enumerate() {
                *o = format::decode(word >> (2 * j));
            }
        }
    });
}

/// `unpack_f16` on the CPU.
pub fn unpack_f16(words: &[u32], rows: usize, cols: usize, scale: f32, out: &mut [f16]) {
    let mut trits = vec![0i8; rows * cols];
    unpack_i8(words, rows, cols, &mut trits);
    let values = [f16::from_f32(-scale), f16::ZERO, f16::from_f32(scale)];
    out.par_iter_mut().zip(trits.par_iter()).for_each(|(o, &t)| *o = values[(t + 1) as usize]);
}

/// The quantizer on the CPU: `rows × cols` activations into int8 rows of `k_pad`.
pub fn quantize<E: ActivationElem>(
    x: &[E],
    rows: usize,
    cols: usize,
    k_pad: usize,
    words: &mut [u32],
    scales: &mut [f32],
    sums: &mut [i32],
) {
    let values: &mut [i8] = bytemuck::cast_slice_mut(words);
    let per_row: Vec<(f32, i32)> = values[..rows * k_pad]
        .par_chunks_mut(k_pad)
        .enumerate()
        .map_init(Vec::new, |buf, (r, q)| {
            q.fill(0);
            let row = E::row_as_f32(&x[r * cols..][..cols], buf);
            quantize_row(row, &mut q[..cols])
        })
        .collect();
    for (r, (scale, sum)) in per_row.into_iter().enumerate() {
        scales[r] = scale;
        sums[r] = sum;
    }
}

/// One row of the quantizer with the kernels' scale and rounding functions;
/// returns (scale, sum).
fn quantize_row(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { quantize_row_avx2(x, q) };
    }
    quantize_row_generic(x, q)
}

#[inline(always)]
fn quantize_row_generic(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    use kernels_gpu::matmul::{activation_scale, quantize_value};
    // A branchy max (not f32::max, whose NaN rule blocks vectorization); |x| is exact.
    let absmax = x.iter().fold(0.0f32, |m, v| if v.abs() > m { v.abs() } else { m });
    let scale = activation_scale(absmax);
    let mut sum = 0i32;
    for (o, &v) in q.iter_mut().zip(x) {
        *o = quantize_value(v, scale);
        sum += *o as i32;
    }
    (scale, sum)
}

/// The same code compiled for AVX2, where rounding is one instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_row_avx2(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    quantize_row_generic(x, q)
}

/// FP32 `C = A · Bᵀ` with `matrixmultiply` (A: m×k, B: n×k, C: m×n).
pub fn sgemm(a: &[f32], b: &[f32], c: &mut [f32], m: usize, n: usize, k: usize) {
    assert!(a.len() >= m * k && b.len() >= n * k && c.len() >= m * n, "sgemm buffers checked by the op");
    // SAFETY: the strides describe the buffers (lengths asserted above): A is
    // m×k row-major, B is n×k row-major read as its transpose (k×n with
    // strides 1, k), C is m×n.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            1,
            k as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    };
}

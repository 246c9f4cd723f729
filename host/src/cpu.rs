//! # The CPU backend: the reference
//!
//! Every kernel has a plain scalar reference here (`*_reference`) written for
//! obviousness, and the backend's fast path (multithreaded with rayon) is
//! tested against it. GPU and emulator results are checked against this backend.

use half::f16;
use rayon::prelude::*;

use crate::backend::{
    Backend, BackendKind, check_quantize, check_sgemm, check_ternary, check_trihash_batch, check_trihash_search,
};
use crate::error::KernelResult;
use crate::matmul::{Activations, Precision, QuantizedActivations};
use crate::ternary::DeviceTernary;
use crate::ternary::PackedTernary;
use crate::trihash;
use kernels_gpu::format;

/// The CPU backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend;

/// Scalar reference of `unpack_i8`.
pub fn unpack_i8_reference(w: &PackedTernary) -> Vec<i8> {
    w.unpack()
}

/// Scalar reference of `unpack_f16`.
pub fn unpack_f16_reference(w: &PackedTernary) -> Vec<f16> {
    w.unpack().into_iter().map(|t| f16::from_f32(t as f32 * w.scale())).collect()
}

impl Backend for CpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn describe(&self) -> String {
        format!("CPU reference, {} threads", rayon::current_num_threads())
    }

    fn unpack_i8(&self, w: &PackedTernary) -> KernelResult<Vec<i8>> {
        let mut out = vec![0i8; w.rows() * w.cols()];
        if w.cols() == 0 {
            return Ok(out);
        }
        let wpr = w.words_per_row();
        out.par_chunks_mut(w.cols()).zip(w.words().par_chunks(wpr)).for_each(|(row, words)| {
            for (chunk, &word) in row.chunks_mut(format::WEIGHTS_PER_WORD).zip(words) {
                for (j, o) in chunk.iter_mut().enumerate() {
                    *o = format::decode(word >> (2 * j));
                }
            }
        });
        Ok(out)
    }

    fn unpack_f16(&self, w: &PackedTernary) -> KernelResult<Vec<f16>> {
        let values = [f16::from_f32(-w.scale()), f16::ZERO, f16::from_f32(w.scale())];
        Ok(self.unpack_i8(w)?.into_par_iter().map(|t| values[(t + 1) as usize]).collect())
    }

    fn trihash_batch(&self, messages: &[i8]) -> KernelResult<Vec<i8>> {
        check_trihash_batch(messages)?;
        Ok(trihash::sliced::hash_batch(messages))
    }

    fn trihash_search(&self, base: &[i8; 729], first_batch: u64, batches: u64, mwm: usize) -> KernelResult<Vec<u64>> {
        check_trihash_search(batches, mwm)?;
        Ok(trihash::sliced::search(base, first_batch, batches, mwm))
    }

    fn quantize(&self, x: Activations<'_>, rows: usize, cols: usize) -> KernelResult<QuantizedActivations> {
        check_quantize(&x, rows, cols)?;
        let mut out = QuantizedActivations::zeroed(rows, cols);
        let k_pad = out.k_pad;
        let values: &mut [i8] = bytemuck::cast_slice_mut(&mut out.words);
        let per_row: Vec<(f32, i32)> = values
            .par_chunks_mut(k_pad)
            .enumerate()
            .map_init(Vec::new, |buf, (r, q)| {
                let row: &[f32] = match x {
                    Activations::F32(v) => &v[r * cols..][..cols],
                    Activations::F16(v) => {
                        buf.resize(cols, 0.0);
                        half::slice::HalfFloatSliceExt::convert_to_f32_slice(&v[r * cols..][..cols], buf);
                        buf
                    }
                };
                quantize_row(row, &mut q[..cols])
            })
            .collect();
        for (r, (scale, sum)) in per_row.into_iter().enumerate() {
            out.scales[r] = scale;
            out.sums[r] = sum;
        }
        Ok(out)
    }

    fn ternary_gemv(
        &self,
        x: &QuantizedActivations,
        w: &DeviceTernary,
        precision: Precision,
    ) -> KernelResult<Vec<f32>> {
        check_ternary("ternary_gemv", x, w, kernels_gpu::matmul::GEMV_MAX_M)?;
        Ok(crate::cpu_ternary::ternary_matmul(x, w, precision))
    }

    fn ternary_gemm(
        &self,
        x: &QuantizedActivations,
        w: &DeviceTernary,
        precision: Precision,
    ) -> KernelResult<Vec<f32>> {
        check_ternary("ternary_gemm", x, w, usize::MAX)?;
        Ok(crate::cpu_ternary::ternary_matmul(x, w, precision))
    }

    fn sgemm(&self, a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> KernelResult<Vec<f32>> {
        check_sgemm(a, b, m, n, k)?;
        let mut c = vec![0f32; m * n];
        // SAFETY: the strides describe the buffers: A is m×k row-major, B is
        // n×k row-major read as its transpose (k×n with strides 1, k), C is m×n.
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
        Ok(c)
    }
}

/// One row of the quantizer with the kernels' own scale and rounding
/// functions (so it is bit-identical to them); returns (scale, sum).
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

/// Scalar reference of `trihash_batch`: the sponge, message by message.
pub fn trihash_batch_reference(messages: &[i8]) -> Vec<i8> {
    messages
        .chunks(kernels_gpu::curl::HASH_TRITS)
        .flat_map(|m| {
            let mut c = trihash::CurlP81::new();
            c.absorb(m).expect("one block");
            c.squeeze(kernels_gpu::curl::HASH_TRITS).expect("one block")
        })
        .collect()
}

/// Scalar reference of `trihash_search` (the `trihash_pow` kernel): every
/// nonce of the range hashed by the definition.
pub fn trihash_search_reference(base: &[i8; 729], first_batch: u64, batches: u64, mwm: usize) -> Vec<u64> {
    use kernels_gpu::curl::{HASH_TRITS, LANES_PER_BATCH, NONCE_TRITS};
    let lanes = LANES_PER_BATCH as u64;
    (first_batch * lanes..(first_batch + batches) * lanes)
        .filter(|&v| {
            let mut state = *base;
            state[HASH_TRITS - NONCE_TRITS..HASH_TRITS].copy_from_slice(&trihash::Pow::nonce(v));
            trihash::transform_reference(&mut state);
            trihash::trailing_zeros(&state[..HASH_TRITS]) >= mwm
        })
        .collect()
}

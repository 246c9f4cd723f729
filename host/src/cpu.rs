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
use crate::matmul::{Activations, Precision, QuantizedActivations, quantize_reference};
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
        // Rows are independent: quantize them in parallel with the reference's own code.
        let parts: Vec<QuantizedActivations> = (0..rows)
            .into_par_iter()
            .map(|r| {
                let row = match x {
                    Activations::F32(v) => Activations::F32(&v[r * cols..][..cols]),
                    Activations::F16(v) => Activations::F16(&v[r * cols..][..cols]),
                };
                quantize_reference(row, 1, cols)
            })
            .collect();
        let mut out = QuantizedActivations::zeroed(rows, cols);
        for (r, p) in parts.into_iter().enumerate() {
            out.words[r * out.k_pad / 4..][..out.k_pad / 4].copy_from_slice(&p.words);
            out.scales[r] = p.scales[0];
            out.sums[r] = p.sums[0];
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

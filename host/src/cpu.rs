//! # The CPU backend: the reference
//!
//! Every kernel has a plain scalar reference here (`*_reference`) written for
//! obviousness, and the backend's fast path (multithreaded with rayon) is
//! tested against it. GPU and emulator results are checked against this backend.

use half::f16;
use rayon::prelude::*;

use crate::backend::{Backend, BackendKind};
use crate::error::KernelResult;
use crate::ternary::PackedTernary;
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
}

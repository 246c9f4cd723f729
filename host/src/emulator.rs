//! # The emulator backend: the kernel source on the CPU SIMT emulator
//!
//! Same launch geometry as CUDA ([`crate::geometry`]); inputs and outputs are
//! host buffers wrapped in bounds-checked views.

use half::f16;
use kernels_gpu::device::{In, Out};
use kernels_gpu::kernels;

use crate::backend::{Backend, BackendKind, shape2};
use crate::error::{KernelError, KernelResult};
use crate::geometry;
use crate::ternary::PackedTernary;

/// The emulator backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct EmuBackend;

fn emu_err(kernel: &'static str, shape: String) -> impl FnOnce(kernels_gpu::emu::EmuError) -> KernelError {
    move |source| KernelError::Emu { kernel, shape, source }
}

impl Backend for EmuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Emu
    }

    fn describe(&self) -> String {
        "CPU SIMT emulator (kernel source, one OS thread per GPU thread)".to_owned()
    }

    fn unpack_i8(&self, w: &PackedTernary) -> KernelResult<Vec<i8>> {
        let mut out = vec![0i8; w.rows() * w.cols()];
        let g = geometry::unpack(w.words().len());
        // SAFETY: the views cover live buffers of the sizes the kernel's contract names.
        unsafe {
            kernels::unpack_i8::launch(
                g.emu(),
                In::from_slice(w.words()),
                Out::from_slice(&mut out),
                w.rows() as u32,
                w.cols() as u32,
            )
        }
        .map_err(emu_err(kernels::unpack_i8::NAME, shape2(w.rows(), w.cols())))?;
        Ok(out)
    }

    fn unpack_f16(&self, w: &PackedTernary) -> KernelResult<Vec<f16>> {
        let mut out = vec![0u16; w.rows() * w.cols()];
        let g = geometry::unpack(w.words().len());
        // SAFETY: as above.
        unsafe {
            kernels::unpack_f16::launch(
                g.emu(),
                In::from_slice(w.words()),
                Out::from_slice(&mut out),
                w.rows() as u32,
                w.cols() as u32,
                w.scale(),
            )
        }
        .map_err(emu_err(kernels::unpack_f16::NAME, shape2(w.rows(), w.cols())))?;
        Ok(out.into_iter().map(f16::from_bits).collect())
    }
}

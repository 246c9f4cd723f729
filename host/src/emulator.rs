//! # The emulator backend: the kernel source on the CPU SIMT emulator
//!
//! Same launch geometry as CUDA ([`crate::geometry`]); inputs and outputs are
//! host buffers wrapped in bounds-checked views.

use half::f16;
use kernels_gpu::curl::{HASH_TRITS, LANES_PER_BATCH};
use kernels_gpu::device::{In, Out};
use kernels_gpu::kernels;

use crate::backend::{
    Backend, BackendKind, check_quantize, check_sgemm, check_ternary, check_trihash_batch, check_trihash_search,
    shape2, shape3,
};
use crate::error::{KernelError, KernelResult};
use crate::geometry;
use crate::matmul::{Activations, Precision, QuantizedActivations};
use crate::ternary::DeviceTernary;
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

    fn trihash_batch(&self, messages: &[i8]) -> KernelResult<Vec<i8>> {
        check_trihash_batch(messages)?;
        let count = messages.len() / HASH_TRITS;
        let mut out = vec![0i8; messages.len()];
        let g = geometry::trihash(count.div_ceil(LANES_PER_BATCH) as u64, EMU_MAX_BLOCKS);
        // SAFETY: the views cover live buffers of `count · 243` trits.
        unsafe {
            kernels::trihash_batch::launch(g.emu(), In::from_slice(messages), Out::from_slice(&mut out), count as u32)
        }
        .map_err(emu_err(kernels::trihash_batch::NAME, format!("{count} messages")))?;
        Ok(out)
    }

    fn trihash_search(&self, base: &[i8; 729], first_batch: u64, batches: u64, mwm: usize) -> KernelResult<Vec<u64>> {
        check_trihash_search(batches, mwm)?;
        let mut found = Vec::new();
        for (first, n) in launch_chunks(first_batch, batches) {
            let capacity = n as usize * LANES_PER_BATCH;
            let mut hits = vec![0u32; 1 + capacity];
            let g = geometry::trihash(n, EMU_MAX_BLOCKS);
            // SAFETY: `base` has 729 trits, `hits` 1 + capacity words with hits[0] = 0.
            unsafe {
                kernels::trihash_pow::launch(
                    g.emu(),
                    In::from_slice(base),
                    first,
                    n as u32,
                    mwm as u32,
                    Out::from_slice(&mut hits),
                    capacity as u32,
                )
            }
            .map_err(emu_err(kernels::trihash_pow::NAME, format!("{n} batches from {first}, mwm {mwm}")))?;
            let count = hits[0] as usize;
            found.extend(hits[1..1 + count].iter().map(|&o| first * LANES_PER_BATCH as u64 + o as u64));
        }
        found.sort_unstable();
        Ok(found)
    }

    fn quantize(&self, x: Activations<'_>, rows: usize, cols: usize) -> KernelResult<QuantizedActivations> {
        check_quantize(&x, rows, cols)?;
        let mut out = QuantizedActivations::zeroed(rows, cols);
        let g = geometry::quantize(rows, EMU_MAX_BLOCKS).emu();
        let (r, c, kp) = (rows as u32, cols as u32, out.k_pad as u32);
        let q = Out::from_slice(bytemuck::cast_slice_mut::<u32, i8>(&mut out.words));
        let (scales, sums) = (Out::from_slice(&mut out.scales), Out::from_slice(&mut out.sums));
        // SAFETY: every view covers a live buffer of the size the kernel's contract names.
        let result = unsafe {
            match x {
                Activations::F32(v) => kernels::quantize_f32::launch(g, In::from_slice(v), q, scales, sums, r, c, kp),
                Activations::F16(v) => {
                    let bits: &[u16] = bytemuck::cast_slice(v);
                    kernels::quantize_f16::launch(g, In::from_slice(bits), q, scales, sums, r, c, kp)
                }
            }
        };
        let kernel = if matches!(x, Activations::F32(_)) { "quantize_f32" } else { "quantize_f16" };
        result.map_err(emu_err(kernel, shape2(rows, cols)))?;
        Ok(out)
    }

    fn ternary_gemv(
        &self,
        x: &QuantizedActivations,
        w: &DeviceTernary,
        precision: Precision,
    ) -> KernelResult<Vec<f32>> {
        check_ternary("ternary_gemv", x, w, kernels_gpu::matmul::GEMV_MAX_M)?;
        let (m, n) = (x.rows, w.rows());
        let g = geometry::ternary_gemv(m, n, x.k_pad).emu();
        let (mu, nu, kp) = (m as u32, n as u32, x.k_pad as u32);
        let (xs, sc, su, ws) =
            (In::from_slice(&x.words), In::from_slice(&x.scales), In::from_slice(&x.sums), In::from_slice(w.words()));
        let shape = shape3(m, n, w.cols());
        let scale = w.scale();
        with_output(
            precision,
            m * n,
            // SAFETY (both closures): the views cover live buffers of the sizes the kernel's contract names.
            |y| {
                unsafe { kernels::ternary_gemv_f32::launch(g, xs, sc, su, ws, scale, y, mu, nu, kp) }
                    .map_err(emu_err(kernels::ternary_gemv_f32::NAME, shape.clone()))
            },
            |y| {
                unsafe { kernels::ternary_gemv_f16::launch(g, xs, sc, su, ws, scale, y, mu, nu, kp) }
                    .map_err(emu_err(kernels::ternary_gemv_f16::NAME, shape.clone()))
            },
        )
    }

    fn ternary_gemm(
        &self,
        x: &QuantizedActivations,
        w: &DeviceTernary,
        precision: Precision,
    ) -> KernelResult<Vec<f32>> {
        check_ternary("ternary_gemm", x, w, usize::MAX)?;
        let (m, n) = (x.rows, w.rows());
        let g = geometry::ternary_gemm(m, n).emu();
        let (mu, nu, kp) = (m as u32, n as u32, x.k_pad as u32);
        let (xs, sc, ws) = (In::from_slice(&x.words), In::from_slice(&x.scales), In::from_slice(w.words()));
        let shape = shape3(m, n, w.cols());
        let scale = w.scale();
        with_output(
            precision,
            m * n,
            // SAFETY (both closures): as in `ternary_gemv`.
            |y| {
                unsafe { kernels::ternary_gemm_f32::launch(g, xs, sc, ws, scale, y, mu, nu, kp) }
                    .map_err(emu_err(kernels::ternary_gemm_f32::NAME, shape.clone()))
            },
            |y| {
                unsafe { kernels::ternary_gemm_f16::launch(g, xs, sc, ws, scale, y, mu, nu, kp) }
                    .map_err(emu_err(kernels::ternary_gemm_f16::NAME, shape.clone()))
            },
        )
    }

    fn sgemm(&self, a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> KernelResult<Vec<f32>> {
        check_sgemm(a, b, m, n, k)?;
        let mut c = vec![0f32; m * n];
        let g = geometry::sgemm(m, n).emu();
        // SAFETY: as above.
        unsafe {
            kernels::sgemm::launch(
                g,
                In::from_slice(a),
                In::from_slice(b),
                Out::from_slice(&mut c),
                m as u32,
                n as u32,
                k as u32,
            )
        }
        .map_err(emu_err(kernels::sgemm::NAME, shape3(m, n, k)))?;
        Ok(c)
    }
}

/// Runs the f32 or the f16 variant of a kernel into a fresh output of `len`
/// elements; returns the values as f32.
fn with_output(
    precision: Precision,
    len: usize,
    f32_kernel: impl FnOnce(Out<f32>) -> KernelResult<()>,
    f16_kernel: impl FnOnce(Out<u16>) -> KernelResult<()>,
) -> KernelResult<Vec<f32>> {
    match precision {
        Precision::F32 => {
            let mut y = vec![0f32; len];
            f32_kernel(Out::from_slice(&mut y))?;
            Ok(y)
        }
        Precision::F16 => {
            let mut y = vec![0u16; len];
            f16_kernel(Out::from_slice(&mut y))?;
            Ok(halves_to_f32(&y))
        }
    }
}

/// IEEE half bits → their f32 values.
pub(crate) fn halves_to_f32(bits: &[u16]) -> Vec<f32> {
    bits.iter().map(|&b| half::f16::from_bits(b).to_f32()).collect()
}

/// Blocks the emulator launches for TriHash (more would only add threads; two exercise the grid stride).
const EMU_MAX_BLOCKS: u32 = 2;

/// Splits a batch range into launches whose nonce offsets fit the kernel's `u32`.
pub(crate) fn launch_chunks(first_batch: u64, batches: u64) -> impl Iterator<Item = (u64, u64)> {
    const MAX: u64 = (1u64 << 32) / LANES_PER_BATCH as u64;
    (0..batches.div_ceil(MAX)).map(move |k| (first_batch + k * MAX, (batches - k * MAX).min(MAX)))
}

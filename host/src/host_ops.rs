//! # Host data in, host data out: the convenience layer
//!
//! [`HostOps`] runs one kernel on host data: upload → op → download. It is
//! written once, for every backend, on top of the device-buffer ops of
//! [`Device`]; tests and [`crate::verify`] use it. Code that chains ops (a
//! model) uses [`Device`]'s buffers directly and never comes back to the host
//! between ops.

use half::f16;
use kernels_gpu::curl::{HASH_TRITS, LANES_PER_BATCH, STATE_TRITS};

use crate::buffer::Buffer;
use crate::cuda::TRIHASH_HIT_CAPACITY;
use crate::device::{BackendKind, Device};
use crate::error::{KernelError, KernelResult};
use crate::matmul::{Activations, Precision, QuantizedActivations};
use crate::ternary::{DeviceTernary, PackedTernary};

/// The kernels on host data.
pub trait HostOps {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// A one-line description (device name, threads).
    fn describe(&self) -> String;
    /// Packed ternary → int8 trits, `rows × cols` row-major.
    fn unpack_i8(&self, w: &PackedTernary) -> KernelResult<Vec<i8>>;
    /// Packed ternary → f16 `trit · scale`, `rows × cols` row-major.
    fn unpack_f16(&self, w: &PackedTernary) -> KernelResult<Vec<f16>>;
    /// TriHash of `messages.len() / 243` one-block messages.
    fn trihash_batch(&self, messages: &[i8]) -> KernelResult<Vec<i8>>;
    /// Every nonce index in batches `first_batch .. first_batch + batches`
    /// (128 nonces each, canonical enumeration) whose hash from `base` ends in
    /// at least `mwm` zero trits, sorted.
    fn trihash_search(&self, base: &[i8; 729], first_batch: u64, batches: u64, mwm: usize) -> KernelResult<Vec<u64>>;
    /// Per-row absmax int8 quantization of `rows × cols` activations.
    fn quantize(&self, x: Activations<'_>, rows: usize, cols: usize) -> KernelResult<QuantizedActivations>;
    /// The decode kernel (`M ≤ 8`), values as f32 (f16 results widened exactly).
    fn ternary_gemv(&self, x: &QuantizedActivations, w: &DeviceTernary, precision: Precision)
    -> KernelResult<Vec<f32>>;
    /// The prefill kernel: any M.
    fn ternary_gemm(&self, x: &QuantizedActivations, w: &DeviceTernary, precision: Precision)
    -> KernelResult<Vec<f32>>;
    /// FP32 `C = A · Bᵀ` (A: m×k, B: n×k, both row-major).
    fn sgemm(&self, a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> KernelResult<Vec<f32>>;
}

impl Device {
    fn ternary_host(
        &self,
        gemv: bool,
        x: &QuantizedActivations,
        w: &DeviceTernary,
        precision: Precision,
    ) -> KernelResult<Vec<f32>> {
        let (dx, dw) = (self.upload_quantized(x)?, self.upload_ternary(w)?);
        let len = x.rows * w.rows();
        match precision {
            Precision::F32 => {
                let mut y = self.alloc::<f32>(len)?;
                if gemv {
                    self.ternary_gemv(&dx, &dw, &mut y)?
                } else {
                    self.ternary_gemm(&dx, &dw, &mut y)?
                }
                self.download(&y)
            }
            Precision::F16 => {
                let mut y = self.alloc::<f16>(len)?;
                if gemv {
                    self.ternary_gemv(&dx, &dw, &mut y)?
                } else {
                    self.ternary_gemm(&dx, &dw, &mut y)?
                }
                Ok(self.download(&y)?.into_iter().map(f16::to_f32).collect())
            }
        }
    }
}

impl HostOps for Device {
    fn kind(&self) -> BackendKind {
        Device::kind(self)
    }

    fn describe(&self) -> String {
        Device::describe(self)
    }

    fn unpack_i8(&self, w: &PackedTernary) -> KernelResult<Vec<i8>> {
        let words = self.upload(w.words())?;
        let mut out = self.alloc::<i8>(w.rows() * w.cols())?;
        Device::unpack_i8(self, &words, w.rows(), w.cols(), &mut out)?;
        self.download(&out)
    }

    fn unpack_f16(&self, w: &PackedTernary) -> KernelResult<Vec<f16>> {
        let words = self.upload(w.words())?;
        let mut out = self.alloc::<f16>(w.rows() * w.cols())?;
        Device::unpack_f16(self, &words, w.rows(), w.cols(), w.scale(), &mut out)?;
        self.download(&out)
    }

    fn trihash_batch(&self, messages: &[i8]) -> KernelResult<Vec<i8>> {
        let input = self.upload(messages)?;
        let mut out = self.alloc::<i8>(messages.len())?;
        Device::trihash_batch(self, &input, &mut out)?;
        self.download(&out)
    }

    fn trihash_search(&self, base: &[i8; 729], first_batch: u64, batches: u64, mwm: usize) -> KernelResult<Vec<u64>> {
        kernels_gpu::curl::trihash_pow_check(batches.clamp(1, 1 << 20), mwm).map_err(|reason| KernelError::Shape {
            kernel: kernels_gpu::kernels::trihash_pow::NAME,
            shape: format!("{batches} batches, mwm {mwm}"),
            reason,
        })?;
        if batches == 0 {
            return Ok(vec![]);
        }
        let base_dev: Buffer<i8> = self.upload(&base[..STATE_TRITS])?;
        let mut found = Vec::new();
        for (first, n) in launch_chunks(first_batch, batches) {
            let lanes = n as usize * LANES_PER_BATCH;
            let capacity = if matches!(self, Device::Cuda(_)) { lanes.min(TRIHASH_HIT_CAPACITY) } else { lanes };
            let mut hits = self.alloc::<u32>(1 + capacity)?;
            self.trihash_pow(&base_dev, first, n, mwm, &mut hits)?;
            let hits = self.download(&hits)?;
            let count = hits[0] as usize;
            if count > capacity {
                return Err(KernelError::Shape {
                    kernel: kernels_gpu::kernels::trihash_pow::NAME,
                    shape: format!("{n} batches, mwm {mwm}"),
                    reason: format!("{count} hits exceed the {capacity} recorded; raise mwm or search fewer batches"),
                });
            }
            found.extend(hits[1..1 + count].iter().map(|&o| first * LANES_PER_BATCH as u64 + o as u64));
        }
        found.sort_unstable();
        Ok(found)
    }

    fn quantize(&self, x: Activations<'_>, rows: usize, cols: usize) -> KernelResult<QuantizedActivations> {
        let mut out = self.alloc_quantized(rows, cols)?;
        match x {
            Activations::F32(v) => Device::quantize(self, &self.upload(v)?, &mut out)?,
            Activations::F16(v) => Device::quantize(self, &self.upload(v)?, &mut out)?,
        }
        self.download_quantized(&out)
    }

    fn ternary_gemv(
        &self,
        x: &QuantizedActivations,
        w: &DeviceTernary,
        precision: Precision,
    ) -> KernelResult<Vec<f32>> {
        self.ternary_host(true, x, w, precision)
    }

    fn ternary_gemm(
        &self,
        x: &QuantizedActivations,
        w: &DeviceTernary,
        precision: Precision,
    ) -> KernelResult<Vec<f32>> {
        self.ternary_host(false, x, w, precision)
    }

    fn sgemm(&self, a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> KernelResult<Vec<f32>> {
        let (da, db) = (self.upload(a)?, self.upload(b)?);
        let mut dc = self.alloc::<f32>(m * n)?;
        Device::sgemm(self, &da, &db, &mut dc, m, n, k)?;
        self.download(&dc)
    }
}

/// Splits a batch range into launches whose nonce offsets fit the kernel's `u32`.
pub fn launch_chunks(first_batch: u64, batches: u64) -> impl Iterator<Item = (u64, u64)> {
    const MAX: u64 = (1u64 << 32) / LANES_PER_BATCH as u64 - 1;
    (0..batches.div_ceil(MAX)).map(move |k| (first_batch + k * MAX, (batches - k * MAX).min(MAX)))
}

const _: () = assert!(HASH_TRITS == 243);

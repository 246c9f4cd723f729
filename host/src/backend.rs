//! # Backends: one interface, three ways to run a kernel
//!
//! | backend | what runs | use |
//! |---|---|---|
//! | [`Cpu`](crate::cpu::CpuBackend) | plain Rust, multithreaded, SIMD where it pays | the reference every other backend is checked against; the CPU benchmark |
//! | [`Emu`](crate::emulator::EmuBackend) | the kernel source itself on the CPU SIMT emulator | testing kernels without a GPU (small shapes) |
//! | [`Cuda`](crate::cuda::CudaBackend) | the PTX on an NVIDIA GPU through cudarc | the real thing |
//!
//! [`Backend`] takes and returns host data; the CUDA backend also offers
//! device-buffer methods for timing without copies.

use half::f16;

use crate::error::{KernelError, KernelResult};
use crate::matmul::{Activations, Precision, QuantizedActivations};
use crate::ternary::{DeviceTernary, PackedTernary};

/// Which backend to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The CPU reference.
    Cpu,
    /// The CPU SIMT emulator running the kernel source.
    Emu,
    /// An NVIDIA GPU.
    Cuda,
}

impl BackendKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Emu => "emu",
            BackendKind::Cuda => "cuda",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The kernels, with host inputs and outputs.
pub trait Backend {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// A one-line description (device name, threads).
    fn describe(&self) -> String;
    /// Packed ternary → int8 trits, `rows × cols` row-major.
    fn unpack_i8(&self, w: &PackedTernary) -> KernelResult<Vec<i8>>;
    /// Packed ternary → f16 `trit · scale`, `rows × cols` row-major.
    fn unpack_f16(&self, w: &PackedTernary) -> KernelResult<Vec<f16>>;
    /// TriHash of one-block messages: `messages.len() / 243` messages of 243
    /// trits in, as many 243-trit digests out.
    fn trihash_batch(&self, messages: &[i8]) -> KernelResult<Vec<i8>>;
    /// Every nonce index in batches `first_batch .. first_batch + batches`
    /// (128 nonces each, canonical enumeration) whose hash from `base` ends in
    /// at least `mwm` zero trits, sorted.
    fn trihash_search(&self, base: &[i8; 729], first_batch: u64, batches: u64, mwm: usize) -> KernelResult<Vec<u64>>;
    /// Per-row absmax int8 quantization of `rows × cols` activations.
    fn quantize(&self, x: Activations<'_>, rows: usize, cols: usize) -> KernelResult<QuantizedActivations>;
    /// The decode kernel: `M ≤ 8` rows of activations × ternary weights,
    /// dequantized, in `precision` (returned as f32 values).
    fn ternary_gemv(&self, x: &QuantizedActivations, w: &DeviceTernary, precision: Precision)
    -> KernelResult<Vec<f32>>;
    /// The prefill kernel (tensor cores on the GPU): any M.
    fn ternary_gemm(&self, x: &QuantizedActivations, w: &DeviceTernary, precision: Precision)
    -> KernelResult<Vec<f32>>;
    /// FP32 `C = A · Bᵀ` (A: m×k, B: n×k, both row-major).
    fn sgemm(&self, a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> KernelResult<Vec<f32>>;
}

/// Checks a quantize request.
pub(crate) fn check_quantize(x: &Activations<'_>, rows: usize, cols: usize) -> KernelResult<()> {
    let kernel = match x.precision() {
        Precision::F32 => "quantize_f32",
        Precision::F16 => "quantize_f16",
    };
    let shape = shape2(rows, cols);
    if rows == 0 || cols == 0 {
        return Err(KernelError::Shape { kernel, shape, reason: "empty matrix".into() });
    }
    if x.len() != rows * cols {
        return Err(KernelError::Shape { kernel, shape, reason: format!("{} activations given", x.len()) });
    }
    Ok(())
}

/// `M×N×K` as errors print it.
pub(crate) fn shape3(m: usize, n: usize, k: usize) -> String {
    format!("{m}×{n}×{k}")
}

/// Checks a ternary matmul request; `max_m` is 8 for the GEMV.
pub(crate) fn check_ternary(
    kernel: &'static str,
    x: &QuantizedActivations,
    w: &DeviceTernary,
    max_m: usize,
) -> KernelResult<()> {
    let shape = shape3(x.rows, w.rows(), w.cols());
    let fail = |reason: String| Err(KernelError::Shape { kernel, shape: shape.clone(), reason });
    if x.cols != w.cols() {
        return fail(format!("activations have K = {}, weights K = {}", x.cols, w.cols()));
    }
    if x.rows == 0 || w.rows() == 0 {
        return fail("empty matrix".into());
    }
    if x.rows > max_m {
        return fail(format!("M = {} exceeds this kernel's {max_m} (use the GEMM)", x.rows));
    }
    if x.k_pad != w.k_pad()
        || x.words.len() != x.rows * x.k_pad / 4
        || x.scales.len() != x.rows
        || x.sums.len() != x.rows
    {
        return fail("quantized activations are inconsistent with their shape".into());
    }
    Ok(())
}

/// Checks an SGEMM request.
pub(crate) fn check_sgemm(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> KernelResult<()> {
    let shape = shape3(m, n, k);
    let fail = |reason: String| Err(KernelError::Shape { kernel: "sgemm", shape: shape.clone(), reason });
    if m == 0 || n == 0 || k == 0 {
        return fail("empty matrix".into());
    }
    if a.len() != m * k || b.len() != n * k {
        return fail(format!("A has {} elements (want {}), B {} (want {})", a.len(), m * k, b.len(), n * k));
    }
    Ok(())
}

/// Checks a TriHash search request (every backend calls it first).
pub(crate) fn check_trihash_search(batches: u64, mwm: usize) -> KernelResult<()> {
    let kernel = "trihash_pow";
    if mwm > kernels_gpu::curl::HASH_TRITS {
        return Err(crate::error::KernelError::Shape {
            kernel,
            shape: format!("mwm {mwm}"),
            reason: "mwm exceeds the 243 trits of a hash".into(),
        });
    }
    if batches == 0 {
        return Err(crate::error::KernelError::Shape {
            kernel,
            shape: "0 batches".into(),
            reason: "nothing to search".into(),
        });
    }
    Ok(())
}

/// Checks a TriHash batch request.
pub(crate) fn check_trihash_batch(messages: &[i8]) -> KernelResult<()> {
    if messages.is_empty() || !messages.len().is_multiple_of(kernels_gpu::curl::HASH_TRITS) {
        return Err(crate::error::KernelError::Shape {
            kernel: "trihash_batch",
            shape: format!("{} trits", messages.len()),
            reason: "messages must be a non-empty whole number of 243-trit blocks".into(),
        });
    }
    Ok(())
}

/// A shape as errors and reports print it.
pub(crate) fn shape2(rows: usize, cols: usize) -> String {
    format!("{rows}×{cols}")
}

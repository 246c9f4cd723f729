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

use crate::error::KernelResult;
use crate::ternary::PackedTernary;

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

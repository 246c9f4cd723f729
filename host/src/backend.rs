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
}

/// A shape as errors and reports print it.
pub(crate) fn shape2(rows: usize, cols: usize) -> String {
    format!("{rows}×{cols}")
}

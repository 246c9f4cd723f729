//! # Trinity's runtime: ternary (BitNet b1.58) kernels on the CPU, the emulator and NVIDIA GPUs
//!
//! Weights in {−1, 0, +1} packed 2 bits each ([`ternary`]), kernels written
//! once in Rust (the `kernels-gpu` crate) and run three ways: on an NVIDIA GPU
//! ([`cuda`]), on the CPU SIMT emulator, and as fast CPU paths ([`cpu`]).
//!
//! - [`Device`] ([`device`]): the backend, its [`Buffer`]s (host memory for
//!   `cpu` / `emu`, device memory for `cuda`), and one typed method per kernel
//!   ([`ops`]) that takes and writes buffers, so ops chain without a host
//!   round trip.
//! - [`HostOps`] ([`host_ops`]): the same kernels on host data (upload → op →
//!   download), written once for every backend; what tests and [`verify`] use.
//! - [`reference`](mod@reference): the scalar references every backend is checked against.
//!
//! ```
//! use trinity::{BackendChoice, Device, HostOps};
//! let (device, _why) = Device::open(BackendChoice::Emu)?;
//! let w = trinity::ternary::PackedTernary::pack(&[1, 0, -1, 1], 2, 2, 0.5)?;
//! assert_eq!(HostOps::unpack_i8(&device, &w)?, vec![1, 0, -1, 1]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Nothing here depends on measurement, models or the command line.

pub mod buffer;
pub mod ceilings;
pub mod cpu;
pub mod cpu_ternary;
pub mod cublaslt_int8;
pub mod cuda;
pub mod device;
pub mod error;
pub mod host_ops;
pub mod info;
pub mod matmul;
pub mod ops;
pub mod ptx;
pub mod reference;
pub mod ternary;
pub mod trihash;
pub mod verify;

pub use buffer::{
    AttentionScratch, Buffer, F16Weights, HOST_ALIGN, HostMemory, QuantizedBuffer, RowPlaces, TernaryBuffer,
};
pub use device::{BackendChoice, BackendKind, Device};
pub use error::{KernelError, KernelResult, chain_once};
pub use host_ops::HostOps;
/// The stored row length of a reduced (f16 / int8) lm_head of `k` columns: rows padded with zeros to a multiple of 16.
pub use kernels_gpu::head::head_row_len;

/// The git commit this build comes from (short SHA), when built in a git checkout.
pub const GIT_COMMIT: Option<&str> = option_env!("TRINITY_GIT_COMMIT");
/// Whether the checkout had uncommitted changes to tracked files at build time.
pub const GIT_DIRTY: Option<&str> = option_env!("TRINITY_GIT_DIRTY");

//! # Trinity: ternary (BitNet b1.58) GPU kernels, host side
//!
//! Weights in {−1, 0, +1} packed 2 bits each ([`ternary`]), kernels written
//! once in Rust (the `kernels-gpu` crate) and run three ways ([`backend`]):
//! on an NVIDIA GPU ([`cuda`]), on the CPU SIMT emulator ([`emulator`]), and
//! as the CPU reference ([`cpu`]). [`verify`] checks every kernel of a backend
//! against the reference.
//!
//! ```no_run
//! use trinity::backend::Backend;
//! let w = trinity::ternary::PackedTernary::pack(&[1, 0, -1, 1], 2, 2, 0.5)?;
//! let trits = trinity::emulator::EmuBackend.unpack_i8(&w)?;
//! assert_eq!(trits, vec![1, 0, -1, 1]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod backend;
pub mod cpu;
pub mod cpu_ternary;
pub mod cublaslt_int8;
pub mod cuda;
pub mod emulator;
pub mod error;
pub mod geometry;
pub mod info;
pub mod matmul;
pub mod measure;
pub mod ptx;
pub mod ternary;
pub mod trihash;
pub mod verify;

pub use backend::{Backend, BackendKind};
pub use error::{KernelError, KernelResult};

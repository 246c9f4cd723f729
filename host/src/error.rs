//! # Errors of kernel execution, one enum for every backend
//!
//! Each variant names the kernel, the shape, and (for CUDA) the device.

use kernels_gpu::emu::EmuError;

/// A kernel could not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The emulator reported a fault or divergence.
    #[error("kernel `{kernel}` on the emulator, shape {shape}: {source}")]
    Emu {
        /// Kernel name.
        kernel: &'static str,
        /// Shape description.
        shape: String,
        /// What the emulator saw.
        source: EmuError,
    },
    /// A CUDA driver call failed.
    #[error("kernel `{kernel}` on {device}, shape {shape}: {source}")]
    Cuda {
        /// Kernel name.
        kernel: &'static str,
        /// Shape description.
        shape: String,
        /// Device name.
        device: String,
        /// The driver's error.
        source: cudarc::driver::DriverError,
    },
    /// A cuBLAS call failed.
    #[error("cuBLAS `{op}` on {device}, shape {shape}: {message}")]
    Cublas {
        /// The operation.
        op: &'static str,
        /// Shape description.
        shape: String,
        /// Device name.
        device: String,
        /// The library's error.
        message: String,
    },
    /// The inputs do not fit the kernel.
    #[error("kernel `{kernel}`: invalid shape {shape}: {reason}")]
    Shape {
        /// Kernel name.
        kernel: &'static str,
        /// Shape description.
        shape: String,
        /// What is wrong.
        reason: String,
    },
    /// A buffer handed to an op lives on another device than the op's.
    #[error("`{op}` on the {backend} backend was given {location}")]
    WrongDevice {
        /// The op.
        op: &'static str,
        /// The backend.
        backend: &'static str,
        /// Where the offending buffer lives.
        location: &'static str,
    },
    /// The backend does not implement this operation.
    #[error("`{op}` is not available on the {backend} backend")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// The backend.
        backend: &'static str,
    },
}

/// Result of a kernel call.
pub type KernelResult<T> = Result<T, KernelError>;

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

/// An error and its causes on one line, `: `-separated, each said once. The
/// library errors name their source in their own message too (for reports
/// that print only the message) and keep it as the source, so a cause already
/// in the text is not repeated.
pub fn chain_once(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut cause = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::chain_once;

    /// An error with a message of its own over `source`, which it names in
    /// that message (as the library errors) or not (as a context).
    #[derive(Debug)]
    struct Over {
        message: &'static str,
        names_source: bool,
        source: Box<dyn std::error::Error + 'static>,
    }
    impl std::fmt::Display for Over {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self.names_source {
                true => write!(f, "{}: {}", self.message, self.source),
                false => write!(f, "{}", self.message),
            }
        }
    }
    impl std::error::Error for Over {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(self.source.as_ref())
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let lost = Over { message: "launch failed", names_source: true, source: "device lost".into() };
        let e = Over { message: "trinity run", names_source: false, source: Box::new(lost) };
        assert_eq!(chain_once(&e), "trinity run: launch failed: device lost");
        let plain = Over { message: "reading config.json", names_source: false, source: "no file".into() };
        assert_eq!(chain_once(&plain), "reading config.json: no file");
        let alone = std::io::Error::other("alone");
        assert_eq!(chain_once(&alone), "alone");
    }
}

//! # kernels-gpu: Trinity's kernels, written once
//!
//! Every kernel in this crate is an `unsafe fn` body wrapped in [`kernel!`].
//! The macro produces two things from the same source:
//!
//! - on `nvptx64` (built by `ptx-builder`, `no_std`): an
//!   `extern "ptx-kernel"` entry point with an unmangled name;
//! - on the host: a module of the same name whose `launch` runs the body on
//!   the CPU SIMT emulator ([`emu`]), one OS thread per GPU thread of a block,
//!   with real barriers, warp shuffles and tensor-core fragments.
//!
//! Kernels reach the hardware only through [`device`]: thread indices,
//! barriers, dynamic shared memory, shuffles, `dp4a`, `mma.sync`, a clock, and
//! the global-memory views [`device::In`] / [`device::Out`] (bounds-checked on
//! the emulator, plain pointers on the device).
//!
//! ## Where things are
//! - [`format`](mod@format): the packed ternary format v1 (shared by host and device).
//! - [`head`]: the lm_head GEMV's row layout and shared body.
//! - [`kernels`]: one file per kernel, each with `# Safety`, `# Parameters`,
//!   `# Thread mapping` and `# Tiling` sections.
#![cfg_attr(target_arch = "nvptx64", no_std)]
// Kernel bodies are `unsafe fn` bodies by design: the macro places them in an
// unsafe block, and each kernel documents its contract under `# Safety`.
#![allow(clippy::macro_metavars_in_unsafe)]
// Kernel entry points take flat scalar parameters (pointers, sizes, scales),
// and their helpers pass the same along.
#![allow(clippy::too_many_arguments)]

pub mod curl;
pub mod device;
#[cfg(not(target_arch = "nvptx64"))]
pub mod emu;
pub mod format;
pub mod head;
pub mod kernels;
pub mod launch;
pub mod matmul;

#[cfg(target_arch = "nvptx64")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    device::trap()
}

/// Declares a kernel: one body, a PTX entry point on the device and an
/// emulator launcher on the host.
///
/// ```
/// use kernels_gpu::device::{In, Out, global_thread_x};
/// use kernels_gpu::kernel;
///
/// kernel! {
///     /// Docs with `# Safety`, `# Parameters`, `# Thread mapping`, `# Tiling`.
///     pub unsafe fn my_kernel(input: In<u32>, output: Out<u32>, n: u32) {
///         let i = global_thread_x() as usize;
///         if i < n as usize { output.set(i, input.get(i) + 1) }
///     }
/// }
///
/// fn main() {
///     let (input, mut output) = ([1u32, 2, 3], [0u32; 3]);
///     let config = kernels_gpu::emu::LaunchConfig::linear(1, 32, 0);
///     // SAFETY: the views cover live buffers of length n.
///     unsafe { my_kernel::launch(config, In::from_slice(&input), Out::from_slice(&mut output), 3) }.unwrap();
///     assert_eq!(output, [2, 3, 4]);
/// }
/// ```
///
/// On the host this yields `my_kernel::launch(LaunchConfig, input, output, n)`
/// returning `Result<(), EmuError>`, and `my_kernel::NAME`.
/// Repeats a block once per listed constant, binding it to the name:
/// `unrolled!(u in [0, 1, 2, 3] => { acc[u] += x[u]; })`.
///
/// Rust has no `#pragma unroll`, and LLVM's default threshold leaves a loop
/// nest rolled once its unrolled body grows large; an array indexed by such a
/// loop's counter then lives in local memory (a `ptxas -v` stack frame), so
/// every access is a memory round trip. Kernels unroll those loops with this
/// macro instead of raising the threshold for the whole module, which bloated
/// other kernels (TriHash went from 48 to 126 registers and lost a third of
/// its rate on an H200).
#[macro_export]
macro_rules! unrolled {
    ($i:ident in [$($v:expr),* $(,)?] => $body:block) => {
        $( { let $i = $v; $body } )*
    };
}

#[macro_export]
macro_rules! kernel {
    ($(#[$meta:meta])* pub unsafe fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        #[cfg(target_arch = "nvptx64")]
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name($($arg: $ty),*) {
            // SAFETY: the caller of the launch upholds the `# Safety` contract above.
            #[allow(unused_unsafe)]
            unsafe { $body }
        }

        $(#[$meta])*
        #[cfg(not(target_arch = "nvptx64"))]
        pub mod $name {
            #[allow(unused_imports)]
            use super::*;
            /// The kernel's entry-point name in the PTX module.
            pub const NAME: &str = stringify!($name);
            /// Runs the kernel on the CPU SIMT emulator.
            ///
            /// # Safety
            /// Same contract as the kernel: every pointer view must describe
            /// memory that lives for the whole launch.
            #[allow(clippy::too_many_arguments)]
            pub unsafe fn launch(
                config: $crate::emu::LaunchConfig,
                $($arg: $ty),*
            ) -> ::core::result::Result<(), $crate::emu::EmuError> {
                $crate::emu::launch(NAME, config, move || {
                    // SAFETY: forwarded from `launch`'s contract.
                    #[allow(unused_unsafe)]
                    unsafe { $body }
                })
            }
        }
    };
}

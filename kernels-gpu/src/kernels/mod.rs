//! The kernels, one per file. Each file's kernel has the file's name; on the
//! host, `kernels::NAME::launch` runs it on the emulator, and the PTX entry
//! point is `NAME`.

#[path = "quantize_f16.rs"]
mod quantize_f16_src;
#[path = "quantize_f32.rs"]
mod quantize_f32_src;
#[path = "sgemm.rs"]
mod sgemm_src;
#[path = "ternary_gemm_f16.rs"]
mod ternary_gemm_f16_src;
#[path = "ternary_gemm_f32.rs"]
mod ternary_gemm_f32_src;
#[path = "ternary_gemv_f16.rs"]
mod ternary_gemv_f16_src;
#[path = "ternary_gemv_f32.rs"]
mod ternary_gemv_f32_src;
#[path = "trihash_batch.rs"]
mod trihash_batch_src;
#[path = "trihash_pow.rs"]
mod trihash_pow_src;
#[path = "unpack_f16.rs"]
mod unpack_f16_src;
#[path = "unpack_i8.rs"]
mod unpack_i8_src;

pub use quantize_f16_src::*;
pub use quantize_f32_src::*;
pub use sgemm_src::*;
pub use ternary_gemm_f16_src::*;
pub use ternary_gemm_f32_src::*;
pub use ternary_gemv_f16_src::*;
pub use ternary_gemv_f32_src::*;
pub use trihash_batch_src::*;
pub use trihash_pow_src::*;
pub use unpack_f16_src::*;
pub use unpack_i8_src::*;

//! The kernels, one per file. Each file's kernel has the file's name; on the
//! host, `kernels::NAME::launch` runs it on the emulator, and the PTX entry
//! point is `NAME`.

#[path = "add_f32.rs"]
mod add_f32_src;
#[path = "add_rms_norm_quantize_f32.rs"]
mod add_rms_norm_quantize_f32_src;
#[path = "argmax_f32.rs"]
mod argmax_f32_src;
#[path = "attention_combine_f32.rs"]
mod attention_combine_f32_src;
#[path = "attention_f32.rs"]
mod attention_f32_src;
#[path = "attention_prefill_f32.rs"]
mod attention_prefill_f32_src;
#[path = "attention_split_f32.rs"]
mod attention_split_f32_src;
#[path = "convert_f32_to_f16.rs"]
mod convert_f32_to_f16_src;
#[path = "embedding_f32.rs"]
mod embedding_f32_src;
#[path = "gated_f32.rs"]
mod gated_f32_src;
#[path = "gated_rms_norm_quantize_f32.rs"]
mod gated_rms_norm_quantize_f32_src;
#[path = "head_gemv_f16.rs"]
mod head_gemv_f16_src;
#[path = "head_gemv_i8.rs"]
mod head_gemv_i8_src;
#[path = "kv_write_f32.rs"]
mod kv_write_f32_src;
#[path = "quantize_f16.rs"]
mod quantize_f16_src;
#[path = "quantize_f32.rs"]
mod quantize_f32_src;
#[path = "rms_norm_f32.rs"]
mod rms_norm_f32_src;
#[path = "rms_norm_quantize_f32.rs"]
mod rms_norm_quantize_f32_src;
#[path = "rope_f32.rs"]
mod rope_f32_src;
#[path = "rope_kv_write_f32.rs"]
mod rope_kv_write_f32_src;
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
#[path = "ternary_gemv_many_f16.rs"]
mod ternary_gemv_many_f16_src;
#[path = "ternary_gemv_many_f32.rs"]
mod ternary_gemv_many_f32_src;
#[path = "trihash_batch.rs"]
mod trihash_batch_src;
#[path = "trihash_pow.rs"]
mod trihash_pow_src;
#[path = "unpack_f16.rs"]
mod unpack_f16_src;
#[path = "unpack_i8.rs"]
mod unpack_i8_src;

pub use add_f32_src::*;
pub use add_rms_norm_quantize_f32_src::*;
pub use argmax_f32_src::*;
pub use attention_combine_f32_src::*;
pub use attention_f32_src::*;
pub use attention_prefill_f32_src::*;
pub use attention_split_f32_src::*;
pub use convert_f32_to_f16_src::*;
pub use embedding_f32_src::*;
pub use gated_f32_src::*;
pub use gated_rms_norm_quantize_f32_src::*;
pub use head_gemv_f16_src::*;
pub use head_gemv_i8_src::*;
pub use kv_write_f32_src::*;
pub use quantize_f16_src::*;
pub use quantize_f32_src::*;
pub use rms_norm_f32_src::*;
pub use rms_norm_quantize_f32_src::*;
pub use rope_f32_src::*;
pub use rope_kv_write_f32_src::*;
pub use sgemm_src::*;
pub use ternary_gemm_f16_src::*;
pub use ternary_gemm_f32_src::*;
pub use ternary_gemv_f16_src::*;
pub use ternary_gemv_f32_src::*;
pub use ternary_gemv_many_f16_src::*;
pub use ternary_gemv_many_f32_src::*;
pub use trihash_batch_src::*;
pub use trihash_pow_src::*;
pub use unpack_f16_src::*;
pub use unpack_i8_src::*;

//! The kernels, one per file. Each file's kernel has the file's name; on the
//! host, `kernels::NAME::launch` runs it on the emulator, and the PTX entry
//! point is `NAME`.

#[path = "trihash_batch.rs"]
mod trihash_batch_src;
#[path = "trihash_pow.rs"]
mod trihash_pow_src;
#[path = "unpack_f16.rs"]
mod unpack_f16_src;
#[path = "unpack_i8.rs"]
mod unpack_i8_src;

pub use trihash_batch_src::*;
pub use trihash_pow_src::*;
pub use unpack_f16_src::*;
pub use unpack_i8_src::*;

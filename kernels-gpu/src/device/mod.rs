//! # The device API: everything a kernel may touch
//!
//! Two implementations share these signatures, chosen by
//! `cfg(target_arch = "nvptx64")`: [`nvptx`](self) (special registers,
//! intrinsics and inline PTX) and the host's CPU SIMT emulator
//! ([`crate::emu`]). A kernel that uses only this module runs unchanged on both.
//!
//! ## Rules that both sides enforce or assume
//! - [`sync_threads`] must be reached by every thread of the block; the
//!   emulator reports a barrier that some thread skipped (by returning early)
//!   as [`crate::emu::EmuError::Divergence`] instead of hanging.
//! - Warp collectives ([`shfl_xor`], [`shfl_down`], [`shfl_idx`],
//!   [`mma_m16n8k32_s8`]) use the full-warp mask: all 32 lanes of the warp
//!   must be present (block sizes a multiple of 32) and must call them together.
//! - Global memory goes through [`In`] / [`Out`]; on the emulator every access
//!   is bounds-checked and a violation is reported naming the kernel.
//! - Dynamic shared memory is uninitialised at block start (the emulator fills
//!   it with a poison pattern so reading before writing gives wrong numbers).

#[cfg(target_arch = "nvptx64")]
#[path = "nvptx.rs"]
mod imp;

#[cfg(not(target_arch = "nvptx64"))]
#[path = "host.rs"]
mod imp;

pub use imp::{In, Out};

/// `threadIdx.x`.
#[inline(always)]
pub fn thread_idx_x() -> u32 {
    imp::thread_idx(0)
}
/// `threadIdx.y`.
#[inline(always)]
pub fn thread_idx_y() -> u32 {
    imp::thread_idx(1)
}
/// `blockIdx.x`.
#[inline(always)]
pub fn block_idx_x() -> u32 {
    imp::block_idx(0)
}
/// `blockIdx.y`.
#[inline(always)]
pub fn block_idx_y() -> u32 {
    imp::block_idx(1)
}
/// `blockDim.x`.
#[inline(always)]
pub fn block_dim_x() -> u32 {
    imp::block_dim(0)
}
/// `blockDim.y`.
#[inline(always)]
pub fn block_dim_y() -> u32 {
    imp::block_dim(1)
}
/// `gridDim.x`.
#[inline(always)]
pub fn grid_dim_x() -> u32 {
    imp::grid_dim(0)
}
/// `gridDim.y`.
#[inline(always)]
pub fn grid_dim_y() -> u32 {
    imp::grid_dim(1)
}

/// `blockIdx.x * blockDim.x + threadIdx.x`, the usual 1-D global index.
#[inline(always)]
pub fn global_thread_x() -> u32 {
    block_idx_x() * block_dim_x() + thread_idx_x()
}

/// Linear thread index within the block (`x + y·dimx`; kernels use 1-D or 2-D blocks).
#[inline(always)]
pub fn linear_thread_idx() -> u32 {
    thread_idx_x() + thread_idx_y() * block_dim_x()
}

/// Lane within the warp (0..32), from the linear thread index.
#[inline(always)]
pub fn lane_id() -> u32 {
    linear_thread_idx() % 32
}

/// Warp within the block, from the linear thread index.
#[inline(always)]
pub fn warp_id() -> u32 {
    linear_thread_idx() / 32
}

/// Block-wide barrier (`bar.sync 0`): waits until every thread of the block
/// arrives; shared-memory writes before it are visible after it.
///
/// On the emulator, barriers and warp collectives are matched by call site
/// (`#[track_caller]`, through the helpers that wrap them): threads meeting at
/// two different barriers are a reported divergence, as they are undefined
/// behaviour on a GPU.
#[inline(always)]
#[cfg_attr(not(target_arch = "nvptx64"), track_caller)]
pub fn sync_threads() {
    imp::sync_threads()
}

/// Butterfly shuffle: returns `v` from lane `lane_id() ^ lane_mask`.
#[inline(always)]
#[cfg_attr(not(target_arch = "nvptx64"), track_caller)]
pub fn shfl_xor(v: u32, lane_mask: u32) -> u32 {
    imp::shfl_xor(v, lane_mask)
}

/// Returns `v` from lane `lane_id() + delta`, or the caller's own `v` when
/// that lane is past 31.
#[inline(always)]
#[cfg_attr(not(target_arch = "nvptx64"), track_caller)]
pub fn shfl_down(v: u32, delta: u32) -> u32 {
    imp::shfl_down(v, delta)
}

/// Returns `v` from lane `src_lane % 32`.
#[inline(always)]
#[cfg_attr(not(target_arch = "nvptx64"), track_caller)]
pub fn shfl_idx(v: u32, src_lane: u32) -> u32 {
    imp::shfl_idx(v, src_lane)
}

/// Sum of `v` over the 32 lanes of the warp, returned to every lane.
#[inline(always)]
#[cfg_attr(not(target_arch = "nvptx64"), track_caller)]
pub fn warp_sum_i32(mut v: i32) -> i32 {
    let mut mask = 16;
    while mask > 0 {
        v = v.wrapping_add(shfl_xor(v as u32, mask) as i32);
        mask /= 2;
    }
    v
}

/// Maximum of `v` over the 32 lanes of the warp, returned to every lane.
#[inline(always)]
#[cfg_attr(not(target_arch = "nvptx64"), track_caller)]
pub fn warp_max_f32(mut v: f32) -> f32 {
    let mut mask = 16;
    while mask > 0 {
        v = v.max(f32::from_bits(shfl_xor(v.to_bits(), mask)));
        mask /= 2;
    }
    v
}

/// `dp4a.s32.s32`: `c + Σ a[i]·b[i]` over the four signed bytes of `a` and `b`.
#[inline(always)]
pub fn dp4a(a: u32, b: u32, c: i32) -> i32 {
    imp::dp4a(a, b, c)
}

/// Portable definition of [`dp4a`] (what the emulator computes).
#[inline(always)]
pub fn dp4a_reference(a: u32, b: u32, c: i32) -> i32 {
    let mut acc = c;
    for i in 0..4 {
        let x = (a >> (8 * i)) as u8 as i8 as i32;
        let y = (b >> (8 * i)) as u8 as i8 as i32;
        acc = acc.wrapping_add(x * y);
    }
    acc
}

/// `mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32`: D = A·B + C for a
/// 16×32 int8 A (row-major), a 32×8 int8 B (column-major), int32 C/D, over
/// the whole warp. Fragment layout (PTX ISA), with `g = lane / 4`, `t = lane % 4`:
///
/// - `a[0]`: `A[g][4t..4t+4]`, `a[1]`: `A[g+8][4t..4t+4]`,
///   `a[2]`: `A[g][16+4t..16+4t+4]`, `a[3]`: `A[g+8][16+4t..16+4t+4]`
///   (byte `j` of each register is column `+j`);
/// - `b[0]`: `B[4t..4t+4][g]`, `b[1]`: `B[16+4t..16+4t+4][g]`;
/// - `c[0], c[1]`: `C[g][2t]`, `C[g][2t+1]`; `c[2], c[3]`: `C[g+8][2t]`, `C[g+8][2t+1]`.
#[inline(always)]
#[cfg_attr(not(target_arch = "nvptx64"), track_caller)]
pub fn mma_m16n8k32_s8(a: [u32; 4], b: [u32; 2], c: [i32; 4]) -> [i32; 4] {
    imp::mma_m16n8k32_s8(a, b, c)
}

/// A per-SM cycle counter (`%clock64`); only differences within one thread mean anything.
#[inline(always)]
pub fn clock64() -> u64 {
    imp::clock64()
}

/// The block's dynamic shared memory (the launch's `shared_bytes`), 16-byte aligned.
#[inline(always)]
pub fn dynamic_shared<T>() -> *mut T {
    imp::dynamic_shared().cast()
}

/// Loads element `index` of the dynamic shared memory seen as `u64`s, with a
/// shared-window load (`ld.shared.u64`, SASS `LDS.64`). A raw pointer from
/// [`dynamic_shared`] is generic, and the compiler cannot prove it points to
/// shared memory, so it emits slower generic loads; hot loops use these.
/// On the emulator the index is bounds-checked against the launch's shared size.
///
/// # Safety
/// `index` is within the launch's dynamic shared memory.
#[inline(always)]
pub unsafe fn shared_load_u64(index: u32) -> u64 {
    // SAFETY: forwarded.
    unsafe { imp::shared_load_u64(index) }
}

/// Stores element `index` of the dynamic shared memory seen as `u64`s
/// (`st.shared.u64`); see [`shared_load_u64`].
///
/// # Safety
/// `index` is within the launch's dynamic shared memory.
#[inline(always)]
pub unsafe fn shared_store_u64(index: u32, v: u64) {
    // SAFETY: forwarded.
    unsafe { imp::shared_store_u64(index, v) }
}

/// Loads element `index` of the dynamic shared memory seen as `u32`s (`ld.shared.u32`).
///
/// # Safety
/// `index` is within the launch's dynamic shared memory.
#[inline(always)]
pub unsafe fn shared_load_u32(index: u32) -> u32 {
    // SAFETY: forwarded.
    unsafe { imp::shared_load_u32(index) }
}

/// Stores element `index` of the dynamic shared memory seen as `u32`s (`st.shared.u32`).
///
/// # Safety
/// `index` is within the launch's dynamic shared memory.
#[inline(always)]
pub unsafe fn shared_store_u32(index: u32, v: u32) {
    // SAFETY: forwarded.
    unsafe { imp::shared_store_u32(index, v) }
}

/// Stores four `u32`s at `index .. index + 4` with one 128-bit shared store
/// (`st.shared.v4.u32`); `index` must be a multiple of 4.
///
/// # Safety
/// The four elements are within the launch's dynamic shared memory.
#[inline(always)]
pub unsafe fn shared_store_u32x4(index: u32, v: [u32; 4]) {
    // SAFETY: forwarded.
    unsafe { imp::shared_store_u32x4(index, v) }
}

/// Loads four `u32`s at `index .. index + 4` with one 128-bit shared load
/// (`ld.shared.v4.u32`); `index` must be a multiple of 4.
///
/// # Safety
/// The four elements are within the launch's dynamic shared memory.
#[inline(always)]
pub unsafe fn shared_load_u32x4(index: u32) -> [u32; 4] {
    // SAFETY: forwarded.
    unsafe { imp::shared_load_u32x4(index) }
}

/// Loads element `index` of the dynamic shared memory seen as `f32`s.
///
/// # Safety
/// `index` is within the launch's dynamic shared memory.
#[inline(always)]
pub unsafe fn shared_load_f32(index: u32) -> f32 {
    // SAFETY: forwarded.
    f32::from_bits(unsafe { imp::shared_load_u32(index) })
}

/// Stores element `index` of the dynamic shared memory seen as `f32`s.
///
/// # Safety
/// `index` is within the launch's dynamic shared memory.
#[inline(always)]
pub unsafe fn shared_store_f32(index: u32, v: f32) {
    // SAFETY: forwarded.
    unsafe { imp::shared_store_u32(index, v.to_bits()) }
}

/// Fused multiply-add `a·b + c` with one rounding (`fma.rn.f32`). Rust does not
/// contract `a * b + c` on its own, and two instructions halve a GEMM's peak.
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    imp::fma(a, b, c)
}

/// Rounds to the nearest integer, ties to even (`cvt.rni.f32.f32`); the host
/// uses `f32::round_ties_even`, so quantization is bit-identical on both.
#[inline(always)]
pub fn round_ties_even(v: f32) -> f32 {
    imp::round_ties_even(v)
}

/// Square root, correctly rounded (`sqrt.rn.f32`).
#[inline(always)]
pub fn sqrt_f32(v: f32) -> f32 {
    imp::sqrt_f32(v)
}

/// `2^v`: `ex2.approx.f32` on the GPU (at most 2 ulp off), the correctly
/// rounded value on the emulator.
#[inline(always)]
pub fn exp2_f32(v: f32) -> f32 {
    imp::exp2_f32(v)
}

/// `e^v` as `2^(v · log2 e)` (see [`exp2_f32`]).
#[inline(always)]
pub fn exp_f32(v: f32) -> f32 {
    exp2_f32(v * core::f32::consts::LOG2_E)
}

/// Sum of `v` over the 32 lanes of the warp (butterfly order), returned to every lane.
#[cfg_attr(not(target_arch = "nvptx64"), track_caller)]
#[inline(always)]
pub fn warp_sum_f32(mut v: f32) -> f32 {
    let mut mask = 16;
    while mask > 0 {
        v += f32::from_bits(shfl_xor(v.to_bits(), mask));
        mask /= 2;
    }
    v
}

/// Sum of `v` over the block (warp sums, then a sum of those); every thread
/// gets it. Same rules as [`block_max_f32`].
///
/// # Safety
/// As [`block_max_f32`].
#[cfg_attr(not(target_arch = "nvptx64"), track_caller)]
#[inline(always)]
pub unsafe fn block_sum_f32(v: f32, scratch: u32) -> f32 {
    let s = warp_sum_f32(v);
    // SAFETY: forwarded.
    unsafe {
        if lane_id() == 0 {
            shared_store_u32(scratch + warp_id(), s.to_bits());
        }
        sync_threads();
        let warps = (block_dim_x() * block_dim_y()).div_ceil(32);
        let mine = if lane_id() < warps { f32::from_bits(shared_load_u32(scratch + lane_id())) } else { 0.0 };
        let r = warp_sum_f32(mine);
        sync_threads();
        r
    }
}

/// `|v|` by clearing the sign bit.
#[inline(always)]
pub fn abs_f32(v: f32) -> f32 {
    f32::from_bits(v.to_bits() & 0x7fff_ffff)
}

/// Maximum of `v` over the block; every thread gets it. Uses shared words
/// `scratch .. scratch + 32` (as `u32`) and two barriers, so every thread of
/// the block must call it; the block size must be a multiple of 32.
///
/// # Safety
/// The 32 scratch words are within the dynamic shared memory and not used
/// concurrently for anything else.
#[inline(always)]
#[cfg_attr(not(target_arch = "nvptx64"), track_caller)]
pub unsafe fn block_max_f32(v: f32, scratch: u32) -> f32 {
    let m = warp_max_f32(v);
    // SAFETY: forwarded.
    unsafe {
        if lane_id() == 0 {
            shared_store_u32(scratch + warp_id(), m.to_bits());
        }
        sync_threads();
        let warps = (block_dim_x() * block_dim_y()).div_ceil(32);
        let mine = if lane_id() < warps { f32::from_bits(shared_load_u32(scratch + lane_id())) } else { 0.0 };
        let r = warp_max_f32(mine);
        sync_threads();
        r
    }
}

/// Sum of `v` over the block; every thread gets it. Same rules as [`block_max_f32`].
///
/// # Safety
/// As [`block_max_f32`].
#[inline(always)]
#[cfg_attr(not(target_arch = "nvptx64"), track_caller)]
pub unsafe fn block_sum_i32(v: i32, scratch: u32) -> i32 {
    let s = warp_sum_i32(v);
    // SAFETY: forwarded.
    unsafe {
        if lane_id() == 0 {
            shared_store_u32(scratch + warp_id(), s as u32);
        }
        sync_threads();
        let warps = (block_dim_x() * block_dim_y()).div_ceil(32);
        let mine = if lane_id() < warps { shared_load_u32(scratch + lane_id()) as i32 } else { 0 };
        let r = warp_sum_i32(mine);
        sync_threads();
        r
    }
}

/// Aborts the kernel (`trap`); on the emulator, a reported fault.
#[inline(always)]
pub fn trap() -> ! {
    imp::trap()
}

/// IEEE half (bits) → f32, exact.
#[inline(always)]
pub fn f16_to_f32(bits: u16) -> f32 {
    imp::f16_to_f32(bits)
}

/// f32 → IEEE half (bits), round to nearest even (`cvt.rn.f16.f32`).
#[inline(always)]
pub fn f32_to_f16(v: f32) -> u16 {
    imp::f32_to_f16(v)
}

/// Four int8 lanes packed little-endian in a `u32`, as `dp4a` and `mma` read them.
#[inline(always)]
pub fn pack_i8x4(v: [i8; 4]) -> u32 {
    u32::from_le_bytes([v[0] as u8, v[1] as u8, v[2] as u8, v[3] as u8])
}

/// Software IEEE half → f32 (used by the emulator and host code).
pub fn f16_to_f32_soft(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise.
            let shift = m.leading_zeros() - 21; // bring bit 10 to the top of the 10-bit field
            let m = (m << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (m << 13)
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7fc0_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Software f32 → IEEE half, round to nearest even (used by the emulator and host code).
pub fn f32_to_f16_soft(v: f32) -> u16 {
    let x = v.to_bits();
    let sign = ((x >> 16) & 0x8000) as u16;
    let exp = ((x >> 23) & 0xff) as i32;
    let man = x & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 | (man >> 13) as u16 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        // Subnormal half: shift the full mantissa (with hidden bit) right.
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let halfway = 1 << (shift - 1);
        let round = rem > halfway || (rem == halfway && half & 1 == 1);
        return sign | (half + round as u32) as u16;
    }
    let half = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    let round = rem > 0x1000 || (rem == 0x1000 && half & 1 == 1);
    // A carry out of the mantissa correctly bumps the exponent (up to infinity).
    sign | (half + round as u32) as u16
}

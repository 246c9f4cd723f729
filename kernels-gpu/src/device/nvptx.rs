//! The device side of [`crate::device`]: special registers, intrinsics and inline PTX.

use core::arch::asm;
use core::arch::nvptx;

core::arch::global_asm!(".extern .shared .align 16 .b8 TRINITY_DYNAMIC_SMEM[];");

/// A read-only view of global memory: on the device, just the pointer.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct In<T>(*const T);

/// A writable view of global memory: on the device, just the pointer.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct Out<T>(*mut T);

impl<T: Copy> In<T> {
    /// Reads element `i`.
    ///
    /// # Safety
    /// `i` is within the buffer the launch passed.
    #[inline(always)]
    pub unsafe fn get(self, i: usize) -> T {
        // SAFETY: forwarded.
        unsafe { *self.0.add(i) }
    }
}

impl In<u32> {
    /// Reads four consecutive words with one 128-bit load through the
    /// read-only path (`ld.global.nc.v4.u32`). Written as inline PTX because a
    /// plain 16-byte read is split into four 32-bit loads once LLVM breaks
    /// the array into scalars.
    ///
    /// # Safety
    /// `i..i+4` is within the buffer, `i` is a multiple of 4 from a 16-byte
    /// aligned base, and the kernel never writes this buffer.
    #[inline(always)]
    pub unsafe fn get4(self, i: usize) -> [u32; 4] {
        let (a, b, c, d): (u32, u32, u32, u32);
        // SAFETY: forwarded; the alignment makes the 128-bit load legal.
        unsafe {
            asm!("ld.global.nc.v4.u32 {{{a}, {b}, {c}, {d}}}, [{p}];",
                p = in(reg64) self.0.add(i),
                a = out(reg32) a, b = out(reg32) b, c = out(reg32) c, d = out(reg32) d,
                options(readonly, nostack, pure))
        };
        [a, b, c, d]
    }
}

impl<T> Out<T> {
    /// The same memory as a read-only view (for a body that reads what its thread wrote).
    #[inline(always)]
    pub fn as_in(self) -> In<T> {
        In(self.0 as *const T)
    }
}

impl<T: Copy> Out<T> {
    /// Writes element `i`.
    ///
    /// # Safety
    /// `i` is within the buffer the launch passed, and no other thread writes it concurrently.
    #[inline(always)]
    pub unsafe fn set(self, i: usize, v: T) {
        // SAFETY: forwarded.
        unsafe { *self.0.add(i) = v }
    }

    /// Reads element `i` back.
    ///
    /// # Safety
    /// As [`Out::set`].
    #[inline(always)]
    pub unsafe fn get(self, i: usize) -> T {
        // SAFETY: forwarded.
        unsafe { *self.0.add(i) }
    }
}

impl Out<u32> {
    /// Atomic minimum on element `i`; returns the previous value.
    ///
    /// # Safety
    /// `i` is within the buffer.
    #[inline(always)]
    pub unsafe fn atomic_min(self, i: usize, v: u32) -> u32 {
        // SAFETY: forwarded; u32 is 4-byte aligned in the buffer.
        unsafe { core::sync::atomic::AtomicU32::from_ptr(self.0.add(i)) }
            .fetch_min(v, core::sync::atomic::Ordering::Relaxed)
    }

    /// Atomic add on element `i`; returns the previous value.
    ///
    /// # Safety
    /// `i` is within the buffer.
    #[inline(always)]
    pub unsafe fn atomic_add(self, i: usize, v: u32) -> u32 {
        // SAFETY: forwarded.
        unsafe { core::sync::atomic::AtomicU32::from_ptr(self.0.add(i)) }
            .fetch_add(v, core::sync::atomic::Ordering::Relaxed)
    }
}

#[inline(always)]
pub fn thread_idx(axis: usize) -> u32 {
    // SAFETY: reading special registers has no preconditions.
    unsafe {
        (match axis {
            0 => nvptx::_thread_idx_x(),
            1 => nvptx::_thread_idx_y(),
            _ => nvptx::_thread_idx_z(),
        }) as u32
    }
}

#[inline(always)]
pub fn block_idx(axis: usize) -> u32 {
    // SAFETY: as above.
    unsafe {
        (match axis {
            0 => nvptx::_block_idx_x(),
            1 => nvptx::_block_idx_y(),
            _ => nvptx::_block_idx_z(),
        }) as u32
    }
}

#[inline(always)]
pub fn block_dim(axis: usize) -> u32 {
    // SAFETY: as above.
    unsafe {
        (match axis {
            0 => nvptx::_block_dim_x(),
            1 => nvptx::_block_dim_y(),
            _ => nvptx::_block_dim_z(),
        }) as u32
    }
}

#[inline(always)]
pub fn grid_dim(axis: usize) -> u32 {
    // SAFETY: as above.
    unsafe {
        (match axis {
            0 => nvptx::_grid_dim_x(),
            1 => nvptx::_grid_dim_y(),
            _ => nvptx::_grid_dim_z(),
        }) as u32
    }
}

#[inline(always)]
pub fn sync_threads() {
    // SAFETY: the caller follows the barrier rule in the module docs.
    unsafe { nvptx::_syncthreads() }
}

#[inline(always)]
pub fn shfl_xor(v: u32, lane_mask: u32) -> u32 {
    let r: u32;
    // SAFETY: a full-warp shuffle; the module docs require all lanes present.
    unsafe {
        asm!("shfl.sync.bfly.b32 {r}, {v}, {m}, 0x1f, 0xffffffff;", r = out(reg32) r, v = in(reg32) v, m = in(reg32) lane_mask)
    };
    r
}

#[inline(always)]
pub fn shfl_down(v: u32, delta: u32) -> u32 {
    let r: u32;
    // SAFETY: as above.
    unsafe {
        asm!("shfl.sync.down.b32 {r}, {v}, {d}, 0x1f, 0xffffffff;", r = out(reg32) r, v = in(reg32) v, d = in(reg32) delta)
    };
    r
}

#[inline(always)]
pub fn shfl_idx(v: u32, src: u32) -> u32 {
    let r: u32;
    // SAFETY: as above.
    unsafe {
        asm!("shfl.sync.idx.b32 {r}, {v}, {s}, 0x1f, 0xffffffff;", r = out(reg32) r, v = in(reg32) v, s = in(reg32) src)
    };
    r
}

#[inline(always)]
pub fn dp4a(a: u32, b: u32, c: i32) -> i32 {
    let r: i32;
    // SAFETY: pure arithmetic.
    unsafe {
        asm!("dp4a.s32.s32 {r}, {a}, {b}, {c};", r = out(reg32) r, a = in(reg32) a, b = in(reg32) b, c = in(reg32) c)
    };
    r
}

#[inline(always)]
pub fn mma_m16n8k32_s8(a: [u32; 4], b: [u32; 2], c: [i32; 4]) -> [i32; 4] {
    let (d0, d1, d2, d3): (i32, i32, i32, i32);
    // SAFETY: a full-warp tensor-core op; the module docs require all lanes present.
    unsafe {
        asm!(
            "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {{{d0}, {d1}, {d2}, {d3}}}, {{{a0}, {a1}, {a2}, {a3}}}, {{{b0}, {b1}}}, {{{c0}, {c1}, {c2}, {c3}}};",
            d0 = out(reg32) d0, d1 = out(reg32) d1, d2 = out(reg32) d2, d3 = out(reg32) d3,
            a0 = in(reg32) a[0], a1 = in(reg32) a[1], a2 = in(reg32) a[2], a3 = in(reg32) a[3],
            b0 = in(reg32) b[0], b1 = in(reg32) b[1],
            c0 = in(reg32) c[0], c1 = in(reg32) c[1], c2 = in(reg32) c[2], c3 = in(reg32) c[3],
        )
    };
    [d0, d1, d2, d3]
}

#[inline(always)]
pub fn clock64() -> u64 {
    let r: u64;
    // SAFETY: reads a special register.
    unsafe { asm!("mov.u64 {r}, %clock64;", r = out(reg64) r) };
    r
}

#[inline(always)]
pub fn dynamic_shared() -> *mut u8 {
    let r: u64;
    // SAFETY: takes the address of the block's dynamic shared memory window.
    unsafe { asm!("mov.u64 {r}, TRINITY_DYNAMIC_SMEM;", "cvta.shared.u64 {r}, {r};", r = out(reg64) r) };
    r as *mut u8
}

/// The dynamic shared memory window's base as a 32-bit shared-space address.
#[inline(always)]
fn shared_base() -> u32 {
    let r: u32;
    // SAFETY: takes the shared-space address of the dynamic shared memory.
    unsafe { asm!("mov.u32 {r}, TRINITY_DYNAMIC_SMEM;", r = out(reg32) r) };
    r
}

#[inline(always)]
pub unsafe fn shared_load_u64(index: u32) -> u64 {
    let v: u64;
    // SAFETY: the caller keeps `index` inside the dynamic shared memory.
    unsafe {
        asm!("ld.shared.u64 {v}, [{a}];", v = out(reg64) v, a = in(reg32) shared_base() + 8 * index, options(readonly, nostack))
    };
    v
}

#[inline(always)]
pub unsafe fn shared_store_u64(index: u32, v: u64) {
    // SAFETY: the caller keeps `index` inside the dynamic shared memory.
    unsafe {
        asm!("st.shared.u64 [{a}], {v};", v = in(reg64) v, a = in(reg32) shared_base() + 8 * index, options(nostack))
    };
}

#[inline(always)]
pub unsafe fn shared_load_u32(index: u32) -> u32 {
    let v: u32;
    // SAFETY: the caller keeps `index` inside the dynamic shared memory.
    unsafe {
        asm!("ld.shared.u32 {v}, [{a}];", v = out(reg32) v, a = in(reg32) shared_base() + 4 * index, options(readonly, nostack))
    };
    v
}

#[inline(always)]
pub unsafe fn shared_store_u32(index: u32, v: u32) {
    // SAFETY: the caller keeps `index` inside the dynamic shared memory.
    unsafe {
        asm!("st.shared.u32 [{a}], {v};", v = in(reg32) v, a = in(reg32) shared_base() + 4 * index, options(nostack))
    };
}

#[inline(always)]
pub unsafe fn shared_store_u32x4(index: u32, v: [u32; 4]) {
    // SAFETY: the caller keeps the four words inside the dynamic shared memory, 16-byte aligned.
    unsafe {
        asm!("st.shared.v4.u32 [{a}], {{{x}, {y}, {z}, {w}}};",
            a = in(reg32) shared_base() + 4 * index,
            x = in(reg32) v[0], y = in(reg32) v[1], z = in(reg32) v[2], w = in(reg32) v[3],
            options(nostack))
    };
}

#[inline(always)]
pub unsafe fn shared_load_u32x4(index: u32) -> [u32; 4] {
    let (x, y, z, w): (u32, u32, u32, u32);
    // SAFETY: the caller keeps the four words inside the dynamic shared memory, 16-byte aligned.
    unsafe {
        asm!("ld.shared.v4.u32 {{{x}, {y}, {z}, {w}}}, [{a}];",
            a = in(reg32) shared_base() + 4 * index,
            x = out(reg32) x, y = out(reg32) y, z = out(reg32) z, w = out(reg32) w,
            options(readonly, nostack))
    };
    [x, y, z, w]
}

#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    let r: f32;
    // SAFETY: pure arithmetic.
    unsafe {
        asm!("fma.rn.f32 {r}, {a}, {b}, {c};", r = out(reg32) r, a = in(reg32) a, b = in(reg32) b, c = in(reg32) c, options(pure, nomem, nostack))
    };
    r
}

#[inline(always)]
pub fn round_ties_even(v: f32) -> f32 {
    let r: f32;
    // SAFETY: pure arithmetic.
    unsafe { asm!("cvt.rni.f32.f32 {r}, {v};", r = out(reg32) r, v = in(reg32) v, options(pure, nomem, nostack)) };
    r
}

#[inline(always)]
pub fn sqrt_f32(v: f32) -> f32 {
    let r: f32;
    // SAFETY: pure arithmetic.
    unsafe { asm!("sqrt.rn.f32 {r}, {v};", r = out(reg32) r, v = in(reg32) v, options(pure, nomem, nostack)) };
    r
}

#[inline(always)]
pub fn exp2_f32(v: f32) -> f32 {
    let r: f32;
    // SAFETY: pure arithmetic.
    unsafe { asm!("ex2.approx.f32 {r}, {v};", r = out(reg32) r, v = in(reg32) v, options(pure, nomem, nostack)) };
    r
}

#[inline(always)]
pub fn trap() -> ! {
    // SAFETY: aborts the kernel.
    unsafe { nvptx::trap() }
}

#[inline(always)]
pub fn f16_to_f32(bits: u16) -> f32 {
    let r: f32;
    // SAFETY: pure conversion.
    unsafe { asm!("cvt.f32.f16 {r}, {h};", r = out(reg32) r, h = in(reg16) bits) };
    r
}

#[inline(always)]
pub fn f32_to_f16(v: f32) -> u16 {
    let r: u16;
    // SAFETY: pure conversion.
    unsafe { asm!("cvt.rn.f16.f32 {r}, {v};", r = out(reg16) r, v = in(reg32) v) };
    r
}

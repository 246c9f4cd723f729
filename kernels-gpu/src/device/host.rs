//! The host side of [`crate::device`]: every call goes to the SIMT emulator's
//! per-thread context ([`crate::emu`]).

use crate::emu;

/// A read-only view of global memory; on the host it carries its length so
/// that every access is bounds-checked.
#[derive(Clone, Copy, Debug)]
pub struct In<T> {
    ptr: *const T,
    len: usize,
}

/// A writable view of global memory; bounds-checked on the host.
#[derive(Clone, Copy, Debug)]
pub struct Out<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: the views are handed to emulated GPU threads, which, like GPU
// threads, share the buffers; races are the kernel's contract to avoid.
unsafe impl<T> Send for In<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for In<T> {}
// SAFETY: as above.
unsafe impl<T> Send for Out<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Out<T> {}

impl<T> In<T> {
    /// A view of a host slice for an emulator launch.
    pub fn from_slice(s: &[T]) -> Self {
        In { ptr: s.as_ptr(), len: s.len() }
    }
}

impl<T> Out<T> {
    /// A view of a host slice for an emulator launch.
    pub fn from_slice(s: &mut [T]) -> Self {
        Out { ptr: s.as_mut_ptr(), len: s.len() }
    }

    /// The same memory as a read-only view (for a body that reads what its thread wrote).
    pub fn as_in(self) -> In<T> {
        In { ptr: self.ptr, len: self.len }
    }
}

fn check(kind: &str, i: usize, len: usize) {
    if i >= len {
        emu::fault(format!("{kind} of element {i} out of bounds of a {len}-element buffer"));
    }
}

impl<T: Copy> In<T> {
    /// Reads element `i` (bounds-checked).
    ///
    /// # Safety
    /// The view describes live memory.
    pub unsafe fn get(self, i: usize) -> T {
        check("global read", i, self.len);
        // SAFETY: in bounds of a live buffer.
        unsafe { *self.ptr.add(i) }
    }
}

impl In<u32> {
    /// Reads four consecutive words (the device's 128-bit load; checked for bounds and alignment).
    ///
    /// # Safety
    /// The view describes live memory.
    pub unsafe fn get4(self, i: usize) -> [u32; 4] {
        check("128-bit global read", i + 3, self.len);
        if !(self.ptr as usize + 4 * i).is_multiple_of(16) {
            emu::fault(format!("misaligned 128-bit global read at element {i}"));
        }
        // SAFETY: in bounds.
        unsafe { [*self.ptr.add(i), *self.ptr.add(i + 1), *self.ptr.add(i + 2), *self.ptr.add(i + 3)] }
    }
}

impl<T: Copy> Out<T> {
    /// Writes element `i` (bounds-checked).
    ///
    /// # Safety
    /// The view describes live memory.
    pub unsafe fn set(self, i: usize, v: T) {
        check("global write", i, self.len);
        // SAFETY: in bounds of a live buffer.
        unsafe { *self.ptr.add(i) = v }
    }

    /// Reads element `i` back (bounds-checked).
    ///
    /// # Safety
    /// The view describes live memory.
    pub unsafe fn get(self, i: usize) -> T {
        check("global read", i, self.len);
        // SAFETY: in bounds of a live buffer.
        unsafe { *self.ptr.add(i) }
    }
}

impl Out<u32> {
    /// Atomic minimum on element `i`; returns the previous value.
    ///
    /// # Safety
    /// The view describes live memory.
    pub unsafe fn atomic_min(self, i: usize, v: u32) -> u32 {
        check("atomic", i, self.len);
        // SAFETY: in bounds and aligned.
        unsafe { std::sync::atomic::AtomicU32::from_ptr(self.ptr.add(i)) }
            .fetch_min(v, std::sync::atomic::Ordering::SeqCst)
    }

    /// Atomic add on element `i`; returns the previous value.
    ///
    /// # Safety
    /// The view describes live memory.
    pub unsafe fn atomic_add(self, i: usize, v: u32) -> u32 {
        check("atomic", i, self.len);
        // SAFETY: in bounds and aligned.
        unsafe { std::sync::atomic::AtomicU32::from_ptr(self.ptr.add(i)) }
            .fetch_add(v, std::sync::atomic::Ordering::SeqCst)
    }
}

pub fn thread_idx(axis: usize) -> u32 {
    emu::with_thread(|t| t.thread_idx[axis])
}
pub fn block_idx(axis: usize) -> u32 {
    emu::with_thread(|t| t.block_idx[axis])
}
pub fn block_dim(axis: usize) -> u32 {
    emu::with_thread(|t| t.block_dim[axis])
}
pub fn grid_dim(axis: usize) -> u32 {
    emu::with_thread(|t| t.grid_dim[axis])
}
#[track_caller]
pub fn sync_threads() {
    emu::sync_threads(std::panic::Location::caller())
}
#[track_caller]
pub fn shfl_xor(v: u32, lane_mask: u32) -> u32 {
    emu::shuffle(v, |lane| Some(lane ^ (lane_mask & 31)), std::panic::Location::caller())
}
#[track_caller]
pub fn shfl_down(v: u32, delta: u32) -> u32 {
    emu::shuffle(v, |lane| lane.checked_add(delta).filter(|&s| s < 32), std::panic::Location::caller())
}
#[track_caller]
pub fn shfl_idx(v: u32, src: u32) -> u32 {
    emu::shuffle(v, |_| Some(src % 32), std::panic::Location::caller())
}
pub fn dp4a(a: u32, b: u32, c: i32) -> i32 {
    crate::device::dp4a_reference(a, b, c)
}
#[track_caller]
pub fn mma_m16n8k32_s8(a: [u32; 4], b: [u32; 2], c: [i32; 4]) -> [i32; 4] {
    emu::mma_m16n8k32_s8(a, b, c, std::panic::Location::caller())
}
pub fn clock64() -> u64 {
    emu::clock64()
}
pub fn dynamic_shared() -> *mut u8 {
    emu::with_thread(|t| t.shared)
}
pub unsafe fn shared_load_u64(index: u32) -> u64 {
    let p = emu::shared_element::<u64>(index, emu::Access::Read);
    // SAFETY: `shared_element` checked the bounds; shared memory is 16-byte aligned.
    unsafe { *p }
}
pub unsafe fn shared_store_u64(index: u32, v: u64) {
    let p = emu::shared_element::<u64>(index, emu::Access::Write);
    // SAFETY: as above.
    unsafe { *p = v }
}
pub unsafe fn shared_load_u32(index: u32) -> u32 {
    let p = emu::shared_element::<u32>(index, emu::Access::Read);
    // SAFETY: `shared_element` checked the bounds.
    unsafe { *p }
}
pub unsafe fn shared_store_u32(index: u32, v: u32) {
    let p = emu::shared_element::<u32>(index, emu::Access::Write);
    // SAFETY: as above.
    unsafe { *p = v }
}
pub unsafe fn shared_store_u32x4(index: u32, v: [u32; 4]) {
    if !index.is_multiple_of(4) {
        emu::fault(format!("misaligned 128-bit shared store at element {index}"));
    }
    let p = emu::shared_element::<[u32; 4]>(index / 4, emu::Access::Write);
    // SAFETY: as above.
    unsafe { *p = v }
}
pub unsafe fn shared_load_u32x4(index: u32) -> [u32; 4] {
    if !index.is_multiple_of(4) {
        emu::fault(format!("misaligned 128-bit shared load at element {index}"));
    }
    let p = emu::shared_element::<[u32; 4]>(index / 4, emu::Access::Read);
    // SAFETY: `shared_element` checked the bounds.
    unsafe { *p }
}
// Inlined so the CPU paths that share it (the quantizer) get one instruction, not a call.
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}
#[inline(always)]
pub fn round_ties_even(v: f32) -> f32 {
    v.round_ties_even()
}
#[inline(always)]
pub fn sqrt_f32(v: f32) -> f32 {
    v.sqrt()
}
#[inline(always)]
pub fn exp2_f32(v: f32) -> f32 {
    v.exp2()
}
pub fn trap() -> ! {
    emu::fault("trap".to_owned())
}
pub fn f16_to_f32(bits: u16) -> f32 {
    crate::device::f16_to_f32_soft(bits)
}
pub fn f32_to_f16(v: f32) -> u16 {
    crate::device::f32_to_f16_soft(v)
}

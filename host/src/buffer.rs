//! # Buffers that live on a backend's device
//!
//! A [`Buffer`] is host memory for the `cpu` and `emu` backends and device
//! memory for `cuda`. Data crosses between the host and the device only
//! through [`Device::upload`](crate::Device::upload) and
//! [`Device::download`](crate::Device::download); every op of
//! [`Device`](crate::Device) takes and writes buffers, so a chain of ops
//! (quantize → GEMV, unpack → …) never round-trips through the host.
//!
//! [`QuantizedBuffer`] and [`TernaryBuffer`] group the buffers of the two
//! operands of a ternary linear layer with their shapes.

use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
use half::f16;

use crate::matmul::Precision;

/// An element type a [`Buffer`] can hold on every backend.
pub trait Elem: DeviceRepr + ValidAsZeroBits + bytemuck::Pod + Default + std::fmt::Debug + Unpin {}
impl<T: DeviceRepr + ValidAsZeroBits + bytemuck::Pod + Default + std::fmt::Debug + Unpin> Elem for T {}

/// An output element of the ternary matmuls; the type picks the kernel variant.
pub trait OutputElem: Elem + Send + Sync {
    /// The precision this element stores.
    const PRECISION: Precision;
    /// The GEMV variant that writes it.
    const GEMV: &'static str;
    /// The grouped GEMV variant (up to three matrices per launch) that writes it.
    const GEMV_MANY: &'static str;
    /// The GEMM variant that writes it.
    const GEMM: &'static str;
    /// Its value as f32 (exact).
    fn to_f32(self) -> f32;
    /// From an f32 result (round to nearest even for f16).
    fn from_f32(v: f32) -> Self;
    /// `dst = ` the first `dst.len()` (at most 16) lanes of `v`, each as
    /// [`from_f32`](Self::from_f32) converts it, straight from the register
    /// (the AVX-512 GEMM's epilogue: a copy through an array cost it a
    /// store-forwarding stall per 16 outputs).
    ///
    /// # Safety
    /// The CPU has AVX-512 F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn store_lanes(dst: &mut [Self], v: std::arch::x86_64::__m512);
}

impl OutputElem for f32 {
    const PRECISION: Precision = Precision::F32;
    const GEMV: &'static str = kernels_gpu::kernels::ternary_gemv_f32::NAME;
    const GEMV_MANY: &'static str = kernels_gpu::kernels::ternary_gemv_many_f32::NAME;
    const GEMM: &'static str = kernels_gpu::kernels::ternary_gemm_f32::NAME;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn store_lanes(dst: &mut [f32], v: std::arch::x86_64::__m512) {
        assert!(dst.len() <= 16, "{} lanes", dst.len());
        // SAFETY: the mask limits the store to `dst`; AVX-512 F (the caller's contract).
        unsafe { std::arch::x86_64::_mm512_mask_storeu_ps(dst.as_mut_ptr(), crate::cpu::first_lanes(dst.len()), v) }
    }
}

impl OutputElem for f16 {
    const PRECISION: Precision = Precision::F16;
    const GEMV: &'static str = kernels_gpu::kernels::ternary_gemv_f16::NAME;
    const GEMV_MANY: &'static str = kernels_gpu::kernels::ternary_gemv_many_f16::NAME;
    const GEMM: &'static str = kernels_gpu::kernels::ternary_gemm_f16::NAME;
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn store_lanes(dst: &mut [f16], v: std::arch::x86_64::__m512) {
        use std::arch::x86_64::*;
        match <&mut [f16; 16]>::try_from(&mut *dst) {
            // SAFETY: 16 halves (32 bytes) into `dst`; AVX-512 F (the caller's contract).
            // Round to nearest even, as `f16::from_f32`.
            Ok(whole) => unsafe {
                let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                _mm256_storeu_si256(whole.as_mut_ptr().cast(), h)
            },
            Err(_) => {
                let mut lanes = [0f32; 16];
                // SAFETY: 16 lanes into 16 floats.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
                for (o, &x) in dst.iter_mut().zip(&lanes) {
                    *o = f16::from_f32(x);
                }
            }
        }
    }
}

/// An activation element the quantizer reads; the type picks the kernel variant.
pub trait ActivationElem: Elem + Sync {
    /// The quantizer variant that reads it.
    const QUANTIZE: &'static str;
    /// A row as f32 values (exact), converted into `buf` where needed.
    fn row_as_f32<'a>(row: &'a [Self], buf: &'a mut Vec<f32>) -> &'a [f32];
}
impl ActivationElem for f32 {
    const QUANTIZE: &'static str = kernels_gpu::kernels::quantize_f32::NAME;
    fn row_as_f32<'a>(row: &'a [f32], _: &'a mut Vec<f32>) -> &'a [f32] {
        row
    }
}
impl ActivationElem for f16 {
    const QUANTIZE: &'static str = kernels_gpu::kernels::quantize_f16::NAME;
    fn row_as_f32<'a>(row: &'a [f16], buf: &'a mut Vec<f32>) -> &'a [f32] {
        buf.resize(row.len(), 0.0);
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(row, buf);
        buf
    }
}

/// Where every [`HostMemory`] starts: a cache line, one 512-bit vector.
pub const HOST_ALIGN: usize = 64;

/// The elements of a host [`Buffer`], starting on a [`HOST_ALIGN`]-byte
/// boundary, as device memory starts on one; read and written as a slice.
///
/// The allocator gives large blocks 16 bytes past a page boundary, so an
/// ordinary `Vec` would have every 64-byte row segment and vector load of the
/// CPU kernels straddle two cache lines, and the output columns that two
/// threads write side by side share a line at each boundary (the prefill
/// GEMM of 2B-4T's up projection ran 1–6 % slower into such an output).
/// It is a `Vec` with up to one line of slack in front, zeroed by the
/// allocator, so the pages of a large buffer (a KV cache sized for a long
/// context) are only committed where they are written.
#[derive(Debug)]
pub struct HostMemory<T> {
    storage: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Elem> HostMemory<T> {
    /// `len` zeroed elements.
    pub fn zeroed(len: usize) -> HostMemory<T> {
        let slack = HOST_ALIGN / size_of::<T>().max(1);
        let storage: Vec<T> = bytemuck::zeroed_vec(len + slack);
        // Every element type divides the line, so the offset is below `slack`.
        let start = storage.as_ptr().align_offset(HOST_ALIGN);
        assert!(start < slack, "{} elements of {} bytes to a {HOST_ALIGN}-byte boundary", start, size_of::<T>());
        HostMemory { storage, start, len }
    }

    /// A copy of `data`.
    pub fn from_slice(data: &[T]) -> HostMemory<T> {
        let mut m = HostMemory::zeroed(data.len());
        m.copy_from_slice(data);
        m
    }
}

impl<T: Elem> Clone for HostMemory<T> {
    /// A copy at its own boundary (the new block's offset differs).
    fn clone(&self) -> HostMemory<T> {
        HostMemory::from_slice(self)
    }
}

impl<T> std::ops::Deref for HostMemory<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl<T> std::ops::DerefMut for HostMemory<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// Elements on one backend's device.
#[derive(Debug)]
pub enum Buffer<T: Elem> {
    /// Host memory (`cpu`, `emu`).
    Host(HostMemory<T>),
    /// Device memory of the CUDA backend, ordered on its stream.
    Cuda(CudaSlice<T>),
}

impl<T: Elem> Buffer<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Buffer::Host(v) => v.len(),
            Buffer::Cuda(s) => s.len(),
        }
    }

    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where it lives, for error messages.
    pub fn location(&self) -> &'static str {
        match self {
            Buffer::Host(_) => "host memory",
            Buffer::Cuda(_) => "CUDA device memory",
        }
    }
}

/// Int8 activations on a device: the quantizer's output, the matmuls' input.
#[derive(Debug)]
pub struct QuantizedBuffer {
    /// Rows (M, tokens).
    pub rows: usize,
    /// Columns (K).
    pub cols: usize,
    /// Row length in memory: K padded to 64, zeros past K.
    pub k_pad: usize,
    /// `rows × k_pad` int8 values, four per little-endian word.
    pub words: Buffer<u32>,
    /// Per-row scale (`127 / absmax`).
    pub scales: Buffer<f32>,
    /// Per-row sum of the int8 values.
    pub sums: Buffer<i32>,
}

/// A dense f16 weight matrix on a device: `rows × cols`, rows
/// [`kernels_gpu::head::head_row_len`]`(cols)` elements apart with zeros past
/// `cols` (the layout of a 16-bit lm_head). The cuBLAS FP16 baseline's linears
/// ([`Device::dense_f16_weights`](crate::Device::dense_f16_weights)).
#[derive(Debug)]
pub struct F16Weights {
    /// Rows (N, output features).
    pub rows: usize,
    /// Columns (K, input features).
    pub cols: usize,
    /// `rows × head_row_len(cols)` halves.
    pub values: Buffer<half::f16>,
}

/// Ternary weights in the interleaved device layout, on a device.
#[derive(Debug)]
pub struct TernaryBuffer {
    /// Rows (N, output features).
    pub rows: usize,
    /// Columns (K, input features).
    pub cols: usize,
    /// K padded to 64.
    pub k_pad: usize,
    /// Absmean scale.
    pub scale: f32,
    /// `rows × k_pad / 16` words (see `kernels_gpu::format::device_layout`).
    pub words: Buffer<u32>,
}

/// Where each row of a batch sits: the KV-cache slot of its sequence and its
/// position there. Rows of one batch may come from different sequences (a
/// decode step of several, or a prompt chunk beside them); RoPE, the KV write
/// and attention read a row's place from here. Built by [`Device::row_places`](crate::Device::row_places),
/// which keeps the largest slot and position so ops check them against the
/// cache without reading the buffers back.
#[derive(Debug)]
pub struct RowPlaces {
    /// Each row's cache slot.
    pub slots: Buffer<u32>,
    /// Each row's position in its sequence.
    pub positions: Buffer<u32>,
    /// The largest slot.
    pub max_slot: usize,
    /// The largest position.
    pub max_pos: usize,
}

impl RowPlaces {
    /// Rows.
    pub fn len(&self) -> usize {
        self.positions.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

/// The partial results of split decode attention (flash-decoding: a max, a
/// sum and an unnormalized output per chunk of positions), kept between calls
/// so a decode step allocates nothing and a captured CUDA graph finds them at
/// the same addresses. Starts empty; [`Device::attention`](crate::Device::attention)
/// grows it to the largest request it has seen and never shrinks it.
#[derive(Debug, Default)]
pub struct AttentionScratch {
    /// `pairs × chunks × head_dim` partial outputs.
    pub(crate) out: Option<Buffer<f32>>,
    /// `pairs × chunks × 2` running maxima and sums.
    pub(crate) max_sum: Option<Buffer<f32>>,
    /// The `cpu` backend's partial sums: `tasks × group × head_dim`.
    pub(crate) cpu_sums: Vec<f32>,
    /// The `cpu` backend's (max, total) per task and query head.
    pub(crate) cpu_parts: Vec<(f32, f32)>,
}

impl AttentionScratch {
    /// An empty scratch (the first split attention sizes it).
    pub fn new() -> AttentionScratch {
        AttentionScratch::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: Elem + PartialEq>(len: usize, value: impl Fn(usize) -> T) {
        let data: Vec<T> = (0..len).map(&value).collect();
        let mut m = HostMemory::from_slice(&data);
        assert_eq!(m.as_ptr() as usize % HOST_ALIGN, 0, "{len} × {}", std::any::type_name::<T>());
        assert_eq!(&m[..], &data[..]);
        m[len - 1] = value(0);
        assert_eq!(m[len - 1], value(0));
        let zeros = HostMemory::<T>::zeroed(len);
        assert_eq!(zeros.as_ptr() as usize % HOST_ALIGN, 0);
        assert!(zeros.iter().all(|v| *v == T::zeroed()), "zeroed {len}");
        assert_eq!(m.clone().as_ptr() as usize % HOST_ALIGN, 0, "a clone keeps its own alignment");
    }

    #[test]
    fn host_memory_starts_on_a_line_and_holds_its_elements() {
        // Small blocks and the large ones the allocator maps (16 bytes past a page).
        for len in [1, 3, 17, 1000, 300_000] {
            check(len, |i| i as u8);
            check(len, |i| f16::from_f32(i as f32));
            check(len, |i| i as f32 * 0.5);
            check(len, |i| i as u32);
        }
    }
}

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

/// Elements on one backend's device.
#[derive(Debug)]
pub enum Buffer<T: Elem> {
    /// Host memory (`cpu`, `emu`).
    Host(Vec<T>),
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
}

impl AttentionScratch {
    /// An empty scratch (the first split attention sizes it).
    pub fn new() -> AttentionScratch {
        AttentionScratch::default()
    }
}

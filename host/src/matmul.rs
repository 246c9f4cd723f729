//! # Ternary linear layers: quantized activations and the scalar references
//!
//! BitNet b1.58's linear layer, `Y[M, N] = X[M, K] · W[N, K]ᵀ` (as `nn.Linear`):
//!
//! 1. activations are quantized per row (token) to int8 with
//!    `scale = 127 / max(absmax, 1e-5)` ([`kernels_gpu::matmul::activation_scale`])
//!    and round-half-to-even ([`QuantizedActivations`]);
//! 2. the int32 dot products of int8 activations and trits are exact;
//! 3. the epilogue ([`dequantize`]) is `acc · (w_scale / x_scale)`, one
//!    division and one multiplication in IEEE f32, identical on every backend.
//!
//! So the f32 outputs of every backend must equal the reference bit for bit;
//! f16 outputs are the f32 result rounded to nearest even. The functions here
//! are the types; the scalar references are in [`crate::reference`].

use half::f16;
pub use kernels_gpu::format::device_layout::{dequantize, dequantize_by, dequantize_factor, padded_k};

/// Activations handed to the quantizer.
#[derive(Debug, Clone, Copy)]
pub enum Activations<'a> {
    /// f32 rows.
    F32(&'a [f32]),
    /// f16 rows.
    F16(&'a [f16]),
}

impl Activations<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Activations::F32(v) => v.len(),
            Activations::F16(v) => v.len(),
        }
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Element `i` as f32.
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Activations::F32(v) => v[i],
            Activations::F16(v) => v[i].to_f32(),
        }
    }
    /// "f32" or "f16".
    pub fn precision(&self) -> Precision {
        match self {
            Activations::F32(_) => Precision::F32,
            Activations::F16(_) => Precision::F16,
        }
    }
}

/// Output (or input) precision of a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// IEEE single.
    F32,
    /// IEEE half (results are the f32 result rounded to nearest even).
    F16,
}

impl Precision {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }

    /// Applies this precision to an f32 result (returned as f32).
    pub fn round(self, v: f32) -> f32 {
        match self {
            Precision::F32 => v,
            Precision::F16 => f16::from_f32(v).to_f32(),
        }
    }
}

/// Int8 activations with their per-row scales and sums.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedActivations {
    /// Rows (M, tokens).
    pub rows: usize,
    /// Columns (K).
    pub cols: usize,
    /// Row length in memory: K padded to 64, zeros past K.
    pub k_pad: usize,
    /// `rows × k_pad` int8 values, four per little-endian word.
    pub words: Vec<u32>,
    /// Per-row scale (`127 / absmax`).
    pub scales: Vec<f32>,
    /// Per-row sum of the int8 values.
    pub sums: Vec<i32>,
}

impl QuantizedActivations {
    /// The int8 values, `rows × k_pad`.
    pub fn values(&self) -> &[i8] {
        bytemuck::cast_slice(&self.words)
    }

    /// A zeroed block of the right size.
    pub fn zeroed(rows: usize, cols: usize) -> Self {
        let k_pad = padded_k(cols);
        QuantizedActivations {
            rows,
            cols,
            k_pad,
            words: vec![0; rows * k_pad / 4],
            scales: vec![0.0; rows],
            sums: vec![0; rows],
        }
    }
}

/// Borrowed quantized activations (host memory): what the CPU paths read.
#[derive(Debug, Clone, Copy)]
pub struct QuantizedRef<'a> {
    /// Rows (M).
    pub rows: usize,
    /// Columns (K).
    pub cols: usize,
    /// Row length in memory.
    pub k_pad: usize,
    /// `rows × k_pad` int8 values as words.
    pub words: &'a [u32],
    /// Per-row scales.
    pub scales: &'a [f32],
    /// Per-row sums.
    pub sums: &'a [i32],
}

impl QuantizedRef<'_> {
    /// The int8 values, `rows × k_pad`.
    pub fn values(&self) -> &[i8] {
        bytemuck::cast_slice(self.words)
    }
}

impl QuantizedActivations {
    /// A borrowed view.
    pub fn view(&self) -> QuantizedRef<'_> {
        QuantizedRef {
            rows: self.rows,
            cols: self.cols,
            k_pad: self.k_pad,
            words: &self.words,
            scales: &self.scales,
            sums: &self.sums,
        }
    }
}

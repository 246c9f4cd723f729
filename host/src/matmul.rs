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
//! are the scalar references, written for obviousness.

use half::f16;
pub use kernels_gpu::format::device_layout::{dequantize, padded_k};
use kernels_gpu::matmul::{activation_scale, quantize_value};

use crate::ternary::DeviceTernary;

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

/// Scalar reference of the quantizer (`quantize_f32` / `quantize_f16`).
pub fn quantize_reference(x: Activations<'_>, rows: usize, cols: usize) -> QuantizedActivations {
    let mut out = QuantizedActivations::zeroed(rows, cols);
    let mut values = vec![0i8; rows * out.k_pad];
    for r in 0..rows {
        let absmax = (0..cols).map(|c| x.get(r * cols + c).abs()).fold(0.0f32, f32::max);
        let scale = activation_scale(absmax);
        out.scales[r] = scale;
        for c in 0..cols {
            let q = quantize_value(x.get(r * cols + c), scale);
            values[r * out.k_pad + c] = q;
            out.sums[r] += q as i32;
        }
    }
    out.words = bytemuck::cast_slice::<i8, u32>(&values).to_vec();
    out
}

/// Scalar reference of the ternary linear layer (both the GEMV and the GEMM):
/// exact int32 dot products, then [`dequantize`], then `precision`.
pub fn ternary_matmul_reference(x: &QuantizedActivations, w: &DeviceTernary, precision: Precision) -> Vec<f32> {
    let (m, n, k) = (x.rows, w.rows(), w.cols());
    let xv = x.values();
    let mut y = vec![0f32; m * n];
    for r in 0..m {
        for c in 0..n {
            let acc: i32 = (0..k).map(|kk| xv[r * x.k_pad + kk] as i32 * w.trit(c, kk) as i32).sum();
            y[r * n + c] = precision.round(dequantize(acc, w.scale(), x.scales[r]));
        }
    }
    y
}

/// Scalar reference of SGEMM, `C = A · Bᵀ` (A: m×k, B: n×k), accumulated in
/// f64; also returns `Σ|a||b|` per output, the scale of the rounding error an
/// f32 kernel may make.
pub fn sgemm_reference(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f64>) {
    let mut c = vec![0f32; m * n];
    let mut mag = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut t) = (0f64, 0f64);
            for kk in 0..k {
                let p = a[i * k + kk] as f64 * b[j * k + kk] as f64;
                s += p;
                t += p.abs();
            }
            c[i * n + j] = s as f32;
            mag[i * n + j] = t;
        }
    }
    (c, mag)
}

/// The SGEMM tolerance: `|got − want| ≤ SGEMM_REL_TOL · Σ|a||b| + 1e-30`.
/// An f32 accumulation over K terms errs by at most about `K · 2⁻²⁴ · Σ|a||b|`;
/// this bound (`2⁻¹²`, i.e. K up to 4096 in the worst case, far more in
/// practice) catches any wrong index while accepting any summation order.
pub const SGEMM_REL_TOL: f64 = 1.0 / 4096.0;

/// Whether `got` is within the SGEMM tolerance of `want` (a NaN never is).
fn within(got: f32, want: f32, magnitude: f64) -> bool {
    matches!((got as f64 - want as f64).abs().partial_cmp(&(SGEMM_REL_TOL * magnitude + 1e-30)), Some(o) if o.is_le())
}

/// Checks an SGEMM result against [`sgemm_reference`].
pub fn compare_sgemm(got: &[f32], want: &[f32], magnitude: &[f64]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("length {} instead of {}", got.len(), want.len()));
    }
    let mut bad = got.iter().zip(want).zip(magnitude).enumerate().filter(|(_, ((g, w), m))| !within(**g, **w, **m));
    match bad.next() {
        None => Ok(()),
        Some((i, ((g, w), m))) => {
            Err(format!("{} outside tolerance; first at {i}: got {g}, want {w} (Σ|a||b| = {m:.3e})", 1 + bad.count()))
        }
    }
}

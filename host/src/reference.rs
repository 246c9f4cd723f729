//! # The scalar references: what every kernel must compute
//!
//! Written for obviousness, one output at a time, and on their own: they use
//! Rust's `f32::round_ties_even`, `f32::clamp` and their own dequantization,
//! never the helpers the kernels and the CPU paths share
//! (`kernels_gpu::matmul::{quantize_value, activation_scale}`,
//! `format::device_layout::dequantize`, the device API's rounding), so a bug in
//! a shared helper shows up as a mismatch instead of hiding on both sides.
//! Those helpers are pinned by table tests of known values below.

use half::f16;

use crate::matmul::{Activations, Precision, QuantizedActivations};
use crate::ternary::{DeviceTernary, PackedTernary};
use crate::trihash;

/// Scalar reference of `unpack_i8`.
pub fn unpack_i8_reference(w: &PackedTernary) -> Vec<i8> {
    w.unpack()
}

/// Scalar reference of `unpack_f16`.
pub fn unpack_f16_reference(w: &PackedTernary) -> Vec<f16> {
    w.unpack().into_iter().map(|t| f16::from_f32(t as f32 * w.scale())).collect()
}

/// BitNet's activation quantization of one row: `s = 127 / max(absmax, 1e-5)`,
/// `q = clamp(round_half_even(x · s), −128, 127)` (NaN → 0); returns `s`.
fn quantize_row_reference(row: &[f32], q: &mut [i8]) -> f32 {
    let mut absmax = 0.0f32;
    for &v in row {
        if v.abs() > absmax {
            absmax = v.abs();
        }
    }
    let scale = 127.0 / if absmax > 1e-5 { absmax } else { 1e-5 };
    for (o, &v) in q.iter_mut().zip(row) {
        let r = (v * scale).round_ties_even();
        *o = if r.is_nan() {
            0
        } else if r >= 127.0 {
            127
        } else if r <= -128.0 {
            -128
        } else {
            r as i8
        };
    }
    scale
}

/// Scalar reference of the quantizer (`quantize_f32` / `quantize_f16`).
pub fn quantize_reference(x: Activations<'_>, rows: usize, cols: usize) -> QuantizedActivations {
    let mut out = QuantizedActivations::zeroed(rows, cols);
    let mut values = vec![0i8; rows * out.k_pad];
    for r in 0..rows {
        let row: Vec<f32> = (0..cols).map(|c| x.get(r * cols + c)).collect();
        let q = &mut values[r * out.k_pad..][..cols];
        out.scales[r] = quantize_row_reference(&row, q);
        out.sums[r] = q.iter().map(|&v| v as i32).sum();
    }
    out.words = bytemuck::cast_slice::<i8, u32>(&values).to_vec();
    out
}

/// Scalar reference of the ternary linear layer (both the GEMV and the GEMM):
/// exact int32 dot products, then `acc · (w_scale / x_scale)` in f32, then `precision`.
pub fn ternary_matmul_reference(x: &QuantizedActivations, w: &DeviceTernary, precision: Precision) -> Vec<f32> {
    let (m, n, k) = (x.rows, w.rows(), w.cols());
    let xv = x.values();
    let mut y = vec![0f32; m * n];
    for r in 0..m {
        for c in 0..n {
            let acc: i32 = (0..k).map(|kk| xv[r * x.k_pad + kk] as i32 * w.trit(c, kk) as i32).sum();
            let ratio = w.scale() / x.scales[r];
            let v = acc as f32 * ratio;
            y[r * n + c] = match precision {
                Precision::F32 => v,
                Precision::F16 => f16::from_f32(v).to_f32(),
            };
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

/// Scalar reference of `trihash_batch`: the sponge, message by message.
pub fn trihash_batch_reference(messages: &[i8]) -> Vec<i8> {
    messages
        .chunks(kernels_gpu::curl::HASH_TRITS)
        .flat_map(|m| {
            let mut c = trihash::CurlP81::new();
            c.absorb(m).expect("one block");
            c.squeeze(kernels_gpu::curl::HASH_TRITS).expect("one block")
        })
        .collect()
}

/// Scalar reference of `trihash_search` (the `trihash_pow` kernel): every
/// nonce of the range hashed by the definition.
pub fn trihash_search_reference(base: &[i8; 729], first_batch: u64, batches: u64, mwm: usize) -> Vec<u64> {
    use kernels_gpu::curl::{HASH_TRITS, LANES_PER_BATCH, NONCE_TRITS};
    let lanes = LANES_PER_BATCH as u64;
    (first_batch * lanes..(first_batch + batches) * lanes)
        .filter(|&v| {
            let mut state = *base;
            state[HASH_TRITS - NONCE_TRITS..HASH_TRITS].copy_from_slice(&trihash::Pow::nonce(v));
            trihash::transform_reference(&mut state);
            trihash::trailing_zeros(&state[..HASH_TRITS]) >= mwm
        })
        .collect()
}

/// Scalar reference of `rms_norm_f32`, in f64.
pub fn rms_norm_reference(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let n = w.len();
    x.chunks(n)
        .flat_map(|row| {
            let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (ms + eps as f64).sqrt();
            row.iter().zip(w).map(move |(&v, &g)| (g as f64 * v as f64 * inv) as f32)
        })
        .collect()
}

/// Scalar reference of `rope_f32`: angles `pos · θ^(−2i/d)` in f64 (not from the tables).
pub fn rope_reference(x: &[f32], heads: usize, head_dim: usize, positions: &[usize], theta: f64) -> Vec<f32> {
    let half = head_dim / 2;
    let mut y = x.to_vec();
    for (row, &pos) in y.chunks_mut(heads * head_dim).zip(positions) {
        for head in row.chunks_mut(head_dim) {
            for i in 0..half {
                let angle = pos as f64 * theta.powf(-((2 * i) as f64) / head_dim as f64);
                let (a, b) = (head[i] as f64, head[i + half] as f64);
                head[i] = (a * angle.cos() - b * angle.sin()) as f32;
                head[i + half] = (b * angle.cos() + a * angle.sin()) as f32;
            }
        }
    }
    y
}

/// Scalar reference of `attention_f32`, in f64: causal, GQA; row `r` at
/// `places[r] = (slot, position)` takes the softmax over its slot's `0 ..= position`.
#[allow(clippy::too_many_arguments)]
pub fn attention_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    places: &[(usize, usize)],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    context: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; q.len()];
    for (r, &(slot, pos)) in places.iter().enumerate() {
        for h in 0..heads {
            let kvh = h * kv_heads / heads;
            let qv = &q[(r * heads + h) * head_dim..][..head_dim];
            let at = |p: usize, d: usize| ((slot * kv_heads + kvh) * context + p) * head_dim + d;
            let scores: Vec<f64> = (0..=pos)
                .map(|p| {
                    (0..head_dim).map(|d| qv[d] as f64 * k[at(p, d)] as f64).sum::<f64>() / (head_dim as f64).sqrt()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = e.iter().sum();
            for d in 0..head_dim {
                let acc: f64 = e.iter().enumerate().map(|(p, w)| w / total * v[at(p, d)] as f64).sum();
                out[(r * heads + h) * head_dim + d] = acc as f32;
            }
        }
    }
    out
}

/// Scalar reference of `kv_write_f32`: the cache after writing `x`'s rows at `places`.
pub fn kv_write_reference(
    x: &[f32],
    cache: &[f32],
    places: &[(usize, usize)],
    kv_heads: usize,
    head_dim: usize,
    context: usize,
) -> Vec<f32> {
    let mut out = cache.to_vec();
    for (i, &value) in x.iter().enumerate() {
        let (r, kh, d) = (i / (kv_heads * head_dim), i / head_dim % kv_heads, i % head_dim);
        let (slot, pos) = places[r];
        out[slot * kv_heads * context * head_dim + kh * context * head_dim + pos * head_dim + d] = value;
    }
    out
}

/// Scalar reference of `argmax_f32`: per row of `cols`, the first index whose
/// value is the row's maximum (compared as f64; NaN skipped; a row of NaNs gives 0).
pub fn argmax_reference(x: &[f32], cols: usize) -> Vec<u32> {
    x.chunks(cols)
        .map(|row| {
            let mut best: Option<(usize, f64)> = None;
            for (i, &v) in row.iter().enumerate() {
                let v = v as f64;
                if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
                    best = Some((i, v));
                }
            }
            best.map_or(0, |(i, _)| i as u32)
        })
        .collect()
}

/// Scalar reference of `gated_f32`: relu(g)²·u (`act` 0) or g·sigmoid(g)·u (`act` 1), in f64.
pub fn gated_reference(gate: &[f32], up: &[f32], act: u32) -> Vec<f32> {
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| {
            let g = g as f64;
            let a = if act == 0 { g.max(0.0).powi(2) } else { g / (1.0 + (-g).exp()) };
            (a * u as f64) as f32
        })
        .collect()
}

/// Whether `got` is within `rel · |want| + abs` of `want` everywhere (a NaN never is).
pub fn compare_close(got: &[f32], want: &[f32], rel: f64, abs: f64) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("length {} instead of {}", got.len(), want.len()));
    }
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| {
            let tol = rel * (want[i] as f64).abs() + abs;
            !matches!(((got[i] - want[i]) as f64).abs().partial_cmp(&tol), Some(o) if o.is_le())
        })
        .collect();
    match bad.first() {
        None => Ok(()),
        Some(&i) => Err(format!("{} outside tolerance; first at {i}: got {:e}, want {:e}", bad.len(), got[i], want[i])),
    }
}

/// Scalar reference of `head_gemv_f16` / `head_gemv_i8`: `A · Bᵀ` in f64 for
/// `m × k` A and `n` rows of B given by `b(row, col)` (the head's own values,
/// f16 or int8 × scale); the sums and the sums of their terms' magnitudes.
pub fn head_gemv_reference(
    a: &[f32],
    b: &dyn Fn(usize, usize) -> f64,
    m: usize,
    n: usize,
    k: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (mut c, mut mag) = (vec![0f64; m * n], vec![0f64; m * n]);
    for i in 0..m {
        for j in 0..n {
            for t in 0..k {
                let p = a[i * k + t] as f64 * b(j, t);
                c[i * n + j] += p;
                mag[i * n + j] += p.abs();
            }
        }
    }
    (c, mag)
}

/// f32 sums of `k` products against f64 ones: each within `(k + 2) · 2⁻²³ ·
/// Σ|terms|` (the worst case of any summation order).
pub fn compare_sums(got: &[f32], want: &[f64], mag: &[f64], k: usize) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("length {} instead of {}", got.len(), want.len()));
    }
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        let tol = (k as f64 + 2.0) * f32::EPSILON as f64 * m + 1e-30;
        if !matches!((g as f64 - w).abs().partial_cmp(&tol), Some(o) if o.is_le()) {
            return Err(format!("element {i}: got {g:e}, want {w:e} (± {tol:e})"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The helpers the kernels and the CPU paths share, pinned by known values.
    use super::argmax_reference;
    use kernels_gpu::device::round_ties_even;
    use kernels_gpu::format::device_layout::{dequantize, dequantize_by, dequantize_factor};
    use kernels_gpu::matmul::{activation_scale, quantize_value};

    #[test]
    fn argmax_takes_the_first_maximum_and_skips_nan() {
        let x = [1.0, 3.0, 3.0, -1.0, f32::NAN, -2.0, f32::NAN, -1.0, f32::NAN, f32::NAN, f32::NEG_INFINITY, f32::NAN];
        assert_eq!(argmax_reference(&x, 4), vec![1, 3, 2]);
        assert_eq!(argmax_reference(&[f32::NAN; 3], 3), vec![0]);
    }

    #[test]
    fn round_ties_even_table() {
        for (v, want) in [
            (0.5f32, 0.0f32),
            (1.5, 2.0),
            (2.5, 2.0),
            (3.5, 4.0),
            (-0.5, -0.0),
            (-1.5, -2.0),
            (-2.5, -2.0),
            (0.49999997, 0.0),
            (126.5, 126.0),
            (127.5, 128.0),
            (-127.5, -128.0),
            (1e30, 1e30),
        ] {
            let got = round_ties_even(v);
            assert_eq!(got.to_bits(), want.to_bits(), "round_ties_even({v}) = {got}, want {want}");
        }
        assert!(round_ties_even(f32::NAN).is_nan());
        assert_eq!(round_ties_even(f32::INFINITY), f32::INFINITY);
    }

    #[test]
    fn activation_scale_table() {
        for (absmax, want) in [
            (127.0f32, 1.0f32),
            (1.0, 127.0),
            (0.5, 254.0),
            (0.0, 127.0 / 1e-5),
            (1e-6, 127.0 / 1e-5),
            (-0.0, 127.0 / 1e-5),
            (f32::INFINITY, 0.0),
        ] {
            assert_eq!(activation_scale(absmax).to_bits(), want.to_bits(), "activation_scale({absmax})");
        }
        // NaN absmax (a NaN in the row never becomes the absmax through `>`, but be defined): the floor.
        assert_eq!(activation_scale(f32::NAN), 127.0 / 1e-5);
    }

    #[test]
    fn quantize_value_table() {
        for (x, scale, want) in [
            (0.5f32, 1.0f32, 0i8),
            (1.5, 1.0, 2),
            (2.5, 1.0, 2),
            (-0.5, 1.0, 0),
            (-1.5, 1.0, -2),
            (-2.5, 1.0, -2),
            (127.4, 1.0, 127),
            (127.5, 1.0, 127),
            (300.0, 1.0, 127),
            (-128.4, 1.0, -128),
            (-500.0, 1.0, -128),
            (1.0, 127.0, 127),
            (-1.0, 127.0, -127),
            (-0.0, 1.0, 0),
            (f32::INFINITY, 1.0, 127),
            (f32::NEG_INFINITY, 1.0, -128),
            (f32::NAN, 1.0, 0),
        ] {
            assert_eq!(quantize_value(x, scale), want, "quantize_value({x}, {scale})");
        }
    }

    #[test]
    fn dequantize_table() {
        for (acc, w, x, want) in [
            (0i32, 0.5f32, 1.0f32, 0.0f32),
            (254, 1.0, 127.0, 2.0),
            (-127, 0.5, 127.0, -0.5),
            (3, 0.1, 0.3, 3.0 * (0.1f32 / 0.3f32)),
            (i32::MAX, 1.0, 1.0, 2147483648.0),
        ] {
            assert_eq!(dequantize(acc, w, x).to_bits(), want.to_bits(), "dequantize({acc}, {w}, {x})");
            let by_factor = dequantize_by(acc, dequantize_factor(w, x));
            assert_eq!(by_factor.to_bits(), want.to_bits(), "dequantize_by({acc}, dequantize_factor({w}, {x}))");
        }
    }

    #[test]
    fn the_reference_quantizer_agrees_with_the_tables() {
        use crate::matmul::Activations;
        // absmax 127 → scale 1: ties, clamps and signed zeros straight through.
        let row = [127.0f32, 0.5, 1.5, 2.5, -0.5, -2.5, -127.0, -0.0];
        let q = super::quantize_reference(Activations::F32(&row), 1, row.len());
        assert_eq!(&q.values()[..row.len()], &[127, 0, 2, 2, 0, -2, -127, 0]);
        assert_eq!(q.scales, vec![1.0]);
        assert_eq!(q.sums, vec![2]);
        let zeros = super::quantize_reference(Activations::F32(&[0.0; 3]), 1, 3);
        assert_eq!(zeros.scales, vec![127.0 / 1e-5]);
    }
}

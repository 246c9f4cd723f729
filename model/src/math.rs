//! # The float parts of a BitNet layer, as transformers computes them
//!
//! RMSNorm, rotate-half RoPE, causal attention with GQA and f32 softmax, and the
//! gated activations, on host rows of f32. On the `cpu` and `emu` backends the
//! activations live in host memory, so these run in place between the ternary
//! linears (which run on the backend's kernels).

use crate::config::Activation;

/// `y = w · x / sqrt(mean(x²) + eps)` per row of `x` (`rows × w.len()`), in place.
/// The mean is accumulated in f64 (closer to exact than any f32 order).
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let n = w.len();
    for row in x.chunks_mut(n) {
        let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / n as f64;
        let inv = 1.0 / ((ms as f32) + eps).sqrt();
        for (v, &g) in row.iter_mut().zip(w) {
            *v = g * (*v * inv);
        }
    }
}

/// The RoPE tables for positions `0..positions`: `cos` and `sin` of
/// `pos · θ^(−2i/d)`, `positions × head_dim / 2` each, in f32 as transformers
/// builds them (`inv_freq` in f32, the product in f32, then cos / sin).
pub fn rope_tables(head_dim: usize, theta: f32, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32)).collect();
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for p in 0..positions {
        for &f in &inv_freq {
            let a = p as f32 * f;
            cos.push((a as f64).cos() as f32);
            sin.push((a as f64).sin() as f32);
        }
    }
    (cos, sin)
}

/// Rotate-half RoPE on `rows × heads × head_dim` (row `r` at position `pos0 + r`), in place.
pub fn rope(x: &mut [f32], heads: usize, head_dim: usize, pos0: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    for (r, row) in x.chunks_mut(heads * head_dim).enumerate() {
        let (c, s) = (&cos[(pos0 + r) * half..][..half], &sin[(pos0 + r) * half..][..half]);
        for head in row.chunks_mut(head_dim) {
            let (a, b) = head.split_at_mut(half);
            for i in 0..half {
                let (x1, x2) = (a[i], b[i]);
                a[i] = x1 * c[i] - x2 * s[i];
                b[i] = x2 * c[i] + x1 * s[i];
            }
        }
    }
}

/// Causal attention for `rows` new queries at positions `pos0..`, against the
/// cache of `pos0 + rows` keys / values (`kv_heads × context × head_dim`,
/// position-major within a head). Query head `h` reads KV head
/// `h / (heads / kv_heads)`; scores are scaled by `head_dim^-0.5`; softmax in f32.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    out: &mut [f32],
    rows: usize,
    pos0: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    context: usize,
) {
    use rayon::prelude::*;
    let group = heads / kv_heads;
    let scale = (head_dim as f32).powf(-0.5);
    // One task per (row, head): each writes its own head_dim outputs.
    out[..rows * heads * head_dim].par_chunks_mut(head_dim).enumerate().for_each(|(task, o)| {
        let (r, h) = (task / heads, task % heads);
        let len = pos0 + r + 1;
        let mut scores = vec![0f32; len];
        {
            let kvh = h / group;
            let qv = &q[(r * heads + h) * head_dim..][..head_dim];
            let keys = &k_cache[kvh * context * head_dim..];
            let mut max = f32::NEG_INFINITY;
            for (p, s) in scores[..len].iter_mut().enumerate() {
                let kv = &keys[p * head_dim..][..head_dim];
                let dot: f32 = qv.iter().zip(kv).map(|(a, b)| a * b).sum();
                *s = dot * scale;
                max = max.max(*s);
            }
            let mut total = 0f32;
            for s in scores[..len].iter_mut() {
                *s = (*s - max).exp();
                total += *s;
            }
            o.fill(0.0);
            let values = &v_cache[kvh * context * head_dim..];
            for (p, &s) in scores[..len].iter().enumerate() {
                let w = s / total;
                for (acc, &v) in o.iter_mut().zip(&values[p * head_dim..][..head_dim]) {
                    *acc += w * v;
                }
            }
        }
    });
}

/// `act(gate) · up`, elementwise, into `gate`.
pub fn gated(gate: &mut [f32], up: &[f32], act: Activation) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let a = match act {
            Activation::Relu2 => {
                let r = g.max(0.0);
                r * r
            }
            Activation::Silu => *g / (1.0 + (-*g).exp()),
        };
        *g = a * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_of_a_known_row() {
        let mut x = [3.0f32, 4.0];
        rms_norm(&mut x, &[1.0, 2.0], 0.0);
        // mean of squares 12.5, 1/sqrt = 0.28284271
        assert!((x[0] - 0.848_528_1).abs() < 1e-6 && (x[1] - 2.262_741_7).abs() < 1e-6, "{x:?}");
    }

    #[test]
    fn rope_rotates_the_halves() {
        let (cos, sin) = rope_tables(4, 10000.0, 2);
        assert_eq!(&cos[..2], &[1.0, 1.0]);
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        rope(&mut x, 1, 4, 1, &cos, &sin);
        // position 1, frequencies 1 and 0.01: (x1 cos − x2 sin, x2 cos + x1 sin)
        let (c0, s0, c1, s1) = (1f32.cos(), 1f32.sin(), 0.01f32.cos(), 0.01f32.sin());
        let want = [1.0 * c0 - 3.0 * s0, 2.0 * c1 - 4.0 * s1, 3.0 * c0 + 1.0 * s0, 4.0 * c1 + 2.0 * s1];
        for (g, w) in x.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{x:?} vs {want:?}");
        }
    }

    #[test]
    fn attention_of_one_key_returns_its_value_and_gqa_shares_kv_heads() {
        // 2 query heads, 1 KV head, head_dim 2, context 4, one token at position 0.
        let q = [1.0f32, 0.0, 0.0, 1.0];
        let k = [0.5f32, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let v = [7.0f32, -3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let mut out = [0f32; 4];
        attention(&q, &k, &v, &mut out, 1, 0, 2, 1, 2, 4);
        assert_eq!(out, [7.0, -3.0, 7.0, -3.0]);
    }

    #[test]
    fn relu2_and_silu() {
        let mut g = [-1.0f32, 2.0];
        gated(&mut g, &[5.0, 3.0], Activation::Relu2);
        assert_eq!(g, [0.0, 12.0]);
        let mut g = [0.0f32];
        gated(&mut g, &[2.0], Activation::Silu);
        assert_eq!(g, [0.0]);
    }
}

//! # Ternary linears from a checkpoint, repacked into Trinity's device layout
//!
//! - Packed (`BitNetForCausalLM`, offline): `uint8 [out/4, in]`, bits `2i..2i+1`
//!   of `packed[r][c]` hold row `i·(out/4) + r` (four contiguous row blocks),
//!   code = trit + 1; one `weight_scale` per tensor, dividing the output for
//!   `linear_class: bitlinear` and multiplying it for `autobitlinear`.
//! - Latent (bf16 master, 1bitLLM's fp16): absmean ternarization at load,
//!   `s = 1 / max(mean|W|, 1e-5)`, `T = clamp(round_half_even(W·s), −1, 1)`,
//!   dequantized as `T / s`, the way transformers and 1bitLLM compute it.
//!
//! Either way the result is 2-bit weights with one f32 scale: no f32 copy of a
//! ternary matrix is ever made (the transient is one byte per weight, one tensor at a time).

use safetensors::Dtype;
use trinity::ternary::{DeviceTernary, PackedTernary};

use crate::checkpoint::{Checkpoint, check_float, check_shape, float_at};
use crate::config::WeightFormat;
use crate::error::{ModelError, ModelResult};

/// Loads linear `prefix` (`….q_proj`) of shape `out × inp` as device-layout ternary weights.
pub fn load_linear(
    ck: &Checkpoint,
    prefix: &str,
    out: usize,
    inp: usize,
    format: WeightFormat,
) -> ModelResult<DeviceTernary> {
    let name = format!("{prefix}.weight");
    let t = ck.tensor(&name)?;
    let bad = |reason: String| ModelError::BadWeights { name: name.clone(), reason };
    let (trits, scale) = match format {
        WeightFormat::PackedDivide | WeightFormat::PackedMultiply => {
            if t.dtype != Dtype::U8 {
                return Err(ModelError::TensorDtype {
                    name: name.clone(),
                    path: t.path.to_owned(),
                    dtype: format!("{:?}", t.dtype),
                    expected: "U8 (packed ternary)",
                });
            }
            if !out.is_multiple_of(4) {
                return Err(bad(format!("{out} output rows do not pack four to a byte")));
            }
            check_shape(&t, &[out / 4, inp])?;
            let trits = unpack_row_blocks(t.data, out, inp).map_err(bad)?;
            let scale_name = format!("{prefix}.weight_scale");
            let st = ck.tensor(&scale_name)?;
            check_float(&st)?;
            if st.shape.iter().product::<usize>() != 1 {
                return Err(ModelError::TensorShape {
                    name: scale_name.clone(),
                    path: st.path.to_owned(),
                    shape: st.shape.clone(),
                    expected: vec![1],
                });
            }
            let ws = float_at(st.dtype, st.data, 0);
            if !(ws.is_finite() && ws > 0.0) {
                return Err(ModelError::BadWeights {
                    name: scale_name.clone(),
                    reason: format!("weight_scale {ws} is not a positive number"),
                });
            }
            let scale = if format == WeightFormat::PackedDivide { 1.0 / ws } else { ws };
            (trits, scale)
        }
        WeightFormat::Latent => {
            check_float(&t)?;
            check_shape(&t, &[out, inp])?;
            ternarize(t.dtype, t.data, out * inp)
        }
    };
    let packed = PackedTernary::pack(&trits, out, inp, scale).map_err(|e| bad(e.to_string()))?;
    Ok(DeviceTernary::from_packed(&packed))
}

/// Trits of a Hugging Face packed tensor: row `i·(out/4) + r` is in bits `2i` of byte row `r`.
pub fn unpack_row_blocks(data: &[u8], out: usize, inp: usize) -> Result<Vec<i8>, String> {
    let block = out / 4;
    let mut trits = vec![0i8; out * inp];
    for (row, dst) in trits.chunks_mut(inp).enumerate() {
        let (i, r) = (row / block, row % block);
        for (c, t) in dst.iter_mut().enumerate() {
            let code = (data[r * inp + c] >> (2 * i)) & 3;
            if code == 3 {
                return Err(format!("invalid code 0b11 for row {row}, column {c}"));
            }
            *t = code as i8 - 1;
        }
    }
    Ok(trits)
}

/// Absmean ternarization of `n` latent weights: the trits and `1 / s`.
pub fn ternarize(dtype: Dtype, data: &[u8], n: usize) -> (Vec<i8>, f32) {
    let sum: f64 = (0..n).map(|i| float_at(dtype, data, i).abs() as f64).sum();
    let mean = (sum / n.max(1) as f64) as f32;
    let s = 1.0 / mean.max(1e-5);
    let trits = (0..n).map(|i| (float_at(dtype, data, i) * s).round_ties_even().clamp(-1.0, 1.0) as i8).collect();
    (trits, 1.0 / s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_blocks_unpack_as_transformers_documents_them() {
        // transformers' unpack_weights example: packed [[0b10100001, 0b00011000], [0b10010000, 0b00001010]]
        // unpacks to rows [0,-1], [-1,1], [-1,1], [-1,1], [1,0], [0,-1], [1,-1], [1,-1].
        let packed = [0b1010_0001u8, 0b0001_1000, 0b1001_0000, 0b0000_1010];
        let trits = unpack_row_blocks(&packed, 8, 2).unwrap();
        assert_eq!(trits, vec![0, -1, -1, 1, -1, 1, -1, 1, 1, 0, 0, -1, 1, -1, 1, -1]);
        assert!(unpack_row_blocks(&[0b11], 4, 1).unwrap_err().contains("invalid code"));
    }

    #[test]
    fn absmean_ternarization_rounds_half_to_even() {
        // mean |W| = 1 → s = 1: 0.5 → 0, 1.5 → 2 → clamped 1, -0.5 → 0, -1.5 → -1.
        let w = [0.5f32, 1.5, -0.5, -1.5, 1.0, -1.0];
        let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        let (t, scale) = ternarize(Dtype::F32, &bytes, w.len());
        assert_eq!(t, vec![0, 1, 0, -1, 1, -1]);
        assert_eq!(scale, 1.0);
        let zeros = vec![0u8; 16];
        assert_eq!(ternarize(Dtype::F32, &zeros, 4).1, 1e-5, "the 1e-5 floor");
    }
}

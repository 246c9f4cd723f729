//! # Ternary weights on the host: quantization, packing, import checks
//!
//! [`PackedTernary`] holds a weight matrix `W[rows, cols]` in the packed
//! format v1 documented in [`kernels_gpu::format`]: 2-bit codes (`trit + 1`),
//! 16 per little-endian `u32`, rows padded to whole words with the zero code,
//! one `f32` absmean scale per tensor.
//!
//! - [`absmean_ternarize`]: BitNet b1.58's weight quantizer,
//!   `scale = mean|W|`, `W_t = clamp(round(W / scale), −1, 1)`.
//! - [`PackedTernary::pack`] / [`PackedTernary::unpack`]: trits ↔ words.
//! - [`PackedTernary::from_words`]: import of stored words, rejecting the
//!   invalid code `0b11`, wrong lengths and non-zero padding.

use half::f16;
use kernels_gpu::format::device_layout::{interleave, padded_k};
use kernels_gpu::format::{self, CODE_INVALID, CODE_ZERO, WEIGHTS_PER_WORD, ZERO_WORD};

/// Errors of the packed format.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormatError {
    /// A trit outside {−1, 0, +1}.
    #[error("value {value} at ({row}, {col}) is not a trit (−1, 0, +1)")]
    NotATrit {
        /// Row.
        row: usize,
        /// Column.
        col: usize,
        /// The offending value.
        value: i8,
    },
    /// The invalid code `0b11` in stored words.
    #[error(
        "invalid ternary code 0b11 at ({row}, {col}) of a {rows}×{cols} matrix (format v1 allows 0b00, 0b01, 0b10)"
    )]
    InvalidCode {
        /// Row.
        row: usize,
        /// Column.
        col: usize,
        /// Rows of the matrix.
        rows: usize,
        /// Columns of the matrix.
        cols: usize,
    },
    /// Padding past the last column is not the zero code.
    #[error("row {row} has non-zero padding past column {cols} (format v1 pads with code 0b01)")]
    BadPadding {
        /// Row.
        row: usize,
        /// Columns of the matrix.
        cols: usize,
    },
    /// A buffer of the wrong length for the shape.
    #[error("{what}: expected {expected} elements for a {rows}×{cols} matrix, got {got}")]
    Length {
        /// Which buffer.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
    },
    /// The scale is not a finite positive number.
    #[error("scale {0} is not finite and positive")]
    BadScale(f32),
}

/// A ternary weight matrix in packed format v1.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedTernary {
    rows: usize,
    cols: usize,
    scale: f32,
    words: Vec<u32>,
}

impl PackedTernary {
    /// Packs `rows × cols` trits (row-major) with a tensor scale.
    pub fn pack(trits: &[i8], rows: usize, cols: usize, scale: f32) -> Result<Self, FormatError> {
        check_len("trits", trits.len(), rows * cols, rows, cols)?;
        check_scale(scale)?;
        let wpr = format::words_per_row(cols);
        let mut words = vec![ZERO_WORD; rows * wpr];
        for (r, row) in trits.chunks(cols.max(1)).enumerate().take(rows) {
            for (c, &t) in row.iter().enumerate() {
                if !(-1..=1).contains(&t) {
                    return Err(FormatError::NotATrit { row: r, col: c, value: t });
                }
                let w = &mut words[r * wpr + c / WEIGHTS_PER_WORD];
                let shift = 2 * (c % WEIGHTS_PER_WORD);
                *w = (*w & !(3 << shift)) | (format::encode(t) << shift);
            }
        }
        Ok(PackedTernary { rows, cols, scale, words })
    }

    /// Imports stored words, validating every code and the padding.
    pub fn from_words(words: Vec<u32>, rows: usize, cols: usize, scale: f32) -> Result<Self, FormatError> {
        let wpr = format::words_per_row(cols);
        check_len("words", words.len(), rows * wpr, rows, cols)?;
        check_scale(scale)?;
        for r in 0..rows {
            for wi in 0..wpr {
                let w = words[r * wpr + wi];
                for j in 0..WEIGHTS_PER_WORD {
                    let col = wi * WEIGHTS_PER_WORD + j;
                    let code = (w >> (2 * j)) & 3;
                    if code == CODE_INVALID {
                        return Err(FormatError::InvalidCode { row: r, col, rows, cols });
                    }
                    if col >= cols && code != CODE_ZERO {
                        return Err(FormatError::BadPadding { row: r, cols });
                    }
                }
            }
        }
        Ok(PackedTernary { rows, cols, scale, words })
    }

    /// Unpacks to `rows × cols` trits, row-major.
    pub fn unpack(&self) -> Vec<i8> {
        let wpr = self.words_per_row();
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            let row = &self.words[r * wpr..(r + 1) * wpr];
            out.extend(
                (0..self.cols).map(|c| format::decode(row[c / WEIGHTS_PER_WORD] >> (2 * (c % WEIGHTS_PER_WORD)))),
            );
        }
        out
    }

    /// Rows (N, output features).
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns (K, input features).
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The absmean scale.
    pub fn scale(&self) -> f32 {
        self.scale
    }
    /// Words per row, padding included.
    pub fn words_per_row(&self) -> usize {
        format::words_per_row(self.cols)
    }
    /// The packed words.
    pub fn words(&self) -> &[u32] {
        &self.words
    }
    /// Bytes of packed storage.
    pub fn packed_bytes(&self) -> usize {
        self.words.len() * 4
    }
}

fn check_len(what: &'static str, got: usize, expected: usize, rows: usize, cols: usize) -> Result<(), FormatError> {
    if got == expected { Ok(()) } else { Err(FormatError::Length { what, expected, got, rows, cols }) }
}

fn check_scale(scale: f32) -> Result<(), FormatError> {
    if scale.is_finite() && scale > 0.0 { Ok(()) } else { Err(FormatError::BadScale(scale)) }
}

/// Ternary weights in the kernels' device layout (see
/// [`kernels_gpu::format::device_layout`]): rows padded to 64 weights, 16
/// weights per word interleaved so one shift and mask yields four int8 lanes.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceTernary {
    rows: usize,
    cols: usize,
    scale: f32,
    words: Vec<u32>,
}

impl DeviceTernary {
    /// Repacks format v1 into the device layout.
    pub fn from_packed(p: &PackedTernary) -> Self {
        let k_pad = padded_k(p.cols());
        let wpr = k_pad / WEIGHTS_PER_WORD;
        let trits = p.unpack();
        let mut words = vec![0u32; p.rows() * wpr];
        for (r, row) in words.chunks_mut(wpr).enumerate() {
            for (wi, word) in row.iter_mut().enumerate() {
                let codes = std::array::from_fn(|i| {
                    let col = wi * WEIGHTS_PER_WORD + i;
                    if col < p.cols() { format::encode(trits[r * p.cols() + col]) } else { CODE_ZERO }
                });
                *word = interleave(codes);
            }
        }
        DeviceTernary { rows: p.rows(), cols: p.cols(), scale: p.scale(), words }
    }

    /// Random weights straight in the device layout (uniform trits), fast
    /// enough for the gigabytes of a model's linear stack.
    pub fn random(rows: usize, cols: usize, scale: f32, rng: &mut impl rand::Rng) -> Self {
        let wpr = padded_k(cols) / WEIGHTS_PER_WORD;
        let mut words = vec![0u32; rows * wpr];
        for row in words.chunks_mut(wpr) {
            for (wi, w) in row.iter_mut().enumerate() {
                // Two random bits per code, invalid 0b11 folded to a uniform 0..=2 by rejection per word.
                let mut codes = [CODE_ZERO; 16];
                let mut bits = rng.next_u64();
                let mut left = 32;
                for (i, c) in codes.iter_mut().enumerate() {
                    if wi * WEIGHTS_PER_WORD + i >= cols {
                        break;
                    }
                    loop {
                        if left == 0 {
                            bits = rng.next_u64();
                            left = 32;
                        }
                        let v = (bits & 3) as u32;
                        bits >>= 2;
                        left -= 1;
                        if v != CODE_INVALID {
                            *c = v;
                            break;
                        }
                    }
                }
                *w = interleave(codes);
            }
        }
        DeviceTernary { rows, cols, scale, words }
    }

    /// Back to format v1 (the round trip of the repack).
    pub fn to_packed(&self) -> PackedTernary {
        let mut trits = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            trits.extend((0..self.cols).map(|c| self.trit(r, c)));
        }
        PackedTernary::pack(&trits, self.rows, self.cols, self.scale).expect("decoded trits are valid")
    }

    /// The trit at (row, col), decoded from the interleaved word.
    pub fn trit(&self, row: usize, col: usize) -> i8 {
        self.view().trit(row, col)
    }

    /// Rows (N).
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns (K).
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// K padded to the device alignment.
    pub fn k_pad(&self) -> usize {
        padded_k(self.cols)
    }
    /// Words per row.
    pub fn words_per_row(&self) -> usize {
        self.k_pad() / WEIGHTS_PER_WORD
    }
    /// The absmean scale.
    pub fn scale(&self) -> f32 {
        self.scale
    }
    /// The words.
    pub fn words(&self) -> &[u32] {
        &self.words
    }

    /// A borrowed view.
    pub fn view(&self) -> TernaryRef<'_> {
        TernaryRef { rows: self.rows, cols: self.cols, scale: self.scale, words: &self.words }
    }
}

/// Borrowed device-layout ternary weights (host memory): what the CPU paths read.
#[derive(Debug, Clone, Copy)]
pub struct TernaryRef<'a> {
    /// Rows (N).
    pub rows: usize,
    /// Columns (K).
    pub cols: usize,
    /// The absmean scale.
    pub scale: f32,
    /// `rows × k_pad / 16` words.
    pub words: &'a [u32],
}

impl TernaryRef<'_> {
    /// Rows (N).
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Words per row.
    pub fn words_per_row(&self) -> usize {
        padded_k(self.cols) / WEIGHTS_PER_WORD
    }
    /// The absmean scale.
    pub fn scale(&self) -> f32 {
        self.scale
    }
    /// The words.
    pub fn words(&self) -> &[u32] {
        self.words
    }

    /// The trit at (row, col), decoded from the interleaved word.
    pub fn trit(&self, row: usize, col: usize) -> i8 {
        let word = self.words[row * self.words_per_row() + col / WEIGHTS_PER_WORD];
        let i = col % WEIGHTS_PER_WORD;
        format::decode(word >> (8 * (i % 4) + 2 * (i / 4)))
    }

    /// The dense matrix `trit · scale` in f16 (rounded to nearest even), rows
    /// `ld ≥ cols` elements apart with zeros past `cols`: the weights of a
    /// 16-bit GEMM (the cuBLAS FP16 baseline's linears).
    pub fn to_f16_rows(&self, ld: usize) -> Vec<f16> {
        use rayon::prelude::*;
        assert!(ld >= self.cols, "row length {ld} below the {} columns", self.cols);
        let values = [f16::from_f32(-self.scale), f16::ZERO, f16::from_f32(self.scale)];
        let mut out = vec![f16::ZERO; self.rows * ld];
        out.par_chunks_mut(ld.max(1)).enumerate().for_each(|(r, row)| {
            for (c, v) in row[..self.cols].iter_mut().enumerate() {
                *v = values[(self.trit(r, c) + 1) as usize];
            }
        });
        out
    }
}

/// BitNet b1.58 absmean ternarization of latent weights: returns the trits
/// and the scale `mean|W|` (1.0 for an all-zero tensor, so it stays valid).
pub fn absmean_ternarize(weights: &[f32]) -> (Vec<i8>, f32) {
    let mean = weights.iter().map(|w| w.abs() as f64).sum::<f64>() / weights.len().max(1) as f64;
    let scale = if mean > 0.0 { mean as f32 } else { 1.0 };
    let trits = weights.iter().map(|w| (w / scale).round().clamp(-1.0, 1.0) as i8).collect();
    (trits, scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngExt, SeedableRng};

    fn random_trits(rng: &mut impl Rng, n: usize) -> Vec<i8> {
        (0..n).map(|_| rng.random_range(-1i8..=1)).collect()
    }

    #[test]
    fn dense_f16_rows_are_trit_times_scale_rounded_and_zero_padded() {
        // 2 × 3 trits, rows 16 apart; 0.1 is not a half: it rounds to 0x2E66 (0.0999755859375).
        let p = PackedTernary::pack(&[1, 0, -1, -1, 1, 0], 2, 3, 0.1).unwrap();
        let dense = DeviceTernary::from_packed(&p).view().to_f16_rows(16);
        let (pos, neg, zero) = (0x2E66u16, 0xAE66u16, 0u16);
        let mut want = vec![zero; 32];
        want[..3].copy_from_slice(&[pos, zero, neg]);
        want[16..19].copy_from_slice(&[neg, pos, zero]);
        assert_eq!(dense.iter().map(|h| h.to_bits()).collect::<Vec<_>>(), want);
        assert_eq!(f16::from_bits(pos).to_f64(), 0.0999755859375);
    }

    #[test]
    fn pack_unpack_round_trips_many_shapes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..300 {
            let rows = rng.random_range(1..9);
            let cols = rng.random_range(1..100);
            let trits = random_trits(&mut rng, rows * cols);
            let p = PackedTernary::pack(&trits, rows, cols, 0.5).unwrap();
            assert_eq!(p.words().len(), rows * cols.div_ceil(16));
            assert_eq!(p.unpack(), trits, "shape {rows}x{cols}");
            let back = PackedTernary::from_words(p.words().to_vec(), rows, cols, 0.5).unwrap();
            assert_eq!(back, p);
        }
    }

    #[test]
    fn bit_layout_is_the_documented_one() {
        // Weight k sits at bits 2k of word k/16, code = trit + 1; padding is 0b01.
        let p = PackedTernary::pack(&[-1, 0, 1], 1, 3, 1.0).unwrap();
        assert_eq!(p.words(), &[0b10_01_00 | (ZERO_WORD & !0b11_11_11)]);
    }

    #[test]
    fn code_three_is_rejected_on_import() {
        let mut words = PackedTernary::pack(&[0; 40], 2, 20, 1.0).unwrap().words().to_vec();
        words[2] |= 3 << 6; // row 1, column 3
        let err = PackedTernary::from_words(words, 2, 20, 1.0).unwrap_err();
        assert_eq!(err, FormatError::InvalidCode { row: 1, col: 3, rows: 2, cols: 20 });
        assert!(err.to_string().contains("0b11"));
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        assert!(matches!(PackedTernary::pack(&[2], 1, 1, 1.0), Err(FormatError::NotATrit { value: 2, .. })));
        assert!(matches!(PackedTernary::pack(&[0; 5], 2, 3, 1.0), Err(FormatError::Length { .. })));
        assert!(matches!(PackedTernary::pack(&[0], 1, 1, f32::NAN), Err(FormatError::BadScale(_))));
        assert!(matches!(PackedTernary::from_words(vec![0x5555_5554], 1, 17, 1.0), Err(FormatError::Length { .. })));
        // Column 17 of a 17-wide row is padding and must be the zero code.
        let err = PackedTernary::from_words(vec![ZERO_WORD, ZERO_WORD ^ 0b11 << 2], 1, 17, 1.0).unwrap_err();
        assert_eq!(err, FormatError::BadPadding { row: 0, cols: 17 });
    }

    #[test]
    fn device_layout_round_trips_and_is_interleaved() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let (rows, cols) = (rng.random_range(1..6), rng.random_range(1..200));
            let p = PackedTernary::pack(&random_trits(&mut rng, rows * cols), rows, cols, 0.25).unwrap();
            let d = DeviceTernary::from_packed(&p);
            assert_eq!(d.words().len(), rows * cols.div_ceil(64) * 4);
            assert_eq!(d.to_packed(), p, "{rows}×{cols}");
        }
        // Weight 4j + b at bits 8b + 2j: weights 0..4 are the low two bits of each byte.
        let p = PackedTernary::pack(&[1, -1, 0, 1, 1], 1, 5, 1.0).unwrap();
        let w = DeviceTernary::from_packed(&p).words()[0];
        assert_eq!(kernels_gpu::format::device_layout::codes(w, 0), 0x02_01_00_02);
        assert_eq!(kernels_gpu::format::device_layout::codes(w, 1), 0x01_01_01_02);
        assert_eq!(kernels_gpu::format::device_layout::codes_to_trits(0x02_01_00_02), 0x01_00_ff_01);
    }

    #[test]
    fn absmean_matches_bitnet_definition() {
        let (t, s) = absmean_ternarize(&[0.1, -0.5, 2.0, -0.02]);
        assert!((s - 0.655).abs() < 1e-6);
        assert_eq!(t, vec![0, -1, 1, 0]);
        assert_eq!(absmean_ternarize(&[0.0; 4]), (vec![0; 4], 1.0));
    }
}

//! # Packed ternary format, version 1
//!
//! The storage format of ternary weight matrices `W[N, K]` (N rows of K
//! weights, `nn.Linear` layout), shared by the host importers and the kernels.
//!
//! | what | rule |
//! |---|---|
//! | code | 2 bits per weight, `code = trit + 1`: `0b00` = −1, `0b01` = 0, `0b10` = +1; `0b11` is invalid |
//! | bit order | weight `k` of a row sits in word `k / 16` at bits `2·(k % 16) .. 2·(k % 16) + 2` (least significant first); words are little-endian `u32` |
//! | row padding | every row is padded to a whole number of words (`words_per_row = ceil(K / 16)`); padding holds code `0b01` (zero), so it adds nothing to a dot product |
//! | rows | row `n` starts at word `n · words_per_row`; rows are contiguous |
//! | scale | one `f32` per tensor (absmean: `mean|W|` of the latent weights), stored beside the words, not inside them |
//!
//! Code `0b11` is rejected when a tensor is imported. Kernels never validate
//! (they cannot report errors cheaply): they decode `0b11` as **0**, which is
//! also what the bit-flip fault model of the noise benchmark assumes — a
//! stored weight corrupted into the invalid code contributes nothing.
//!
//! The same code (`trit + 1`) is what Hugging Face's packed BitNet format uses
//! per weight; only the bit order and row grouping differ (the importer repacks).

/// Version of this format; stored in files and checked on import.
pub const FORMAT_VERSION: u32 = 1;
/// Weights per 32-bit word.
pub const WEIGHTS_PER_WORD: usize = 16;
/// Code of −1.
pub const CODE_MINUS: u32 = 0b00;
/// Code of 0 (also the padding code).
pub const CODE_ZERO: u32 = 0b01;
/// Code of +1.
pub const CODE_PLUS: u32 = 0b10;
/// The invalid code.
pub const CODE_INVALID: u32 = 0b11;
/// A word of 16 zero weights (the padding pattern).
pub const ZERO_WORD: u32 = 0x5555_5555;

/// Words per row for `cols` weights.
#[inline(always)]
pub const fn words_per_row(cols: usize) -> usize {
    cols.div_ceil(WEIGHTS_PER_WORD)
}

/// The code of a trit (−1, 0, +1); any other value is a caller bug.
#[inline(always)]
pub const fn encode(trit: i8) -> u32 {
    (trit + 1) as u32
}

/// The trit of a code's low two bits; the invalid code decodes as 0.
#[inline(always)]
pub const fn decode(code: u32) -> i8 {
    let c = code & 3;
    (c == CODE_PLUS) as i8 - (c == CODE_MINUS) as i8
}

/// Sign masks of a word: bit `2j` of the first result is set when weight `j`
/// is +1, of the second when it is −1 (other bits clear). Branch-free; the
/// invalid code sets neither.
#[inline(always)]
pub const fn sign_masks(word: u32) -> (u32, u32) {
    let lo = word & 0x5555_5555;
    let hi = (word >> 1) & 0x5555_5555;
    (hi & !lo, !hi & !lo & 0x5555_5555)
}

/// # The device layout of ternary weights (for the matmul kernels)
///
/// Produced from format v1 by the host's repack step (`trinity::ternary::DeviceTernary`):
///
/// | what | rule |
/// |---|---|
/// | codes | as v1, `code = trit + 1` (never `0b11`: the repack decodes v1 first) |
/// | rows | padded to a multiple of [`DEVICE_K_ALIGN`](device_layout::DEVICE_K_ALIGN) weights (zero code), so a row is a whole number of 128-bit loads |
/// | inside a word | 16 consecutive weights, weight `4j + b` at bits `8b + 2j`: one shift and mask, `(w >> 2j) & 0x03030303`, gives weights `4j .. 4j + 4` as four bytes, ready for `dp4a` |
///
/// Activations for these kernels are int8 rows padded with zeros to the same
/// multiple, so padding weights meet zero activations.
pub mod device_layout {
    /// Row padding, in weights.
    pub const DEVICE_K_ALIGN: usize = 64;

    /// K padded to the device alignment.
    #[inline(always)]
    pub const fn padded_k(k: usize) -> usize {
        k.div_ceil(DEVICE_K_ALIGN) * DEVICE_K_ALIGN
    }

    /// Packs 16 codes into one interleaved word.
    #[inline(always)]
    pub const fn interleave(codes: [u32; 16]) -> u32 {
        let mut w = 0;
        let mut i = 0;
        while i < 16 {
            let (j, b) = (i / 4, i % 4);
            w |= (codes[i] & 3) << (8 * b + 2 * j);
            i += 1;
        }
        w
    }

    /// The codes of weights `4j .. 4j + 4` of an interleaved word, one per byte.
    #[inline(always)]
    pub const fn codes(word: u32, j: u32) -> u32 {
        (word >> (2 * j)) & 0x0303_0303
    }

    /// Four codes (one per byte, each 0..=2) → four int8 trits, without a
    /// borrow crossing bytes.
    #[inline(always)]
    pub const fn codes_to_trits(codes: u32) -> u32 {
        ((codes | 0x8080_8080).wrapping_sub(0x0101_0101)) ^ 0x8080_8080
    }

    /// The dequantizing epilogue shared by every backend: an int32 dot product
    /// of int8 activations (scaled by `x_scale = 127 / absmax`) and trits
    /// (scaled by `1 / w_scale`), back to real units. One IEEE division and one
    /// multiplication, in this order, so every backend agrees to the bit.
    #[inline(always)]
    pub fn dequantize(acc: i32, w_scale: f32, x_scale: f32) -> f32 {
        dequantize_by(acc, dequantize_factor(w_scale, x_scale))
    }

    /// The first half of [`dequantize`]: its factor `w_scale / x_scale`. An
    /// epilogue that writes many outputs of one activation row computes it once
    /// and applies it with [`dequantize_by`] (or its vector form, the same two
    /// operations); the result is the same to the bit.
    #[inline(always)]
    pub fn dequantize_factor(w_scale: f32, x_scale: f32) -> f32 {
        w_scale / x_scale
    }

    /// The second half of [`dequantize`]: `acc` in real units, given the factor
    /// from [`dequantize_factor`].
    #[inline(always)]
    pub fn dequantize_by(acc: i32, factor: f32) -> f32 {
        acc as f32 * factor
    }
}

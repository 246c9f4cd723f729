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

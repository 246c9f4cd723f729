//! Packed ternary → f16, dequantized by the tensor scale.

use crate::device::{In, Out, f32_to_f16, global_thread_x};
use crate::format::{WEIGHTS_PER_WORD, decode, words_per_row};
use crate::kernel;

kernel! {
    /// Unpacks a packed ternary matrix (format v1) into f16 values `trit · scale`
    /// (IEEE half bits, rounded to nearest even).
    ///
    /// # Safety
    /// `packed` holds `rows · words_per_row(cols)` words; `out` holds `rows · cols` halves.
    ///
    /// # Parameters
    /// - `packed`: the format-v1 words, row after row.
    /// - `out`: `rows × cols` f16 bits, row-major.
    /// - `rows`, `cols`: the matrix shape.
    /// - `scale`: the tensor's absmean scale.
    ///
    /// # Thread mapping
    /// One thread per packed word, as in `unpack_i8`.
    ///
    /// # Tiling
    /// None; the three possible outputs are computed once per thread.
    pub unsafe fn unpack_f16(packed: In<u32>, out: Out<u16>, rows: u32, cols: u32, scale: f32) {
        let wpr = words_per_row(cols as usize);
        let w = global_thread_x() as usize;
        if w >= rows as usize * wpr {
            return;
        }
        let (row, word_in_row) = (w / wpr, w % wpr);
        let word = packed.get(w);
        let values = [f32_to_f16(-scale), 0u16, f32_to_f16(scale)];
        let first = word_in_row * WEIGHTS_PER_WORD;
        let n = (cols as usize - first).min(WEIGHTS_PER_WORD);
        let base = row * cols as usize + first;
        for j in 0..n {
            out.set(base + j, values[(decode(word >> (2 * j)) + 1) as usize]);
        }
    }
}

//! Packed ternary → int8 (one trit per byte).

use crate::device::{In, Out, global_thread_x};
use crate::format::{WEIGHTS_PER_WORD, decode, words_per_row};
use crate::kernel;
use crate::launch::LaunchConfig;

/// Threads per block of the unpack kernels (`unpack_i8`, `unpack_f16`).
pub const UNPACK_THREADS: u32 = 256;

/// The unpack kernels' launch: one thread per packed word.
pub const fn unpack_geometry(words: usize) -> LaunchConfig {
    LaunchConfig::cover(words, UNPACK_THREADS)
}

/// Checks an unpack request: `words` packed words and an output of `out` elements for `rows × cols`.
#[cfg(not(target_arch = "nvptx64"))]
pub fn unpack_check(rows: usize, cols: usize, words: usize, out: usize) -> Result<(), String> {
    crate::launch::check_len("packed words", words, rows * words_per_row(cols))?;
    crate::launch::check_len("output", out, rows * cols)
}

kernel! {
    /// Unpacks a packed ternary matrix (format v1) into int8 trits.
    ///
    /// # Safety
    /// `packed` holds `rows · words_per_row(cols)` words; `out` holds `rows · cols` bytes.
    ///
    /// # Parameters
    /// - `packed`: the format-v1 words, row after row.
    /// - `out`: `rows × cols` int8, row-major.
    /// - `rows`, `cols`: the matrix shape (`cols` need not be a multiple of 16).
    ///
    /// # Thread mapping
    /// One thread per packed word (16 weights of one row); any 1-D grid that
    /// covers `rows · words_per_row(cols)` threads.
    ///
    /// # Tiling
    /// None: each word is read once (coalesced across the warp) and its 16
    /// trits written to consecutive bytes; the row tail past `cols` is skipped.
    pub unsafe fn unpack_i8(packed: In<u32>, out: Out<i8>, rows: u32, cols: u32) {
        let wpr = words_per_row(cols as usize);
        let w = global_thread_x() as usize;
        if w >= rows as usize * wpr {
            return;
        }
        let (row, word_in_row) = (w / wpr, w % wpr);
        let word = packed.get(w);
        let first = word_in_row * WEIGHTS_PER_WORD;
        let n = (cols as usize - first).min(WEIGHTS_PER_WORD);
        let base = row * cols as usize + first;
        for j in 0..n {
            out.set(base + j, decode(word >> (2 * j)));
        }
    }
}

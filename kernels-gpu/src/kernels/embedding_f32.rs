//! Embedding gather: token ids → their f32 rows of the table.

use crate::device::*;
use crate::kernel;

/// Checks a gather: `ids` of `rows` ids below `vocab`, the table `vocab × hidden`.
#[cfg(not(target_arch = "nvptx64"))]
pub fn embedding_check(rows: usize, hidden: usize, vocab: usize, table: usize, out: usize) -> Result<(), String> {
    if rows == 0 || hidden == 0 {
        return Err("empty shape".into());
    }
    crate::launch::check_len("table", table, vocab * hidden)?;
    crate::launch::check_len("output", out, rows * hidden)
}

kernel! {
    /// `out[r][c] = table[ids[r]][c]`; an id at or past `vocab` writes zeros (the
    /// host rejects such ids before the launch; this keeps the kernel in bounds).
    ///
    /// # Safety
    /// `table` holds `vocab · hidden`, `ids` holds `rows`, `out` holds `rows · hidden`.
    ///
    /// # Parameters
    /// - `table`: the embedding; `ids`: the tokens; `out`: `rows × hidden`.
    ///
    /// # Thread mapping
    /// One thread per output element (`gated_f32::elementwise_geometry`).
    ///
    /// # Tiling
    /// None.
    pub unsafe fn embedding_f32(table: In<f32>, ids: In<u32>, out: Out<f32>, rows: u32, hidden: u32, vocab: u32) {
        let i = global_thread_x();
        if i >= rows * hidden {
            return;
        }
        let id = ids.get((i / hidden) as usize);
        let v = if id < vocab { table.get((id * hidden + i % hidden) as usize) } else { 0.0 };
        out.set(i as usize, v);
    }
}

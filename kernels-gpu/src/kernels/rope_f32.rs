//! Rotate-half rotary position embedding, in place, on f32 query or key rows.

use crate::device::*;
use crate::kernel;
use crate::launch::LaunchConfig;

/// One thread per (row, head, pair), 256 per block.
pub const fn rope_geometry(rows: usize, heads: usize, head_dim: usize) -> LaunchConfig {
    LaunchConfig::cover(rows * heads * (head_dim / 2), 256)
}

/// Checks a RoPE request: `x` of `rows × heads × head_dim`, one position per
/// row, tables reaching the largest position `max_pos`.
#[cfg(not(target_arch = "nvptx64"))]
pub fn rope_check(
    rows: usize,
    heads: usize,
    head_dim: usize,
    positions: usize,
    max_pos: usize,
    x: usize,
    table: usize,
) -> Result<(), String> {
    if rows == 0 || heads == 0 || head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err("empty shape or odd head_dim".into());
    }
    crate::launch::check_len("rows", x, rows * heads * head_dim)?;
    crate::launch::check_len("positions", positions, rows)?;
    if table < (max_pos + 1) * (head_dim / 2) {
        return Err(format!("cos/sin tables of {table} values do not reach position {max_pos}"));
    }
    Ok(())
}

kernel! {
    /// `x[i] ← x[i]·cos − x[i+d/2]·sin`, `x[i+d/2] ← x[i+d/2]·cos + x[i]·sin` for
    /// each head of each row; row `r` is at position `pos[r]` (rows of one
    /// batch may belong to different sequences).
    ///
    /// # Safety
    /// `x` holds `rows · heads · head_dim` values, `pos` holds `rows`, and
    /// `cos` / `sin` hold at least `(max(pos) + 1) · head_dim / 2`; `head_dim` is even.
    ///
    /// # Parameters
    /// - `x`: queries or keys, `rows × heads × head_dim`, rotated in place.
    /// - `cos`, `sin`: the tables, `position × head_dim / 2`.
    /// - `pos`: each row's position in its sequence.
    ///
    /// # Thread mapping
    /// One thread per (row, head, pair `i < head_dim / 2`); it owns both elements of its pair.
    ///
    /// # Tiling
    /// None.
    pub unsafe fn rope_f32(x: Out<f32>, cos: In<f32>, sin: In<f32>, pos: In<u32>, rows: u32, heads: u32, head_dim: u32) {
        let half = head_dim / 2;
        let i = global_thread_x();
        if i >= rows * heads * half {
            return;
        }
        let (rh, p) = (i / half, i % half);
        let row = rh / heads;
        let base = (rh * head_dim) as usize;
        let t = (pos.get(row as usize) * half + p) as usize;
        let (c, s) = (cos.get(t), sin.get(t));
        let (a, b) = (x.get(base + p as usize), x.get(base + (p + half) as usize));
        x.set(base + p as usize, a * c - b * s);
        x.set(base + (p + half) as usize, b * c + a * s);
    }
}

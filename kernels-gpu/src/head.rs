//! # The lm_head GEMV in a reduced precision: shared body and facts
//!
//! A decode step's largest single read is the lm_head (2B-4T: 128,256 × 2,560
//! weights, 656 MB in 16 bits). `head_gemv_f16` and `head_gemv_i8` read it as
//! f16 or as int8 with one scale per row, each weight once per launch, at the
//! memory's pace: one warp per vocabulary row, 128-bit loads, f32 FMA.
//!
//! Rows are stored [`head_row_len`]`(k)` elements apart (zeros past `k`), so
//! every row starts 16-byte aligned whatever the hidden size; the CPU head
//! uses the same layout, so one upload serves every backend.

use crate::device::*;
use crate::launch::LaunchConfig;

/// Warps per block of the head GEMV (one vocabulary row each at a time).
pub const HEAD_WARPS: u32 = 8;
/// Row alignment of a stored head, in elements: 16 int8 values or 8 f16 are one 128-bit load.
pub const HEAD_ROW_ALIGN: usize = 16;

/// The stored length of a head row of `k` weights (a multiple of [`HEAD_ROW_ALIGN`]).
pub const fn head_row_len(k: usize) -> usize {
    k.div_ceil(HEAD_ROW_ALIGN) * HEAD_ROW_ALIGN
}

/// The head GEMV's launch: one warp per vocabulary row, 8 per block; no shared memory.
pub const fn head_gemv_geometry(n: usize) -> LaunchConfig {
    let grid = (n as u32).div_ceil(HEAD_WARPS);
    LaunchConfig::linear(if grid == 0 { 1 } else { grid }, 32 * HEAD_WARPS, 0)
}

/// Checks a head GEMV request: `a` holds `m × k` activations, `b` `n` rows of
/// [`head_row_len`]`(k)` weights, `c` `m × n` logits, `scales` (int8 only) `n`.
#[cfg(not(target_arch = "nvptx64"))]
pub fn head_check(
    m: usize,
    n: usize,
    k: usize,
    a: usize,
    b: usize,
    c: usize,
    scales: Option<usize>,
) -> Result<(), String> {
    if m == 0 || n == 0 || k == 0 {
        return Err("empty matrix".into());
    }
    crate::launch::check_len("activations", a, m * k)?;
    crate::launch::check_len("head weights (rows padded to a multiple of 16)", b, n * head_row_len(k))?;
    crate::launch::check_len("logits", c, m * n)?;
    match scales {
        Some(s) => crate::launch::check_len("row scales", s, n),
        None => Ok(()),
    }
}

/// A stored head weight: how many sit in a 32-bit word, and their values.
pub trait HeadWeight {
    /// Weights per 32-bit word.
    const PER_WORD: usize;
    /// Weight `j` (`j < PER_WORD`) of a word, as f32 (exact).
    fn get(word: u32, j: usize) -> f32;
}

/// f16 weights, two per word (low half first).
pub struct HeadF16;
impl HeadWeight for HeadF16 {
    const PER_WORD: usize = 2;
    #[inline(always)]
    fn get(word: u32, j: usize) -> f32 {
        f16_to_f32((word >> (16 * j)) as u16)
    }
}

/// int8 weights, four per word (lowest byte first).
pub struct HeadI8;
impl HeadWeight for HeadI8 {
    const PER_WORD: usize = 4;
    #[inline(always)]
    fn get(word: u32, j: usize) -> f32 {
        ((word >> (8 * j)) as u8 as i8) as f32
    }
}

/// The head GEMV: `c[i][j] = scale(j) · Σ_k a[i][k] · w[j][k]`; see `head_gemv_f16`.
///
/// Each logit is one warp's dot product in a fixed order (lane `l` sums its
/// chunks `l, l + 32, …` in column order, then a butterfly sum), whatever `m`:
/// a row's logits do not depend on the rows beside it.
///
/// # Safety
/// As the kernels that call it; `scales` holds `n` values when `SCALED`.
#[inline(always)]
pub unsafe fn head_gemv_body<W: HeadWeight, const SCALED: bool>(
    a: In<f32>,
    w: In<u32>,
    scales: In<f32>,
    c: Out<f32>,
    m: u32,
    n: u32,
    k: u32,
) {
    let row_words = head_row_len(k as usize) / W::PER_WORD;
    let chunks = row_words / 4;
    let per_chunk = 4 * W::PER_WORD;
    let (lane, warp) = (lane_id() as usize, warp_id());
    let k = k as usize;
    let mut j = block_idx_x() * HEAD_WARPS + warp;
    while j < n {
        let w_row = j as usize * row_words;
        for i in 0..m as usize {
            let a_row = i * k;
            let mut acc = 0.0f32;
            let mut ch = lane;
            while ch < chunks {
                // SAFETY: ch < chunks, so the 4 words are within row j; rows
                // are 16-byte multiples from a 16-byte aligned base.
                let v = unsafe { w.get4(w_row + 4 * ch) };
                let col0 = ch * per_chunk;
                if col0 + per_chunk <= k {
                    for (q, &word) in v.iter().enumerate() {
                        for e in 0..W::PER_WORD {
                            // SAFETY: col0 + per_chunk ≤ k, within row i of `a`.
                            acc = fma(unsafe { a.get(a_row + col0 + q * W::PER_WORD + e) }, W::get(word, e), acc);
                        }
                    }
                } else {
                    for (q, &word) in v.iter().enumerate() {
                        for e in 0..W::PER_WORD {
                            let col = col0 + q * W::PER_WORD + e;
                            if col < k {
                                // SAFETY: col < k.
                                acc = fma(unsafe { a.get(a_row + col) }, W::get(word, e), acc);
                            }
                        }
                    }
                }
                ch += 32;
            }
            let total = warp_sum_f32(acc);
            if lane == 0 {
                // SAFETY: j < n (and, scaled, `scales` holds n); i < m.
                let v = if SCALED { total * unsafe { scales.get(j as usize) } } else { total };
                unsafe { c.set(i * n as usize + j as usize, v) };
            }
        }
        j += grid_dim_x() * HEAD_WARPS;
    }
}

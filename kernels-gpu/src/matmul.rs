//! # Shared bodies of the quantization and ternary matmul kernels
//!
//! Each public kernel (one per file in [`crate::kernels`]) is a thin wrapper
//! around a body here, generic over the input or output element (f32 / f16),
//! so the f32 and f16 variants cannot drift apart.

use crate::device::*;
use crate::format::device_layout::{codes, codes_to_trits, dequantize};
use crate::launch::LaunchConfig;

/// An activation element the quantizer reads.
pub trait Element: Copy {
    /// Its value as f32 (exact for f16).
    fn to_f32(self) -> f32;
}
impl Element for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}
/// IEEE half, as its bits.
impl Element for u16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16_to_f32(self)
    }
}

/// An output element the epilogue writes.
pub trait Output: Copy {
    /// From the f32 result (round to nearest even for f16).
    fn from_f32(v: f32) -> Self;
}
impl Output for f32 {
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}
impl Output for u16 {
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f32_to_f16(v)
    }
}

/// Smallest absmax the quantizer divides by (BitNet's clamp), so an all-zero row gets a finite scale.
pub const ABSMAX_FLOOR: f32 = 1e-5;

/// The quantizer's scale for a row of absolute maximum `absmax`: `127 / max(absmax, 1e-5)`.
#[inline(always)]
pub fn activation_scale(absmax: f32) -> f32 {
    127.0 / absmax.max(ABSMAX_FLOOR)
}

/// One activation, quantized: `clamp(round_ties_even(x · scale), −128, 127)`.
#[inline(always)]
pub fn quantize_value(x: f32, scale: f32) -> i8 {
    round_ties_even(x * scale).clamp(-128.0, 127.0) as i8
}

/// Threads per block of the quantizer, and the shared words it needs.
pub const QUANTIZE_THREADS: u32 = 256;
/// Dynamic shared memory of the quantizer: 32 scratch words.
pub const QUANTIZE_SHARED_BYTES: u32 = 32 * 4;

/// The quantizer's launch: one 256-thread block per row, at most `max_blocks` striding over rows.
pub const fn quantize_geometry(rows: usize, max_blocks: u32) -> LaunchConfig {
    LaunchConfig::per_item(rows as u64, max_blocks, QUANTIZE_THREADS, QUANTIZE_SHARED_BYTES)
}

/// Checks a quantizer request: `x_len` activations for `rows × cols`, into a
/// block whose rows are `k_pad` long.
#[cfg(not(target_arch = "nvptx64"))]
pub fn quantize_check(rows: usize, cols: usize, x_len: usize, k_pad: usize) -> Result<(), String> {
    if rows == 0 || cols == 0 {
        return Err("empty matrix".into());
    }
    if x_len != rows * cols {
        return Err(format!("{x_len} activations given"));
    }
    if k_pad < cols || !k_pad.is_multiple_of(64) {
        return Err(format!("output rows of {k_pad} bytes cannot hold K = {cols} (a multiple of 64 is needed)"));
    }
    Ok(())
}

/// Per-row absmax int8 quantization; see `quantize_f32`.
///
/// # Safety
/// As the kernels that call it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn quantize_body<E: Element>(
    x: In<E>,
    q: Out<i8>,
    scales: Out<f32>,
    sums: Out<i32>,
    rows: u32,
    cols: u32,
    k_pad: u32,
) {
    let (t, nt) = (thread_idx_x(), block_dim_x());
    let mut row = block_idx_x();
    while row < rows {
        let base = row as usize * cols as usize;
        let mut m = 0.0f32;
        let mut k = t;
        while k < cols {
            // SAFETY: k < cols within row < rows.
            m = m.max(abs_f32(unsafe { x.get(base + k as usize) }.to_f32()));
            k += nt;
        }
        // SAFETY: 32 scratch words at 0 (QUANTIZE_SHARED_BYTES).
        let absmax = unsafe { block_max_f32(m, 0) };
        let scale = activation_scale(absmax);
        let mut sum = 0i32;
        let mut k = t;
        let out = row as usize * k_pad as usize;
        while k < k_pad {
            // SAFETY: k < k_pad; padding columns get 0.
            unsafe {
                let v = if k < cols { quantize_value(x.get(base + k as usize).to_f32(), scale) } else { 0 };
                sum += v as i32;
                q.set(out + k as usize, v);
            }
            k += nt;
        }
        // SAFETY: as above.
        let total = unsafe { block_sum_i32(sum, 0) };
        if t == 0 {
            // SAFETY: row < rows.
            unsafe {
                scales.set(row as usize, scale);
                sums.set(row as usize, total);
            }
        }
        row += grid_dim_x();
    }
}

/// Warps per GEMV block and rows per warp pass.
pub const GEMV_WARPS: u32 = 8;
/// 128-bit weight loads each lane issues before using them (the GEMV's
/// `unrolled!` lists name each one).
pub const GEMV_LOADS_IN_FLIGHT: usize = 4;
// The GEMV's `unrolled!` lists spell out 0..GEMV_LOADS_IN_FLIGHT; a larger
// constant would advance past chunks no list names.
const _: () = assert!(GEMV_LOADS_IN_FLIGHT == 4, "update the GEMV's unrolled! lists");
/// Largest M the GEMV handles (decode: a few tokens).
pub const GEMV_MAX_M: usize = 8;

/// Dynamic shared memory of the GEMV: the whole int8 activation block.
pub const fn gemv_shared_bytes(m: usize, k_pad: usize) -> u32 {
    (m * k_pad) as u32
}

/// The GEMV's launch: 8 warps per block, one output row per warp, the
/// activation block in shared memory (more than 48 KB needs the device's opt-in).
pub const fn gemv_geometry(m: usize, n: usize, k_pad: usize) -> LaunchConfig {
    let grid = (n as u32).div_ceil(GEMV_WARPS);
    LaunchConfig::linear(if grid == 0 { 1 } else { grid }, 32 * GEMV_WARPS, gemv_shared_bytes(m, k_pad))
}

/// Checks a ternary matmul request (the GEMV with `max_m` = [`GEMV_MAX_M`],
/// the GEMM with `usize::MAX`): activations `m × x_cols` padded to `x_k_pad`,
/// weights `n × w_cols` padded to `w_k_pad`.
#[cfg(not(target_arch = "nvptx64"))]
pub fn ternary_check(
    m: usize,
    n: usize,
    x_cols: usize,
    w_cols: usize,
    x_k_pad: usize,
    w_k_pad: usize,
    max_m: usize,
) -> Result<(), String> {
    if x_cols != w_cols {
        return Err(format!("activations have K = {x_cols}, weights K = {w_cols}"));
    }
    if m == 0 || n == 0 || x_cols == 0 {
        return Err("empty matrix".into());
    }
    if m > max_m {
        return Err(format!("M = {m} exceeds this kernel's {max_m} (use the GEMM)"));
    }
    if x_k_pad != w_k_pad || !x_k_pad.is_multiple_of(64) || x_k_pad < x_cols {
        return Err(format!("activation rows padded to {x_k_pad}, weight rows to {w_k_pad}"));
    }
    Ok(())
}

/// Stages the `m × k_pad` int8 activations in shared memory, transposed
/// within each 64-byte chunk so that lanes reading the same offset of
/// consecutive chunks hit consecutive banks (word r of chunk c goes to
/// `r · chunks + c`), then waits for the block.
///
/// # Safety
/// `x` holds `m · k_pad / 4` words; the block has `m · k_pad` bytes of
/// dynamic shared memory.
#[inline(always)]
unsafe fn stage_activations(x: In<u32>, m: u32, k_pad: u32) {
    let words = k_pad / 4; // activation words per row
    let chunks = k_pad / 64; // 128-bit weight loads per row
    let mut i = thread_idx_x();
    while i < m * words {
        let (row, wi) = (i / words, i % words);
        let (c, r) = (wi / 16, wi % 16);
        // SAFETY: i < m·words; the destination is below m·words (the shared size).
        unsafe { shared_store_u32(row * words + r * chunks + c, x.get(i as usize)) };
        i += block_dim_x();
    }
    sync_threads();
}

/// Ternary GEMV body; see `ternary_gemv_f32`.
///
/// # Safety
/// As the kernels that call it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemv_body<O: Output>(
    x: In<u32>,
    x_scales: In<f32>,
    x_sums: In<i32>,
    w: In<u32>,
    w_scale: f32,
    y: Out<O>,
    m: u32,
    n: u32,
    k_pad: u32,
) {
    // SAFETY: forwarded.
    unsafe { stage_activations(x, m, k_pad) };
    // The accumulator must be a register: with a run-time M an accumulator
    // array is indexed dynamically and lives in local memory (a 96-byte stack
    // frame, every dp4a a local load and store, seen on the first GPU run),
    // and a loop specialized for 8 rows needs ~170 registers (one block per
    // SM). So each activation row is one pass over the block's weight rows;
    // passes after the first find those rows in L1.
    for m0 in 0..m {
        // SAFETY: forwarded; m0 < m.
        unsafe { gemv_pass(m0, x_scales, x_sums, w, w_scale, y, n, k_pad) };
    }
}

/// One pass of the GEMV: activation row `m0` (staged in shared memory by
/// [`gemv_body`]) against every weight row this warp owns.
///
/// # Safety
/// As the kernels that call [`gemv_body`], with `m0 < m`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn gemv_pass<O: Output>(
    m0: u32,
    x_scales: In<f32>,
    x_sums: In<i32>,
    w: In<u32>,
    w_scale: f32,
    y: Out<O>,
    n: u32,
    k_pad: u32,
) {
    let mut row = block_idx_x() * GEMV_WARPS + warp_id();
    while row < n {
        // SAFETY: row < n; the caller's contract covers the rest.
        let total = unsafe { gemv_row_dot(m0, w, row, k_pad) };
        if lane_id() == 0 {
            // SAFETY: m0 < m, row < n.
            unsafe { gemv_store(m0, x_scales, x_sums, w_scale, y, row, n, total) };
        }
        row += grid_dim_x() * GEMV_WARPS;
    }
}

/// The integer dot product of weight row `row` (its codes, `trit + 1`) with
/// activation row `m0` in shared memory, summed over the warp (every lane
/// gets it).
///
/// # Safety
/// `w` holds row `row` (`k_pad / 16` words from `row · k_pad / 16`); the
/// shared activation block holds row `m0`, laid out by [`gemv_body`].
#[inline(always)]
unsafe fn gemv_row_dot(m0: u32, w: In<u32>, row: u32, k_pad: u32) -> i32 {
    let words = k_pad / 4; // activation words per row
    let chunks = k_pad / 64; // 128-bit weight loads per row
    let x_row = m0 * words;
    let mut acc = 0i32;
    let wrow = row as usize * (k_pad / 16) as usize;
    // GEMV_LOADS_IN_FLIGHT 128-bit loads are issued before any is used, so
    // a warp keeps that many requests outstanding instead of one.
    let mut c0 = lane_id();
    while c0 < chunks {
        let mut wv = [[0u32; 4]; GEMV_LOADS_IN_FLIGHT];
        crate::unrolled!(u in [0, 1, 2, 3] => {
            let c = c0 + 32 * u as u32;
            if c < chunks {
                // SAFETY: chunk c of row `row` is inside the weights.
                wv[u] = unsafe { w.get4(wrow + 4 * c as usize) };
            }
        });
        crate::unrolled!(u in [0, 1, 2, 3] => {
            let c = c0 + 32 * u as u32;
            if c < chunks {
                for (q, &word) in wv[u].iter().enumerate() {
                    for j in 0..4u32 {
                        let r = 4 * q as u32 + j;
                        // SAFETY: inside the shared activation block.
                        let act = unsafe { shared_load_u32(x_row + r * chunks + c) };
                        acc = dp4a(codes(word, j), act, acc);
                    }
                }
            }
        });
        c0 += 32 * GEMV_LOADS_IN_FLIGHT as u32;
    }
    warp_sum_i32(acc)
}

/// Writes output `(m0, row)` of an `m × n` result from its integer dot product.
///
/// # Safety
/// `m0 < m`, `row < n`; `y` holds `m · n`, `x_scales` / `x_sums` hold `m`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn gemv_store<O: Output>(
    m0: u32,
    x_scales: In<f32>,
    x_sums: In<i32>,
    w_scale: f32,
    y: Out<O>,
    row: u32,
    n: u32,
    total: i32,
) {
    // Codes are trit + 1: subtract the activation sum once.
    // SAFETY: the caller's contract.
    unsafe {
        let v = dequantize(total - x_sums.get(m0 as usize), w_scale, x_scales.get(m0 as usize));
        y.set(m0 as usize * n as usize + row as usize, O::from_f32(v));
    }
}

/// Up to three weight matrices of the same K that one GEMV launch computes
/// against the same activations (q / k / v, gate / up): their words, scales,
/// outputs and row counts (`n = 0` for an unused third).
#[derive(Clone, Copy)]
pub struct GemvGroup<O: Output> {
    /// Each matrix's device-layout words.
    pub w: [In<u32>; 3],
    /// Each matrix's absmean scale.
    pub w_scale: [f32; 3],
    /// Each matrix's `m × n` output.
    pub y: [Out<O>; 3],
    /// Each matrix's rows.
    pub n: [u32; 3],
}

/// Body of the grouped GEMV (`ternary_gemv_many_f32` / `_f16`): the rows of
/// the group's matrices are numbered one after another and dealt to warps
/// as [`gemv_body`] deals one matrix's, so the launch's grid covers them all.
///
/// # Safety
/// As [`gemv_body`], for each matrix of the group.
#[inline(always)]
pub unsafe fn gemv_many_body<O: Output>(
    x: In<u32>,
    x_scales: In<f32>,
    x_sums: In<i32>,
    g: GemvGroup<O>,
    m: u32,
    k_pad: u32,
) {
    // SAFETY: forwarded.
    unsafe { stage_activations(x, m, k_pad) };
    let [n0, n1, n2] = g.n;
    let total_rows = n0 + n1 + n2;
    for m0 in 0..m {
        let mut row = block_idx_x() * GEMV_WARPS + warp_id();
        while row < total_rows {
            // Chosen by comparisons, not by indexing the arrays with a
            // run-time value (which would put them in local memory).
            let (w, s, y, r, n) = if row < n0 {
                (g.w[0], g.w_scale[0], g.y[0], row, n0)
            } else if row < n0 + n1 {
                (g.w[1], g.w_scale[1], g.y[1], row - n0, n1)
            } else {
                (g.w[2], g.w_scale[2], g.y[2], row - n0 - n1, n2)
            };
            // SAFETY: r < n of the matrix chosen; the caller's contract.
            let total = unsafe { gemv_row_dot(m0, w, r, k_pad) };
            if lane_id() == 0 {
                // SAFETY: m0 < m, r < n.
                unsafe { gemv_store(m0, x_scales, x_sums, s, y, r, n, total) };
            }
            row += grid_dim_x() * GEMV_WARPS;
        }
    }
}

/// The grouped GEMV's launch: [`gemv_geometry`] over the rows of all its matrices.
pub const fn gemv_many_geometry(m: usize, n: [usize; 3], k_pad: usize) -> LaunchConfig {
    gemv_geometry(m, n[0] + n[1] + n[2], k_pad)
}

/// GEMM tile sizes: a block computes `GEMM_BM × GEMM_BN` outputs, stepping
/// `GEMM_BK` along K.
pub const GEMM_BM: u32 = 128;
/// See [`GEMM_BM`].
pub const GEMM_BN: u32 = 128;
/// See [`GEMM_BM`].
pub const GEMM_BK: u32 = 64;
/// Threads per GEMM block: 8 warps, 2 along M × 4 along N, each 64 × 32.
pub const GEMM_THREADS: u32 = 256;
/// Shared row stride in words: 64 bytes of K plus 16 of padding, which puts
/// the 8 rows × 4 words of an mma fragment load on 32 distinct banks.
pub const GEMM_ROW_WORDS: u32 = 20;
const GEMM_TILE_WORDS: u32 = GEMM_BM * GEMM_ROW_WORDS;
/// Dynamic shared memory of the GEMM: A and B tiles, double-buffered.
pub const GEMM_SHARED_BYTES: u32 = 4 * GEMM_TILE_WORDS * 4;

/// The GEMM's launch: one 256-thread block per 128 × 128 output tile.
pub const fn gemm_geometry(m: usize, n: usize) -> LaunchConfig {
    LaunchConfig {
        grid: [(n as u32).div_ceil(GEMM_BN), (m as u32).div_ceil(GEMM_BM), 1],
        block: [GEMM_THREADS, 1, 1],
        shared_bytes: GEMM_SHARED_BYTES,
    }
}

/// Word index of (row, word) of tile `which` (0 = A, 1 = B) in buffer `buf`.
#[inline(always)]
fn gemm_word(buf: u32, which: u32, row: u32, word: u32) -> u32 {
    (buf * 2 + which) * GEMM_TILE_WORDS + row * GEMM_ROW_WORDS + word
}

/// One K-step's worth of global data held in registers between the loads and the shared stores.
#[derive(Clone, Copy)]
struct GemmStage {
    a: [[u32; 4]; 2],
    w: [u32; 2],
}

/// Loads K-step `kt`: two 16-byte pieces of A per thread (rows t/4 and
/// t/4 + 64), and two packed weight words (32 weights) of row t/2.
///
/// # Safety
/// As the GEMM kernels.
#[inline(always)]
unsafe fn gemm_load(x: In<u32>, w: In<u32>, m: u32, n: u32, k_pad: u32, bm: u32, bn: u32, kt: u32) -> GemmStage {
    let t = thread_idx_x();
    let mut st = GemmStage { a: [[0; 4]; 2], w: [0x5555_5555; 2] };
    for (h, a) in st.a.iter_mut().enumerate() {
        let row = bm + t / 4 + 64 * h as u32;
        if row < m {
            let word = row * (k_pad / 4) + kt * (GEMM_BK / 4) + 4 * (t % 4);
            // SAFETY: row < m and the word is inside the padded row.
            *a = unsafe { x.get4(word as usize) };
        }
    }
    let wrow = bn + t / 2;
    if wrow < n {
        let word = (wrow * (k_pad / 16) + kt * (GEMM_BK / 16) + 2 * (t % 2)) as usize;
        // SAFETY: wrow < n and both words are inside the padded row.
        st.w = unsafe { [w.get(word), w.get(word + 1)] };
    }
    st
}

/// Stores a loaded K-step into shared buffer `buf`, unpacking the weights to int8 trits.
///
/// # Safety
/// As the GEMM kernels.
#[inline(always)]
unsafe fn gemm_store(st: &GemmStage, buf: u32) {
    let t = thread_idx_x();
    for (h, a) in st.a.iter().enumerate() {
        // SAFETY: inside tile A of `buf`; 4t%16 keeps 16-byte alignment (row stride 80 bytes).
        unsafe { shared_store_u32x4(gemm_word(buf, 0, t / 4 + 64 * h as u32, 4 * (t % 4)), *a) };
    }
    for (q, &word) in st.w.iter().enumerate() {
        // Word q of this thread holds weights 16q'..16q'+16 of the step, q' = 2(t%2) + q;
        // extraction j yields weights 16q' + 4j .. + 4, i.e. word 4q' + j of the int8 row.
        let trits = [0, 1, 2, 3].map(|j| codes_to_trits(codes(word, j)));
        let q2 = 2 * (t % 2) + q as u32;
        // SAFETY: inside tile B of `buf`.
        unsafe { shared_store_u32x4(gemm_word(buf, 1, t / 2, 4 * q2), trits) };
    }
}

/// Ternary GEMM body; see `ternary_gemm_f32`.
///
/// # Safety
/// As the kernels that call it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_body<O: Output>(
    x: In<u32>,
    x_scales: In<f32>,
    w: In<u32>,
    w_scale: f32,
    y: Out<O>,
    m: u32,
    n: u32,
    k_pad: u32,
) {
    let (bn, bm) = (block_idx_x() * GEMM_BN, block_idx_y() * GEMM_BM);
    let (lane, warp) = (lane_id(), warp_id());
    let (wm, wn) = (warp / 4, warp % 4);
    let (g, tq) = (lane / 4, lane % 4);
    let steps = k_pad / GEMM_BK;
    let mut acc = [[[0i32; 4]; 4]; 4];
    // SAFETY: forwarded; step 0 exists because k_pad ≥ 64.
    unsafe {
        let first = gemm_load(x, w, m, n, k_pad, bm, bn, 0);
        gemm_store(&first, 0);
    }
    sync_threads();
    for kt in 0..steps {
        let buf = kt % 2;
        // SAFETY: forwarded.
        let next = if kt + 1 < steps { Some(unsafe { gemm_load(x, w, m, n, k_pad, bm, bn, kt + 1) }) } else { None };
        for ks in 0..2u32 {
            let mut a = [[0u32; 4]; 4];
            let mut b = [[0u32; 2]; 4];
            for (mt, frag) in a.iter_mut().enumerate() {
                let row = wm * 64 + mt as u32 * 16 + g;
                // SAFETY: inside tile A of `buf`.
                unsafe {
                    *frag = [
                        shared_load_u32(gemm_word(buf, 0, row, 8 * ks + tq)),
                        shared_load_u32(gemm_word(buf, 0, row + 8, 8 * ks + tq)),
                        shared_load_u32(gemm_word(buf, 0, row, 8 * ks + 4 + tq)),
                        shared_load_u32(gemm_word(buf, 0, row + 8, 8 * ks + 4 + tq)),
                    ];
                }
            }
            for (nt, frag) in b.iter_mut().enumerate() {
                let row = wn * 32 + nt as u32 * 8 + g;
                // SAFETY: inside tile B of `buf`.
                unsafe {
                    *frag = [
                        shared_load_u32(gemm_word(buf, 1, row, 8 * ks + tq)),
                        shared_load_u32(gemm_word(buf, 1, row, 8 * ks + 4 + tq)),
                    ];
                }
            }
            for mt in 0..4 {
                for nt in 0..4 {
                    acc[mt][nt] = mma_m16n8k32_s8(a[mt], b[nt], acc[mt][nt]);
                }
            }
        }
        if let Some(next) = next {
            // SAFETY: the other buffer; its last readers finished before the previous barrier.
            unsafe { gemm_store(&next, buf ^ 1) };
        }
        sync_threads();
    }
    // Unrolled by hand: as a loop nest the accumulators went to local memory.
    crate::unrolled!(mt in [0usize, 1, 2, 3] => {
        crate::unrolled!(nt in [0usize, 1, 2, 3] => {
            for (i, &v) in acc[mt][nt].iter().enumerate() {
                let row = bm + wm * 64 + mt as u32 * 16 + g + 8 * (i as u32 / 2);
                let col = bn + wn * 32 + nt as u32 * 8 + 2 * tq + i as u32 % 2;
                if row < m && col < n {
                    // SAFETY: row < m, col < n.
                    unsafe {
                        let v = dequantize(v, w_scale, x_scales.get(row as usize));
                        y.set(row as usize * n as usize + col as usize, O::from_f32(v));
                    }
                }
            }
        });
    });
}

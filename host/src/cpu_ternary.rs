//! # The CPU's ternary matmul: int8 activations × device-layout trits
//!
//! The weights stay in the device layout (16 interleaved 2-bit codes per
//! word), so the CPU reads 2 bits per weight like the GPU does. Codes are
//! `trit + 1` (0, 1, 2), unsigned, which is what the unsigned × signed byte
//! dot products of x86 want; the activation row sum is subtracted at the end.
//!
//! - **AVX-512 VNNI** (chosen at run time), decode (M ≤ 2): a prefetching GEMV
//!   over the AVX2 path's permuted activations, a whole 256-weight block per
//!   512-bit load and `vpdpbusd` into 32-bit lanes (the `vnni_gemv` submodule).
//! - **AVX-512 VNNI**, prefill (M > 2): a register-blocked
//!   GEMM (the `vnni` submodule). A task's 48 weight rows are decoded once
//!   into a panel of codes in the layout `vpdpbusd` reads (16 weight rows × 4
//!   consecutive K per 512-bit vector); each step broadcasts four activation
//!   bytes of one row against it, 8 rows × 48 outputs in 24 accumulators, and
//!   the sums are written in place into the task's output columns.
//! - **AVX2** (chosen at run time where VNNI is absent): the activations of
//!   each full 256-weight block are permuted once per call
//!   (`perm[64j + 4q + b] = a[16q + 4j + b]`), so that extraction `j` of a
//!   256-bit load of words, `(w >> 2j) & 0x03` (byte `4q + b`: the code of
//!   weight `16q + 4j + b`), meets one contiguous activation vector in
//!   `vpmaddubsw`; a prefetching GEMV for decode and a decoded-panel GEMM for
//!   prefill (the `avx2` submodule).
//! - **AMX-INT8** (chosen at run time for prefill, M > 2, where the CPU has
//!   it and the kernel grants the tile state): 16 × 16 tiles of i32 sums from
//!   tiles of codes and activations (the `amx` submodule); decode takes the
//!   AVX-512 VNNI GEMV.
//! - **Portable**: the same arithmetic, four weights at a time.
//!
//! `TRINITY_CPU_PATH=amx-int8|avx512-vnni|avx2|portable` picks a path other
//! than the best one this CPU has (to compare them; an unknown or
//! unavailable name is warned about and ignored).
//!
//! Rows of the output are split across rayon's pool; integer results are
//! exact, so this path equals the scalar reference bit for bit.

#[cfg(target_arch = "x86_64")]
use std::marker::PhantomData;

use rayon::prelude::*;

use crate::buffer::OutputElem;
use crate::matmul::{Precision, QuantizedActivations, QuantizedRef, dequantize, dequantize_by, dequantize_factor};
use crate::ternary::{DeviceTernary, TernaryRef};
use kernels_gpu::format::device_layout::codes;

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod vnni;
#[cfg(target_arch = "x86_64")]
mod vnni_gemv;

/// An `m × n` output whose columns parallel tasks write, each task its own
/// columns: the layout the caller wants, with no transposed copy.
#[cfg(target_arch = "x86_64")]
struct OutputColumns<'a, O> {
    ptr: *mut O,
    rows: usize,
    cols: usize,
    _output: PhantomData<&'a mut [O]>,
}

// SAFETY: tasks on other threads write through the pointer only at cells no
// other task writes (the contract of `segment`), while the output stays borrowed.
#[cfg(target_arch = "x86_64")]
unsafe impl<O: Send> Send for OutputColumns<'_, O> {}
// SAFETY: as above; `segment` is the only access.
#[cfg(target_arch = "x86_64")]
unsafe impl<O: Send> Sync for OutputColumns<'_, O> {}

#[cfg(target_arch = "x86_64")]
impl<'a, O> OutputColumns<'a, O> {
    fn new(y: &'a mut [O], rows: usize, cols: usize) -> OutputColumns<'a, O> {
        assert_eq!(y.len(), rows * cols, "output length checked by the op");
        OutputColumns { ptr: y.as_mut_ptr(), rows, cols, _output: PhantomData }
    }

    /// `y[r][c ..][..len]`, to write.
    ///
    /// # Safety
    /// No other thread touches columns `c .. c + len` while this output lives,
    /// and this thread holds no other segment of row `r` overlapping them.
    #[allow(clippy::mut_from_ref)]
    unsafe fn segment(&self, r: usize, c: usize, len: usize) -> &mut [O] {
        assert!(
            r < self.rows && c + len <= self.cols,
            "row {r}, columns {c}..{} outside {} × {}",
            c + len,
            self.rows,
            self.cols
        );
        // SAFETY: in bounds (checked); the caller owns these cells.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r * self.cols + c), len) }
    }

    /// `y[r][c ..][..len]` = the first `len` lanes of `v`, converted to the output element.
    ///
    /// # Safety
    /// As [`segment`](Self::segment); `len ≤ 16`; the CPU has AVX-512 F.
    #[inline(always)]
    unsafe fn store_lanes(&self, r: usize, c: usize, len: usize, v: std::arch::x86_64::__m512)
    where
        O: OutputElem,
    {
        // SAFETY: the caller's contract.
        unsafe { O::store_lanes(self.segment(r, c, len), v) }
    }

    /// `y[r][c ..][..len] = vals[..len]`, converted to the output element.
    ///
    /// # Safety
    /// As [`segment`](Self::segment); `len ≤ 16`.
    unsafe fn store16(&self, r: usize, c: usize, len: usize, vals: &[f32; 16])
    where
        O: OutputElem,
    {
        // SAFETY: the caller's contract.
        let seg = unsafe { self.segment(r, c, len) };
        match <&mut [O; 16]>::try_from(&mut *seg) {
            // A whole run: a fixed-size store the compiler inlines (a loop over
            // the slice became a `memmove` call per segment).
            Ok(whole) => *whole = vals.map(O::from_f32),
            Err(_) => {
                for (o, &v) in seg.iter_mut().zip(vals) {
                    *o = O::from_f32(v);
                }
            }
        }
    }
}

/// Weights per permuted block of the AVX2 and AMX paths (one 512-bit load of words).
const BLOCK: usize = 256;
/// Weight rows of the portable path's block.
const NR: usize = 2;
/// Activation rows of the portable path's block.
const MR: usize = 4;
/// Activation rows per cache block: the block (`MB × K` bytes, 128 KiB at
/// K = 4096) stays in L2 while a task's weight rows pass over it.
const MB: usize = 32;
/// Weight rows per parallel task (portable and AVX2 prefill paths).
const ROWS_PER_TASK: usize = 24;
/// Weight rows per parallel task of the AVX2 decode path: longer runs of
/// contiguous weights per thread keep its prefetches ahead of the reads.
const GEMV_ROWS_PER_TASK: usize = 64;

/// Which path runs on this CPU.
pub fn simd_level() -> &'static str {
    let level = simd();
    available_levels().into_iter().find(|&(_, l)| l == level).map_or("portable", |(name, _)| name)
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The SIMD path for this CPU: 3 = AMX-INT8 (prefill; decode as 2), 2 =
/// AVX-512 VNNI, 1 = AVX2, 0 = portable; the best one unless `TRINITY_CPU_PATH` names another.
fn simd() -> u8 {
    chosen_level().0
}

/// The level `TRINITY_CPU_PATH` chose, if it names a path this CPU has: the
/// float ops ([`crate::cpu::float_path`]) go no further than it, so a chosen
/// path runs the whole backend as a CPU with only that much would.
pub(crate) fn forced_level() -> Option<u8> {
    let (level, forced) = chosen_level();
    forced.then_some(level)
}

/// (level, whether `TRINITY_CPU_PATH` chose it), decided once.
fn chosen_level() -> (u8, bool) {
    static LEVEL: std::sync::OnceLock<(u8, bool)> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let levels = available_levels();
        let best = levels[0];
        let Some(name) = std::env::var_os("TRINITY_CPU_PATH") else { return (best.1, false) };
        match levels.iter().find(|&&(n, _)| name == n) {
            Some(&(_, level)) => (level, true),
            None => {
                let names: Vec<&str> = levels.iter().map(|&(n, _)| n).collect();
                eprintln!(
                    "warning: TRINITY_CPU_PATH={} is not a path this CPU has ({}); using {}",
                    name.to_string_lossy(),
                    names.join(", "),
                    best.0
                );
                (best.1, false)
            }
        }
    })
}

/// Multiply-adds per round of [`amx_peak_loop`].
#[cfg(target_arch = "x86_64")]
pub(crate) const AMX_PEAK_MACS: u64 = amx::PEAK_MACS;

/// The AMX path's `tdpbusd` peak loop, for [`crate::ceilings`].
///
/// # Safety
/// The CPU's path is AMX-INT8 ([`simd_level`]).
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn amx_peak_loop(iters: u64, seed: i8) -> i64 {
    // SAFETY: the AMX level is chosen only where `amx::available()`.
    unsafe { amx::peak_loop(iters, seed) }
}

fn has_amx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_vnni() && amx::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The activations with each full 256-weight block permuted for the AVX2 and AMX paths.
/// Rows are padded with zeros to whole blocks (the last, partial block of
/// weights is read with a masked load, and meets zeros here past K).
/// On the calling thread when `small`.
fn permute_blocks(x: &QuantizedRef<'_>, small: bool) -> (Vec<i8>, usize) {
    let stride = x.k_pad.next_multiple_of(BLOCK);
    let mut out = vec![0i8; x.rows * stride];
    let permute_row = |(row_out, row_in): (&mut [i8], &[i8])| {
        let mut padded = [0i8; BLOCK];
        for blk in 0..stride / BLOCK {
            let take = (x.k_pad - blk * BLOCK).min(BLOCK);
            padded[..take].copy_from_slice(&row_in[blk * BLOCK..][..take]);
            padded[take..].fill(0);
            let (o, i) = (&mut row_out[blk * BLOCK..][..BLOCK], &padded);
            for j in 0..4 {
                for q in 0..16 {
                    o[64 * j + 4 * q..][..4].copy_from_slice(&i[16 * q + 4 * j..][..4]);
                }
            }
        }
    };
    match small {
        true => out.chunks_mut(stride).zip(x.values().chunks(x.k_pad)).for_each(permute_row),
        false => out.par_chunks_mut(stride).zip(x.values().par_chunks(x.k_pad)).for_each(permute_row),
    }
    (out, stride)
}

/// `Y = dequantize(X · Wᵀ)` for any M into `y` (`M × N`); see the module docs.
pub fn ternary_matmul_into<O: OutputElem>(x: QuantizedRef<'_>, w: TernaryRef<'_>, y: &mut [O]) {
    ternary_matmul_at(x, w, y, simd())
}

/// The SIMD paths this CPU can run, best first: (name, level) for [`ternary_matmul_f32_at`].
pub fn available_levels() -> Vec<(&'static str, u8)> {
    let mut v = Vec::new();
    if has_amx() {
        v.push(("amx-int8", 3));
    }
    if has_vnni() {
        v.push(("avx512-vnni", 2));
    }
    if has_avx2() {
        v.push(("avx2", 1));
    }
    v.push(("portable", 0));
    v
}

/// The f32 matmul on a chosen path (tests run every path the CPU has, not only the best).
pub fn ternary_matmul_f32_at(x: &QuantizedActivations, w: &DeviceTernary, level: u8) -> Vec<f32> {
    assert!(available_levels().iter().any(|&(_, l)| l == level), "SIMD level {level} is not available on this CPU");
    let mut y = vec![0f32; x.rows * w.rows()];
    ternary_matmul_at(x.view(), w.view(), &mut y, level);
    y
}

fn ternary_matmul_at<O: OutputElem>(x: QuantizedRef<'_>, w: TernaryRef<'_>, y: &mut [O], simd: u8) {
    ternary_matmul_many_at(x, &[w], &mut [y], simd)
}

/// Several matmuls over the same activations (q, k, v; gate, up): `ys[i] =
/// dequantize(X · ws[i]ᵀ)`. The activations are prepared once and the rows
/// of every matrix share one parallel pass (one hand-off to the thread pool
/// instead of one per matrix, which at decode costs as much as the work).
pub fn ternary_matmul_many_into<O: OutputElem>(x: QuantizedRef<'_>, ws: &[TernaryRef<'_>], ys: &mut [&mut [O]]) {
    ternary_matmul_many_at(x, ws, ys, simd())
}

fn ternary_matmul_many_at<O: OutputElem>(x: QuantizedRef<'_>, ws: &[TernaryRef<'_>], ys: &mut [&mut [O]], simd: u8) {
    let m = x.rows;
    assert_eq!(ws.len(), ys.len(), "one output per matrix");
    for (w, y) in ws.iter().zip(ys.iter()) {
        assert_eq!(y.len(), m * w.rows(), "output length checked by the op");
    }
    let x = &x;
    // Decode-sized work is done on the calling thread except the matmul
    // itself: every rayon call from outside the pool is a hand-off and a wake-up.
    let small = m <= 2;
    #[cfg(target_arch = "x86_64")]
    if simd >= 1 && !small {
        // The SIMD GEMMs write each task's columns of the outputs in place.
        let outs: Vec<OutputColumns<'_, O>> =
            ys.iter_mut().zip(ws).map(|(y, w)| OutputColumns::new(y, m, w.rows())).collect();
        if simd == 2 {
            // The VNNI GEMM reads the activations as they are.
            let tasks = column_tasks(ws, vnni::ROWS_PER_TASK);
            // Every task reads all the activation rows it is given: in chunks, so
            // those rows stay in the caches while all the tasks pass over them.
            for rows in (0..m).step_by(vnni::ACT_ROWS_PER_PASS).map(|r| r..(r + vnni::ACT_ROWS_PER_PASS).min(m)) {
                tasks.par_iter().for_each_init(Vec::new, |panel, &(i, first_row)| {
                    // SAFETY: level 2 is chosen only where `has_vnni`; each task writes only
                    // its own columns `first_row .. first_row + ROWS_PER_TASK` of `outs[i]`.
                    unsafe { vnni::gemm_task(x, &ws[i], first_row, rows.clone(), &outs[i], panel) };
                });
            }
            return;
        }
        // AVX2 and AMX read them permuted.
        let (act, stride) = permute_blocks(x, false);
        if simd == 1 {
            column_tasks(ws, ROWS_PER_TASK).into_par_iter().for_each_init(Vec::new, |panel, (i, first_row)| {
                // SAFETY: level 1 is chosen only where `has_avx2`; `act` holds the
                // permuted rows, whole blocks covering every weight row; each task
                // writes only its own columns `first_row .. first_row + ROWS_PER_TASK` of `outs[i]`.
                unsafe { avx2::gemm_task(x, &ws[i], (&act, stride), first_row, &outs[i], panel) };
            });
        } else {
            let tiles = amx::act_panel(&act, m, stride);
            column_tasks(ws, amx::ROWS_PER_TASK).into_par_iter().for_each_init(Vec::new, |panel, (i, first_row)| {
                // SAFETY: level 3 is chosen only where `amx::available()`; `tiles` is
                // the tile panel of this call's permuted activations, whose rows hold
                // whole blocks covering every weight row; each task writes only its
                // own columns `first_row .. first_row + ROWS_PER_TASK` of `outs[i]`.
                unsafe { amx::gemm_task(x, &ws[i], (&tiles, stride), first_row, &outs[i], panel) };
            });
        }
        return;
    }
    // Decode's GEMVs read the activations permuted; the portable path reads them as they are.
    let permuted;
    let (act, stride): (&[i8], usize) = if simd > 0 {
        permuted = permute_blocks(x, small);
        (&permuted.0, permuted.1)
    } else {
        (x.values(), x.k_pad)
    };
    // Decode takes a prefetching GEMV: AVX-512 VNNI on levels 2 and 3, AVX2 on level 1.
    let gemv = simd >= 1 && small && has_avx2();
    #[cfg(target_arch = "x86_64")]
    if gemv && m == 1 {
        // One activation row: the transposed output is the output itself, so
        // the tasks write it in place (no scratch output and no copy per call).
        let tasks: Vec<(usize, usize, &mut [O])> = ys
            .iter_mut()
            .enumerate()
            .flat_map(|(i, y)| {
                let chunks = y.chunks_mut(GEMV_ROWS_PER_TASK).enumerate();
                chunks.map(move |(t, chunk)| (i, t * GEMV_ROWS_PER_TASK, chunk))
            })
            .collect();
        tasks.into_par_iter().for_each(|(i, first_row, chunk)| {
            // SAFETY: `gemv` needs `has_avx2`, and levels 2 and 3 are chosen only where `has_vnni`.
            unsafe { gemv_task(x, &ws[i], (act, stride), first_row, chunk, simd) }
        });
        return;
    }
    let rows_per_task = if gemv { GEMV_ROWS_PER_TASK } else { ROWS_PER_TASK };
    // Outputs transposed (n × m), so each parallel task owns whole weight rows.
    let mut yts: Vec<Vec<f32>> = ws.iter().map(|w| vec![0f32; w.rows() * m]).collect();
    let tasks: Vec<(usize, usize, &mut [f32])> = yts
        .iter_mut()
        .enumerate()
        .flat_map(|(i, yt)| {
            yt.chunks_mut(rows_per_task * m).enumerate().map(move |(t, chunk)| (i, t * rows_per_task, chunk))
        })
        .collect();
    tasks.into_par_iter().for_each(|(i, first_row, chunk)| {
        let w = &ws[i];
        #[cfg(target_arch = "x86_64")]
        if gemv {
            // SAFETY: `gemv` needs `has_avx2`; levels 2 and 3 only where `has_vnni`.
            unsafe { gemv_task(x, w, (act, stride), first_row, chunk, simd) };
            return;
        }
        task_rows(x, w, (act, stride), first_row, chunk);
    });
    for ((yt, y), w) in yts.iter().zip(ys.iter_mut()).zip(ws) {
        transpose_out(yt, y, m, w.rows(), small);
    }
}

/// Weight rows per group of the SIMD decode GEMVs: the rows that share each activation load.
#[cfg(target_arch = "x86_64")]
const GEMV_GROUP: usize = 4;

/// The SIMD decode GEMVs' task: weight rows `first_row ..` (`chunk.len() / m`
/// of them) against the `m` (1 or 2) permuted activation rows, into the
/// transposed output `chunk` (`rows × m`), by the GEMV of level `simd`
/// (AVX-512 VNNI on 2 and 3, AVX2 on 1).
///
/// # Safety
/// The CPU has AVX2, and AVX-512 F/BW/VNNI where `simd ≥ 2`.
#[cfg(target_arch = "x86_64")]
unsafe fn gemv_task<O: OutputElem>(
    x: &QuantizedRef<'_>,
    w: &TernaryRef<'_>,
    act: (&[i8], usize),
    first_row: usize,
    chunk: &mut [O],
    simd: u8,
) {
    let m = x.rows;
    if simd >= 2 {
        let wpr = w.words_per_row();
        vnni_gemv::prefetch_task_start(&w.words()[first_row * wpr..][..chunk.len() / m * wpr]);
        // SAFETY: the CPU has AVX-512 VNNI (the contract); `gemv_groups` checks
        // that the permuted activation rows cover the weight rows.
        gemv_groups(x, w, act, first_row, chunk, |rows, acts| unsafe { vnni_gemv::group_dots(rows, acts, m) });
    } else {
        // SAFETY: the CPU has AVX2 (the contract); the activation rows as above.
        gemv_groups(x, w, act, first_row, chunk, |rows, acts| unsafe { avx2::group_dots(rows, acts, m) });
    }
}

/// Weight rows `first_row ..` of a [`gemv_task`] in groups of [`GEMV_GROUP`]
/// consecutive rows (a last, short group repeats its last row), each group's
/// sums from `group_dots(rows, acts)`, dequantized into `chunk`.
#[cfg(target_arch = "x86_64")]
fn gemv_groups<O: OutputElem>(
    x: &QuantizedRef<'_>,
    w: &TernaryRef<'_>,
    (act, stride): (&[i8], usize),
    first_row: usize,
    chunk: &mut [O],
    group_dots: impl Fn(&[&[u32]; GEMV_GROUP], &[&[i8]; 2]) -> [[i32; 2]; GEMV_GROUP],
) {
    let (m, wpr) = (x.rows, w.words_per_row());
    // The kernels read whole 256-weight blocks of every activation row.
    assert!(stride >= wpr.next_multiple_of(BLOCK / 16) * 16, "activation rows of {stride} bytes for {wpr} words");
    let rows_here = chunk.len() / m;
    let acts: [&[i8]; 2] = std::array::from_fn(|r| &act[r.min(m - 1) * stride..][..stride]);
    // One division per activation row and task rather than one per output.
    let factors: [f32; 2] = std::array::from_fn(|r| dequantize_factor(w.scale(), x.scales[r.min(m - 1)]));
    let sums: [i32; 2] = std::array::from_fn(|r| x.sums[r.min(m - 1)]);
    for (r0, outs) in (0..rows_here).step_by(GEMV_GROUP).zip(chunk.chunks_mut(GEMV_GROUP * m)) {
        let nr = outs.len() / m;
        let rows: [&[u32]; GEMV_GROUP] =
            std::array::from_fn(|i| &w.words()[(first_row + r0 + i.min(nr - 1)) * wpr..][..wpr]);
        for (d, out) in group_dots(&rows, &acts).iter().zip(outs.chunks_exact_mut(m)) {
            for (r, o) in out.iter_mut().enumerate() {
                *o = O::from_f32(dequantize_by(d[r] - sums[r], factors[r]));
            }
        }
    }
}

/// (matrix, first weight row) of each task of `rows_per_task` weight rows, over every matrix.
#[cfg(target_arch = "x86_64")]
fn column_tasks(ws: &[TernaryRef<'_>], rows_per_task: usize) -> Vec<(usize, usize)> {
    ws.iter().enumerate().flat_map(|(i, w)| (0..w.rows()).step_by(rows_per_task).map(move |r| (i, r))).collect()
}

/// `y[r][c] = yt[c][r]`, converted to the output element (on this thread when `small`).
///
/// Bands of [`TRANSPOSE_TILE`] rows of `y` are copied in square tiles: a
/// column-at-a-time copy reads `yt` with a stride of `m` floats, and at
/// prefill's m = 512 spent ~9 ms on one 4096-row matrix (2026-11-28), twice
/// the tiled copy's time.
fn transpose_out<O: OutputElem>(yt: &[f32], y: &mut [O], m: usize, n: usize, small: bool) {
    const T: usize = TRANSPOSE_TILE;
    if n == 0 {
        return;
    }
    let band = |(b, rows): (usize, &mut [O])| {
        let r0 = b * T;
        let mut c0 = 0;
        if rows.len() == T * n {
            while c0 + T <= n {
                let mut tile = [[0f32; T]; T];
                for (j, col) in tile.iter_mut().enumerate() {
                    col.copy_from_slice(&yt[(c0 + j) * m + r0..][..T]);
                }
                for (i, out) in rows.chunks_mut(n).enumerate() {
                    for (o, col) in out[c0..c0 + T].iter_mut().zip(&tile) {
                        *o = O::from_f32(col[i]);
                    }
                }
                c0 += T;
            }
        }
        // The columns past the last whole tile, and a band of fewer than T rows.
        for (i, out) in rows.chunks_mut(n).enumerate() {
            for (c, o) in out.iter_mut().enumerate().skip(c0) {
                *o = O::from_f32(yt[c * m + r0 + i]);
            }
        }
    };
    match small {
        true => y.chunks_mut(T * n).enumerate().for_each(band),
        false => y.par_chunks_mut(T * n).enumerate().for_each(band),
    }
}

/// Rows and columns of the square tiles [`transpose_out`] copies.
const TRANSPOSE_TILE: usize = 8;

/// [`ternary_matmul_into`] into a new f32 (`precision` F32) or f16-valued result.
pub fn ternary_matmul(x: &QuantizedActivations, w: &DeviceTernary, precision: Precision) -> Vec<f32> {
    let len = x.rows * w.rows();
    match precision {
        Precision::F32 => {
            let mut y = vec![0f32; len];
            ternary_matmul_into(x.view(), w.view(), &mut y);
            y
        }
        Precision::F16 => {
            let mut y = vec![half::f16::ZERO; len];
            ternary_matmul_into(x.view(), w.view(), &mut y);
            y.into_iter().map(half::f16::to_f32).collect()
        }
    }
}

/// The portable path's task: weight rows `first_row ..` against every
/// activation row (natural order), [`NR`] weight rows × [`MR`] activation rows
/// at a time, four weights per step; writes the transposed output.
fn task_rows(
    x: &QuantizedRef<'_>,
    w: &TernaryRef<'_>,
    (act, stride): (&[i8], usize),
    first_row: usize,
    chunk: &mut [f32],
) {
    let (m, wpr) = (x.rows, w.words_per_row());
    let rows_here = chunk.len() / m;
    for m0 in (0..m).step_by(MB) {
        let m_end = (m0 + MB).min(m);
        for r0 in (0..rows_here).step_by(NR) {
            let nr = (rows_here - r0).min(NR);
            for mm in (m0..m_end).step_by(MR) {
                let mr = (m_end - mm).min(MR);
                let mut dots = [[0i32; MR]; NR];
                for (i, o) in dots.iter_mut().enumerate().take(nr) {
                    let words = &w.words()[(first_row + r0 + i) * wpr..][..wpr];
                    for (wi, &word) in words.iter().enumerate() {
                        for j in 0..4u32 {
                            let c = codes(word, j);
                            let k = 16 * wi + 4 * j as usize;
                            for (r, acc) in o.iter_mut().enumerate().take(mr) {
                                let a = &act[(mm + r) * stride + k..][..4];
                                let av = u32::from_le_bytes([a[0] as u8, a[1] as u8, a[2] as u8, a[3] as u8]);
                                *acc = kernels_gpu::device::dp4a_reference(c, av, *acc);
                            }
                        }
                    }
                }
                for (i, row_dots) in dots.iter().enumerate().take(nr) {
                    let out_row = &mut chunk[(r0 + i) * m..][..m];
                    for r in 0..mr {
                        out_row[mm + r] = dequantize(row_dots[r] - x.sums[mm + r], w.scale(), x.scales[mm + r]);
                    }
                }
            }
        }
    }
}

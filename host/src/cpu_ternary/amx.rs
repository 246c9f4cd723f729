//! # The AMX-INT8 path of the CPU ternary matmul (prefill)
//!
//! Intel's Advanced Matrix Extensions (Sapphire Rapids and later) add eight
//! tile registers of up to 16 rows × 64 bytes and `tdpbusd`, which adds the
//! product of a tile of unsigned bytes (16 × 64) and a tile of signed bytes
//! in "VNNI layout" (16 groups of 4 along K × 16 columns) into a 16 × 16
//! tile of i32: 16 384 multiply-adds per instruction.
//!
//! The weight codes (`trit + 1`: 0, 1, 2) are the unsigned operand and the
//! int8 activations the signed one, so a result tile is 16 weight rows × 16
//! activation rows. Each task owns 32 weight rows, which are 32 columns of
//! the output, and writes them in place ([`OutputColumns`]): the other paths'
//! transposed result and its copy cost as much as the tiles' sums here.
//!
//! - **Weights** ([`gemm_task`]): a task's 32 weight rows are decoded once
//!   into a panel of codes, one byte per weight, in the permuted order of the
//!   AVX-512 path (extraction `j` of the 16 words of block `blk` is K step
//!   `4·blk + j`; any order of K does, as long as the activations follow it),
//!   laid out as the A tiles in the order they are loaded: 1 KiB each, 2 per
//!   step (rows 16 apart at a stride of K would share L1 sets at K = 4096).
//! - **Activations** ([`act_panel`]): the permuted rows, regrouped once per
//!   call into 1 KiB B tiles: for 16 activation rows and one 64-byte step of
//!   K, byte `64·q + 4·r + t` is byte `4·q + t` of row `r`'s step.
//! - **Tiles**: 2 × 2 blocking. Tiles 0–1 hold two weight tiles, 2–3 two
//!   activation tiles, 4–7 the four 16 × 16 sums, so each tile loaded is used
//!   twice. Rows past M or past the task's weight rows are zeros, and their
//!   sums are dropped.
//!
//! The tile instructions are written in `asm!` (Rust's AMX intrinsics are not
//! stable). The compiler never allocates the tile registers, so the tiles
//! keep their contents between the `asm!` blocks of one task, which
//! configures them first and releases them at the end.
//!
//! Bounds: one sum is at most `2 · 128 · K`, far inside i32 for any K here.

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::OutputColumns;
use crate::buffer::OutputElem;
use crate::matmul::{QuantizedRef, dequantize_factor};
use crate::ternary::TernaryRef;

/// Rows of a tile, and activation rows per B tile.
const TILE_ROWS: usize = 16;
/// Bytes of K per tile step.
const TILE_K: usize = 64;
/// Weight rows per parallel task: two A tiles.
pub(super) const ROWS_PER_TASK: usize = 2 * TILE_ROWS;
/// Activation rows per pass over K: two B tiles.
const ACTS_PER_PASS: usize = 2 * TILE_ROWS;
/// Bytes of one B tile in the activation panel.
const B_TILE_BYTES: usize = TILE_ROWS * TILE_K;

/// Linux's `arch_prctl` request for permission to use an extended state component.
const ARCH_REQ_XCOMP_PERM: libc::c_ulong = 0x1023;
/// The AMX tile data state component.
const XFEATURE_XTILEDATA: libc::c_ulong = 18;

/// Whether this CPU has AMX-TILE and AMX-INT8 and the kernel lets this
/// process use the tile state (asked once, process-wide).
pub(super) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if __cpuid(0).eax < 7 {
            return false;
        }
        let edx = __cpuid_count(7, 0).edx;
        let (tile, int8) = (edx >> 24 & 1 == 1, edx >> 25 & 1 == 1);
        // SAFETY: a plain system call with integer arguments; the kernel
        // refuses it (non-zero) where it does not manage the tile state.
        tile && int8 && unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) } == 0
    })
}

/// Activation rows padded for [`act_panel`] and [`gemm_task`].
pub(super) fn padded_rows(m: usize) -> usize {
    m.next_multiple_of(ACTS_PER_PASS)
}

/// The permuted activations (`m` rows of `stride` bytes) as B tiles: for each
/// group of 16 rows, `stride / 64` tiles of 1 KiB in K order; rows past `m` are zeros.
pub(super) fn act_panel(act: &[i8], m: usize, stride: usize) -> Vec<i8> {
    use rayon::prelude::*;
    let group_bytes = TILE_ROWS * stride;
    let mut panel = vec![0i8; padded_rows(m) * stride];
    panel.par_chunks_mut(group_bytes).enumerate().for_each(|(g, tiles)| {
        for r in 0..TILE_ROWS.min(m.saturating_sub(g * TILE_ROWS)) {
            let row = &act[(g * TILE_ROWS + r) * stride..][..stride];
            for (step, tile) in row.chunks_exact(TILE_K).zip(tiles.chunks_exact_mut(B_TILE_BYTES)) {
                for q in 0..TILE_K / 4 {
                    tile[TILE_K * q + 4 * r..][..4].copy_from_slice(&step[4 * q..][..4]);
                }
            }
        }
    });
    panel
}

/// Prefill: weight rows `first_row ..` of this task (at most
/// [`ROWS_PER_TASK`]) against every activation row, into columns
/// `first_row ..` of `out`. `panel` is this thread's scratch.
///
/// # Safety
/// [`available`] returned true; `acts` is [`act_panel`] of this call's
/// activations, `stride` bytes per row, a whole number of blocks holding at
/// least `16 · w.words_per_row()` bytes; no other task writes these columns of `out`.
pub(super) unsafe fn gemm_task<O: OutputElem>(
    x: &QuantizedRef<'_>,
    w: &TernaryRef<'_>,
    (acts, stride): (&[i8], usize),
    first_row: usize,
    out: &OutputColumns<'_, O>,
    panel: &mut Vec<u8>,
) {
    let m = x.rows;
    let rows_here = (w.rows() - first_row).min(ROWS_PER_TASK);
    panel.clear();
    panel.resize(ROWS_PER_TASK * stride, 0);
    let wpr = w.words_per_row();
    for r in 0..rows_here {
        let words = &w.words()[(first_row + r) * wpr..][..wpr];
        // SAFETY: AMX-INT8 CPUs have AVX-512 F/BW (the caller's contract); the
        // panel holds 32 rows of `stride ≥ 16 · wpr` bytes rounded up to whole blocks.
        unsafe { decode_row(words, panel, r) };
    }
    let steps = stride / TILE_K;
    let mut sums = [[0i32; TILE_ROWS * TILE_ROWS]; 4];
    let config = TileConfig::new();
    // SAFETY: the configuration is a valid palette-1 layout (64-byte aligned).
    unsafe { asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly, preserves_flags)) };
    for m0 in (0..m).step_by(ACTS_PER_PASS) {
        let b0 = &acts[m0 * stride..][..TILE_ROWS * stride];
        let b1 = &acts[(m0 + TILE_ROWS) * stride..][..TILE_ROWS * stride];
        // SAFETY: the tiles were configured above; step `s` reads the two
        // 1 KiB A tiles at `2 KiB · s` of the weight panel (`steps` × 2 KiB)
        // and 1 KiB from each B tile group (16 rows of `stride` bytes), all
        // inside the slices.
        unsafe {
            asm!(
                "tilezero tmm4",
                "tilezero tmm5",
                "tilezero tmm6",
                "tilezero tmm7",
                options(nostack, nomem, preserves_flags)
            );
            for s in 0..steps {
                asm!(
                    "tileloadd tmm0, [{a0} + {sa}*1]",
                    "tileloadd tmm1, [{a1} + {sa}*1]",
                    "tileloadd tmm2, [{b0} + {sb}*1]",
                    "tileloadd tmm3, [{b1} + {sb}*1]",
                    "tdpbusd tmm4, tmm0, tmm2",
                    "tdpbusd tmm5, tmm0, tmm3",
                    "tdpbusd tmm6, tmm1, tmm2",
                    "tdpbusd tmm7, tmm1, tmm3",
                    a0 = in(reg) panel.as_ptr().add(2 * s * B_TILE_BYTES),
                    a1 = in(reg) panel.as_ptr().add((2 * s + 1) * B_TILE_BYTES),
                    b0 = in(reg) b0.as_ptr().add(s * B_TILE_BYTES),
                    b1 = in(reg) b1.as_ptr().add(s * B_TILE_BYTES),
                    sa = in(reg) TILE_K,
                    sb = in(reg) TILE_K,
                    options(nostack, readonly, preserves_flags)
                );
            }
            asm!(
                "tilestored [{c0} + {sc}*1], tmm4",
                "tilestored [{c1} + {sc}*1], tmm5",
                "tilestored [{c2} + {sc}*1], tmm6",
                "tilestored [{c3} + {sc}*1], tmm7",
                c0 = in(reg) sums[0].as_mut_ptr(),
                c1 = in(reg) sums[1].as_mut_ptr(),
                c2 = in(reg) sums[2].as_mut_ptr(),
                c3 = in(reg) sums[3].as_mut_ptr(),
                sc = in(reg) TILE_ROWS * 4,
                options(nostack, preserves_flags)
            );
        }
        // Tile 2·a + b: weight rows 16a .., activation rows m0 + 16b ...
        for (t, tile) in sums.iter().enumerate() {
            let (wr0, ar0) = (TILE_ROWS * (t / 2), m0 + TILE_ROWS * (t % 2));
            let cols = TILE_ROWS.min(rows_here.saturating_sub(wr0));
            if cols == 0 {
                continue;
            }
            for j in 0..TILE_ROWS.min(m.saturating_sub(ar0)) {
                let r = ar0 + j;
                // SAFETY: AVX-512 F (the contract); columns `first_row + wr0 ..`
                // are this task's, and no other segment is held.
                unsafe {
                    let row = tile_column(tile, j, x.sums[r], w.scale(), x.scales[r]);
                    out.store16(r, first_row + wr0, cols, &row);
                }
            }
        }
    }
    // SAFETY: ends this thread's use of the tiles (their state is freed).
    unsafe { asm!("tilerelease", options(nostack, nomem, preserves_flags)) };
}

/// Column `j` of a 16 × 16 tile of sums (weight rows × activation rows),
/// dequantized: [`dequantize`](crate::matmul::dequantize)`(tile[i][j] - sum, w_scale, x_scale)` for each weight row `i`,
/// with the same two IEEE operations in the same order, vectorized.
///
/// # Safety
/// The CPU has AVX-512 F.
#[target_feature(enable = "avx512f")]
fn tile_column(
    tile: &[i32; TILE_ROWS * TILE_ROWS],
    j: usize,
    sum: i32,
    w_scale: f32,
    x_scale: f32,
) -> [f32; TILE_ROWS] {
    let lanes = _mm512_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240);
    let idx = _mm512_add_epi32(lanes, _mm512_set1_epi32(j as i32));
    // SAFETY: indices 16 i + j < 256 for i, j < 16: inside the tile.
    let acc = unsafe { _mm512_i32gather_epi32::<4>(idx, tile.as_ptr().cast()) };
    let acc = _mm512_sub_epi32(acc, _mm512_set1_epi32(sum));
    let v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(dequantize_factor(w_scale, x_scale)));
    let mut out = [0f32; TILE_ROWS];
    // SAFETY: 16 f32 lanes into a 16-element array.
    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// Multiply-adds per round of [`peak_loop`]: four `tdpbusd` of 16 × 16 × 64.
pub(super) const PEAK_MACS: u64 = 4 * (TILE_ROWS * TILE_ROWS * TILE_K) as u64;

/// `iters` rounds of the four `tdpbusd` of [`gemm_task`]'s inner step on
/// tiles that stay in registers: the peak its loads keep it from; returns a
/// checksum so nothing is optimized away.
///
/// # Safety
/// [`available`] returned true.
pub(super) unsafe fn peak_loop(iters: u64, seed: i8) -> i64 {
    let config = TileConfig::new();
    let src = [seed | 1; B_TILE_BYTES];
    let mut out = [0i32; TILE_ROWS * TILE_ROWS];
    // SAFETY: the configuration is a valid palette-1 layout; the loads read
    // 16 rows of 64 bytes from `src` (1 KiB) and the store writes 16 rows of
    // 64 bytes into `out` (1 KiB).
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly, preserves_flags));
        asm!(
            "tileloadd tmm0, [{p} + {s}*1]",
            "tileloadd tmm1, [{p} + {s}*1]",
            "tileloadd tmm2, [{p} + {s}*1]",
            "tileloadd tmm3, [{p} + {s}*1]",
            "tilezero tmm4",
            "tilezero tmm5",
            "tilezero tmm6",
            "tilezero tmm7",
            p = in(reg) src.as_ptr(),
            s = in(reg) TILE_K,
            options(nostack, readonly, preserves_flags)
        );
        for _ in 0..iters {
            asm!(
                "tdpbusd tmm4, tmm0, tmm2",
                "tdpbusd tmm5, tmm0, tmm3",
                "tdpbusd tmm6, tmm1, tmm2",
                "tdpbusd tmm7, tmm1, tmm3",
                options(nostack, nomem, preserves_flags)
            );
        }
        asm!(
            "tilestored [{c} + {s}*1], tmm7",
            c = in(reg) out.as_mut_ptr(),
            s = in(reg) TILE_ROWS * 4,
            options(nostack, preserves_flags)
        );
        asm!("tilerelease", options(nostack, nomem, preserves_flags));
    }
    out.iter().map(|&v| v as i64).sum()
}

/// Weight row `r` (of the task's 32) into the weight panel: its codes, one
/// byte each, in the permuted block order; K step `s` (extraction `j` of
/// block `blk`, `s = 4·blk + j`) is row `r % 16` of the A tile at
/// `(2s + r / 16) KiB`, so each A tile is 1 KiB in one piece.
///
/// # Safety
/// The CPU has AVX-512 F/BW; `panel` holds 32 rows of `16 · words.len()`
/// bytes rounded up to whole blocks; `r < 32`.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn decode_row(words: &[u32], panel: &mut [u8], r: usize) {
    for blk in 0..words.len().div_ceil(16) {
        // The last block may be partial: masked-off lanes are zero and never touch memory.
        let live = (words.len() - 16 * blk).min(16);
        let lanes = crate::cpu::first_lanes(live);
        // SAFETY: the mask limits the load to the `live` words left in the row.
        let wv = unsafe { _mm512_maskz_loadu_epi32(lanes, words[16 * blk..].as_ptr().cast()) };
        for (j, c) in super::vnni::extract(wv).into_iter().enumerate() {
            let at = (2 * (4 * blk + j) + r / TILE_ROWS) * B_TILE_BYTES + TILE_K * (r % TILE_ROWS);
            let row = &mut panel[at..][..TILE_K];
            // SAFETY: 64 bytes into a 64-byte slice.
            unsafe { _mm512_storeu_si512(row.as_mut_ptr().cast(), c) };
        }
    }
}

/// The 64-byte operand of `ldtilecfg`: palette 1, eight tiles of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    /// Bytes per row of each tile.
    colsb: [u16; 16],
    /// Rows of each tile.
    rows: [u8; 16],
}

impl TileConfig {
    fn new() -> TileConfig {
        let mut c = TileConfig { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
        for t in 0..8 {
            c.colsb[t] = TILE_K as u16;
            c.rows[t] = TILE_ROWS as u8;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tile_configuration_has_the_layout_ldtilecfg_reads() {
        let c = TileConfig::new();
        assert_eq!(std::mem::size_of::<TileConfig>(), 64);
        // SAFETY: TileConfig is 64 plain bytes.
        let bytes: [u8; 64] = unsafe { std::mem::transmute(c) };
        assert_eq!(bytes[0], 1, "palette");
        assert_eq!(&bytes[16..18], &64u16.to_le_bytes(), "tile 0 bytes per row");
        assert_eq!(&bytes[30..32], &64u16.to_le_bytes(), "tile 7 bytes per row");
        assert_eq!(&bytes[32..34], &[0, 0], "tile 8 unused");
        assert_eq!(bytes[48], 16, "tile 0 rows");
        assert_eq!(bytes[55], 16, "tile 7 rows");
        assert_eq!(bytes[56], 0, "tile 8 unused");
    }

    #[test]
    fn the_activation_panel_is_in_vnni_layout() {
        // 3 rows of 128 bytes: row r, byte k holds (r, k) in a recoverable form.
        let (m, stride) = (3, 128);
        let act: Vec<i8> =
            (0..m * stride).map(|i| ((i % stride) as i32 + 7 * (i / stride) as i32 - 64) as i8).collect();
        let panel = act_panel(&act, m, stride);
        assert_eq!(panel.len(), 32 * stride);
        // Tile `s` of group 0, K-group q, row r, byte t = act[r][64 s + 4 q + t].
        for s in 0..2 {
            for q in 0..16 {
                for r in 0..16 {
                    for t in 0..4 {
                        let got = panel[B_TILE_BYTES * s + 64 * q + 4 * r + t];
                        let want = if r < m { act[r * stride + 64 * s + 4 * q + t] } else { 0 };
                        assert_eq!(got, want, "step {s} group {q} row {r} byte {t}");
                    }
                }
            }
        }
        assert!(panel[16 * stride..].iter().all(|&b| b == 0), "the second group of 16 rows is padding");
    }
}

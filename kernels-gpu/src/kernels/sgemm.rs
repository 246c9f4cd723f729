//! FP32 SGEMM, tiled and register-blocked (no tensor cores): the original
//! report's "matrix mult TFLOPS", done by our own kernel.

use crate::device::*;
use crate::kernel;

/// Block tile along M and N.
pub const SGEMM_TILE: u32 = 128;
/// K per step.
pub const SGEMM_BK: u32 = 8;
/// Threads per block (16 × 16, each 8 × 8 outputs).
pub const SGEMM_THREADS: u32 = 256;
const STAGE_WORDS: u32 = 2 * SGEMM_BK * SGEMM_TILE;
/// Dynamic shared memory: A and B tiles (stored K-major), double-buffered.
pub const SGEMM_SHARED_BYTES: u32 = 2 * STAGE_WORDS * 4;

/// SGEMM's launch: one 256-thread block per 128 × 128 output tile.
pub const fn sgemm_geometry(m: usize, n: usize) -> crate::launch::LaunchConfig {
    crate::launch::LaunchConfig {
        grid: [(n as u32).div_ceil(SGEMM_TILE), (m as u32).div_ceil(SGEMM_TILE), 1],
        block: [SGEMM_THREADS, 1, 1],
        shared_bytes: SGEMM_SHARED_BYTES,
    }
}

/// Checks an SGEMM request `C[m×n] = A[m×k] · B[n×k]ᵀ` against the buffer lengths.
#[cfg(not(target_arch = "nvptx64"))]
pub fn sgemm_check(m: usize, n: usize, k: usize, a: usize, b: usize, c: usize) -> Result<(), String> {
    if m == 0 || n == 0 || k == 0 {
        return Err("empty matrix".into());
    }
    if a != m * k || b != n * k || c != m * n {
        return Err(format!("A has {a} elements (want {}), B {b} (want {}), C {c} (want {})", m * k, n * k, m * n));
    }
    Ok(())
}

/// Shared word of (k, i) of tile `which` (0 = A, 1 = B) in buffer `buf`.
#[inline(always)]
fn sgemm_word(buf: u32, which: u32, k: u32, i: u32) -> u32 {
    buf * STAGE_WORDS + which * SGEMM_BK * SGEMM_TILE + k * SGEMM_TILE + i
}

/// Four consecutive K values of one row of A and of B (zero past the edges).
type SgemmStage = [[f32; 4]; 2];

/// # Safety
/// As `sgemm`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_load(a: In<f32>, b: In<f32>, m: u32, n: u32, k: u32, bm: u32, bn: u32, k0: u32) -> SgemmStage {
    let t = thread_idx_x();
    let (row, ko) = (t / 2, (t % 2) * 4);
    let mut st = [[0.0f32; 4]; 2];
    for (which, (src, limit, base)) in [(a, m, bm), (b, n, bn)].into_iter().enumerate() {
        let r = base + row;
        if r < limit {
            for (i, v) in st[which].iter_mut().enumerate() {
                let kk = k0 + ko + i as u32;
                if kk < k {
                    // SAFETY: r < limit and kk < k.
                    *v = unsafe { src.get(r as usize * k as usize + kk as usize) };
                }
            }
        }
    }
    st
}

/// # Safety
/// As `sgemm`.
#[inline(always)]
unsafe fn sgemm_store(st: &SgemmStage, buf: u32) {
    let t = thread_idx_x();
    let (row, ko) = (t / 2, (t % 2) * 4);
    for (which, vals) in st.iter().enumerate() {
        for (i, &v) in vals.iter().enumerate() {
            // SAFETY: inside the stage.
            unsafe { shared_store_f32(sgemm_word(buf, which as u32, ko + i as u32, row), v) };
        }
    }
}

kernel! {
    /// `c[m][n] = Σ_k a[m][k] · b[n][k]` in FP32 (`nn.Linear`'s `X · Wᵀ`),
    /// with fused multiply-adds; any M, N, K.
    ///
    /// # Safety
    /// `a` holds `m · k`, `b` holds `n · k`, `c` holds `m · n` floats; grid
    /// `(ceil(n/128), ceil(m/128))` of 256-thread blocks with
    /// `SGEMM_SHARED_BYTES` of dynamic shared memory.
    ///
    /// # Parameters
    /// - `a`: `m × k` row-major; `b`: `n × k` row-major; `c`: `m × n` row-major.
    ///
    /// # Thread mapping
    /// Thread (tx, ty) = (t % 16, t / 16) of a block owns rows
    /// `{4ty..4ty+4, 64+4ty..64+4ty+4}` and the same columns with tx of the
    /// block's 128 × 128 tile: 64 accumulators in registers. The two groups of
    /// four are 64 apart so that eight threads' 128-bit shared loads cover 128
    /// contiguous bytes (no bank conflicts).
    ///
    /// # Tiling
    /// K advances 8 at a time; A and B tiles (128 × 8 each) are stored K-major
    /// in shared memory, double-buffered with the next step's global loads
    /// held in registers during the 512 FMAs of the current step.
    pub unsafe fn sgemm(a: In<f32>, b: In<f32>, c: Out<f32>, m: u32, n: u32, k: u32) {
        let (bn, bm) = (block_idx_x() * SGEMM_TILE, block_idx_y() * SGEMM_TILE);
        let t = thread_idx_x();
        let (tx, ty) = (t % 16, t / 16);
        let mut acc = [[0.0f32; 8]; 8];
        let steps = k.div_ceil(SGEMM_BK);
        let first = sgemm_load(a, b, m, n, k, bm, bn, 0);
        sgemm_store(&first, 0);
        sync_threads();
        for step in 0..steps {
            let buf = step % 2;
            let next = if step + 1 < steps { Some(sgemm_load(a, b, m, n, k, bm, bn, (step + 1) * SGEMM_BK)) } else { None };
            for kk in 0..SGEMM_BK {
                let lo = shared_load_u32x4(sgemm_word(buf, 0, kk, 4 * ty));
                let hi = shared_load_u32x4(sgemm_word(buf, 0, kk, 64 + 4 * ty));
                let av = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]].map(f32::from_bits);
                let lo = shared_load_u32x4(sgemm_word(buf, 1, kk, 4 * tx));
                let hi = shared_load_u32x4(sgemm_word(buf, 1, kk, 64 + 4 * tx));
                let bv = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]].map(f32::from_bits);
                for i in 0..8 {
                    for j in 0..8 {
                        acc[i][j] = fma(av[i], bv[j], acc[i][j]);
                    }
                }
            }
            if let Some(next) = next {
                sgemm_store(&next, buf ^ 1);
            }
            sync_threads();
        }
        // Unrolled by hand: as a loop nest the accumulators went to local memory.
        crate::unrolled!(i in [0usize, 1, 2, 3, 4, 5, 6, 7] => {
            let row = bm + if i < 4 { 4 * ty + i as u32 } else { 64 + 4 * ty + i as u32 - 4 };
            for (j, &v) in acc[i].iter().enumerate() {
                let col = bn + if j < 4 { 4 * tx + j as u32 } else { 64 + 4 * tx + j as u32 - 4 };
                if row < m && col < n {
                    c.set(row as usize * n as usize + col as usize, v);
                }
            }
        });
    }
}

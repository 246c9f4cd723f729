//! # Launch geometry, shared by the emulator and CUDA backends
//!
//! Each kernel's grid and block shape is computed once here, so the emulator
//! runs exactly the configuration the GPU runs.

/// Grid, block and dynamic shared memory of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Blocks in x, y, z.
    pub grid: [u32; 3],
    /// Threads per block in x, y, z.
    pub block: [u32; 3],
    /// Dynamic shared memory per block, bytes.
    pub shared_bytes: u32,
}

impl Geometry {
    /// Enough 1-D blocks of `block` threads to cover `threads` threads.
    pub fn cover(threads: usize, block: u32) -> Self {
        let grid = threads.div_ceil(block as usize).max(1) as u32;
        Geometry { grid: [grid, 1, 1], block: [block, 1, 1], shared_bytes: 0 }
    }

    /// For the emulator.
    pub fn emu(self) -> kernels_gpu::emu::LaunchConfig {
        kernels_gpu::emu::LaunchConfig { grid: self.grid, block: self.block, shared_bytes: self.shared_bytes }
    }

    /// For cudarc.
    pub fn cuda(self) -> cudarc::driver::LaunchConfig {
        cudarc::driver::LaunchConfig {
            grid_dim: (self.grid[0], self.grid[1], self.grid[2]),
            block_dim: (self.block[0], self.block[1], self.block[2]),
            shared_mem_bytes: self.shared_bytes,
        }
    }
}

/// The unpack kernels: one thread per packed word, 256 threads per block.
pub fn unpack(words: usize) -> Geometry {
    Geometry::cover(words, 256)
}

/// The TriHash kernels: one 243-thread block per 128-lane batch, at most
/// `max_blocks` blocks striding over `batches`, with the sliced state in
/// dynamic shared memory.
pub fn trihash(batches: u64, max_blocks: u32) -> Geometry {
    Geometry {
        grid: [batches.clamp(1, max_blocks as u64) as u32, 1, 1],
        block: [kernels_gpu::curl::GPU_THREADS as u32, 1, 1],
        shared_bytes: kernels_gpu::curl::GPU_SHARED_BYTES as u32,
    }
}

/// The quantizer: one 256-thread block per row, at most `max_blocks` striding over rows.
pub fn quantize(rows: usize, max_blocks: u32) -> Geometry {
    Geometry {
        grid: [(rows as u32).clamp(1, max_blocks), 1, 1],
        block: [kernels_gpu::matmul::QUANTIZE_THREADS, 1, 1],
        shared_bytes: kernels_gpu::matmul::QUANTIZE_SHARED_BYTES,
    }
}

/// The ternary GEMV: 8 warps per block, one output row per warp, the
/// activation block in shared memory.
pub fn ternary_gemv(m: usize, n: usize, k_pad: usize) -> Geometry {
    let warps = kernels_gpu::matmul::GEMV_WARPS;
    Geometry {
        grid: [(n as u32).div_ceil(warps).max(1), 1, 1],
        block: [32 * warps, 1, 1],
        shared_bytes: kernels_gpu::matmul::gemv_shared_bytes(m, k_pad),
    }
}

/// The ternary GEMM: one 256-thread block per 128 × 128 output tile.
pub fn ternary_gemm(m: usize, n: usize) -> Geometry {
    use kernels_gpu::matmul::{GEMM_BM, GEMM_BN, GEMM_SHARED_BYTES, GEMM_THREADS};
    Geometry {
        grid: [(n as u32).div_ceil(GEMM_BN), (m as u32).div_ceil(GEMM_BM), 1],
        block: [GEMM_THREADS, 1, 1],
        shared_bytes: GEMM_SHARED_BYTES,
    }
}

/// SGEMM: one 256-thread block per 128 × 128 output tile.
pub fn sgemm(m: usize, n: usize) -> Geometry {
    use kernels_gpu::kernels::{SGEMM_SHARED_BYTES, SGEMM_THREADS, SGEMM_TILE};
    Geometry {
        grid: [(n as u32).div_ceil(SGEMM_TILE), (m as u32).div_ceil(SGEMM_TILE), 1],
        block: [SGEMM_THREADS, 1, 1],
        shared_bytes: SGEMM_SHARED_BYTES,
    }
}

//! # Launch facts: the grid, block and shared memory of one launch
//!
//! Each kernel family states its own launch geometry and argument checks next
//! to its body (`*_geometry` / `*_check` functions in [`crate::matmul`],
//! [`crate::kernels`] and [`crate::curl`]), so the emulator and the GPU run
//! exactly the same configuration and reject exactly the same requests.

/// Grid and block shape of a launch, as in CUDA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    /// Blocks in x, y, z.
    pub grid: [u32; 3],
    /// Threads per block in x, y, z.
    pub block: [u32; 3],
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
}

impl LaunchConfig {
    /// A 1-D launch.
    pub const fn linear(grid: u32, block: u32, shared_bytes: u32) -> Self {
        LaunchConfig { grid: [grid, 1, 1], block: [block, 1, 1], shared_bytes }
    }

    /// One block of `block` threads per item (row, batch), at most `max_blocks`
    /// blocks that then stride over the rest (at least one block).
    pub const fn per_item(items: u64, max_blocks: u32, block: u32, shared_bytes: u32) -> Self {
        let grid = if items == 0 {
            1
        } else if items > max_blocks as u64 {
            max_blocks
        } else {
            items as u32
        };
        Self::linear(grid, block, shared_bytes)
    }

    /// Enough 1-D blocks of `block` threads to cover `threads` threads (at least one block).
    pub const fn cover(threads: usize, block: u32) -> Self {
        let grid = threads.div_ceil(block as usize);
        Self::linear(if grid == 0 { 1 } else { grid as u32 }, block, 0)
    }
}

/// The dynamic shared memory a block may use without opting in, on every CUDA device.
pub const DEFAULT_SHARED_LIMIT: u32 = 48 * 1024;

/// Checks that a launch's dynamic shared memory fits the device's per-block
/// opt-in maximum `limit` (host side).
#[cfg(not(target_arch = "nvptx64"))]
pub fn check_shared(config: &LaunchConfig, limit: u32) -> Result<(), String> {
    if config.shared_bytes > limit {
        return Err(format!(
            "needs {} bytes of shared memory per block; the device allows {limit}",
            config.shared_bytes
        ));
    }
    Ok(())
}

/// Checks that a buffer holds exactly `want` elements (host side).
#[cfg(not(target_arch = "nvptx64"))]
pub fn check_len(what: &str, got: usize, want: usize) -> Result<(), String> {
    if got != want {
        return Err(format!("{what}: {got} elements, expected {want}"));
    }
    Ok(())
}

//! Trinity's integration tests, in one binary (`cargo test -p trinity --test it`).
//!
//! - `kernels`: every kernel, written once, run on every backend by a macro
//!   (`cpu`, `emu`, and `cuda`, which says why it is skipped without a GPU) against the scalar references.
//! - `cpu_heads`: the CPU backend's own paths (the f16 / int8 lm_head GEMMs,
//!   several ternary linears in one pass).
//! - `emulator`: the SIMT emulator's own semantics (barriers, divergence,
//!   bounds checks, shuffles, mma fragments, shared memory).

mod cpu_heads;
mod emulator;
mod kernels;

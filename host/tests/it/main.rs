//! Trinity's integration tests, in one binary (`cargo test -p trinity --test it`).
//!
//! - `kernels`: every kernel, written once, run on every backend by a macro
//!   (`cpu`, `emu`, and `cuda`, which says why it is skipped without a GPU) against the scalar references.
//! - `heads`: the f16 / int8 lm_head GEMVs on every backend, and the CPU's
//!   several ternary linears in one pass.
//! - `emulator`: the SIMT emulator's own semantics (barriers, divergence,
//!   bounds checks, shuffles, mma fragments, shared memory).

mod emulator;
mod heads;
mod kernels;

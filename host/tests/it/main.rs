//! Trinity's integration tests, in one binary (`cargo test -p trinity --test it`).
//!
//! - `kernels`: every kernel, written once, run on every backend by a macro
//!   (`cpu`, `emu`, and `cuda` when a GPU is present) against the scalar references.
//! - `emulator`: the SIMT emulator's own semantics (barriers, divergence,
//!   bounds checks, shuffles, mma fragments, shared memory).
//! - `cli`: the `trinity` binary's exit codes and messages.

mod cli;
mod emulator;
mod kernels;

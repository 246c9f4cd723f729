//! # trinity-measure: timing, sensors, results, comparison, and `trinity run`
//!
//! The other half of Trinity: numbers a kernel developer can trust. It sits on
//! the runtime (`trinity`); nothing in the runtime depends on it.
//!
//! - [`stats`]: sample summaries (median, spread, a confidence interval of
//!   the median) and the compare rule (FASTER / SLOWER / SAME / UNSURE).
//! - [`timing`]: the timing core shared by `cargo bench` and `trinity run`:
//!   warm-up, then samples until the spread meets a target or a time cap,
//!   with GPU time from CUDA events or CPU wall time.
//! - [`sensor`]: NVML (power, temperature, clocks, throttle reasons, memory,
//!   utilization, energy counter) sampled in a background thread, behind a
//!   trait with a scripted fake for tests.
//! - [`results`]: the versioned results schema written by `trinity run`.
//! - [`report`]: Markdown tables and SVG charts across result files.
//! - [`noise`] and [`models`]: the noise-robustness curves and the BitNet
//!   linear-stack shapes.
//! - [`run`]: `trinity run`, the whole report in one command.
//! - [`progress`]: how `run` and [`model_bench`] report their steps.
//! - [`model_bench`] and [`serve_bench`]: the figures of `trinity bench-model`
//!   and `trinity bench-serve`, one struct each, with an export module per format.

pub mod model_bench;
pub mod models;
pub mod noise;
pub mod progress;
pub mod report;
pub mod results;
pub mod run;
pub mod sensor;
pub mod serve_bench;
pub mod stats;
pub mod timing;

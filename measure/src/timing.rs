//! # The timing core
//!
//! One loop, two clocks: GPU time from CUDA events
//! ([`trinity::cuda::CudaBackend::time`]) or CPU wall time ([`wall_clock`]).
//! `trinity run` uses it directly; the Criterion benches hand the same GPU
//! clock to `iter_custom`.
//!
//! 1. **Warm-up**: run until [`TimingConfig::warmup`] has passed (at least
//!    once), which also estimates the time per iteration.
//! 2. **Batching**: each sample runs enough back-to-back iterations to last
//!    [`TimingConfig::min_sample_time`] (CUDA events resolve about 0.5 µs).
//! 3. **Stopping**: after [`TimingConfig::min_samples`], stop as soon as the
//!    relative spread (IQR / median) is under [`TimingConfig::target_rel_spread`];
//!    otherwise at [`TimingConfig::time_cap`] or [`TimingConfig::max_samples`].
//!    Which rule stopped it is recorded.
//!
//! Hot vs cold is the caller's choice of work: hot reruns on the same
//! buffers; cold rotates through more memory than the L2 holds.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::stats::Summary;

/// How long and how much to sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimingConfig {
    /// Warm-up time before sampling.
    pub warmup: Duration,
    /// Shortest sample (iterations are batched to reach it).
    pub min_sample_time: Duration,
    /// Samples before the stopping rule applies.
    pub min_samples: usize,
    /// Upper bound on samples.
    pub max_samples: usize,
    /// Stop once IQR / median falls below this.
    pub target_rel_spread: f64,
    /// Stop sampling after this long regardless.
    pub time_cap: Duration,
}

impl TimingConfig {
    /// For `trinity run`: a few seconds per benchmark at most.
    pub fn standard() -> Self {
        TimingConfig {
            warmup: Duration::from_millis(200),
            min_sample_time: Duration::from_millis(2),
            min_samples: 10,
            max_samples: 200,
            target_rel_spread: 0.02,
            time_cap: Duration::from_secs(3),
        }
    }

    /// For tests and slow CPU shapes: fewer, shorter samples.
    pub fn quick() -> Self {
        TimingConfig {
            warmup: Duration::from_millis(20),
            min_sample_time: Duration::from_millis(1),
            min_samples: 5,
            max_samples: 30,
            target_rel_spread: 0.05,
            time_cap: Duration::from_millis(500),
        }
    }
}

/// Why sampling stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The spread met the target.
    Spread,
    /// The time cap was reached.
    TimeCap,
    /// The sample limit was reached.
    MaxSamples,
}

/// Samples of one benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Seconds per iteration, one entry per sample.
    pub samples: Vec<f64>,
    /// Their summary.
    pub summary: Summary,
    /// Iterations per sample.
    pub iterations_per_sample: u64,
    /// Why sampling stopped.
    pub stopped_by: StopReason,
}

/// A wall clock over a closure: `iters` calls, elapsed time.
pub fn wall_clock<E>(mut work: impl FnMut() -> Result<(), E>) -> impl FnMut(u64) -> Result<Duration, E> {
    move |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            work()?;
        }
        Ok(start.elapsed())
    }
}

/// Measures with `clock(iters)` = time of `iters` back-to-back iterations.
pub fn measure<E>(cfg: &TimingConfig, mut clock: impl FnMut(u64) -> Result<Duration, E>) -> Result<Measurement, E> {
    let start = Instant::now();
    let (mut done, mut spent) = (0u64, Duration::ZERO);
    let mut batch = 1u64;
    while done == 0 || start.elapsed() < cfg.warmup {
        spent += clock(batch)?;
        done += batch;
        batch = (batch * 2).min(1 << 20);
    }
    let per_iter = (spent.as_secs_f64() / done as f64).max(1e-9);
    // The small subtraction keeps an exact ratio (10.000000000000002) from rounding up.
    let iters = ((cfg.min_sample_time.as_secs_f64() / per_iter - 1e-9).ceil() as u64).max(1);
    let sampling = Instant::now();
    let mut samples = Vec::new();
    let stopped_by = loop {
        samples.push(clock(iters)?.as_secs_f64() / iters as f64);
        if samples.len() >= cfg.max_samples {
            break StopReason::MaxSamples;
        }
        if samples.len() >= cfg.min_samples {
            let s = Summary::of(&samples);
            if s.is_some_and(|s| s.rel_spread <= cfg.target_rel_spread) {
                break StopReason::Spread;
            }
            if sampling.elapsed() >= cfg.time_cap {
                break StopReason::TimeCap;
            }
        }
    };
    let summary = Summary::of(&samples).expect("at least one finite sample");
    Ok(Measurement { samples, summary, iterations_per_sample: iters, stopped_by })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_clock_stops_on_spread_with_batched_iterations() {
        let cfg = TimingConfig { min_sample_time: Duration::from_micros(100), ..TimingConfig::quick() };
        // A fake clock: exactly 10 µs per iteration.
        let m = measure::<()>(&cfg, |iters| Ok(Duration::from_micros(10 * iters))).unwrap();
        assert_eq!(m.stopped_by, StopReason::Spread);
        assert_eq!(m.samples.len(), cfg.min_samples);
        assert_eq!(m.iterations_per_sample, 10);
        assert!((m.summary.median - 10e-6).abs() < 1e-12);
    }

    #[test]
    fn a_noisy_clock_stops_at_the_sample_limit_or_cap() {
        let cfg = TimingConfig { max_samples: 12, ..TimingConfig::quick() };
        let mut k = 0u64;
        let m = measure::<()>(&cfg, |iters| {
            k += 1;
            Ok(Duration::from_micros(iters * if k.is_multiple_of(2) { 10 } else { 30 }))
        })
        .unwrap();
        assert!(matches!(m.stopped_by, StopReason::MaxSamples | StopReason::TimeCap));
        assert!(m.summary.rel_spread > cfg.target_rel_spread);
    }

    #[test]
    fn clock_errors_propagate() {
        assert_eq!(measure(&TimingConfig::quick(), |_| Err::<Duration, _>("driver lost")), Err("driver lost"));
    }
}

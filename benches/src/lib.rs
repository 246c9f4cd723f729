//! Helpers of the Criterion suite in `benches/`.
//!
//! [`read_bandwidth_share`] times a CPU op that streams memory beside the
//! read bandwidth measured right after each run, for the suite's ratio lines.
//!
//! [`with_nvml`] samples NVML (power, temperature, clocks, throttle reasons)
//! while a GPU benchmark runs and writes the summary next to Criterion's
//! output, as `target/criterion/<group>/nvml-<id>.json`, so a regression in
//! time can be read beside the clocks and power it ran at.

use std::path::PathBuf;
use std::time::Duration;

use trinity_measure::sensor::{NvmlSensor, Sampler, Sensor, SensorSummary};

/// Criterion's output directory: `$CARGO_TARGET_DIR/criterion`, or the
/// `criterion` folder of the target directory this bench binary lives in.
pub fn criterion_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("criterion");
    }
    // target/<profile>/deps/<bench binary>
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(|t| t.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// The GPU for the CUDA benches: `None` (and a line saying why) when it
/// cannot start; with `TRINITY_REQUIRE_GPU=1` that is a failure instead.
pub fn gpu(bench: &str) -> Option<std::sync::Arc<trinity::cuda::CudaBackend>> {
    match trinity::cuda::CudaBackend::new(0) {
        Ok(g) => Some(std::sync::Arc::new(g)),
        Err(e) if trinity::device::gpu_required() => {
            panic!("{bench}: TRINITY_REQUIRE_GPU=1 and the GPU cannot be used: {e}")
        }
        Err(e) => {
            println!("{bench}: CUDA benches skipped: {e}");
            None
        }
    }
}

/// Runs `bench` (a Criterion `bench_function` call) with NVML sampled every
/// 20 ms on the device with this UUID, then writes the summary; without NVML
/// it just runs `bench`.
pub fn with_nvml<T>(uuid: &str, group: &str, id: &str, bench: impl FnOnce() -> T) -> T {
    let Some(sensor) = NvmlSensor::open(uuid) else {
        return bench();
    };
    let source = sensor.power_source();
    let sampler = Sampler::start(Box::new(sensor), Duration::from_millis(20));
    let out = bench();
    let (readings, _) = sampler.finish();
    let summary = SensorSummary::of(&readings, source);
    let safe: String = id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let dir = criterion_dir().join(group);
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::write(
            dir.join(format!("nvml-{safe}.json")),
            serde_json::to_string_pretty(&summary).unwrap_or_default(),
        )
    });
    match written {
        Ok(()) if summary.throttled() => {
            println!(
                "{group}/{id}: THROTTLED in {} of {} NVML readings ({})",
                summary.throttled_samples,
                summary.samples,
                summary.throttle_reasons.join(", ")
            )
        }
        Ok(()) => {}
        Err(e) => println!("{group}/{id}: could not write the NVML summary: {e}"),
    }
    out
}

/// A memory-bound CPU op against the read bandwidth, from
/// [`read_bandwidth_share`].
#[derive(Debug, Clone, Copy)]
pub struct BandwidthShare {
    /// Median seconds of one run.
    pub secs: f64,
    /// Median over the runs of `bytes / secs / bandwidth`, each run against
    /// the bandwidth measured right after it.
    pub fraction: f64,
    /// Lowest and highest bandwidth measured, bytes per second.
    pub bandwidth: (f64, f64),
}

/// `runs` timings of `op` (which reads `bytes`), each followed by the read
/// bandwidth of all threads (`trinity::ceilings::read_bandwidth`, the best
/// of three passes over 512 MiB: a single pass right after the buffer is
/// written read low). On a shared machine the bandwidth moves by half within minutes, so
/// a fraction is only meaningful against its neighbour in time.
pub fn read_bandwidth_share(bytes: usize, runs: usize, op: &mut dyn FnMut()) -> BandwidthShare {
    let (mut times, mut fractions) = (Vec::new(), Vec::new());
    let mut bandwidth = (f64::INFINITY, 0f64);
    for _ in 0..runs.max(1) {
        let t = std::time::Instant::now();
        op();
        let secs = t.elapsed().as_secs_f64();
        let bw = trinity::ceilings::read_bandwidth(512 << 20, 3);
        times.push(secs);
        fractions.push(bytes as f64 / secs / bw);
        bandwidth = (bandwidth.0.min(bw), bandwidth.1.max(bw));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    BandwidthShare { secs: median(&mut times), fraction: median(&mut fractions), bandwidth }
}

impl std::fmt::Display for BandwidthShare {
    /// `4.10 ms (median), 95% of the read bandwidth (…)`, for a ratio line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} ms (median); {:.0}% of the read bandwidth (median of each run against the bandwidth measured right after it, {:.1}–{:.1} GB/s)",
            self.secs * 1e3,
            100.0 * self.fraction,
            self.bandwidth.0 / 1e9,
            self.bandwidth.1 / 1e9
        )
    }
}

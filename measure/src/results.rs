//! # The results schema
//!
//! What `trinity run` writes: one JSON file per run, atomically, under a new
//! name (`<date>-<device>-<git short sha>.json`, suffixed `-2`, `-3`, … if
//! taken), never overwriting an earlier result. [`RunResults::load`] refuses
//! files from a newer schema with a clear message and names the file on any
//! parse error. Changing a field's meaning means bumping [`SCHEMA_VERSION`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sensor::{EnergyWindow, SensorSummary};
use crate::stats::Summary;
use crate::timing::StopReason;
use trinity::BackendKind;
use trinity::info::DeviceInfo;
use trinity::verify::Check;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 2;
// v2 (runtime split): adds the headline's launch-overhead figures
// (`launch_host_us`, `gemv_launches_us`, `gemv_graph_us`) and the models'
// end-to-end throughput (`end_to_end_*`); v1 files read as v2 with those empty.

/// Errors reading or writing results.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// File system trouble.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not a results file.
    #[error("{path} is not a Trinity results file: {source}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// Written by a newer Trinity.
    #[error("{path} uses results schema v{found}; this Trinity reads v{SCHEMA_VERSION} (upgrade Trinity to read it)")]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
}

/// The machine the run happened on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Host name.
    pub hostname: String,
    /// Operating system and architecture.
    pub os: String,
    /// CPU model.
    pub cpu: String,
    /// Hardware threads the process may use.
    pub cpu_threads: usize,
}

/// One timed benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkResult {
    /// Unique name, e.g. `ternary_gemm/original-4096x4096/m16384`; `trinity compare` matches on it.
    pub name: String,
    /// The kernel or library call timed.
    pub kernel: String,
    /// Backend it ran on.
    pub backend: BackendKind,
    /// Shape, e.g. `16384×4096×4096`.
    pub shape: String,
    /// `hot` (same buffers back to back) or `cold` (inputs rotated through more memory than the L2).
    pub mode: String,
    /// What one unit of work is: `op` (multiply or add), `token`, `hash`, `byte`.
    pub unit: String,
    /// Units of work per iteration.
    pub work_per_iteration: f64,
    /// Seconds per iteration, summarized.
    pub time: Summary,
    /// The per-sample times, seconds per iteration.
    pub samples: Vec<f64>,
    /// Iterations per sample.
    pub iterations_per_sample: u64,
    /// Why sampling stopped.
    pub stopped_by: StopReason,
    /// Units of work per second at the median time.
    pub throughput: f64,
    /// Ratio to a ceiling or baseline measured in the same run, if any.
    pub ratio: Option<Ratio>,
    /// Sensors while it ran (GPU only).
    pub sensors: Option<SensorSummary>,
    /// Energy over a window of repeated runs (GPU with an energy counter only).
    pub energy: Option<EnergyWindow>,
}

/// A ratio to a ceiling or baseline of the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// What it is relative to (another benchmark's name, or `copy bandwidth`).
    pub to: String,
    /// The ratio: >1 means faster than the baseline (for throughput) or above the ceiling.
    pub value: f64,
}

/// One point of a noise-robustness curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NoisePoint {
    /// Corruption probability (of a weight, or of a stored bit), 0..1.
    pub probability: f64,
    /// Retention, percent: `max(0, cos(X·W, X·W′)) × 100`.
    pub retention_pct: f64,
    /// What the model predicts, percent.
    pub expected_pct: f64,
}

/// The noise-robustness curves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseRobustness {
    /// Weights replaced by fresh uniform trits with probability p (the original's definition).
    pub trit_replacement: Vec<NoisePoint>,
    /// Stored bits of the packed weights flipped with probability q (invalid code 0b11 decodes as 0).
    pub bit_flips: Vec<NoisePoint>,
    /// Shapes and sizes used.
    pub description: String,
}

/// Linear-stack throughput of one BitNet model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelThroughput {
    /// Model name.
    pub model: String,
    /// Tokens per prefill batch.
    pub prefill_tokens: usize,
    /// Prefill tokens per second through every ternary linear layer (attention excluded).
    pub prefill_tokens_per_s: f64,
    /// Decode tokens per second through every ternary linear layer (attention excluded).
    pub decode_tokens_per_s: f64,
    /// Packed weight bytes of the linear stack.
    pub weight_bytes: u64,
    /// Decode time bound from reading every packed weight once at the measured
    /// read ceiling ([`Headline::decode_ceiling`]), over the measured time.
    pub decode_fraction_of_bandwidth_bound: Option<f64>,
    /// The whole model (embedding, norms, RoPE, attention, lm_head included),
    /// random weights of these shapes: prompt tokens of the prefill measured.
    #[serde(default)]
    pub end_to_end_prefill_tokens: Option<usize>,
    /// The whole model's prefill, tokens/s: the mean of `trinity bench-model`'s
    /// three ppN repetitions (before 2026-12-07, the median of three timed apart from it).
    #[serde(default)]
    pub end_to_end_prefill_tokens_per_s: Option<f64>,
    /// The whole model's decode, tokens/s: the mean of bench-model's three tgN
    /// repetitions from an empty cache (before 2026-12-07, the median of three
    /// decodes after that prefill; greedy on the device since 2026-11-27's H200
    /// runs, the host's argmax before).
    #[serde(default)]
    pub end_to_end_decode_tokens_per_s: Option<f64>,
    /// The whole model's decode against its bound, bench-model's figure: every
    /// weight (lm_head in f32) and the KV cache read once per token, each
    /// repetition against the decode ceiling measured right after it.
    #[serde(default)]
    pub end_to_end_decode_fraction_of_bound: Option<f64>,
}

/// The report's headline figures (each also present, with its samples, in `benchmarks`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Headline {
    /// Our SGEMM 4096³, TFLOPS.
    pub sgemm_tflops: Option<f64>,
    /// The reference SGEMM 4096³ (cuBLAS on a GPU, matrixmultiply on the CPU), TFLOPS.
    pub reference_sgemm_tflops: Option<f64>,
    /// Ternary tokens per second, 32×512 tokens × 4096×4096 (quantize + GEMM).
    pub ternary_tokens_per_s: Option<f64>,
    /// Latency of that 32×512 batch, milliseconds.
    pub ternary_batch_latency_ms: Option<f64>,
    /// cuBLAS FP16 of that shape (what the original measured), tokens per second.
    pub cublas_fp16_tokens_per_s: Option<f64>,
    /// cuBLASLt INT8 (int32 accumulation) of that shape, tokens per second.
    #[serde(default)]
    pub cublaslt_int8_tokens_per_s: Option<f64>,
    /// Host time to enqueue one kernel launch (no synchronization), µs; GPU runs only.
    #[serde(default)]
    pub launch_host_us: Option<f64>,
    /// Decode-sized GEMV (cold weights) per launch as back-to-back launches, µs of GPU time.
    #[serde(default)]
    pub gemv_launches_us: Option<f64>,
    /// The same GEMVs replayed from a captured CUDA graph, µs of GPU time per GEMV.
    #[serde(default)]
    pub gemv_graph_us: Option<f64>,
    /// Ternary GEMV decode (M = 1, 4096×4096, cold) weight bandwidth, GB/s.
    pub gemv_bandwidth_gb_s: Option<f64>,
    /// Device-to-device copy bandwidth (read + write), GB/s.
    pub copy_bandwidth_gb_s: Option<f64>,
    /// All threads reading host memory, GB/s: the CPU's decode ceiling
    /// (CPU runs only; a CPU's memcpy is no read ceiling). Absent from files
    /// before 2026-12-07, whose decode fractions (CPU and GPU) used half the copy.
    #[serde(default)]
    pub read_bandwidth_gb_s: Option<f64>,
    /// Unpack-to-int8 bandwidth (read + write), GB/s.
    pub unpack_bandwidth_gb_s: Option<f64>,
    /// TriHash (Curl-P-81) proof-of-work hash rate, MH/s.
    pub trihash_mh_s: Option<f64>,
    /// Device memory used at the end of the run, bytes.
    pub memory_used_bytes: Option<u64>,
    /// Device memory total, bytes.
    pub memory_total_bytes: Option<u64>,
    /// Mean board power over the run's benchmarks, watts.
    pub mean_power_w: Option<f64>,
    /// Peak board power, watts.
    pub peak_power_w: Option<f64>,
    /// Peak temperature, °C.
    pub peak_temperature_c: Option<u32>,
    /// Energy per token of the 32×512 ternary batch, joules.
    pub joules_per_token: Option<f64>,
    /// Energy per TriHash hash, joules.
    pub joules_per_hash: Option<f64>,
    /// Cost of this run at `cost_per_hour`.
    pub cost_per_run: Option<f64>,
    /// Cost per million ternary tokens at the measured rate.
    pub cost_per_million_tokens: Option<f64>,
}

impl Headline {
    /// Bytes per second that bound decode, which only reads: the CPU's read
    /// bandwidth, else (a GPU, whose reads and writes share the memory's
    /// bandwidth) the device copy's read + write.
    pub fn decode_ceiling(&self) -> Option<f64> {
        self.read_bandwidth_gb_s.or(self.copy_bandwidth_gb_s).map(|gb| gb * 1e9)
    }
}

/// One `trinity run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Trinity's version.
    pub tool_version: String,
    /// Git commit the binary was built from (short sha), if known.
    pub git_commit: Option<String>,
    /// Whether that tree had uncommitted changes.
    pub git_dirty: Option<bool>,
    /// When the run started (RFC 3339, UTC).
    pub date: String,
    /// Wall time of the whole run, seconds.
    pub duration_s: f64,
    /// The host.
    pub host: HostInfo,
    /// The backend measured.
    pub backend: BackendKind,
    /// The device (GPU facts; empty on the CPU backend).
    pub device: DeviceInfo,
    /// Price per hour given with `--cost-per-hour`.
    pub cost_per_hour: Option<f64>,
    /// Whether every kernel matched the CPU reference before timing.
    pub verification_passed: bool,
    /// Every verification check.
    pub verification: Vec<Check>,
    /// Every benchmark, with samples.
    pub benchmarks: Vec<BenchmarkResult>,
    /// Sensors over the whole run (GPU only).
    pub sensors: Option<SensorSummary>,
    /// Noise robustness.
    pub noise_robustness: Option<NoiseRobustness>,
    /// BitNet linear-stack throughput.
    pub models: Vec<ModelThroughput>,
    /// Headline figures.
    pub headline: Headline,
    /// Anything the reader should know (e.g. "no GPU: CPU backend").
    pub notes: Vec<String>,
}

impl RunResults {
    /// Reads a results file.
    pub fn load(path: &Path) -> Result<RunResults, ResultsError> {
        let text = std::fs::read_to_string(path).map_err(|source| ResultsError::Io {
            what: "reading",
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses results text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<RunResults, ResultsError> {
        let malformed = |source| ResultsError::Malformed { path: path.to_owned(), source };
        let value: serde_json::Value = serde_json::from_str(text).map_err(malformed)?;
        if let Some(found) = value.get("schema_version").and_then(|v| v.as_u64())
            && found > SCHEMA_VERSION as u64
        {
            return Err(ResultsError::NewerSchema { path: path.to_owned(), found: found as u32 });
        }
        serde_json::from_value(value).map_err(malformed)
    }

    /// Looks a benchmark up by name.
    pub fn benchmark(&self, name: &str) -> Option<&BenchmarkResult> {
        self.benchmarks.iter().find(|b| b.name == name)
    }

    /// The file name this run gets: `<date>-<device>-<sha>.json`.
    pub fn file_stem(&self) -> String {
        let date = self.date.get(..10).unwrap_or("undated");
        let device = self.device.name.clone().unwrap_or_else(|| format!("{}-{}", self.backend, self.host.hostname));
        let slug: String = device
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .collect::<String>()
            .split('-')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("-");
        format!("{date}-{slug}-{}", self.git_commit.as_deref().unwrap_or("nogit"))
    }

    /// Writes the results under `dir` atomically, never overwriting: returns the path.
    pub fn write_new(&self, dir: &Path) -> Result<PathBuf, ResultsError> {
        let io = |what, path: &Path| {
            let path = path.to_owned();
            move |source| ResultsError::Io { what, path, source }
        };
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let text = serde_json::to_string_pretty(self).expect("results serialize");
        let tmp = dir.join(format!(".{}.{}.tmp", self.file_stem(), std::process::id()));
        std::fs::write(&tmp, text + "\n").map_err(io("writing", &tmp))?;
        let stem = self.file_stem();
        for k in 1.. {
            let name = if k == 1 { format!("{stem}.json") } else { format!("{stem}-{k}.json") };
            let path = dir.join(name);
            // A hard link fails if the name exists: never overwrites, and the
            // file appears complete or not at all.
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Ok(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io("creating", &path)(e)),
            }
        }
        unreachable!("the suffix loop only ends by returning")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small but complete results value.
    pub(crate) fn sample() -> RunResults {
        let time = Summary::of(&[1e-3, 1.1e-3, 0.9e-3, 1e-3, 1.05e-3]).unwrap();
        RunResults {
            schema_version: SCHEMA_VERSION,
            tool_version: "0.1.0".into(),
            git_commit: Some("abc1234".into()),
            git_dirty: Some(false),
            date: "2026-11-26T10:00:00Z".into(),
            duration_s: 12.5,
            host: HostInfo { hostname: "box".into(), os: "linux x86_64".into(), cpu: "EPYC".into(), cpu_threads: 2 },
            backend: BackendKind::Cpu,
            device: DeviceInfo::default(),
            cost_per_hour: Some(0.59),
            verification_passed: true,
            verification: vec![Check {
                kernel: "unpack_i8".into(),
                shape: "1×1".into(),
                passed: true,
                detail: String::new(),
            }],
            benchmarks: vec![BenchmarkResult {
                name: "ternary_gemm/original-4096x4096/m512".into(),
                kernel: "ternary_gemm".into(),
                backend: BackendKind::Cpu,
                shape: "512×4096×4096".into(),
                mode: "hot".into(),
                unit: "token".into(),
                work_per_iteration: 512.0,
                time,
                samples: vec![1e-3, 1.1e-3, 0.9e-3, 1e-3, 1.05e-3],
                iterations_per_sample: 1,
                stopped_by: StopReason::Spread,
                throughput: 512e3,
                ratio: Some(Ratio { to: "reference".into(), value: 1.5 }),
                sensors: None,
                energy: None,
            }],
            sensors: None,
            noise_robustness: Some(NoiseRobustness {
                trit_replacement: vec![NoisePoint { probability: 0.1, retention_pct: 90.1, expected_pct: 90.0 }],
                bit_flips: vec![],
                description: "test".into(),
            }),
            models: vec![],
            headline: Headline { ternary_tokens_per_s: Some(512e3), ..Default::default() },
            notes: vec!["no GPU".into()],
        }
    }

    #[test]
    fn decode_ceiling_is_the_read_bandwidth_else_the_whole_copy() {
        // (read GB/s, copy GB/s) → bytes/s: a CPU run has its read benchmark;
        // a GPU's reads and writes share the memory, so its copy's read + write
        // rate is a read stream's ceiling (not half of it).
        for (read, copy, want) in [
            (Some(22.0), Some(21.9), Some(22.0e9)),
            (None, Some(4208.0), Some(4208.0e9)),
            (Some(22.0), None, Some(22.0e9)),
            (None, None, None),
        ] {
            let h = Headline { read_bandwidth_gb_s: read, copy_bandwidth_gb_s: copy, ..Headline::default() };
            assert_eq!(h.decode_ceiling(), want, "read {read:?}, copy {copy:?}");
        }
    }

    #[test]
    fn results_round_trip_through_json() {
        let r = sample();
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(RunResults::parse(&text, Path::new("x.json")).unwrap(), r);
    }

    #[test]
    fn newer_schemas_are_refused_clearly() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["schema_version"] = 3.into();
        let err = RunResults::parse(&v.to_string(), Path::new("results/new.json")).unwrap_err();
        assert!(err.to_string().contains("results/new.json uses results schema v3; this Trinity reads v2"), "{err}");
    }

    #[test]
    fn v1_files_still_read() {
        // A v1 file has no launch-overhead fields; the committed CPU run is one.
        let mut v = serde_json::to_value(sample()).unwrap();
        v["schema_version"] = 1.into();
        for key in ["launch_host_us", "gemv_launches_us", "gemv_graph_us"] {
            v["headline"].as_object_mut().unwrap().remove(key);
        }
        let r = RunResults::parse(&v.to_string(), Path::new("old.json")).unwrap();
        assert_eq!(r.schema_version, 1);
        assert_eq!(r.headline.gemv_graph_us, None);
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../results");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                RunResults::load(&path).unwrap();
            }
        }
    }

    #[test]
    fn malformed_files_name_the_file() {
        let err = RunResults::parse("{\"schema_version\": 1}", Path::new("bad.json")).unwrap_err();
        assert!(err.to_string().starts_with("bad.json is not a Trinity results file"), "{err}");
        let err = RunResults::parse("not json", Path::new("junk.json")).unwrap_err();
        assert!(err.to_string().starts_with("junk.json is not"), "{err}");
    }

    #[test]
    fn writing_never_overwrites() {
        let dir = std::env::temp_dir().join(format!("trinity-results-{}", std::process::id()));
        let r = sample();
        let a = r.write_new(&dir).unwrap();
        let b = r.write_new(&dir).unwrap();
        assert_ne!(a, b);
        assert!(a.ends_with("2026-11-26-cpu-box-abc1234.json"), "{}", a.display());
        assert!(b.ends_with("2026-11-26-cpu-box-abc1234-2.json"), "{}", b.display());
        assert_eq!(RunResults::load(&b).unwrap(), r);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "no temporary file left");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

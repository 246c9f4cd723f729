//! # `trinity run`: the whole report in one command
//!
//! 1. Device facts; the backend (CUDA when a GPU is present, else the CPU,
//!    which the report says at the top).
//! 2. Every kernel verified against the CPU reference on fresh inputs: a
//!    wrong kernel has no speed, so a failure stops the run before timing.
//! 3. Benchmarks with the timing core (GPU: CUDA events, NVML sampled around
//!    each, energy over windows of seconds): copy bandwidth (the ceiling),
//!    SGEMM 4096³ (ours and the reference), the original's ternary batch
//!    (32×512 tokens × 4096², quantize + GEMM; cuBLAS FP16 of that shape
//!    beside it), GEMV decode hot and cold, unpack, TriHash.
//! 4. Noise robustness and the BitNet linear stacks.
//! 5. Headline, Markdown on stdout, JSON under `results/`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::models::{Input, MODELS, ModelConfig};
use super::noise;
use super::results::{
    BenchmarkResult, Headline, HostInfo, ModelThroughput, NoiseRobustness, Ratio, RunResults, SCHEMA_VERSION,
};
use super::sensor::{EnergyWindow, NvmlSensor, Sampler, Sensor, SensorReading, SensorSummary, energy_window};
use super::timing::{Measurement, TimingConfig, measure, wall_clock};
use crate::backend::{Backend, BackendKind};
use crate::cpu::CpuBackend;
use crate::cuda::{CudaBackend, DeviceActivations, DeviceWeights};
use crate::error::{KernelError, KernelResult};
use crate::matmul::{Activations, Precision};
use crate::ternary::DeviceTernary;
use crate::trihash;
use crate::verify;

/// Options of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Backend; `None` picks CUDA when present, else the CPU.
    pub backend: Option<BackendKind>,
    /// Price per hour, for the cost figures.
    pub cost_per_hour: Option<f64>,
    /// Where results go.
    pub results_dir: PathBuf,
    /// Smaller shapes and fewer samples (smoke tests; the report says so).
    pub quick: bool,
    /// Seed of every random input.
    pub seed: u64,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A kernel or driver call failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The GPU was asked for and is unusable.
    #[error("the CUDA backend is unavailable: {0}")]
    Gpu(#[from] crate::cuda::GpuError),
    /// Results could not be written.
    #[error(transparent)]
    Results(#[from] super::results::ResultsError),
    /// A kernel did not match the reference; nothing was timed.
    #[error("verification failed ({failed} of {total} checks); nothing was timed. Results with the failures: {path}")]
    Verification {
        /// Failed checks.
        failed: usize,
        /// All checks.
        total: usize,
        /// The results file written.
        path: String,
    },
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutput {
    /// The results.
    pub results: RunResults,
    /// The JSON file written.
    pub json: PathBuf,
    /// The Markdown report written beside it.
    pub markdown: PathBuf,
}

/// Progress reporting (indicatif in the binary, nothing in tests).
pub trait Progress {
    /// A new step.
    fn step(&self, message: &str);
}

/// No progress output.
#[derive(Debug)]
pub struct Silent;
impl Progress for Silent {
    fn step(&self, _: &str) {}
}

fn host_info() -> HostInfo {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    HostInfo {
        hostname: std::fs::read_to_string("/etc/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into()),
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        cpu,
        cpu_threads: rayon::current_num_threads(),
    }
}

/// Runs benchmarks and collects their results; holds the GPU (if any), its
/// sensor and cuBLAS handle.
struct Bencher {
    gpu: Option<Arc<CudaBackend>>,
    blas: Option<Arc<cudarc::cublas::CudaBlas>>,
    sensor: Option<Box<dyn Sensor>>,
    cfg: TimingConfig,
    energy_window: Duration,
    results: Vec<BenchmarkResult>,
    readings: Vec<SensorReading>,
}

/// One benchmark's description.
struct Spec<'a> {
    name: String,
    kernel: &'a str,
    shape: String,
    mode: &'a str,
    unit: &'a str,
    work: f64,
}

impl Bencher {
    fn backend(&self) -> BackendKind {
        if self.gpu.is_some() { BackendKind::Cuda } else { BackendKind::Cpu }
    }

    fn record(
        &mut self,
        spec: Spec<'_>,
        m: Measurement,
        sensors: Option<SensorSummary>,
        energy: Option<EnergyWindow>,
    ) -> usize {
        self.results.push(BenchmarkResult {
            name: spec.name,
            kernel: spec.kernel.to_owned(),
            backend: self.backend(),
            shape: spec.shape,
            mode: spec.mode.to_owned(),
            unit: spec.unit.to_owned(),
            work_per_iteration: spec.work,
            throughput: spec.work / m.summary.median,
            time: m.summary,
            samples: m.samples,
            iterations_per_sample: m.iterations_per_sample,
            stopped_by: m.stopped_by,
            ratio: None,
            sensors,
            energy,
        });
        self.results.len() - 1
    }

    /// Times CPU work with the wall clock.
    fn cpu(&mut self, spec: Spec<'_>, work: impl FnMut() -> KernelResult<()>) -> KernelResult<usize> {
        let m = measure(&self.cfg, wall_clock(work))?;
        Ok(self.record(spec, m, None, None))
    }

    /// Times GPU work with CUDA events, NVML sampled meanwhile; with
    /// `energy`, also runs it for a window of seconds against the energy counter.
    fn gpu(
        &mut self,
        gpu: &CudaBackend,
        spec: Spec<'_>,
        energy: bool,
        mut work: impl FnMut() -> KernelResult<()>,
    ) -> KernelResult<usize> {
        let sampler = self.sensor.take().map(|s| Sampler::start(s, Duration::from_millis(20)));
        let m = measure(&self.cfg, |iters| gpu.time(iters, &mut work));
        let (mut sensors, mut energy_w) = (None, None);
        if let Some(sampler) = sampler {
            let (readings, mut sensor) = sampler.finish();
            sensors = Some(SensorSummary::of(&readings, sensor.power_source()));
            self.readings.extend(readings);
            if energy && let Ok(m) = &m {
                // Batches of about 50 ms, repeated for the whole window.
                let batch = ((0.05 / m.summary.median).ceil() as u64).max(1);
                energy_w =
                    energy_window(&mut *sensor, self.energy_window, || gpu.time(batch, &mut work).map(|_| batch))?;
            }
            self.sensor = Some(sensor);
        }
        Ok(self.record(spec, m?, sensors, energy_w))
    }
}

fn spec<'a>(
    name: impl Into<String>,
    kernel: &'a str,
    shape: impl Into<String>,
    mode: &'a str,
    unit: &'a str,
    work: f64,
) -> Spec<'a> {
    Spec { name: name.into(), kernel, shape: shape.into(), mode, unit, work }
}

fn ratio(b: &mut Bencher, i: usize, to: &str, value: f64) {
    b.results[i].ratio = Some(Ratio { to: to.to_owned(), value });
}

fn throughput(b: &Bencher, i: usize) -> f64 {
    b.results[i].throughput
}

/// Runs everything; see the module docs.
pub fn run(opts: &RunOptions, progress: &dyn Progress) -> Result<RunOutput, RunError> {
    let started = Instant::now();
    let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    progress.step("device facts");
    let device = crate::info::gather(0);
    let mut notes = Vec::new();
    let want_gpu = opts.backend != Some(BackendKind::Cpu);
    let gpu = if want_gpu {
        match CudaBackend::new(0) {
            Ok(g) => Some(g),
            Err(e) if opts.backend.is_none() => {
                notes.push(format!("No GPU ({e}): this run measured the CPU backend."));
                None
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        notes.push("CPU backend requested: no GPU figures in this run.".into());
        None
    };
    if opts.quick {
        notes.push("Quick mode: smaller shapes and fewer samples; not comparable with full runs.".into());
    }
    let backend: &dyn Backend = match &gpu {
        Some(g) => g,
        None => &CpuBackend,
    };
    let mut rng = StdRng::seed_from_u64(opts.seed);

    progress.step("verifying every kernel against the CPU reference");
    let plan = match (&gpu, opts.quick) {
        (Some(_), false) => verify::Plan::full(),
        (None, false) => verify::Plan { sgemm: vec![(64, 64, 64), (1000, 999, 1001)], ..verify::Plan::full() },
        (_, true) => verify::Plan::small(),
    };
    let verification = verify::verify(backend, &plan, rng.random());
    let verification_passed = verification.iter().all(|c| c.passed);
    let mut results = RunResults {
        schema_version: SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        git_commit: option_env!("TRINITY_GIT_COMMIT").map(str::to_owned),
        git_dirty: option_env!("TRINITY_GIT_DIRTY").map(|d| d == "1"),
        date,
        duration_s: 0.0,
        host: host_info(),
        backend: backend.kind(),
        device,
        cost_per_hour: opts.cost_per_hour,
        verification_passed,
        verification,
        benchmarks: vec![],
        sensors: None,
        noise_robustness: None,
        models: vec![],
        headline: Headline::default(),
        notes,
    };
    if !verification_passed {
        results.duration_s = started.elapsed().as_secs_f64();
        let path = results.write_new(&opts.results_dir)?;
        let failed = results.verification.iter().filter(|c| !c.passed).count();
        return Err(RunError::Verification {
            failed,
            total: results.verification.len(),
            path: path.display().to_string(),
        });
    }

    let cfg = if opts.quick { TimingConfig::quick() } else { TimingConfig::standard() };
    let blas = gpu.as_ref().and_then(|g| match g.cublas() {
        Ok(b) => Some(Arc::new(b)),
        Err(e) => {
            results.notes.push(format!("No cuBLAS baselines in this run: {e}"));
            None
        }
    });
    let sensor = gpu.as_ref().and_then(|_| NvmlSensor::open(0)).map(|s| Box::new(s) as Box<dyn Sensor>);
    if gpu.is_some() && sensor.is_none() {
        results.notes.push("NVML unavailable: no power, temperature or energy figures.".into());
    }
    let mut bench = Bencher {
        gpu: gpu.map(Arc::new),
        blas,
        sensor,
        cfg,
        energy_window: Duration::from_secs(if opts.quick { 1 } else { 3 }),
        results: vec![],
        readings: vec![],
    };
    let h = benchmarks(&mut bench, opts, &mut rng, progress, &mut results.notes)?;
    results.headline = h;

    progress.step("noise robustness");
    let (size, rows, flip_rows) = if opts.quick { (256, 20, 4) } else { (1024, 100, 64) };
    let shapes: &[(usize, usize)] = if opts.quick { &[(256, 512)] } else { &noise::BIT_FLIP_SHAPES };
    let gpu = bench.gpu.clone();
    let backend: &dyn Backend = match &gpu {
        Some(g) => g.as_ref(),
        None => &CpuBackend,
    };
    results.noise_robustness = Some(NoiseRobustness {
        trit_replacement: noise::trit_replacement(backend, &mut rng, size, rows)?,
        bit_flips: noise::bit_flips(backend, &mut rng, shapes, flip_rows)?,
        description: format!(
            "Trit replacement: W {size}×{size} uniform trits, X {rows}×{size} N(0,1). Bit flips: every stored bit of the packed weights flipped with probability q (invalid code → 0), shapes {shapes:?}, {flip_rows} tokens."
        ),
    });

    progress.step("BitNet linear stacks");
    results.models = model_stacks(&mut bench, opts, &mut rng, progress)?;

    if !bench.readings.is_empty() {
        let source = bench.sensor.as_ref().map_or(super::sensor::PowerSource::None, |s| s.power_source());
        let s = SensorSummary::of(&bench.readings, source);
        results.headline.mean_power_w = s.mean_power_w;
        results.headline.peak_power_w = s.peak_power_w;
        results.headline.peak_temperature_c = s.peak_temperature_c;
        results.sensors = Some(s);
    }
    let end_info = crate::info::gather(0);
    results.headline.memory_used_bytes = end_info.memory_used_bytes;
    results.headline.memory_total_bytes = end_info.memory_total_bytes;
    results.benchmarks = bench.results;
    results.duration_s = started.elapsed().as_secs_f64();
    if let Some(c) = opts.cost_per_hour {
        results.headline.cost_per_run = Some(c * results.duration_s / 3600.0);
        results.headline.cost_per_million_tokens =
            results.headline.ternary_tokens_per_s.map(|t| c / (t * 3600.0) * 1e6);
    }
    let json = results.write_new(&opts.results_dir)?;
    let markdown = json.with_extension("md");
    let md = super::report::run_markdown(&results);
    std::fs::write(&markdown, md).map_err(|source| super::results::ResultsError::Io {
        what: "writing",
        path: markdown.clone(),
        source,
    })?;
    Ok(RunOutput { results, json, markdown })
}

/// The benchmark section; returns the headline so far.
fn benchmarks(
    b: &mut Bencher,
    opts: &RunOptions,
    rng: &mut StdRng,
    progress: &dyn Progress,
    notes: &mut Vec<String>,
) -> KernelResult<Headline> {
    let mut h = Headline::default();
    let q = opts.quick;
    let n = if q { 512 } else { 4096 };
    let tokens = if q { 256 } else { 32 * 512 };
    let (gpu, blas) = (b.gpu.clone(), b.blas.clone());

    progress.step("copy bandwidth (the ceiling)");
    let copy_bytes = if q { 64 << 20 } else { 1 << 30 };
    let copy_spec =
        |name: &str, kernel| spec(name, kernel, format!("{copy_bytes} B"), "cold", "byte", 2.0 * copy_bytes as f64);
    let copy_i = match &gpu {
        Some(gpu) => {
            let src = gpu.zeros::<u8>(copy_bytes, "alloc")?;
            let mut dst = gpu.zeros::<u8>(copy_bytes, "alloc")?;
            b.gpu(gpu, copy_spec("copy/device-to-device", "memcpy_dtod"), false, || gpu.copy(&src, &mut dst))?
        }
        None => {
            let src = vec![1u8; copy_bytes];
            let mut dst = vec![0u8; copy_bytes];
            b.cpu(copy_spec("copy/host-memcpy", "memcpy"), || {
                dst.copy_from_slice(&src);
                std::hint::black_box(&dst);
                Ok(())
            })?
        }
    };
    let copy_bw = throughput(b, copy_i);
    let copy_name = b.results[copy_i].name.clone();
    h.copy_bandwidth_gb_s = Some(copy_bw / 1e9);

    progress.step("SGEMM 4096³, ours and the reference");
    let a: Vec<f32> = (0..n * n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let flops = 2.0 * (n * n * n) as f64;
    let shape3 = format!("{n}×{n}×{n}");
    let sg = |name: &str, kernel| spec(format!("{name}/{shape3}"), kernel, shape3.clone(), "hot", "flop", flops);
    match &gpu {
        Some(gpu) => {
            let da = gpu.upload(&a, "upload")?;
            let mut dc = gpu.zeros::<f32>(n * n, "alloc")?;
            let ours = b.gpu(gpu, sg("sgemm", "sgemm"), false, || gpu.launch_sgemm(&da, &da, &mut dc, n, n, n))?;
            h.sgemm_tflops = Some(throughput(b, ours) / 1e12);
            if let Some(blas) = &blas {
                let r = b.gpu(gpu, sg("cublas_sgemm", "cublasSgemm"), false, || {
                    gpu.cublas_gemm(blas, &da, &da, &mut dc, n, n, n)
                })?;
                h.reference_sgemm_tflops = Some(throughput(b, r) / 1e12);
                let v = throughput(b, ours) / throughput(b, r);
                let to = b.results[r].name.clone();
                ratio(b, ours, &to, v);
            }
        }
        None => {
            // Our SGEMM is a GPU kernel; on the CPU the reference library is the figure.
            let r = b.cpu(sg("cpu_sgemm", "matrixmultiply::sgemm"), || CpuBackend.sgemm(&a, &a, n, n, n).map(drop))?;
            h.reference_sgemm_tflops = Some(throughput(b, r) / 1e12);
        }
    }

    progress.step("ternary batch: 32×512 tokens × 4096², and cuBLAS FP16 of that shape");
    let x: Vec<f32> = (0..tokens * n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let w = DeviceTernary::random(n, n, 0.5, rng);
    let shape = format!("{tokens}×{n}×{n}");
    let tb = |name: &str, kernel| spec(format!("{name}/{shape}"), kernel, shape.clone(), "hot", "token", tokens as f64);
    let batch = match &gpu {
        Some(gpu) => {
            let dx = gpu.upload(&x, "upload")?;
            let dw = gpu.upload_weights(&w)?;
            let mut qa = gpu.alloc_activations(tokens, n)?;
            let mut y = gpu.zeros::<f32>(tokens * n, "alloc")?;
            let i = b.gpu(gpu, tb("ternary_batch", "quantize_f32 + ternary_gemm_f32"), true, || {
                gpu.launch_quantize(Some(&dx), None, &mut qa)?;
                gpu.launch_ternary(true, &qa, &dw, Precision::F32, &mut y)
            })?;
            if let Some(blas) = &blas {
                let a16 = gpu.upload(&x.iter().map(|&v| half::f16::from_f32(v)).collect::<Vec<_>>(), "upload")?;
                let b16 = gpu.upload(&vec![half::f16::from_f32(1.0); n * n], "upload")?;
                let mut c16 = gpu.zeros::<half::f16>(tokens * n, "alloc")?;
                let f = b.gpu(gpu, tb("cublas_fp16", "cublasGemmEx FP16"), false, || {
                    gpu.cublas_gemm(blas, &a16, &b16, &mut c16, tokens, n, n)
                })?;
                h.cublas_fp16_tokens_per_s = Some(throughput(b, f));
                let v = throughput(b, i) / throughput(b, f);
                let to = b.results[f].name.clone();
                ratio(b, i, &to, v);
            }
            match crate::cublaslt_int8::Int8Gemm::new(gpu, tokens, n, n) {
                Ok(plan) => {
                    let a8 = gpu.upload(
                        &(0..tokens * n).map(|_| rng.random_range(-127i8..=127)).collect::<Vec<_>>(),
                        "upload",
                    )?;
                    let w8 = gpu.upload(&CpuBackend.unpack_i8(&w.to_packed())?, "upload")?;
                    let mut c32 = gpu.zeros::<i32>(tokens * n, "alloc")?;
                    let l =
                        b.gpu(gpu, tb("cublaslt_int8", "cublasLtMatmul INT8"), false, || plan.run(&a8, &w8, &mut c32))?;
                    h.cublaslt_int8_tokens_per_s = Some(throughput(b, l));
                }
                Err(e) => notes.push(format!("No cuBLASLt INT8 baseline: {e}")),
            }
            i
        }
        None => b.cpu(tb("ternary_batch", "quantize + ternary_gemm (cpu)"), || {
            let qa = CpuBackend.quantize(Activations::F32(&x), tokens, n)?;
            CpuBackend.ternary_gemm(&qa, &w, Precision::F32).map(drop)
        })?,
    };
    h.ternary_tokens_per_s = Some(throughput(b, batch));
    h.ternary_batch_latency_ms = Some(b.results[batch].time.median * 1e3);
    h.joules_per_token = b.results[batch].energy.map(|e| e.joules_per_iteration() / tokens as f64);

    progress.step("ternary GEMV decode, hot and cold");
    // Cold: rotate through copies whose total exceeds the L2 (50 MB on an H100) and the CPU's L3.
    let copies = if q { 4 } else { 24 };
    let ws: Vec<DeviceTernary> = (0..copies).map(|_| DeviceTernary::random(n, n, 0.5, rng)).collect();
    let x1: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let q1 = CpuBackend.quantize(Activations::F32(&x1), 1, n)?;
    let bytes = (n * ws[0].k_pad() / 4) as f64;
    let gshape = format!("1×{n}×{n}");
    let gv = |mode: &'static str, kernel| {
        spec(format!("ternary_gemv/{gshape}/{mode}"), kernel, gshape.clone(), mode, "byte", bytes)
    };
    let mut turn = 0;
    let (hot, cold) = match &gpu {
        Some(gpu) => {
            let dws: Vec<DeviceWeights> = ws.iter().map(|w| gpu.upload_weights(w)).collect::<KernelResult<_>>()?;
            let dq: DeviceActivations = gpu.upload_activations(&q1)?;
            let mut y = gpu.zeros::<f32>(n, "alloc")?;
            let hot = b.gpu(gpu, gv("hot", "ternary_gemv_f32"), false, || {
                gpu.launch_ternary(false, &dq, &dws[0], Precision::F32, &mut y)
            })?;
            let cold = b.gpu(gpu, gv("cold", "ternary_gemv_f32"), false, || {
                turn = (turn + 1) % dws.len();
                gpu.launch_ternary(false, &dq, &dws[turn], Precision::F32, &mut y)
            })?;
            (hot, cold)
        }
        None => {
            let hot = b.cpu(gv("hot", "ternary_gemv (cpu)"), || {
                CpuBackend.ternary_gemv(&q1, &ws[0], Precision::F32).map(drop)
            })?;
            let cold = b.cpu(gv("cold", "ternary_gemv (cpu)"), || {
                turn = (turn + 1) % ws.len();
                CpuBackend.ternary_gemv(&q1, &ws[turn], Precision::F32).map(drop)
            })?;
            (hot, cold)
        }
    };
    h.gemv_bandwidth_gb_s = Some(throughput(b, cold) / 1e9);
    // The GEMV only reads its weights: compare with the read half of the copy's read + write.
    for i in [hot, cold] {
        let v = throughput(b, i) / (copy_bw / 2.0);
        ratio(b, i, &format!("{copy_name} (read half)"), v);
    }

    progress.step("unpack bandwidth");
    let packed = verify::random_weights(rng, n, n);
    let ubytes = (packed.packed_bytes() + n * n) as f64;
    let ushape = format!("{n}×{n}");
    let us = |kernel| spec(format!("unpack_i8/{ushape}"), kernel, ushape.clone(), "hot", "byte", ubytes);
    let unpack = match &gpu {
        Some(gpu) => {
            let words = gpu.upload(packed.words(), "upload")?;
            let mut out = gpu.zeros::<i8>(n * n, "alloc")?;
            b.gpu(gpu, us("unpack_i8"), false, || gpu.launch_unpack_i8(&words, &mut out, n, n))?
        }
        None => b.cpu(us("unpack_i8 (cpu)"), || CpuBackend.unpack_i8(&packed).map(drop))?,
    };
    h.unpack_bandwidth_gb_s = Some(throughput(b, unpack) / 1e9);
    let v = throughput(b, unpack) / copy_bw;
    ratio(b, unpack, &copy_name, v);

    progress.step("TriHash proof-of-work hash rate");
    let pow = trihash::Pow::random(rng);
    let mwm = 243; // never satisfied: every candidate is hashed
    let th = match &gpu {
        Some(gpu) => {
            let base = gpu.upload(pow.base(), "upload")?;
            let mut hits = gpu.zeros::<u32>(1 + 1024, "alloc")?;
            let batches = gpu.trihash_blocks() * if q { 2 } else { 32 };
            let work = batches as f64 * 128.0;
            let s = spec("trihash_pow/mwm243", "trihash_pow", format!("{batches} batches × 128"), "hot", "hash", work);
            b.gpu(gpu, s, true, || gpu.launch_trihash_pow(&base, 0, batches, mwm, &mut hits))?
        }
        None => {
            let batches =
                (trihash::sliced::BATCHES_PER_UNIT * rayon::current_num_threads() * if q { 1 } else { 8 }) as u64;
            let s = spec(
                "trihash_pow/mwm243",
                "trihash sliced (cpu)",
                format!("{batches} batches × 128"),
                "hot",
                "hash",
                batches as f64 * 128.0,
            );
            b.cpu(s, || {
                std::hint::black_box(trihash::sliced::search(pow.base(), 0, batches, mwm));
                Ok(())
            })?
        }
    };
    h.trihash_mh_s = Some(throughput(b, th) / 1e6);
    h.joules_per_hash = b.results[th].energy.map(|e| e.joules_per_iteration() / b.results[th].work_per_iteration);
    Ok(h)
}

/// The linear stacks of the BitNet models (attention excluded).
fn model_stacks(
    b: &mut Bencher,
    opts: &RunOptions,
    rng: &mut StdRng,
    progress: &dyn Progress,
) -> KernelResult<Vec<ModelThroughput>> {
    let copy_bw = b.results.first().map(|r| r.throughput);
    let gpu = b.gpu.clone();
    let models: Vec<ModelConfig> = if opts.quick {
        vec![ModelConfig { name: "tiny (quick mode)", hidden: 256, ffn: 512, layers: 2, kv_dim: 64 }]
    } else {
        MODELS.to_vec()
    };
    let mut out = Vec::new();
    for model in models {
        progress.step(&format!("linear stack of {}", model.name));
        let prefill = match (&gpu, opts.quick) {
            (_, true) => 64,
            (Some(_), false) => 32 * 512,
            (None, false) => 512,
        };
        // Every layer has its own weights, so decode streams the whole stack.
        let layers: Vec<Vec<DeviceTernary>> = (0..model.layers)
            .map(|_| model.linears().iter().map(|l| DeviceTernary::random(l.n, l.k, 0.5, rng)).collect())
            .collect();
        let device_layers: Option<Vec<Vec<DeviceWeights>>> = match &gpu {
            Some(g) => Some(
                layers
                    .iter()
                    .map(|l| l.iter().map(|w| g.upload_weights(w)).collect::<KernelResult<_>>())
                    .collect::<KernelResult<_>>()?,
            ),
            None => None,
        };
        let saved = b.cfg;
        b.cfg = TimingConfig { min_samples: 3, time_cap: Duration::from_secs(2), ..saved };
        let mut tps = [0.0; 2];
        for (slot, m) in [prefill, 1].into_iter().enumerate() {
            let name = format!("linear_stack/{}/m{m}", model.name);
            let s = spec(
                name,
                "quantize + ternary (linear stack)",
                format!("{m} tokens × {} layers", model.layers),
                "cold",
                "token",
                m as f64,
            );
            let xh: Vec<f32> = (0..m * model.hidden).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let xf: Vec<f32> = (0..m * model.ffn).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let i = match (&gpu, &device_layers) {
                (Some(gpu), Some(dl)) => {
                    let (dxh, dxf) = (gpu.upload(&xh, "upload")?, gpu.upload(&xf, "upload")?);
                    let (mut qh, mut qf) =
                        (gpu.alloc_activations(m, model.hidden)?, gpu.alloc_activations(m, model.ffn)?);
                    let mut ys: Vec<cudarc::driver::CudaSlice<f32>> = model
                        .linears()
                        .iter()
                        .map(|l| gpu.zeros::<f32>(m * l.n, "alloc"))
                        .collect::<KernelResult<_>>()?;
                    b.gpu(gpu, s, false, || {
                        for layer in dl {
                            let mut last = None;
                            for ((l, w), y) in model.linears().iter().zip(layer).zip(ys.iter_mut()) {
                                let ffn_mid = l.input == Input::FfnMid;
                                if last != Some(l.input) {
                                    if ffn_mid {
                                        gpu.launch_quantize(Some(&dxf), None, &mut qf)?;
                                    } else {
                                        gpu.launch_quantize(Some(&dxh), None, &mut qh)?;
                                    }
                                    last = Some(l.input);
                                }
                                gpu.launch_ternary(m > 8, if ffn_mid { &qf } else { &qh }, w, Precision::F32, y)?;
                            }
                        }
                        Ok(())
                    })?
                }
                _ => b.cpu(s, || {
                    for layer in &layers {
                        let mut last = None;
                        let mut qa = None;
                        for (l, w) in model.linears().iter().zip(layer) {
                            if last != Some(l.input) {
                                let (x, k) =
                                    if l.input == Input::FfnMid { (&xf, model.ffn) } else { (&xh, model.hidden) };
                                qa = Some(CpuBackend.quantize(Activations::F32(x), m, k)?);
                                last = Some(l.input);
                            }
                            let qa = qa.as_ref().expect("quantized above");
                            if m <= 8 {
                                CpuBackend.ternary_gemv(qa, w, Precision::F32)?;
                            } else {
                                CpuBackend.ternary_gemm(qa, w, Precision::F32)?;
                            }
                        }
                    }
                    Ok(())
                })?,
            };
            tps[slot] = throughput(b, i);
        }
        b.cfg = saved;
        let bytes = model.weight_bytes();
        out.push(ModelThroughput {
            model: model.name.to_owned(),
            prefill_tokens: prefill,
            prefill_tokens_per_s: tps[0],
            decode_tokens_per_s: tps[1],
            weight_bytes: bytes,
            // The bound reads every packed weight once per token at the read half of the copy bandwidth.
            decode_fraction_of_bandwidth_bound: copy_bw.map(|bw| bytes as f64 / (bw / 2.0) * tps[1]),
        });
    }
    Ok(out)
}

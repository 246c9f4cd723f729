//! # `trinity run`: the whole report in one command
//!
//! 1. Device facts; the backend ([`BackendChoice`]: `auto` takes CUDA when it
//!    starts, else the CPU, and the report says which and why). The emulator
//!    is refused: the report's shapes would take hours there.
//! 2. Every kernel verified against the CPU reference on fresh inputs (on
//!    CUDA also the cuBLAS / cuBLASLt baselines): a wrong kernel has no speed,
//!    so a failure stops the run before timing.
//! 3. Benchmarks, each written once on [`Device`] buffers (GPU: CUDA events,
//!    NVML sampled around each, energy over windows of seconds; CPU: wall
//!    clock): copy bandwidth and the decode's read ceiling (the copy's read +
//!    write on a GPU; all threads reading on the CPU), SGEMM 4096³ (ours and cuBLAS),
//!    the original's ternary batch (32×512 tokens × 4096², quantize + GEMM;
//!    cuBLAS FP16 and cuBLASLt INT8 of that shape beside it), GEMV decode hot
//!    and cold (cold sets at least 4× the L2), launch overhead and the GEMV
//!    as a CUDA graph, unpack, TriHash.
//! 4. Noise robustness and the BitNet linear stacks.
//! 5. Headline, Markdown on stdout, JSON under `results/`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use trinity::cuda::GpuError;
use trinity::ternary::DeviceTernary;
use trinity::{BackendChoice, BackendKind, Buffer, Device, HostOps, KernelError, KernelResult, trihash, verify};

use trinity_model::HeadPrecision;

use crate::model_bench::{BenchModelError, BenchPlan, ModelBench};
use crate::models::{Input, MODELS, ModelConfig};
use crate::noise;
use crate::progress::Progress;
use crate::results::{
    BenchmarkResult, Headline, HostInfo, ModelThroughput, NoiseRobustness, Ratio, RunResults, SCHEMA_VERSION,
};
use crate::sensor::{EnergyWindow, NvmlSensor, Sampler, Sensor, SensorReading, SensorSummary, energy_window};
use crate::timing::{Measurement, TimingConfig, measure, wall_clock};

/// Options of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Backend; `auto` picks CUDA when it starts, else the CPU.
    pub backend: BackendChoice,
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
    Gpu(#[from] GpuError),
    /// Results could not be written.
    #[error(transparent)]
    Results(#[from] crate::results::ResultsError),
    /// The whole model could not be built.
    #[error(transparent)]
    Model(#[from] trinity_model::ModelError),
    /// The whole model's timed runs failed.
    #[error(transparent)]
    ModelBench(#[from] BenchModelError),
    /// The emulator was asked for.
    #[error(
        "`trinity run` measures the cpu or cuda backend; the emulator runs one OS thread per GPU thread and the report's shapes (4096² matrices, gigabyte copies) would take hours there. Check kernels on the emulator with `trinity verify --backend emu`"
    )]
    EmulatorRefused,
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

pub(crate) fn host_info() -> HostInfo {
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

/// Runs benchmarks and collects their results; holds the device, its
/// sensor and cuBLAS handle.
struct Bencher {
    device: Device,
    blas: Option<cudarc::cublas::CudaBlas>,
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
            backend: self.device.kind(),
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

    /// Times `work` on the device: CUDA events with NVML sampled meanwhile
    /// (and, with `energy`, a window of seconds against the energy counter)
    /// on a GPU; the wall clock on the CPU.
    fn bench(
        &mut self,
        spec: Spec<'_>,
        energy: bool,
        mut work: impl FnMut() -> KernelResult<()>,
    ) -> KernelResult<usize> {
        let Some(gpu) = self.device.cuda().cloned() else {
            let m = measure(&self.cfg, wall_clock(work))?;
            return Ok(self.record(spec, m, None, None));
        };
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
    if opts.backend == BackendChoice::Emu {
        return Err(RunError::EmulatorRefused);
    }
    progress.step("device facts");
    let info = trinity::info::gather(0);
    let (device, why) = Device::open(opts.backend)?;
    progress.step(&format!("backend: {why}"));
    let mut notes = vec![format!("Backend: {why}.")];
    if let Some(g) = device.cuda() {
        notes.extend(g.notes().iter().cloned());
    }
    if opts.quick {
        notes.push("Quick mode: smaller shapes and fewer samples; not comparable with full runs.".into());
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);

    progress.step("verifying every kernel against the CPU reference");
    let plan = match (device.kind(), opts.quick) {
        (_, true) => verify::Plan::small(),
        (BackendKind::Cuda, false) => verify::Plan::full(),
        (_, false) => verify::Plan { sgemm: vec![(64, 64, 64), (1000, 999, 1001)], ..verify::Plan::full() },
    };
    let mut verification = verify::verify(&device, &plan, rng.random());
    verification.extend(verify::verify_layer_ops(&device, &plan, rng.random()));
    if let Some(g) = device.cuda() {
        verification.extend(verify::verify_baselines(g, rng.random()));
    }
    let verification_passed = verification.iter().all(|c| c.passed);
    let mut results = RunResults {
        schema_version: SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        git_commit: trinity::GIT_COMMIT.map(str::to_owned),
        git_dirty: trinity::GIT_DIRTY.map(|d| d == "1"),
        date,
        duration_s: 0.0,
        host: host_info(),
        backend: device.kind(),
        device: info,
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
    let blas = device.cuda().and_then(|g| match g.cublas() {
        Ok(b) => Some(b),
        Err(e) => {
            results.notes.push(format!("No cuBLAS baselines in this run: {e}"));
            None
        }
    });
    let sensor = device.cuda().and_then(|g| NvmlSensor::open(g.uuid())).map(|s| Box::new(s) as Box<dyn Sensor>);
    if device.cuda().is_some() && sensor.is_none() {
        results.notes.push("NVML unavailable for this device: no power, temperature or energy figures.".into());
    }
    let mut bench = Bencher {
        device: device.clone(),
        blas,
        sensor,
        cfg,
        energy_window: Duration::from_secs(if opts.quick { 1 } else { 3 }),
        results: vec![],
        readings: vec![],
    };
    results.headline = benchmarks(&mut bench, opts, &mut rng, progress, &mut results.notes)?;

    progress.step("noise robustness");
    let (size, rows, flip_rows) = if opts.quick { (256, 20, 4) } else { (1024, 100, 64) };
    let shapes: &[(usize, usize)] = if opts.quick { &[(256, 512)] } else { &noise::BIT_FLIP_SHAPES };
    results.noise_robustness = Some(NoiseRobustness {
        trit_replacement: noise::trit_replacement(&device, &mut rng, size, rows)?,
        bit_flips: noise::bit_flips(&device, &mut rng, shapes, flip_rows)?,
        description: format!(
            "Trit replacement: W {size}×{size} uniform trits, X {rows}×{size} N(0,1). Bit flips: every stored bit of the packed weights flipped with probability q (invalid code → 0), shapes {shapes:?}, {flip_rows} tokens."
        ),
    });

    progress.step("BitNet linear stacks");
    results.models = model_stacks(&mut bench, opts, &mut rng, progress, results.headline.decode_ceiling())?;

    if !bench.readings.is_empty() {
        let source = bench.sensor.as_ref().map_or(crate::sensor::PowerSource::None, |s| s.power_source());
        let s = SensorSummary::of(&bench.readings, source);
        results.headline.mean_power_w = s.mean_power_w;
        results.headline.peak_power_w = s.peak_power_w;
        results.headline.peak_temperature_c = s.peak_temperature_c;
        results.sensors = Some(s);
    }
    let end_info = trinity::info::gather(0);
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
    let md = crate::report::run_markdown(&results);
    std::fs::write(&markdown, md).map_err(|source| crate::results::ResultsError::Io {
        what: "writing",
        path: markdown.clone(),
        source,
    })?;
    Ok(RunOutput { results, json, markdown })
}

/// Weight copies a cold GEMV rotates through: at least 4× the device's L2
/// (the CPU's last-level cache is covered by 24 copies of 4 MB).
fn cold_copies(device: &Device, bytes_per_copy: usize, quick: bool) -> usize {
    match device.cuda() {
        Some(g) => (4 * g.l2_bytes()).div_ceil(bytes_per_copy.max(1)) + 1,
        None if quick => 4,
        None => 24,
    }
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
    let device = b.device.clone();
    let gpu = device.cuda().cloned();
    let on_gpu = gpu.is_some();

    progress.step("copy bandwidth (the ceiling)");
    let copy_bytes = if q { 64 << 20 } else { 1 << 30 };
    let (name, kernel) = if on_gpu { ("copy/device-to-device", "memcpy_dtod") } else { ("copy/host-memcpy", "memcpy") };
    let src = device.upload(&vec![1u8; copy_bytes])?;
    let mut dst = device.alloc::<u8>(copy_bytes)?;
    let s = spec(name, kernel, format!("{copy_bytes} B"), "cold", "byte", 2.0 * copy_bytes as f64);
    let copy_i = b.bench(s, false, || device.copy(&src, &mut dst))?;
    drop((src, dst));
    let copy_bw = throughput(b, copy_i);
    h.copy_bandwidth_gb_s = Some(copy_bw / 1e9);
    // Decode only reads its weights. A GPU's reads and writes share its
    // memory's bandwidth, so the copy's read + write rate is what a read
    // stream can reach: its read ceiling, as bench-model and the speed
    // issue's bound take it (runs before 2026-12-07 divided by half of it,
    // which put the decode figures at twice their fraction). A CPU's memcpy
    // writes more slowly than it reads (and reads each line it writes
    // first), so it is no read ceiling at all: the cold decode GEMV ran at
    // 2.2× half of it and the linear stacks at 127–168 % of a bound made from
    // it (2-core Zen 3 EPYC, 2026-12-07). The CPU's ceiling is all threads
    // reading, as bench-model's bound.
    let read_name = if on_gpu {
        format!("{} (read + write)", b.results[copy_i].name)
    } else {
        let words = vec![1u64; copy_bytes / 8];
        let s = spec(
            "read/host-memory",
            "read (all threads)",
            format!("{copy_bytes} B"),
            "cold",
            "byte",
            copy_bytes as f64,
        );
        let read_i = b.bench(s, false, || {
            std::hint::black_box(trinity::ceilings::read_pass(&words));
            Ok(())
        })?;
        h.read_bandwidth_gb_s = Some(throughput(b, read_i) / 1e9);
        b.results[read_i].name.clone()
    };
    // One rule for the ceiling, the headline's (the linear stacks use it too);
    // the copy's bandwidth is set above, so it is never missing here.
    let read_bw = h.decode_ceiling().unwrap_or(copy_bw);

    progress.step("SGEMM 4096³, ours and the reference");
    let a: Vec<f32> = (0..n * n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let flops = 2.0 * (n * n * n) as f64;
    let shape3 = format!("{n}×{n}×{n}");
    let sg = |name: &str, kernel| spec(format!("{name}/{shape3}"), kernel, shape3.clone(), "hot", "flop", flops);
    let da = device.upload(&a)?;
    let mut dc = device.alloc::<f32>(n * n)?;
    // On the CPU the sgemm op is the reference library (our SGEMM is a GPU kernel).
    let (name, kernel) = if on_gpu { ("sgemm", "sgemm") } else { ("cpu_sgemm", "matrixmultiply::sgemm") };
    let ours = b.bench(sg(name, kernel), false, || device.sgemm(&da, &da, &mut dc, n, n, n))?;
    let blas = b.blas.take();
    if let (Some(g), Some(blas), Buffer::Cuda(sa), Buffer::Cuda(sc)) = (&gpu, &blas, &da, &mut dc) {
        let r = b.bench(sg("cublas_sgemm", "cublasSgemm"), false, || g.cublas_gemm(blas, sa, sa, sc, n, n, n))?;
        h.sgemm_tflops = Some(throughput(b, ours) / 1e12);
        h.reference_sgemm_tflops = Some(throughput(b, r) / 1e12);
        let v = throughput(b, ours) / throughput(b, r);
        let to = b.results[r].name.clone();
        ratio(b, ours, &to, v);
    } else if on_gpu {
        h.sgemm_tflops = Some(throughput(b, ours) / 1e12);
    } else {
        h.reference_sgemm_tflops = Some(throughput(b, ours) / 1e12);
    }
    drop((da, dc));
    b.blas = blas;

    progress.step("ternary batch: 32×512 tokens × 4096², and cuBLAS FP16 of that shape");
    let x: Vec<f32> = (0..tokens * n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let w = DeviceTernary::random(n, n, 0.5, rng);
    let shape = format!("{tokens}×{n}×{n}");
    let tb = |name: &str, kernel| spec(format!("{name}/{shape}"), kernel, shape.clone(), "hot", "token", tokens as f64);
    let dx = device.upload(&x)?;
    let dw = device.upload_ternary(&w)?;
    let mut qa = device.alloc_quantized(tokens, n)?;
    let mut y = device.alloc::<f32>(tokens * n)?;
    let kernel = if on_gpu { "quantize_f32 + ternary_gemm_f32" } else { "quantize + ternary_gemm (cpu)" };
    let batch = b.bench(tb("ternary_batch", kernel), true, || {
        device.quantize(&dx, &mut qa)?;
        device.ternary_gemm(&qa, &dw, &mut y)
    })?;
    drop((dx, qa, y));
    if let Some(g) = &gpu {
        let blas = b.blas.take();
        if let Some(blas) = &blas {
            let a16 = g.upload(&x.iter().map(|&v| half::f16::from_f32(v)).collect::<Vec<_>>())?;
            let b16 = g.upload(&vec![half::f16::from_f32(1.0); n * n])?;
            let mut c16 = g.zeros::<half::f16>(tokens * n)?;
            let f = b.bench(tb("cublas_fp16", "cublasGemmEx FP16"), false, || {
                g.cublas_gemm(blas, &a16, &b16, &mut c16, tokens, n, n)
            })?;
            h.cublas_fp16_tokens_per_s = Some(throughput(b, f));
            let v = throughput(b, batch) / throughput(b, f);
            let to = b.results[f].name.clone();
            ratio(b, batch, &to, v);
        }
        b.blas = blas;
        match trinity::cublaslt_int8::Int8Gemm::new(g, tokens, n, n) {
            Ok(plan) => {
                let a8 = g.upload(&(0..tokens * n).map(|_| rng.random_range(-127i8..=127)).collect::<Vec<_>>())?;
                let w8 = g.upload(&HostOps::unpack_i8(&Device::Cpu, &w.to_packed())?)?;
                let mut c32 = g.zeros::<i32>(tokens * n)?;
                let l = b.bench(tb("cublaslt_int8", "cublasLtMatmul INT8"), false, || plan.run(&a8, &w8, &mut c32))?;
                h.cublaslt_int8_tokens_per_s = Some(throughput(b, l));
            }
            Err(e) => notes.push(format!("No cuBLASLt INT8 baseline: {e}")),
        }
    }
    h.ternary_tokens_per_s = Some(throughput(b, batch));
    h.ternary_batch_latency_ms = Some(b.results[batch].time.median * 1e3);
    h.joules_per_token = b.results[batch].energy.map(|e| e.joules_per_iteration() / tokens as f64);

    progress.step("ternary GEMV decode: hot, cold, launch overhead, CUDA graph");
    let bytes = n * trinity::matmul::padded_k(n) / 4;
    let copies = cold_copies(&device, bytes, q);
    let ws = (0..copies)
        .map(|_| device.upload_ternary(&DeviceTernary::random(n, n, 0.5, rng)))
        .collect::<KernelResult<Vec<_>>>()?;
    notes.push(format!(
        "Cold GEMV: {copies} weight copies of {:.1} MB ({:.0} MB) rotated{}.",
        bytes as f64 / 1e6,
        (copies * bytes) as f64 / 1e6,
        gpu.as_ref()
            .map(|g| format!(
                ", {:.1}× the {:.0} MB L2",
                (copies * bytes) as f64 / g.l2_bytes() as f64,
                g.l2_bytes() as f64 / 1e6
            ))
            .unwrap_or_default()
    ));
    let x1: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let mut dq = device.alloc_quantized(1, n)?;
    device.quantize(&device.upload(&x1)?, &mut dq)?;
    let mut y1 = device.alloc::<f32>(n)?;
    let gshape = format!("1×{n}×{n}");
    let kernel = if on_gpu { "ternary_gemv_f32" } else { "ternary_gemv (cpu)" };
    let gv = |mode: &'static str, iters: usize| {
        spec(format!("ternary_gemv/{gshape}/{mode}"), kernel, gshape.clone(), mode, "byte", (bytes * iters) as f64)
    };
    let hot = b.bench(gv("hot", 1), false, || device.ternary_gemv(&dq, &ws[0], &mut y1))?;
    let mut turn = 0;
    let cold = b.bench(gv("cold", 1), false, || {
        turn = (turn + 1) % ws.len();
        device.ternary_gemv(&dq, &ws[turn], &mut y1)
    })?;
    h.gemv_bandwidth_gb_s = Some(throughput(b, cold) / 1e9);
    let mut gemv_rows = vec![hot, cold];
    if let Some(g) = &gpu {
        // Host cost of one launch: enqueue many without waiting, divide.
        let launches = 256;
        g.synchronize()?;
        let t = Instant::now();
        for i in 0..launches {
            device.ternary_gemv(&dq, &ws[i % ws.len()], &mut y1)?;
        }
        let host_us = t.elapsed().as_secs_f64() * 1e6 / launches as f64;
        g.synchronize()?;
        h.launch_host_us = Some(host_us);
        h.gemv_launches_us = Some(b.results[cold].time.median * 1e6);
        // The same cold GEMVs, one per copy, captured once and replayed as a graph.
        let graph = g.capture(|| ws.iter().try_for_each(|w| device.ternary_gemv(&dq, w, &mut y1)))?;
        let gi = b.bench(gv("cold-graph", ws.len()), false, || g.replay(&graph))?;
        h.gemv_graph_us = Some(b.results[gi].time.median * 1e6 / ws.len() as f64);
        gemv_rows.push(gi);
        notes.push(format!(
            "Launch overhead: {host_us:.2} µs of host time per launch; the decode GEMV takes {:.2} µs per launch back to back and {:.2} µs in a CUDA graph: a gap means back-to-back figures are launch-bound.",
            h.gemv_launches_us.unwrap_or(f64::NAN),
            h.gemv_graph_us.unwrap_or(f64::NAN)
        ));
    }
    for i in gemv_rows {
        let v = throughput(b, i) / read_bw;
        ratio(b, i, &read_name, v);
    }
    drop(ws);

    progress.step("unpack bandwidth");
    let packed = verify::random_weights(rng, n, n);
    let ubytes = (packed.packed_bytes() + n * n) as f64;
    let ushape = format!("{n}×{n}");
    let kernel = if on_gpu { "unpack_i8" } else { "unpack_i8 (cpu)" };
    let words = device.upload(packed.words())?;
    let mut out = device.alloc::<i8>(n * n)?;
    let s = spec(format!("unpack_i8/{ushape}"), kernel, ushape.clone(), "hot", "byte", ubytes);
    let unpack = b.bench(s, false, || device.unpack_i8(&words, n, n, &mut out))?;
    h.unpack_bandwidth_gb_s = Some(throughput(b, unpack) / 1e9);
    let v = throughput(b, unpack) / copy_bw;
    let copy_name = b.results[copy_i].name.clone();
    ratio(b, unpack, &copy_name, v);

    progress.step("TriHash proof-of-work hash rate");
    let pow = trihash::Pow::random(rng);
    let mwm = 243; // never satisfied: every candidate is hashed
    let batches = match &gpu {
        Some(g) => (g.trihash_blocks() * if q { 2 } else { 32 }) as u64,
        None => (trihash::sliced::BATCHES_PER_UNIT * rayon::current_num_threads() * if q { 1 } else { 8 }) as u64,
    };
    let kernel = if on_gpu { "trihash_pow" } else { "trihash sliced (cpu)" };
    let base = device.upload(pow.base())?;
    let mut hits = device.alloc::<u32>(1 + 1024)?;
    let s =
        spec("trihash_pow/mwm243", kernel, format!("{batches} batches × 128"), "hot", "hash", batches as f64 * 128.0);
    let th = b.bench(s, true, || device.trihash_pow(&base, 0, batches, mwm, &mut hits))?;
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
    read_bw: Option<f64>,
) -> Result<Vec<ModelThroughput>, RunError> {
    let device = b.device.clone();
    let models: Vec<ModelConfig> = if opts.quick {
        vec![ModelConfig { name: "tiny (quick mode)", hidden: 256, ffn: 512, layers: 2, kv_dim: 64 }]
    } else {
        MODELS.to_vec()
    };
    let mut out = Vec::new();
    for model in models {
        progress.step(&format!("linear stack of {}", model.name));
        let prefill = match (device.kind(), opts.quick) {
            (_, true) => 64,
            (BackendKind::Cuda, false) => 32 * 512,
            (_, false) => 512,
        };
        // Every layer has its own weights, so decode streams the whole stack.
        let layers = (0..model.layers)
            .map(|_| {
                model
                    .linears()
                    .iter()
                    .map(|l| device.upload_ternary(&DeviceTernary::random(l.n, l.k, 0.5, rng)))
                    .collect::<KernelResult<Vec<_>>>()
            })
            .collect::<KernelResult<Vec<_>>>()?;
        let saved = b.cfg;
        b.cfg = TimingConfig { min_samples: 3, time_cap: Duration::from_secs(2), ..saved };
        let mut tps = [0.0; 2];
        for (slot, m) in [prefill, 1].into_iter().enumerate() {
            let name = format!("linear_stack/{}/m{m}", model.name);
            let shape = format!("{m} tokens × {} layers", model.layers);
            let s = spec(name, "quantize + ternary (linear stack)", shape, "cold", "token", m as f64);
            let xh: Vec<f32> = (0..m * model.hidden).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let xf: Vec<f32> = (0..m * model.ffn).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let (dxh, dxf) = (device.upload(&xh)?, device.upload(&xf)?);
            let (mut qh, mut qf) = (device.alloc_quantized(m, model.hidden)?, device.alloc_quantized(m, model.ffn)?);
            let mut ys =
                model.linears().iter().map(|l| device.alloc::<f32>(m * l.n)).collect::<KernelResult<Vec<_>>>()?;
            let i = b.bench(s, false, || {
                for layer in &layers {
                    let mut last = None;
                    for ((l, w), y) in model.linears().iter().zip(layer).zip(ys.iter_mut()) {
                        let ffn_mid = l.input == Input::FfnMid;
                        // One quantization shared by the linears that read the same activations.
                        if last != Some(l.input) {
                            if ffn_mid {
                                device.quantize(&dxf, &mut qf)?
                            } else {
                                device.quantize(&dxh, &mut qh)?
                            }
                            last = Some(l.input);
                        }
                        device.ternary_linear(if ffn_mid { &qf } else { &qh }, w, y)?;
                    }
                }
                Ok(())
            })?;
            tps[slot] = throughput(b, i);
        }
        b.cfg = saved;
        let bytes = model.weight_bytes();
        progress.step(&format!("whole model of {} (random weights): prefill and decode", model.name));
        let e2e = end_to_end(&device, model.name, opts.quick, progress)?;
        // Its tests as benchmarks too, so `trinity compare` matches them between runs.
        b.results.extend(e2e.iter().flat_map(|(_, bench)| bench.benchmarks()));
        let (pp, tg) = match &e2e {
            Some((_, bench)) => (bench.pp.as_ref(), bench.tg.as_ref()),
            None => (None, None),
        };
        out.push(ModelThroughput {
            model: model.name.to_owned(),
            prefill_tokens: prefill,
            prefill_tokens_per_s: tps[0],
            decode_tokens_per_s: tps[1],
            weight_bytes: bytes,
            // The bound reads every packed weight once per token at the read ceiling.
            decode_fraction_of_bandwidth_bound: read_bw.map(|bw| bytes as f64 / bw * tps[1]),
            end_to_end_prefill_tokens: e2e.as_ref().map(|e| e.0),
            end_to_end_prefill_tokens_per_s: pp.map(|f| f.tokens_per_s),
            end_to_end_decode_tokens_per_s: tg.map(|f| f.tokens_per_s),
            end_to_end_decode_fraction_of_bound: tg.and_then(|f| f.fraction_of_bound),
        });
    }
    Ok(out)
}

/// The whole model of a published shape with random weights, timed as
/// `trinity bench-model` times it (three repetitions of ppN and of tgN from an
/// empty cache, each decode repetition against the bandwidth measured after
/// it); `None` for shapes the model crate does not know (the quick mode's tiny stack).
fn end_to_end(
    device: &Device,
    name: &str,
    quick: bool,
    progress: &dyn Progress,
) -> Result<Option<(usize, ModelBench)>, RunError> {
    let shape = match name {
        "BitNet-b1.58-2B-4T" => "bitnet-b1.58-2B-4T",
        other => other,
    };
    let Some(cfg) = trinity_model::config::shape(shape) else { return Ok(None) };
    let (prompt, n_gen) = match (device.kind(), quick) {
        (_, true) => (16, 4),
        (BackendKind::Cuda, false) => (512, 128),
        (_, false) => (128, 16),
    };
    let plan = BenchPlan { prompt, n_gen, reps: 3, depth: 0, lm_head: HeadPrecision::F32, f16_baseline: false };
    let mut model = trinity_model::BitNet::random(cfg, device, 7)?;
    Ok(Some((prompt, plan.run(&mut model, device, name.to_owned(), true, progress)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;

    #[test]
    fn the_whole_model_is_timed_as_bench_model_times_it() {
        // The CPU keeps this quick: bitnet_b1_58-large's 24 layers, 16 prompt
        // tokens and 4 decoded, three times each (the shape is what a real run times).
        let (prompt, bench) = end_to_end(&Device::Cpu, "bitnet_b1_58-large", true, &Silent).unwrap().unwrap();
        assert_eq!(prompt, 16);
        let names: Vec<(String, usize)> = bench.benchmarks().into_iter().map(|b| (b.name, b.samples.len())).collect();
        assert_eq!(names, [("model/bitnet_b1_58-large/pp16".into(), 3), ("model/bitnet_b1_58-large/tg4".into(), 3)]);
        let (pp, tg) = (bench.pp.unwrap(), bench.tg.unwrap());
        assert_eq!((pp.test.as_str(), pp.samples.len(), tg.test.as_str(), tg.samples.len()), ("pp16", 3, "tg4", 3));
        let f = tg.fraction_of_bound.unwrap();
        assert!(f > 0.0 && f.is_finite(), "{f}");
        // A shape the model crate does not know has no whole model.
        assert!(end_to_end(&Device::Cpu, "tiny (quick mode)", true, &Silent).unwrap().is_none());
    }
}

//! Ternary matmul, quantization and SGEMM benchmarks.
//!
//! Shapes `(N, K)` of weight matrices: the original report's 4096 × 4096;
//! BitNet b1.58-large's 1536 × 1536, 4096 × 1536, 1536 × 4096; BitNet-2B-4T's
//! 2560 × 2560, 6912 × 2560, 2560 × 6912. Token counts `M`: decode 1 (GEMV),
//! prefill 512 and 16384 (GEMM; 16384 = the original's 32 × 512 batch), and
//! 8 on 4096² (the CPU peer's figure).
//!
//! The CPU cases run on a thread of the CPU ops' pool, as the model's steps do.
//!
//! Throughput is in elements = multiply-adds × 2 (Criterion's "elem/s" reads
//! as OPS) for matmuls, activations for the quantizer. On the CPU the
//! largest prefill shapes take about a second per iteration and run with
//! Criterion's minimum of 10 samples (never skipped).
//!
//! `cpu-decode-stack`: a whole decode step's linears (every layer's q / k / v
//! and gate / up in one call each, o and down alone, m = 1, as the model
//! issues them) over the random weights of bitnet_b1_58-large (170 MB) and
//! 2B-4T (521 MB), far larger than the caches. Throughput in weight bytes; a
//! ratio line gives each as a fraction of the read bandwidth
//! (`trinity::ceilings::read_bandwidth`), each of ten steps against the
//! bandwidth measured right after it.
//!
//! With a GPU: the same kernels on CUDA (GPU time from CUDA events), the
//! GEMV also cold (weights rotated through buffers larger than the L2), cuBLAS
//! FP16 `GemmEx` of each shape and cuBLAS SGEMM 4096³ beside ours, and a
//! device-to-device copy as the bandwidth ceiling; a ratio line is printed
//! after each pair. Also the decode step's grouped GEMV (2B-4T q / k / v and
//! gate / up in one launch) against one launch per matrix.

use std::time::Duration;

use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use rand::{RngExt, SeedableRng};
use trinity::matmul::{Activations, QuantizedActivations};
use trinity::ternary::DeviceTernary;
use trinity::{Device, HostOps};

const SHAPES: &[(&str, usize, usize)] = &[
    ("original", 4096, 4096),
    ("b1.58-large-qkvo", 1536, 1536),
    ("b1.58-large-up", 4096, 1536),
    ("b1.58-large-down", 1536, 4096),
    ("2b4t-qo", 2560, 2560),
    ("2b4t-up", 6912, 2560),
    ("2b4t-down", 2560, 6912),
];

fn weights(rng: &mut rand::rngs::StdRng, n: usize, k: usize) -> DeviceTernary {
    DeviceTernary::from_packed(&trinity::verify::random_weights(rng, n, k))
}

fn activations(rng: &mut rand::rngs::StdRng, m: usize, k: usize) -> QuantizedActivations {
    let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    HostOps::quantize(&Device::Cpu, Activations::F32(&x), m, k).expect("valid shape")
}

fn ops(m: usize, n: usize, k: usize) -> Throughput {
    Throughput::Elements(2 * (m * n * k) as u64)
}

fn cpu_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    g
}

/// `iters` calls of `op` timed on a thread of the CPU ops' pool, as the
/// model runs them: called from outside the pool, every op would first hand
/// its work over and wait for a wake-up (about the time of a whole decode GEMV).
fn on_pool<R>(iters: u64, op: &mut (impl FnMut() -> R + Send)) -> Duration {
    trinity::cpu::on_pool_thread(|| {
        let t = std::time::Instant::now();
        for _ in 0..iters {
            std::hint::black_box(op());
        }
        t.elapsed()
    })
}

fn bench_cpu(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    println!(
        "matmul: CPU ternary path {}, {} threads",
        trinity::cpu_ternary::simd_level(),
        rayon::current_num_threads()
    );
    // The buffers are made once, outside the timing, as the model makes them
    // (timing `HostOps`, which copies its inputs into new buffers per call,
    // put a 4 MB copy and a fresh 4 MB allocation into the 4096² GEMV).
    let dev = Device::Cpu;
    let mut g = cpu_group(c, "cpu-ternary");
    for &(name, n, k) in SHAPES {
        let w = dev.upload_ternary(&weights(&mut rng, n, k)).unwrap();
        let ms: &[usize] = if name == "original" { &[1, 8, 512, 16384] } else { &[1, 512, 16384] };
        for &m in ms {
            let x = dev.upload_quantized(&activations(&mut rng, m, k)).unwrap();
            let mut y = dev.alloc::<f32>(m * n).unwrap();
            g.throughput(ops(m, n, k));
            let id = BenchmarkId::new(format!("{name}-{n}x{k}"), format!("m{m}"));
            let mut op = || match m <= 8 {
                true => dev.ternary_gemv(&x, &w, &mut y).unwrap(),
                false => dev.ternary_gemm(&x, &w, &mut y).unwrap(),
            };
            g.bench_function(id, |b| b.iter_custom(|iters| on_pool(iters, &mut op)));
        }
    }
    g.finish();

    let mut g = cpu_group(c, "cpu-quantize");
    for &m in &[1usize, 512, 16384] {
        let x: Vec<f32> = (0..m * 4096).map(|_| rng.random_range(-2.0f32..2.0)).collect();
        let x = dev.upload(&x).unwrap();
        let mut q = dev.alloc_quantized(m, 4096).unwrap();
        g.throughput(Throughput::Elements((m * 4096) as u64));
        g.bench_function(BenchmarkId::new("f32", format!("m{m}xk4096")), |b| {
            b.iter(|| dev.quantize(&x, &mut q).unwrap())
        });
    }
    g.finish();

    let mut g = cpu_group(c, "cpu-sgemm");
    let n = 4096;
    let a: Vec<f32> = (0..n * n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    g.throughput(ops(n, n, n));
    g.bench_function(BenchmarkId::new("matrixmultiply", "4096^3"), |b| {
        b.iter(|| HostOps::sgemm(&Device::Cpu, &a, &a, n, n, n).unwrap())
    });
    g.finish();
}

fn bench_gpu(c: &mut Criterion) {
    let Some(gpu) = trinity_benches::gpu("matmul") else { return };
    let dev = Device::Cuda(gpu.clone());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut g = c.benchmark_group(format!("cuda-{}", gpu.device_name()));
    g.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    let median = |f: &mut dyn FnMut() -> trinity::KernelResult<()>| -> f64 {
        let mut t: Vec<f64> = (0..7).map(|_| gpu.time(10, &mut *f).unwrap().as_secs_f64() / 10.0).collect();
        t.sort_by(f64::total_cmp);
        t[3]
    };

    // The bandwidth ceiling: a device-to-device copy of 1 GiB.
    let copy_bw = trinity::ceilings::gpu_copy_bandwidth(&gpu, 1 << 30, 7).unwrap();
    println!("ceiling: device-to-device copy {:.0} GB/s (read + write)", copy_bw / 1e9);

    let blas = gpu.cublas().ok();
    for &(name, n, k) in SHAPES {
        let w = weights(&mut rng, n, k);
        // Cold: rotate through at least 4× the L2 of weight copies.
        let l2_rotation = (4 * gpu.l2_bytes()).div_ceil(w.words().len() * 4) + 1;
        let dws: Vec<_> = (0..l2_rotation).map(|_| dev.upload_ternary(&w).unwrap()).collect();
        for &m in &[1usize, 512, 16384] {
            let x = activations(&mut rng, m, k);
            let dx = dev.upload_quantized(&x).unwrap();
            let mut y = dev.alloc::<f32>(m * n).unwrap();
            g.throughput(ops(m, n, k));
            let id = format!("{name}-{n}x{k}");
            trinity_benches::with_nvml(gpu.uuid(), "cuda", &format!("ternary-hot-{id}-m{m}"), || {
                g.bench_function(BenchmarkId::new(format!("ternary-hot/{id}"), format!("m{m}")), |b| {
                    b.iter_custom(|it| gpu.time(it, || dev.ternary_linear(&dx, &dws[0], &mut y)).unwrap())
                })
            });
            let mut turn = 0;
            let ours_hot = median(&mut || dev.ternary_linear(&dx, &dws[0], &mut y));
            let ours_cold = median(&mut || {
                turn = (turn + 1) % l2_rotation;
                dev.ternary_linear(&dx, &dws[turn], &mut y)
            });
            let weight_bytes = (n * w.k_pad() / 4) as f64;
            print!(
                "ratio {id} m{m}: ours {:.1} µs hot, {:.1} µs cold; cold weight stream {:.0} GB/s = {:.0}% of copy",
                ours_hot * 1e6,
                ours_cold * 1e6,
                weight_bytes / ours_cold / 1e9,
                100.0 * weight_bytes / ours_cold / copy_bw
            );
            if let Some(blas) = &blas {
                let a16 = gpu.upload(&vec![half::f16::from_f32(0.5); m * k]).unwrap();
                let b16 = gpu.upload(&vec![half::f16::from_f32(-1.0); n * k]).unwrap();
                let mut c16 = gpu.zeros::<half::f16>(m * n).unwrap();
                let theirs = median(&mut || gpu.cublas_gemm(blas, &a16, &b16, &mut c16, m, n, k));
                print!("; cuBLAS FP16 {:.1} µs, ours/cuBLAS speed-up {:.2}×", theirs * 1e6, theirs / ours_hot);
            }
            match trinity::cublaslt_int8::Int8Gemm::new(&gpu, m, n, k) {
                Ok(plan) => {
                    let a8 = gpu.upload(&vec![1i8; m * k]).unwrap();
                    let w8 = gpu.upload(&vec![-1i8; n * k]).unwrap();
                    let mut c32 = gpu.zeros::<i32>(m * n).unwrap();
                    let theirs = median(&mut || plan.run(&a8, &w8, &mut c32));
                    print!("; cuBLASLt INT8 {:.1} µs, ours/INT8 speed-up {:.2}×", theirs * 1e6, theirs / ours_hot);
                }
                Err(e) => print!("; no cuBLASLt INT8: {e}"),
            }
            println!();
        }
    }

    // Decode's grouped linears at the 2B-4T shapes (q / k / v, gate / up):
    // one launch per matrix against one grouped launch, weights cold.
    for (id, heights) in [("2b4t-qkv", &[2560usize, 640, 640][..]), ("2b4t-gate-up", &[6912, 6912][..])] {
        let k = 2560;
        let group: Vec<_> = heights.iter().map(|&n| weights(&mut rng, n, k)).collect();
        let bytes: usize = group.iter().map(|w| w.words().len() * 4).sum();
        let rotation = (4 * gpu.l2_bytes()).div_ceil(bytes) + 1;
        let copies: Vec<Vec<_>> =
            (0..rotation).map(|_| group.iter().map(|w| dev.upload_ternary(w).unwrap()).collect()).collect();
        let refs: Vec<Vec<_>> = copies.iter().map(|c| c.iter().collect()).collect();
        let dx = dev.upload_quantized(&activations(&mut rng, 1, k)).unwrap();
        let mut ys: Vec<_> = heights.iter().map(|&n| dev.alloc::<f32>(n).unwrap()).collect();
        let mut turn = 0;
        let separate = median(&mut || {
            turn = (turn + 1) % rotation;
            copies[turn].iter().zip(ys.iter_mut()).try_for_each(|(w, y)| dev.ternary_linear(&dx, w, y))
        });
        let grouped = median(&mut || {
            turn = (turn + 1) % rotation;
            dev.ternary_gemv_many(&dx, &refs[turn], &mut ys)
        });
        println!(
            "ratio {id} m1 cold: {} launches {:.1} µs, grouped {:.1} µs ({:.2}× faster); grouped weight stream {:.0} GB/s = {:.0}% of copy",
            heights.len(),
            separate * 1e6,
            grouped * 1e6,
            separate / grouped,
            bytes as f64 / grouped / 1e9,
            100.0 * bytes as f64 / grouped / copy_bw
        );
    }

    let n = 4096;
    let a32: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
    let (da, mut dc) = (dev.upload(&a32).unwrap(), dev.alloc::<f32>(n * n).unwrap());
    let a = gpu.upload(&a32).unwrap();
    let mut cc = gpu.zeros::<f32>(n * n).unwrap();
    g.throughput(ops(n, n, n));
    trinity_benches::with_nvml(gpu.uuid(), "cuda", "sgemm-4096", || {
        g.bench_function(BenchmarkId::new("sgemm", "4096^3"), |b| {
            b.iter_custom(|it| gpu.time(it, || dev.sgemm(&da, &da, &mut dc, n, n, n)).unwrap())
        })
    });
    let ours = median(&mut || dev.sgemm(&da, &da, &mut dc, n, n, n));
    let flops = 2.0 * (n * n * n) as f64;
    print!("ratio sgemm 4096³: ours {:.1} TFLOPS", flops / ours / 1e12);
    if let Some(blas) = &blas {
        let theirs = median(&mut || gpu.cublas_gemm(blas, &a, &a, &mut cc, n, n, n));
        print!(", cuBLAS {:.1} TFLOPS, ours = {:.0}% of cuBLAS", flops / theirs / 1e12, 100.0 * theirs / ours);
    }
    println!();
    g.finish();
}

/// Decode-step stacks: (name, layers, hidden, q/k/v width of k and v, intermediate).
const DECODE_STACKS: &[(&str, usize, usize, usize, usize)] =
    &[("b1.58-large", 24, 1536, 1536, 4096), ("2b4t", 30, 2560, 640, 6912)];

/// One decode step's linears: per layer the model's four calls (q / k / v,
/// o, gate / up, down) with their outputs, and the two activation rows.
struct DecodeStack {
    layers: Vec<[Vec<trinity::TernaryBuffer>; 4]>,
    outs: Vec<[Vec<trinity::Buffer<f32>>; 4]>,
    x_hidden: trinity::QuantizedBuffer,
    x_ff: trinity::QuantizedBuffer,
    ff: usize,
}

impl DecodeStack {
    fn new(dev: &Device, rng: &mut rand::rngs::StdRng, layers: usize, h: usize, kv: usize, ff: usize) -> DecodeStack {
        let mut upload = |n: usize, k: usize| dev.upload_ternary(&DeviceTernary::random(n, k, 0.5, rng)).unwrap();
        let layers: Vec<[Vec<_>; 4]> = (0..layers)
            .map(|_| {
                [
                    vec![upload(h, h), upload(kv, h), upload(kv, h)],
                    vec![upload(h, h)],
                    vec![upload(ff, h), upload(ff, h)],
                    vec![upload(h, ff)],
                ]
            })
            .collect();
        let outs = layers
            .iter()
            .map(|layer| std::array::from_fn(|i| layer[i].iter().map(|w| dev.alloc::<f32>(w.rows).unwrap()).collect()))
            .collect();
        let x_hidden = dev.upload_quantized(&activations(rng, 1, h)).unwrap();
        let x_ff = dev.upload_quantized(&activations(rng, 1, ff)).unwrap();
        DecodeStack { layers, outs, x_hidden, x_ff, ff }
    }

    /// Weight bytes a step reads.
    fn bytes(&self) -> usize {
        self.layers.iter().flatten().flatten().map(|w| w.rows * w.k_pad / 4).sum()
    }

    /// A step: the model's calls, in its order.
    fn step(&mut self, dev: &Device) {
        for (layer, ys) in self.layers.iter().zip(self.outs.iter_mut()) {
            for (ws, y) in layer.iter().zip(ys.iter_mut()) {
                let ws: [&trinity::TernaryBuffer; 3] = std::array::from_fn(|i| &ws[i.min(ws.len() - 1)]);
                let x = if ws[0].cols == self.ff { &self.x_ff } else { &self.x_hidden };
                dev.ternary_linears(x, &ws[..y.len()], y).unwrap();
            }
        }
    }
}

fn bench_cpu_decode_stack(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut g = cpu_group(c, "cpu-decode-stack");
    for &(name, layers, h, kv, ff) in DECODE_STACKS {
        // Every K here is a whole number of the 64-weight row alignment: 2 bits a weight.
        let bytes = layers * (2 * h * h + 2 * kv * h + 3 * ff * h) / 4;
        // Built on the case's first call, so a filter that skips the case
        // skips its 170–521 MB of random weights too.
        let mut stack: Option<DecodeStack> = None;
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(BenchmarkId::new(name, "m1"), |b| {
            let s = stack.get_or_insert_with(|| DecodeStack::new(&dev, &mut rng, layers, h, kv, ff));
            assert_eq!(s.bytes(), bytes, "{name}: weight bytes");
            b.iter_custom(|iters| on_pool(iters, &mut || s.step(&dev)))
        });
        if let Some(s) = &mut stack {
            let share = trinity_benches::read_bandwidth_share(bytes, 10, &mut || {
                on_pool(1, &mut || s.step(&dev));
            });
            println!("ratio decode-stack {name} m1: a step {share}");
        }
    }
    g.finish();
}

criterion_group!(benches, bench_cpu, bench_cpu_decode_stack, bench_gpu);
criterion_main!(benches);

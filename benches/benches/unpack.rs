//! Unpack benchmarks: packed ternary → int8 / f16, on the CPU backend and,
//! when a GPU is present, on CUDA (GPU time from CUDA events via `iter_custom`).
//!
//! Throughput is the bytes moved: packed words read plus unpacked output written.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use trinity::verify::random_weights;
use trinity::{Device, HostOps};

/// (rows, cols): BitNet b1.58-large's FFN and the original report's 4096².
const SHAPES: &[(usize, usize)] = &[(1536, 4096), (4096, 4096)];

fn bytes(rows: usize, cols: usize, out_elem: usize) -> u64 {
    (rows * cols.div_ceil(16) * 4 + rows * cols * out_elem) as u64
}

fn bench_unpack(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let gpu = trinity_benches::gpu("unpack");
    let mut group = c.benchmark_group("unpack");
    group.sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    for &(rows, cols) in SHAPES {
        let w = random_weights(&mut rng, rows, cols);
        let id = format!("{rows}x{cols}");
        group.throughput(Throughput::Bytes(bytes(rows, cols, 1)));
        group.bench_with_input(BenchmarkId::new("i8/cpu", &id), &w, |b, w| {
            b.iter(|| HostOps::unpack_i8(&Device::Cpu, w).unwrap())
        });
        if let Some(gpu) = &gpu {
            let dev = Device::Cuda(gpu.clone());
            let words = dev.upload(w.words()).unwrap();
            let mut out = dev.alloc::<i8>(rows * cols).unwrap();
            trinity_benches::with_nvml(gpu.uuid(), "unpack", &format!("i8-cuda-{id}"), || {
                group.bench_function(BenchmarkId::new("i8/cuda", &id), |b| {
                    b.iter_custom(|iters| gpu.time(iters, || dev.unpack_i8(&words, rows, cols, &mut out)).unwrap())
                })
            });
        }
        group.throughput(Throughput::Bytes(bytes(rows, cols, 2)));
        group.bench_with_input(BenchmarkId::new("f16/cpu", &id), &w, |b, w| {
            b.iter(|| HostOps::unpack_f16(&Device::Cpu, w).unwrap())
        });
        if let Some(gpu) = &gpu {
            let dev = Device::Cuda(gpu.clone());
            let words = dev.upload(w.words()).unwrap();
            let mut out = dev.alloc::<half::f16>(rows * cols).unwrap();
            trinity_benches::with_nvml(gpu.uuid(), "unpack", &format!("f16-cuda-{id}"), || {
                group.bench_function(BenchmarkId::new("f16/cuda", &id), |b| {
                    b.iter_custom(|iters| {
                        gpu.time(iters, || dev.unpack_f16(&words, rows, cols, w.scale(), &mut out)).unwrap()
                    })
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_unpack);
criterion_main!(benches);

//! TriHash (Curl-P-81) proof-of-work search: hashes per second.
//!
//! - `cpu-sliced/1-thread` and `cpu-sliced/all-threads`: the bit-sliced CPU search.
//! - `cpu-scalar/1-thread`: the scalar reference (the definition, trit by trit).
//! - `cuda`: the GPU kernel, GPU time from CUDA events, when a GPU is present.
//!
//! Throughput is in elements = hashes (one 81-round transform per candidate);
//! Criterion prints it as Melem/s = MH/s. mwm is 243 (never satisfied), so
//! every candidate is hashed and nothing short-circuits.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use trinity::trihash::{Pow, sliced, transform_reference};

const MWM: usize = 243;

fn bench_trihash(c: &mut Criterion) {
    let pow = Pow::random(&mut rand::rngs::StdRng::seed_from_u64(1));
    let mut group = c.benchmark_group("trihash");
    group.sample_size(10).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    println!("trihash: CPU transform uses {}", sliced::simd_level());

    let unit = sliced::BATCHES_PER_UNIT as u64;
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    let batches = 8 * unit;
    group.throughput(Throughput::Elements(batches * 128));
    group.bench_function(BenchmarkId::new("cpu-sliced", "1-thread"), |b| {
        b.iter(|| one.install(|| sliced::search(pow.base(), 0, batches, MWM)))
    });
    let all = rayon::current_num_threads() as u64;
    let batches = 8 * unit * all;
    group.throughput(Throughput::Elements(batches * 128));
    group.bench_function(BenchmarkId::new("cpu-sliced", format!("{all}-threads")), |b| {
        b.iter(|| sliced::search(pow.base(), 0, batches, MWM))
    });

    group.throughput(Throughput::Elements(64));
    group.bench_function(BenchmarkId::new("cpu-scalar", "1-thread"), |b| {
        b.iter(|| {
            for v in 0..64u64 {
                let mut s = *pow.base();
                s[162..243].copy_from_slice(&Pow::nonce(v));
                transform_reference(&mut s);
                std::hint::black_box(&s);
            }
        })
    });

    if let Some(gpu) = trinity_benches::gpu("trihash") {
        let dev = trinity::Device::Cuda(gpu.clone());
        let base = dev.upload(pow.base()).unwrap();
        let mut hits = dev.alloc::<u32>(1 + 1024).unwrap();
        let batches = gpu.trihash_blocks() as u64 * 32;
        group.throughput(Throughput::Elements(batches * 128));
        trinity_benches::with_nvml(gpu.uuid(), "trihash", "cuda", || {
            group.bench_function(BenchmarkId::new("cuda", gpu.device_name()), |b| {
                b.iter_custom(|iters| gpu.time(iters, || dev.trihash_pow(&base, 0, batches, MWM, &mut hits)).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_trihash);
criterion_main!(benches);

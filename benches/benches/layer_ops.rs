//! The float ops of a BitNet layer (RMSNorm, RMSNorm fused with the
//! quantizer, RoPE, attention, gate, the f16 / int8 lm_head, argmax) at the 2B-4T shapes (prefill
//! attention at bitnet_b1_58-large's heads too), and the whole bitnet_b1_58-large
//! shape with random weights (a decode step per lm_head precision, a batched
//! step, a prefill): CPU always, CUDA when present.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use trinity::{Buffer, Device};

/// 2B-4T: 20 heads, 5 KV heads, head_dim 128, hidden 2560, intermediate 6912.
const HEADS: usize = 20;
const KV_HEADS: usize = 5;
const HEAD_DIM: usize = 128;
const HIDDEN: usize = 2560;
const INTERMEDIATE: usize = 6912;

fn filled(device: &Device, n: usize, v: f32) -> Buffer<f32> {
    device.upload(&(0..n).map(|i| v * ((i % 17) as f32 - 8.0) / 8.0).collect::<Vec<_>>()).unwrap()
}

fn bench_device(c: &mut Criterion, device: &Device, label: &str) {
    let mut g = c.benchmark_group(format!("layer_ops/{label}"));
    g.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    let time = |g: &mut criterion::BenchmarkGroup<'_, _>, id: BenchmarkId, f: &mut dyn FnMut()| {
        g.bench_function(id, |b| {
            b.iter(|| {
                f();
                device.synchronize().unwrap();
            })
        });
    };
    for m in [1usize, 512] {
        let x = filled(device, m * HIDDEN, 1.0);
        let w = filled(device, HIDDEN, 1.0);
        let mut y = device.alloc::<f32>(m * HIDDEN).unwrap();
        g.throughput(Throughput::Bytes((2 * m * HIDDEN * 4) as u64));
        time(&mut g, BenchmarkId::new("rms_norm", format!("m{m}")), &mut || {
            device.rms_norm(&x, &w, &mut y, 1e-5).unwrap()
        });
        // The fused norm + quantize in front of every linear: reads x once, writes int8.
        let mut q = device.alloc_quantized(m, HIDDEN).unwrap();
        g.throughput(Throughput::Bytes((m * HIDDEN * 5) as u64));
        time(&mut g, BenchmarkId::new("rms_norm_quantize", format!("m{m}")), &mut || {
            device.rms_norm_quantize(&x, &w, 1e-5, &mut q).unwrap()
        });
        let mut gate = filled(device, m * INTERMEDIATE, 1.0);
        let up = filled(device, m * INTERMEDIATE, 0.5);
        g.throughput(Throughput::Bytes((3 * m * INTERMEDIATE * 4) as u64));
        time(&mut g, BenchmarkId::new("gated_relu2", format!("m{m}")), &mut || {
            device.gated(&mut gate, &up, trinity::ops::ACT_RELU2).unwrap()
        });
        let (cos, sin) = trinity::cpu::rope_tables(HEAD_DIM, 500_000.0, 1024);
        let (cos, sin) = (device.upload(&cos).unwrap(), device.upload(&sin).unwrap());
        let mut q = filled(device, m * HEADS * HEAD_DIM, 1.0);
        let places = device.row_places(&(0..m).map(|p| (0, p)).collect::<Vec<_>>()).unwrap();
        time(&mut g, BenchmarkId::new("rope", format!("m{m}")), &mut || {
            device.rope(&mut q, &cos, &sin, &places, HEADS, HEAD_DIM).unwrap()
        });
    }
    // Decode attention: one query row against 1024 cached positions.
    let context = 1024;
    let q = filled(device, HEADS * HEAD_DIM, 0.1);
    let k = filled(device, KV_HEADS * context * HEAD_DIM, 0.1);
    let v = filled(device, KV_HEADS * context * HEAD_DIM, 1.0);
    let mut o = device.alloc::<f32>(HEADS * HEAD_DIM).unwrap();
    let last = device.row_places(&[(0, context - 1)]).unwrap();
    g.throughput(Throughput::Bytes((2 * KV_HEADS * context * HEAD_DIM * 4) as u64));
    let mut scratch = trinity::AttentionScratch::new();
    time(&mut g, BenchmarkId::new("attention_decode", "ctx1024"), &mut || {
        device.attention(&q, &k, &v, &mut o, &last, HEADS, KV_HEADS, HEAD_DIM, context, &mut scratch).unwrap()
    });
    // Prefill attention: a 512-token prompt chunk of one sequence, causal.
    // Throughput in query–key scores (each head, each row over its keys).
    let m = 512;
    let qp = filled(device, m * HEADS * HEAD_DIM, 0.1);
    let mut op = device.alloc::<f32>(m * HEADS * HEAD_DIM).unwrap();
    let chunk = device.row_places(&(0..m).map(|p| (0, p)).collect::<Vec<_>>()).unwrap();
    g.throughput(Throughput::Elements((HEADS * m * (m + 1) / 2) as u64));
    time(&mut g, BenchmarkId::new("attention_prefill", format!("m{m}")), &mut || {
        device.attention(&qp, &k, &v, &mut op, &chunk, HEADS, KV_HEADS, HEAD_DIM, context, &mut scratch).unwrap()
    });
    // The same at bitnet_b1_58-large's heads: 16 × 96, no grouped queries.
    let (heads_l, dim_l) = (16, 96);
    let qp = filled(device, m * heads_l * dim_l, 0.1);
    let (kl, vl) = (filled(device, heads_l * context * dim_l, 0.1), filled(device, heads_l * context * dim_l, 1.0));
    let mut op = device.alloc::<f32>(m * heads_l * dim_l).unwrap();
    g.throughput(Throughput::Elements((heads_l * m * (m + 1) / 2) as u64));
    time(&mut g, BenchmarkId::new("attention_prefill", format!("large-m{m}")), &mut || {
        device.attention(&qp, &kl, &vl, &mut op, &chunk, heads_l, heads_l, dim_l, context, &mut scratch).unwrap()
    });
    // The same over 30 layers' caches (157 MB, as a 2B-4T decode step at
    // context 1024 reads them): the caches come from memory, not the L3.
    const LAYERS: usize = 30;
    let caches = || -> Vec<_> {
        (0..LAYERS)
            .map(|_| {
                let kv = |v| filled(device, KV_HEADS * context * HEAD_DIM, v);
                (kv(0.1), kv(1.0))
            })
            .collect()
    };
    g.throughput(Throughput::Bytes((LAYERS * 2 * KV_HEADS * context * HEAD_DIM * 4) as u64));
    let id = BenchmarkId::new("attention_decode_30_layers", "ctx1024");
    time_with(&mut g, device, id, caches, |caches| {
        for (k, v) in caches.iter() {
            device.attention(&q, k, v, &mut o, &last, HEADS, KV_HEADS, HEAD_DIM, context, &mut scratch).unwrap()
        }
    });
    // The lm_head of a 2B-4T decode step in f16 and in int8: the step's largest read.
    const VOCAB: usize = 128_256;
    let ld = trinity::head_row_len(HIDDEN);
    let a = filled(device, HIDDEN, 0.5);
    let mut logits = device.alloc::<f32>(VOCAB).unwrap();
    let h16 = || device.upload(&vec![half::f16::from_f32(0.01); VOCAB * ld]).unwrap();
    g.throughput(Throughput::Bytes((VOCAB * HIDDEN * 2) as u64));
    let id = BenchmarkId::new("head_gemv_f16", "1x128256x2560");
    let head = |h: &mut _, logits: &mut _| device.head_gemm_f16(&a, h, logits, 1, VOCAB, HIDDEN).unwrap();
    if let (Some(mut h), "cpu") = (time_with(&mut g, device, id, h16, |h| head(h, &mut logits)), label) {
        let share = trinity_benches::read_bandwidth_share(VOCAB * HIDDEN * 2, 10, &mut || head(&mut h, &mut logits));
        println!("ratio head_gemv_f16 cpu: {share}");
    }
    let h8 = || (device.upload(&vec![3i8; VOCAB * ld]).unwrap(), filled(device, VOCAB, 0.01));
    g.throughput(Throughput::Bytes((VOCAB * HIDDEN) as u64));
    let id = BenchmarkId::new("head_gemv_i8", "1x128256x2560");
    let head = |(h, s): &mut (_, _), logits: &mut _| device.head_gemm_i8(&a, h, s, logits, 1, VOCAB, HIDDEN).unwrap();
    if let (Some(mut h), "cpu") = (time_with(&mut g, device, id, h8, |h| head(h, &mut logits)), label) {
        let share = trinity_benches::read_bandwidth_share(VOCAB * HIDDEN, 10, &mut || head(&mut h, &mut logits));
        println!("ratio head_gemv_i8 cpu: {share}");
    }
    // Greedy sampling of a decode step of eight sequences over 2B-4T's vocabulary.
    let logits = filled(device, 8 * VOCAB, 0.5);
    let mut ids = device.alloc::<u32>(8).unwrap();
    g.throughput(Throughput::Bytes((8 * VOCAB * 4) as u64));
    time(&mut g, BenchmarkId::new("argmax", "8x128256"), &mut || device.argmax(&logits, VOCAB, &mut ids).unwrap());
    g.finish();
}

/// A case whose inputs are built on its first call, outside the timing, so a
/// filter that skips it skips building them (the lm_heads are 656 and 328 MB,
/// the 30 layers' caches 157 MB); returns them when the case ran.
fn time_with<S>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    device: &Device,
    id: BenchmarkId,
    setup: impl FnOnce() -> S,
    mut f: impl FnMut(&mut S),
) -> Option<S> {
    let (mut state, mut setup) = (None, Some(setup));
    g.bench_function(id, |b| {
        let s = state.get_or_insert_with(|| (setup.take().expect("built once"))());
        b.iter(|| {
            f(s);
            device.synchronize().unwrap();
        })
    });
    state
}

fn bench_layer_ops(c: &mut Criterion) {
    bench_device(c, &Device::Cpu, "cpu");
    if let Some(gpu) = trinity_benches::gpu("layer_ops") {
        bench_device(c, &Device::Cuda(gpu), "cuda");
    }
}

fn bench_decode_step(c: &mut Criterion) {
    bench_model(c, &Device::Cpu, "cpu");
    if let Some(gpu) = trinity_benches::gpu("model") {
        bench_model(c, &Device::Cuda(gpu), "cuda");
    }
}

/// The smallest published shape, random weights: a decode step (each lm_head
/// precision the backend has), a batched decode step and a 64-token prefill.
fn bench_model(c: &mut Criterion, device: &Device, label: &str) {
    use trinity_model::{BitNet, HeadPrecision, KvCache, SeqChunk};
    let Some(cfg) = trinity_model::config::shape("bitnet_b1_58-large") else { return };
    // The 729 M-parameter model is made on the first case that runs, so a
    // filter that skips the group skips its random weights too.
    let mut model: Option<BitNet> = None;
    let mut make = || BitNet::random(cfg.clone(), device, 1).unwrap();
    let mut g = c.benchmark_group(format!("model/bitnet_b1_58-large/{label}"));
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    // Decode after a 64-token prompt: the cache is cut back to the prompt before each step.
    let prompt: Vec<u32> = (0..64).collect();
    let prompted = |model: &BitNet| -> KvCache {
        let mut cache = model.new_cache(256).unwrap();
        model.forward(&prompt, &mut cache, false).unwrap();
        cache
    };
    let mut cache: Option<KvCache> = None;
    for head in [HeadPrecision::F32, HeadPrecision::F16, HeadPrecision::Int8] {
        let name = match head {
            HeadPrecision::F32 => "decode_step_ctx64".to_owned(),
            h => format!("decode_step_ctx64_head_{h}"),
        };
        g.bench_function(name, |b| {
            let model = model.get_or_insert_with(&mut make);
            model.set_head_precision(head).unwrap();
            let cache = cache.get_or_insert_with(|| prompted(model));
            b.iter(|| {
                cache.truncate(0, 64);
                model.step(cache, &[SeqChunk { slot: 0, tokens: &[7] }], false).unwrap()
            })
        });
    }
    // Eight sequences decoding together (the server's batched step): weights read once for all.
    const BATCH: usize = 8;
    let tokens: Vec<[u32; 1]> = (0..BATCH as u32).map(|i| [i + 3]).collect();
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("decode_step_batch8_ctx64", |b| {
        let model = model.get_or_insert_with(&mut make);
        model.set_head_precision(HeadPrecision::F32).unwrap();
        let mut batch = model.new_batch_cache(BATCH, 256).unwrap();
        for slot in 0..BATCH {
            model.forward_batch(&mut batch, &[SeqChunk { slot, tokens: &prompt }]).unwrap();
        }
        b.iter(|| {
            let chunks: Vec<_> = tokens.iter().enumerate().map(|(slot, t)| SeqChunk { slot, tokens: t }).collect();
            (0..BATCH).for_each(|slot| batch.truncate(slot, 64));
            model.forward_batch(&mut batch, &chunks).unwrap()
        })
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("prefill_64", |b| {
        let model = model.get_or_insert_with(&mut make);
        model.set_head_precision(HeadPrecision::F32).unwrap();
        b.iter_batched_ref(
            || model.new_cache(256).unwrap(),
            |cache| model.forward(&prompt, cache, false).unwrap(),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_layer_ops, bench_decode_step);
criterion_main!(benches);

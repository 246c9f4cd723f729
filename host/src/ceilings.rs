//! # The CPU's own ceilings, measured in the run that is compared to them
//!
//! A figure means little alone on a shared machine whose neighbours change
//! from day to day; its ratio to a ceiling measured minutes apart on the same
//! machine does. Two ceilings bound the CPU's model figures:
//!
//! - [`read_bandwidth`]: bytes per second all threads read from memory
//!   (a buffer far larger than the caches, summed in vector lanes). Decode at
//!   batch 1 reads every weight once per token, so `tokens/s × bytes per
//!   token / read bandwidth` is its fraction of the memory bound.
//! - [`int8_macs_per_s`]: int8 multiply-adds per second, all threads, of
//!   the byte dot-product instruction the prefill path of the ternary matmul
//!   issues ([`int8_peak_instruction`]: AMX `tdpbusd` on tiles, AVX-512
//!   `vpdpbusd`, or AVX2 `vpmaddubsw` + add), on register operands: the
//!   compute bound of the ternary matmul, which prefill is.
//!
//! On a GPU the compute ceiling is [`gpu_int8_macs_per_s`]: cuBLASLt's INT8
//! tensor-core GEMM on a large square shape, the fastest int8 multiply-adds
//! the vendor library gets from the card in this run.

use std::time::Instant;

use rayon::prelude::*;

/// The best of `reps` passes of all threads reading `bytes` bytes (rounded
/// down to whole 4 KiB pages, at least one); bytes per second.
pub fn read_bandwidth(bytes: usize, reps: usize) -> f64 {
    let words = (bytes / 4096).max(1) * 512;
    // Written once, so every page is really there before the timing.
    let buf: Vec<u64> = (0..words as u64).collect();
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        std::hint::black_box(read_pass(&buf));
        best = best.min(t.elapsed().as_secs_f64());
    }
    (words * 8) as f64 / best
}

/// One pass of [`read_bandwidth`]: all threads read `buf` once; returns a
/// checksum so nothing is optimized away. For a caller that times the passes
/// itself (`trinity run` times them as one of its benchmarks).
pub fn read_pass(buf: &[u64]) -> u64 {
    buf.par_chunks(64 * 1024).map(xor_fold).reduce(|| 0, |a, b| a ^ b)
}

/// How far ahead of its loads [`xor_fold`] prefetches (16 KiB, as the lm_head
/// GEMV does). Without it the fold read 57–67 GB/s on the 2-core Zen 5 EPYC
/// while the same loop with it read 69–76, and the lm_head GEMV, which
/// prefetches, ran faster than such a ceiling: a bound the kernels beat is no
/// bound.
const READ_PREFETCH_BYTES: usize = 16384;

/// XOR of the words: 512-bit loads where the CPU has AVX-512 F, else eight
/// lanes the compiler keeps in vector registers; both prefetch
/// [`READ_PREFETCH_BYTES`] ahead, as the kernels whose bound this is do.
fn xor_fold(v: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512 F (checked just above).
        return unsafe { xor_fold_avx512(v) };
    }
    xor_fold_lanes(v)
}

fn xor_fold_lanes(v: &[u64]) -> u64 {
    let mut lanes = [0u64; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks.remainder().iter().fold(0, |a, b| a ^ b);
    for (i, c) in chunks.enumerate() {
        prefetch(v.as_ptr().wrapping_add(8 * i).cast::<u8>().wrapping_add(READ_PREFETCH_BYTES));
        for i in 0..8 {
            lanes[i] ^= c[i];
        }
    }
    lanes.iter().fold(tail, |a, b| a ^ b)
}

/// Four 512-bit accumulators over 256 bytes a step, then [`xor_fold_lanes`]
/// for the words past the last step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn xor_fold_avx512(v: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    const STEP: usize = 32;
    let mut acc = [_mm512_setzero_si512(); 4];
    let mut i = 0;
    while i + STEP <= v.len() {
        for (q, a) in acc.iter_mut().enumerate() {
            prefetch(v.as_ptr().wrapping_add(i + 8 * q).cast::<u8>().wrapping_add(READ_PREFETCH_BYTES));
            // SAFETY: `i + 8q + 8 ≤ v.len()` words.
            *a = _mm512_xor_si512(*a, unsafe { _mm512_loadu_si512(v.as_ptr().add(i + 8 * q).cast()) });
        }
        i += STEP;
    }
    let all = _mm512_xor_si512(_mm512_xor_si512(acc[0], acc[1]), _mm512_xor_si512(acc[2], acc[3]));
    let mut lanes = [0u64; 8];
    // SAFETY: 8 words into an 8-element array.
    unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), all) };
    lanes.iter().fold(xor_fold_lanes(&v[i..]), |a, b| a ^ b)
}

/// A hint to bring the line at `p` into the cache; it never faults, so `p`
/// may point past the buffer.
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint and never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The instruction [`int8_macs_per_s`] measures: the one the CPU's ternary
/// prefill path issues (`None` on the portable path, which has none).
pub fn int8_peak_instruction() -> Option<&'static str> {
    match crate::cpu_ternary::simd_level() {
        "amx-int8" => Some("AMX tdpbusd"),
        "avx512-vnni" => Some("AVX-512 vpdpbusd"),
        "avx2" => Some("AVX2 vpmaddubsw"),
        _ => None,
    }
}

/// Int8 multiply-adds per second of all threads at the peak of
/// [`int8_peak_instruction`], the best of `reps` passes; `None` on the
/// portable path (no such instruction to measure).
pub fn int8_macs_per_s(reps: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        // (iterations per pass, multiply-adds per iteration, the loop).
        let (iters, macs, run): (u64, u64, fn(u64, i8) -> i64) = match crate::cpu_ternary::simd_level() {
            // SAFETY (each arm): the CPU's ternary path is this level, so it has the instructions.
            "amx-int8" => {
                (200_000, crate::cpu_ternary::AMX_PEAK_MACS, |n, s| unsafe { crate::cpu_ternary::amx_peak_loop(n, s) })
            }
            "avx512-vnni" => (2_000_000, CHAINS as u64 * 64, |n, s| unsafe { dpbusd_loop(n, s) }),
            "avx2" => (2_000_000, CHAINS as u64 * 32, |n, s| unsafe { maddubs_loop(n, s) }),
            _ => return None,
        };
        let threads = rayon::current_num_threads();
        let mut best = f64::INFINITY;
        for _ in 0..reps.max(1) {
            let t = Instant::now();
            let x: i64 = (0..threads).into_par_iter().map(|i| run(iters, i as i8)).sum();
            std::hint::black_box(x);
            best = best.min(t.elapsed().as_secs_f64());
        }
        Some((threads as u64 * iters * macs) as f64 / best)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = reps;
        None
    }
}

/// `iters` rounds of [`CHAINS`] independent 512-bit `vpdpbusd` chains (64
/// byte products each); returns a checksum so nothing is optimized away.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn dpbusd_loop(iters: u64, seed: i8) -> i64 {
    use std::arch::x86_64::*;
    let b = _mm512_set1_epi8(seed | 1);
    let mut acc: [__m512i; CHAINS] = std::array::from_fn(|i| _mm512_set1_epi8(i as i8));
    for _ in 0..iters {
        for c in acc.iter_mut() {
            *c = _mm512_dpbusd_epi32(*c, *c, b);
        }
    }
    let s = acc.iter().fold(_mm512_setzero_si512(), |s, &c| _mm512_add_epi32(s, c));
    _mm512_reduce_add_epi32(s) as i64
}

/// `iters` rounds of [`CHAINS`] independent `vpmaddubsw` + 16-bit add
/// chains (the pair the ternary kernels issue; 12 chains cover the pair's
/// latency at two per cycle); returns a checksum so nothing is optimized away.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn maddubs_loop(iters: u64, seed: i8) -> i64 {
    use std::arch::x86_64::*;
    let b = _mm256_set1_epi8(seed | 1);
    // Each product reads its own accumulator, so none is loop-invariant.
    let mut acc: [__m256i; CHAINS] = std::array::from_fn(|i| _mm256_set1_epi8(i as i8));
    for _ in 0..iters {
        for c in acc.iter_mut() {
            *c = _mm256_add_epi16(*c, _mm256_maddubs_epi16(*c, b));
        }
    }
    let mut lanes = [0i16; 16];
    let s = acc.iter().fold(_mm256_setzero_si256(), |s, &c| _mm256_add_epi16(s, c));
    // SAFETY: 16 i16 lanes into a 16-element array.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), s) };
    lanes.iter().map(|&v| v as i64).sum()
}

/// Independent chains of [`maddubs_loop`].
#[cfg(target_arch = "x86_64")]
const CHAINS: usize = 12;

/// Int8 multiply-adds per second of cuBLASLt's INT8 GEMM (int32 results) at
/// `n × n × n`, the best of `reps` timed runs after one untimed: the GPU's
/// int8 tensor-core ceiling for prefill.
pub fn gpu_int8_macs_per_s(gpu: &crate::cuda::CudaBackend, n: usize, reps: usize) -> crate::KernelResult<f64> {
    let plan = crate::cublaslt_int8::Int8Gemm::new(gpu, n, n, n)?;
    let values: Vec<i8> = (0..n * n).map(|i| ((i * 37 + 11) % 255) as i8).collect();
    let (a, w) = (gpu.upload(&values)?, gpu.upload(&values)?);
    let mut c = gpu.zeros::<i32>(n * n)?;
    plan.run(&a, &w, &mut c)?;
    gpu.synchronize()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        plan.run(&a, &w, &mut c)?;
        gpu.synchronize()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok((n * n * n) as f64 / best)
}

/// Bytes per second a device-to-device copy of `bytes` reads and writes
/// (2 · `bytes` per copy), the best of `reps` copies timed by CUDA events after
/// one untimed: the GPU's bandwidth ceiling for decode.
pub fn gpu_copy_bandwidth(gpu: &crate::cuda::CudaBackend, bytes: usize, reps: usize) -> crate::KernelResult<f64> {
    let src = gpu.zeros::<u8>(bytes)?;
    let mut dst = gpu.zeros::<u8>(bytes)?;
    gpu.copy(&src, &mut dst)?;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        best = best.min(gpu.time(1, || gpu.copy(&src, &mut dst))?.as_secs_f64());
    }
    Ok(2.0 * bytes as f64 / best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_fold_covers_every_word() {
        let v: Vec<u64> = (0..64).map(|i| 1u64 << i).collect();
        assert_eq!(xor_fold(&v), u64::MAX);
        assert_eq!(xor_fold(&v[..63]), u64::MAX >> 1);
        assert_eq!(xor_fold_lanes(&v[..63]), u64::MAX >> 1);
        // Three whole 32-word steps and a tail; bits 0–36 come twice and cancel.
        let w: Vec<u64> = (0..101).map(|i| 1u64 << (i % 64)).collect();
        let want = (0..101).fold(0u64, |a, i| a ^ (1u64 << (i % 64)));
        assert_eq!(want, u64::MAX << 37);
        assert_eq!(xor_fold(&w), want);
        assert_eq!(xor_fold_lanes(&w), want);
    }

    #[test]
    fn ceilings_are_positive_and_finite() {
        let bw = read_bandwidth(1 << 20, 1);
        assert!(bw.is_finite() && bw > 0.0, "{bw}");
        if let Some(p) = int8_macs_per_s(1) {
            assert!(p.is_finite() && p > 0.0, "{p}");
        }
    }
}

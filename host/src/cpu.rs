//! # The CPU paths: fast, multithreaded, SIMD where it pays
//!
//! What the `cpu` arm of every op in [`crate::ops`] runs, on host slices.
//! The scalar references the other backends are checked against are in
//! [`crate::reference`], written on their own (they share no arithmetic helper
//! with these paths or with the kernels).

use half::f16;
#[cfg(target_arch = "x86_64")]
mod attention_blocks;
#[cfg(target_arch = "x86_64")]
mod attention_blocks_avx2;
#[cfg(target_arch = "x86_64")]
mod attention_groups;
#[cfg(target_arch = "x86_64")]
mod attention_groups_avx2;
#[cfg(target_arch = "x86_64")]
mod vector_exp;

use rayon::prelude::*;

use crate::buffer::ActivationElem;
use kernels_gpu::format;

/// Rows (a decode step's one or two) up to which an op runs on the calling
/// thread: handing them to the thread pool costs more than the work.
const SERIAL_ROWS: usize = 2;

/// Runs `f` on a thread of rayon's global pool (directly when the caller is
/// already one) and returns its result.
///
/// The CPU ops split their work across that pool. Called from a thread
/// outside it, each op hands its work to the pool and sleeps until the pool
/// is done: a wake-up each way, which costs about 10 µs on a 2-vCPU VM, as
/// much as a decode GEMV of 256 rows. Called from a pool thread, the op runs
/// its share on the calling thread while the other threads take the rest, and
/// nothing waits on a wake-up. A decode loop of a hundred ops per token that
/// runs inside `on_pool_thread` saves that hand-off on every op; the results
/// are the same (no op's arithmetic depends on which thread runs it).
pub fn on_pool_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    match rayon::current_thread_index() {
        Some(_) => f(),
        None => rayon::scope(|_| f()),
    }
}

/// `unpack_i8` on the CPU.
pub fn unpack_i8(words: &[u32], rows: usize, cols: usize, out: &mut [i8]) {
    if cols == 0 || rows == 0 {
        return;
    }
    let wpr = format::words_per_row(cols);
    out.par_chunks_mut(cols).zip(words.par_chunks(wpr)).for_each(|(row, words)| {
        for (chunk, &word) in row.chunks_mut(format::WEIGHTS_PER_WORD).zip(words) {
            for (j, o) in chunk.iter_mut().enumerate() {
                *o = format::decode(word >> (2 * j));
            }
        }
    });
}

/// `unpack_f16` on the CPU.
pub fn unpack_f16(words: &[u32], rows: usize, cols: usize, scale: f32, out: &mut [f16]) {
    let mut trits = vec![0i8; rows * cols];
    unpack_i8(words, rows, cols, &mut trits);
    let values = [f16::from_f32(-scale), f16::ZERO, f16::from_f32(scale)];
    out.par_iter_mut().zip(trits.par_iter()).for_each(|(o, &t)| *o = values[(t + 1) as usize]);
}

/// The quantizer on the CPU: `rows × cols` activations into int8 rows of `k_pad`.
pub fn quantize<E: ActivationElem>(
    x: &[E],
    rows: usize,
    cols: usize,
    k_pad: usize,
    words: &mut [u32],
    scales: &mut [f32],
    sums: &mut [i32],
) {
    let values: &mut [i8] = bytemuck::cast_slice_mut(words);
    let per_row: Vec<(f32, i32)> = values[..rows * k_pad]
        .par_chunks_mut(k_pad)
        .enumerate()
        .map_init(Vec::new, |buf, (r, q)| {
            q.fill(0);
            let row = E::row_as_f32(&x[r * cols..][..cols], buf);
            quantize_row(row, &mut q[..cols])
        })
        .collect();
    for (r, (scale, sum)) in per_row.into_iter().enumerate() {
        scales[r] = scale;
        sums[r] = sum;
    }
}

/// RMSNorm fused with the quantizer on the CPU: each row of `x` (rows of
/// `w.len()`) normalized as [`rms_norm`] does it into a per-thread scratch
/// row, then quantized into an int8 row of `k_pad`; the values of `rms_norm`
/// followed by [`quantize`], with one parallel pass and no normalized buffer.
pub fn rms_norm_quantize(
    x: &[f32],
    w: &[f32],
    eps: f32,
    k_pad: usize,
    words: &mut [u32],
    scales: &mut [f32],
    sums: &mut [i32],
) {
    let cols = w.len();
    let rows = x.len() / cols;
    let values: &mut [i8] = bytemuck::cast_slice_mut(words);
    let (values, scales, sums) = (&mut values[..rows * k_pad], &mut scales[..rows], &mut sums[..rows]);
    let one_row = |buf: &mut Vec<f32>, (((q, row), scale), sum): NormRow<'_, &[f32]>| {
        (*scale, *sum) = norm_quantize_row(row, w, eps, buf, q);
    };
    if rows <= SERIAL_ROWS {
        let mut buf = Vec::new();
        let rows = values.chunks_mut(k_pad).zip(x.chunks(cols)).zip(scales.iter_mut()).zip(sums.iter_mut());
        rows.for_each(|r| one_row(&mut buf, r));
    } else {
        let rows = values.par_chunks_mut(k_pad).zip(x.par_chunks(cols)).zip(scales.par_iter_mut());
        rows.zip(sums.par_iter_mut()).for_each_init(Vec::new, one_row);
    }
}

/// One row's share of a fused norm: its int8 row, its input `X`, its scale and its sum.
type NormRow<'r, X> = (((&'r mut [i8], X), &'r mut f32), &'r mut i32);

/// What the fused norms of a BitNet layer do to a row before normalizing it.
#[derive(Debug, Clone, Copy)]
pub enum RowUpdate<'a> {
    /// `x ← x + delta` (the residual connection), `delta` shaped as `x`.
    Add(&'a [f32]),
    /// `x ← act(x) · up` ([`gated`]), `up` shaped as `x`.
    Gated(&'a [f32], u32),
}

/// [`rms_norm_quantize`] of `x` after `update` changed it in place, row by
/// row: each row is updated, normalized and quantized while it is in the L1,
/// in one parallel pass (as two ops, a prefill's rows went through the caches
/// twice, and the add ran on one thread). The same values as the update over
/// all of `x` followed by [`rms_norm_quantize`].
#[allow(clippy::too_many_arguments)]
pub fn update_rms_norm_quantize(
    update: RowUpdate<'_>,
    x: &mut [f32],
    w: &[f32],
    eps: f32,
    k_pad: usize,
    words: &mut [u32],
    scales: &mut [f32],
    sums: &mut [i32],
) {
    let cols = w.len();
    let rows = x.len() / cols;
    let (RowUpdate::Add(other) | RowUpdate::Gated(other, _)) = update;
    assert_eq!(other.len(), x.len(), "the update's operand is shaped as x (checked by the op)");
    let values: &mut [i8] = bytemuck::cast_slice_mut(words);
    let (values, scales, sums) = (&mut values[..rows * k_pad], &mut scales[..rows], &mut sums[..rows]);
    let one_row = |buf: &mut Vec<f32>, (((q, (row, other)), scale), sum): NormRow<'_, (&mut [f32], &[f32])>| {
        match update {
            RowUpdate::Add(_) => row.iter_mut().zip(other).for_each(|(a, b)| *a += b),
            RowUpdate::Gated(_, act) => gated_run(row, other, act),
        }
        (*scale, *sum) = norm_quantize_row(row, w, eps, buf, q);
    };
    if rows <= SERIAL_ROWS {
        let mut buf = Vec::new();
        let rows = values.chunks_mut(k_pad).zip(x.chunks_mut(cols).zip(other.chunks(cols)));
        rows.zip(scales.iter_mut()).zip(sums.iter_mut()).for_each(|r| one_row(&mut buf, r));
    } else {
        let rows = values.par_chunks_mut(k_pad).zip(x.par_chunks_mut(cols).zip(other.par_chunks(cols)));
        rows.zip(scales.par_iter_mut()).zip(sums.par_iter_mut()).for_each_init(Vec::new, one_row);
    }
}

/// One row of [`rms_norm_quantize`]: `row` normalized into `buf` (as
/// [`rms_norm`] does it), then quantized into `q` (its first `row.len()`
/// bytes; the padding past them zeroed); returns (scale, sum).
fn norm_quantize_row(row: &[f32], w: &[f32], eps: f32, buf: &mut Vec<f32>, q: &mut [i8]) -> (f32, i32) {
    let cols = row.len();
    buf.resize(cols, 0.0);
    rms_norm_row(row, w, eps, buf);
    q[cols..].fill(0);
    quantize_row(buf, &mut q[..cols])
}

/// One row of the quantizer with the kernels' scale and rounding functions;
/// returns (scale, sum).
fn quantize_row(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if uses_avx512f() {
        // SAFETY: the CPU has AVX-512 F (checked by `uses_avx512f`).
        return unsafe { quantize_row_avx512(x, q) };
    }
    #[cfg(target_arch = "x86_64")]
    if uses_fma() {
        // SAFETY: the CPU has AVX2 (checked by `uses_fma`).
        return unsafe { quantize_row_avx2(x, q) };
    }
    quantize_row_generic(x, q)
}

#[inline(always)]
fn quantize_row_generic(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    use kernels_gpu::matmul::{activation_scale, quantize_value};
    // A branchy max (not f32::max, whose NaN rule blocks vectorization); |x| is exact.
    let absmax = x.iter().fold(0.0f32, |m, v| if v.abs() > m { v.abs() } else { m });
    let scale = activation_scale(absmax);
    let mut sum = 0i32;
    for (o, &v) in q.iter_mut().zip(x) {
        *o = quantize_value(v, scale);
        sum += *o as i32;
    }
    (scale, sum)
}

/// The same code compiled for AVX2, where rounding is one instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_row_avx2(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    quantize_row_generic(x, q)
}

/// [`quantize_row_generic`] 16 lanes at a time, with the same IEEE operations:
/// `|x|` and its maximum (a NaN is skipped, as the generic fold skips it), one
/// product `x · scale`, rounding to nearest even, the clamp (a NaN becomes 0,
/// as `as i8` makes it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn quantize_row_avx512(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    use kernels_gpu::matmul::activation_scale;
    use std::arch::x86_64::*;
    let n = x.len().min(q.len());
    let live = |i: usize| first_lanes(n - i);
    let mut max = _mm512_setzero_ps();
    for i in (0..n).step_by(16) {
        // SAFETY: the mask limits the load to the `n - i` elements left.
        let v = unsafe { _mm512_maskz_loadu_ps(live(i), x.as_ptr().add(i)) };
        // `vmaxps` returns its second operand when either is NaN: the running maximum.
        max = _mm512_max_ps(_mm512_abs_ps(v), max);
    }
    let scale = activation_scale(_mm512_reduce_max_ps(max));
    let (s, lo, hi) = (_mm512_set1_ps(scale), _mm512_set1_ps(-128.0), _mm512_set1_ps(127.0));
    let mut sum = _mm512_setzero_si512();
    for i in (0..n).step_by(16) {
        let m = live(i);
        // SAFETY: as above; the store is masked the same way.
        unsafe {
            let v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x.as_ptr().add(i)), s);
            let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            let c = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
            let c = _mm512_mask_mov_ps(c, _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v), _mm512_setzero_ps());
            let iv = _mm512_cvtps_epi32(c);
            sum = _mm512_add_epi32(sum, iv);
            _mm512_mask_cvtepi32_storeu_epi8(q.as_mut_ptr().add(i).cast(), m, iv);
        }
    }
    (scale, _mm512_reduce_add_epi32(sum))
}

/// Rows of A up to which [`sgemm`] streams B once with row dot products
/// (a GEMV: the lm_head of a decode step, or of a batched step of up to this
/// many sequences) instead of packing it for a GEMM. Each output is then one
/// fixed-order dot product, so a row's logits do not depend on how many rows
/// share the call: batching sequences never changes their results.
pub const SGEMM_GEMV_MAX_M: usize = 64;

/// FP32 `C = A · Bᵀ` (A: m×k, B: n×k, C: m×n): `matrixmultiply` for
/// prefill-sized `m`, a multithreaded pass over B's rows for a few rows of A.
pub fn sgemm(a: &[f32], b: &[f32], c: &mut [f32], m: usize, n: usize, k: usize) {
    assert!(a.len() >= m * k && b.len() >= n * k && c.len() >= m * n, "sgemm buffers checked by the op");
    if m <= SGEMM_GEMV_MAX_M {
        // Column blocks of C, each from a contiguous band of B's rows.
        let mut ct = vec![0f32; n * m];
        ct.par_chunks_mut(256 * m).enumerate().for_each(|(blk, out)| {
            for (j, o) in out.chunks_mut(m).enumerate() {
                let brow = &b[(blk * 256 + j) * k..][..k];
                for (i, v) in o.iter_mut().enumerate() {
                    *v = dot(&a[i * k..][..k], brow);
                }
            }
        });
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = ct[j * m + i];
            }
        }
        return;
    }
    // SAFETY: the strides describe the buffers (lengths asserted above): A is
    // m×k row-major, B is n×k row-major read as its transpose (k×n with
    // strides 1, k), C is m×n.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            1,
            k as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    };
}

/// The weights of a 16-bit or int8 lm_head, read by [`head_gemm`].
#[derive(Debug, Clone, Copy)]
pub enum HeadWeights<'a> {
    /// `n` rows of [`kernels_gpu::head::head_row_len`]`(k)` f16 values (zeros past `k`).
    F16(&'a [f16]),
    /// `n` rows of `head_row_len(k)` int8 values (zeros past `k`); row `j` of the head is `values[j] · scales[j]`.
    Int8 {
        /// The quantized rows.
        values: &'a [i8],
        /// One scale per row.
        scales: &'a [f32],
    },
}

/// Rows of the head per parallel task of [`head_gemm`]: each task streams
/// one contiguous band of the head.
const HEAD_ROWS_PER_TASK: usize = 256;

/// `C = A · Bᵀ` (A: m×k f32, B: n×k in f16 or int8 with per-row scales,
/// rows stored `head_row_len(k)` apart, C: m×n): the logits of a 16-bit or int8 lm_head. Every output is one dot
/// product in a fixed order (8- or 16-lane FMA accumulators, then the int8 row's
/// scale), whatever `m`, so batching rows never changes a row's logits. B is
/// streamed once per 64 rows of A.
pub fn head_gemm(a: &[f32], b: HeadWeights<'_>, c: &mut [f32], m: usize, n: usize, k: usize) {
    let ld = kernels_gpu::head::head_row_len(k);
    let len = match b {
        HeadWeights::F16(v) => v.len(),
        HeadWeights::Int8 { values, scales } => values.len().min(scales.len() * ld),
    };
    assert!(a.len() >= m * k && len >= n * ld && c.len() >= m * n, "head_gemm buffers checked by the op");
    for m0 in (0..m).step_by(SGEMM_GEMV_MAX_M) {
        let mm = (m - m0).min(SGEMM_GEMV_MAX_M);
        let a = &a[m0 * k..][..mm * k];
        // Outputs transposed (n × mm), so each task owns whole rows of the head;
        // one row of A (decode) is its own transpose and is written in place.
        let mut scratch = Vec::new();
        let ct = match mm {
            1 => &mut c[m0 * n..][..n],
            _ => {
                scratch.resize(n * mm, 0f32);
                &mut scratch[..]
            }
        };
        ct.par_chunks_mut(HEAD_ROWS_PER_TASK * mm).enumerate().for_each(|(blk, out)| {
            for (jj, o) in out.chunks_mut(mm).enumerate() {
                let j = blk * HEAD_ROWS_PER_TASK + jj;
                for (i, v) in o.iter_mut().enumerate() {
                    let arow = &a[i * k..][..k];
                    *v = match b {
                        HeadWeights::F16(w) => dot(arow, &w[j * ld..][..k]),
                        HeadWeights::Int8 { values, scales } => dot(arow, &values[j * ld..][..k]) * scales[j],
                    };
                }
            }
        });
        if mm > 1 {
            for i in 0..mm {
                for j in 0..n {
                    c[(m0 + i) * n + j] = scratch[j * mm + i];
                }
            }
        }
    }
}

/// One row of an int8 lm_head: `scale = absmax / 127` and
/// `q = clamp(round_ties_even(x / scale), -127, 127)`, so `q · scale`
/// approximates the row within `scale / 2` per element (an all-zero row gets
/// scale 0 and zeros).
pub fn quantize_head_row(row: &[f32]) -> (Vec<i8>, f32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("sse4.1") {
        // SAFETY: the CPU has SSE4.1 (checked just above).
        return unsafe { quantize_head_row_sse41(row) };
    }
    quantize_head_row_generic(row)
}

#[inline(always)]
fn quantize_head_row_generic(row: &[f32]) -> (Vec<i8>, f32) {
    let absmax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if absmax == 0.0 {
        return (vec![0; row.len()], 0.0);
    }
    let scale = absmax / 127.0;
    (row.iter().map(|&v| (v / scale).round_ties_even().clamp(-127.0, 127.0) as i8).collect(), scale)
}

/// The same code compiled for SSE4.1, where `round_ties_even` is one
/// instruction instead of a call to libm's `rintf` (a model load quantizes
/// every row of the head: 82 M values for 2B-4T).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
fn quantize_head_row_sse41(row: &[f32]) -> (Vec<i8>, f32) {
    quantize_head_row_generic(row)
}

/// An element of the second operand of [`dot`]: f32, or an lm_head's f16 / int8.
trait RowElem: Copy {
    fn to_f32(self) -> f32;
    /// Eight elements at `p`, widened to f32.
    ///
    /// # Safety
    /// `p` points to 8 readable elements; the CPU has AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
    /// Sixteen elements at `p`, widened to f32.
    ///
    /// # Safety
    /// `p` points to 16 readable elements; the CPU has AVX-512 F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
}

impl RowElem for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        // SAFETY: 8 readable floats (the caller's contract).
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> std::arch::x86_64::__m512 {
        // SAFETY: 16 readable floats and AVX-512 F (the caller's contract).
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
}

impl RowElem for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: 8 readable halves (16 bytes) and F16C (the caller's contract).
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: 16 readable halves (32 bytes) and AVX-512 F (the caller's contract).
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }
}

impl RowElem for i8 {
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const i8) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: 8 readable bytes and AVX2 (the caller's contract).
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast()))) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const i8) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: 16 readable bytes and AVX-512 F (the caller's contract).
        unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.cast()))) }
    }
}

/// How far ahead of the current element [`dot`] prefetches the second operand
/// (16 KiB): lm_head rows of 1536 or 2560 elements are too short for the
/// hardware prefetcher. On the 2-core Zen 5 EPYC (Criterion
/// `head_gemv_{f16,i8}`, 2B-4T's head, alternated rounds while the memory was
/// fast) 4 KiB ran at 36–40 GiB/s, 8 KiB at 40–60, 16 KiB at 56–69 (24, 32
/// and 64 KiB alike); while the memory was slow all ran alike (31–57 GiB/s).
const DOT_PREFETCH_BYTES: usize = 16384;

/// How far ahead decode attention prefetches its keys and values (8 KiB:
/// sixteen rows of a 128-value head). By the time a token reaches a layer,
/// the rest of the step's weights have streamed through the caches, so the
/// layer's cache comes from memory. Over 30 layers' caches at context 1024
/// (Criterion `attention_decode_30_layers`, a Zen 5 EPYC, alternated runs):
/// without a prefetch of the values 7.6–8.1 ms; with it, keys at 4 KiB
/// 6.7–7.7 ms, keys at 8 KiB 6.3–7.3 ms. A single layer's cache held in the
/// L3 is within the noise (108–131 µs across all three).
const ATTENTION_PREFETCH_BYTES: usize = 8192;

/// `a · b` on the fastest path this CPU has, in an order fixed for a given CPU
/// (sixteen lanes with AVX-512 F, else eight, then a fixed reduction; never
/// dependent on other rows).
fn dot<E: RowElem>(a: &[f32], b: &[E]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if uses_avx512f() {
        // SAFETY: the CPU has AVX-512 F (checked by `uses_avx512f`).
        return unsafe { dot_avx512(a, b) };
    }
    #[cfg(target_arch = "x86_64")]
    if uses_fma() {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked by `uses_fma`).
        return unsafe { dot_fma(a, b) };
    }
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y.to_f32()).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i].to_f32();
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// How far the float ops vectorize: the quantizer, the lm_head's and
/// attention's dots, the softmax, attention and the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FloatPath {
    /// Plain Rust for the target's baseline.
    Portable,
    /// Eight lanes: AVX2, FMA and F16C.
    Avx2Fma,
    /// Sixteen lanes: AVX-512 F.
    Avx512,
}

impl FloatPath {
    /// Its name, as `trinity info` prints it.
    pub fn name(self) -> &'static str {
        match self {
            FloatPath::Portable => "portable",
            FloatPath::Avx2Fma => "avx2-fma",
            FloatPath::Avx512 => "avx512f",
        }
    }
}

/// The float ops' path: the best this CPU has, capped by the ternary path
/// `TRINITY_CPU_PATH` chooses (`avx2` → [`FloatPath::Avx2Fma`], `portable` →
/// [`FloatPath::Portable`]), so that a test or a comparison under a lesser
/// path runs every op as a CPU without the greater one would. Decided once.
pub fn float_path() -> FloatPath {
    static PATH: std::sync::OnceLock<FloatPath> = std::sync::OnceLock::new();
    *PATH.get_or_init(|| {
        let best = if cpu_has_avx512f() {
            FloatPath::Avx512
        } else if cpu_has_fma() {
            FloatPath::Avx2Fma
        } else {
            FloatPath::Portable
        };
        let cap = match crate::cpu_ternary::forced_level() {
            Some(0) => FloatPath::Portable,
            Some(1) => FloatPath::Avx2Fma,
            _ => FloatPath::Avx512,
        };
        best.min(cap)
    })
}

/// The float ops take the 8-lane AVX2 code (the CPU has AVX2, FMA and F16C).
fn uses_fma() -> bool {
    float_path() >= FloatPath::Avx2Fma
}

/// The float ops take the 16-lane code (the CPU has AVX-512 F).
fn uses_avx512f() -> bool {
    float_path() >= FloatPath::Avx512
}

fn cpu_has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn cpu_has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// [`dot`] with four 16-lane FMA accumulators (64 elements a step), every
/// line of `b` prefetched [`DOT_PREFETCH_BYTES`] ahead, then a fixed-order
/// reduction. The AVX2 [`dot_fma`] does half the elements per instruction:
/// with an int8 lm_head it ran at ~52 GB/s even on rows in the L3 of a Zen 5
/// EPYC, below the memory's bandwidth, so the arithmetic bounded decode's head.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn dot_avx512<E: RowElem>(a: &[f32], b: &[E]) -> f32 {
    use std::arch::x86_64::*;
    const STEP: usize = 64;
    let n = a.len().min(b.len());
    let size = std::mem::size_of::<E>();
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + STEP <= n {
        for line in 0..size {
            // A hint: it never faults, so the address may run past the row.
            let p = b.as_ptr().cast::<u8>().wrapping_add(i * size + DOT_PREFETCH_BYTES + 64 * line);
            _mm_prefetch::<_MM_HINT_T0>(p.cast());
        }
        for (q, c) in acc.iter_mut().enumerate() {
            // SAFETY: `i + 16q + 16 ≤ n` elements of both slices; AVX-512 F is enabled here.
            let (x, y) =
                unsafe { (_mm512_loadu_ps(a.as_ptr().add(i + 16 * q)), E::load16(b.as_ptr().add(i + 16 * q))) };
            *c = _mm512_fmadd_ps(x, y, *c);
        }
        i += STEP;
    }
    // Whole vectors past the last step (attention's head_dim of 96 is one step and two of these).
    let mut q = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 ≤ n` elements of both slices.
        let (x, y) = unsafe { (_mm512_loadu_ps(a.as_ptr().add(i)), E::load16(b.as_ptr().add(i))) };
        acc[q] = _mm512_fmadd_ps(x, y, acc[q]);
        (i, q) = (i + 16, q + 1);
    }
    let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    let tail: f32 = a[i..n].iter().zip(&b[i..n]).map(|(x, y)| x * y.to_f32()).sum();
    _mm512_reduce_add_ps(sum) + tail
}

/// [`dot`] with four 8-lane FMA accumulators (32 elements a step), every
/// line of `b` prefetched [`DOT_PREFETCH_BYTES`] ahead, then a fixed-order
/// reduction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_fma<E: RowElem>(a: &[f32], b: &[E]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let size = std::mem::size_of::<E>();
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        // Every line of the step's `32 · size` bytes (two of f32: one prefetch a
        // step left every other line of an f32 head to the hardware).
        for line in 0..(32 * size).div_ceil(64) {
            // A hint: it never faults, so the address may run past the row.
            let p = b.as_ptr().cast::<u8>().wrapping_add(i * size + DOT_PREFETCH_BYTES + 64 * line);
            _mm_prefetch::<_MM_HINT_T0>(p.cast());
        }
        for (q, c) in acc.iter_mut().enumerate() {
            // SAFETY: `i + 8q + 8 ≤ n` elements of both slices; AVX2, FMA and F16C are enabled here.
            let (x, y) = unsafe { (_mm256_loadu_ps(a.as_ptr().add(i + 8 * q)), E::load8(b.as_ptr().add(i + 8 * q))) };
            *c = _mm256_fmadd_ps(x, y, *c);
        }
        i += 32;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0f32; 8];
    // SAFETY: 8 lanes into an 8-element array.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    let tail: f32 = a[i..n].iter().zip(&b[i..n]).map(|(x, y)| x * y.to_f32()).sum();
    lanes.iter().sum::<f32>() + tail
}

/// `y = w · x / sqrt(mean(x²) + eps)` per row of `x` (`rows × w.len()`), in place.
/// The mean is accumulated in f64 (closer to exact than any f32 order).
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let n = w.len();
    for row in x.chunks_mut(n) {
        let inv = rms_inverse(row, eps);
        for (v, &g) in row.iter_mut().zip(w) {
            *v = g * (*v * inv);
        }
    }
}

/// [`rms_norm`] of one row into `out` (as long as the row), the row left as it is.
fn rms_norm_row(row: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    widest_simd(
        #[inline(always)]
        || {
            let inv = rms_inverse(row, eps);
            for ((o, &v), &g) in out.iter_mut().zip(row).zip(w) {
                *o = g * (v * inv);
            }
        },
    )
}

/// `f()` compiled for the widest vectors the float path allows (AVX-512 F,
/// AVX2, or the target's own), for plain code that the compiler vectorizes:
/// the same IEEE operations in the same order at every width (Rust never
/// contracts a product and a sum into an FMA), so the same values.
#[inline(always)]
fn widest_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if uses_avx512f() {
            // SAFETY: the CPU has AVX-512 F (checked by `uses_avx512f`).
            return unsafe { avx512(f) };
        }
        if uses_fma() {
            // SAFETY: the CPU has AVX2 (checked by `uses_fma`).
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// `1 / sqrt(mean(row²) + eps)`, the mean accumulated in f64.
#[inline(always)]
fn rms_inverse(row: &[f32], eps: f32) -> f32 {
    let ms = sum_of_squares(row) / row.len() as f64;
    1.0 / ((ms as f32) + eps).sqrt()
}

/// `Σ x²` in f64 over 16 independent partial sums (so it vectorizes, two
/// AVX-512 vectors, and does not wait on one long chain of additions).
#[inline(always)]
fn sum_of_squares(x: &[f32]) -> f64 {
    let mut acc = [0f64; 16];
    let chunks = x.chunks_exact(16);
    let tail: f64 = chunks.remainder().iter().map(|&v| v as f64 * v as f64).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v as f64 * v as f64;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// The RoPE tables for positions `0..positions`: `cos` and `sin` of
/// `pos · θ^(−2i/d)`, `positions × head_dim / 2` each, in f32 as transformers
/// builds them (`inv_freq` in f32, the product in f32, then cos / sin).
pub fn rope_tables(head_dim: usize, theta: f32, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32)).collect();
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for p in 0..positions {
        for &f in &inv_freq {
            let a = p as f32 * f;
            cos.push((a as f64).cos() as f32);
            sin.push((a as f64).sin() as f32);
        }
    }
    (cos, sin)
}

/// Rotate-half RoPE on `rows × heads × head_dim` (row `r` at position `positions[r]`), in place.
pub fn rope(x: &mut [f32], heads: usize, head_dim: usize, positions: &[u32], cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    let one_row = |(row, &pos): (&mut [f32], &u32)| {
        let (c, s) = (&cos[pos as usize * half..][..half], &sin[pos as usize * half..][..half]);
        widest_simd(
            #[inline(always)]
            || rope_row(row, head_dim, c, s),
        )
    };
    if positions.len() <= SERIAL_ROWS {
        x.chunks_mut(heads * head_dim).zip(positions).for_each(one_row);
    } else {
        x.par_chunks_mut(heads * head_dim).zip(positions).for_each(one_row);
    }
}

/// [`rope`] of one row's heads at the position of the table rows `c` and `s`.
#[inline(always)]
fn rope_row(row: &mut [f32], head_dim: usize, c: &[f32], s: &[f32]) {
    let half = head_dim / 2;
    for head in row.chunks_mut(head_dim) {
        let (a, b) = head.split_at_mut(half);
        for i in 0..half {
            let (x1, x2) = (a[i], b[i]);
            a[i] = x1 * c[i] - x2 * s[i];
            b[i] = x2 * c[i] + x1 * s[i];
        }
    }
}

/// Causal attention for new query rows, row `r` at position `positions[r]` of
/// the sequence in cache slot `slots[r]` (`slots × kv_heads × context ×
/// head_dim`, position-major within a head). Query head `h` reads KV head
/// `h / (heads / kv_heads)`; scores are scaled by `head_dim^-0.5`; softmax in f32.
/// `scratch` keeps decode's partial results between calls.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    out: &mut [f32],
    slots: &[u32],
    positions: &[u32],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    context: usize,
    scratch: &mut crate::AttentionScratch,
) {
    use rayon::prelude::*;
    let rows = positions.len();
    // A run of consecutive rows of one slot (a prompt chunk) of at least a
    // block's rows takes the prefill blocks; every other row (decode rows,
    // short chunks) the row-at-a-time tasks below. The choice, like a decode
    // row's split, depends on the row's own chunk alone, so batching sequences
    // never changes a row's result.
    #[cfg(target_arch = "x86_64")]
    let loose: Vec<usize> = {
        type Block = unsafe fn(&[f32], &mut [f32], &[usize], &attention_blocks::Kv<'_>, &mut Vec<f32>, &mut Vec<f32>);
        // (rows per block, the fewest rows of a chunk that takes blocks, the block's code)
        let block: Option<(usize, usize, Block)> = match float_path() {
            FloatPath::Avx512 => {
                Some((attention_blocks::QB, attention_blocks::MIN_ROWS, attention_blocks::attention_block))
            }
            // AVX2 has no lane masks: whole 8-value chunks only.
            FloatPath::Avx2Fma if head_dim.is_multiple_of(8) => {
                Some((attention_blocks_avx2::QB, attention_blocks_avx2::QB, attention_blocks_avx2::attention_block))
            }
            _ => None,
        };
        match block.filter(|&(_, min_rows, _)| rows >= min_rows) {
            None => (0..rows).collect(),
            Some((qb, min_rows, run)) => {
                let row_len = heads * head_dim;
                let (mut blocks, mut loose) = (Vec::new(), Vec::new());
                let mut rest = &mut out[..rows * row_len];
                let mut s = 0;
                while s < rows {
                    let e = s + slots[s..].iter().take_while(|&&slot| slot == slots[s]).count();
                    let (chunk, tail) = rest.split_at_mut((e - s) * row_len);
                    rest = tail;
                    if e - s < min_rows {
                        loose.extend(s..e);
                    } else {
                        // Blocks of up to `qb` rows, the last one short.
                        let bounds = (s..e).step_by(qb).map(|b| (b, (b + qb).min(e)));
                        blocks.extend(bounds.zip(chunk.chunks_mut(qb * row_len)).map(|((b, e), o)| (b, e, o)));
                    }
                    s = e;
                }
                // Longest rows first: the blocks left for the last steals are the short ones.
                blocks.into_par_iter().rev().for_each_init(
                    || (Vec::new(), Vec::new()),
                    |(scores, qt), (s, e, o)| {
                        let lens: Vec<usize> = positions[s..e].iter().map(|&p| p as usize + 1).collect();
                        let kv = attention_blocks::Kv {
                            k_cache,
                            v_cache,
                            slot: slots[s] as usize,
                            heads,
                            kv_heads,
                            head_dim,
                            context,
                        };
                        // SAFETY: `float_path` picked the block's code: the CPU has AVX-512 F,
                        // or AVX2 and FMA.
                        unsafe { run(&q[s * row_len..e * row_len], o, &lens, &kv, scores, qt) };
                    },
                );
                loose
            }
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let loose: Vec<usize> = (0..rows).collect();
    if loose.is_empty() {
        // Every row went to the blocks (a prompt chunk alone): no parallel pass over no rows.
        return;
    }
    let group = heads / kv_heads;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        type Group = unsafe fn(&[f32], &[f32], &[f32], usize, &mut [f32], &mut [(f32, f32)], &mut Vec<f32>);
        let run: Option<Group> = match (float_path(), group) {
            (FloatPath::Avx512, 1) => Some(attention_groups::attention_group::<1, 8>),
            (FloatPath::Avx512, 2) => Some(attention_groups::attention_group::<2, 8>),
            (FloatPath::Avx512, 4) => Some(attention_groups::attention_group::<4, 4>),
            (FloatPath::Avx512, 8) => Some(attention_groups::attention_group::<8, 2>),
            // AVX2 has no lane masks: whole 8-value chunks only.
            (FloatPath::Avx2Fma, _) if !head_dim.is_multiple_of(8) => None,
            (FloatPath::Avx2Fma, 1) => Some(attention_groups_avx2::attention_group::<1, 8, 12>),
            (FloatPath::Avx2Fma, 2) => Some(attention_groups_avx2::attention_group::<2, 4, 6>),
            (FloatPath::Avx2Fma, 4) => Some(attention_groups_avx2::attention_group::<4, 2, 3>),
            (FloatPath::Avx2Fma, 8) => Some(attention_groups_avx2::attention_group::<8, 1, 1>),
            _ => None,
        };
        if let Some(run) = run {
            let tasks = attention_splits(&loose, positions, kv_heads, rayon::current_num_threads());
            // One task per (row, KV head, part of its positions): its group's heads
            // (one without GQA) are consecutive, and so are their partial sums.
            // Every task writes all of its sums and parts, so the kept buffers are not cleared.
            let gd = group * head_dim;
            let (sums, parts) = (&mut scratch.cpu_sums, &mut scratch.cpu_parts);
            sums.resize(sums.len().max(tasks.len() * gd), 0.0);
            parts.resize(parts.len().max(tasks.len() * group), (0.0, 0.0));
            let work = sums.par_chunks_mut(gd).zip(parts.par_chunks_mut(group)).zip(&tasks);
            work.for_each_init(Vec::new, |scores, ((o, p), (r, kvh, keys))| {
                let (r, kvh) = (*r, *kvh);
                let base = (slots[r] as usize * kv_heads + kvh) * context * head_dim;
                let qg = &q[(r * heads + kvh * group) * head_dim..][..gd];
                let len = keys.len();
                let (k, v) = (&k_cache[base + keys.start * head_dim..], &v_cache[base + keys.start * head_dim..]);
                let (k, v) = (&k[..len * head_dim], &v[..len * head_dim]);
                // The loops prefetch a fixed distance ahead of their reads: the
                // lines before that distance are asked for here, all at once.
                for rows in [k, v] {
                    for line in rows[..rows.len().min(ATTENTION_PREFETCH_BYTES / 4)].chunks(16) {
                        // SAFETY: prefetch is a hint and never faults.
                        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
                    }
                }
                // SAFETY: `float_path` picked the group's code: the CPU has AVX-512 F,
                // or AVX2 and FMA.
                unsafe { run(qg, k, v, len, o, p, scores) };
            });
            // Each (row, KV head)'s parts are consecutive tasks: rescale each to the
            // largest max, then divide by the total (flash-decoding's combine).
            let mut t = 0;
            while t < tasks.len() {
                let (r, kvh, _) = tasks[t];
                let end = t + tasks[t..].iter().take_while(|&&(r2, k2, _)| (r2, k2) == (r, kvh)).count();
                for g in 0..group {
                    let max = (t..end).map(|s| parts[s * group + g].0).fold(f32::NEG_INFINITY, f32::max);
                    // Each part's max becomes its weight e^(max_s − max), computed once.
                    let mut total = 0f32;
                    for s in t..end {
                        let (m, sum) = &mut parts[s * group + g];
                        *m = (*m - max).exp();
                        total += *m * *sum;
                    }
                    let o = &mut out[(r * heads + kvh * group + g) * head_dim..][..head_dim];
                    o.fill(0.0);
                    for s in t..end {
                        let w = parts[s * group + g].0 / total;
                        for (o, x) in o.iter_mut().zip(&sums[s * gd + g * head_dim..][..head_dim]) {
                            *o += w * x;
                        }
                    }
                }
                t = end;
            }
            return;
        }
    }
    let scale = (head_dim as f32).powf(-0.5);
    // One task per (row, head): each writes its own head_dim outputs.
    let tasks = out[..rows * heads * head_dim].par_chunks_mut(head_dim).enumerate();
    tasks.filter(|(task, _)| loose.binary_search(&(task / heads)).is_ok()).for_each(|(task, o)| {
        let (r, h) = (task / heads, task % heads);
        let len = positions[r] as usize + 1;
        let kvh = h / group;
        let base = (slots[r] as usize * kv_heads + kvh) * context * head_dim;
        let qv = &q[(r * heads + h) * head_dim..][..head_dim];
        let keys = &k_cache[base..][..len * head_dim];
        let mut scores = vec![0f32; len];
        for (s, k) in scores.iter_mut().zip(keys.chunks_exact(head_dim)) {
            *s = dot(qv, k) * scale;
        }
        softmax(&mut scores);
        weighted_sum(&scores, &v_cache[base..][..len * head_dim], o);
    });
}

/// Decode attention's tasks for `rows` (indices into `positions`), `(row, KV
/// head, positions)`, each (row, KV head)'s parts consecutive: a row's
/// positions are split into parts of at least [`ATTENTION_SPLIT_MIN_KEYS`]
/// when the row alone would have fewer than four (row, KV head) pairs per
/// thread, so that no thread waits on another's extra pair. The split depends
/// on the row alone, never on the rows beside it, so that batching leaves a
/// row's sums in the same order.
#[cfg(target_arch = "x86_64")]
fn attention_splits(
    rows: &[usize],
    positions: &[u32],
    kv_heads: usize,
    threads: usize,
) -> Vec<(usize, usize, std::ops::Range<usize>)> {
    let want = (4 * threads).div_ceil(kv_heads).max(1);
    let mut tasks = Vec::new();
    for &r in rows {
        let len = positions[r] as usize + 1;
        let per = len.div_ceil(want.min(len / ATTENTION_SPLIT_MIN_KEYS).max(1));
        for kvh in 0..kv_heads {
            tasks.extend((0..len).step_by(per).map(|k| (r, kvh, k..(k + per).min(len))));
        }
    }
    tasks
}

/// The fewest cached positions in a part of a split decode attention
/// ([`attention_splits`]): below it, a part's combine costs more than the
/// balance gains.
#[cfg(target_arch = "x86_64")]
const ATTENTION_SPLIT_MIN_KEYS: usize = 256;

/// The mask of a 16-lane vector's first `min(n, 16)` lanes: the tail of a
/// loop over 16 elements at a time.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn first_lanes(n: usize) -> u16 {
    if n >= 16 { !0 } else { (1u16 << n) - 1 }
}

/// `scores = e^(scores − max) / Σ e^(scores − max)`, in place (not empty).
fn softmax(scores: &mut [f32]) {
    let (_, total) = exp_shifted(scores);
    let inv = 1.0 / total;
    for s in scores.iter_mut() {
        *s *= inv;
    }
}

/// `scores = e^(scores − max)` in place (not empty); returns `max` and
/// `Σ e^(scores − max)`: a softmax left unnormalized, so that softmaxes over
/// parts of a row can be combined. On a long context this is thousands of
/// `exp` per head and layer, so it takes the 16-lane `exp` where the CPU has
/// AVX-512 F.
fn exp_shifted(scores: &mut [f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if uses_avx512f() {
        // SAFETY: the CPU has AVX-512 F (checked by `uses_avx512f`).
        return unsafe { exp_shifted_avx512(scores) };
    }
    #[cfg(target_arch = "x86_64")]
    if uses_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked by `uses_fma`).
        return unsafe { exp_shifted_avx2(scores) };
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        total += *s;
    }
    (max, total)
}

/// [`exp_shifted`] 16 lanes at a time, the tail masked.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn exp_shifted_avx512(scores: &mut [f32]) -> (f32, f32) {
    use std::arch::x86_64::*;
    let n = scores.len();
    let live = |i: usize| first_lanes(n - i);
    let at = scores.as_mut_ptr();
    let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
    for i in (0..n).step_by(16) {
        // SAFETY: the mask limits the load to the `n - i` scores left (as in the loop below).
        max = _mm512_max_ps(max, unsafe { _mm512_mask_loadu_ps(max, live(i), at.add(i)) });
    }
    let max = _mm512_reduce_max_ps(max);
    let shift = _mm512_set1_ps(max);
    let mut total = _mm512_setzero_ps();
    for i in (0..n).step_by(16) {
        // SAFETY: as above.
        unsafe {
            let s = _mm512_maskz_loadu_ps(live(i), at.add(i));
            // Lanes past the end would add e^(0 − max) to the total.
            let p = _mm512_maskz_mov_ps(live(i), vector_exp::exp(_mm512_sub_ps(s, shift)));
            total = _mm512_add_ps(total, p);
            _mm512_mask_storeu_ps(at.add(i), live(i), p);
        }
    }
    (max, _mm512_reduce_add_ps(total))
}

/// [`exp_shifted`] 8 lanes at a time, the tail in scalar code.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_shifted_avx2(scores: &mut [f32]) -> (f32, f32) {
    use std::arch::x86_64::*;
    let (body, tail) = scores.split_at_mut(scores.len() / 8 * 8);
    let mut lanes = _mm256_set1_ps(f32::NEG_INFINITY);
    for c in body.chunks_exact(8) {
        // SAFETY: 8 scores.
        lanes = _mm256_max_ps(lanes, unsafe { _mm256_loadu_ps(c.as_ptr()) });
    }
    let mut m = [0f32; 8];
    // SAFETY: 8 lanes into 8 floats.
    unsafe { _mm256_storeu_ps(m.as_mut_ptr(), lanes) };
    let max = m.iter().chain(tail.iter()).copied().fold(f32::NEG_INFINITY, f32::max);
    let shift = _mm256_set1_ps(max);
    let mut total = _mm256_setzero_ps();
    for c in body.chunks_exact_mut(8) {
        // SAFETY: 8 scores in and out.
        unsafe {
            let p = vector_exp::exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), shift));
            total = _mm256_add_ps(total, p);
            _mm256_storeu_ps(c.as_mut_ptr(), p);
        }
    }
    let mut t = [0f32; 8];
    // SAFETY: 8 lanes into 8 floats.
    unsafe { _mm256_storeu_ps(t.as_mut_ptr(), total) };
    let mut total: f32 = t.iter().sum();
    for s in tail {
        *s = (*s - max).exp();
        total += *s;
    }
    (max, total)
}

/// `out = Σ_j weights[j] · values[j]` over rows of `out.len()` values.
fn weighted_sum(weights: &[f32], values: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if uses_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked by `uses_fma`).
        return unsafe { weighted_sum_fma(weights, values, out) };
    }
    weighted_sum_columns(weights, values, out, 0, out.len());
}

/// [`weighted_sum`] compiled for AVX2 + FMA: columns in groups of 64 whose
/// sums stay in eight vector registers across all the rows (one load and
/// one FMA per 8 values, no reload of the output), then the narrower rest.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn weighted_sum_fma(weights: &[f32], values: &[f32], out: &mut [f32]) {
    let d = out.len();
    let mut c = 0;
    while c + 64 <= d {
        weighted_sum_group::<64>(weights, values, out, c);
        c += 64;
    }
    if c + 32 <= d {
        weighted_sum_group::<32>(weights, values, out, c);
        c += 32;
    }
    if c + 16 <= d {
        weighted_sum_group::<16>(weights, values, out, c);
        c += 16;
    }
    weighted_sum_columns(weights, values, out, c, d);
}

/// Columns `c .. c + G` of [`weighted_sum`], the sums in a register-sized array.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn weighted_sum_group<const G: usize>(weights: &[f32], values: &[f32], out: &mut [f32], c: usize) {
    let d = out.len();
    let mut acc = [0f32; G];
    for (&w, row) in weights.iter().zip(values.chunks_exact(d)) {
        let v: &[f32; G] = row[c..c + G].try_into().expect("G columns");
        for i in 0..G {
            acc[i] = w.mul_add(v[i], acc[i]);
        }
    }
    out[c..c + G].copy_from_slice(&acc);
}

/// Columns `c0 .. c1` of [`weighted_sum`], one at a time across the rows.
#[inline(always)]
fn weighted_sum_columns(weights: &[f32], values: &[f32], out: &mut [f32], c0: usize, c1: usize) {
    let d = out.len();
    out[c0..c1].fill(0.0);
    for (&w, row) in weights.iter().zip(values.chunks_exact(d)) {
        for (acc, &v) in out[c0..c1].iter_mut().zip(&row[c0..c1]) {
            *acc += w * v;
        }
    }
}

/// Elements of [`gated`] per parallel task; fewer run on the calling thread.
const GATED_CHUNK: usize = 16 * 1024;

/// `act(gate) · up`, elementwise, into `gate` (`act`: `kernels_gpu::kernels::ACT_RELU2` or `ACT_SILU`).
/// SiLU takes a vector `exp` (within 2 ulp of `f32::exp`) where the CPU has AVX-512 F or AVX2 and FMA.
pub fn gated(gate: &mut [f32], up: &[f32], act: u32) {
    if gate.len() <= GATED_CHUNK {
        gated_run(gate, up, act);
    } else {
        gate.par_chunks_mut(GATED_CHUNK).zip(up.par_chunks(GATED_CHUNK)).for_each(|(g, u)| gated_run(g, u, act));
    }
}

/// [`gated`] on this thread, in the widest SIMD this CPU has.
fn gated_run(gate: &mut [f32], up: &[f32], act: u32) {
    #[cfg(target_arch = "x86_64")]
    if uses_avx512f() {
        // SAFETY: the CPU has AVX-512 F (checked by `uses_avx512f`).
        return unsafe { gated_avx512(gate, up, act) };
    }
    #[cfg(target_arch = "x86_64")]
    if uses_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked by `uses_fma`).
        return unsafe { gated_avx2(gate, up, act) };
    }
    gated_scalar(gate, up, act)
}

fn gated_scalar(gate: &mut [f32], up: &[f32], act: u32) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let a = if act == kernels_gpu::kernels::ACT_RELU2 {
            let r = g.max(0.0);
            r * r
        } else {
            *g / (1.0 + (-*g).exp())
        };
        *g = a * u;
    }
}

/// [`gated_scalar`] 16 lanes at a time (ReLU² bit for bit; SiLU with the vector `exp`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn gated_avx512(gate: &mut [f32], up: &[f32], act: u32) {
    use std::arch::x86_64::*;
    let n = gate.len().min(up.len());
    let one = _mm512_set1_ps(1.0);
    for i in (0..n).step_by(16) {
        let live = first_lanes(n - i);
        // SAFETY: the mask limits both loads and the store to the `n - i` elements left.
        unsafe {
            let g = _mm512_maskz_loadu_ps(live, gate.as_ptr().add(i));
            let u = _mm512_maskz_loadu_ps(live, up.as_ptr().add(i));
            let a = if act == kernels_gpu::kernels::ACT_RELU2 {
                let r = _mm512_max_ps(g, _mm512_setzero_ps());
                _mm512_mul_ps(r, r)
            } else {
                let e = vector_exp::exp(_mm512_sub_ps(_mm512_setzero_ps(), g));
                _mm512_div_ps(g, _mm512_add_ps(one, e))
            };
            _mm512_mask_storeu_ps(gate.as_mut_ptr().add(i), live, _mm512_mul_ps(a, u));
        }
    }
}

/// [`gated_scalar`] 8 lanes at a time (ReLU² bit for bit; SiLU with the vector `exp`).
///
/// The tail takes the same vector code under a lane mask: an element's result
/// must not depend on where it sits in the slice, since the fused norm runs
/// this on each row and the plain op on the whole buffer (a scalar tail gave
/// libm's `exp` to the last `cols % 8` elements of each row in one and to
/// other elements in the other: 1 ulp apart, seen on a Zen 3 EPYC).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gated_avx2(gate: &mut [f32], up: &[f32], act: u32) {
    use std::arch::x86_64::*;
    let one = _mm256_set1_ps(1.0);
    let eight = |g: __m256, u: __m256| {
        let a = if act == kernels_gpu::kernels::ACT_RELU2 {
            let r = _mm256_max_ps(g, _mm256_setzero_ps());
            _mm256_mul_ps(r, r)
        } else {
            let e = vector_exp::exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), g));
            _mm256_div_ps(g, _mm256_add_ps(one, e))
        };
        _mm256_mul_ps(a, u)
    };
    let n = gate.len().min(up.len());
    let whole = n / 8 * 8;
    for (g8, u8) in gate[..whole].chunks_exact_mut(8).zip(up[..whole].chunks_exact(8)) {
        // SAFETY: 8 elements of each.
        unsafe { _mm256_storeu_ps(g8.as_mut_ptr(), eight(_mm256_loadu_ps(g8.as_ptr()), _mm256_loadu_ps(u8.as_ptr()))) };
    }
    if whole < n {
        // Masked only here: a masked store is microcoded on AMD's Zen (tens of cycles).
        let live = _mm256_cmpgt_epi32(_mm256_set1_epi32((n - whole) as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        // SAFETY: the mask limits both loads and the store to the `n - whole` elements left.
        unsafe {
            let g = _mm256_maskload_ps(gate.as_ptr().add(whole), live);
            let u = _mm256_maskload_ps(up.as_ptr().add(whole), live);
            _mm256_maskstore_ps(gate.as_mut_ptr().add(whole), live, eight(g, u));
        }
    }
}

/// `cache[slot[r]][kh][pos[r]][d] = x[r][kh][d]`.
pub fn kv_write(
    x: &[f32],
    cache: &mut [f32],
    slots: &[u32],
    positions: &[u32],
    kv_heads: usize,
    head_dim: usize,
    context: usize,
) {
    let row_head = |r: usize, kh: usize| &x[(r * kv_heads + kh) * head_dim..][..head_dim];
    if positions.len() <= SERIAL_ROWS {
        for (r, (&slot, &pos)) in slots.iter().zip(positions).enumerate() {
            for kh in 0..kv_heads {
                let dst = ((slot as usize * kv_heads + kh) * context + pos as usize) * head_dim;
                cache[dst..dst + head_dim].copy_from_slice(row_head(r, kh));
            }
        }
        return;
    }
    // A prompt chunk: each (slot, KV head)'s region of the cache is a task,
    // which copies in the rows of its slot.
    cache.par_chunks_mut(context * head_dim).enumerate().for_each(|(region, dst)| {
        let (slot, kh) = (region / kv_heads, region % kv_heads);
        for (r, (_, &pos)) in slots.iter().zip(positions).enumerate().filter(|(_, (s, _))| **s as usize == slot) {
            dst[pos as usize * head_dim..][..head_dim].copy_from_slice(row_head(r, kh));
        }
    });
}

/// Rows of `table` (`· × hidden`) for `ids`.
pub fn embedding(table: &[f32], ids: &[u32], out: &mut [f32], hidden: usize) {
    for (o, &id) in out.chunks_mut(hidden).zip(ids) {
        match table.get(id as usize * hidden..(id as usize + 1) * hidden) {
            Some(row) => o.copy_from_slice(row),
            None => o.fill(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn first_lanes_masks_the_tail() {
        for (n, want) in [(0, 0), (1, 1), (3, 0b111), (15, 0x7fff), (16, 0xffff), (40, 0xffff)] {
            assert_eq!(first_lanes(n), want, "{n}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn decode_attention_splits_long_rows_when_pairs_are_few() {
        // One row at position 999 (1000 keys), 2 KV heads, 2 threads: four parts
        // wanted, three fit 256 keys or more: 334, 334, 332 per KV head.
        let t = attention_splits(&[0], &[999], 2, 2);
        let want: Vec<(usize, usize, std::ops::Range<usize>)> =
            [0, 1].into_iter().flat_map(|h| [(0, h, 0..334), (0, h, 334..668), (0, h, 668..1000)]).collect();
        assert_eq!(t, want);
        // Beside another row the same parts: the split depends on the row alone.
        let t = attention_splits(&[0, 1], &[5, 999], 2, 2);
        assert_eq!(t[..2], [(0, 0, 0..6), (0, 1, 0..6)]);
        assert_eq!(t[2..], want.iter().map(|(_, h, k)| (1, *h, k.clone())).collect::<Vec<_>>());
        // Only the rows asked for.
        assert_eq!(attention_splits(&[1], &[5, 7], 2, 2), [(1, 0, 0..8), (1, 1, 0..8)]);
        // 2B-4T's five KV heads on two threads: two parts each (ten tasks).
        assert_eq!(attention_splits(&[0], &[2047], 5, 2)[..2], [(0, 0, 0..1024), (0, 0, 1024..2048)]);
        assert_eq!(attention_splits(&[0], &[2047], 5, 2).len(), 10);
        // Short rows, and enough KV heads for the threads, stay whole.
        assert_eq!(attention_splits(&[0], &[510], 2, 2), [(0, 0, 0..511), (0, 1, 0..511)]);
        assert_eq!(
            attention_splits(&[0, 1], &[4000, 7], 8, 2),
            (0..2).flat_map(|r| (0..8).map(move |h| (r, h, 0..[4001, 8][r]))).collect::<Vec<_>>()
        );
    }

    /// A row's attention output is bit for bit the same alone and in a batch:
    /// a decode row long enough to be split, a prompt chunk long enough for
    /// the prefill blocks (one block of both halves on AVX-512, two and a tail under AVX2), and a
    /// short chunk, each alone, then all three together in two orders and beside
    /// more decode rows.
    #[test]
    fn attention_rows_are_the_same_alone_and_batched() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (heads, kv_heads, head_dim, context, slots) = (8, 2, 32, 1100, 6);
        let len = slots * kv_heads * context * head_dim;
        let k: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let v: Vec<f32> = (0..len).map(|_| rng.random_range(-2.0f32..2.0)).collect();
        // Each sequence's rows as (slot, position).
        let decode = vec![(0u32, 1000u32)];
        let chunk: Vec<(u32, u32)> = (100..120).map(|p| (1, p)).collect();
        let short: Vec<(u32, u32)> = (40..43).map(|p| (2, p)).collect();
        let others: Vec<(u32, u32)> = (3..6).map(|s| (s, 700 + s)).collect();
        let row_len = heads * head_dim;
        let queries: Vec<Vec<f32>> = [&decode, &chunk, &short, &others]
            .iter()
            .map(|rows| (0..rows.len() * row_len).map(|_| rng.random_range(-1.0f32..1.0)).collect())
            .collect();
        let mut scratch = crate::AttentionScratch::new();
        let mut run = |seqs: &[usize]| -> Vec<Vec<f32>> {
            let rows: Vec<(u32, u32)> =
                seqs.iter().flat_map(|&s| [&decode, &chunk, &short, &others][s].clone()).collect();
            let q: Vec<f32> = seqs.iter().flat_map(|&s| queries[s].clone()).collect();
            let (slots, positions): (Vec<u32>, Vec<u32>) = rows.into_iter().unzip();
            let mut out = vec![f32::NAN; q.len()];
            attention(&q, &k, &v, &mut out, &slots, &positions, heads, kv_heads, head_dim, context, &mut scratch);
            let mut at = 0;
            seqs.iter()
                .map(|&s| {
                    let n = queries[s].len();
                    at += n;
                    out[at - n..at].to_vec()
                })
                .collect()
        };
        let alone: Vec<Vec<f32>> = (0..3).map(|s| run(&[s]).remove(0)).collect();
        for order in [vec![0, 1, 2], vec![2, 1, 0], vec![3, 1, 0, 2]] {
            for (&s, got) in order.iter().zip(run(&order)) {
                if s < 3 {
                    let same = got.iter().zip(&alone[s]).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "sequence {s} in the batch {order:?} differs from itself alone");
                }
            }
        }
    }

    /// Every SIMD path of [`dot`] this CPU has, for each element type, against
    /// an f64 sum, on lengths around the 16-, 32- and 64-element steps.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn dot_paths_match_an_f64_sum() {
        fn check<E: RowElem>(b: &[E], a: &[f32]) {
            let exact: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y.to_f32() as f64).sum();
            let scale: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 * y.to_f32() as f64).abs()).sum();
            let mut got = Vec::new();
            if cpu_has_fma() {
                // SAFETY: the CPU has AVX2, FMA and F16C (just checked).
                got.push(("fma", unsafe { dot_fma(a, b) }));
            }
            if cpu_has_avx512f() {
                // SAFETY: the CPU has AVX-512 F (just checked).
                got.push(("avx512", unsafe { dot_avx512(a, b) }));
            }
            for (path, v) in got {
                let err = (v as f64 - exact).abs();
                assert!(err <= 1e-6 * scale + 1e-30, "{path}, n {}: {v} against {exact}", a.len());
            }
        }
        let mut seed = 7u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        };
        for n in [1, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 2560, 2561] {
            let a: Vec<f32> = (0..n).map(|_| next()).collect();
            let b32: Vec<f32> = (0..n).map(|_| next()).collect();
            check(&b32, &a);
            check(&b32.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(), &a);
            check(&b32.iter().map(|&v| (v * 127.0) as i8).collect::<Vec<_>>(), &a);
        }
    }

    #[test]
    fn rms_norm_of_a_known_row() {
        let mut x = [3.0f32, 4.0];
        rms_norm(&mut x, &[1.0, 2.0], 0.0);
        // mean of squares 12.5, 1/sqrt = 0.28284271
        assert!((x[0] - 0.848_528_1).abs() < 1e-6 && (x[1] - 2.262_741_7).abs() < 1e-6, "{x:?}");
    }

    #[test]
    fn rope_rotates_the_halves() {
        let (cos, sin) = rope_tables(4, 10000.0, 2);
        assert_eq!(&cos[..2], &[1.0, 1.0]);
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        rope(&mut x, 1, 4, &[1], &cos, &sin);
        // position 1, frequencies 1 and 0.01: (x1 cos − x2 sin, x2 cos + x1 sin)
        let (c0, s0, c1, s1) = (1f32.cos(), 1f32.sin(), 0.01f32.cos(), 0.01f32.sin());
        let want = [1.0 * c0 - 3.0 * s0, 2.0 * c1 - 4.0 * s1, 3.0 * c0 + 1.0 * s0, 4.0 * c1 + 2.0 * s1];
        for (g, w) in x.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{x:?} vs {want:?}");
        }
    }

    #[test]
    fn attention_of_one_key_returns_its_value_and_gqa_shares_kv_heads() {
        // 2 query heads, 1 KV head, head_dim 2, context 4, one token at position 0.
        let q = [1.0f32, 0.0, 0.0, 1.0];
        let k = [0.5f32, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let v = [7.0f32, -3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let mut out = [0f32; 4];
        attention(&q, &k, &v, &mut out, &[0], &[0], 2, 1, 2, 4, &mut crate::AttentionScratch::new());
        assert_eq!(out, [7.0, -3.0, 7.0, -3.0]);
    }

    #[test]
    fn rows_of_a_batch_write_and_read_their_own_slots() {
        // 2 slots, 1 KV head, head_dim 1, context 2: row 0 is slot 1 position 0,
        // row 1 slot 0 position 1 (slot 0 position 0 already holds key 0, value 5).
        let mut k = [0.0f32, 0.0, 0.0, 0.0];
        let mut v = [5.0f32, 0.0, 0.0, 0.0];
        kv_write(&[1.0, 0.0], &mut k, &[1, 0], &[0, 1], 1, 1, 2);
        kv_write(&[9.0, 3.0], &mut v, &[1, 0], &[0, 1], 1, 1, 2);
        assert_eq!((k, v), ([0.0, 0.0, 1.0, 0.0], [5.0, 3.0, 9.0, 0.0]));
        let mut out = [0f32; 2];
        attention(&[1.0, 1.0], &k, &v, &mut out, &[1, 0], &[0, 1], 1, 1, 1, 2, &mut crate::AttentionScratch::new());
        // Row 0 sees one value (9); row 1 averages 5 and 3 (equal scores 0·1).
        assert_eq!(out, [9.0, 4.0]);
    }

    #[test]
    fn relu2_and_silu() {
        let mut g = [-1.0f32, 2.0];
        gated(&mut g, &[5.0, 3.0], kernels_gpu::kernels::ACT_RELU2);
        assert_eq!(g, [0.0, 12.0]);
        let mut g = [0.0f32];
        gated(&mut g, &[2.0], kernels_gpu::kernels::ACT_SILU);
        assert_eq!(g, [0.0]);
    }

    #[test]
    fn gated_matches_the_f64_reference_across_chunks_and_tails() {
        use crate::reference::gated_reference;
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        // One short row (a masked tail), and more than one parallel chunk with a tail.
        for n in [13, 2 * GATED_CHUNK + 37] {
            let gate: Vec<f32> = (0..n).map(|_| rng.random_range(-12.0f32..12.0)).collect();
            let up: Vec<f32> = (0..n).map(|_| rng.random_range(-3.0f32..3.0)).collect();
            for act in [kernels_gpu::kernels::ACT_RELU2, kernels_gpu::kernels::ACT_SILU] {
                let mut got = gate.clone();
                gated(&mut got, &up, act);
                let want = gated_reference(&gate, &up, act);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() <= 4e-7 * w.abs() + 1e-30, "act {act}, element {i} of {n}: {g} vs {w}");
                }
            }
        }
        // Far outside exp's range: finite, and SiLU of a very negative input is (nearly) zero.
        let mut g = [-200.0f32, 200.0];
        gated(&mut g, &[1.0, 1.0], kernels_gpu::kernels::ACT_SILU);
        assert!(g[0].abs() < 1e-35 && g[1] == 200.0, "{g:?}");
    }

    /// The fused norm gates each row, the plain op the whole buffer: an
    /// element's result must not depend on where the slice it sits in ends.
    #[test]
    fn gated_gives_an_element_the_same_bits_wherever_its_slice_ends() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let (rows, cols) = (64, 13);
        let gate: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-12.0f32..12.0)).collect();
        let up: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-3.0f32..3.0)).collect();
        type Gated = fn(&mut [f32], &[f32], u32);
        let mut paths: Vec<(&str, Gated)> = vec![("widest", gated_run), ("scalar", gated_scalar)];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            paths.push(("avx2", |g, u, a| unsafe { gated_avx2(g, u, a) }));
        }
        for (name, run) in paths {
            for act in [kernels_gpu::kernels::ACT_RELU2, kernels_gpu::kernels::ACT_SILU] {
                let mut whole = gate.clone();
                run(&mut whole, &up, act);
                let mut by_row = gate.clone();
                for (g, u) in by_row.chunks_mut(cols).zip(up.chunks(cols)) {
                    run(g, u, act);
                }
                for (i, (a, b)) in whole.iter().zip(&by_row).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "{name}, act {act}, element {i}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn the_simd_quantizer_matches_the_scalar_one_bit_for_bit() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let mut rows: Vec<Vec<f32>> = [1, 15, 16, 17, 100, 1536]
            .iter()
            .map(|&n| (0..n).map(|_| rng.random_range(-4.0f32..4.0)).collect())
            .collect();
        // Ties after scaling (absmax 127: x · 1 = x), a NaN, infinities, zeros.
        rows.push(vec![127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 0.0, -0.0]);
        rows.push(vec![1.0, f32::NAN, -3.0, 0.25]);
        rows.push(vec![f32::INFINITY, 1.0, f32::NEG_INFINITY]);
        rows.push(vec![0.0; 20]);
        for x in &rows {
            let (mut want, mut got) = (vec![0i8; x.len()], vec![0i8; x.len()]);
            let w = quantize_row_generic(x, &mut want);
            let g = quantize_row(x, &mut got);
            assert_eq!((g.0.to_bits(), g.1, &got), (w.0.to_bits(), w.1, &want), "row {x:?}");
        }
        // Known values: absmax 127 gives scale 1; ties go to even.
        let mut q = [0i8; 11];
        quantize_row(&rows[6], &mut q);
        assert_eq!(q, [127, 0, 2, 2, 0, -2, -2, 126, -126, 0, 0]);
    }

    #[test]
    fn on_pool_thread_runs_on_a_pool_thread_and_nests_in_place() {
        // The test harness's threads are not rayon's.
        assert_eq!(rayon::current_thread_index(), None);
        let (outer, inner, same) = on_pool_thread(|| {
            let here = std::thread::current().id();
            let (inner, there) = on_pool_thread(|| (rayon::current_thread_index(), std::thread::current().id()));
            (rayon::current_thread_index(), inner, here == there)
        });
        assert!(outer.is_some(), "f ran outside the pool");
        assert_eq!(inner, outer, "a nested call moved to another pool thread");
        assert!(same);
        // Ops inside still split across the pool and give the same sums.
        let v: Vec<u64> = (0..100_000).collect();
        assert_eq!(on_pool_thread(|| v.par_iter().sum::<u64>()), 4_999_950_000);
    }
}

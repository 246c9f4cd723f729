//! # Verification: every kernel against the CPU reference
//!
//! [`verify`] runs each kernel of a backend on fresh random inputs of a list
//! of shapes (awkward ones: 1, odd, not a multiple of the tile) and compares
//! with the scalar references of [`crate::cpu`]. Integer outputs must match
//! exactly; so must the f16 unpack (both sides round `±scale` to nearest even).
//! A kernel that errors is a failure too, with the error as the detail.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::host_ops::HostOps;
use crate::reference as cpu;
use crate::ternary::PackedTernary;

/// The outcome of one kernel on one shape.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Check {
    /// Kernel name.
    pub kernel: String,
    /// Shape, as `rows×cols` or `M×N×K`.
    pub shape: String,
    /// Whether the output matched the reference.
    pub passed: bool,
    /// On failure: the first mismatch and the count, or the error.
    pub detail: String,
}

/// Shapes `(rows, cols)` for the unpack kernels; the small ones run on the emulator.
pub const UNPACK_SHAPES_SMALL: &[(usize, usize)] = &[(1, 1), (1, 16), (3, 17), (7, 33), (2, 100), (65, 31)];
/// Large shapes, for real GPUs (and the CPU).
pub const UNPACK_SHAPES_LARGE: &[(usize, usize)] = &[(4096, 4096), (1536, 4096), (6912, 2560), (1000, 999)];

/// Compares two slices exactly; `Err` names the first mismatch and the count.
pub fn compare_exact<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("length {} instead of {}", got.len(), want.len()));
    }
    let mut bad = got.iter().zip(want).enumerate().filter(|(_, (g, w))| g != w);
    match bad.next() {
        None => Ok(()),
        Some((i, (g, w))) => Err(format!("{} mismatches; first at {i}: got {g:?}, want {w:?}", 1 + bad.count())),
    }
}

/// Random packed ternary weights with a random scale.
pub fn random_weights(rng: &mut StdRng, rows: usize, cols: usize) -> PackedTernary {
    let trits: Vec<i8> = (0..rows * cols).map(|_| rng.random_range(-1i8..=1)).collect();
    let scale = rng.random_range(0.01f32..2.0);
    PackedTernary::pack(&trits, rows, cols, scale).expect("random trits are valid")
}

fn check(kernel: &str, shape: String, result: Result<(), String>) -> Check {
    Check { kernel: kernel.to_owned(), shape, passed: result.is_ok(), detail: result.err().unwrap_or_default() }
}

/// How much of each kernel family `verify` runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `(rows, cols)` of the unpack kernels.
    pub unpack: Vec<(usize, usize)>,
    /// Message counts of the TriHash batch kernel.
    pub trihash_messages: Vec<usize>,
    /// `(batches, mwm)` of the TriHash search, on a random transaction.
    pub trihash_search: Vec<(u64, usize)>,
    /// `(M, N, K)` of the quantizer (M × K), the ternary GEMV (when M ≤ 8) and GEMM.
    pub matmul: Vec<(usize, usize, usize)>,
    /// `(M, N, K)` of SGEMM.
    pub sgemm: Vec<(usize, usize, usize)>,
    /// `(rows, heads, kv_heads, head_dim, context)` of the layer ops (RMSNorm,
    /// RoPE, attention, gated activation, add, embedding, KV write); see [`verify_layer_ops`].
    pub layer_ops: Vec<(usize, usize, usize, usize, usize)>,
}

/// Matmul shapes `(M, N, K)` small enough for the emulator: 1, odd, and not
/// multiples of the tiles (GEMM 128 × 128 × 64, GEMV 64-weight chunks).
///
/// `(3, 5, 2112)` takes the GEMV's second load of its chunk loop (K > 2048),
/// `(8, 3, 8256)` its second pass (K > 8192) and more than 48 KB of shared
/// memory (8 × 8256 bytes of activations: the opt-in path). `(1, 130, 300)`
/// and `(2, 67, 1100)` are decode on the CPU: one and two activation rows,
/// N past its 64-row GEMV tasks (so a task's first row is checked), K not a
/// whole number of 256-weight blocks.
pub const MATMUL_SHAPES_SMALL: &[(usize, usize, usize)] = &[
    (1, 1, 16),
    (1, 7, 33),
    (1, 130, 300),
    (2, 67, 1100),
    (3, 64, 256),
    (8, 5, 100),
    (17, 33, 130),
    (64, 128, 512),
    (130, 129, 65),
    (3, 5, 2112),
    (8, 3, 8256),
];
/// Large matmul shapes: decode and prefill of the BitNet shapes.
pub const MATMUL_SHAPES_LARGE: &[(usize, usize, usize)] =
    &[(1, 4096, 4096), (8, 6912, 2560), (512, 1536, 4096), (300, 2560, 2560), (1000, 999, 1001)];

impl Plan {
    /// Nothing: a base for `Plan { field: …, ..Plan::empty() }`.
    pub fn empty() -> Self {
        Plan {
            unpack: vec![],
            trihash_messages: vec![],
            trihash_search: vec![],
            matmul: vec![],
            sgemm: vec![],
            layer_ops: vec![],
        }
    }

    /// Small shapes: fast on the emulator, awkward sizes included.
    pub fn small() -> Self {
        Plan {
            unpack: UNPACK_SHAPES_SMALL.to_vec(),
            trihash_messages: vec![1, 130],
            trihash_search: vec![(3, 3)],
            matmul: MATMUL_SHAPES_SMALL.to_vec(),
            sgemm: vec![(1, 1, 1), (3, 5, 7), (17, 33, 130), (64, 128, 40)],
            layer_ops: vec![
                (1, 2, 1, 8, 1),
                (3, 4, 2, 16, 9),
                (5, 3, 3, 6, 7),
                (2, 4, 1, 32, 300),
                (2, 2, 1, 124, 40),
                (37, 2, 1, 16, 64),
                // A prompt chunk past a CPU prefill block's half (16 rows) with grouped KV heads.
                (18, 4, 2, 8, 40),
                (20, 2, 2, 40, 100),
                // A chunk of a whole 32-row CPU prefill block and a one-row block, 96-wide heads.
                (33, 2, 1, 96, 40),
                (3, 2, 1, 136, 33),
                (2, 8, 1, 24, 50),
                // One decode row over a long context, few KV heads: the CPU splits its positions.
                (1, 8, 2, 32, 1000),
            ],
        }
    }

    /// Small and large shapes: for GPUs and the CPU.
    pub fn full() -> Self {
        let mut p = Self::small();
        p.unpack.extend_from_slice(UNPACK_SHAPES_LARGE);
        p.trihash_messages.push(10_000);
        p.trihash_search.push((2_000, 7));
        p.matmul.extend_from_slice(MATMUL_SHAPES_LARGE);
        p.sgemm.extend_from_slice(&[(512, 512, 512), (1000, 999, 1001), (4096, 4096, 4096)]);
        p.layer_ops.extend_from_slice(&[(64, 20, 5, 128, 512), (1, 32, 32, 100, 2048)]);
        p
    }
}

/// Runs every kernel of `backend` on the shapes of `plan` with inputs drawn from `seed`.
pub fn verify(backend: &dyn HostOps, plan: &Plan, seed: u64) -> Vec<Check> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut checks = Vec::new();
    let unpack_shapes = &plan.unpack;
    for &(rows, cols) in unpack_shapes {
        let w = random_weights(&mut rng, rows, cols);
        let shape = format!("{rows}×{cols}");
        let r = backend.unpack_i8(&w).map_err(|e| e.to_string());
        checks.push(check(
            "unpack_i8",
            shape.clone(),
            r.and_then(|g| compare_exact(&g, &cpu::unpack_i8_reference(&w))),
        ));
        let r = backend.unpack_f16(&w).map_err(|e| e.to_string());
        let want = cpu::unpack_f16_reference(&w);
        let bits = |v: &[half::f16]| v.iter().map(|h| h.to_bits()).collect::<Vec<_>>();
        checks.push(check("unpack_f16", shape, r.and_then(|g| compare_exact(&bits(&g), &bits(&want)))));
    }
    for &count in &plan.trihash_messages {
        let messages: Vec<i8> = (0..count * 243).map(|_| rng.random_range(-1i8..=1)).collect();
        let r = backend.trihash_batch(&messages).map_err(|e| e.to_string());
        let want = cpu::trihash_batch_reference(&messages);
        checks.push(check("trihash_batch", format!("{count} messages"), r.and_then(|g| compare_exact(&g, &want))));
    }
    for &(batches, mwm) in &plan.trihash_search {
        let pow = crate::trihash::Pow::random(&mut rng);
        let first = rng.random_range(0..1u64 << 40);
        let shape = format!("{batches} batches, mwm {mwm}");
        let r = backend.trihash_search(pow.base(), first, batches, mwm).map_err(|e| e.to_string());
        // The scalar reference for small ranges; for large ones, every hit is
        // re-hashed by the sponge and the count compared with the sliced CPU search.
        let result = r.and_then(|got| {
            if batches <= 16 {
                return compare_exact(&got, &cpu::trihash_search_reference(pow.base(), first, batches, mwm));
            }
            if let Some(&bad) = got.iter().find(|&&v| !pow.verify_nonce(v, mwm)) {
                return Err(format!("nonce index {bad} does not have {mwm} trailing zero trits"));
            }
            compare_exact(&got, &crate::trihash::sliced::search(pow.base(), first, batches, mwm))
        });
        checks.push(check("trihash_pow", shape, result));
    }
    for &(m, n, k) in &plan.matmul {
        verify_matmul(backend, &mut rng, m, n, k, &mut checks);
    }
    for &(m, n, k) in &plan.sgemm {
        let shape = format!("{m}×{n}×{k}");
        let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let b: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let r = backend.sgemm(&a, &b, m, n, k).map_err(|e| e.to_string());
        let result = r.and_then(|got| {
            let (want, magnitude) = sgemm_expected(&a, &b, m, n, k);
            crate::reference::compare_sgemm(&got, &want, &magnitude)
        });
        checks.push(check("sgemm", shape, result));
    }
    checks
}

/// Above this many multiply-adds the references are the CPU backend's fast
/// paths (themselves tested against the scalar references on small shapes).
const SCALAR_REFERENCE_LIMIT: usize = 50_000_000;

fn sgemm_expected(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f64>) {
    if m * n * k <= SCALAR_REFERENCE_LIMIT {
        return crate::reference::sgemm_reference(a, b, m, n, k);
    }
    let mut want = vec![0f32; m * n];
    crate::cpu::sgemm(a, b, &mut want, m, n, k);
    let (aa, bb): (Vec<f32>, Vec<f32>) = (a.iter().map(|v| v.abs()).collect(), b.iter().map(|v| v.abs()).collect());
    let mut magnitude = vec![0f32; m * n];
    crate::cpu::sgemm(&aa, &bb, &mut magnitude, m, n, k);
    let magnitude = magnitude.into_iter().map(|v| v as f64 * 1.001).collect();
    (want, magnitude)
}

fn verify_matmul(backend: &dyn HostOps, rng: &mut StdRng, m: usize, n: usize, k: usize, checks: &mut Vec<Check>) {
    use crate::matmul::{Activations, Precision};
    use crate::reference::{quantize_reference, ternary_matmul_reference};
    let x32 = random_activations(rng, m, k);
    let x16: Vec<half::f16> = x32.iter().map(|&v| half::f16::from_f32(v)).collect();
    let w = crate::ternary::DeviceTernary::from_packed(&random_weights(rng, n, k));
    let small = m * n * k <= SCALAR_REFERENCE_LIMIT;
    let qshape = format!("{m}×{k}");
    for (name, x) in [("quantize_f32", Activations::F32(&x32)), ("quantize_f16", Activations::F16(&x16))] {
        let r = backend.quantize(x, m, k).map_err(|e| e.to_string());
        let want = quantize_reference(x, m, k);
        let result = r.and_then(|got| {
            compare_exact(got.values(), want.values())?;
            compare_exact(&got.sums, &want.sums)?;
            compare_f32_exact(&got.scales, &want.scales)
        });
        checks.push(check(name, qshape.clone(), result));
    }
    let x = quantize_reference(Activations::F32(&x32), m, k);
    let shape = format!("{m}×{n}×{k}");
    for precision in [Precision::F32, Precision::F16] {
        let want = if small {
            ternary_matmul_reference(&x, &w, precision)
        } else {
            crate::cpu_ternary::ternary_matmul(&x, &w, precision)
        };
        let suffix = precision.name();
        if m <= kernels_gpu::matmul::GEMV_MAX_M {
            let r = backend.ternary_gemv(&x, &w, precision).map_err(|e| e.to_string());
            let result = r.and_then(|got| compare_f32_exact(&got, &want));
            checks.push(check(&format!("ternary_gemv_{suffix}"), shape.clone(), result));
        }
        let r = backend.ternary_gemm(&x, &w, precision).map_err(|e| e.to_string());
        let result = r.and_then(|got| compare_f32_exact(&got, &want));
        checks.push(check(&format!("ternary_gemm_{suffix}"), shape.clone(), result));
    }
}

/// Random activations, `rows × cols`: most rows uniform in ±4; every third row
/// has absmax 127 (so the quantizer's scale is exactly 1) and values on the
/// half-integers, so rounding ties (ties to even), the ±127 ends and signed
/// zeros are exercised, not left to chance.
pub fn random_activations(rng: &mut StdRng, rows: usize, cols: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        if r % 3 == 2 {
            x.extend((0..cols).map(|c| match c {
                0 => 127.0,
                1 => -0.0,
                2 => -127.0,
                _ => rng.random_range(-253i32..=253) as f32 * 0.5,
            }));
        } else {
            x.extend((0..cols).map(|_| rng.random_range(-4.0f32..4.0)));
        }
    }
    x
}

/// Bit-exact comparison of floats that reports values, not bit patterns.
pub fn compare_f32_exact(got: &[f32], want: &[f32]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("length {} instead of {}", got.len(), want.len()));
    }
    let mut bad = got.iter().zip(want).enumerate().filter(|(_, (g, w))| g.to_bits() != w.to_bits());
    match bad.next() {
        None => Ok(()),
        Some((i, (g, w))) => Err(format!("{} mismatches; first at {i}: got {g:e}, want {w:e}", 1 + bad.count())),
    }
}

/// The non-square shape the vendor baselines are checked on (M ≠ N ≠ K;
/// N and K multiples of 4 as cuBLASLt's INT8 path requires).
pub const BASELINE_SHAPE: (usize, usize, usize) = (67, 44, 132);

/// Checks the vendor baselines `trinity run` compares against — cuBLAS SGEMM,
/// cuBLAS FP16 `GemmEx` and cuBLASLt INT8 — with the CPU reference on
/// [`BASELINE_SHAPE`], so a ratio is never taken against a wrong result.
pub fn verify_baselines(gpu: &crate::cuda::CudaBackend, seed: u64) -> Vec<Check> {
    use half::f16;
    let mut rng = StdRng::seed_from_u64(seed);
    let (m, n, k) = BASELINE_SHAPE;
    let shape = format!("{m}×{n}×{k}");
    let mut checks = Vec::new();
    let blas = match gpu.cublas() {
        Ok(b) => Some(b),
        Err(e) => {
            checks.push(check("cublas_sgemm", shape.clone(), Err(e.to_string())));
            None
        }
    };
    let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let b: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    if let Some(blas) = &blas {
        let r = (|| -> crate::KernelResult<Vec<f32>> {
            let (da, db) = (gpu.upload(&a)?, gpu.upload(&b)?);
            let mut dc = gpu.zeros::<f32>(m * n)?;
            gpu.cublas_gemm(blas, &da, &db, &mut dc, m, n, k)?;
            gpu.download(&dc)
        })();
        let (want, mag) = crate::reference::sgemm_reference(&a, &b, m, n, k);
        let result = r.map_err(|e| e.to_string()).and_then(|got| crate::reference::compare_sgemm(&got, &want, &mag));
        checks.push(check("cublas_sgemm", shape.clone(), result));

        // FP16 inputs are exact in f64; the f16 output rounds (2⁻¹¹ relative) and
        // the f32 accumulation errs by at most K·2⁻²⁴·Σ|a||b|.
        let (a16, b16): (Vec<f16>, Vec<f16>) =
            (a.iter().map(|&v| f16::from_f32(v)).collect(), b.iter().map(|&v| f16::from_f32(v)).collect());
        let r = (|| -> crate::KernelResult<Vec<f16>> {
            let (da, db) = (gpu.upload(&a16)?, gpu.upload(&b16)?);
            let mut dc = gpu.zeros::<f16>(m * n)?;
            gpu.cublas_gemm(blas, &da, &db, &mut dc, m, n, k)?;
            gpu.download(&dc)
        })();
        let widen = |v: &[f16]| v.iter().map(|h| h.to_f32()).collect::<Vec<f32>>();
        let (want, mag) = crate::reference::sgemm_reference(&widen(&a16), &widen(&b16), m, n, k);
        let result = r.map_err(|e| e.to_string()).and_then(|got| {
            let bad: Vec<usize> = (0..m * n)
                .filter(|&i| {
                    let (g, w) = (got[i].to_f32() as f64, want[i] as f64);
                    let tolerance = w.abs() / 1024.0 + mag[i] / 4096.0;
                    !matches!((g - w).abs().partial_cmp(&tolerance), Some(o) if o.is_le())
                })
                .collect();
            match bad.first() {
                None => Ok(()),
                Some(&i) => {
                    Err(format!("{} outside tolerance; first at {i}: got {}, want {}", bad.len(), got[i], want[i]))
                }
            }
        });
        checks.push(check("cublas_gemm_fp16", shape.clone(), result));
    }
    let a8: Vec<i8> = (0..m * k).map(|_| rng.random_range(-128i32..=127) as i8).collect();
    let w8: Vec<i8> = (0..n * k).map(|_| rng.random_range(-1i8..=1)).collect();
    let r = (|| -> crate::KernelResult<Vec<i32>> {
        let plan = crate::cublaslt_int8::Int8Gemm::new(gpu, m, n, k)?;
        let (da, dw) = (gpu.upload(&a8)?, gpu.upload(&w8)?);
        let mut dc = gpu.zeros::<i32>(m * n)?;
        plan.run(&da, &dw, &mut dc)?;
        gpu.download(&dc)
    })();
    let want: Vec<i32> =
        (0..m * n).map(|i| (0..k).map(|kk| a8[(i / n) * k + kk] as i32 * w8[(i % n) * k + kk] as i32).sum()).collect();
    checks.push(check("cublaslt_int8", shape, r.map_err(|e| e.to_string()).and_then(|got| compare_exact(&got, &want))));
    checks
}

/// The layer ops' tolerance: `1e-5 · |want| + 1e-5` (f32 arithmetic in any
/// order against f64 references; the GPU's `ex2.approx` errs by 2 ulp).
const LAYER_TOL: (f64, f64) = (1e-5, 1e-5);

/// The vocabulary of the argmax check's long row (2B-4T's).
const VERIFY_VOCAB: usize = 128_256;

fn exact_ids(got: &[u32], want: &[u32]) -> Result<(), String> {
    match got.iter().zip(want).position(|(g, w)| g != w) {
        _ if got.len() != want.len() => Err(format!("{} ids instead of {}", got.len(), want.len())),
        Some(i) => Err(format!("row {i}: index {} instead of {}", got[i], want[i])),
        None => Ok(()),
    }
}

/// Compares int8 activations quantized from floats that differ in their last
/// bits (an f32 norm against an f64 one): every value within one step of
/// the reference (a product near a rounding midpoint may round either way),
/// at most 1 % of them off, scales within 1e-5 relative, each row's sum the
/// sum of its own values, and the padding zero.
fn compare_quantized_close(
    got: &crate::matmul::QuantizedActivations,
    want: &crate::matmul::QuantizedActivations,
) -> Result<(), String> {
    if (got.rows, got.cols, got.k_pad) != (want.rows, want.cols, want.k_pad) {
        return Err(format!(
            "shape {}×{} (pad {}) instead of {}×{}",
            got.rows, got.cols, got.k_pad, want.rows, want.cols
        ));
    }
    let (gv, wv) = (got.values(), want.values());
    let mut off = 0usize;
    for r in 0..got.rows {
        let row = &gv[r * got.k_pad..][..got.k_pad];
        if let Some(c) = row[got.cols..].iter().position(|&v| v != 0) {
            return Err(format!("row {r}: padding column {} is {}", got.cols + c, row[got.cols + c]));
        }
        for (c, (&g, &w)) in row.iter().zip(&wv[r * want.k_pad..][..got.cols]).enumerate() {
            match (g as i32 - w as i32).abs() {
                0 => {}
                1 => off += 1,
                d => return Err(format!("row {r} column {c}: {g} instead of {w} ({d} steps)")),
            }
        }
        let sum: i32 = row.iter().map(|&v| v as i32).sum();
        if got.sums[r] != sum {
            return Err(format!("row {r}: sum {} but its values add to {sum}", got.sums[r]));
        }
        let (gs, ws) = (got.scales[r] as f64, want.scales[r] as f64);
        if (gs - ws).abs() > 1e-5 * ws.abs() {
            return Err(format!("row {r}: scale {gs:e} instead of {ws:e}"));
        }
    }
    if off * 100 > (got.rows * got.cols).max(100) {
        return Err(format!("{off} of {} values one step off", got.rows * got.cols));
    }
    Ok(())
}

/// KV-cache slots of the layer-op checks (rows of one batch from several sequences).
const VERIFY_SLOTS: usize = 3;

/// `rows` distinct `(slot, position)` places, the first at the last slot's
/// last position, the rest drawn at random.
fn scattered_places(rows: usize, slots: usize, context: usize, rng: &mut StdRng) -> Vec<(usize, usize)> {
    let mut places = vec![(slots - 1, context - 1)];
    let wanted = rows.min(slots * context);
    while places.len() < wanted {
        let p = (rng.random_range(0..slots), rng.random_range(0..context));
        if !places.contains(&p) {
            places.push(p);
        }
    }
    places
}

/// Runs the float ops of a transformer layer on `device` against the f64
/// references of [`crate::reference`]: RMSNorm, RoPE (against angles computed
/// in f64, not the tables), attention (causal, GQA, rows of several sequences
/// at scattered positions, one at the context's end), the relu² and SiLU gates, the residual add, the embedding
/// gather and the KV-cache write (exact), the fused pre-norm kernels (bit for bit their unfused ops), the
/// reduced lm_heads, the f32 → f16 conversion (exact) and the dense f16 linears of the cuBLAS FP16 baseline.
pub fn verify_layer_ops(device: &crate::Device, plan: &Plan, seed: u64) -> Vec<Check> {
    use crate::reference::{
        attention_reference, compare_close, gated_reference, kv_write_reference, rms_norm_reference, rope_reference,
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut places_rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9);
    let mut checks = Vec::new();
    let mut vec = |n: usize, lo: f32, hi: f32| -> Vec<f32> { (0..n).map(|_| rng.random_range(lo..hi)).collect() };
    // Decode attention keeps one scratch across every shape, as a model keeps
    // one across its steps: partial results left by a larger call must not leak.
    let kept_scratch = std::cell::RefCell::new(crate::AttentionScratch::new());
    for &(rows, heads, kv_heads, head_dim, context) in &plan.layer_ops {
        let shape = format!("{rows}×{heads}/{kv_heads}×{head_dim} ctx {context}");
        let (tol_r, tol_a) = LAYER_TOL;
        let cols = heads * head_dim;
        let run = |f: &dyn Fn() -> crate::KernelResult<Vec<f32>>| f().map_err(|e| e.to_string());
        let run_ids = |f: &dyn Fn() -> crate::KernelResult<Vec<u32>>| f().map_err(|e| e.to_string());
        // RMSNorm.
        let (x, w) = (vec(rows * cols, -3.0, 3.0), vec(cols, 0.5, 1.5));
        let got = run(&|| {
            let (dx, dw) = (device.upload(&x)?, device.upload(&w)?);
            let mut y = device.alloc::<f32>(x.len())?;
            device.rms_norm(&dx, &dw, &mut y, 1e-5)?;
            device.download(&y)
        });
        let want = rms_norm_reference(&x, &w, 1e-5);
        checks.push(check("rms_norm_f32", shape.clone(), got.and_then(|g| compare_close(&g, &want, tol_r, tol_a))));
        // RMSNorm fused with the quantizer: against the f64 norm quantized by
        // the scalar quantizer (within a rounding step), and bit for bit
        // against this backend's own two kernels run one after the other.
        let fused = || -> crate::KernelResult<_> {
            let (dx, dw) = (device.upload(&x)?, device.upload(&w)?);
            let mut q = device.alloc_quantized(rows, cols)?;
            device.rms_norm_quantize(&dx, &dw, 1e-5, &mut q)?;
            let mut y = device.alloc::<f32>(x.len())?;
            device.rms_norm(&dx, &dw, &mut y, 1e-5)?;
            let mut q2 = device.alloc_quantized(rows, cols)?;
            device.quantize(&y, &mut q2)?;
            Ok((device.download_quantized(&q)?, device.download_quantized(&q2)?))
        };
        let want = crate::reference::quantize_reference(
            crate::matmul::Activations::F32(&rms_norm_reference(&x, &w, 1e-5)),
            rows,
            cols,
        );
        let result = fused().map_err(|e| e.to_string()).and_then(|(got, unfused)| {
            compare_quantized_close(&got, &want)?;
            if got != unfused {
                Err("differs from rms_norm_f32 then quantize_f32 on this backend".into())
            } else {
                Ok(())
            }
        });
        checks.push(check("rms_norm_quantize_f32", shape.clone(), result));
        // The residual add fused in front of it: the stored sum exactly the
        // f32 sum, the int8 rows bit for bit those of the fused norm of that sum.
        let delta = vec(rows * cols, -2.0, 2.0);
        let summed: Vec<f32> = x.iter().zip(&delta).map(|(a, b)| a + b).collect();
        let fused = || -> crate::KernelResult<_> {
            let (mut dx, dd, dw) = (device.upload(&x)?, device.upload(&delta)?, device.upload(&w)?);
            let mut q = device.alloc_quantized(rows, cols)?;
            device.add_rms_norm_quantize(&mut dx, &dd, &dw, 1e-5, &mut q)?;
            let mut q2 = device.alloc_quantized(rows, cols)?;
            device.rms_norm_quantize(&device.upload(&summed)?, &dw, 1e-5, &mut q2)?;
            Ok((device.download(&dx)?, device.download_quantized(&q)?, device.download_quantized(&q2)?))
        };
        let result = fused().map_err(|e| e.to_string()).and_then(|(sum, got, unfused)| {
            compare_f32_exact(&sum, &summed)?;
            if got != unfused {
                Err("differs from add_f32 then rms_norm_quantize_f32 on this backend".into())
            } else {
                Ok(())
            }
        });
        checks.push(check("add_rms_norm_quantize_f32", shape.clone(), result));
        // The gated activation fused in front of it (both activations): bit for
        // bit `gated_f32` then `rms_norm_quantize_f32` on this backend.
        for act in [crate::ops::ACT_RELU2, crate::ops::ACT_SILU] {
            let pass = |fused: bool| -> crate::KernelResult<_> {
                let (mut dg, du, dw) = (device.upload(&x)?, device.upload(&delta)?, device.upload(&w)?);
                let mut q = device.alloc_quantized(rows, cols)?;
                if fused {
                    device.gated_rms_norm_quantize(&mut dg, &du, act, &dw, 1e-5, &mut q)?;
                } else {
                    device.gated(&mut dg, &du, act)?;
                    device.rms_norm_quantize(&dg, &dw, 1e-5, &mut q)?;
                }
                Ok((device.download(&dg)?, device.download_quantized(&q)?))
            };
            let result = pass(true).and_then(|got| Ok((got, pass(false)?))).map_err(|e| e.to_string());
            let result = result.and_then(|((g, q), (g2, q2))| {
                compare_f32_exact(&g, &g2)?;
                if q != q2 {
                    Err("differs from gated_f32 then rms_norm_quantize_f32 on this backend".into())
                } else {
                    Ok(())
                }
            });
            let name = if act == crate::ops::ACT_RELU2 {
                "gated_rms_norm_quantize_f32 relu2"
            } else {
                "gated_rms_norm_quantize_f32 silu"
            };
            checks.push(check(name, shape.clone(), result));
        }
        // RoPE, the KV write and attention on a batch whose rows sit in
        // different cache slots at scattered positions (distinct places; one
        // row at the context's last position, so the longest scan is taken).
        let places = scattered_places(rows, VERIFY_SLOTS, context, &mut places_rng);
        let positions: Vec<usize> = places.iter().map(|p| p.1).collect();
        let theta = 10_000.0f32;
        let (cos, sin) = crate::cpu::rope_tables(head_dim, theta, context);
        let got = run(&|| {
            let mut dx = device.upload(&x)?;
            let dp = device.row_places(&places)?;
            device.rope(&mut dx, &device.upload(&cos)?, &device.upload(&sin)?, &dp, heads, head_dim)?;
            device.download(&dx)
        });
        let want = rope_reference(&x, heads, head_dim, &positions, theta as f64);
        // f32 angles (the tables) against f64 ones: up to ~1e-4 rad at position 2048.
        checks.push(check("rope_f32", shape.clone(), got.and_then(|g| compare_close(&g, &want, 1e-3, 1e-3))));
        let q = vec(rows * cols, -1.0, 1.0);
        let cache_len = VERIFY_SLOTS * kv_heads * context * head_dim;
        let (k, v) = (vec(cache_len, -1.0, 1.0), vec(cache_len, -2.0, 2.0));
        let got = run(&|| {
            let (dq, dk, dv) = (device.upload(&q)?, device.upload(&k)?, device.upload(&v)?);
            let mut o = device.alloc::<f32>(q.len())?;
            let dp = device.row_places(&places)?;
            let scratch = &mut *kept_scratch.borrow_mut();
            device.attention(&dq, &dk, &dv, &mut o, &dp, heads, kv_heads, head_dim, context, scratch)?;
            device.download(&o)
        });
        let want = attention_reference(&q, &k, &v, &places, heads, kv_heads, head_dim, context);
        checks.push(check("attention_f32", shape.clone(), got.and_then(|g| compare_close(&g, &want, tol_r, tol_a))));
        // A prompt chunk: consecutive positions of one slot (the tiles of
        // `attention_prefill_f32` shared by 16 rows, where the rows allow it).
        if rows <= context {
            let chunk: Vec<(usize, usize)> = (0..rows).map(|i| (1, context - rows + i)).collect();
            let got = run(&|| {
                let (dq, dk, dv) = (device.upload(&q)?, device.upload(&k)?, device.upload(&v)?);
                let mut o = device.alloc::<f32>(q.len())?;
                let dp = device.row_places(&chunk)?;
                let mut scratch = crate::AttentionScratch::new();
                device.attention(&dq, &dk, &dv, &mut o, &dp, heads, kv_heads, head_dim, context, &mut scratch)?;
                device.download(&o)
            });
            let want = attention_reference(&q, &k, &v, &chunk, heads, kv_heads, head_dim, context);
            let result = got.and_then(|g| compare_close(&g, &want, tol_r, tol_a));
            checks.push(check("attention_f32 chunk", shape.clone(), result));
        }
        // The KV write: exact.
        let kx = vec(rows * kv_heads * head_dim, -1.0, 1.0);
        let got = run(&|| {
            let mut dc = device.upload(&k)?;
            let dp = device.row_places(&places)?;
            device.kv_write(&device.upload(&kx)?, &mut dc, &dp, kv_heads, head_dim, context)?;
            device.download(&dc)
        });
        let want = kv_write_reference(&kx, &k, &places, kv_heads, head_dim, context);
        checks.push(check("kv_write_f32", shape.clone(), got.and_then(|g| compare_f32_exact(&g, &want))));
        // RoPE on q and k and both KV writes in one launch: bit for bit those
        // four ops (each checked against its reference above) on this backend.
        let vx = vec(rows * kv_heads * head_dim, -2.0, 2.0);
        let step = |fused: bool| -> crate::KernelResult<[Vec<f32>; 4]> {
            let (mut dq, mut dk, dv) = (device.upload(&q)?, device.upload(&kx)?, device.upload(&vx)?);
            let (mut kc, mut vc) = (device.upload(&k)?, device.upload(&v)?);
            let (dc, ds) = (device.upload(&cos)?, device.upload(&sin)?);
            let dp = device.row_places(&places)?;
            if fused {
                let dims = [heads, kv_heads, head_dim, context];
                device.rope_kv_write(&mut dq, &mut dk, &dv, &mut kc, &mut vc, &dc, &ds, &dp, dims)?;
            } else {
                device.rope(&mut dq, &dc, &ds, &dp, heads, head_dim)?;
                device.rope(&mut dk, &dc, &ds, &dp, kv_heads, head_dim)?;
                device.kv_write(&dk, &mut kc, &dp, kv_heads, head_dim, context)?;
                device.kv_write(&dv, &mut vc, &dp, kv_heads, head_dim, context)?;
            }
            Ok([device.download(&dq)?, device.download(&dk)?, device.download(&kc)?, device.download(&vc)?])
        };
        let result = step(true).and_then(|got| Ok((got, step(false)?))).map_err(|e| e.to_string());
        let result =
            result.and_then(|(got, want)| got.iter().zip(&want).try_for_each(|(g, w)| compare_f32_exact(g, w)));
        checks.push(check("rope_kv_write_f32", shape.clone(), result));
        // Gates and the residual add.
        let (g, u) = (vec(rows * cols, -4.0, 4.0), vec(rows * cols, -2.0, 2.0));
        for (name, act) in [("gated_f32 relu2", crate::ops::ACT_RELU2), ("gated_f32 silu", crate::ops::ACT_SILU)] {
            let got = run(&|| {
                let mut dg = device.upload(&g)?;
                device.gated(&mut dg, &device.upload(&u)?, act)?;
                device.download(&dg)
            });
            let want = gated_reference(&g, &u, act);
            checks.push(check(name, shape.clone(), got.and_then(|r| compare_close(&r, &want, tol_r, tol_a))));
        }
        let got = run(&|| {
            let mut dg = device.upload(&g)?;
            device.add(&mut dg, &device.upload(&u)?)?;
            device.download(&dg)
        });
        let want: Vec<f32> = g.iter().zip(&u).map(|(a, b)| a + b).collect();
        checks.push(check("add_f32", shape.clone(), got.and_then(|r| compare_f32_exact(&r, &want))));
        // The embedding gather: exact rows.
        let vocab = 37;
        let table = vec(vocab * cols, -1.0, 1.0);
        let ids: Vec<u32> = (0..rows).map(|r| ((r * 11 + 5) % vocab) as u32).collect();
        let got = run(&|| {
            let mut o = device.alloc::<f32>(rows * cols)?;
            device.embedding(&device.upload(&table)?, &device.upload(&ids)?, &mut o, cols)?;
            device.download(&o)
        });
        let want: Vec<f32> = ids.iter().flat_map(|&i| table[i as usize * cols..][..cols].to_vec()).collect();
        checks.push(check("embedding_f32", shape.clone(), got.and_then(|r| compare_f32_exact(&r, &want))));
        // The reduced lm_heads: f16, and int8 with row scales, over a small
        // vocabulary of padded rows, against f64 sums of the same weights.
        let vocab = 45;
        let ld = crate::head_row_len(cols);
        let a = vec(rows * cols, -3.0, 3.0);
        let head = vec(vocab * cols, -1.0, 1.0);
        let mut h16 = vec![half::f16::ZERO; vocab * ld];
        let mut h8 = vec![0i8; vocab * ld];
        let mut scales = Vec::with_capacity(vocab);
        for j in 0..vocab {
            for t in 0..cols {
                h16[j * ld + t] = half::f16::from_f32(head[j * cols + t]);
            }
            let (q, s) = crate::cpu::quantize_head_row(&head[j * cols..][..cols]);
            h8[j * ld..][..cols].copy_from_slice(&q);
            scales.push(s);
        }
        let got = run(&|| {
            let mut c = device.alloc::<f32>(rows * vocab)?;
            device.head_gemm_f16(&device.upload(&a)?, &device.upload(&h16)?, &mut c, rows, vocab, cols)?;
            device.download(&c)
        });
        let want = |w: &dyn Fn(usize, usize) -> f64| crate::reference::head_gemv_reference(&a, w, rows, vocab, cols);
        let (want16, mag16) = want(&|j, t| h16[j * ld + t].to_f64());
        checks.push(check(
            "head_gemv_f16",
            shape.clone(),
            got.and_then(|g| crate::reference::compare_sums(&g, &want16, &mag16, cols)),
        ));
        let got = run(&|| {
            let mut c = device.alloc::<f32>(rows * vocab)?;
            let (dv, ds) = (device.upload(&h8)?, device.upload(&scales)?);
            device.head_gemm_i8(&device.upload(&a)?, &dv, &ds, &mut c, rows, vocab, cols)?;
            device.download(&c)
        });
        let (want8, mag8) = want(&|j, t| h8[j * ld + t] as f64 * scales[j] as f64);
        checks.push(check(
            "head_gemv_i8",
            shape.clone(),
            got.and_then(|g| crate::reference::compare_sums(&g, &want8, &mag8, cols)),
        ));
        // f32 → f16 (exact bits): random values, then ties to even, the
        // largest half, overflow to ±∞, subnormals and underflow to ±0.
        let mut wide = vec(rows * cols, -70_000.0, 70_000.0);
        let specials = [
            1.0 + 1.0 / 2048.0,
            1.0 + 3.0 / 2048.0,
            -(2.0 + 1.0 / 1024.0),
            65_504.0,
            65_519.99,
            65_520.0,
            -1e6,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            6.0e-8,
            2.9e-8,
            3.0e-5,
            -1.0e-9,
        ];
        for (slot, v) in wide.iter_mut().zip(specials) {
            *slot = v;
        }
        let got = (|| -> crate::KernelResult<Vec<half::f16>> {
            let mut o = device.alloc::<half::f16>(wide.len())?;
            device.convert_f32_to_f16(&device.upload(&wide)?, &mut o)?;
            device.download(&o)
        })()
        .map_err(|e| e.to_string());
        let want: Vec<u16> = wide.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect();
        let result = got.and_then(|g| compare_exact(&g.iter().map(|h| h.to_bits()).collect::<Vec<_>>(), &want));
        checks.push(check("convert_f32_to_f16", shape.clone(), result));
        // The dense f16 linears of the cuBLAS FP16 baseline: ternary weights
        // made dense (`dense_f16_weights`), three matrices of different
        // heights over the same activations rounded to f16, against f64 sums.
        let mut weights_rng = StdRng::seed_from_u64(seed ^ rows as u64);
        let mats: Vec<crate::ternary::DeviceTernary> = [45, 7, 1]
            .iter()
            .map(|&n| crate::ternary::DeviceTernary::random(n, cols, 0.37, &mut weights_rng))
            .collect();
        let got = (|| -> crate::KernelResult<Vec<Vec<f32>>> {
            let dense: Vec<crate::F16Weights> =
                mats.iter().map(|t| device.dense_f16_weights(&device.upload_ternary(t)?)).collect::<Result<_, _>>()?;
            let mut ys: Vec<crate::Buffer<f32>> =
                mats.iter().map(|t| device.alloc(rows * t.rows())).collect::<Result<_, _>>()?;
            let mut staging = device.alloc::<half::f16>(rows * cols)?;
            device.dense_f16_linears(&device.upload(&a)?, &mut staging, &dense.iter().collect::<Vec<_>>(), &mut ys)?;
            ys.iter().map(|y| device.download(y)).collect()
        })()
        .map_err(|e| e.to_string());
        let a16: Vec<f32> = a.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        let result = got.and_then(|ys| {
            mats.iter().zip(&ys).try_for_each(|(t, y)| {
                let w = |j: usize, c: usize| half::f16::from_f32(t.trit(j, c) as f32 * t.scale()).to_f64();
                let (want, mag) = crate::reference::head_gemv_reference(&a16, &w, rows, t.rows(), cols);
                crate::reference::compare_sums(y, &want, &mag, cols)
            })
        });
        checks.push(check("dense_f16_linears", shape.clone(), result));
        // Greedy sampling: rows of few distinct values (ties everywhere), a NaN and a −∞ in each row,
        // and one row of a realistic vocabulary's length.
        let mut logits: Vec<f32> = vec(rows * cols, -3.0, 3.0).iter().map(|v| v.round()).collect();
        for r in 0..rows {
            logits[r * cols + (r * 7) % cols] = f32::NAN;
            logits[r * cols + (r * 3 + 1) % cols] = f32::NEG_INFINITY;
        }
        for (name, x, width) in
            [("argmax_f32", logits, cols), ("argmax_f32 vocab", vec(VERIFY_VOCAB, -30.0, 30.0), VERIFY_VOCAB)]
        {
            let n = x.len() / width;
            let got = run_ids(&|| {
                let mut o = device.alloc::<u32>(n)?;
                device.argmax(&device.upload(&x)?, width, &mut o)?;
                device.download(&o)
            });
            let want = crate::reference::argmax_reference(&x, width);
            checks.push(check(name, shape.clone(), got.and_then(|g| exact_ids(&g, &want))));
        }
    }
    for &(m, n, k) in plan.matmul.iter().filter(|s| s.0 <= kernels_gpu::matmul::GEMV_MAX_M) {
        verify_grouped_gemv(device, &mut rng, m, n, k, &mut checks);
    }
    checks
}

/// The grouped GEMV (`ternary_gemv_many_*`: one launch for q / k / v or
/// gate / up) on device buffers: three matrices of different heights around
/// `n` (one of a single row), then two, each output exact against the scalar
/// reference of its own matrix.
fn verify_grouped_gemv(
    device: &crate::Device,
    rng: &mut StdRng,
    m: usize,
    n: usize,
    k: usize,
    checks: &mut Vec<Check>,
) {
    use crate::matmul::{Activations, Precision};
    use crate::reference::{quantize_reference, ternary_matmul_reference};
    let x = quantize_reference(Activations::F32(&random_activations(rng, m, k)), m, k);
    let heights = [n, n / 2 + 1, 1];
    let ws: Vec<_> =
        heights.iter().map(|&h| crate::ternary::DeviceTernary::from_packed(&random_weights(rng, h, k))).collect();
    let small = m * n * k <= SCALAR_REFERENCE_LIMIT;
    for count in [3, 2] {
        let shape =
            format!("{m}×({})×{k}", heights[..count].iter().map(|h| h.to_string()).collect::<Vec<_>>().join("+"));
        for precision in [Precision::F32, Precision::F16] {
            let want: Vec<Vec<f32>> = ws[..count]
                .iter()
                .map(|w| {
                    if small {
                        ternary_matmul_reference(&x, w, precision)
                    } else {
                        crate::cpu_ternary::ternary_matmul(&x, w, precision)
                    }
                })
                .collect();
            let got = match precision {
                Precision::F32 => grouped_gemv::<f32>(device, &x, &ws[..count]),
                Precision::F16 => grouped_gemv::<half::f16>(device, &x, &ws[..count]),
            };
            let result = got
                .map_err(|e| e.to_string())
                .and_then(|got| got.iter().zip(&want).try_for_each(|(g, w)| compare_f32_exact(g, w)));
            checks.push(check(&format!("ternary_gemv_many_{}", precision.name()), shape.clone(), result));
        }
    }
}

/// Runs the grouped GEMV of `x` against `ws` on `device`; each output as f32.
fn grouped_gemv<O: crate::buffer::OutputElem + crate::ops::EmuVariant>(
    device: &crate::Device,
    x: &crate::matmul::QuantizedActivations,
    ws: &[crate::ternary::DeviceTernary],
) -> crate::KernelResult<Vec<Vec<f32>>> {
    let dx = device.upload_quantized(x)?;
    let dws = ws.iter().map(|w| device.upload_ternary(w)).collect::<crate::KernelResult<Vec<_>>>()?;
    let mut ys = ws.iter().map(|w| device.alloc::<O>(x.rows * w.rows())).collect::<crate::KernelResult<Vec<_>>>()?;
    device.ternary_gemv_many(&dx, &dws.iter().collect::<Vec<_>>(), &mut ys)?;
    ys.iter().map(|y| Ok(device.download(y)?.into_iter().map(O::to_f32).collect())).collect()
}

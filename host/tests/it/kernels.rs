//! Each test is written once as a function of a backend; `backend_tests!`
//! instantiates it for every backend (`cpu`, `emu`, and `cuda`: skipped with
//! the driver's reason when no GPU starts, a failure under `TRINITY_REQUIRE_GPU=1`).

use rand::SeedableRng;
use rand::rngs::StdRng;
use trinity::reference::{unpack_f16_reference, unpack_i8_reference};
use trinity::{Device, HostOps, verify};

/// Fresh inputs each run; the seed is printed so a failure can be replayed.
pub(crate) fn rng() -> StdRng {
    let seed = std::env::var("TRINITY_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("TRINITY_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

const SHAPES: &[(usize, usize)] = &[(1, 1), (1, 15), (1, 16), (1, 17), (3, 33), (17, 64), (5, 257), (64, 100)];

fn unpack_i8_matches_reference(b: &dyn HostOps) {
    let mut rng = rng();
    for &(rows, cols) in SHAPES {
        let w = verify::random_weights(&mut rng, rows, cols);
        let got = b.unpack_i8(&w).unwrap();
        assert_eq!(verify::compare_exact(&got, &unpack_i8_reference(&w)), Ok(()), "{rows}×{cols} on {}", b.kind());
    }
}

fn unpack_f16_matches_reference(b: &dyn HostOps) {
    let mut rng = rng();
    for &(rows, cols) in SHAPES {
        let w = verify::random_weights(&mut rng, rows, cols);
        let got: Vec<u16> = b.unpack_f16(&w).unwrap().iter().map(|h| h.to_bits()).collect();
        let want: Vec<u16> = unpack_f16_reference(&w).iter().map(|h| h.to_bits()).collect();
        assert_eq!(verify::compare_exact(&got, &want), Ok(()), "{rows}×{cols} on {}", b.kind());
    }
}

fn verify_reports_no_failures(b: &dyn HostOps) {
    let checks = verify::verify(b, &verify::Plan::small(), rand::random());
    assert!(!checks.is_empty());
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed).collect();
    assert!(failed.is_empty(), "{failed:?}");
}

fn trihash_batch_matches_reference(b: &dyn HostOps) {
    use rand::RngExt;
    let mut rng = rng();
    for count in [1usize, 2, 129] {
        let messages: Vec<i8> = (0..count * 243).map(|_| rng.random_range(-1i8..=1)).collect();
        let got = b.trihash_batch(&messages).unwrap();
        let want = trinity::reference::trihash_batch_reference(&messages);
        assert_eq!(verify::compare_exact(&got, &want), Ok(()), "{count} messages on {}", b.kind());
    }
}

/// The deterministic search check: a fixed transaction, a fixed nonce range,
/// m = 4 trailing zeros; every backend must find exactly the scalar
/// reference's set.
fn trihash_search_finds_the_reference_nonce_set(b: &dyn HostOps) {
    use rand::SeedableRng;
    let pow = trinity::trihash::Pow::random(&mut StdRng::seed_from_u64(2026));
    let (first, batches, mwm) = (12_345u64, 4u64, 4usize);
    let want = trinity::reference::trihash_search_reference(pow.base(), first, batches, mwm);
    assert!(!want.is_empty());
    let got = b.trihash_search(pow.base(), first, batches, mwm).unwrap();
    assert_eq!(got, want, "on {}", b.kind());
    for v in got {
        assert!(pow.verify_nonce(v, mwm), "nonce {v} fails the independent re-hash");
    }
}

fn trihash_rejects_bad_requests(b: &dyn HostOps) {
    let err = b.trihash_batch(&[0; 100]).unwrap_err();
    assert!(err.to_string().contains("243-trit"), "{err}");
    let err = b.trihash_search(&[0; 729], 0, 1, 244).unwrap_err();
    assert!(err.to_string().contains("mwm 244"), "{err}");
}

/// Edges of every tile, and the GEMV's long-K paths: K > 2048 (a lane's second
/// load per pass), K > 8192 (a second pass) with more than 48 KB of shared
/// memory (M = 8): (M, N, K).
const MATMUL_SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 16),
    (1, 7, 33),
    (3, 64, 256),
    (17, 33, 130),
    (64, 128, 512),
    (8, 9, 300),
    (129, 130, 64),
    (2, 3, 2112),
    (8, 2, 8256),
];

fn random_activations(rng: &mut StdRng, n: usize) -> Vec<f32> {
    verify::random_activations(rng, 1, n)
}

fn quantize_matches_reference(b: &dyn HostOps) {
    use trinity::matmul::Activations;
    use trinity::reference::quantize_reference;
    let mut rng = rng();
    for &(m, _, k) in MATMUL_SHAPES {
        let x = verify::random_activations(&mut rng, m, k);
        let x16: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
        for xs in [Activations::F32(&x), Activations::F16(&x16)] {
            let got = b.quantize(xs, m, k).unwrap();
            assert_eq!(got, quantize_reference(xs, m, k), "{m}×{k} {:?} on {}", xs.precision(), b.kind());
        }
    }
    // An all-zero row quantizes to zeros with the floor scale, not a NaN.
    let got = b.quantize(Activations::F32(&[0.0; 40]), 2, 20).unwrap();
    assert!(got.values().iter().all(|&v| v == 0) && got.scales.iter().all(|&s| s == 127.0 / 1e-5));
}

fn ternary_matmul_matches_reference_bit_for_bit(b: &dyn HostOps) {
    use trinity::matmul::{Activations, Precision};
    use trinity::reference::{quantize_reference, ternary_matmul_reference};
    let mut rng = rng();
    for &(m, n, k) in MATMUL_SHAPES {
        let x = quantize_reference(Activations::F32(&verify::random_activations(&mut rng, m, k)), m, k);
        let w = trinity::ternary::DeviceTernary::from_packed(&verify::random_weights(&mut rng, n, k));
        for p in [Precision::F32, Precision::F16] {
            let want: Vec<u32> = ternary_matmul_reference(&x, &w, p).iter().map(|v| v.to_bits()).collect();
            let gemm: Vec<u32> = b.ternary_gemm(&x, &w, p).unwrap().iter().map(|v| v.to_bits()).collect();
            assert_eq!(verify::compare_exact(&gemm, &want), Ok(()), "gemm {m}×{n}×{k} {p:?} on {}", b.kind());
            if m <= 8 {
                let gemv: Vec<u32> = b.ternary_gemv(&x, &w, p).unwrap().iter().map(|v| v.to_bits()).collect();
                assert_eq!(verify::compare_exact(&gemv, &want), Ok(()), "gemv {m}×{n}×{k} {p:?} on {}", b.kind());
            }
        }
    }
}

fn sgemm_matches_reference_within_tolerance(b: &dyn HostOps) {
    let mut rng = rng();
    for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (17, 33, 130), (130, 129, 9)] {
        let a = random_activations(&mut rng, m * k);
        let bb = random_activations(&mut rng, n * k);
        let got = b.sgemm(&a, &bb, m, n, k).unwrap();
        let (want, mag) = trinity::reference::sgemm_reference(&a, &bb, m, n, k);
        assert_eq!(trinity::reference::compare_sgemm(&got, &want, &mag), Ok(()), "{m}×{n}×{k} on {}", b.kind());
    }
}

fn matmul_rejects_bad_shapes(b: &dyn HostOps) {
    use trinity::matmul::{Activations, Precision};
    use trinity::reference::quantize_reference;
    let err = b.quantize(Activations::F32(&[1.0; 5]), 2, 3).unwrap_err();
    assert!(err.to_string().contains("5 activations"), "{err}");
    let x = quantize_reference(Activations::F32(&[1.0; 9 * 20]), 9, 20);
    let w = trinity::ternary::DeviceTernary::from_packed(&verify::random_weights(&mut rng(), 4, 20));
    let err = b.ternary_gemv(&x, &w, Precision::F32).unwrap_err();
    assert!(err.to_string().contains("M = 9 exceeds"), "{err}");
    let w21 = trinity::ternary::DeviceTernary::from_packed(&verify::random_weights(&mut rng(), 4, 21));
    let err = b.ternary_gemm(&x, &w21, Precision::F32).unwrap_err();
    assert!(err.to_string().contains("K = 20, weights K = 21"), "{err}");
    let err = b.sgemm(&[1.0; 6], &[1.0; 6], 2, 2, 2).unwrap_err();
    assert!(err.to_string().contains("sgemm") && err.to_string().contains("2×2×2"), "{err}");
}

#[test]
fn cpu_fast_ternary_path_matches_the_scalar_reference_across_block_tails() {
    use trinity::matmul::{Activations, Precision};
    use trinity::reference::{quantize_reference, ternary_matmul_reference};
    let mut rng = rng();
    // K past 256-weight blocks with 64/128/192-weight tails; M around the 4-row register blocking;
    // K past the 16-bit widening points (1024 weights decode, 32 × 32 bytes prefill) with tails;
    // N past one parallel task (64 rows decode, 24 prefill) and odd; M and N past the 8 × 8 tiles
    // the prefill result is transposed in, with rows and columns left over; M and N past the
    // AMX path's 32 × 32 tile blocks (whole, and with one row or column left), K long;
    // N past the VNNI path's 48-row tasks and its 16-row vectors (49, 65, 97) with
    // M past its 8-row blocks, K the smallest padded row (64) and one past it;
    // M past the VNNI path's 1024-row passes; decode (M ≤ 2) with a lone
    // partial block (K = 1, 33, 190), each tail of the VNNI GEMV's 16-word
    // blocks (rows are padded to 4 words: 4 after 10 blocks at K = 2600, 8 at
    // K = 1100, 12 at K = 700), and weight rows not a multiple of its 4.
    let shapes = [
        (1, 3, 256),
        (5, 17, 600),
        (9, 4, 1024),
        (4, 33, 700),
        (2, 2, 250),
        (1, 70, 2600),
        (2, 67, 1100),
        (7, 51, 2600),
        (3, 5, 4100),
        (17, 45, 300),
        (32, 32, 512),
        (33, 70, 2600),
        (40, 33, 6912),
        (16, 49, 64),
        (11, 65, 65),
        (25, 97, 1536),
        (1030, 7, 130),
        (1, 1, 1),
        (2, 6, 33),
        (1, 7, 700),
        (2, 5, 190),
    ];
    for &(m, n, k) in &shapes {
        let x = quantize_reference(Activations::F32(&verify::random_activations(&mut rng, m, k)), m, k);
        let w = trinity::ternary::DeviceTernary::from_packed(&verify::random_weights(&mut rng, n, k));
        let want = ternary_matmul_reference(&x, &w, Precision::F32);
        assert_eq!(trinity::cpu_ternary::ternary_matmul(&x, &w, Precision::F32), want, "{m}×{n}×{k}");
        for (name, level) in trinity::cpu_ternary::available_levels() {
            let got = trinity::cpu_ternary::ternary_matmul_f32_at(&x, &w, level);
            assert_eq!(got, want, "{m}×{n}×{k} on the {name} path");
        }
    }
    eprintln!("CPU ternary path: {}", trinity::cpu_ternary::simd_level());
}

#[test]
fn cpu_fast_ternary_path_is_exact_at_the_largest_partial_sums() {
    use trinity::matmul::{Activations, Precision};
    use trinity::reference::{quantize_reference, ternary_matmul_reference};
    // Every activation at the int8 extreme and every weight +1 (code 2): the
    // 16-bit partial sums of the SIMD paths reach their bound (16 384 at most)
    // and must neither saturate nor wrap. The -1 rows check the other sign.
    for &(m, k) in &[(1, 4096), (2, 4096), (5, 4096)] {
        let x: Vec<f32> = (0..m * k).map(|i| if (i / k) % 2 == 0 { 1.0 } else { -1.0 }).collect();
        let x = quantize_reference(Activations::F32(&x), m, k);
        let trits: Vec<i8> = (0..3 * k).map(|i| [1i8, -1, 1][i / k]).collect();
        let w = trinity::ternary::DeviceTernary::from_packed(
            &trinity::ternary::PackedTernary::pack(&trits, 3, k, 1.0).expect("valid trits"),
        );
        let want = ternary_matmul_reference(&x, &w, Precision::F32);
        assert_eq!(want[0].abs(), 127.0 * k as f32 / 127.0, "the reference itself: |y| = k · 127 / 127");
        for (name, level) in trinity::cpu_ternary::available_levels() {
            let got = trinity::cpu_ternary::ternary_matmul_f32_at(&x, &w, level);
            assert_eq!(got, want, "{m}×3×{k} on the {name} path");
        }
    }
}

macro_rules! backend_tests {
    ($($backend:ident => $choice:expr;)*) => {$(
        mod $backend {
            use super::*;
            /// The backend, or why it cannot run here (then the test is skipped and says so,
            /// unless `TRINITY_REQUIRE_GPU=1` makes that a failure).
            fn backend() -> Result<Box<dyn HostOps>, String> {
                match Device::open($choice) {
                    Ok((device, _)) => Ok(Box::new(device)),
                    Err(e) if trinity::device::gpu_required() => panic!("TRINITY_REQUIRE_GPU=1 and the GPU cannot be used: {e}"),
                    Err(e) => Err(e.to_string()),
                }
            }
            macro_rules! run {
                ($test:ident) => {
                    #[test]
                    fn $test() {
                        match backend() {
                            Ok(b) => super::$test(b.as_ref()),
                            Err(why) => eprintln!("skipped: {} unavailable: {why}", stringify!($backend)),
                        }
                    }
                };
            }
            run!(unpack_i8_matches_reference);
            run!(unpack_f16_matches_reference);
            run!(verify_reports_no_failures);
            run!(trihash_batch_matches_reference);
            run!(trihash_search_finds_the_reference_nonce_set);
            run!(trihash_rejects_bad_requests);
            run!(quantize_matches_reference);
            run!(ternary_matmul_matches_reference_bit_for_bit);
            run!(sgemm_matches_reference_within_tolerance);
            run!(matmul_rejects_bad_shapes);
            run!(device_buffers_chain_quantize_into_gemv_without_the_host);
        }
    )*};
}

backend_tests! {
    cpu => trinity::BackendChoice::Cpu;
    emu => trinity::BackendChoice::Emu;
    cuda => trinity::BackendChoice::Cuda;
}

/// The float ops of a layer (RMSNorm, RoPE, attention, gates, add,
/// embedding, KV write) against the f64 references, on every backend.
#[test]
fn layer_ops_match_the_references_on_every_backend() {
    for choice in [trinity::BackendChoice::Cpu, trinity::BackendChoice::Emu, trinity::BackendChoice::Cuda] {
        let device = match Device::open(choice) {
            Ok((d, _)) => d,
            Err(e) if trinity::device::gpu_required() => {
                panic!("TRINITY_REQUIRE_GPU=1 and the GPU cannot be used: {e}")
            }
            Err(e) => {
                eprintln!("skipped: {choice} unavailable: {e}");
                continue;
            }
        };
        let checks = verify::verify_layer_ops(&device, &verify::Plan::small(), rand::random());
        assert!(checks.len() >= 65, "{}", checks.len());
        let failed: Vec<_> = checks.iter().filter(|c| !c.passed).collect();
        assert!(failed.is_empty(), "{choice}: {failed:?}");
    }
}

/// Quantize → GEMV → GEMM on device buffers, one download at the end: the
/// model's path. Matches the host-data layer, which matches the reference.
fn device_buffers_chain_quantize_into_gemv_without_the_host(b: &dyn HostOps) {
    use trinity::matmul::{Activations, Precision};
    let (device, _) = Device::open(match b.kind() {
        trinity::BackendKind::Cpu => trinity::BackendChoice::Cpu,
        trinity::BackendKind::Emu => trinity::BackendChoice::Emu,
        trinity::BackendKind::Cuda => trinity::BackendChoice::Cuda,
    })
    .unwrap();
    let mut rng = rng();
    let (m, n, k) = (3, 40, 200);
    let x = verify::random_activations(&mut rng, m, k);
    let w = trinity::ternary::DeviceTernary::from_packed(&verify::random_weights(&mut rng, n, k));
    let dx = device.upload(&x).unwrap();
    let dw = device.upload_ternary(&w).unwrap();
    let mut q = device.alloc_quantized(m, k).unwrap();
    let mut y = device.alloc::<f32>(m * n).unwrap();
    device.quantize(&dx, &mut q).unwrap();
    device.ternary_linear(&q, &dw, &mut y).unwrap();
    let got = device.download(&y).unwrap();
    let want = trinity::reference::ternary_matmul_reference(
        &trinity::reference::quantize_reference(Activations::F32(&x), m, k),
        &w,
        Precision::F32,
    );
    assert_eq!(verify::compare_f32_exact(&got, &want), Ok(()));
    // A buffer of another device is refused with a clear error, not misused.
    let host = Device::Cpu.upload(&x).unwrap();
    if device.kind() == trinity::BackendKind::Cuda {
        let err = device.quantize(&host, &mut q).unwrap_err();
        assert!(err.to_string().contains("host memory"), "{err}");
    }
}

#[test]
fn a_gemv_that_needs_more_shared_memory_than_the_device_allows_names_both_numbers() {
    use trinity::matmul::{Activations, Precision};
    // M = 8, K = 12800: 102400 bytes of activations, over the emulator's 99 KB (an sm_86 card's opt-in).
    let (m, n, k) = (8, 2, 12800);
    let x = trinity::reference::quantize_reference(Activations::F32(&vec![1.0; m * k]), m, k);
    let w = trinity::ternary::DeviceTernary::from_packed(&verify::random_weights(&mut rng(), n, k));
    let err = HostOps::ternary_gemv(&Device::Emu, &x, &w, Precision::F32).unwrap_err().to_string();
    assert!(err.contains("needs 102400 bytes of shared memory per block; the device allows 101376"), "{err}");
    // The CPU has no such limit, and the GEMM none at all.
    assert!(HostOps::ternary_gemv(&Device::Cpu, &x, &w, Precision::F32).is_ok());
}

/// The grouped GEMV refuses what it cannot compute, naming the shapes, on
/// every backend (its results are checked by `verify_layer_ops`, above).
#[test]
fn grouped_gemv_rejects_bad_requests() {
    use trinity::matmul::Activations;
    let mut rng = rng();
    for device in [Device::Cpu, Device::Emu] {
        let (m, k) = (2, 100);
        let x =
            trinity::reference::quantize_reference(Activations::F32(&verify::random_activations(&mut rng, m, k)), m, k);
        let x = device.upload_quantized(&x).unwrap();
        let w = |n: usize, k: usize, rng: &mut rand::rngs::StdRng| {
            let w = trinity::ternary::DeviceTernary::from_packed(&verify::random_weights(rng, n, k));
            device.upload_ternary(&w).unwrap()
        };
        let (a, b, other_k) = (w(5, k, &mut rng), w(3, k, &mut rng), w(3, 300, &mut rng));
        let mut ys: Vec<_> = (0..4).map(|_| device.alloc::<f32>(m * 5).unwrap()).collect();
        let err = device.ternary_gemv_many(&x, &[&a, &a, &a, &a], &mut ys).unwrap_err().to_string();
        assert!(
            err.contains("4 weight matrices for 4 outputs (1 to 3 needed)") && err.contains("2×(5+5+5+5)×100"),
            "{err}"
        );
        let err = device.ternary_gemv_many(&x, &[&a, &other_k], &mut ys[..2]).unwrap_err().to_string();
        assert!(err.contains("activations have K = 100, weights K = 300"), "{err}");
        // The second output is sized for 5 rows, the matrix has 3.
        let err = device.ternary_gemv_many(&x, &[&a, &b], &mut ys[..2]).unwrap_err().to_string();
        assert!(err.contains("ternary_gemv_many_f32") && err.contains("2×3×100: buffer lengths"), "{err}");
        let x9 = trinity::reference::quantize_reference(Activations::F32(&vec![0.5; 9 * k]), 9, k);
        let x9 = device.upload_quantized(&x9).unwrap();
        let err = device.ternary_gemv_many(&x9, &[&a, &a], &mut ys[..2]).unwrap_err().to_string();
        assert!(err.contains("M = 9 exceeds this kernel's 8"), "{err}");
    }
}

#[test]
fn verify_detects_a_wrong_result() {
    // A backend that is off by one element must fail verification.
    struct Broken;
    impl HostOps for Broken {
        fn kind(&self) -> trinity::BackendKind {
            trinity::BackendKind::Cpu
        }
        fn describe(&self) -> String {
            "broken".into()
        }
        fn unpack_i8(&self, w: &trinity::ternary::PackedTernary) -> trinity::KernelResult<Vec<i8>> {
            let mut v = unpack_i8_reference(w);
            let last = v.len() - 1;
            v[last] = if v[last] == 1 { 0 } else { 1 };
            Ok(v)
        }
        fn unpack_f16(&self, w: &trinity::ternary::PackedTernary) -> trinity::KernelResult<Vec<half::f16>> {
            Ok(unpack_f16_reference(w))
        }
        fn trihash_batch(&self, messages: &[i8]) -> trinity::KernelResult<Vec<i8>> {
            Ok(trinity::reference::trihash_batch_reference(messages))
        }
        fn trihash_search(
            &self,
            base: &[i8; 729],
            first: u64,
            batches: u64,
            mwm: usize,
        ) -> trinity::KernelResult<Vec<u64>> {
            Ok(trinity::reference::trihash_search_reference(base, first, batches, mwm))
        }
        fn quantize(
            &self,
            x: trinity::matmul::Activations<'_>,
            rows: usize,
            cols: usize,
        ) -> trinity::KernelResult<trinity::matmul::QuantizedActivations> {
            Ok(trinity::reference::quantize_reference(x, rows, cols))
        }
        fn ternary_gemv(
            &self,
            x: &trinity::matmul::QuantizedActivations,
            w: &trinity::ternary::DeviceTernary,
            p: trinity::matmul::Precision,
        ) -> trinity::KernelResult<Vec<f32>> {
            Ok(trinity::reference::ternary_matmul_reference(x, w, p))
        }
        fn ternary_gemm(
            &self,
            x: &trinity::matmul::QuantizedActivations,
            w: &trinity::ternary::DeviceTernary,
            p: trinity::matmul::Precision,
        ) -> trinity::KernelResult<Vec<f32>> {
            Ok(trinity::reference::ternary_matmul_reference(x, w, p))
        }
        fn sgemm(&self, a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> trinity::KernelResult<Vec<f32>> {
            Ok(trinity::reference::sgemm_reference(a, b, m, n, k).0)
        }
    }
    let plan = verify::Plan { unpack: vec![(3, 17)], ..verify::Plan::empty() };
    let checks = verify::verify(&Broken, &plan, 7);
    let i8_check = checks.iter().find(|c| c.kernel == "unpack_i8").unwrap();
    assert!(!i8_check.passed);
    assert!(i8_check.detail.contains("1 mismatches; first at 50"), "{}", i8_check.detail);
}

//! Each test is written once as a function of a backend; `backend_tests!`
//! instantiates it for every backend.

use rand::SeedableRng;
use rand::rngs::StdRng;
use trinity::backend::Backend;
use trinity::cpu::{unpack_f16_reference, unpack_i8_reference};
use trinity::verify;

/// Fresh inputs each run; the seed is printed so a failure can be replayed.
fn rng() -> StdRng {
    let seed = std::env::var("TRINITY_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("TRINITY_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

const SHAPES: &[(usize, usize)] = &[(1, 1), (1, 15), (1, 16), (1, 17), (3, 33), (17, 64), (5, 257), (64, 100)];

fn unpack_i8_matches_reference(b: &dyn Backend) {
    let mut rng = rng();
    for &(rows, cols) in SHAPES {
        let w = verify::random_weights(&mut rng, rows, cols);
        let got = b.unpack_i8(&w).unwrap();
        assert_eq!(verify::compare_exact(&got, &unpack_i8_reference(&w)), Ok(()), "{rows}×{cols} on {}", b.kind());
    }
}

fn unpack_f16_matches_reference(b: &dyn Backend) {
    let mut rng = rng();
    for &(rows, cols) in SHAPES {
        let w = verify::random_weights(&mut rng, rows, cols);
        let got: Vec<u16> = b.unpack_f16(&w).unwrap().iter().map(|h| h.to_bits()).collect();
        let want: Vec<u16> = unpack_f16_reference(&w).iter().map(|h| h.to_bits()).collect();
        assert_eq!(verify::compare_exact(&got, &want), Ok(()), "{rows}×{cols} on {}", b.kind());
    }
}

fn verify_reports_no_failures(b: &dyn Backend) {
    let checks = verify::verify(b, &verify::Plan::small(), rand::random());
    assert!(!checks.is_empty());
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed).collect();
    assert!(failed.is_empty(), "{failed:?}");
}

fn trihash_batch_matches_reference(b: &dyn Backend) {
    use rand::RngExt;
    let mut rng = rng();
    for count in [1usize, 2, 129] {
        let messages: Vec<i8> = (0..count * 243).map(|_| rng.random_range(-1i8..=1)).collect();
        let got = b.trihash_batch(&messages).unwrap();
        let want = trinity::cpu::trihash_batch_reference(&messages);
        assert_eq!(verify::compare_exact(&got, &want), Ok(()), "{count} messages on {}", b.kind());
    }
}

/// The deterministic search check: a fixed transaction, a fixed nonce range,
/// m = 4 trailing zeros; every backend must find exactly the scalar
/// reference's set.
fn trihash_search_finds_the_reference_nonce_set(b: &dyn Backend) {
    use rand::SeedableRng;
    let pow = trinity::trihash::Pow::random(&mut StdRng::seed_from_u64(2026));
    let (first, batches, mwm) = (12_345u64, 4u64, 4usize);
    let want = trinity::cpu::trihash_search_reference(pow.base(), first, batches, mwm);
    assert!(!want.is_empty());
    let got = b.trihash_search(pow.base(), first, batches, mwm).unwrap();
    assert_eq!(got, want, "on {}", b.kind());
    for v in got {
        assert!(pow.verify_nonce(v, mwm), "nonce {v} fails the independent re-hash");
    }
}

fn trihash_rejects_bad_requests(b: &dyn Backend) {
    let err = b.trihash_batch(&[0; 100]).unwrap_err();
    assert!(err.to_string().contains("243-trit"), "{err}");
    let err = b.trihash_search(&[0; 729], 0, 1, 244).unwrap_err();
    assert!(err.to_string().contains("mwm 244"), "{err}");
}

macro_rules! backend_tests {
    ($($backend:ident => $make:expr;)*) => {$(
        mod $backend {
            use super::*;
            fn backend() -> Option<Box<dyn Backend>> {
                $make
            }
            macro_rules! run {
                ($test:ident) => {
                    #[test]
                    fn $test() {
                        match backend() {
                            Some(b) => super::$test(b.as_ref()),
                            None => eprintln!("skipped: no {} device", stringify!($backend)),
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
        }
    )*};
}

backend_tests! {
    cpu => Some(Box::new(trinity::cpu::CpuBackend));
    emu => Some(Box::new(trinity::emulator::EmuBackend));
    cuda => trinity::cuda::CudaBackend::new(0).ok().map(|b| Box::new(b) as Box<dyn Backend>);
}

#[test]
fn verify_detects_a_wrong_result() {
    // A backend that is off by one element must fail verification.
    struct Broken;
    impl Backend for Broken {
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
            Ok(trinity::cpu::trihash_batch_reference(messages))
        }
        fn trihash_search(
            &self,
            base: &[i8; 729],
            first: u64,
            batches: u64,
            mwm: usize,
        ) -> trinity::KernelResult<Vec<u64>> {
            Ok(trinity::cpu::trihash_search_reference(base, first, batches, mwm))
        }
    }
    let plan = verify::Plan { unpack: vec![(3, 17)], trihash_messages: vec![], trihash_search: vec![] };
    let checks = verify::verify(&Broken, &plan, 7);
    let i8_check = checks.iter().find(|c| c.kernel == "unpack_i8").unwrap();
    assert!(!i8_check.passed);
    assert!(i8_check.detail.contains("1 mismatches; first at 50"), "{}", i8_check.detail);
}

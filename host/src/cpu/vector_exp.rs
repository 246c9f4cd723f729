//! # `e^x` in 16 lanes (AVX-512) and in 8 (AVX2), for the softmax of attention and SiLU
//!
//! Cephes' `expf`: `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-7
//! polynomial for `e^r`, scaled by `2^n` (`vscalefps`; on AVX2 `2^n` built in
//! the exponent field, `n` within −126 … 127 after the clamp). Both within 2
//! ulp of `f32::exp` over `[−87, 88]` (tested over the whole range).

use std::arch::x86_64::*;

/// The clamp of the input (see [`exp`]).
const LOWEST: f32 = -87.3;
const HIGHEST: f32 = 88.3;
/// ln 2 in two parts, so `n · LN2_HIGH` is exact.
const LN2_HIGH: f32 = 0.693_359_4;
const LN2_LOW: f32 = -2.121_944_4e-4;
/// Cephes' coefficients of `(e^r − 1 − r) / r²`, highest degree first.
const POLYNOMIAL: [f32; 6] = [1.987_569_2e-4, 1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];

/// `e^x` per lane. Inputs are clamped to `[−87.3, 88.3]`: below, the result is
/// near the smallest normal (`e^−87.3`) instead of a subnormal or zero; above,
/// near `2.1e38` instead of infinity, so `1 + e^x` never overflows to a
/// division by infinity (SiLU of a very negative input is then a tiny
/// negative number instead of −0).
#[target_feature(enable = "avx512f")]
pub(crate) fn exp(x: __m512) -> __m512 {
    let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(LOWEST)), _mm512_set1_ps(HIGHEST));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HIGH), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LOW), r);
    let mut p = _mm512_set1_ps(POLYNOMIAL[0]);
    for c in &POLYNOMIAL[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
    }
    let p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0)));
    _mm512_scalef_ps(p, n)
}

/// [`exp`] in 8 lanes (AVX2 and FMA), the same clamp and polynomial.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn exp_avx2(x: __m256) -> __m256 {
    let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(LOWEST)), _mm256_set1_ps(HIGHEST));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HIGH), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LOW), r);
    let mut p = _mm256_set1_ps(POLYNOMIAL[0]);
    for c in &POLYNOMIAL[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
    }
    let p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0)));
    // 2^n as a float: n + 127 in the exponent field (a normal number for n in −126 … 127).
    let two_n = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
    _mm256_mul_ps(p, _mm256_castsi256_ps(two_n))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each of `xs` through `exp` `lanes` at a time, checked against `f32::exp`.
    fn within_two_ulp(exp: &dyn Fn(&[f32]) -> Vec<f32>, lanes: usize) {
        let xs: Vec<f32> =
            (0..=400_000).map(|i| -87.0 + 175.0 * i as f32 / 400_000.0).chain([-0.0, -1e-30, 1e-30, -0.5]).collect();
        for chunk in xs.chunks(lanes) {
            let mut padded = chunk.to_vec();
            padded.resize(lanes, 0.0);
            for (&x, &g) in chunk.iter().zip(&exp(&padded)) {
                let want = x.exp();
                let ulp = (want.to_bits() as i64 - g.to_bits() as i64).abs();
                assert!(ulp <= 2, "exp({x}) = {g}, f32::exp {want}: {ulp} ulp apart ({lanes} lanes)");
            }
        }
        // Far outside the range: finite and positive, never zero, infinite or NaN.
        let low = exp(&vec![-1e30; lanes]);
        assert!(low.iter().all(|&g| g > 0.0 && g < 1.3e-38), "{low:?}");
        let high = exp(&vec![1e30; lanes]);
        assert!(high.iter().all(|&g| g > 1e38 && g.is_finite()), "{high:?}");
        assert_eq!(exp(&vec![0.0; lanes]), vec![1.0; lanes]);
    }

    #[test]
    fn the_avx2_exp_is_within_two_ulp_of_f32_exp_from_minus_87_to_88() {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            eprintln!("skipped: no AVX2 and FMA on this CPU");
            return;
        }
        let exp8 = |x: &[f32]| {
            let mut got = vec![0f32; 8];
            // SAFETY: AVX2 and FMA are present (checked above); 8 lanes in and out.
            unsafe { _mm256_storeu_ps(got.as_mut_ptr(), exp_avx2(_mm256_loadu_ps(x.as_ptr()))) };
            got
        };
        within_two_ulp(&exp8, 8);
    }

    #[test]
    fn the_vector_exp_is_within_two_ulp_of_f32_exp_from_minus_87_to_88() {
        if !std::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: no AVX-512 F on this CPU");
            return;
        }
        let exp16 = |x: &[f32]| {
            let mut got = vec![0f32; 16];
            // SAFETY: AVX-512 F is present (checked above); 16 lanes in and out.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp(_mm512_loadu_ps(x.as_ptr()))) };
            got
        };
        within_two_ulp(&exp16, 16);
    }
}

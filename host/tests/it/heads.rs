//! The lm_head GEMVs in f16 and int8 on every backend, the int8 head
//! quantizer, and the CPU's several ternary linears in one pass.

use half::f16;
use kernels_gpu::head::head_row_len;
use rand::RngExt;
use trinity::cpu::quantize_head_row;
use trinity::matmul::Activations;
use trinity::reference::{compare_sums, head_gemv_reference};
use trinity::{Buffer, Device, HostOps, verify};

use crate::kernels::rng;

/// The head's f32 result against [`head_gemv_reference`]: within the f32
/// accumulation's error (`compare_sums`), or the test fails naming it.
fn assert_close(got: &[f32], want: &[f64], mag: &[f64], k: usize, what: &str) {
    if let Err(e) = compare_sums(got, want, mag, k) {
        panic!("{what}: {e}");
    }
}

/// Awkward shapes: m past the CPU's 64-row pass, n past a 256-row CPU task
/// and not a multiple of a GPU block's 8 rows, k of 1, short, odd (rows
/// padded), a whole number of 128-bit chunks, and long.
const HEAD_SHAPES: &[(usize, usize, usize)] =
    &[(1, 1, 1), (1, 300, 37), (3, 257, 100), (65, 20, 64), (2, 9, 1536), (1, 17, 3000)];

/// Every backend that starts here (`cuda` only with a GPU; with
/// `TRINITY_REQUIRE_GPU=1` a missing GPU fails the test).
fn devices() -> Vec<Device> {
    let mut out = Vec::new();
    for choice in [trinity::BackendChoice::Cpu, trinity::BackendChoice::Emu, trinity::BackendChoice::Cuda] {
        match Device::open(choice) {
            Ok((d, _)) => out.push(d),
            Err(e) if trinity::device::gpu_required() => panic!("TRINITY_REQUIRE_GPU=1 and {choice} cannot start: {e}"),
            Err(e) => eprintln!("skipped: {choice} unavailable: {e}"),
        }
    }
    out
}

/// `n` rows of `k` values laid out `head_row_len(k)` apart, zeros between.
fn padded<T: Copy + Default>(rows: &[T], n: usize, k: usize) -> Vec<T> {
    let ld = head_row_len(k);
    let mut out = vec![T::default(); n * ld];
    for j in 0..n {
        out[j * ld..][..k].copy_from_slice(&rows[j * k..][..k]);
    }
    out
}

fn f16_head(d: &Device, a: &[f32], b: &[f16], m: usize, n: usize, k: usize) -> Vec<f32> {
    let (da, db) = (d.upload(a).unwrap(), d.upload(&padded(b, n, k)).unwrap());
    let mut c = d.alloc::<f32>(m * n).unwrap();
    d.head_gemm_f16(&da, &db, &mut c, m, n, k).unwrap();
    d.download(&c).unwrap()
}

fn int8_head(d: &Device, a: &[f32], values: &[i8], scales: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let (da, dv, ds) = (d.upload(a).unwrap(), d.upload(&padded(values, n, k)).unwrap(), d.upload(scales).unwrap());
    let mut c = d.alloc::<f32>(m * n).unwrap();
    d.head_gemm_i8(&da, &dv, &ds, &mut c, m, n, k).unwrap();
    d.download(&c).unwrap()
}

#[test]
fn f16_head_matches_the_f64_reference() {
    let mut rng = rng();
    for d in devices() {
        for &(m, n, k) in HEAD_SHAPES {
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-3.0f32..3.0)).collect();
            let b: Vec<f16> = (0..n * k).map(|_| f16::from_f32(rng.random_range(-1.0f32..1.0))).collect();
            let c = f16_head(&d, &a, &b, m, n, k);
            let (want, mag) = head_gemv_reference(&a, &|j, t| b[j * k + t].to_f64(), m, n, k);
            assert_close(&c, &want, &mag, k, &format!("f16 head {m}×{n}×{k} on {}", d.kind().name()));
        }
    }
}

#[test]
fn int8_head_matches_the_f64_reference() {
    let mut rng = rng();
    for d in devices() {
        for &(m, n, k) in HEAD_SHAPES {
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-3.0f32..3.0)).collect();
            let values: Vec<i8> = (0..n * k).map(|_| rng.random_range(-127i8..=127)).collect();
            let scales: Vec<f32> = (0..n).map(|_| rng.random_range(0.001f32..0.1)).collect();
            let c = int8_head(&d, &a, &values, &scales, m, n, k);
            let (want, mag) = head_gemv_reference(&a, &|j, t| values[j * k + t] as f64 * scales[j] as f64, m, n, k);
            assert_close(&c, &want, &mag, k, &format!("int8 head {m}×{n}×{k} on {}", d.kind().name()));
        }
    }
}

#[test]
fn a_rows_logits_do_not_depend_on_the_batch() {
    let mut rng = rng();
    let (n, k) = (300, 100);
    let a: Vec<f32> = (0..70 * k).map(|_| rng.random_range(-3.0f32..3.0)).collect();
    let b: Vec<f16> = (0..n * k).map(|_| f16::from_f32(rng.random_range(-1.0f32..1.0))).collect();
    for d in devices() {
        // Past the CPU's 64-row pass; the GPU kernel has no row tiling, and the emulator is slow.
        let rows = if d.kind() == trinity::BackendKind::Cpu { 70 } else { 9 };
        let all = f16_head(&d, &a[..rows * k], &b, rows, n, k);
        for row in [0, rows - 6, rows - 1] {
            let one = f16_head(&d, &a[row * k..][..k], &b, 1, n, k);
            assert_eq!(one, all[row * n..][..n], "row {row} on {}", d.kind().name());
        }
    }
}

#[test]
fn int8_head_rows_quantize_to_known_values() {
    // absmax 2.54 → scale 0.02; values / scale = 127, -63.5 (ties to even: -64), 0.5 (→ 0), 1.5 (→ 2), -127.
    let (q, s) = quantize_head_row(&[2.54, -1.27, 0.01, 0.03, -2.54]);
    assert!((s - 0.02).abs() < 1e-9, "{s}");
    assert_eq!(q, [127, -64, 0, 2, -127]);
    assert_eq!(quantize_head_row(&[0.0, -0.0, 0.0]), (vec![0, 0, 0], 0.0));
    // Every element within half a step of its value.
    let row: Vec<f32> = (0..100).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect();
    let (q, s) = quantize_head_row(&row);
    for (v, &qi) in row.iter().zip(&q) {
        assert!((qi as f32 * s - v).abs() <= s / 2.0 + 1e-6, "{v} → {qi} × {s}");
    }
}

#[test]
fn ternary_linears_in_one_pass_equal_one_op_each() {
    let mut rng = rng();
    let d = Device::Cpu;
    for m in [1, 2, 5] {
        let k = 700;
        let x = HostOps::quantize(&d, Activations::F32(&verify::random_activations(&mut rng, m, k)), m, k).unwrap();
        let ws: Vec<_> = [3usize, 70, 33]
            .iter()
            .map(|&n| trinity::ternary::DeviceTernary::from_packed(&verify::random_weights(&mut rng, n, k)))
            .collect();
        let xb = d.upload_quantized(&x).unwrap();
        let wbs: Vec<_> = ws.iter().map(|w| d.upload_ternary(w).unwrap()).collect();
        let mut together: Vec<Buffer<f32>> = wbs.iter().map(|w| d.alloc(m * w.rows).unwrap()).collect();
        d.ternary_linears(&xb, &wbs.iter().collect::<Vec<_>>(), &mut together).unwrap();
        for (w, y) in wbs.iter().zip(&together) {
            let mut alone = d.alloc::<f32>(m * w.rows).unwrap();
            d.ternary_linear(&xb, w, &mut alone).unwrap();
            assert_eq!(d.download(y).unwrap(), d.download(&alone).unwrap(), "M = {m}, N = {}", w.rows);
        }
        let err = d.ternary_linears(&xb, &[&wbs[0]], &mut together).unwrap_err();
        assert!(err.to_string().contains("1 weight matrices for 3 outputs"), "{err}");
    }
}

#[test]
fn bad_head_shapes_are_clear_errors() {
    for d in devices() {
        let a = d.upload(&[1.0f32; 4]).unwrap();
        // Rows of 4 halves are stored 16 apart: 8 halves are one row short of two.
        let b = d.upload(&[f16::ONE; 8]).unwrap();
        let mut c = d.alloc::<f32>(2).unwrap();
        let err = d.head_gemm_f16(&a, &b, &mut c, 1, 2, 4).unwrap_err().to_string();
        assert!(err.contains("head_gemv_f16") && err.contains("padded"), "{err}");
        let v = d.upload(&[1i8; 32]).unwrap();
        let s = d.upload(&[1.0f32; 3]).unwrap();
        let err = d.head_gemm_i8(&a, &v, &s, &mut c, 1, 2, 4).unwrap_err().to_string();
        assert!(err.contains("head_gemv_i8") && err.contains("row scales"), "{err}");
    }
}

//! # Verification: every kernel against the CPU reference
//!
//! [`verify`] runs each kernel of a backend on fresh random inputs of a list
//! of shapes (awkward ones: 1, odd, not a multiple of the tile) and compares
//! with the scalar references of [`crate::cpu`]. Integer outputs must match
//! exactly; so must the f16 unpack (both sides round `±scale` to nearest even).
//! A kernel that errors is a failure too, with the error as the detail.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::backend::Backend;
use crate::cpu;
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

/// Runs every kernel of `backend` on `shapes` with inputs drawn from `seed`.
pub fn verify(backend: &dyn Backend, unpack_shapes: &[(usize, usize)], seed: u64) -> Vec<Check> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut checks = Vec::new();
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
    checks
}

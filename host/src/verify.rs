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

/// How much of each kernel family `verify` runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `(rows, cols)` of the unpack kernels.
    pub unpack: Vec<(usize, usize)>,
    /// Message counts of the TriHash batch kernel.
    pub trihash_messages: Vec<usize>,
    /// `(batches, mwm)` of the TriHash search, on a random transaction.
    pub trihash_search: Vec<(u64, usize)>,
}

impl Plan {
    /// Small shapes: fast on the emulator, awkward sizes included.
    pub fn small() -> Self {
        Plan { unpack: UNPACK_SHAPES_SMALL.to_vec(), trihash_messages: vec![1, 130], trihash_search: vec![(3, 3)] }
    }

    /// Small and large shapes: for GPUs and the CPU.
    pub fn full() -> Self {
        let mut p = Self::small();
        p.unpack.extend_from_slice(UNPACK_SHAPES_LARGE);
        p.trihash_messages.push(10_000);
        p.trihash_search.push((2_000, 7));
        p
    }
}

/// Runs every kernel of `backend` on the shapes of `plan` with inputs drawn from `seed`.
pub fn verify(backend: &dyn Backend, plan: &Plan, seed: u64) -> Vec<Check> {
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
    checks
}

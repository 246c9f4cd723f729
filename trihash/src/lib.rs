//! # TriHash proof-of-work search, on any Trinity backend
//!
//! [`search`] drives the `trihash_pow` kernel of a [`Device`] over the
//! canonical nonce enumeration (`kernels_gpu::curl`) in steps sized for the
//! backend, stops at the first hit, and re-checks it with the scalar sponge
//! ([`Pow::verify_nonce`]) before reporting it: a backend's word is never taken
//! on trust. The hash itself (Curl-P-81), its references and the transaction
//! format live in the runtime (`trinity::trihash`).

use std::time::Instant;

use trinity::trihash::Pow;
use trinity::{BackendKind, Device, HostOps, KernelError};

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The kernel could not run.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A backend reported a nonce that the independent re-hash rejects.
    #[error("the {backend} backend reported nonce index {index}, which the independent re-hash rejects")]
    Rejected {
        /// The backend.
        backend: BackendKind,
        /// The nonce index it reported.
        index: u64,
    },
}

/// The outcome of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOutcome {
    /// The first nonce index found (re-checked), if any.
    pub nonce: Option<u64>,
    /// Candidates hashed.
    pub hashes: u64,
    /// Wall time, seconds.
    pub seconds: f64,
}

impl SearchOutcome {
    /// Hash rate, MH/s.
    pub fn mhash_per_s(&self) -> f64 {
        self.hashes as f64 / self.seconds.max(1e-9) / 1e6
    }
}

/// Batches of 128 nonces one step hands to the backend.
pub fn step_batches(device: &Device) -> u64 {
    match device {
        Device::Emu => 2,
        Device::Cpu => (rayon::current_num_threads() * 4 * trinity::trihash::sliced::BATCHES_PER_UNIT) as u64,
        Device::Cuda(_) => 1 << 16,
    }
}

/// Searches batches `0 .. max_batches` for a nonce whose hash ends in `mwm`
/// zero trits; returns the first found, re-checked.
pub fn search(device: &Device, pow: &Pow, mwm: usize, max_batches: u64) -> Result<SearchOutcome, SearchError> {
    let step = step_batches(device);
    let start = Instant::now();
    let mut done = 0u64;
    let nonce = loop {
        if done >= max_batches {
            break None;
        }
        let n = step.min(max_batches - done);
        let hits = device.trihash_search(pow.base(), done, n, mwm)?;
        done += n;
        if let Some(&v) = hits.first() {
            break Some(v);
        }
    };
    if let Some(index) = nonce
        && !pow.verify_nonce(index, mwm)
    {
        return Err(SearchError::Rejected { backend: device.kind(), index });
    }
    let hashes = done * kernels_gpu::curl::LANES_PER_BATCH as u64;
    Ok(SearchOutcome { nonce, hashes, seconds: start.elapsed().as_secs_f64() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn finds_a_nonce_that_the_sponge_accepts_on_cpu_and_emu() {
        let pow = Pow::random(&mut rand::rngs::StdRng::seed_from_u64(11));
        for device in [Device::Cpu, Device::Emu] {
            let out = search(&device, &pow, 3, 64).unwrap();
            let v = out.nonce.expect("mwm 3 is met within 64 batches");
            assert!(pow.verify_nonce(v, 3));
            assert!(out.hashes >= 128);
        }
    }

    #[test]
    fn gives_up_after_max_batches() {
        let pow = Pow::random(&mut rand::rngs::StdRng::seed_from_u64(12));
        let out = search(&Device::Cpu, &pow, 243, 3).unwrap();
        assert_eq!(out.nonce, None);
        assert_eq!(out.hashes, 3 * 128);
    }
}

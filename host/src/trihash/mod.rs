//! # TriHash: IOTA's Curl-P-81 ternary sponge, and its proof of work
//!
//! The original report's "TriHash" was a few tensor reductions; here it is a
//! real hash with public test vectors.
//!
//! - State 729 trits, all zero at start. Absorbing overwrites `state[0..243]`
//!   with each 243-trit block, then transforms; squeezing returns
//!   `state[0..243]`, transforming before each further block.
//! - The transform ([`transform_reference`]): 81 rounds of
//!   `new[i] = T[old[idx[i]] + 4·old[idx[i+1]] + 5]` (see [`kernels_gpu::curl`]).
//! - Trytes: alphabet `9ABCDEFGHIJKLMNOPQRSTUVWXYZ`, '9' = 0, 'A'..'M' = 1..13,
//!   'N'..'Z' = −13..−1; three trits per tryte, least significant first.
//! - Proof of work ([`Pow`]): a 2673-tryte transaction; absorb all but its last
//!   243 trits once (the mid-state); the nonce is its last 81 trits; a nonce is
//!   valid when the resulting hash ends in `mwm` zero trits. One hash = one
//!   81-round transform of one candidate.
//!
//! [`transform_reference`] and [`Pow::hash_with_nonce`] are the scalar
//! references; [`sliced`] is the fast bit-sliced CPU version, checked
//! against them.

pub mod sliced;

use kernels_gpu::curl::{self, HASH_TRITS, NONCE_TRITS, ROUNDS, STATE_TRITS, TRUTH_TABLE};

/// The tryte alphabet.
pub const TRYTE_ALPHABET: &[u8; 27] = b"9ABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// Trytes in a transaction.
pub const TRANSACTION_TRYTES: usize = 2673;
/// Trits in a transaction.
pub const TRANSACTION_TRITS: usize = 3 * TRANSACTION_TRYTES;

/// Errors of TriHash inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TriHashError {
    /// A character outside the tryte alphabet.
    #[error("invalid tryte {found:?} at position {position} (allowed: 9 and A-Z)")]
    BadTryte {
        /// Position in the string.
        position: usize,
        /// The character.
        found: char,
    },
    /// An input whose length is not a whole number of blocks.
    #[error("{what} has {len} {unit}; it must be a multiple of {multiple}{hint}")]
    BadLength {
        /// Which input.
        what: &'static str,
        /// Its length.
        len: usize,
        /// Trits or trytes.
        unit: &'static str,
        /// The required multiple.
        multiple: usize,
        /// How to fix it.
        hint: &'static str,
    },
    /// A transaction of the wrong length.
    #[error("a transaction has {TRANSACTION_TRYTES} trytes, this one has {0}")]
    TransactionLength(usize),
    /// An impossible minimum weight.
    #[error("mwm {0} is larger than the {HASH_TRITS} trits of a hash")]
    BadMwm(usize),
}

/// Trytes → trits.
pub fn trytes_to_trits(trytes: &str) -> Result<Vec<i8>, TriHashError> {
    let mut trits = Vec::with_capacity(3 * trytes.len());
    for (position, c) in trytes.chars().enumerate() {
        let v = match c {
            '9' => 0,
            'A'..='M' => c as i32 - 'A' as i32 + 1,
            'N'..='Z' => c as i32 - 'N' as i32 - 13,
            _ => return Err(TriHashError::BadTryte { position, found: c }),
        };
        let mut n = v;
        for _ in 0..3 {
            let mut t = n.rem_euclid(3);
            if t == 2 {
                t = -1;
            }
            trits.push(t as i8);
            n = (n - t) / 3;
        }
    }
    Ok(trits)
}

/// Trits → trytes (the length must be a multiple of 3).
pub fn trits_to_trytes(trits: &[i8]) -> Result<String, TriHashError> {
    if !trits.len().is_multiple_of(3) {
        return Err(TriHashError::BadLength { what: "trits", len: trits.len(), unit: "trits", multiple: 3, hint: "" });
    }
    Ok(trits
        .chunks(3)
        .map(|t| {
            let v = t[0] as i32 + 3 * t[1] as i32 + 9 * t[2] as i32;
            TRYTE_ALPHABET[v.rem_euclid(27) as usize] as char
        })
        .collect())
}

/// The transform index schedule `idx[0..=729]`.
pub const fn index_schedule() -> [u16; STATE_TRITS + 1] {
    let mut idx = [0u16; STATE_TRITS + 1];
    let mut i = 0;
    while i < STATE_TRITS {
        idx[i + 1] = ((idx[i] as usize + 364) % STATE_TRITS) as u16;
        i += 1;
    }
    idx
}

/// The schedule, computed once.
pub const INDEX: [u16; STATE_TRITS + 1] = index_schedule();

/// The 81-round transform, written as the definition reads.
pub fn transform_reference(state: &mut [i8; STATE_TRITS]) {
    for _ in 0..ROUNDS {
        let copy = *state;
        for i in 0..STATE_TRITS {
            let a = copy[INDEX[i] as usize];
            let b = copy[INDEX[i + 1] as usize];
            state[i] = TRUTH_TABLE[(a + 4 * b + 5) as usize];
        }
    }
}

/// The Curl-P-81 sponge (scalar reference).
#[derive(Debug, Clone)]
pub struct CurlP81 {
    state: [i8; STATE_TRITS],
}

impl Default for CurlP81 {
    fn default() -> Self {
        CurlP81 { state: [0; STATE_TRITS] }
    }
}

impl CurlP81 {
    /// A fresh sponge.
    pub fn new() -> Self {
        Self::default()
    }

    /// Absorbs whole 243-trit blocks.
    pub fn absorb(&mut self, trits: &[i8]) -> Result<(), TriHashError> {
        if !trits.len().is_multiple_of(HASH_TRITS) {
            return Err(TriHashError::BadLength {
                what: "input",
                len: trits.len(),
                unit: "trits",
                multiple: HASH_TRITS,
                hint: " (81 trytes)",
            });
        }
        for block in trits.chunks(HASH_TRITS) {
            self.state[..HASH_TRITS].copy_from_slice(block);
            transform_reference(&mut self.state);
        }
        Ok(())
    }

    /// Squeezes `len` trits (a multiple of 243).
    pub fn squeeze(&mut self, len: usize) -> Result<Vec<i8>, TriHashError> {
        if !len.is_multiple_of(HASH_TRITS) {
            return Err(TriHashError::BadLength {
                what: "squeeze length",
                len,
                unit: "trits",
                multiple: HASH_TRITS,
                hint: "",
            });
        }
        let mut out = Vec::with_capacity(len);
        for k in 0..len / HASH_TRITS {
            if k > 0 {
                transform_reference(&mut self.state);
            }
            out.extend_from_slice(&self.state[..HASH_TRITS]);
        }
        Ok(out)
    }

    /// The state (for the proof of work's mid-state).
    pub fn state(&self) -> &[i8; STATE_TRITS] {
        &self.state
    }
}

/// Hashes a tryte string: absorb, squeeze `squeeze_trits`; with `pad`, the
/// input is padded with '9' to a multiple of 81 trytes.
pub fn hash_trytes(trytes: &str, squeeze_trits: usize, pad: bool) -> Result<String, TriHashError> {
    let mut trits = trytes_to_trits(trytes)?;
    if pad {
        trits.resize(trits.len().next_multiple_of(HASH_TRITS), 0);
    } else if !trits.len().is_multiple_of(HASH_TRITS) {
        return Err(TriHashError::BadLength {
            what: "input",
            len: trytes.chars().count(),
            unit: "trytes",
            multiple: 81,
            hint: " (or pass --pad)",
        });
    }
    let mut curl = CurlP81::new();
    curl.absorb(&trits)?;
    trits_to_trytes(&curl.squeeze(squeeze_trits)?)
}

/// A proof-of-work problem: the base state every candidate starts from.
#[derive(Debug, Clone)]
pub struct Pow {
    transaction: Vec<i8>,
    base: [i8; STATE_TRITS],
}

impl Pow {
    /// From transaction trytes (2673).
    pub fn from_trytes(trytes: &str) -> Result<Self, TriHashError> {
        let n = trytes.chars().count();
        if n != TRANSACTION_TRYTES {
            return Err(TriHashError::TransactionLength(n));
        }
        Ok(Self::from_trits(trytes_to_trits(trytes)?))
    }

    /// From transaction trits (8019; checked by the caller's construction).
    fn from_trits(transaction: Vec<i8>) -> Self {
        let mid = TRANSACTION_TRITS - HASH_TRITS;
        let mut curl = CurlP81::new();
        curl.absorb(&transaction[..mid]).expect("a whole number of blocks");
        let mut base = *curl.state();
        base[..HASH_TRITS - NONCE_TRITS].copy_from_slice(&transaction[mid..TRANSACTION_TRITS - NONCE_TRITS]);
        Pow { transaction, base }
    }

    /// A random transaction.
    pub fn random(rng: &mut impl rand::Rng) -> Self {
        use rand::RngExt;
        Self::from_trits((0..TRANSACTION_TRITS).map(|_| rng.random_range(-1i8..=1)).collect())
    }

    /// The base state (natural order; trits 162..243 are the old nonce, ignored).
    pub fn base(&self) -> &[i8; STATE_TRITS] {
        &self.base
    }

    /// The 81 nonce trits of nonce index `v`.
    pub fn nonce(v: u64) -> [i8; NONCE_TRITS] {
        std::array::from_fn(|p| curl::nonce_trit(v, p))
    }

    /// The hash of the transaction with nonce index `v` (scalar reference).
    pub fn hash_with_nonce(&self, v: u64) -> [i8; HASH_TRITS] {
        let mut state = self.base;
        state[HASH_TRITS - NONCE_TRITS..HASH_TRITS].copy_from_slice(&Self::nonce(v));
        transform_reference(&mut state);
        state[..HASH_TRITS].try_into().expect("243 trits")
    }

    /// The transaction trytes with nonce index `v` in place.
    pub fn transaction_with_nonce(&self, v: u64) -> String {
        let mut tx = self.transaction.clone();
        tx[TRANSACTION_TRITS - NONCE_TRITS..].copy_from_slice(&Self::nonce(v));
        trits_to_trytes(&tx).expect("8019 is a multiple of 3")
    }

    /// Checks a nonce independently: rehashes the whole transaction from scratch.
    pub fn verify_nonce(&self, v: u64, mwm: usize) -> bool {
        let mut tx = self.transaction.clone();
        tx[TRANSACTION_TRITS - NONCE_TRITS..].copy_from_slice(&Self::nonce(v));
        let mut curl = CurlP81::new();
        curl.absorb(&tx).expect("a whole number of blocks");
        let hash = curl.squeeze(HASH_TRITS).expect("one block");
        trailing_zeros(&hash) >= mwm
    }
}

/// Trailing zero trits of a hash.
pub fn trailing_zeros(hash: &[i8]) -> usize {
    hash.iter().rev().take_while(|&&t| t == 0).count()
}

/// Checks `mwm` against the hash length.
pub fn check_mwm(mwm: usize) -> Result<(), TriHashError> {
    if mwm > HASH_TRITS { Err(TriHashError::BadMwm(mwm)) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(trytes: &str) -> String {
        hash_trytes(trytes, 243, true).unwrap()
    }

    #[test]
    fn known_answers() {
        assert_eq!(padded("A"), "TJVKPMTAMIZVBVHIVQUPTKEMPROEKV9SB9COEDQYRHYPTYSKQIAN9PQKMZHCPO9TS9BHCORFKW9CQXZEE");
        assert_eq!(padded("Z"), "FA9WYZSJJWSD9AEEBOGGDHFTMIZVHFURFLJLFBTNENDDCMSXGAGLXFMYZTAMKVIYDQSZEDKXSWVAOPZMK");
        assert_eq!(
            padded("NOPQRSTUVWXYZ9ABSDEFGHIJKLM"),
            "GWFZSXPZPAFSVPEGEIVWOTD9MY9KVP9HYVCIWSJEITEGVOVGQGV99RONTWDXOPUBIQPIWXK9L9OHZYFUB"
        );
        assert_eq!(
            hash_trytes(
                "QZELVPOZTGSBCMEIZWZBGFSRPQNSMBREV9QD9JINWPNHHVCIFFGMHUH99OLWPXUZ9AWKJVYEC9JDTKRZO",
                243,
                false
            )
            .unwrap(),
            "9MMGDFTUNMXVFRWTMVYWHKIUMJRWZPYVYDYHNATZWSLWPUSULDZVSJJXQPKXENXJFLTSEEMBJIWZLLXBX"
        );
        assert_eq!(hash_trytes("", 243, false).unwrap(), "9".repeat(81));
    }

    #[test]
    fn trytes_round_trip() {
        let s: String = TRYTE_ALPHABET.iter().map(|&b| b as char).collect();
        let trits = trytes_to_trits(&s).unwrap();
        assert!(trits.iter().all(|t| (-1..=1).contains(t)));
        assert_eq!(trits_to_trytes(&trits).unwrap(), s);
        assert_eq!(&trytes_to_trits("A").unwrap(), &[1, 0, 0]);
        assert_eq!(&trytes_to_trits("Z").unwrap(), &[-1, 0, 0]);
        assert_eq!(&trytes_to_trits("M").unwrap(), &[1, 1, 1]);
        assert_eq!(&trytes_to_trits("N").unwrap(), &[-1, -1, -1]);
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        assert_eq!(trytes_to_trits("AB1").unwrap_err(), TriHashError::BadTryte { position: 2, found: '1' });
        assert_eq!(trytes_to_trits("a").unwrap_err(), TriHashError::BadTryte { position: 0, found: 'a' });
        let e = hash_trytes("ABC", 243, false).unwrap_err();
        assert!(e.to_string().contains("multiple of 81") && e.to_string().contains("--pad"), "{e}");
        assert!(hash_trytes(&"9".repeat(81), 100, false).is_err());
        assert_eq!(Pow::from_trytes("ABC").unwrap_err(), TriHashError::TransactionLength(3));
        assert!(check_mwm(244).is_err());
    }

    #[test]
    fn squeezing_more_blocks_transforms_between_them() {
        let mut a = CurlP81::new();
        a.absorb(&[1; 243]).unwrap();
        let two = a.squeeze(486).unwrap();
        let mut b = CurlP81::new();
        b.absorb(&[1; 243]).unwrap();
        let first = b.squeeze(243).unwrap();
        let mut state = *b.state();
        transform_reference(&mut state);
        assert_eq!(&two[..243], &first[..]);
        assert_eq!(&two[243..], &state[..243]);
    }

    #[test]
    fn pow_hash_matches_a_full_rehash() {
        let pow = Pow::random(&mut rand::rng());
        for v in [0u64, 1, 127, 128, 99_999] {
            let mut curl = CurlP81::new();
            curl.absorb(&trytes_to_trits(&pow.transaction_with_nonce(v)).unwrap()).unwrap();
            assert_eq!(curl.squeeze(243).unwrap(), pow.hash_with_nonce(v).to_vec());
        }
    }
}

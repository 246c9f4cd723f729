//! # trinity-model: BitNet b1.58 models on Trinity's runtime
//!
//! - [`config`]: `config.json`, the only source of architecture facts.
//! - [`checkpoint`]: safetensors through mmap, single files and sharded indexes.
//! - [`weights`]: the ternary linears, packed (Hugging Face) or latent
//!   (ternarized at load), repacked into Trinity's 2-bit device layout.
//! - [`bitnet`]: the forward pass with a KV cache, for prefill and decode.

//! - [`generate`]: sampling (greedy, temperature, top-k, top-p, seed), generation and the tokenizer.
//! - [`hub`]: `--model` as a directory or a Hugging Face model id in the local cache.

pub mod bitnet;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod generate;
pub mod hub;
pub mod weights;

pub use bitnet::{BitNet, HeadPrecision, KvCache, Linears, SeqChunk, StepOutput};
pub use config::ModelConfig;
pub use error::{ModelError, ModelResult};

//! Errors of loading and running a model: each names the file, tensor or value at fault.

use std::path::PathBuf;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A JSON file is malformed.
    #[error("{}: not valid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A required `config.json` key is absent.
    #[error("{}: missing key `{key}`", path.display())]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
    },
    /// A `config.json` value is not usable.
    #[error("{}: `{key}` = {value}: {reason}", path.display())]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// The value as found.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The checkpoint's architecture is not one Trinity runs.
    #[error("{}: architecture `{name}` is not supported (BitNetForCausalLM, BitnetForCausalLM)", path.display())]
    UnknownArchitecture {
        /// The file.
        path: PathBuf,
        /// The architecture named.
        name: String,
    },
    /// A safetensors file is malformed or truncated.
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The library's reason.
        reason: String,
    },
    /// A tensor the architecture needs is in no file.
    #[error("tensor `{name}` is missing from the checkpoint ({files})")]
    MissingTensor {
        /// The tensor.
        name: String,
        /// The files searched.
        files: String,
    },
    /// A tensor has the wrong element type.
    #[error("tensor `{name}` in {}: dtype {dtype}, expected {expected}", path.display())]
    TensorDtype {
        /// The tensor.
        name: String,
        /// Its file.
        path: PathBuf,
        /// Its dtype.
        dtype: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A tensor has the wrong shape.
    #[error("tensor `{name}` in {}: shape {shape:?}, expected {expected:?}", path.display())]
    TensorShape {
        /// The tensor.
        name: String,
        /// Its file.
        path: PathBuf,
        /// Its shape.
        shape: Vec<usize>,
        /// The shape the config implies.
        expected: Vec<usize>,
    },
    /// A packed ternary tensor holds an invalid code, or a scale is not usable.
    #[error("tensor `{name}`: {reason}")]
    BadWeights {
        /// The tensor.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A token id is outside the vocabulary.
    #[error("token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// The prompt does not fit the context.
    #[error("{what} of {len} tokens exceeds the context of {context}")]
    ContextExceeded {
        /// What overflowed.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The context length.
        context: usize,
    },
    /// A batched step that cannot run (a slot outside the cache, or twice in one step).
    #[error("batched step: {0}")]
    BadBatch(String),
    /// The prompt is empty.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The tokenizer could not be loaded or used.
    #[error("{}: tokenizer: {reason}", path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// The library's reason.
        reason: String,
    },
    /// `--model` names neither a directory nor a model in the local Hugging Face cache.
    #[error("{0}")]
    NotFound(String),
    /// A kernel failed.
    #[error(transparent)]
    Kernel(#[from] trinity::KernelError),
}

/// Result of model code.
pub type ModelResult<T> = Result<T, ModelError>;

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ModelError + use<> {
    let path = path.to_owned();
    move |source| ModelError::Io { path, source }
}

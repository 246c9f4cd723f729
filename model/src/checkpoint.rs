//! # Safetensors checkpoints through mmap
//!
//! A single `model.safetensors` or a sharded set named by
//! `model.safetensors.index.json`. Files are memory-mapped; a tensor's bytes
//! are read straight from the map (nothing is copied whole), and f32, f16 and
//! bf16 tensors are widened to f32 only where a float copy is what the model
//! keeps (norms, embeddings).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, ModelResult, io_err};

/// The mapped files of a checkpoint and where each tensor lives.
pub struct Checkpoint {
    files: Vec<(PathBuf, Mmap)>,
    /// Tensor name → index into `files`.
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint").field("files", &self.file_list()).field("tensors", &self.index.len()).finish()
    }
}

/// One tensor's view into the map.
#[derive(Debug, Clone)]
pub struct TensorRef<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its file.
    pub path: &'a Path,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Raw little-endian bytes.
    pub data: &'a [u8],
}

fn map(path: &Path) -> ModelResult<Mmap> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    // SAFETY: the map is read-only; a checkpoint changed on disk while loaded is outside our contract
    // (as for every mmap-based loader), and every read goes through safetensors' bounds checks.
    unsafe { Mmap::map(&file) }.map_err(io_err(path))
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> ModelResult<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| ModelError::Safetensors { path: path.into(), reason: e.to_string() })
}

impl Checkpoint {
    /// Opens the safetensors of model directory `dir`.
    pub fn open(dir: &Path) -> ModelResult<Checkpoint> {
        let index_path = dir.join("model.safetensors.index.json");
        let names: Vec<PathBuf> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(io_err(&index_path))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| ModelError::Json { path: index_path.clone(), source })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or(ModelError::MissingKey { path: index_path.clone(), key: "weight_map" })?;
            let mut files: Vec<PathBuf> = map
                .values()
                .map(|f| {
                    f.as_str().map(|f| dir.join(f)).ok_or_else(|| ModelError::BadValue {
                        path: index_path.clone(),
                        key: "weight_map",
                        value: f.to_string(),
                        reason: "expected file names".into(),
                    })
                })
                .collect::<ModelResult<_>>()?;
            files.sort();
            files.dedup();
            files
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for path in names {
            let mm = map(&path)?;
            let st = parse(&path, &mm)?;
            for name in st.names() {
                index.insert(name.to_owned(), files.len());
            }
            drop(st);
            files.push((path, mm));
        }
        Ok(Checkpoint { files, index })
    }

    fn file_list(&self) -> String {
        self.files.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// A tensor, with its dtype and shape.
    pub fn tensor<'a>(&'a self, name: &'a str) -> ModelResult<TensorRef<'a>> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor { name: name.to_owned(), files: self.file_list() })?;
        let (path, mm) = &self.files[i];
        let st = parse(path, mm)?;
        let view =
            st.tensor(name).map_err(|e| ModelError::Safetensors { path: path.clone(), reason: e.to_string() })?;
        // Re-borrow from the map itself (the view borrows the parsed header, which is dropped here).
        let start = view.data().as_ptr() as usize - mm.as_ptr() as usize;
        let len = view.data().len();
        let (dtype, shape) = (view.dtype(), view.shape().to_vec());
        Ok(TensorRef { name, path, dtype, shape, data: &mm[start..start + len] })
    }

    /// A float tensor (f32, f16 or bf16) of exactly `shape`, widened to f32.
    pub fn f32_tensor(&self, name: &str, shape: &[usize]) -> ModelResult<Vec<f32>> {
        let t = self.tensor(name)?;
        check_shape(&t, shape)?;
        floats(&t)
    }
}

/// Checks a tensor's shape.
pub fn check_shape(t: &TensorRef<'_>, shape: &[usize]) -> ModelResult<()> {
    if t.shape != shape {
        return Err(ModelError::TensorShape {
            name: t.name.to_owned(),
            path: t.path.to_owned(),
            shape: t.shape.to_vec(),
            expected: shape.to_vec(),
        });
    }
    Ok(())
}

/// Element `i` of a float tensor as f32 (f32, f16, bf16; exact widening).
#[inline]
pub fn float_at(dtype: Dtype, data: &[u8], i: usize) -> f32 {
    match dtype {
        Dtype::F32 => f32::from_le_bytes(data[4 * i..4 * i + 4].try_into().expect("4 bytes")),
        Dtype::F16 => half::f16::from_bits(u16::from_le_bytes([data[2 * i], data[2 * i + 1]])).to_f32(),
        Dtype::BF16 => half::bf16::from_bits(u16::from_le_bytes([data[2 * i], data[2 * i + 1]])).to_f32(),
        _ => f32::NAN,
    }
}

/// Checks that a tensor is f32, f16 or bf16.
pub fn check_float(t: &TensorRef<'_>) -> ModelResult<()> {
    match t.dtype {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => Ok(()),
        other => Err(ModelError::TensorDtype {
            name: t.name.to_owned(),
            path: t.path.to_owned(),
            dtype: format!("{other:?}"),
            expected: "F32, F16 or BF16",
        }),
    }
}

/// A whole float tensor widened to f32.
pub fn floats(t: &TensorRef<'_>) -> ModelResult<Vec<f32>> {
    check_float(t)?;
    let n: usize = t.shape.iter().product();
    Ok((0..n).map(|i| float_at(t.dtype, t.data, i)).collect())
}

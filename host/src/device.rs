//! # Devices: where buffers live and kernels run
//!
//! | backend | what runs | use |
//! |---|---|---|
//! | `cpu` | plain Rust, multithreaded, SIMD where it pays | the fast CPU path and the reference every other backend is checked against |
//! | `emu` | the kernel source itself on the CPU SIMT emulator | testing kernels without a GPU (small shapes) |
//! | `cuda` | the PTX on an NVIDIA GPU through cudarc | the real thing |
//!
//! [`Device::open`] is the one place a backend is chosen: `auto` takes CUDA
//! when it starts and the CPU otherwise, and says why; an explicit `cuda` that
//! cannot start is an error carrying the driver's reason.
//!
//! ```
//! use trinity::{Device, BackendChoice};
//! let (device, why) = Device::open(BackendChoice::Emu)?;
//! let x = device.upload(&[1.0f32, -2.0, 0.5, 4.0])?;
//! let mut q = device.alloc_quantized(2, 2)?;
//! device.quantize(&x, &mut q)?; // stays on the device
//! assert_eq!(device.download(&q.sums)?.len(), 2);
//! # let _ = why;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;

use crate::buffer::{Buffer, Elem, HostMemory, QuantizedBuffer, RowPlaces, TernaryBuffer};
use crate::cuda::{CudaBackend, GpuError};
use crate::error::{KernelError, KernelResult};
use crate::matmul::QuantizedActivations;
use crate::ternary::DeviceTernary;

/// Which backend a [`Device`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The CPU (fast paths; the references live beside them).
    Cpu,
    /// The CPU SIMT emulator running the kernel source.
    Emu,
    /// An NVIDIA GPU.
    Cuda,
}

impl BackendKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Emu => "emu",
            BackendKind::Cuda => "cuda",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the user asked for: a backend, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// CUDA when a usable GPU is present, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The emulator.
    Emu,
    /// CUDA, or an error.
    Cuda,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "cpu" => Ok(BackendChoice::Cpu),
            "emu" => Ok(BackendChoice::Emu),
            "cuda" => Ok(BackendChoice::Cuda),
            other => Err(format!("unknown backend '{other}' (auto, cpu, emu, cuda)")),
        }
    }
}

impl std::fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Cpu => "cpu",
            BackendChoice::Emu => "emu",
            BackendChoice::Cuda => "cuda",
        })
    }
}

/// Whether tests and `verify` must fail instead of skipping when the GPU cannot be used
/// (`TRINITY_REQUIRE_GPU=1`).
pub fn gpu_required() -> bool {
    std::env::var("TRINITY_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// The shared memory per block the emulator grants: the smallest opt-in
/// maximum of the GPUs Trinity supports (sm_86 / sm_89: 99 KB), so a launch
/// that passes here fits every card.
pub const EMU_SHARED_LIMIT: u32 = 99 * 1024;

/// A backend with its device: allocates, copies and runs every kernel.
#[derive(Debug, Clone)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// The CPU SIMT emulator.
    Emu,
    /// An NVIDIA GPU.
    Cuda(Arc<CudaBackend>),
}

impl Device {
    /// Opens the backend `choice` names; returns it with a one-line reason for
    /// the choice. `auto` falls back to the CPU when CUDA cannot start, unless
    /// `TRINITY_REQUIRE_GPU=1`, which makes that an error too.
    pub fn open(choice: BackendChoice) -> Result<(Device, String), GpuError> {
        match choice {
            BackendChoice::Cpu => Ok((Device::Cpu, "cpu requested".into())),
            BackendChoice::Emu => Ok((Device::Emu, "emu requested".into())),
            BackendChoice::Cuda => {
                let gpu = CudaBackend::new(0)?;
                let why = format!("cuda requested: {}", gpu.describe());
                Ok((Device::Cuda(Arc::new(gpu)), why))
            }
            BackendChoice::Auto if gpu_required() => {
                let gpu = CudaBackend::new(0)?;
                let why = format!("auto with TRINITY_REQUIRE_GPU=1: {}", gpu.describe());
                Ok((Device::Cuda(Arc::new(gpu)), why))
            }
            BackendChoice::Auto => match CudaBackend::new(0) {
                Ok(gpu) => {
                    let why = format!("auto: a GPU is usable ({})", gpu.describe());
                    Ok((Device::Cuda(Arc::new(gpu)), why))
                }
                Err(e) => Ok((Device::Cpu, format!("auto: no usable GPU ({e}); using the CPU"))),
            },
        }
    }

    /// Which backend this is.
    pub fn kind(&self) -> BackendKind {
        match self {
            Device::Cpu => BackendKind::Cpu,
            Device::Emu => BackendKind::Emu,
            Device::Cuda(_) => BackendKind::Cuda,
        }
    }

    /// A one-line description (device name, threads).
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu => {
                let (ternary, float) = (crate::cpu_ternary::simd_level(), crate::cpu::float_path().name());
                format!("CPU, {} threads, ternary {ternary}, float {float}", rayon::current_num_threads())
            }
            Device::Emu => "CPU SIMT emulator (kernel source, one OS thread per GPU thread)".to_owned(),
            Device::Cuda(g) => g.describe(),
        }
    }

    /// The CUDA backend, when this is one.
    pub fn cuda(&self) -> Option<&Arc<CudaBackend>> {
        match self {
            Device::Cuda(g) => Some(g),
            _ => None,
        }
    }

    /// Dynamic shared memory a block may use (the device's opt-in maximum;
    /// [`EMU_SHARED_LIMIT`] on the emulator; unlimited on the CPU).
    pub fn shared_limit(&self) -> u32 {
        match self {
            Device::Cpu => u32::MAX,
            Device::Emu => EMU_SHARED_LIMIT,
            Device::Cuda(g) => g.shared_limit(),
        }
    }

    /// Copies host data into a new buffer on this device.
    pub fn upload<T: Elem>(&self, data: &[T]) -> KernelResult<Buffer<T>> {
        match self {
            Device::Cpu | Device::Emu => Ok(Buffer::Host(HostMemory::from_slice(data))),
            Device::Cuda(g) => g.upload(data).map(Buffer::Cuda),
        }
    }

    /// The places (`(slot, position)`) of a batch's rows, on this device.
    pub fn row_places(&self, places: &[(usize, usize)]) -> KernelResult<RowPlaces> {
        let too_big = places.iter().find(|&&(s, p)| s > u32::MAX as usize || p > u32::MAX as usize);
        if let Some(&(s, p)) = too_big {
            return Err(KernelError::Shape {
                kernel: "row_places",
                shape: format!("{} rows", places.len()),
                reason: format!("slot {s} or position {p} does not fit 32 bits"),
            });
        }
        let slots: Vec<u32> = places.iter().map(|&(s, _)| s as u32).collect();
        let positions: Vec<u32> = places.iter().map(|&(_, p)| p as u32).collect();
        Ok(RowPlaces {
            slots: self.upload(&slots)?,
            positions: self.upload(&positions)?,
            max_slot: places.iter().map(|p| p.0).max().unwrap_or(0),
            max_pos: places.iter().map(|p| p.1).max().unwrap_or(0),
        })
    }

    /// A zeroed buffer of `len` elements on this device.
    pub fn alloc<T: Elem>(&self, len: usize) -> KernelResult<Buffer<T>> {
        match self {
            Device::Cpu | Device::Emu => Ok(Buffer::Host(HostMemory::zeroed(len))),
            Device::Cuda(g) => g.zeros(len).map(Buffer::Cuda),
        }
    }

    /// Copies a buffer back to the host (waits for the work that writes it).
    pub fn download<T: Elem>(&self, buf: &Buffer<T>) -> KernelResult<Vec<T>> {
        match (self, buf) {
            (Device::Cpu | Device::Emu, Buffer::Host(v)) => Ok(v.to_vec()),
            (Device::Cuda(g), Buffer::Cuda(s)) => g.download(s),
            _ => Err(self.wrong_place("download", buf.location())),
        }
    }

    /// Waits until every op issued so far has finished (a no-op off CUDA).
    pub fn synchronize(&self) -> KernelResult<()> {
        match self {
            Device::Cuda(g) => g.synchronize(),
            _ => Ok(()),
        }
    }

    /// Copies host data into an existing buffer of the same length (a step's
    /// inputs into the buffers a captured CUDA graph reads).
    pub fn write<T: Elem>(&self, data: &[T], dst: &mut Buffer<T>) -> KernelResult<()> {
        if data.len() != dst.len() {
            return Err(KernelError::Shape {
                kernel: "write",
                shape: format!("{} → {} elements", data.len(), dst.len()),
                reason: "lengths differ".into(),
            });
        }
        match (self, dst) {
            (Device::Cpu | Device::Emu, Buffer::Host(d)) => {
                d.copy_from_slice(data);
                Ok(())
            }
            (Device::Cuda(g), Buffer::Cuda(d)) => g.write(data, d),
            (_, d) => Err(self.wrong_place("write", d.location())),
        }
    }

    /// Copies `src` into `dst` on the device (the bandwidth ceiling of the benchmarks).
    pub fn copy(&self, src: &Buffer<u8>, dst: &mut Buffer<u8>) -> KernelResult<()> {
        if src.len() != dst.len() {
            return Err(KernelError::Shape {
                kernel: "copy",
                shape: format!("{} → {} bytes", src.len(), dst.len()),
                reason: "lengths differ".into(),
            });
        }
        match (self, src, dst) {
            (Device::Cpu | Device::Emu, Buffer::Host(s), Buffer::Host(d)) => {
                d.copy_from_slice(s);
                Ok(())
            }
            (Device::Cuda(g), Buffer::Cuda(s), Buffer::Cuda(d)) => g.copy(s, d),
            _ => Err(self.wrong_place("copy", "a buffer of another device")),
        }
    }

    /// A new buffer holding the last `n` elements of `src`.
    pub fn tail<T: Elem>(&self, src: &Buffer<T>, n: usize) -> KernelResult<Buffer<T>> {
        let len = src.len();
        if n > len {
            return Err(KernelError::Shape {
                kernel: "tail",
                shape: format!("{n} of {len} elements"),
                reason: "more elements than the buffer holds".into(),
            });
        }
        match (self, src) {
            (Device::Cpu | Device::Emu, Buffer::Host(v)) => Ok(Buffer::Host(HostMemory::from_slice(&v[len - n..]))),
            (Device::Cuda(g), Buffer::Cuda(s)) => {
                let mut dst = g.zeros::<T>(n)?;
                g.stream()
                    .memcpy_dtod(&s.slice(len - n..), &mut dst)
                    .map_err(g.err("tail", &format!("{n} of {len} elements")))?;
                Ok(Buffer::Cuda(dst))
            }
            _ => Err(self.wrong_place("tail", src.location())),
        }
    }

    /// Buffers for `rows × cols` quantized activations.
    pub fn alloc_quantized(&self, rows: usize, cols: usize) -> KernelResult<QuantizedBuffer> {
        let k_pad = crate::matmul::padded_k(cols);
        Ok(QuantizedBuffer {
            rows,
            cols,
            k_pad,
            words: self.alloc(rows * k_pad / 4)?,
            scales: self.alloc(rows)?,
            sums: self.alloc(rows)?,
        })
    }

    /// Copies quantized activations onto this device.
    pub fn upload_quantized(&self, x: &QuantizedActivations) -> KernelResult<QuantizedBuffer> {
        Ok(QuantizedBuffer {
            rows: x.rows,
            cols: x.cols,
            k_pad: x.k_pad,
            words: self.upload(&x.words)?,
            scales: self.upload(&x.scales)?,
            sums: self.upload(&x.sums)?,
        })
    }

    /// Copies quantized activations back to the host.
    pub fn download_quantized(&self, x: &QuantizedBuffer) -> KernelResult<QuantizedActivations> {
        Ok(QuantizedActivations {
            rows: x.rows,
            cols: x.cols,
            k_pad: x.k_pad,
            words: self.download(&x.words)?,
            scales: self.download(&x.scales)?,
            sums: self.download(&x.sums)?,
        })
    }

    /// Copies ternary weights (device layout) onto this device.
    pub fn upload_ternary(&self, w: &DeviceTernary) -> KernelResult<TernaryBuffer> {
        Ok(TernaryBuffer {
            rows: w.rows(),
            cols: w.cols(),
            k_pad: w.k_pad(),
            scale: w.scale(),
            words: self.upload(w.words())?,
        })
    }

    /// The dense f16 copy (`trit · scale`, rounded to nearest even) of ternary
    /// weights on this device: the weights of the cuBLAS FP16 baseline. Decoded
    /// on the host, one matrix at a time (its words come back, its halves go out).
    pub fn dense_f16_weights(&self, w: &TernaryBuffer) -> KernelResult<crate::F16Weights> {
        let words = self.download(&w.words)?;
        let view = crate::ternary::TernaryRef { rows: w.rows, cols: w.cols, scale: w.scale, words: &words };
        if words.len() != w.rows * view.words_per_row() {
            return Err(KernelError::Shape {
                kernel: "dense_f16_weights",
                shape: format!("{}×{}", w.rows, w.cols),
                reason: format!("{} words, expected {}", words.len(), w.rows * view.words_per_row()),
            });
        }
        let values = view.to_f16_rows(crate::head_row_len(w.cols));
        Ok(crate::F16Weights { rows: w.rows, cols: w.cols, values: self.upload(&values)? })
    }

    pub(crate) fn wrong_place(&self, op: &'static str, location: &'static str) -> KernelError {
        KernelError::WrongDevice { op, backend: self.kind().name(), location }
    }
}

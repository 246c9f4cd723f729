//! # The CUDA backend: the PTX on an NVIDIA GPU through cudarc
//!
//! libcuda is loaded at run time (cudarc's dynamic loading), so this crate
//! builds and runs on machines without CUDA; [`CudaBackend::new`] then returns
//! [`GpuError::NoDriver`]. The module loaded is the embedded PTX that matches
//! the device ([`crate::ptx::for_compute_capability`]).

use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, PushKernelArg};
use half::f16;
use kernels_gpu::kernels;

use crate::backend::{Backend, BackendKind, check_trihash_batch, check_trihash_search, shape2};
use crate::emulator::launch_chunks;
use crate::error::{KernelError, KernelResult};
use crate::geometry::{self, Geometry};
use crate::ptx;
use crate::ternary::PackedTernary;
use kernels_gpu::curl::{HASH_TRITS, LANES_PER_BATCH};

/// Why the GPU cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// libcuda is not installed.
    #[error("no NVIDIA driver found (libcuda.so could not be loaded)")]
    NoDriver,
    /// Driver present, no usable device.
    #[error("no CUDA device {ordinal}: {source}")]
    NoDevice {
        /// Device ordinal.
        ordinal: usize,
        /// The driver's error.
        source: cudarc::driver::DriverError,
    },
    /// The device is too old.
    #[error("{device}: compute capability {major}.{minor} is below 8.0; Trinity's kernels need sm_80 or newer")]
    Unsupported {
        /// Device name.
        device: String,
        /// Major version.
        major: i32,
        /// Minor version.
        minor: i32,
    },
    /// The binary was built without a kernel toolchain.
    #[error("this build embeds no PTX (no kernel toolchain at build time); fix: {}", ptx_builder_fix())]
    NoPtx,
    /// A driver call failed while setting up.
    #[error("{device}: {what}: {source}")]
    Driver {
        /// Device name.
        device: String,
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        source: cudarc::driver::DriverError,
    },
}

fn ptx_builder_fix() -> &'static str {
    "install rustup's rust-src + llvm-tools or Debian's rustc-web + rust-web-src, then rebuild (see README)"
}

/// True when libcuda can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// True when libcublas can be loaded.
pub fn cublas_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { cudarc::cublas::sys::is_culib_present() }
}

/// An NVIDIA GPU with Trinity's module loaded.
#[derive(Debug)]
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
    device: String,
    arch: &'static str,
    compute_capability: (i32, i32),
    sm_count: u32,
}

/// Hits a TriHash search launch can record; more is an error asking for a larger mwm.
pub const TRIHASH_HIT_CAPACITY: usize = 1 << 20;

impl CudaBackend {
    /// Opens device `ordinal` and loads the matching PTX.
    pub fn new(ordinal: usize) -> Result<Self, GpuError> {
        if !driver_present() {
            return Err(GpuError::NoDriver);
        }
        let ctx = CudaContext::new(ordinal).map_err(|source| GpuError::NoDevice { ordinal, source })?;
        let device = ctx.name().unwrap_or_else(|_| format!("CUDA device {ordinal}"));
        let driver = |what| {
            let device = device.clone();
            move |source| GpuError::Driver { device, what, source }
        };
        let (major, minor) = ctx.compute_capability().map_err(driver("reading the compute capability"))?;
        if major < 8 {
            return Err(GpuError::Unsupported { device, major, minor });
        }
        let module_src = ptx::for_compute_capability(major, minor).ok_or(GpuError::NoPtx)?;
        let module =
            ctx.load_module(cudarc::nvrtc::Ptx::from_src(module_src.text)).map_err(driver("loading the PTX module"))?;
        // One stream, so cudarc's cross-stream event tracking is pure overhead
        // inside timed loops.
        // SAFETY: every buffer of this backend lives on `stream`.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let sm_count = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver("reading the SM count"))? as u32;
        Ok(CudaBackend {
            ctx,
            stream,
            module,
            device,
            arch: module_src.arch,
            compute_capability: (major, minor),
            sm_count,
        })
    }

    /// Device name.
    pub fn device_name(&self) -> &str {
        &self.device
    }
    /// The PTX architecture loaded (`sm_80` or `sm_90`).
    pub fn arch(&self) -> &'static str {
        self.arch
    }
    /// Compute capability.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }
    /// Streaming multiprocessors.
    pub fn sm_count(&self) -> u32 {
        self.sm_count
    }
    /// The context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    /// The stream every launch goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    fn err(&self, kernel: &'static str, shape: &str) -> impl FnOnce(cudarc::driver::DriverError) -> KernelError {
        let (device, shape) = (self.device.clone(), shape.to_owned());
        move |source| KernelError::Cuda { kernel, shape, device, source }
    }

    fn function(&self, kernel: &'static str, shape: &str) -> KernelResult<CudaFunction> {
        self.module.load_function(kernel).map_err(self.err(kernel, shape))
    }

    /// Copies host data to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, data: &[T], what: &'static str) -> KernelResult<CudaSlice<T>> {
        self.stream.clone_htod(data).map_err(self.err(what, &format!("{} elements", data.len())))
    }

    /// A zeroed device buffer.
    pub fn zeros<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        len: usize,
        what: &'static str,
    ) -> KernelResult<CudaSlice<T>> {
        self.stream.alloc_zeros(len).map_err(self.err(what, &format!("{len} elements")))
    }

    /// Copies a device buffer back.
    pub fn download<T: DeviceRepr + Default + Clone>(
        &self,
        buf: &CudaSlice<T>,
        what: &'static str,
    ) -> KernelResult<Vec<T>> {
        self.stream.clone_dtoh(buf).map_err(self.err(what, &format!("{} elements", buf.len())))
    }

    /// Waits for the stream.
    pub fn synchronize(&self, what: &'static str) -> KernelResult<()> {
        self.stream.synchronize().map_err(self.err(what, "-"))
    }

    /// GPU time of `iters` back-to-back runs of `work`, from CUDA events.
    pub fn time(&self, iters: u64, mut work: impl FnMut() -> KernelResult<()>) -> KernelResult<Duration> {
        let what = "timing";
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.ctx.new_event(flags).map_err(self.err(what, "-"))?;
        let end = self.ctx.new_event(flags).map_err(self.err(what, "-"))?;
        start.record(&self.stream).map_err(self.err(what, "-"))?;
        for _ in 0..iters {
            work()?;
        }
        end.record(&self.stream).map_err(self.err(what, "-"))?;
        end.synchronize().map_err(self.err(what, "-"))?;
        let ms = start.elapsed_ms(&end).map_err(self.err(what, "-"))?;
        Ok(Duration::from_secs_f64(ms as f64 / 1e3))
    }

    /// Launches `unpack_i8` on device buffers.
    pub fn launch_unpack_i8(
        &self,
        words: &CudaSlice<u32>,
        out: &mut CudaSlice<i8>,
        rows: usize,
        cols: usize,
    ) -> KernelResult<()> {
        let kernel = kernels::unpack_i8::NAME;
        let shape = shape2(rows, cols);
        check_len(kernel, &shape, words.len(), rows * kernels_gpu::format::words_per_row(cols), "packed words")?;
        check_len(kernel, &shape, out.len(), rows * cols, "output")?;
        let f = self.function(kernel, &shape)?;
        let g: Geometry = geometry::unpack(words.len());
        let (rows, cols) = (rows as u32, cols as u32);
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(words).arg(out).arg(&rows).arg(&cols);
        // SAFETY: argument order and types match `unpack_i8`'s signature; the
        // buffer lengths were checked against its `# Safety` contract above.
        unsafe { launch.launch(g.cuda()) }.map(drop).map_err(self.err(kernel, &shape))
    }

    /// Launches `unpack_f16` on device buffers (output as IEEE half bits).
    pub fn launch_unpack_f16(
        &self,
        words: &CudaSlice<u32>,
        out: &mut CudaSlice<u16>,
        rows: usize,
        cols: usize,
        scale: f32,
    ) -> KernelResult<()> {
        let kernel = kernels::unpack_f16::NAME;
        let shape = shape2(rows, cols);
        check_len(kernel, &shape, words.len(), rows * kernels_gpu::format::words_per_row(cols), "packed words")?;
        check_len(kernel, &shape, out.len(), rows * cols, "output")?;
        let f = self.function(kernel, &shape)?;
        let g = geometry::unpack(words.len());
        let (rows, cols) = (rows as u32, cols as u32);
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(words).arg(out).arg(&rows).arg(&cols).arg(&scale);
        // SAFETY: as in `launch_unpack_i8`.
        unsafe { launch.launch(g.cuda()) }.map(drop).map_err(self.err(kernel, &shape))
    }
}

impl CudaBackend {
    /// Blocks a TriHash launch uses: enough to fill every SM (four 46 KiB blocks fit one).
    pub fn trihash_blocks(&self) -> u32 {
        self.sm_count * 4
    }

    /// Launches `trihash_pow` on device buffers; `hits[0]` must be zero.
    #[allow(clippy::too_many_arguments)]
    pub fn launch_trihash_pow(
        &self,
        base: &CudaSlice<i8>,
        first_batch: u64,
        batches: u32,
        mwm: usize,
        hits: &mut CudaSlice<u32>,
    ) -> KernelResult<()> {
        let kernel = kernels::trihash_pow::NAME;
        let shape = format!("{batches} batches from {first_batch}, mwm {mwm}");
        check_trihash_search(batches as u64, mwm)?;
        check_len(kernel, &shape, base.len(), 729, "base state")?;
        if hits.is_empty() {
            return Err(KernelError::Shape { kernel, shape, reason: "empty hit buffer".into() });
        }
        let f = self.function(kernel, &shape)?;
        let g = geometry::trihash(batches as u64, self.trihash_blocks());
        let (mwm, capacity) = (mwm as u32, hits.len() as u32 - 1);
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(base).arg(&first_batch).arg(&batches).arg(&mwm).arg(hits).arg(&capacity);
        // SAFETY: argument order and types match `trihash_pow`; `base` has 729
        // trits, `hits` 1 + capacity words, and the geometry supplies the shared memory.
        unsafe { launch.launch(g.cuda()) }.map(drop).map_err(self.err(kernel, &shape))
    }

    /// Launches `trihash_batch` on device buffers.
    pub fn launch_trihash_batch(&self, messages: &CudaSlice<i8>, digests: &mut CudaSlice<i8>) -> KernelResult<()> {
        let kernel = kernels::trihash_batch::NAME;
        let count = messages.len() / HASH_TRITS;
        let shape = format!("{count} messages");
        check_len(kernel, &shape, digests.len(), messages.len(), "digests")?;
        let f = self.function(kernel, &shape)?;
        let g = geometry::trihash(count.div_ceil(LANES_PER_BATCH) as u64, self.trihash_blocks());
        let count = count as u32;
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(messages).arg(digests).arg(&count);
        // SAFETY: argument order and types match `trihash_batch`; both buffers hold count · 243 trits.
        unsafe { launch.launch(g.cuda()) }.map(drop).map_err(self.err(kernel, &shape))
    }
}

fn check_len(kernel: &'static str, shape: &str, got: usize, want: usize, what: &str) -> KernelResult<()> {
    if got == want {
        return Ok(());
    }
    Err(KernelError::Shape {
        kernel,
        shape: shape.to_owned(),
        reason: format!("{what}: {got} elements, expected {want}"),
    })
}

impl Backend for CudaBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cuda
    }

    fn describe(&self) -> String {
        let (ma, mi) = self.compute_capability;
        format!("{} (compute {ma}.{mi}, PTX {})", self.device, self.arch)
    }

    fn unpack_i8(&self, w: &PackedTernary) -> KernelResult<Vec<i8>> {
        let words = self.upload(w.words(), "upload")?;
        let mut out = self.zeros::<i8>(w.rows() * w.cols(), "alloc")?;
        self.launch_unpack_i8(&words, &mut out, w.rows(), w.cols())?;
        self.download(&out, "download")
    }

    fn unpack_f16(&self, w: &PackedTernary) -> KernelResult<Vec<f16>> {
        let words = self.upload(w.words(), "upload")?;
        let mut out = self.zeros::<u16>(w.rows() * w.cols(), "alloc")?;
        self.launch_unpack_f16(&words, &mut out, w.rows(), w.cols(), w.scale())?;
        Ok(self.download(&out, "download")?.into_iter().map(f16::from_bits).collect())
    }

    fn trihash_batch(&self, messages: &[i8]) -> KernelResult<Vec<i8>> {
        check_trihash_batch(messages)?;
        let input = self.upload(messages, "upload")?;
        let mut out = self.zeros::<i8>(messages.len(), "alloc")?;
        self.launch_trihash_batch(&input, &mut out)?;
        self.download(&out, "download")
    }

    fn trihash_search(&self, base: &[i8; 729], first_batch: u64, batches: u64, mwm: usize) -> KernelResult<Vec<u64>> {
        check_trihash_search(batches, mwm)?;
        let base_dev = self.upload(base, "upload")?;
        let mut found = Vec::new();
        for (first, n) in launch_chunks(first_batch, batches) {
            let mut hits = self.zeros::<u32>(1 + TRIHASH_HIT_CAPACITY, "alloc")?;
            self.launch_trihash_pow(&base_dev, first, n as u32, mwm, &mut hits)?;
            let hits = self.download(&hits, "download")?;
            let count = hits[0] as usize;
            if count > TRIHASH_HIT_CAPACITY {
                return Err(KernelError::Shape {
                    kernel: kernels::trihash_pow::NAME,
                    shape: format!("{n} batches, mwm {mwm}"),
                    reason: format!(
                        "{count} hits exceed the {TRIHASH_HIT_CAPACITY} recorded; raise mwm or search fewer batches"
                    ),
                });
            }
            found.extend(hits[1..1 + count].iter().map(|&o| first * LANES_PER_BATCH as u64 + o as u64));
        }
        found.sort_unstable();
        Ok(found)
    }
}

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

use crate::backend::{
    Backend, BackendKind, check_quantize, check_sgemm, check_ternary, check_trihash_batch, check_trihash_search,
    shape2, shape3,
};
use crate::emulator::launch_chunks;
use crate::error::{KernelError, KernelResult};
use crate::geometry::{self, Geometry};
use crate::matmul::{Activations, Precision, QuantizedActivations};
use crate::ptx;
use crate::ternary::DeviceTernary;
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

    /// Device-to-device copy (the bandwidth ceiling of the benchmarks).
    pub fn copy(&self, src: &CudaSlice<u8>, dst: &mut CudaSlice<u8>) -> KernelResult<()> {
        let shape = format!("{} bytes", src.len());
        self.stream.memcpy_dtod(src, dst).map_err(self.err("memcpy_dtod", &shape))
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

/// Quantized activations on the device (the quantizer's output, the matmuls' input).
#[derive(Debug)]
pub struct DeviceActivations {
    /// Rows (M).
    pub rows: usize,
    /// Columns (K).
    pub cols: usize,
    /// K padded to 64.
    pub k_pad: usize,
    /// `rows × k_pad` int8, as words.
    pub words: CudaSlice<u32>,
    /// Per-row scales.
    pub scales: CudaSlice<f32>,
    /// Per-row sums.
    pub sums: CudaSlice<i32>,
}

/// Ternary weights (device layout) on the device.
#[derive(Debug)]
pub struct DeviceWeights {
    /// Rows (N).
    pub rows: usize,
    /// Columns (K).
    pub cols: usize,
    /// K padded to 64.
    pub k_pad: usize,
    /// Absmean scale.
    pub scale: f32,
    /// The words.
    pub words: CudaSlice<u32>,
}

/// Largest dynamic shared memory a launch asks for without opting in.
const DEFAULT_SHARED_LIMIT: u32 = 48 * 1024;

impl CudaBackend {
    /// Copies weights to the device.
    pub fn upload_weights(&self, w: &DeviceTernary) -> KernelResult<DeviceWeights> {
        Ok(DeviceWeights {
            rows: w.rows(),
            cols: w.cols(),
            k_pad: w.k_pad(),
            scale: w.scale(),
            words: self.upload(w.words(), "upload weights")?,
        })
    }

    /// Device buffers for `rows × cols` quantized activations.
    pub fn alloc_activations(&self, rows: usize, cols: usize) -> KernelResult<DeviceActivations> {
        let k_pad = kernels_gpu::format::device_layout::padded_k(cols);
        Ok(DeviceActivations {
            rows,
            cols,
            k_pad,
            words: self.zeros(rows * k_pad / 4, "alloc activations")?,
            scales: self.zeros(rows, "alloc activations")?,
            sums: self.zeros(rows, "alloc activations")?,
        })
    }

    /// Copies quantized activations to the device.
    pub fn upload_activations(&self, x: &QuantizedActivations) -> KernelResult<DeviceActivations> {
        Ok(DeviceActivations {
            rows: x.rows,
            cols: x.cols,
            k_pad: x.k_pad,
            words: self.upload(&x.words, "upload activations")?,
            scales: self.upload(&x.scales, "upload activations")?,
            sums: self.upload(&x.sums, "upload activations")?,
        })
    }

    fn opt_in_shared(&self, f: &CudaFunction, kernel: &'static str, shape: &str, bytes: u32) -> KernelResult<()> {
        if bytes > DEFAULT_SHARED_LIMIT {
            use cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
            f.set_attribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)
                .map_err(self.err(kernel, shape))?;
        }
        Ok(())
    }

    /// Launches `quantize_f32` (`x_bits: None`) or `quantize_f16` on `rows × cols` activations.
    pub fn launch_quantize(
        &self,
        x_f32: Option<&CudaSlice<f32>>,
        x_f16: Option<&CudaSlice<u16>>,
        out: &mut DeviceActivations,
    ) -> KernelResult<()> {
        let kernel = if x_f32.is_some() { kernels::quantize_f32::NAME } else { kernels::quantize_f16::NAME };
        let shape = shape2(out.rows, out.cols);
        let len = x_f32.map(|x| x.len()).or(x_f16.map(|x| x.len())).unwrap_or(0);
        check_len(kernel, &shape, len, out.rows * out.cols, "activations")?;
        let f = self.function(kernel, &shape)?;
        let g = geometry::quantize(out.rows, 65_535);
        let (r, c, kp) = (out.rows as u32, out.cols as u32, out.k_pad as u32);
        let mut launch = self.stream.launch_builder(&f);
        match (x_f32, x_f16) {
            (Some(x), _) => launch.arg(x),
            (None, Some(x)) => launch.arg(x),
            (None, None) => return Err(KernelError::Shape { kernel, shape, reason: "no input".into() }),
        };
        launch.arg(&mut out.words).arg(&mut out.scales).arg(&mut out.sums).arg(&r).arg(&c).arg(&kp);
        // SAFETY: arguments match `quantize_f32/f16`; lengths checked above and by construction of `out`.
        unsafe { launch.launch(g.cuda()) }.map(drop).map_err(self.err(kernel, &shape))
    }

    /// Launches the ternary GEMV (`gemm: false`, M ≤ 8) or GEMM; `y` holds
    /// `m · n` f32 (`precision` F32) or f16 bits (F16).
    pub fn launch_ternary<T: DeviceRepr>(
        &self,
        gemm: bool,
        x: &DeviceActivations,
        w: &DeviceWeights,
        precision: Precision,
        y: &mut CudaSlice<T>,
    ) -> KernelResult<()> {
        let kernel = match (gemm, precision) {
            (false, Precision::F32) => kernels::ternary_gemv_f32::NAME,
            (false, Precision::F16) => kernels::ternary_gemv_f16::NAME,
            (true, Precision::F32) => kernels::ternary_gemm_f32::NAME,
            (true, Precision::F16) => kernels::ternary_gemm_f16::NAME,
        };
        let (m, n) = (x.rows, w.rows);
        let shape = shape3(m, n, w.cols);
        let want_size = if precision == Precision::F32 { 4 } else { 2 };
        if std::mem::size_of::<T>() != want_size || x.cols != w.cols || x.k_pad != w.k_pad {
            return Err(KernelError::Shape { kernel, shape, reason: "mismatched buffers".into() });
        }
        if !gemm && m > kernels_gpu::matmul::GEMV_MAX_M {
            return Err(KernelError::Shape { kernel, shape, reason: format!("M = {m} exceeds 8 (use the GEMM)") });
        }
        check_len(kernel, &shape, y.len(), m * n, "output")?;
        let f = self.function(kernel, &shape)?;
        let (mu, nu, kp) = (m as u32, n as u32, x.k_pad as u32);
        let mut launch = self.stream.launch_builder(&f);
        let g = if gemm {
            launch.arg(&x.words).arg(&x.scales).arg(&w.words).arg(&w.scale);
            geometry::ternary_gemm(m, n)
        } else {
            launch.arg(&x.words).arg(&x.scales).arg(&x.sums).arg(&w.words).arg(&w.scale);
            geometry::ternary_gemv(m, n, x.k_pad)
        };
        self.opt_in_shared(&f, kernel, &shape, g.shared_bytes)?;
        launch.arg(y).arg(&mu).arg(&nu).arg(&kp);
        // SAFETY: arguments match the kernel's signature; buffer sizes follow
        // from the checked shapes and the allocation helpers.
        unsafe { launch.launch(g.cuda()) }.map(drop).map_err(self.err(kernel, &shape))
    }

    /// Launches our SGEMM, `c = a · bᵀ`.
    pub fn launch_sgemm(
        &self,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        c: &mut CudaSlice<f32>,
        m: usize,
        n: usize,
        k: usize,
    ) -> KernelResult<()> {
        let kernel = kernels::sgemm::NAME;
        let shape = shape3(m, n, k);
        check_len(kernel, &shape, a.len(), m * k, "A")?;
        check_len(kernel, &shape, b.len(), n * k, "B")?;
        check_len(kernel, &shape, c.len(), m * n, "C")?;
        let f = self.function(kernel, &shape)?;
        let g = geometry::sgemm(m, n);
        let (mu, nu, ku) = (m as u32, n as u32, k as u32);
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(a).arg(b).arg(c).arg(&mu).arg(&nu).arg(&ku);
        // SAFETY: arguments match `sgemm`; lengths checked above.
        unsafe { launch.launch(g.cuda()) }.map(drop).map_err(self.err(kernel, &shape))
    }

    /// A cuBLAS handle on this backend's stream.
    pub fn cublas(&self) -> KernelResult<cudarc::cublas::CudaBlas> {
        if !cublas_present() {
            return Err(KernelError::Unsupported { op: "cuBLAS (libcublas not found)", backend: "cuda" });
        }
        cudarc::cublas::CudaBlas::new(self.stream.clone()).map_err(|e| KernelError::Cublas {
            op: "create",
            shape: "-".into(),
            device: self.device.clone(),
            message: e.to_string(),
        })
    }

    /// cuBLAS `C = A · Bᵀ` (row-major A: m×k, B: n×k, C: m×n) for f32
    /// (SGEMM) or f16 (`GemmEx`, f32 accumulation) buffers.
    #[allow(clippy::too_many_arguments)]
    pub fn cublas_gemm<T>(
        &self,
        blas: &cudarc::cublas::CudaBlas,
        a: &CudaSlice<T>,
        b: &CudaSlice<T>,
        c: &mut CudaSlice<T>,
        m: usize,
        n: usize,
        k: usize,
    ) -> KernelResult<()>
    where
        cudarc::cublas::CudaBlas: cudarc::cublas::Gemm<T>,
        T: num_one::One,
    {
        use cudarc::cublas::{Gemm, GemmConfig, sys::cublasOperation_t};
        let shape = shape3(m, n, k);
        // Row-major C (m×n) is column-major Cᵀ = B · Aᵀ: B's row-major buffer
        // is column-major Bᵀ (k×n), transposed back; A's is column-major Aᵀ.
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_T,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: n as i32,
            n: m as i32,
            k: k as i32,
            alpha: T::one(),
            lda: k as i32,
            ldb: k as i32,
            beta: T::zero(),
            ldc: n as i32,
        };
        if a.len() != m * k || b.len() != n * k || c.len() != m * n {
            return Err(KernelError::Shape { kernel: "cublas gemm", shape, reason: "buffer lengths".into() });
        }
        // SAFETY: the dimensions and leading dimensions describe the three buffers (lengths checked above).
        unsafe { blas.gemm(cfg, b, a, c) }.map_err(|e| KernelError::Cublas {
            op: "gemm",
            shape,
            device: self.device.clone(),
            message: e.to_string(),
        })
    }
}

/// The constants cuBLAS's `alpha`/`beta` need, for f32 and f16.
pub mod num_one {
    /// One and zero of an element type.
    pub trait One: Copy {
        /// 1.
        fn one() -> Self;
        /// 0.
        fn zero() -> Self;
    }
    impl One for f32 {
        fn one() -> Self {
            1.0
        }
        fn zero() -> Self {
            0.0
        }
    }
    impl One for half::f16 {
        fn one() -> Self {
            half::f16::ONE
        }
        fn zero() -> Self {
            half::f16::ZERO
        }
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

    fn quantize(&self, x: Activations<'_>, rows: usize, cols: usize) -> KernelResult<QuantizedActivations> {
        check_quantize(&x, rows, cols)?;
        let mut out = self.alloc_activations(rows, cols)?;
        match x {
            Activations::F32(v) => {
                let dx = self.upload(v, "upload")?;
                self.launch_quantize(Some(&dx), None, &mut out)?;
            }
            Activations::F16(v) => {
                let dx = self.upload(bytemuck::cast_slice::<half::f16, u16>(v), "upload")?;
                self.launch_quantize(None, Some(&dx), &mut out)?;
            }
        }
        Ok(QuantizedActivations {
            rows,
            cols,
            k_pad: out.k_pad,
            words: self.download(&out.words, "download")?,
            scales: self.download(&out.scales, "download")?,
            sums: self.download(&out.sums, "download")?,
        })
    }

    fn ternary_gemv(
        &self,
        x: &QuantizedActivations,
        w: &DeviceTernary,
        precision: Precision,
    ) -> KernelResult<Vec<f32>> {
        check_ternary("ternary_gemv", x, w, kernels_gpu::matmul::GEMV_MAX_M)?;
        self.ternary_host(false, x, w, precision)
    }

    fn ternary_gemm(
        &self,
        x: &QuantizedActivations,
        w: &DeviceTernary,
        precision: Precision,
    ) -> KernelResult<Vec<f32>> {
        check_ternary("ternary_gemm", x, w, usize::MAX)?;
        self.ternary_host(true, x, w, precision)
    }

    fn sgemm(&self, a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> KernelResult<Vec<f32>> {
        check_sgemm(a, b, m, n, k)?;
        let (da, db) = (self.upload(a, "upload")?, self.upload(b, "upload")?);
        let mut dc = self.zeros::<f32>(m * n, "alloc")?;
        self.launch_sgemm(&da, &db, &mut dc, m, n, k)?;
        self.download(&dc, "download")
    }
}

impl CudaBackend {
    fn ternary_host(
        &self,
        gemm: bool,
        x: &QuantizedActivations,
        w: &DeviceTernary,
        precision: Precision,
    ) -> KernelResult<Vec<f32>> {
        let (dx, dw) = (self.upload_activations(x)?, self.upload_weights(w)?);
        let len = x.rows * w.rows();
        match precision {
            Precision::F32 => {
                let mut y = self.zeros::<f32>(len, "alloc")?;
                self.launch_ternary(gemm, &dx, &dw, precision, &mut y)?;
                self.download(&y, "download")
            }
            Precision::F16 => {
                let mut y = self.zeros::<u16>(len, "alloc")?;
                self.launch_ternary(gemm, &dx, &dw, precision, &mut y)?;
                Ok(crate::emulator::halves_to_f32(&self.download(&y, "download")?))
            }
        }
    }
}

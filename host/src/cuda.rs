//! # The CUDA backend: the PTX on an NVIDIA GPU through cudarc
//!
//! libcuda is loaded at run time (cudarc's dynamic loading), so this crate
//! builds and runs on machines without CUDA; [`CudaBackend::new`] then returns
//! [`GpuError::NoDriver`]. The module loaded is the embedded PTX that matches
//! the device ([`crate::ptx::candidates_for_compute_capability`]), every kernel is
//! resolved once ([`crate::ops`]), and launches go to one stream.

use std::sync::Arc;
use std::time::Duration;

pub use cudarc::driver::CudaGraph;
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaContext, CudaModule, CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};

use crate::error::{KernelError, KernelResult};
use crate::ops::Functions;
use crate::ptx;

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
    /// The driver rejected the PTX module (its JIT log attached).
    #[error("{device}: the driver could not load the {arch} PTX module: {source}{}", jit_log(log))]
    ModuleLoad {
        /// Device name.
        device: String,
        /// `sm_80` or `sm_90`.
        arch: &'static str,
        /// The driver's error.
        source: cudarc::driver::DriverError,
        /// The JIT compiler's error log (empty when it wrote none).
        log: String,
    },
    /// A kernel the host expects is missing from the module.
    #[error("{device}: kernel `{kernel}` is not in the {arch} PTX module: {source}")]
    MissingKernel {
        /// Device name.
        device: String,
        /// `sm_80` or `sm_90`.
        arch: &'static str,
        /// The kernel.
        kernel: &'static str,
        /// The driver's error.
        source: cudarc::driver::DriverError,
    },
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

fn jit_log(log: &str) -> String {
    if log.trim().is_empty() { String::new() } else { format!("; JIT log: {}", log.trim()) }
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

/// An NVIDIA GPU with Trinity's module loaded and every kernel resolved.
#[derive(Debug)]
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    functions: Functions,
    device: String,
    uuid: String,
    arch: &'static str,
    compute_capability: (i32, i32),
    sm_count: u32,
    l2_bytes: usize,
    shared_limit: u32,
    notes: Vec<String>,
    /// The cuBLAS handle of [`CudaBackend::gemm_f16_f32`], made on first use.
    blas: std::sync::OnceLock<cudarc::cublas::CudaBlas>,
}

/// Hits a TriHash search launch can record; more is an error asking for a larger mwm.
pub const TRIHASH_HIT_CAPACITY: usize = 1 << 20;

impl CudaBackend {
    /// Opens device `ordinal`, loads the PTX that matches it and resolves every kernel.
    ///
    /// On compute capability 9.x and newer the sm_90 module is tried first and
    /// the sm_80 module (which every later GPU can JIT) if the driver rejects it.
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
        let candidates = ptx::candidates_for_compute_capability(major, minor);
        let Some(first) = candidates.first() else { return Err(GpuError::NoPtx) };
        let mut notes = Vec::new();
        let mut loaded = load_module(&ctx, &device, first);
        if let (Err(e), Some(fallback)) = (&loaded, candidates.get(1)) {
            notes.push(format!("the {} module failed to load ({e}); fell back to {}", first.arch, fallback.arch));
            loaded = load_module(&ctx, &device, fallback);
        }
        let (module, arch) = loaded?;
        let functions = Functions::load(&module).map_err(|(kernel, source)| GpuError::MissingKernel {
            device: device.clone(),
            arch,
            kernel,
            source,
        })?;
        let attr = |a, what| ctx.attribute(a).map_err(driver(what));
        let sm_count =
            attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "reading the SM count")? as u32;
        let l2_bytes = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, "reading the L2 size")? as usize;
        let shared_limit = attr(
            CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            "reading the shared-memory opt-in limit",
        )? as u32;
        // Kernels whose dynamic shared memory grows with the shape may use up
        // to the device's opt-in maximum: set once here, never per launch.
        for f in functions.growing_shared_memory() {
            f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared_limit as i32)
                .map_err(driver("opting in to the device's shared memory"))?;
        }
        let uuid = ctx.uuid().map(|u| format_uuid(&u.bytes)).map_err(driver("reading the device UUID"))?;
        // One stream, so cudarc's cross-stream event tracking is pure overhead
        // inside timed loops.
        // SAFETY: every buffer of this backend lives on `stream`.
        unsafe { ctx.disable_event_tracking() };
        // A stream of our own, not the legacy default stream: CUDA refuses to
        // capture graphs on the latter (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
        // seen on an H200 in the first GPU run).
        let stream = ctx.new_stream().map_err(driver("creating the stream"))?;
        Ok(CudaBackend {
            ctx,
            stream,
            _module: module,
            functions,
            device,
            uuid,
            arch,
            compute_capability: (major, minor),
            sm_count,
            l2_bytes,
            shared_limit,
            notes,
            blas: std::sync::OnceLock::new(),
        })
    }

    /// Device name.
    pub fn device_name(&self) -> &str {
        &self.device
    }
    /// The device's UUID as NVML prints it (`GPU-xxxxxxxx-…`): the key that
    /// matches this device to its NVML handle whatever the two orderings.
    pub fn uuid(&self) -> &str {
        &self.uuid
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
    /// L2 cache size, bytes.
    pub fn l2_bytes(&self) -> usize {
        self.l2_bytes
    }
    /// Dynamic shared memory per block with the opt-in, bytes.
    pub fn shared_limit(&self) -> u32 {
        self.shared_limit
    }
    /// What happened while opening (a module fallback), for reports.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
    /// The context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    /// The stream every launch goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    /// Every kernel, resolved once at creation.
    pub(crate) fn functions(&self) -> &Functions {
        &self.functions
    }

    /// A one-line description.
    pub fn describe(&self) -> String {
        let (ma, mi) = self.compute_capability;
        format!("{} (compute {ma}.{mi}, PTX {}, {})", self.device, self.arch, self.uuid)
    }

    pub(crate) fn err(
        &self,
        kernel: &'static str,
        shape: &str,
    ) -> impl FnOnce(cudarc::driver::DriverError) -> KernelError + use<> {
        let (device, shape) = (self.device.clone(), shape.to_owned());
        move |source| KernelError::Cuda { kernel, shape, device, source }
    }

    /// Copies host data to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, data: &[T]) -> KernelResult<CudaSlice<T>> {
        self.stream.clone_htod(data).map_err(self.err("upload", &format!("{} elements", data.len())))
    }

    /// Copies host data into an existing device buffer of the same length, on the stream.
    pub fn write<T: DeviceRepr>(&self, data: &[T], dst: &mut CudaSlice<T>) -> KernelResult<()> {
        self.stream.memcpy_htod(data, dst).map_err(self.err("write", &format!("{} elements", data.len())))
    }

    /// A zeroed device buffer.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> KernelResult<CudaSlice<T>> {
        self.stream.alloc_zeros(len).map_err(self.err("alloc", &format!("{len} elements")))
    }

    /// Copies a device buffer back.
    pub fn download<T: DeviceRepr + Default + Clone>(&self, buf: &CudaSlice<T>) -> KernelResult<Vec<T>> {
        self.stream.clone_dtoh(buf).map_err(self.err("download", &format!("{} elements", buf.len())))
    }

    /// Device-to-device copy (the bandwidth ceiling of the benchmarks).
    pub fn copy(&self, src: &CudaSlice<u8>, dst: &mut CudaSlice<u8>) -> KernelResult<()> {
        let shape = format!("{} bytes", src.len());
        self.stream.memcpy_dtod(src, dst).map_err(self.err("memcpy_dtod", &shape))
    }

    /// Waits for the stream.
    pub fn synchronize(&self) -> KernelResult<()> {
        self.stream.synchronize().map_err(self.err("synchronize", "-"))
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
        let ms = event_elapsed_ms(start.cu_event(), end.cu_event()).map_err(self.err(what, "-"))?;
        Ok(Duration::from_secs_f64(ms as f64 / 1e3))
    }

    /// Captures the ops `work` issues on this backend's stream as a CUDA
    /// graph, without running them; [`CudaBackend::replay`] runs them all with
    /// one launch. The buffers the ops use must outlive the graph.
    pub fn capture(&self, work: impl FnOnce() -> KernelResult<()>) -> KernelResult<CudaGraph> {
        use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(self.err("graph capture", "-"))?;
        let issued = work();
        let graph = self.stream.end_capture(CUgraphInstantiate_flags(0)).map_err(self.err("graph capture", "-"));
        issued?;
        graph?.ok_or(KernelError::Unsupported { op: "capturing an empty CUDA graph", backend: "cuda" })
    }

    /// Replays a captured graph on this backend's stream.
    pub fn replay(&self, graph: &CudaGraph) -> KernelResult<()> {
        graph.launch().map_err(self.err("graph launch", "-"))
    }

    /// Blocks a TriHash launch uses: enough to fill every SM (four 46 KiB blocks fit one).
    pub fn trihash_blocks(&self) -> u32 {
        self.sm_count * 4
    }
}

/// Loads one PTX module; on failure the JIT log is read with a second,
/// logging load so the error says why.
fn load_module(
    ctx: &Arc<CudaContext>,
    device: &str,
    src: &ptx::PtxModule,
) -> Result<(Arc<CudaModule>, &'static str), GpuError> {
    match ctx.load_module(cudarc::nvrtc::Ptx::from_src(src.text)) {
        Ok(m) => Ok((m, src.arch)),
        Err(source) => Err(GpuError::ModuleLoad {
            device: device.to_owned(),
            arch: src.arch,
            source,
            log: jit_error_log(src.text),
        }),
    }
}

/// The JIT compiler's error log for a module the driver rejected.
fn jit_error_log(text: &str) -> String {
    use cudarc::driver::sys::{CUjit_option, cuModuleLoadDataEx, cuModuleUnload};
    use std::ffi::c_void;
    let Ok(src) = std::ffi::CString::new(text) else { return "the PTX text holds a NUL byte".into() };
    let mut log = vec![0u8; 16 * 1024];
    let mut options = [CUjit_option::CU_JIT_ERROR_LOG_BUFFER, CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES];
    let mut values: [*mut c_void; 2] = [log.as_mut_ptr().cast(), log.len() as *mut c_void];
    let mut module = std::ptr::null_mut();
    // SAFETY: `src` is a NUL-terminated PTX image; the option arrays have two
    // entries each, the log buffer outlives the call and its size is passed;
    // a module that does load is unloaded at once.
    unsafe {
        let r = cuModuleLoadDataEx(
            &mut module,
            src.as_ptr().cast(),
            options.len() as u32,
            options.as_mut_ptr(),
            values.as_mut_ptr(),
        );
        if r == cudarc::driver::sys::CUresult::CUDA_SUCCESS && !module.is_null() {
            cuModuleUnload(module);
        }
    }
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    String::from_utf8_lossy(&log[..end]).into_owned()
}

/// `cuEventElapsedTime_v2` where the driver has it (CUDA 12.8+), else the
/// original `cuEventElapsedTime` (drivers from R535 / CUDA 12.2 on): cudarc,
/// built for CUDA 13 headers, would call only the former and fail on older drivers.
fn event_elapsed_ms(
    start: cudarc::driver::sys::CUevent,
    end: cudarc::driver::sys::CUevent,
) -> Result<f32, cudarc::driver::DriverError> {
    use cudarc::driver::sys::{CUevent, CUresult};
    type ElapsedFn = unsafe extern "C" fn(*mut f32, CUevent, CUevent) -> CUresult;
    static ELAPSED: std::sync::OnceLock<Option<ElapsedFn>> = std::sync::OnceLock::new();
    let f = ELAPSED.get_or_init(|| {
        // SAFETY: a CUDA backend exists, so libcuda loads; both symbols have
        // this exact signature in every driver that exports them.
        unsafe {
            let lib = cudarc::driver::sys::culib();
            lib.get::<ElapsedFn>(b"cuEventElapsedTime_v2")
                .or_else(|_| lib.get::<ElapsedFn>(b"cuEventElapsedTime"))
                .ok()
                .map(|s| *s)
        }
    });
    let Some(f) = f else { return Err(cudarc::driver::DriverError(CUresult::CUDA_ERROR_NOT_FOUND)) };
    let mut ms = 0f32;
    // SAFETY: both events were created on this context and recorded on one stream; `end` has completed.
    unsafe { f(&mut ms, start, end) }.result()?;
    Ok(ms)
}

/// A CUDA UUID in NVML's text form: `GPU-` and 16 bytes as 8-4-4-4-12 hex digits.
pub fn format_uuid(bytes: &[std::ffi::c_char; 16]) -> String {
    let hex: Vec<String> = bytes.iter().map(|&b| format!("{:02x}", b as u8)).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        hex[0..4].concat(),
        hex[4..6].concat(),
        hex[6..8].concat(),
        hex[8..10].concat(),
        hex[10..16].concat()
    )
}

impl CudaBackend {
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
        let shape = format!("{m}×{n}×{k}");
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

impl CudaBackend {
    /// cuBLAS `GemmEx`: `C = A · Wᵀ` with f16 A (`m × k`, rows `k` apart), f16
    /// W (`n` rows `ldw ≥ k` apart), f32 C (`m × n`); f32 accumulation
    /// (`CUBLAS_COMPUTE_32F`, tensor cores where cuBLAS picks them). What a
    /// model with FP16 linears runs per linear. The handle is this backend's,
    /// made on the first call and kept.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_f16_f32(
        &self,
        a: &CudaSlice<half::f16>,
        w: &CudaSlice<half::f16>,
        ldw: usize,
        c: &mut CudaSlice<f32>,
        m: usize,
        n: usize,
        k: usize,
    ) -> KernelResult<()> {
        use cudarc::cublas::{result, sys};
        use cudarc::driver::{DevicePtr, DevicePtrMut};
        let shape = format!("{m}×{n}×{k}");
        let fail = |op: &'static str, shape: &str| {
            let (shape, device) = (shape.to_owned(), self.device.clone());
            move |e: cudarc::cublas::result::CublasError| KernelError::Cublas {
                op,
                shape,
                device,
                message: e.to_string(),
            }
        };
        let dims_fit = [m, n, k, ldw].iter().all(|&d| d <= i32::MAX as usize);
        if !dims_fit || ldw < k || a.len() != m * k || w.len() != n * ldw || c.len() != m * n {
            return Err(KernelError::Shape {
                kernel: "cublas gemm f16→f32",
                shape,
                reason: format!("buffer lengths a {}, w {} (rows {ldw} apart), c {}", a.len(), w.len(), c.len()),
            });
        }
        if m == 0 || n == 0 {
            return Ok(());
        }
        let blas = match self.blas.get() {
            Some(b) => b,
            None => {
                let made = self.cublas()?;
                self.blas.get_or_init(|| made)
            }
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (pa, _ra) = a.device_ptr(&self.stream);
        let (pw, _rw) = w.device_ptr(&self.stream);
        let (pc, _rc) = c.device_ptr_mut(&self.stream);
        // Row-major C (m×n) is column-major Cᵀ (n×m) = W · Aᵀ: W's buffer is
        // column-major Wᵀ (k×n, ld ldw), transposed; A's is column-major Aᵀ (k×m).
        // SAFETY: the dimensions and leading dimensions describe the three
        // buffers (lengths checked above); the pointers stay alive until the
        // stream work is done (the records above); the handle is on this stream.
        unsafe {
            result::gemm_ex(
                *blas.handle(),
                sys::cublasOperation_t::CUBLAS_OP_T,
                sys::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                k as i32,
                (&alpha) as *const f32 as *const std::ffi::c_void,
                pw as *const std::ffi::c_void,
                sys::cudaDataType::CUDA_R_16F,
                ldw as i32,
                pa as *const std::ffi::c_void,
                sys::cudaDataType::CUDA_R_16F,
                k as i32,
                (&beta) as *const f32 as *const std::ffi::c_void,
                pc as *mut std::ffi::c_void,
                sys::cudaDataType::CUDA_R_32F,
                n as i32,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(fail("gemm_ex f16→f32", &shape))
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

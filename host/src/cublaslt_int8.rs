//! # cuBLASLt INT8 GEMM: the integer tensor-core baseline
//!
//! `C[M, N] (int32) = A[M, K] (int8) · W[N, K]ᵀ (int8)`, row-major, through
//! cuBLASLt with `CUBLAS_COMPUTE_32I`. cudarc's safe cuBLASLt wrapper covers
//! floating-point types only, so this plans the call once with the raw
//! functions (layouts, descriptor, heuristic, workspace) and runs it many
//! times; every handle is released on drop.
//!
//! Layout: row-major C is column-major Cᵀ = W · Aᵀ, i.e. cuBLASLt's "TN"
//! form that its INT8 kernels require: op(A) = Wᵀ-buffer transposed
//! (`m = N`, `lda = K`), op(B) = the activations as stored (`n = M`, `ldb = K`).

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublaslt::{result, sys};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use crate::error::{KernelError, KernelResult};

/// A planned INT8 GEMM of one shape.
pub struct Int8Gemm {
    stream: Arc<CudaStream>,
    handle: sys::cublasLtHandle_t,
    desc: sys::cublasLtMatmulDesc_t,
    layouts: [sys::cublasLtMatrixLayout_t; 3],
    pref: sys::cublasLtMatmulPreference_t,
    algo: sys::cublasLtMatmulAlgo_t,
    workspace: CudaSlice<u8>,
    shape: (usize, usize, usize),
    device: String,
}

impl std::fmt::Debug for Int8Gemm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Int8Gemm").field("shape", &self.shape).finish_non_exhaustive()
    }
}

/// Whether libcublasLt can be loaded.
pub fn available() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { cudarc::cublaslt::sys::is_culib_present() }
}

impl Int8Gemm {
    /// Plans `C = A · Wᵀ` for A: m×k, W: n×k (int8, row-major), C: m×n int32.
    pub fn new(gpu: &crate::cuda::CudaBackend, m: usize, n: usize, k: usize) -> KernelResult<Int8Gemm> {
        let shape = format!("{m}×{n}×{k}");
        let device = gpu.device_name().to_owned();
        let err = |op: &'static str| {
            let (shape, device) = (shape.clone(), device.clone());
            move |e: result::CublasError| KernelError::Cublas { op, shape, device, message: e.to_string() }
        };
        if !available() {
            return Err(KernelError::Unsupported { op: "cuBLASLt INT8 (libcublasLt not found)", backend: "cuda" });
        }
        if !k.is_multiple_of(4) || !n.is_multiple_of(4) {
            return Err(KernelError::Shape {
                kernel: "cublasLt int8",
                shape,
                reason: "cuBLASLt INT8 needs K and N multiples of 4".into(),
            });
        }
        let workspace = gpu.zeros::<u8>(32 << 20)?;
        let handle = result::create_handle().map_err(err("create"))?;
        // From here on, `plan` owns what it created so that an error drops it.
        let mut plan = Int8Gemm {
            stream: gpu.stream().clone(),
            handle,
            desc: std::ptr::null_mut(),
            layouts: [std::ptr::null_mut(); 3],
            pref: std::ptr::null_mut(),
            // SAFETY: a plain-data C struct; all-zero is a valid placeholder until the heuristic fills it.
            algo: unsafe { std::mem::zeroed() },
            workspace,
            shape: (m, n, k),
            device: gpu.device_name().to_owned(),
        };
        plan.desc =
            result::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32I, sys::cudaDataType_t::CUDA_R_32I)
                .map_err(err("matmul desc"))?;
        // cublasOperation_t as a 32-bit value: 1 = CUBLAS_OP_T.
        let op_t: i32 = 1;
        // SAFETY: the attribute buffer is a live 32-bit value of the size passed.
        unsafe {
            result::set_matmul_desc_attribute(
                plan.desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                (&op_t) as *const _ as *const c_void,
                std::mem::size_of_val(&op_t),
            )
        }
        .map_err(err("transa"))?;
        let (m64, n64, k64) = (m as u64, n as u64, k as u64);
        plan.layouts = [
            result::create_matrix_layout(sys::cudaDataType_t::CUDA_R_8I, k64, n64, k as i64)
                .map_err(err("layout W"))?,
            result::create_matrix_layout(sys::cudaDataType_t::CUDA_R_8I, k64, m64, k as i64)
                .map_err(err("layout A"))?,
            result::create_matrix_layout(sys::cudaDataType_t::CUDA_R_32I, n64, m64, n as i64)
                .map_err(err("layout C"))?,
        ];
        plan.pref = result::create_matmul_pref().map_err(err("preference"))?;
        let size = plan.workspace.len();
        // SAFETY: the attribute buffer is a live usize of the size passed.
        unsafe {
            result::set_matmul_pref_attribute(
                plan.pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&size) as *const _ as *const c_void,
                std::mem::size_of_val(&size),
            )
        }
        .map_err(err("workspace preference"))?;
        let [lw, la, lc] = plan.layouts;
        // SAFETY: every handle was created above and is alive.
        let heuristic = unsafe { result::get_matmul_algo_heuristic(plan.handle, plan.desc, lw, la, lc, lc, plan.pref) }
            .map_err(err("heuristic"))?;
        plan.algo = heuristic.algo;
        Ok(plan)
    }

    /// Runs the planned GEMM on the stream.
    pub fn run(&self, a: &CudaSlice<i8>, w: &CudaSlice<i8>, c: &mut CudaSlice<i32>) -> KernelResult<()> {
        let (m, n, k) = self.shape;
        let shape = format!("{m}×{n}×{k}");
        if a.len() != m * k || w.len() != n * k || c.len() != m * n {
            return Err(KernelError::Shape { kernel: "cublasLt int8", shape, reason: "buffer lengths".into() });
        }
        let (alpha, beta) = (1i32, 0i32);
        let (pa, _ra) = a.device_ptr(&self.stream);
        let (pw, _rw) = w.device_ptr(&self.stream);
        let (pc, _rc) = c.device_ptr_mut(&self.stream);
        let (ws, _rws) = self.workspace.device_ptr(&self.stream);
        let [lw, la, lc] = self.layouts;
        // SAFETY: the plan's layouts describe the three buffers (lengths checked
        // above), the workspace is the size the preference announced, and the
        // pointers stay alive until the stream work is done (the records above).
        unsafe {
            result::matmul(
                self.handle,
                self.desc,
                (&alpha) as *const i32 as *const c_void,
                (&beta) as *const i32 as *const c_void,
                pw as *const c_void,
                lw,
                pa as *const c_void,
                la,
                pc as *const c_void,
                lc,
                pc as *mut c_void,
                lc,
                &self.algo,
                ws as *mut c_void,
                self.workspace.len(),
                self.stream.cu_stream() as *mut _,
            )
        }
        .map_err(|e| KernelError::Cublas {
            op: "cublasLtMatmul int8",
            shape,
            device: self.device.clone(),
            message: e.to_string(),
        })
    }
}

impl Drop for Int8Gemm {
    fn drop(&mut self) {
        // SAFETY: each handle is destroyed once, and only if it was created.
        // Errors while tearing down are ignored: nothing can be done about them.
        unsafe {
            if !self.pref.is_null() {
                let _ = result::destroy_matmul_pref(self.pref);
            }
            for l in self.layouts {
                if !l.is_null() {
                    let _ = result::destroy_matrix_layout(l);
                }
            }
            if !self.desc.is_null() {
                let _ = result::destroy_matmul_desc(self.desc);
            }
            let _ = result::destroy_handle(self.handle);
        }
    }
}

//! # Ops: one typed method per kernel, on every backend
//!
//! This file is where a kernel is registered with the runtime. Each op of
//! [`Device`] takes and writes [`Buffer`]s that live on the device, checks the
//! request with the kernel's own facts (geometry and argument checks, stated
//! next to the kernel in `kernels-gpu`), then runs one of three arms:
//!
//! - `cpu`: the fast CPU path ([`crate::cpu`]);
//! - `emu`: the kernel source on the SIMT emulator, with the kernel's geometry;
//! - `cuda`: the PTX function resolved once when the backend was created
//!   (`Functions`), launched on the backend's stream with the same geometry.
//!
//! Adding a kernel: its source in `kernels-gpu/src/kernels/`, its scalar
//! reference in [`crate::reference`], its op here (and its name in
//! `cuda_functions!`), its line in [`crate::verify`] (which the tests run on
//! every backend), and its bench line.

use cudarc::driver::{CudaFunction, CudaModule, PushKernelArg};
use half::f16;
use kernels_gpu::curl::{self, LANES_PER_BATCH};
use kernels_gpu::device::{In, Out};
use kernels_gpu::emu::EmuError;
use kernels_gpu::head::{head_check, head_gemv_geometry};
use kernels_gpu::kernels::{self, sgemm_check, sgemm_geometry, unpack_check, unpack_geometry};
use kernels_gpu::launch::{LaunchConfig, check_shared};
use kernels_gpu::matmul::{self as facts, GEMV_MAX_M};

use crate::buffer::{
    ActivationElem, AttentionScratch, Buffer, HostMemory, OutputElem, QuantizedBuffer, RowPlaces, TernaryBuffer,
};
use crate::device::Device;
use crate::error::{KernelError, KernelResult};

/// Declares the kernels the CUDA backend resolves at creation: one field per
/// PTX entry point, and the ones whose shared memory grows with the shape.
macro_rules! cuda_functions {
    (growing: [$($grow:ident),*]; all: [$($name:ident),* $(,)?]) => {
        /// Every kernel of the PTX module, resolved once.
        #[derive(Debug)]
        pub(crate) struct Functions {
            $($name: CudaFunction,)*
        }

        impl Functions {
            /// The PTX entry point of every registered kernel.
            #[cfg(test)]
            pub(crate) const NAMES: &[&str] = &[$(stringify!($name)),*];

            /// Resolves every kernel; `Err` names the missing one.
            pub(crate) fn load(
                module: &std::sync::Arc<CudaModule>,
            ) -> Result<Self, (&'static str, cudarc::driver::DriverError)> {
                Ok(Functions { $($name: module.load_function(stringify!($name)).map_err(|e| (stringify!($name), e))?,)* })
            }

            /// A kernel by its PTX name (variants are chosen by name).
            fn get(&self, name: &str) -> &CudaFunction {
                match name {
                    $(stringify!($name) => &self.$name,)*
                    other => unreachable!("kernel `{other}` is not registered in cuda_functions!"),
                }
            }

            /// The kernels that may need more than 48 KB of dynamic shared memory.
            pub(crate) fn growing_shared_memory(&self) -> [&CudaFunction; [$(stringify!($grow)),*].len()] {
                [$(&self.$grow),*]
            }
        }
    };
}

cuda_functions! {
    growing: [
        ternary_gemv_f32, ternary_gemv_f16, ternary_gemv_many_f32, ternary_gemv_many_f16, attention_f32,
        attention_prefill_f32
    ];
    all: [
        unpack_i8, unpack_f16, quantize_f32, quantize_f16, ternary_gemv_f32, ternary_gemv_f16,
        ternary_gemv_many_f32, ternary_gemv_many_f16, ternary_gemm_f32, ternary_gemm_f16, sgemm, trihash_pow,
        trihash_batch, convert_f32_to_f16, rms_norm_f32, rms_norm_quantize_f32, add_rms_norm_quantize_f32, gated_rms_norm_quantize_f32,
        rope_f32, rope_kv_write_f32, attention_f32, attention_prefill_f32, attention_split_f32, attention_combine_f32,
        gated_f32, add_f32, embedding_f32, kv_write_f32, argmax_f32, head_gemv_f16, head_gemv_i8,
    ]
}

pub use kernels_gpu::kernels::{ACT_RELU2, ACT_SILU};

/// Blocks the emulator launches for TriHash (more would only add threads; two exercise the grid stride).
const EMU_TRIHASH_BLOCKS: u32 = 2;
/// Blocks the quantizer strides over rows with (CUDA's grid limit in x is far above; this keeps grids modest).
const QUANTIZE_MAX_BLOCKS: u32 = 65_535;

/// What a fused pre-norm kernel does to `x` with the other buffer before the norm.
#[derive(Debug, Clone, Copy)]
enum PreNorm {
    /// `x ← x + other` (`add_rms_norm_quantize_f32`).
    Add,
    /// `x ← act(x) · other` (`gated_rms_norm_quantize_f32`).
    Gated(u32),
}

/// The one rule that picks the decode kernel or the prefill kernel: the GEMV
/// for up to [`GEMV_MAX_M`] rows (tokens), the tensor-core GEMM beyond.
pub fn uses_gemv(m: usize) -> bool {
    m <= GEMV_MAX_M
}

fn cuda_config(c: LaunchConfig) -> cudarc::driver::LaunchConfig {
    cudarc::driver::LaunchConfig {
        grid_dim: (c.grid[0], c.grid[1], c.grid[2]),
        block_dim: (c.block[0], c.block[1], c.block[2]),
        shared_mem_bytes: c.shared_bytes,
    }
}

/// The shape and buffer-length checks of a ternary matmul into `y_len` outputs.
fn ternary_check(
    kernel: &'static str,
    max_m: usize,
    x: &QuantizedBuffer,
    w: &TernaryBuffer,
    y_len: usize,
) -> KernelResult<()> {
    let (m, n) = (x.rows, w.rows);
    let err = |reason| shape_err(kernel, &format!("{m}×{n}×{}", w.cols))(reason);
    facts::ternary_check(m, n, x.cols, w.cols, x.k_pad, w.k_pad, max_m).map_err(err)?;
    let lens = [x.words.len(), x.scales.len(), x.sums.len(), w.words.len(), y_len];
    if lens != [m * x.k_pad / 4, m, m, n * w.k_pad / 16, m * n] {
        return Err(err(format!("buffer lengths {lens:?} do not fit the shape")));
    }
    Ok(())
}

/// The checks of a quantizer's request (`quantize_f32` / `_f16`,
/// `rms_norm_quantize_f32`): `x_len` activations for `out`'s rows and
/// columns, and output buffers of `out`'s shape.
fn quantized_out_check(kernel: &'static str, x_len: usize, out: &QuantizedBuffer) -> KernelResult<()> {
    let (rows, cols, k_pad) = (out.rows, out.cols, out.k_pad);
    let err = shape_err(kernel, &format!("{rows}×{cols}"));
    if let Err(reason) = facts::quantize_check(rows, cols, x_len, k_pad) {
        return Err(err(reason));
    }
    let lens = [out.words.len(), out.scales.len(), out.sums.len()];
    if lens != [rows * k_pad / 4, rows, rows] {
        return Err(err(format!("output buffers of {lens:?} elements")));
    }
    Ok(())
}

fn shape_err(kernel: &'static str, shape: &str) -> impl FnOnce(String) -> KernelError + use<> {
    let shape = shape.to_owned();
    move |reason| KernelError::Shape { kernel, shape, reason }
}

fn emu_err(kernel: &'static str, shape: &str) -> impl FnOnce(EmuError) -> KernelError + use<> {
    let shape = shape.to_owned();
    move |source| KernelError::Emu { kernel, shape, source }
}

/// The emulator launchers of the kernels that come in an f32 and an f16
/// variant: implemented for exactly those two element types.
pub trait EmuVariant: Sized {
    /// # Safety
    /// As the quantizer kernels.
    #[allow(clippy::too_many_arguments)]
    unsafe fn quantize(
        cfg: LaunchConfig,
        x: &[Self],
        q: Out<i8>,
        scales: Out<f32>,
        sums: Out<i32>,
        rows: u32,
        cols: u32,
        k_pad: u32,
    ) -> Result<(), EmuError>;
    /// # Safety
    /// As the GEMV kernels.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemv(
        cfg: LaunchConfig,
        x: (In<u32>, In<f32>, In<i32>),
        w: In<u32>,
        w_scale: f32,
        y: &mut [Self],
        mnk: [u32; 3],
    ) -> Result<(), EmuError>;
    /// # Safety
    /// As the grouped GEMV kernels (`ys[i]` empty where `n[i] = 0`).
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemv_many(
        cfg: LaunchConfig,
        x: (In<u32>, In<f32>, In<i32>),
        w: [In<u32>; 3],
        w_scale: [f32; 3],
        ys: [&mut [Self]; 3],
        n: [u32; 3],
        mk: [u32; 2],
    ) -> Result<(), EmuError>;
    /// # Safety
    /// As the GEMM kernels.
    unsafe fn gemm(
        cfg: LaunchConfig,
        x: (In<u32>, In<f32>),
        w: In<u32>,
        w_scale: f32,
        y: &mut [Self],
        mnk: [u32; 3],
    ) -> Result<(), EmuError>;
}

impl EmuVariant for f32 {
    unsafe fn quantize(
        cfg: LaunchConfig,
        x: &[f32],
        q: Out<i8>,
        scales: Out<f32>,
        sums: Out<i32>,
        rows: u32,
        cols: u32,
        k_pad: u32,
    ) -> Result<(), EmuError> {
        // SAFETY: forwarded.
        unsafe { kernels::quantize_f32::launch(cfg, In::from_slice(x), q, scales, sums, rows, cols, k_pad) }
    }
    unsafe fn gemv(
        cfg: LaunchConfig,
        (x, xs, xu): (In<u32>, In<f32>, In<i32>),
        w: In<u32>,
        w_scale: f32,
        y: &mut [f32],
        [m, n, k]: [u32; 3],
    ) -> Result<(), EmuError> {
        // SAFETY: forwarded.
        unsafe { kernels::ternary_gemv_f32::launch(cfg, x, xs, xu, w, w_scale, Out::from_slice(y), m, n, k) }
    }
    unsafe fn gemv_many(
        cfg: LaunchConfig,
        (x, xs, xu): (In<u32>, In<f32>, In<i32>),
        [w0, w1, w2]: [In<u32>; 3],
        [s0, s1, s2]: [f32; 3],
        [y0, y1, y2]: [&mut [f32]; 3],
        [n0, n1, n2]: [u32; 3],
        [m, k]: [u32; 2],
    ) -> Result<(), EmuError> {
        let (y0, y1, y2) = (Out::from_slice(y0), Out::from_slice(y1), Out::from_slice(y2));
        // SAFETY: forwarded.
        unsafe {
            kernels::ternary_gemv_many_f32::launch(cfg, x, xs, xu, w0, w1, w2, s0, s1, s2, y0, y1, y2, n0, n1, n2, m, k)
        }
    }
    unsafe fn gemm(
        cfg: LaunchConfig,
        (x, xs): (In<u32>, In<f32>),
        w: In<u32>,
        w_scale: f32,
        y: &mut [f32],
        [m, n, k]: [u32; 3],
    ) -> Result<(), EmuError> {
        // SAFETY: forwarded.
        unsafe { kernels::ternary_gemm_f32::launch(cfg, x, xs, w, w_scale, Out::from_slice(y), m, n, k) }
    }
}

impl EmuVariant for f16 {
    unsafe fn quantize(
        cfg: LaunchConfig,
        x: &[f16],
        q: Out<i8>,
        scales: Out<f32>,
        sums: Out<i32>,
        rows: u32,
        cols: u32,
        k_pad: u32,
    ) -> Result<(), EmuError> {
        let bits: &[u16] = bytemuck::cast_slice(x);
        // SAFETY: forwarded.
        unsafe { kernels::quantize_f16::launch(cfg, In::from_slice(bits), q, scales, sums, rows, cols, k_pad) }
    }
    unsafe fn gemv(
        cfg: LaunchConfig,
        (x, xs, xu): (In<u32>, In<f32>, In<i32>),
        w: In<u32>,
        w_scale: f32,
        y: &mut [f16],
        [m, n, k]: [u32; 3],
    ) -> Result<(), EmuError> {
        let y = Out::from_slice(bytemuck::cast_slice_mut::<f16, u16>(y));
        // SAFETY: forwarded.
        unsafe { kernels::ternary_gemv_f16::launch(cfg, x, xs, xu, w, w_scale, y, m, n, k) }
    }
    unsafe fn gemv_many(
        cfg: LaunchConfig,
        (x, xs, xu): (In<u32>, In<f32>, In<i32>),
        [w0, w1, w2]: [In<u32>; 3],
        [s0, s1, s2]: [f32; 3],
        ys: [&mut [f16]; 3],
        [n0, n1, n2]: [u32; 3],
        [m, k]: [u32; 2],
    ) -> Result<(), EmuError> {
        let [y0, y1, y2] = ys.map(|y| Out::from_slice(bytemuck::cast_slice_mut::<f16, u16>(y)));
        // SAFETY: forwarded.
        unsafe {
            kernels::ternary_gemv_many_f16::launch(cfg, x, xs, xu, w0, w1, w2, s0, s1, s2, y0, y1, y2, n0, n1, n2, m, k)
        }
    }
    unsafe fn gemm(
        cfg: LaunchConfig,
        (x, xs): (In<u32>, In<f32>),
        w: In<u32>,
        w_scale: f32,
        y: &mut [f16],
        [m, n, k]: [u32; 3],
    ) -> Result<(), EmuError> {
        let y = Out::from_slice(bytemuck::cast_slice_mut::<f16, u16>(y));
        // SAFETY: forwarded.
        unsafe { kernels::ternary_gemm_f16::launch(cfg, x, xs, w, w_scale, y, m, n, k) }
    }
}

impl Device {
    /// `unpack_i8`: packed ternary (format v1, `rows × cols`) → int8 trits.
    pub fn unpack_i8(&self, packed: &Buffer<u32>, rows: usize, cols: usize, out: &mut Buffer<i8>) -> KernelResult<()> {
        let kernel = kernels::unpack_i8::NAME;
        let shape = format!("{rows}×{cols}");
        unpack_check(rows, cols, packed.len(), out.len()).map_err(shape_err(kernel, &shape))?;
        let cfg = unpack_geometry(packed.len());
        let (r, c) = (rows as u32, cols as u32);
        match (self, packed, out) {
            (Device::Cpu, Buffer::Host(p), Buffer::Host(o)) => {
                crate::cpu::unpack_i8(p, rows, cols, o);
                Ok(())
            }
            (Device::Emu, Buffer::Host(p), Buffer::Host(o)) => {
                // SAFETY: the views cover live buffers of the lengths checked above.
                unsafe { kernels::unpack_i8::launch(cfg, In::from_slice(p), Out::from_slice(o), r, c) }
                    .map_err(emu_err(kernel, &shape))
            }
            (Device::Cuda(g), Buffer::Cuda(p), Buffer::Cuda(o)) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(p).arg(o).arg(&r).arg(&c);
                // SAFETY: arguments match `unpack_i8`'s signature; lengths checked above.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// `unpack_f16`: packed ternary → f16 `trit · scale`.
    pub fn unpack_f16(
        &self,
        packed: &Buffer<u32>,
        rows: usize,
        cols: usize,
        scale: f32,
        out: &mut Buffer<f16>,
    ) -> KernelResult<()> {
        let kernel = kernels::unpack_f16::NAME;
        let shape = format!("{rows}×{cols}");
        unpack_check(rows, cols, packed.len(), out.len()).map_err(shape_err(kernel, &shape))?;
        let cfg = unpack_geometry(packed.len());
        let (r, c) = (rows as u32, cols as u32);
        match (self, packed, out) {
            (Device::Cpu, Buffer::Host(p), Buffer::Host(o)) => {
                crate::cpu::unpack_f16(p, rows, cols, scale, o);
                Ok(())
            }
            (Device::Emu, Buffer::Host(p), Buffer::Host(o)) => {
                let o = Out::from_slice(bytemuck::cast_slice_mut::<f16, u16>(o));
                // SAFETY: the views cover live buffers of the lengths checked above.
                unsafe { kernels::unpack_f16::launch(cfg, In::from_slice(p), o, r, c, scale) }
                    .map_err(emu_err(kernel, &shape))
            }
            (Device::Cuda(g), Buffer::Cuda(p), Buffer::Cuda(o)) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(p).arg(o).arg(&r).arg(&c).arg(&scale);
                // SAFETY: arguments match `unpack_f16`'s signature (f16 is its u16 bits); lengths checked above.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// `quantize_f32` / `quantize_f16` (by `E`): per-row absmax int8 of
    /// `out.rows × out.cols` activations into `out`.
    pub fn quantize<E: ActivationElem + EmuVariant>(
        &self,
        x: &Buffer<E>,
        out: &mut QuantizedBuffer,
    ) -> KernelResult<()> {
        let kernel = E::QUANTIZE;
        let (rows, cols, k_pad) = (out.rows, out.cols, out.k_pad);
        let shape = format!("{rows}×{cols}");
        quantized_out_check(kernel, x.len(), out)?;
        let (r, c, kp) = (rows as u32, cols as u32, k_pad as u32);
        match (self, x, &mut out.words, &mut out.scales, &mut out.sums) {
            (Device::Cpu, Buffer::Host(x), Buffer::Host(q), Buffer::Host(s), Buffer::Host(u)) => {
                crate::cpu::quantize(x, rows, cols, k_pad, q, s, u);
                Ok(())
            }
            (Device::Emu, Buffer::Host(x), Buffer::Host(q), Buffer::Host(s), Buffer::Host(u)) => {
                let cfg = facts::quantize_geometry(rows, QUANTIZE_MAX_BLOCKS);
                let q = Out::from_slice(bytemuck::cast_slice_mut::<u32, i8>(q));
                // SAFETY: every view covers a live buffer of the size checked above.
                unsafe { E::quantize(cfg, x, q, Out::from_slice(s), Out::from_slice(u), r, c, kp) }
                    .map_err(emu_err(kernel, &shape))
            }
            (Device::Cuda(g), Buffer::Cuda(x), Buffer::Cuda(q), Buffer::Cuda(s), Buffer::Cuda(u)) => {
                let cfg = facts::quantize_geometry(rows, QUANTIZE_MAX_BLOCKS);
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(x).arg(q).arg(s).arg(u).arg(&r).arg(&c).arg(&kp);
                // SAFETY: arguments match the quantizer's signature; lengths checked above.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// The ternary linear layer `y = dequantize(x · wᵀ)`, with the kernel
    /// chosen by [`uses_gemv`]: what a model calls.
    pub fn ternary_linear<O: OutputElem + EmuVariant>(
        &self,
        x: &QuantizedBuffer,
        w: &TernaryBuffer,
        y: &mut Buffer<O>,
    ) -> KernelResult<()> {
        if uses_gemv(x.rows) { self.ternary_gemv(x, w, y) } else { self.ternary_gemm(x, w, y) }
    }

    /// Several ternary linears over the same activations (q, k, v; gate,
    /// up): `ys[i] = dequantize(x · ws[i]ᵀ)`. On the CPU one parallel pass
    /// over the rows of all of them, the activations prepared once; on the
    /// other backends, for decode (`M ≤ 8`) and two or three matrices, one
    /// launch of the grouped GEMV (`ternary_gemv_many_*`), else one
    /// [`Device::ternary_linear`] each.
    pub fn ternary_linears<O: OutputElem + EmuVariant>(
        &self,
        x: &QuantizedBuffer,
        ws: &[&TernaryBuffer],
        ys: &mut [Buffer<O>],
    ) -> KernelResult<()> {
        if ws.len() != ys.len() {
            let reason = format!("{} weight matrices for {} outputs", ws.len(), ys.len());
            return Err(shape_err("ternary_linears", &format!("{} rows", x.rows))(reason));
        }
        let Device::Cpu = self else {
            if uses_gemv(x.rows) && (2..=3).contains(&ws.len()) {
                return self.ternary_gemv_many(x, ws, ys);
            }
            return ws.iter().zip(ys.iter_mut()).try_for_each(|(w, y)| self.ternary_linear(x, w, y));
        };
        let (kernel, max_m) = if uses_gemv(x.rows) { (O::GEMV, GEMV_MAX_M) } else { (O::GEMM, usize::MAX) };
        for (w, y) in ws.iter().zip(ys.iter()) {
            ternary_check(kernel, max_m, x, w, y.len())?;
        }
        self.cpu_ternary(kernel, x, ws, ys)
    }

    /// The CPU arm of the ternary matmuls (shapes checked by the caller): one pass over every matrix.
    fn cpu_ternary<O: OutputElem>(
        &self,
        kernel: &'static str,
        x: &QuantizedBuffer,
        ws: &[&TernaryBuffer],
        ys: &mut [Buffer<O>],
    ) -> KernelResult<()> {
        let (Buffer::Host(xw), Buffer::Host(xs), Buffer::Host(xu)) = (&x.words, &x.scales, &x.sums) else {
            return Err(self.wrong_place(kernel, "a buffer of another device"));
        };
        let xr =
            crate::matmul::QuantizedRef { rows: x.rows, cols: x.cols, k_pad: x.k_pad, words: xw, scales: xs, sums: xu };
        let mut wrs = Vec::with_capacity(ws.len());
        for w in ws {
            let Buffer::Host(ww) = &w.words else { return Err(self.wrong_place(kernel, "a buffer of another device")) };
            wrs.push(crate::ternary::TernaryRef { rows: w.rows, cols: w.cols, scale: w.scale, words: ww });
        }
        let mut outs = Vec::with_capacity(ys.len());
        for y in ys.iter_mut() {
            let Buffer::Host(y) = y else { return Err(self.wrong_place(kernel, "a buffer of another device")) };
            outs.push(&mut y[..]);
        }
        crate::cpu_ternary::ternary_matmul_many_into(xr, &wrs, &mut outs);
        Ok(())
    }

    /// The grouped decode kernel (`ternary_gemv_many_f32` / `_f16` by `O`):
    /// `M ≤ 8` rows against one to three matrices of the same K in one launch.
    pub fn ternary_gemv_many<O: OutputElem + EmuVariant>(
        &self,
        x: &QuantizedBuffer,
        ws: &[&TernaryBuffer],
        ys: &mut [Buffer<O>],
    ) -> KernelResult<()> {
        let kernel = O::GEMV_MANY;
        let rows: Vec<String> = ws.iter().map(|w| w.rows.to_string()).collect();
        let shape = format!("{}×({})×{}", x.rows, rows.join("+"), x.cols);
        let err = |reason| shape_err(kernel, &shape)(reason);
        if ws.is_empty() || ws.len() > 3 || ws.len() != ys.len() {
            return Err(err(format!("{} weight matrices for {} outputs (1 to 3 needed)", ws.len(), ys.len())));
        }
        for (w, y) in ws.iter().zip(ys.iter()) {
            ternary_check(kernel, GEMV_MAX_M, x, w, y.len())?;
        }
        if matches!(self, Device::Cpu) {
            return self.cpu_ternary(kernel, x, ws, ys);
        }
        let mut n = [0usize; 3];
        let mut scales = [0f32; 3];
        for (i, w) in ws.iter().enumerate() {
            (n[i], scales[i]) = (w.rows, w.scale);
        }
        let cfg = facts::gemv_many_geometry(x.rows, n, x.k_pad);
        check_shared(&cfg, self.shared_limit()).map_err(err)?;
        let (nu, mk) = (n.map(|v| v as u32), [x.rows as u32, x.k_pad as u32]);
        match (self, &x.words, &x.scales, &x.sums) {
            (Device::Emu, Buffer::Host(xw), Buffer::Host(xs), Buffer::Host(xu)) => {
                let mut wv: [In<u32>; 3] = [In::from_slice(&[]); 3];
                for (i, w) in ws.iter().enumerate() {
                    let Buffer::Host(ww) = &w.words else { return Err(self.wrong_place(kernel, w.words.location())) };
                    wv[i] = In::from_slice(ww);
                }
                let mut yv: [&mut [O]; 3] = [&mut [], &mut [], &mut []];
                for (slot, y) in yv.iter_mut().zip(ys.iter_mut()) {
                    let Buffer::Host(y) = y else { return Err(self.wrong_place(kernel, "a buffer of another device")) };
                    *slot = &mut y[..];
                }
                let xv = (In::from_slice(xw), In::from_slice(xs), In::from_slice(xu));
                // SAFETY: every view covers a live buffer of the length checked above
                // (the unused matrices' empty, with 0 rows); the geometry is the kernel's own.
                unsafe { O::gemv_many(cfg, xv, wv, scales, yv, nu, mk) }.map_err(emu_err(kernel, &shape))
            }
            (Device::Cuda(g), Buffer::Cuda(xw), Buffer::Cuda(xs), Buffer::Cuda(xu)) => {
                let mut wv = Vec::with_capacity(3);
                for w in ws {
                    let Buffer::Cuda(ww) = &w.words else { return Err(self.wrong_place(kernel, w.words.location())) };
                    wv.push(ww);
                }
                let mut yv = Vec::with_capacity(3);
                for y in ys.iter_mut() {
                    let Buffer::Cuda(y) = y else { return Err(self.wrong_place(kernel, "a buffer of another device")) };
                    yv.push(y);
                }
                // An unused matrix's pointers are never read (its row count is 0): null.
                let null = 0u64;
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(xw).arg(xs).arg(xu);
                for w in &wv {
                    l.arg(*w);
                }
                for _ in wv.len()..3 {
                    l.arg(&null);
                }
                for s in &scales {
                    l.arg(s);
                }
                for y in yv.iter_mut() {
                    l.arg(&mut **y);
                }
                for _ in ws.len()..3 {
                    l.arg(&null);
                }
                for v in nu.iter().chain(&mk) {
                    l.arg(v);
                }
                // SAFETY: arguments match `ternary_gemv_many_*` (three weight pointers, three
                // scales, three outputs, three row counts, m, k_pad; the unused ones null with
                // 0 rows); lengths and the shared-memory opt-in checked above.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// The decode kernel (`ternary_gemv_f32` / `_f16` by `O`): `M ≤ 8` rows.
    pub fn ternary_gemv<O: OutputElem + EmuVariant>(
        &self,
        x: &QuantizedBuffer,
        w: &TernaryBuffer,
        y: &mut Buffer<O>,
    ) -> KernelResult<()> {
        let kernel = O::GEMV;
        let cfg = facts::gemv_geometry(x.rows, w.rows, x.k_pad);
        self.ternary(kernel, GEMV_MAX_M, cfg, x, w, y, true)
    }

    /// The prefill kernel (`ternary_gemm_f32` / `_f16` by `O`; tensor cores on the GPU): any M.
    pub fn ternary_gemm<O: OutputElem + EmuVariant>(
        &self,
        x: &QuantizedBuffer,
        w: &TernaryBuffer,
        y: &mut Buffer<O>,
    ) -> KernelResult<()> {
        let kernel = O::GEMM;
        let cfg = facts::gemm_geometry(x.rows, w.rows);
        self.ternary(kernel, usize::MAX, cfg, x, w, y, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn ternary<O: OutputElem + EmuVariant>(
        &self,
        kernel: &'static str,
        max_m: usize,
        cfg: LaunchConfig,
        x: &QuantizedBuffer,
        w: &TernaryBuffer,
        y: &mut Buffer<O>,
        gemv: bool,
    ) -> KernelResult<()> {
        let (m, n) = (x.rows, w.rows);
        let shape = format!("{m}×{n}×{}", w.cols);
        let err = |reason| shape_err(kernel, &shape)(reason);
        ternary_check(kernel, max_m, x, w, y.len())?;
        if matches!(self, Device::Cpu) {
            return self.cpu_ternary(kernel, x, &[w], std::slice::from_mut(y));
        }
        check_shared(&cfg, self.shared_limit()).map_err(err)?;
        let (mu, nu, kp) = (m as u32, n as u32, x.k_pad as u32);
        match (self, &x.words, &x.scales, &x.sums, &w.words, y) {
            (Device::Emu, Buffer::Host(xw), Buffer::Host(xs), Buffer::Host(xu), Buffer::Host(ww), Buffer::Host(y)) => {
                let (xw, xs, xu, ww) = (In::from_slice(xw), In::from_slice(xs), In::from_slice(xu), In::from_slice(ww));
                // SAFETY: every view covers a live buffer of the length checked above; the geometry is the kernel's own.
                let r = unsafe {
                    if gemv {
                        O::gemv(cfg, (xw, xs, xu), ww, w.scale, y, [mu, nu, kp])
                    } else {
                        O::gemm(cfg, (xw, xs), ww, w.scale, y, [mu, nu, kp])
                    }
                };
                r.map_err(emu_err(kernel, &shape))
            }
            (
                Device::Cuda(g),
                Buffer::Cuda(xw),
                Buffer::Cuda(xs),
                Buffer::Cuda(xu),
                Buffer::Cuda(ww),
                Buffer::Cuda(y),
            ) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(xw).arg(xs);
                if gemv {
                    l.arg(xu);
                }
                l.arg(ww).arg(&w.scale).arg(y).arg(&mu).arg(&nu).arg(&kp);
                // SAFETY: arguments match the kernel's signature (the GEMM takes no sums);
                // lengths and the shared-memory opt-in were checked above.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// `sgemm`: FP32 `C = A · Bᵀ` (A: m×k, B: n×k, C: m×n, row-major).
    #[allow(clippy::too_many_arguments)]
    pub fn sgemm(
        &self,
        a: &Buffer<f32>,
        b: &Buffer<f32>,
        c: &mut Buffer<f32>,
        m: usize,
        n: usize,
        k: usize,
    ) -> KernelResult<()> {
        let kernel = kernels::sgemm::NAME;
        let shape = format!("{m}×{n}×{k}");
        sgemm_check(m, n, k, a.len(), b.len(), c.len()).map_err(shape_err(kernel, &shape))?;
        let cfg = sgemm_geometry(m, n);
        let (mu, nu, ku) = (m as u32, n as u32, k as u32);
        match (self, a, b, c) {
            (Device::Cpu, Buffer::Host(a), Buffer::Host(b), Buffer::Host(c)) => {
                crate::cpu::sgemm(a, b, c, m, n, k);
                Ok(())
            }
            (Device::Emu, Buffer::Host(a), Buffer::Host(b), Buffer::Host(c)) => {
                let (a, b, c) = (In::from_slice(a), In::from_slice(b), Out::from_slice(c));
                // SAFETY: the views cover live buffers of the lengths checked above.
                unsafe { kernels::sgemm::launch(cfg, a, b, c, mu, nu, ku) }.map_err(emu_err(kernel, &shape))
            }
            (Device::Cuda(g), Buffer::Cuda(a), Buffer::Cuda(b), Buffer::Cuda(c)) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(a).arg(b).arg(c).arg(&mu).arg(&nu).arg(&ku);
                // SAFETY: arguments match `sgemm`; lengths checked above.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// `head_gemv_f16`: `C = A · Bᵀ` with f32 A (m×k) and an f16 B (n rows of
    /// [`kernels_gpu::head::head_row_len`]`(k)`, zeros past k), C m×n: the logits of a 16-bit
    /// lm_head. Each logit is one fixed-order dot product, whatever `m`.
    #[allow(clippy::too_many_arguments)]
    pub fn head_gemm_f16(
        &self,
        a: &Buffer<f32>,
        b: &Buffer<f16>,
        c: &mut Buffer<f32>,
        m: usize,
        n: usize,
        k: usize,
    ) -> KernelResult<()> {
        let kernel = kernels::head_gemv_f16::NAME;
        let shape = format!("{m}×{n}×{k}");
        head_check(m, n, k, a.len(), b.len(), c.len(), None).map_err(shape_err(kernel, &shape))?;
        let cfg = head_gemv_geometry(n);
        let (mu, nu, ku) = (m as u32, n as u32, k as u32);
        match (self, a, b, c) {
            (Device::Cpu, Buffer::Host(a), Buffer::Host(b), Buffer::Host(c)) => {
                crate::cpu::head_gemm(a, crate::cpu::HeadWeights::F16(b), c, m, n, k);
                Ok(())
            }
            (Device::Emu, Buffer::Host(a), Buffer::Host(b), Buffer::Host(c)) => {
                let w = bytemuck::try_cast_slice::<f16, u32>(b)
                    .map_err(|e| shape_err(kernel, &shape)(format!("head weights not word-aligned: {e}")))?;
                let w = In::from_slice(w);
                let (a, c) = (In::from_slice(a), Out::from_slice(c));
                // SAFETY: the views cover live buffers of the lengths checked
                // above (`b` holds whole padded rows, an even number of halves).
                unsafe { kernels::head_gemv_f16::launch(cfg, a, w, In::from_slice(&[]), c, mu, nu, ku) }
                    .map_err(emu_err(kernel, &shape))
            }
            (Device::Cuda(g), Buffer::Cuda(a), Buffer::Cuda(b), Buffer::Cuda(c)) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                // `a` stands in for the unused scales pointer.
                l.arg(a).arg(b).arg(a).arg(c).arg(&mu).arg(&nu).arg(&ku);
                // SAFETY: arguments match `head_gemv_f16` (f16 rows read as
                // words; device allocations are 256-byte aligned); lengths checked above.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// `head_gemv_i8`: `C = A · (diag(scales) · B)ᵀ` with f32 A (m×k), an
    /// int8 B (n rows of [`kernels_gpu::head::head_row_len`]`(k)`, zeros past k) and one scale
    /// per row of B: the logits of an int8 lm_head.
    #[allow(clippy::too_many_arguments)]
    pub fn head_gemm_i8(
        &self,
        a: &Buffer<f32>,
        b: &Buffer<i8>,
        scales: &Buffer<f32>,
        c: &mut Buffer<f32>,
        m: usize,
        n: usize,
        k: usize,
    ) -> KernelResult<()> {
        let kernel = kernels::head_gemv_i8::NAME;
        let shape = format!("{m}×{n}×{k}");
        head_check(m, n, k, a.len(), b.len(), c.len(), Some(scales.len())).map_err(shape_err(kernel, &shape))?;
        let cfg = head_gemv_geometry(n);
        let (mu, nu, ku) = (m as u32, n as u32, k as u32);
        match (self, a, b, scales, c) {
            (Device::Cpu, Buffer::Host(a), Buffer::Host(values), Buffer::Host(scales), Buffer::Host(c)) => {
                crate::cpu::head_gemm(a, crate::cpu::HeadWeights::Int8 { values, scales }, c, m, n, k);
                Ok(())
            }
            (Device::Emu, Buffer::Host(a), Buffer::Host(b), Buffer::Host(s), Buffer::Host(c)) => {
                let w = bytemuck::try_cast_slice::<i8, u32>(b)
                    .map_err(|e| shape_err(kernel, &shape)(format!("head weights not word-aligned: {e}")))?;
                let w = In::from_slice(w);
                let (a, s, c) = (In::from_slice(a), In::from_slice(s), Out::from_slice(c));
                // SAFETY: the views cover live buffers of the lengths checked
                // above (`b` holds whole padded rows, a multiple of 16 bytes).
                unsafe { kernels::head_gemv_i8::launch(cfg, a, w, s, c, mu, nu, ku) }.map_err(emu_err(kernel, &shape))
            }
            (Device::Cuda(g), Buffer::Cuda(a), Buffer::Cuda(b), Buffer::Cuda(s), Buffer::Cuda(c)) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(a).arg(b).arg(s).arg(c).arg(&mu).arg(&nu).arg(&ku);
                // SAFETY: arguments match `head_gemv_i8` (int8 rows read as
                // words; device allocations are 256-byte aligned); lengths checked above.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// `convert_f32_to_f16`: `out[i] = f16(x[i])`, rounded to nearest even.
    pub fn convert_f32_to_f16(&self, x: &Buffer<f32>, out: &mut Buffer<f16>) -> KernelResult<()> {
        let kernel = kernels::convert_f32_to_f16::NAME;
        let n = x.len();
        let shape = format!("{n} elements");
        kernels_gpu::launch::check_len("out", out.len(), n).map_err(shape_err(kernel, &shape))?;
        let cfg = kernels::elementwise_geometry(n);
        let nu = n as u32;
        match (self, x, out) {
            (Device::Cpu, Buffer::Host(x), Buffer::Host(o)) => {
                o.iter_mut().zip(x.iter()).for_each(|(o, &v)| *o = f16::from_f32(v));
                Ok(())
            }
            (Device::Emu, Buffer::Host(x), Buffer::Host(o)) => {
                let o = Out::from_slice(bytemuck::cast_slice_mut::<f16, u16>(o));
                // SAFETY: the views cover live buffers of `n` elements.
                unsafe { kernels::convert_f32_to_f16::launch(cfg, In::from_slice(x), o, nu) }
                    .map_err(emu_err(kernel, &shape))
            }
            (Device::Cuda(g), Buffer::Cuda(x), Buffer::Cuda(o)) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(x).arg(o).arg(&nu);
                // SAFETY: arguments match `convert_f32_to_f16` (f16 is its u16 bits); lengths checked above.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// Dense 16-bit linears over shared activations: `x` (`m × k`, f32) is
    /// rounded to f16 once into `x_f16`, then `ys[i] = x_f16 · weights[i]ᵀ` with
    /// f32 accumulation and f32 outputs. The cuBLAS FP16 baseline a ternary
    /// model is measured against: on cuda `convert_f32_to_f16` and one cuBLAS
    /// `GemmEx` per matrix; on cpu and emu the same sums through the f16 lm_head
    /// GEMV (`head_gemv_f16`) over the rounded activations.
    pub fn dense_f16_linears(
        &self,
        x: &Buffer<f32>,
        x_f16: &mut Buffer<f16>,
        weights: &[&crate::F16Weights],
        ys: &mut [Buffer<f32>],
    ) -> KernelResult<()> {
        let kernel = "dense_f16_linears";
        let Some(first) = weights.first() else { return Ok(()) };
        let k = first.cols;
        let m = x.len().checked_div(k).unwrap_or(0);
        let shape = format!("{m}×{k}, {} matrices", weights.len());
        let err = shape_err(kernel, &shape);
        if k == 0 || x.len() != m * k || x_f16.len() != x.len() {
            return Err(err(format!("{} activations and {} halves for K = {k}", x.len(), x_f16.len())));
        }
        if weights.len() != ys.len() {
            return Err(err(format!("{} matrices but {} outputs", weights.len(), ys.len())));
        }
        let ld = kernels_gpu::head::head_row_len(k);
        for (i, (w, y)) in weights.iter().zip(ys.iter()).enumerate() {
            if w.cols != k || w.values.len() != w.rows * ld || y.len() != m * w.rows {
                return Err(err(format!(
                    "matrix {i}: {}×{} in {} halves (rows {ld} apart), output of {} for {m} rows",
                    w.rows,
                    w.cols,
                    w.values.len(),
                    y.len()
                )));
            }
        }
        self.convert_f32_to_f16(x, x_f16)?;
        match self {
            Device::Cuda(g) => {
                let Buffer::Cuda(a) = &*x_f16 else { return Err(self.wrong_place(kernel, "host memory")) };
                for (w, y) in weights.iter().zip(ys.iter_mut()) {
                    let (Buffer::Cuda(wv), Buffer::Cuda(yv)) = (&w.values, y) else {
                        return Err(self.wrong_place(kernel, "host memory"));
                    };
                    g.gemm_f16_f32(a, wv, ld, yv, m, w.rows, k)?;
                }
                Ok(())
            }
            _ => {
                let Buffer::Host(h) = &*x_f16 else { return Err(self.wrong_place(kernel, "device memory")) };
                let mut rounded = HostMemory::zeroed(h.len());
                rounded.iter_mut().zip(h.iter()).for_each(|(r, v)| *r = v.to_f32());
                let rounded = Buffer::Host(rounded);
                for (w, y) in weights.iter().zip(ys.iter_mut()) {
                    self.head_gemm_f16(&rounded, &w.values, y, m, w.rows, k)?;
                }
                Ok(())
            }
        }
    }

    /// `trihash_batch`: Curl-P-81 of `messages.len() / 243` one-block messages.
    pub fn trihash_batch(&self, messages: &Buffer<i8>, digests: &mut Buffer<i8>) -> KernelResult<()> {
        let kernel = kernels::trihash_batch::NAME;
        let count = messages.len() / curl::HASH_TRITS;
        let shape = format!("{count} messages");
        curl::trihash_batch_check(messages.len(), digests.len()).map_err(shape_err(kernel, &shape))?;
        let batches = count.div_ceil(LANES_PER_BATCH) as u64;
        let n = count as u32;
        match (self, messages, digests) {
            (Device::Cpu, Buffer::Host(msg), Buffer::Host(out)) => {
                out.copy_from_slice(&crate::trihash::sliced::hash_batch(msg));
                Ok(())
            }
            (Device::Emu, Buffer::Host(msg), Buffer::Host(out)) => {
                let cfg = curl::trihash_geometry(batches, EMU_TRIHASH_BLOCKS);
                // SAFETY: the views cover live buffers of `count · 243` trits.
                unsafe { kernels::trihash_batch::launch(cfg, In::from_slice(msg), Out::from_slice(out), n) }
                    .map_err(emu_err(kernel, &shape))
            }
            (Device::Cuda(g), Buffer::Cuda(msg), Buffer::Cuda(out)) => {
                let cfg = curl::trihash_geometry(batches, g.trihash_blocks());
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(msg).arg(out).arg(&n);
                // SAFETY: arguments match `trihash_batch`; both buffers hold count · 243 trits.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// `trihash_pow`: tries nonce indices `first_batch·128 .. (first_batch +
    /// batches)·128` from the 729-trit `base`; `hits[0]` (zero on entry) counts
    /// the nonces whose hash ends in `mwm` zero trits, `hits[1..]` records their
    /// offsets from `first_batch·128` (as many as fit, in no order).
    pub fn trihash_pow(
        &self,
        base: &Buffer<i8>,
        first_batch: u64,
        batches: u64,
        mwm: usize,
        hits: &mut Buffer<u32>,
    ) -> KernelResult<()> {
        let kernel = kernels::trihash_pow::NAME;
        let shape = format!("{batches} batches from {first_batch}, mwm {mwm}");
        let err = |reason| shape_err(kernel, &shape)(reason);
        curl::trihash_pow_check(batches, mwm).map_err(err)?;
        kernels_gpu::launch::check_len("base state", base.len(), curl::STATE_TRITS).map_err(err)?;
        if hits.is_empty() {
            return Err(err("empty hit buffer".into()));
        }
        let (nb, mw, capacity) = (batches as u32, mwm as u32, hits.len() as u32 - 1);
        match (self, base, hits) {
            (Device::Cpu, Buffer::Host(base), Buffer::Host(hits)) => {
                let base: &[i8; 729] = base[..].try_into().expect("length checked above");
                let found = crate::trihash::sliced::search(base, first_batch, batches, mwm);
                hits[0] = found.len() as u32;
                let offsets = found.iter().map(|&v| (v - first_batch * LANES_PER_BATCH as u64) as u32);
                for (slot, o) in hits[1..].iter_mut().zip(offsets) {
                    *slot = o;
                }
                Ok(())
            }
            (Device::Emu, Buffer::Host(base), Buffer::Host(hits)) => {
                let cfg = curl::trihash_geometry(batches, EMU_TRIHASH_BLOCKS);
                let (b, h) = (In::from_slice(base), Out::from_slice(hits));
                // SAFETY: `base` has 729 trits, `hits` 1 + capacity words.
                unsafe { kernels::trihash_pow::launch(cfg, b, first_batch, nb, mw, h, capacity) }
                    .map_err(emu_err(kernel, &shape))
            }
            (Device::Cuda(g), Buffer::Cuda(base), Buffer::Cuda(hits)) => {
                let cfg = curl::trihash_geometry(batches, g.trihash_blocks());
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(base).arg(&first_batch).arg(&nb).arg(&mw).arg(hits).arg(&capacity);
                // SAFETY: arguments match `trihash_pow`; `base` has 729 trits,
                // `hits` 1 + capacity words, and the geometry supplies the shared memory.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }
}

/// The float ops of a transformer layer (`f32` activations).
impl Device {
    /// `rms_norm_f32`: `y = w · x / sqrt(mean(x²) + eps)` per row of `x` (`rows × w.len()`).
    pub fn rms_norm(&self, x: &Buffer<f32>, w: &Buffer<f32>, y: &mut Buffer<f32>, eps: f32) -> KernelResult<()> {
        let kernel = kernels::rms_norm_f32::NAME;
        let cols = w.len();
        let rows = x.len() / cols.max(1);
        let shape = format!("{rows}×{cols}");
        kernels::rms_norm_check(rows, cols, x.len(), w.len(), y.len()).map_err(shape_err(kernel, &shape))?;
        let cfg = kernels::rms_norm_geometry(rows, QUANTIZE_MAX_BLOCKS);
        let (r, c) = (rows as u32, cols as u32);
        match (self, x, w, y) {
            (Device::Cpu, Buffer::Host(x), Buffer::Host(w), Buffer::Host(y)) => {
                y.copy_from_slice(x);
                crate::cpu::rms_norm(y, w, eps);
                Ok(())
            }
            (Device::Emu, Buffer::Host(x), Buffer::Host(w), Buffer::Host(y)) => {
                let (x, w, y) = (In::from_slice(x), In::from_slice(w), Out::from_slice(y));
                // SAFETY: the views cover live buffers of the lengths checked above.
                unsafe { kernels::rms_norm_f32::launch(cfg, x, w, y, r, c, eps) }.map_err(emu_err(kernel, &shape))
            }
            (Device::Cuda(g), Buffer::Cuda(x), Buffer::Cuda(w), Buffer::Cuda(y)) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(x).arg(w).arg(y).arg(&r).arg(&c).arg(&eps);
                // SAFETY: arguments match `rms_norm_f32`; lengths checked above.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// `rms_norm_quantize_f32`: RMSNorm of `x` (`out.rows × w.len()`) with
    /// weight `w`, quantized per row to int8 into `out` without the
    /// normalized rows ever being stored: the same values as [`Device::rms_norm`]
    /// followed by [`Device::quantize`] on the same backend, in one pass.
    pub fn rms_norm_quantize(
        &self,
        x: &Buffer<f32>,
        w: &Buffer<f32>,
        eps: f32,
        out: &mut QuantizedBuffer,
    ) -> KernelResult<()> {
        let kernel = kernels::rms_norm_quantize_f32::NAME;
        let (rows, cols, k_pad) = (out.rows, out.cols, out.k_pad);
        let shape = format!("{rows}×{cols}");
        let err = shape_err(kernel, &shape);
        if w.len() != cols {
            return Err(err(format!("a norm weight of {} values for rows of {cols}", w.len())));
        }
        quantized_out_check(kernel, x.len(), out)?;
        let cfg = kernels::rms_norm_quantize_geometry(rows, QUANTIZE_MAX_BLOCKS);
        let (r, c, kp) = (rows as u32, cols as u32, k_pad as u32);
        match (self, x, w, &mut out.words, &mut out.scales, &mut out.sums) {
            (Device::Cpu, Buffer::Host(x), Buffer::Host(w), Buffer::Host(q), Buffer::Host(s), Buffer::Host(u)) => {
                crate::cpu::rms_norm_quantize(x, w, eps, k_pad, q, s, u);
                Ok(())
            }
            (Device::Emu, Buffer::Host(x), Buffer::Host(w), Buffer::Host(q), Buffer::Host(s), Buffer::Host(u)) => {
                let (x, w) = (In::from_slice(x), In::from_slice(w));
                let q = Out::from_slice(bytemuck::cast_slice_mut::<u32, i8>(q));
                let (s, u) = (Out::from_slice(s), Out::from_slice(u));
                // SAFETY: every view covers a live buffer of the size checked above.
                unsafe { kernels::rms_norm_quantize_f32::launch(cfg, x, w, q, s, u, r, c, kp, eps) }
                    .map_err(emu_err(kernel, &shape))
            }
            (Device::Cuda(g), Buffer::Cuda(x), Buffer::Cuda(w), Buffer::Cuda(q), Buffer::Cuda(s), Buffer::Cuda(u)) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(x).arg(w).arg(q).arg(s).arg(u).arg(&r).arg(&c).arg(&kp).arg(&eps);
                // SAFETY: arguments match `rms_norm_quantize_f32`'s signature; lengths checked above.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// `add_rms_norm_quantize_f32`: `x ← x + delta`, then [`Device::rms_norm_quantize`]
    /// of the new `x` into `out` (the end of a BitNet sublayer and the norm in
    /// front of the next linear), in one launch on the GPU backends: the same
    /// values as [`Device::add`] followed by [`Device::rms_norm_quantize`].
    pub fn add_rms_norm_quantize(
        &self,
        x: &mut Buffer<f32>,
        delta: &Buffer<f32>,
        w: &Buffer<f32>,
        eps: f32,
        out: &mut QuantizedBuffer,
    ) -> KernelResult<()> {
        self.fused_rms_norm_quantize(PreNorm::Add, x, delta, w, eps, out)
    }

    /// `gated_rms_norm_quantize_f32`: [`Device::gated`] (`gate ← act(gate) ·
    /// up`), then [`Device::rms_norm_quantize`] of the new `gate` into `out`
    /// (the MLP's activation and the sub-norm in front of down_proj), in one
    /// launch on the GPU backends: the same values as the two ops.
    pub fn gated_rms_norm_quantize(
        &self,
        gate: &mut Buffer<f32>,
        up: &Buffer<f32>,
        act: u32,
        w: &Buffer<f32>,
        eps: f32,
        out: &mut QuantizedBuffer,
    ) -> KernelResult<()> {
        self.fused_rms_norm_quantize(PreNorm::Gated(act), gate, up, w, eps, out)
    }

    /// The two kernels that update `x` with `other` (`pre`) and then norm and
    /// quantize it, as [`Device::rms_norm_quantize`].
    fn fused_rms_norm_quantize(
        &self,
        pre: PreNorm,
        x: &mut Buffer<f32>,
        other: &Buffer<f32>,
        w: &Buffer<f32>,
        eps: f32,
        out: &mut QuantizedBuffer,
    ) -> KernelResult<()> {
        let (kernel, other_name, act) = match pre {
            PreNorm::Add => (kernels::add_rms_norm_quantize_f32::NAME, "delta", 0),
            PreNorm::Gated(act) => (kernels::gated_rms_norm_quantize_f32::NAME, "up", act),
        };
        let (rows, cols, k_pad) = (out.rows, out.cols, out.k_pad);
        let shape = format!("{rows}×{cols}");
        let err = shape_err(kernel, &shape);
        if w.len() != cols {
            return Err(err(format!("a norm weight of {} values for rows of {cols}", w.len())));
        }
        if matches!(pre, PreNorm::Gated(_)) && act != kernels::ACT_RELU2 && act != kernels::ACT_SILU {
            return Err(err(format!("unknown activation {act}")));
        }
        quantized_out_check(kernel, x.len(), out)?;
        kernels_gpu::launch::check_len(other_name, other.len(), x.len()).map_err(shape_err(kernel, &shape))?;
        let outs = (&mut out.words, &mut out.scales, &mut out.sums);
        if let (
            Device::Cpu,
            Buffer::Host(xh),
            Buffer::Host(o),
            Buffer::Host(w),
            (Buffer::Host(q), Buffer::Host(s), Buffer::Host(u)),
        ) = (self, &mut *x, other, w, outs)
        {
            let update = match pre {
                PreNorm::Add => crate::cpu::RowUpdate::Add(o),
                PreNorm::Gated(act) => crate::cpu::RowUpdate::Gated(o, act),
            };
            crate::cpu::update_rms_norm_quantize(update, xh, w, eps, k_pad, q, s, u);
            return Ok(());
        }
        let cfg = kernels::rms_norm_quantize_geometry(rows, QUANTIZE_MAX_BLOCKS);
        let (r, c, kp) = (rows as u32, cols as u32, k_pad as u32);
        match (self, x, other, w, &mut out.words, &mut out.scales, &mut out.sums) {
            (
                Device::Emu,
                Buffer::Host(x),
                Buffer::Host(o),
                Buffer::Host(w),
                Buffer::Host(q),
                Buffer::Host(s),
                Buffer::Host(u),
            ) => {
                let (x, o, w) = (Out::from_slice(x), In::from_slice(o), In::from_slice(w));
                let q = Out::from_slice(bytemuck::cast_slice_mut::<u32, i8>(q));
                let (s, u) = (Out::from_slice(s), Out::from_slice(u));
                // SAFETY: every view covers a live buffer of the size checked above; `x` and
                // `other` are distinct buffers (one borrowed mutably); `act` checked above.
                unsafe {
                    match pre {
                        PreNorm::Add => {
                            kernels::add_rms_norm_quantize_f32::launch(cfg, x, o, w, q, s, u, r, c, kp, eps)
                        }
                        PreNorm::Gated(act) => {
                            kernels::gated_rms_norm_quantize_f32::launch(cfg, x, o, w, q, s, u, r, c, kp, eps, act)
                        }
                    }
                }
                .map_err(emu_err(kernel, &shape))
            }
            (
                Device::Cuda(g),
                Buffer::Cuda(x),
                Buffer::Cuda(o),
                Buffer::Cuda(w),
                Buffer::Cuda(q),
                Buffer::Cuda(s),
                Buffer::Cuda(u),
            ) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(x).arg(o).arg(w).arg(q).arg(s).arg(u).arg(&r).arg(&c).arg(&kp).arg(&eps);
                if matches!(pre, PreNorm::Gated(_)) {
                    l.arg(&act);
                }
                // SAFETY: arguments match the kernel's signature (the gated one takes `act`
                // last); lengths and `act` checked above; `x` and `other` do not alias.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// `rope_kv_write_f32`: [`Device::rope`] on `q` (`heads`) and `k`
    /// (`kv_heads`), then [`Device::kv_write`] of `k` into `k_cache` and of
    /// `v` into `v_cache`, in one launch on the GPU backends (the same values
    /// as those four ops: the step between a layer's q / k / v and its attention).
    #[allow(clippy::too_many_arguments)]
    pub fn rope_kv_write(
        &self,
        q: &mut Buffer<f32>,
        k: &mut Buffer<f32>,
        v: &Buffer<f32>,
        k_cache: &mut Buffer<f32>,
        v_cache: &mut Buffer<f32>,
        cos: &Buffer<f32>,
        sin: &Buffer<f32>,
        places: &RowPlaces,
        [heads, kv_heads, head_dim, context]: [usize; 4],
    ) -> KernelResult<()> {
        let kernel = kernels::rope_kv_write_f32::NAME;
        let rows = places.len();
        let shape = format!(
            "{rows} rows × {heads}/{kv_heads} heads × {head_dim} up to slot {} position {}, context {context}",
            places.max_slot, places.max_pos
        );
        let err = |reason: String| shape_err(kernel, &shape)(reason);
        let table = cos.len().min(sin.len());
        let (n, ms, mp) = (rows, places.max_slot, places.max_pos);
        kernels::rope_check(rows, heads, head_dim, n, mp, q.len(), table).map_err(|r| err(format!("queries: {r}")))?;
        kernels::rope_check(rows, kv_heads, head_dim, n, mp, k.len(), table).map_err(|r| err(format!("keys: {r}")))?;
        kernels_gpu::launch::check_len("values", v.len(), k.len()).map_err(err)?;
        kernels::kv_cache_check(rows, kv_heads, head_dim, context, n, ms, mp, k_cache.len()).map_err(err)?;
        kernels_gpu::launch::check_len("value cache", v_cache.len(), k_cache.len()).map_err(err)?;
        if matches!(self, Device::Cpu) {
            self.rope(q, cos, sin, places, heads, head_dim)?;
            self.rope(k, cos, sin, places, kv_heads, head_dim)?;
            self.kv_write(k, k_cache, places, kv_heads, head_dim, context)?;
            return self.kv_write(v, v_cache, places, kv_heads, head_dim, context);
        }
        let cfg = kernels::rope_kv_write_geometry(rows, heads, kv_heads, head_dim);
        let a = [rows, heads, kv_heads, head_dim, context].map(|v| v as u32);
        match (self, (q, k, v), (k_cache, v_cache), (cos, sin), (&places.slots, &places.positions)) {
            (
                Device::Emu,
                (Buffer::Host(q), Buffer::Host(k), Buffer::Host(v)),
                (Buffer::Host(kc), Buffer::Host(vc)),
                (Buffer::Host(c), Buffer::Host(s)),
                (Buffer::Host(sl), Buffer::Host(p)),
            ) => {
                let (q, k, v) = (Out::from_slice(q), Out::from_slice(k), In::from_slice(v));
                let (kc, vc) = (Out::from_slice(kc), Out::from_slice(vc));
                let (c, s, sl, p) = (In::from_slice(c), In::from_slice(s), In::from_slice(sl), In::from_slice(p));
                // SAFETY: the views cover live, distinct buffers of the lengths checked above;
                // every row's slot and position lie inside the cache and the tables.
                unsafe {
                    kernels::rope_kv_write_f32::launch(cfg, q, k, v, kc, vc, c, s, sl, p, a[0], a[1], a[2], a[3], a[4])
                }
                .map_err(emu_err(kernel, &shape))
            }
            (
                Device::Cuda(g),
                (Buffer::Cuda(q), Buffer::Cuda(k), Buffer::Cuda(v)),
                (Buffer::Cuda(kc), Buffer::Cuda(vc)),
                (Buffer::Cuda(c), Buffer::Cuda(s)),
                (Buffer::Cuda(sl), Buffer::Cuda(p)),
            ) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(q).arg(k).arg(v).arg(kc).arg(vc).arg(c).arg(s).arg(sl).arg(p);
                for x in &a {
                    l.arg(x);
                }
                // SAFETY: arguments match `rope_kv_write_f32`; lengths, tables and places
                // checked above; the buffers are distinct (borrowed mutably or shared apart).
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// `rope_f32`: rotate-half RoPE in place on `x` (`rows × heads × head_dim`), each row at its place's position.
    pub fn rope(
        &self,
        x: &mut Buffer<f32>,
        cos: &Buffer<f32>,
        sin: &Buffer<f32>,
        places: &RowPlaces,
        heads: usize,
        head_dim: usize,
    ) -> KernelResult<()> {
        let kernel = kernels::rope_f32::NAME;
        let rows = x.len() / (heads * head_dim).max(1);
        let shape = format!("{rows}×{heads}×{head_dim} up to position {}", places.max_pos);
        let table = cos.len().min(sin.len());
        kernels::rope_check(rows, heads, head_dim, places.len(), places.max_pos, x.len(), table)
            .map_err(shape_err(kernel, &shape))?;
        let cfg = kernels::rope_geometry(rows, heads, head_dim);
        let (r, h, d) = (rows as u32, heads as u32, head_dim as u32);
        match (self, x, cos, sin, &places.positions) {
            (Device::Cpu, Buffer::Host(x), Buffer::Host(c), Buffer::Host(s), Buffer::Host(p)) => {
                crate::cpu::rope(x, heads, head_dim, p, c, s);
                Ok(())
            }
            (Device::Emu, Buffer::Host(x), Buffer::Host(c), Buffer::Host(s), Buffer::Host(p)) => {
                let (x, c, s, p) = (Out::from_slice(x), In::from_slice(c), In::from_slice(s), In::from_slice(p));
                // SAFETY: the views cover live buffers of the lengths checked above.
                unsafe { kernels::rope_f32::launch(cfg, x, c, s, p, r, h, d) }.map_err(emu_err(kernel, &shape))
            }
            (Device::Cuda(g), Buffer::Cuda(x), Buffer::Cuda(c), Buffer::Cuda(s), Buffer::Cuda(p)) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(x).arg(c).arg(s).arg(p).arg(&r).arg(&h).arg(&d);
                // SAFETY: arguments match `rope_f32`; lengths and the largest position checked above.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// `attention_f32`: causal attention of `q` (`rows × heads × head_dim`) against a
    /// layer's slotted KV cache (`slots × kv_heads × context × head_dim`); row `r`
    /// sees its slot's positions up to its own (written there before this call).
    ///
    /// On the GPU backends more than 16 rows (a prompt chunk) go to
    /// `attention_prefill_f32` (key / value tiles shared by 16 rows); few
    /// (row, head) pairs on a long context go to the split kernels
    /// (flash-decoding), whose partial results live in `scratch`: keep one per
    /// pass shape (a decode step's workspace) and it is sized once.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        q: &Buffer<f32>,
        k: &Buffer<f32>,
        v: &Buffer<f32>,
        out: &mut Buffer<f32>,
        places: &RowPlaces,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        context: usize,
        scratch: &mut AttentionScratch,
    ) -> KernelResult<()> {
        let kernel = kernels::attention_f32::NAME;
        let rows = q.len() / (heads * head_dim).max(1);
        let shape = format!(
            "{rows} rows up to position {}, {heads}/{kv_heads} heads × {head_dim}, context {context}",
            places.max_pos
        );
        let err = |reason| shape_err(kernel, &shape)(reason);
        kernels::attention_check(rows, heads, kv_heads, head_dim, q.len(), out.len()).map_err(err)?;
        if k.len() != v.len() {
            return Err(err(format!("key and value caches differ ({} and {} values)", k.len(), v.len())));
        }
        let (n, ms, mp) = (places.len(), places.max_slot, places.max_pos);
        kernels::kv_cache_check(rows, kv_heads, head_dim, context, n, ms, mp, k.len()).map_err(err)?;
        let scale = (head_dim as f32).powf(-0.5);
        let a = [rows, heads, kv_heads, head_dim, context].map(|v| v as u32);
        let prefill = kernels::attention_uses_prefill(rows, head_dim);
        if !matches!(self, Device::Cpu) && !prefill && kernels::attention_uses_split(rows, heads, places.max_pos) {
            return self.attention_split(q, k, v, out, places, a, scale, scratch, &shape);
        }
        // A prompt chunk: `attention_prefill_f32` (K/V tiles shared by 16 rows), same arguments.
        type EmuAttention = unsafe fn(
            LaunchConfig,
            In<f32>,
            In<f32>,
            In<f32>,
            Out<f32>,
            In<u32>,
            In<u32>,
            u32,
            u32,
            u32,
            u32,
            u32,
            f32,
        ) -> Result<(), EmuError>;
        let (kernel, cfg, emu_launch): (_, _, EmuAttention) = if prefill {
            let cfg = kernels::attention_prefill_geometry(rows, heads, head_dim);
            (kernels::attention_prefill_f32::NAME, cfg, kernels::attention_prefill_f32::launch)
        } else {
            (kernel, kernels::attention_geometry(rows, heads, context), kernels::attention_f32::launch)
        };
        if !matches!(self, Device::Cpu) {
            check_shared(&cfg, self.shared_limit()).map_err(|reason| shape_err(kernel, &shape)(reason))?;
        }
        match (self, q, k, v, out, (&places.slots, &places.positions)) {
            (
                Device::Cpu,
                Buffer::Host(q),
                Buffer::Host(k),
                Buffer::Host(v),
                Buffer::Host(o),
                (Buffer::Host(s), Buffer::Host(p)),
            ) => {
                crate::cpu::attention(q, k, v, o, s, p, heads, kv_heads, head_dim, context, scratch);
                Ok(())
            }
            (
                Device::Emu,
                Buffer::Host(q),
                Buffer::Host(k),
                Buffer::Host(v),
                Buffer::Host(o),
                (Buffer::Host(s), Buffer::Host(p)),
            ) => {
                let (q, k, v, o) = (In::from_slice(q), In::from_slice(k), In::from_slice(v), Out::from_slice(o));
                let (s, p) = (In::from_slice(s), In::from_slice(p));
                // SAFETY: the views cover live buffers of the lengths checked above, every
                // row's slot and position lie inside the cache; head_dim ≤ 256 where the
                // prefill kernel was chosen; the geometry is the chosen kernel's.
                unsafe { emu_launch(cfg, q, k, v, o, s, p, a[0], a[1], a[2], a[3], a[4], scale) }
                    .map_err(emu_err(kernel, &shape))
            }
            (
                Device::Cuda(g),
                Buffer::Cuda(q),
                Buffer::Cuda(k),
                Buffer::Cuda(v),
                Buffer::Cuda(o),
                (Buffer::Cuda(s), Buffer::Cuda(p)),
            ) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(q).arg(k).arg(v).arg(o).arg(s).arg(p);
                for x in &a {
                    l.arg(x);
                }
                l.arg(&scale);
                // SAFETY: arguments match `attention_f32` and `attention_prefill_f32` alike; lengths,
                // places, head_dim (for the prefill kernel) and the shared-memory limit checked above.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// Decode attention split across blocks (flash-decoding): `attention_split_f32`
    /// over chunks of positions, then `attention_combine_f32`; for few (row,
    /// head) pairs on a long context (`kernels::attention_uses_split`). The
    /// request is checked by [`Device::attention`]; `a` is `[rows, heads,
    /// kv_heads, head_dim, context]`.
    #[allow(clippy::too_many_arguments)]
    fn attention_split(
        &self,
        q: &Buffer<f32>,
        k: &Buffer<f32>,
        v: &Buffer<f32>,
        out: &mut Buffer<f32>,
        places: &RowPlaces,
        a: [u32; 5],
        scale: f32,
        scratch: &mut AttentionScratch,
        shape: &str,
    ) -> KernelResult<()> {
        let (kernel, combine) = (kernels::attention_split_f32::NAME, kernels::attention_combine_f32::NAME);
        let [rows, heads, _, head_dim, _] = a.map(|v| v as usize);
        let splits = kernels::attention_splits(places.max_pos);
        let pairs = rows * heads;
        // The kernels index the partials by (pair, chunk) alone, so a larger scratch serves as well.
        let part_o = self.scratch_buffer(&mut scratch.out, pairs * splits * head_dim)?;
        let part_ml = self.scratch_buffer(&mut scratch.max_sum, pairs * splits * 2)?;
        let cfg = kernels::attention_split_geometry(rows, heads, splits);
        let cfg2 = kernels::attention_combine_geometry(rows, heads);
        let (pu, hu, su) = (pairs as u32, head_dim as u32, splits as u32);
        match (self, q, k, v, out, (&places.slots, &places.positions), (part_o, part_ml)) {
            (
                Device::Emu,
                Buffer::Host(q),
                Buffer::Host(k),
                Buffer::Host(v),
                Buffer::Host(o),
                (Buffer::Host(s), Buffer::Host(p)),
                (Buffer::Host(po), Buffer::Host(pm)),
            ) => {
                let (q, k, v) = (In::from_slice(q), In::from_slice(k), In::from_slice(v));
                let (s, p) = (In::from_slice(s), In::from_slice(p));
                // SAFETY: the views cover live buffers of the lengths checked by
                // `attention` (the partials sized here); every position < splits · chunk.
                unsafe {
                    let (po, pm) = (Out::from_slice(po), Out::from_slice(pm));
                    kernels::attention_split_f32::launch(
                        cfg, q, k, v, po, pm, s, p, a[0], a[1], a[2], a[3], a[4], scale,
                    )
                }
                .map_err(emu_err(kernel, shape))?;
                let (po, pm) = (In::from_slice(po), In::from_slice(pm));
                // SAFETY: the partials as the split pass wrote them; `o` holds pairs · head_dim.
                unsafe { kernels::attention_combine_f32::launch(cfg2, po, pm, Out::from_slice(o), pu, hu, su) }
                    .map_err(emu_err(combine, shape))
            }
            (
                Device::Cuda(g),
                Buffer::Cuda(q),
                Buffer::Cuda(k),
                Buffer::Cuda(v),
                Buffer::Cuda(o),
                (Buffer::Cuda(s), Buffer::Cuda(p)),
                (Buffer::Cuda(po), Buffer::Cuda(pm)),
            ) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(q).arg(k).arg(v).arg(&mut *po).arg(&mut *pm).arg(s).arg(p);
                for x in &a {
                    l.arg(x);
                }
                l.arg(&scale);
                // SAFETY: arguments match `attention_split_f32`; lengths and places
                // checked by `attention`, the partials sized here.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, shape))?;
                let mut l = g.stream().launch_builder(g.functions().get(combine));
                l.arg(&*po).arg(&*pm).arg(o).arg(&pu).arg(&hu).arg(&su);
                // SAFETY: arguments match `attention_combine_f32`; the partials
                // were written by the launch before it on the same stream.
                unsafe { l.launch(cuda_config(cfg2)) }.map(drop).map_err(g.err(combine, shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// A scratch buffer of at least `len` values on this device: `slot`'s own, or a new one put there.
    fn scratch_buffer<'s>(&self, slot: &'s mut Option<Buffer<f32>>, len: usize) -> KernelResult<&'s mut Buffer<f32>> {
        let fits = |b: &Buffer<f32>| {
            b.len() >= len
                && matches!(
                    (self, b),
                    (Device::Cuda(_), Buffer::Cuda(_)) | (Device::Cpu | Device::Emu, Buffer::Host(_))
                )
        };
        if !slot.as_ref().is_some_and(fits) {
            *slot = Some(self.alloc(len)?);
        }
        slot.as_mut().ok_or_else(|| self.wrong_place("attention scratch", "nowhere"))
    }

    /// `gated_f32`: `gate ← act(gate) · up` (`act`: `kernels::ACT_RELU2` or `kernels::ACT_SILU`).
    pub fn gated(&self, gate: &mut Buffer<f32>, up: &Buffer<f32>, act: u32) -> KernelResult<()> {
        let kernel = kernels::gated_f32::NAME;
        let n = gate.len();
        let shape = format!("{n} elements");
        kernels_gpu::launch::check_len("up", up.len(), n).map_err(shape_err(kernel, &shape))?;
        if act != kernels::ACT_RELU2 && act != kernels::ACT_SILU {
            return Err(shape_err(kernel, &shape)(format!("unknown activation {act}")));
        }
        let cfg = kernels::elementwise_geometry(n);
        let nu = n as u32;
        match (self, gate, up) {
            (Device::Cpu, Buffer::Host(g), Buffer::Host(u)) => {
                crate::cpu::gated(g, u, act);
                Ok(())
            }
            (Device::Emu, Buffer::Host(g), Buffer::Host(u)) => {
                // SAFETY: the views cover live buffers of `n` elements.
                unsafe { kernels::gated_f32::launch(cfg, Out::from_slice(g), In::from_slice(u), nu, act) }
                    .map_err(emu_err(kernel, &shape))
            }
            (Device::Cuda(g), Buffer::Cuda(gb), Buffer::Cuda(u)) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(gb).arg(u).arg(&nu).arg(&act);
                // SAFETY: arguments match `gated_f32`; lengths checked above.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// `add_f32`: `x ← x + y` (the residual connection).
    pub fn add(&self, x: &mut Buffer<f32>, y: &Buffer<f32>) -> KernelResult<()> {
        let kernel = kernels::add_f32::NAME;
        let n = x.len();
        let shape = format!("{n} elements");
        kernels_gpu::launch::check_len("y", y.len(), n).map_err(shape_err(kernel, &shape))?;
        let cfg = kernels::elementwise_geometry(n);
        let nu = n as u32;
        match (self, x, y) {
            (Device::Cpu, Buffer::Host(x), Buffer::Host(y)) => {
                x.iter_mut().zip(y.iter()).for_each(|(a, b)| *a += b);
                Ok(())
            }
            (Device::Emu, Buffer::Host(x), Buffer::Host(y)) => {
                // SAFETY: the views cover live buffers of `n` elements.
                unsafe { kernels::add_f32::launch(cfg, Out::from_slice(x), In::from_slice(y), nu) }
                    .map_err(emu_err(kernel, &shape))
            }
            (Device::Cuda(g), Buffer::Cuda(x), Buffer::Cuda(y)) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(x).arg(y).arg(&nu);
                // SAFETY: arguments match `add_f32`; lengths checked above.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// `embedding_f32`: the rows of `table` (`vocab × hidden`) for `ids`, into `out`.
    pub fn embedding(
        &self,
        table: &Buffer<f32>,
        ids: &Buffer<u32>,
        out: &mut Buffer<f32>,
        hidden: usize,
    ) -> KernelResult<()> {
        let kernel = kernels::embedding_f32::NAME;
        let (rows, vocab) = (ids.len(), table.len() / hidden.max(1));
        let shape = format!("{rows} ids × {hidden}");
        kernels::embedding_check(rows, hidden, vocab, table.len(), out.len()).map_err(shape_err(kernel, &shape))?;
        let cfg = kernels::elementwise_geometry(rows * hidden);
        let (r, h, v) = (rows as u32, hidden as u32, vocab as u32);
        match (self, table, ids, out) {
            (Device::Cpu, Buffer::Host(t), Buffer::Host(i), Buffer::Host(o)) => {
                crate::cpu::embedding(t, i, o, hidden);
                Ok(())
            }
            (Device::Emu, Buffer::Host(t), Buffer::Host(i), Buffer::Host(o)) => {
                let (t, i, o) = (In::from_slice(t), In::from_slice(i), Out::from_slice(o));
                // SAFETY: the views cover live buffers of the lengths checked above.
                unsafe { kernels::embedding_f32::launch(cfg, t, i, o, r, h, v) }.map_err(emu_err(kernel, &shape))
            }
            (Device::Cuda(g), Buffer::Cuda(t), Buffer::Cuda(i), Buffer::Cuda(o)) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(t).arg(i).arg(o).arg(&r).arg(&h).arg(&v);
                // SAFETY: arguments match `embedding_f32`; lengths checked above.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// `kv_write_f32`: new key or value rows (`rows × kv_heads × head_dim`) into a
    /// layer's slotted cache (`slots × kv_heads × context × head_dim`) at their places.
    pub fn kv_write(
        &self,
        x: &Buffer<f32>,
        cache: &mut Buffer<f32>,
        places: &RowPlaces,
        kv_heads: usize,
        head_dim: usize,
        context: usize,
    ) -> KernelResult<()> {
        let kernel = kernels::kv_write_f32::NAME;
        let rows = x.len() / (kv_heads * head_dim).max(1);
        let shape =
            format!("{rows} rows up to slot {} position {}, context {context}", places.max_slot, places.max_pos);
        let err = |reason: String| shape_err(kernel, &shape)(reason);
        kernels_gpu::launch::check_len("rows", x.len(), rows * kv_heads * head_dim).map_err(err)?;
        let (n, ms, mp) = (places.len(), places.max_slot, places.max_pos);
        kernels::kv_cache_check(rows, kv_heads, head_dim, context, n, ms, mp, cache.len()).map_err(err)?;
        let cfg = kernels::elementwise_geometry(x.len());
        let a = [rows, kv_heads, head_dim, context].map(|v| v as u32);
        match (self, x, cache, (&places.slots, &places.positions)) {
            (Device::Cpu, Buffer::Host(x), Buffer::Host(c), (Buffer::Host(s), Buffer::Host(p))) => {
                crate::cpu::kv_write(x, c, s, p, kv_heads, head_dim, context);
                Ok(())
            }
            (Device::Emu, Buffer::Host(x), Buffer::Host(c), (Buffer::Host(s), Buffer::Host(p))) => {
                let (x, c, s, p) = (In::from_slice(x), Out::from_slice(c), In::from_slice(s), In::from_slice(p));
                // SAFETY: the views cover live buffers of the lengths checked above; places lie inside the cache.
                unsafe { kernels::kv_write_f32::launch(cfg, x, c, s, p, a[0], a[1], a[2], a[3]) }
                    .map_err(emu_err(kernel, &shape))
            }
            (Device::Cuda(g), Buffer::Cuda(x), Buffer::Cuda(c), (Buffer::Cuda(s), Buffer::Cuda(p))) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(x).arg(c).arg(s).arg(p);
                for v in &a {
                    l.arg(v);
                }
                // SAFETY: arguments match `kv_write_f32`; lengths and places checked above.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }

    /// `argmax_f32`: the first index of the largest value of each row of `x`
    /// (`out.len()` rows × `cols`); NaN never wins. Greedy sampling on the device.
    pub fn argmax(&self, x: &Buffer<f32>, cols: usize, out: &mut Buffer<u32>) -> KernelResult<()> {
        let kernel = kernels::argmax_f32::NAME;
        let rows = out.len();
        let shape = format!("{rows}×{cols}");
        kernels::argmax_check(rows, cols, x.len(), rows).map_err(shape_err(kernel, &shape))?;
        let cfg = kernels::argmax_geometry(rows, QUANTIZE_MAX_BLOCKS);
        let (r, c) = (rows as u32, cols as u32);
        match (self, x, out) {
            (Device::Cpu, Buffer::Host(x), Buffer::Host(o)) => {
                for (row, o) in x.chunks(cols).zip(o.iter_mut()) {
                    let best = row.iter().enumerate().map(|(i, &v)| kernels::argmax_key(v, i as u32)).max();
                    *o = best.map_or(0, kernels::argmax_index);
                }
                Ok(())
            }
            (Device::Emu, Buffer::Host(x), Buffer::Host(o)) => {
                // SAFETY: the views cover live buffers of the lengths checked above.
                unsafe { kernels::argmax_f32::launch(cfg, In::from_slice(x), Out::from_slice(o), r, c) }
                    .map_err(emu_err(kernel, &shape))
            }
            (Device::Cuda(g), Buffer::Cuda(x), Buffer::Cuda(o)) => {
                let mut l = g.stream().launch_builder(g.functions().get(kernel));
                l.arg(x).arg(o).arg(&r).arg(&c);
                // SAFETY: arguments match `argmax_f32`; lengths checked above; the geometry supplies the scratch.
                unsafe { l.launch(cuda_config(cfg)) }.map(drop).map_err(g.err(kernel, &shape))
            }
            _ => Err(self.wrong_place(kernel, "a buffer of another device")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The CUDA backend resolves kernels by name from `cuda_functions!`; a
    /// kernel missing there passes every emulator test and panics on the
    /// first GPU. So the registered names must be exactly the PTX's entry points.
    #[test]
    fn every_ptx_entry_point_is_registered_for_cuda() {
        if !crate::ptx::available() {
            eprintln!("skipped: this build embeds no PTX");
            return;
        }
        let registered: BTreeSet<&str> = super::Functions::NAMES.iter().copied().collect();
        for module in crate::ptx::modules() {
            let entries: BTreeSet<&str> = module
                .text
                .lines()
                .filter_map(|l| l.trim_start().strip_prefix(".visible .entry "))
                .filter_map(|rest| rest.split('(').next())
                .map(str::trim)
                .collect();
            assert!(entries.len() >= 30, "{}: only {} entry points found", module.arch, entries.len());
            let missing: Vec<_> = entries.difference(&registered).collect();
            let stale: Vec<_> = registered.difference(&entries).collect();
            assert!(
                missing.is_empty() && stale.is_empty(),
                "{}: not registered {missing:?}, not in the PTX {stale:?}",
                module.arch
            );
        }
    }
}

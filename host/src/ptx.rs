//! # The embedded PTX: the one place kernels enter the host
//!
//! `build.rs` (through `ptx-builder`) writes `kernels_sm_80.ptx` and
//! `kernels_sm_90.ptx` into `OUT_DIR` and sets `cfg(trinity_ptx)`. Without a
//! kernel toolchain at build time the cfg is unset, [`available`] is false and
//! the CUDA backend reports that it was built without PTX.

/// PTX for one architecture.
#[derive(Debug, Clone, Copy)]
pub struct PtxModule {
    /// `sm_80` or `sm_90`.
    pub arch: &'static str,
    /// The module text.
    pub text: &'static str,
}

#[cfg(trinity_ptx)]
const MODULES: &[PtxModule] = &[
    PtxModule { arch: "sm_80", text: include_str!(concat!(env!("OUT_DIR"), "/kernels_sm_80.ptx")) },
    PtxModule { arch: "sm_90", text: include_str!(concat!(env!("OUT_DIR"), "/kernels_sm_90.ptx")) },
];

#[cfg(not(trinity_ptx))]
const MODULES: &[PtxModule] = &[];

/// Whether this build embeds PTX.
pub fn available() -> bool {
    !MODULES.is_empty()
}

/// All embedded modules.
pub fn modules() -> &'static [PtxModule] {
    MODULES
}

/// The modules to try for a compute capability, best first: `sm_90` then
/// `sm_80` for 9.x and newer (the driver JITs sm_80 PTX for any later GPU),
/// `sm_80` for 8.x; none below 8.0 (the kernels use `mma.sync` m16n8k32, an sm_80 feature).
pub fn candidates_for_compute_capability(major: i32, _minor: i32) -> Vec<&'static PtxModule> {
    let archs: &[&str] = match major {
        ..=7 => &[],
        8 => &["sm_80"],
        _ => &["sm_90", "sm_80"],
    };
    archs.iter().filter_map(|a| MODULES.iter().find(|m| m.arch == *a)).collect()
}

/// Which toolchain built the embedded PTX (for `trinity info`).
pub fn toolchain() -> Option<&'static str> {
    option_env!("TRINITY_KERNEL_TOOLCHAIN_USED")
}

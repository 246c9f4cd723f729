//! # ptx-builder: Rust kernel source → PTX
//!
//! Called from a build script in a few lines ([`build_for_host`]); it compiles a
//! `no_std` kernel crate for rustc's `nvptx64-nvidia-cuda` target and returns PTX
//! text for each requested architecture.
//!
//! ## Pipeline
//! 1. `core` and `compiler_builtins` for the device, compiled once from the
//!    toolchain's library source and cached (keyed by compiler version, flags
//!    and architecture) under the cargo target directory.
//! 2. The kernel crate → LLVM bitcode (`--crate-type cdylib --emit llvm-bc`).
//! 3. `llvm-link --only-needed kernel.bc core.bc builtins.bc`, then
//!    `opt -passes=internalize,default<O3>` keeping only the kernel entry points,
//!    then `llc -mcpu=sm_XX` → PTX. Linking is what resolves core functions
//!    that were not inlined (a bounds-check panic path); without it they stay
//!    `.extern .func` and the module fails to load on the device.
//! 4. Checks: no `.extern .func` may remain ([`BuildError::UnresolvedExtern`]);
//!    when `TRINITY_PTXAS` names a `ptxas`, every architecture is assembled
//!    with it and a ptxas error fails the build.
//!
//! ## Finding a toolchain
//! In this order (the first complete one wins; `TRINITY_KERNEL_TOOLCHAIN=env|rustup|debian`
//! forces one, and `none` builds the host without PTX as if none were found):
//! 1. **Environment**: `TRINITY_RUST_LIBRARY` (the `library/` source directory
//!    matching the compiler), `TRINITY_LLVM_BIN` (a directory holding
//!    `llvm-link`, `opt`, `llc`, `llvm-nm` of the compiler's LLVM major version),
//!    and optionally `TRINITY_KERNEL_RUSTC` (default: cargo's `$RUSTC`).
//! 2. **rustup**: the active toolchain's `rust-src` and `llvm-tools` components
//!    (`rustup component add rust-src llvm-tools`).
//! 3. **Debian 12**: `apt-get install rustc-web rust-web-src` gives `/usr/bin/rustc`,
//!    `/usr/src/rustc-<version>/library` and `/usr/lib/llvm-<major>/bin`.
//!
//! The unstable features the kernel crate needs are named once, in
//! [`UNSTABLE_FEATURES`]; they are enabled with `RUSTC_BOOTSTRAP=1` for the
//! device compilation only.

use std::collections::hash_map::DefaultHasher;
use std::ffi::OsString;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The rustc target the kernels are compiled for.
pub const TARGET: &str = "nvptx64-nvidia-cuda";

/// Unstable rustc features the kernel crate uses on the device, and why:
/// `abi_ptx` for `extern "ptx-kernel"` entry points, `stdarch_nvptx` for the
/// special registers and barrier intrinsics, `asm_experimental_arch` for
/// `asm!` on nvptx (shuffles, dp4a, mma, shared memory).
pub const UNSTABLE_FEATURES: &[&str] = &["abi_ptx", "stdarch_nvptx", "asm_experimental_arch"];

/// Environment variables the builder reads; each is a `rerun-if-env-changed`.
pub const ENV_VARS: &[&str] = &[
    "TRINITY_KERNEL_TOOLCHAIN",
    "TRINITY_KERNEL_RUSTC",
    "TRINITY_RUST_LIBRARY",
    "TRINITY_LLVM_BIN",
    "TRINITY_PTXAS",
    "TRINITY_PTX_CACHE",
    "TRINITY_REQUIRE_PTX",
];

/// Everything that can go wrong while building PTX.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No complete kernel toolchain was found; the message says how to get one.
    #[error("no kernel toolchain found ({tried}); fix: {fix}")]
    NoToolchain {
        /// What was looked for and why each candidate failed.
        tried: String,
        /// The command that installs a toolchain.
        fix: &'static str,
    },
    /// `TRINITY_KERNEL_TOOLCHAIN` named a toolchain that is not complete.
    #[error("TRINITY_KERNEL_TOOLCHAIN={name} but that toolchain is incomplete: {why}")]
    ForcedToolchain {
        /// The forced kind.
        name: String,
        /// What is missing.
        why: String,
    },
    /// A tool could not be started.
    #[error("could not run `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A tool ran and failed.
    #[error("`{command}` failed with {status}:\n{stderr}")]
    ToolFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The PTX still calls functions it does not define.
    #[error("PTX for {arch} has unresolved `.extern .func` symbols: {symbols:?} (a core function was not linked in)")]
    UnresolvedExtern {
        /// The architecture.
        arch: String,
        /// The offending symbols.
        symbols: Vec<String>,
    },
    /// The kernel bitcode defines no entry point.
    #[error("the kernel crate at {0} defines no kernel entry point")]
    NoKernels(PathBuf),
    /// File system trouble.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, BuildError>;

/// How to install a kernel toolchain, printed when none is found.
pub const INSTALL_FIX: &str = "`rustup component add rust-src llvm-tools`, or on Debian 12 \
     `apt-get update && apt-get install -y rustc-web rust-web-src`, or set TRINITY_RUST_LIBRARY and TRINITY_LLVM_BIN";

/// Where the kernel compiler, its library source and its LLVM tools live.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// Which rule found it: `env`, `rustup` or `debian`.
    pub origin: &'static str,
    /// The rustc that compiles the kernels (its version must match `library`).
    pub rustc: PathBuf,
    /// The `library/` directory of that rustc's source.
    pub library: PathBuf,
    /// Directory with `llvm-link`, `opt`, `llc`, `llvm-nm`.
    pub llvm_bin: PathBuf,
    /// `rustc -vV` output, part of the cache key.
    pub version: String,
}

/// One rule of the search order: a toolchain, or why this rule found none.
type Finder = fn() -> std::result::Result<Toolchain, String>;

impl Toolchain {
    /// Finds a toolchain following the order in the crate docs.
    pub fn find() -> Result<Toolchain> {
        let forced = std::env::var("TRINITY_KERNEL_TOOLCHAIN").ok();
        if forced.as_deref() == Some("none") {
            return Err(BuildError::NoToolchain { tried: "TRINITY_KERNEL_TOOLCHAIN=none".into(), fix: INSTALL_FIX });
        }
        let candidates: [(&str, Finder); 3] =
            [("env", Self::from_env), ("rustup", Self::from_rustup), ("debian", Self::from_debian)];
        let mut tried = Vec::new();
        for (name, find) in candidates {
            if let Some(f) = &forced {
                if f != name {
                    continue;
                }
                return find().map_err(|why| BuildError::ForcedToolchain { name: f.clone(), why });
            }
            match find() {
                Ok(t) => return Ok(t),
                Err(why) => tried.push(format!("{name}: {why}")),
            }
        }
        if let Some(f) = forced {
            return Err(BuildError::ForcedToolchain {
                name: f,
                why: "unknown name (use env, rustup, debian or none)".into(),
            });
        }
        Err(BuildError::NoToolchain { tried: tried.join("; "), fix: INSTALL_FIX })
    }

    fn from_env() -> std::result::Result<Toolchain, String> {
        let library = std::env::var_os("TRINITY_RUST_LIBRARY").ok_or("TRINITY_RUST_LIBRARY not set")?;
        let llvm_bin = std::env::var_os("TRINITY_LLVM_BIN").ok_or("TRINITY_LLVM_BIN not set")?;
        let rustc = std::env::var_os("TRINITY_KERNEL_RUSTC").unwrap_or_else(host_rustc);
        Self::complete("env", rustc.into(), library.into(), llvm_bin.into())
    }

    fn from_rustup() -> std::result::Result<Toolchain, String> {
        let rustc = PathBuf::from(host_rustc());
        let sysroot = capture(Command::new(&rustc).args(["--print", "sysroot"])).map_err(|e| e.to_string())?;
        let sysroot = PathBuf::from(sysroot.trim());
        let host = host_triple(&rustc)?;
        Self::complete(
            "rustup",
            rustc,
            sysroot.join("lib/rustlib/src/rust/library"),
            sysroot.join("lib/rustlib").join(host).join("bin"),
        )
    }

    fn from_debian() -> std::result::Result<Toolchain, String> {
        let rustc = PathBuf::from("/usr/bin/rustc");
        if !rustc.exists() {
            return Err("/usr/bin/rustc not installed".into());
        }
        let vv = capture(Command::new(&rustc).arg("-vV")).map_err(|e| e.to_string())?;
        let release = field(&vv, "release:").ok_or("rustc -vV has no release")?;
        let llvm_major = field(&vv, "LLVM version:")
            .and_then(|v| v.split('.').next().map(str::to_owned))
            .ok_or("rustc -vV has no LLVM version")?;
        Self::complete(
            "debian",
            rustc,
            PathBuf::from(format!("/usr/src/rustc-{release}/library")),
            PathBuf::from(format!("/usr/lib/llvm-{llvm_major}/bin")),
        )
    }

    fn complete(
        origin: &'static str,
        rustc: PathBuf,
        library: PathBuf,
        llvm_bin: PathBuf,
    ) -> std::result::Result<Toolchain, String> {
        let core = library.join("core/src/lib.rs");
        if !core.exists() {
            return Err(format!("no library source at {}", core.display()));
        }
        for tool in ["llvm-link", "opt", "llc", "llvm-nm"] {
            if !llvm_bin.join(tool).exists() {
                return Err(format!("no {tool} in {}", llvm_bin.display()));
            }
        }
        let version = capture(Command::new(&rustc).arg("-vV")).map_err(|e| e.to_string())?;
        Ok(Toolchain { origin, rustc, library, llvm_bin, version })
    }

    fn tool(&self, name: &str) -> PathBuf {
        self.llvm_bin.join(name)
    }
}

fn host_rustc() -> OsString {
    std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into())
}

fn host_triple(rustc: &Path) -> std::result::Result<String, String> {
    let vv = capture(Command::new(rustc).arg("-vV")).map_err(|e| e.to_string())?;
    field(&vv, "host:").ok_or_else(|| "rustc -vV has no host".into())
}

fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_owned())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command, failing with its stderr; returns stdout.
fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|source| BuildError::Spawn { program: describe(cmd), source })?;
    if !out.status.success() {
        return Err(BuildError::ToolFailed {
            command: describe(cmd),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn io<T>(what: &'static str, path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|source| BuildError::Io { what, path: path.to_owned(), source })
}

/// PTX text for one architecture.
#[derive(Clone)]
pub struct Ptx {
    /// The architecture, e.g. `sm_90`.
    pub arch: String,
    /// The PTX module.
    pub text: String,
    /// The kernel entry points it defines.
    pub kernels: Vec<String>,
}

impl fmt::Debug for Ptx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ptx")
            .field("arch", &self.arch)
            .field("bytes", &self.text.len())
            .field("kernels", &self.kernels)
            .finish()
    }
}

/// Builds one kernel crate into PTX for a set of architectures.
#[derive(Debug, Clone)]
pub struct Builder {
    crate_root: PathBuf,
    crate_name: String,
    archs: Vec<String>,
    cache_dir: PathBuf,
    work_dir: PathBuf,
}

impl Builder {
    /// `crate_root` is the kernel crate's directory (holding `src/lib.rs`);
    /// `work_dir` receives intermediate files; `cache_dir` holds the device `core`.
    pub fn new(crate_root: impl Into<PathBuf>, crate_name: &str, work_dir: impl Into<PathBuf>) -> Self {
        let work_dir = work_dir.into();
        Builder {
            crate_root: crate_root.into(),
            crate_name: crate_name.replace('-', "_"),
            archs: Vec::new(),
            cache_dir: work_dir.join("core-cache"),
            work_dir,
        }
    }

    /// Adds a target architecture such as `sm_80`.
    pub fn arch(mut self, arch: &str) -> Self {
        self.archs.push(arch.to_owned());
        self
    }

    /// Where the device `core` builds are cached.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = dir.into();
        self
    }

    /// Runs the pipeline for every architecture.
    pub fn build(&self, tc: &Toolchain) -> Result<Vec<Ptx>> {
        self.archs.iter().map(|arch| self.build_arch(tc, arch)).collect()
    }

    fn device_rustc(&self, tc: &Toolchain, arch: &str) -> Command {
        let mut cmd = Command::new(&tc.rustc);
        cmd.env("RUSTC_BOOTSTRAP", "1").args([
            "--edition",
            "2024",
            "--target",
            TARGET,
            "-C",
            &format!("target-cpu={arch}"),
            "-C",
            "opt-level=3",
            "-C",
            "panic=abort",
            "-C",
            "debuginfo=0",
        ]);
        cmd
    }

    /// Builds (or finds cached) device `core` and `compiler_builtins`; returns their directory.
    fn device_core(&self, tc: &Toolchain, arch: &str) -> Result<PathBuf> {
        let mut h = DefaultHasher::new();
        (&tc.version, &tc.library, arch, "v1").hash(&mut h);
        let dir = self.cache_dir.join(format!("{arch}-{:016x}", h.finish()));
        if dir.join("libcompiler_builtins.bc").exists() {
            return Ok(dir);
        }
        let tmp = self.cache_dir.join(format!("tmp-{arch}-{}", std::process::id()));
        io("create", &tmp, std::fs::create_dir_all(&tmp))?;
        capture(
            self.device_rustc(tc, arch)
                .args(["--crate-type", "lib", "--crate-name", "core", "-Zforce-unstable-if-unmarked"])
                .arg(tc.library.join("core/src/lib.rs"))
                .args(["--emit=llvm-bc,link", "-o"])
                .arg(tmp.join("libcore.rlib")),
        )?;
        capture(
            self.device_rustc(tc, arch)
                .args(["--crate-type", "lib", "--crate-name", "compiler_builtins", "-Zforce-unstable-if-unmarked"])
                .args(["--cfg", "feature=\"compiler-builtins\"", "--extern"])
                .arg(format!("core={}", tmp.join("libcore.rlib").display()))
                .arg(tc.library.join("compiler-builtins/compiler-builtins/src/lib.rs"))
                .args(["--emit=llvm-bc,link", "-o"])
                .arg(tmp.join("libcompiler_builtins.rlib")),
        )?;
        // A concurrent build may have won the race; either copy is complete.
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Ok(dir)
    }

    fn build_arch(&self, tc: &Toolchain, arch: &str) -> Result<Ptx> {
        let core = self.device_core(tc, arch)?;
        let work = self.work_dir.join(arch);
        io("create", &work, std::fs::create_dir_all(&work))?;
        let kernel_bc = work.join("kernels.bc");
        let mut cmd = self.device_rustc(tc, arch);
        cmd.args(["--crate-type", "cdylib", "--crate-name", &self.crate_name, "--emit=llvm-bc", "-o"])
            .arg(&kernel_bc)
            .arg("--extern")
            .arg(format!("core={}", core.join("libcore.rlib").display()))
            .arg("--extern")
            .arg(format!("compiler_builtins={}", core.join("libcompiler_builtins.rlib").display()))
            .arg("-L")
            .arg(&core);
        for f in UNSTABLE_FEATURES {
            cmd.arg(format!("-Zcrate-attr=feature({f})"));
        }
        cmd.arg(self.crate_root.join("src/lib.rs"));
        capture(&mut cmd)?;

        let symbols = capture(Command::new(tc.tool("llvm-nm")).arg("--defined-only").arg(&kernel_bc))?;
        let kernels = kernel_entry_points(&symbols);
        if kernels.is_empty() {
            return Err(BuildError::NoKernels(self.crate_root.clone()));
        }
        let linked = work.join("linked.bc");
        capture(
            Command::new(tc.tool("llvm-link"))
                .arg("--only-needed")
                .arg(&kernel_bc)
                .arg(core.join("libcore.bc"))
                .arg(core.join("libcompiler_builtins.bc"))
                .arg("-o")
                .arg(&linked),
        )?;
        let optimized = work.join("optimized.bc");
        capture(
            Command::new(tc.tool("opt"))
                .arg("-passes=internalize,default<O3>")
                .arg(format!("-internalize-public-api-list={}", kernels.join(",")))
                .arg(&linked)
                .arg("-o")
                .arg(&optimized),
        )?;
        let ptx_path = work.join(format!("{}.ptx", self.crate_name));
        capture(Command::new(tc.tool("llc")).arg(format!("-mcpu={arch}")).arg(&optimized).arg("-o").arg(&ptx_path))?;
        let text = io("read", &ptx_path, std::fs::read_to_string(&ptx_path))?;
        let symbols = unresolved_externs(&text);
        if !symbols.is_empty() {
            return Err(BuildError::UnresolvedExtern { arch: arch.to_owned(), symbols });
        }
        Ok(Ptx { arch: arch.to_owned(), text, kernels })
    }
}

/// Kernel entry points among `llvm-nm --defined-only` lines: the unmangled
/// text symbols (the kernel macro marks entries `#[unsafe(no_mangle)]`;
/// everything else rustc emits is mangled).
fn kernel_entry_points(nm: &str) -> Vec<String> {
    nm.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace().rev();
            let name = parts.next()?;
            let kind = parts.next()?;
            (kind == "T" && !name.starts_with("_R") && !name.starts_with("_ZN") && !name.starts_with("rust_"))
                .then(|| name.to_owned())
        })
        .collect()
}

/// The names of `.extern .func` declarations left in a PTX module.
pub fn unresolved_externs(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|l| l.trim().strip_prefix(".extern .func"))
        .map(|rest| {
            let rest = rest.trim();
            // `.extern .func (.param ...) name(` or `.extern .func name(`
            let rest = match rest.strip_prefix('(') {
                Some(r) => r.split_once(')').map_or(r, |(_, after)| after).trim(),
                None => rest,
            };
            rest.split(['(', ' ', ';']).next().unwrap_or(rest).to_owned()
        })
        .collect()
}

/// Assembles PTX with `ptxas -v`; returns its report (registers, spills).
pub fn ptxas_check(ptxas: &Path, ptx: &Ptx, work_dir: &Path) -> Result<String> {
    let src = work_dir.join(format!("check-{}.ptx", ptx.arch));
    io("write", &src, std::fs::write(&src, &ptx.text))?;
    let mut cmd = Command::new(ptxas);
    cmd.arg(format!("-arch={}", ptx.arch)).arg("-v").arg(&src).arg("-o").arg(work_dir.join("check.cubin"));
    let out = cmd.output().map_err(|source| BuildError::Spawn { program: describe(&cmd), source })?;
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(BuildError::ToolFailed { command: describe(&cmd), status: out.status, stderr: report });
    }
    Ok(report)
}

fn target_dir_of(out_dir: &Path) -> PathBuf {
    // OUT_DIR is <target>/[<triple>/]<profile>/build/<pkg>-<hash>/out; cargo marks <target> with CACHEDIR.TAG.
    out_dir.ancestors().find(|d| d.join("CACHEDIR.TAG").exists()).map_or_else(|| out_dir.to_owned(), Path::to_owned)
}

/// The whole build-script entry point: builds `crate_root` for `sm_80` and
/// `sm_90`, writes `<OUT_DIR>/<name>_<arch>.ptx`, and sets `cfg(trinity_ptx)`.
///
/// Without a toolchain it prints one cargo warning naming the fix and returns,
/// leaving the cfg unset (the host then builds with its GPU backend disabled),
/// unless `TRINITY_REQUIRE_PTX=1`, which makes it an error. Any other failure
/// (a kernel that does not compile, an unresolved extern) is always an error.
pub fn build_for_host(crate_root: &str) {
    if let Err(e) = try_build_for_host(Path::new(crate_root)) {
        println!("cargo::error={}", e.to_string().replace('\n', "\ncargo::error="));
    }
}

fn try_build_for_host(crate_root: &Path) -> Result<()> {
    println!("cargo::rerun-if-changed={}", crate_root.join("src").display());
    for var in ENV_VARS {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_else(|| ".".into()));
    let require = std::env::var("TRINITY_REQUIRE_PTX").is_ok_and(|v| v == "1");
    let tc = match Toolchain::find() {
        Ok(tc) => tc,
        Err(e @ BuildError::NoToolchain { .. }) if !require => {
            println!("cargo::warning=GPU backend disabled: {e}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let cache = std::env::var_os("TRINITY_PTX_CACHE")
        .map_or_else(|| target_dir_of(&out_dir).join("trinity-device-core"), PathBuf::from);
    let ptxs = Builder::new(crate_root, "kernels_gpu", out_dir.join("ptx-build"))
        .cache_dir(cache)
        .arch("sm_80")
        .arch("sm_90")
        .build(&tc)?;
    let ptxas = std::env::var_os("TRINITY_PTXAS").map(PathBuf::from);
    for ptx in &ptxs {
        if let Some(ptxas) = &ptxas {
            let report = ptxas_check(ptxas, ptx, &out_dir)?;
            let log = out_dir.join(format!("ptxas-{}.log", ptx.arch));
            io("write", &log, std::fs::write(&log, report))?;
        }
        let dst = out_dir.join(format!("kernels_{}.ptx", ptx.arch));
        io("write", &dst, std::fs::write(&dst, &ptx.text))?;
    }
    println!("cargo::rustc-cfg=trinity_ptx");
    println!("cargo::rustc-env=TRINITY_KERNEL_TOOLCHAIN_USED={} ({})", tc.origin, tc.rustc.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_unresolved_externs_in_both_declaration_forms() {
        let ptx = ".extern .shared .align 16 .b8 SMEM[];\n\
                   .extern .func (.param .b32 func_retval0) foo(\n\
                   .extern .func _RNvcore9panicking5panic()\n";
        assert_eq!(unresolved_externs(ptx), vec!["foo", "_RNvcore9panicking5panic"]);
        assert!(unresolved_externs(".visible .entry k()\n").is_empty());
    }

    #[test]
    fn entry_points_are_the_unmangled_text_symbols() {
        let nm = "---------------- T _RNvCs1_7___rustc17rust_begin_unwind\n\
                  ---------------- T unpack_i8\n---------------- d some_data\n\
                  ---------------- T _ZN4core3fmt5write17h\n";
        assert_eq!(kernel_entry_points(nm), vec!["unpack_i8"]);
    }
}

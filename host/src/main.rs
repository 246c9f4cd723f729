//! `trinity`: verify Trinity's kernels and report on the GPU.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use trinity::backend::{Backend, BackendKind};
use trinity::{cpu, cuda, emulator, info, ptx, verify};

#[derive(Parser, Debug)]
#[command(name = "trinity", version, about = "Ternary (BitNet b1.58) GPU kernels: verify and measure")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print device, driver, compute capability, memory and NVML facts.
    Info,
    /// Run every kernel against the CPU reference on fresh random inputs.
    Verify {
        /// Backend to check (default: cuda when a GPU is present, else emu).
        #[arg(long, value_enum)]
        backend: Option<BackendKind>,
        /// Seed of the random inputs (default: fresh; printed for reproduction).
        #[arg(long)]
        seed: Option<u64>,
        /// Also run the large shapes (default on cuda and cpu; slow on emu).
        #[arg(long)]
        large: bool,
    },
    /// Write the embedded PTX modules to a directory.
    Ptx {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

fn open_backend(kind: Option<BackendKind>) -> Result<Box<dyn Backend>> {
    Ok(match kind {
        Some(BackendKind::Cpu) => Box::new(cpu::CpuBackend),
        Some(BackendKind::Emu) => Box::new(emulator::EmuBackend),
        Some(BackendKind::Cuda) => Box::new(cuda::CudaBackend::new(0).context("opening the CUDA backend")?),
        None => match cuda::CudaBackend::new(0) {
            Ok(gpu) => Box::new(gpu),
            Err(e) => {
                eprintln!("no GPU ({e}); verifying on the emulator");
                Box::new(emulator::EmuBackend)
            }
        },
    })
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Info => {
            let info = info::gather(0);
            print!("{info}");
            match ptx::toolchain() {
                Some(tc) => println!(
                    "{:>20}: {} (built by {tc})",
                    "embedded PTX",
                    ptx::modules().iter().map(|m| m.arch).collect::<Vec<_>>().join(", ")
                ),
                None => println!("{:>20}: none (built without a kernel toolchain)", "embedded PTX"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { backend, seed, large } => {
            let backend = open_backend(backend)?;
            let seed = seed.unwrap_or_else(rand::random);
            println!("verifying on {} ({}), seed {seed}", backend.kind(), backend.describe());
            let mut shapes = verify::UNPACK_SHAPES_SMALL.to_vec();
            if large || backend.kind() != BackendKind::Emu {
                shapes.extend_from_slice(verify::UNPACK_SHAPES_LARGE);
            }
            let checks = verify::verify(backend.as_ref(), &shapes, seed);
            let failed = checks.iter().filter(|c| !c.passed).count();
            for c in &checks {
                let status = if c.passed { "ok  " } else { "FAIL" };
                println!("{status} {:<14} {:<12} {}", c.kernel, c.shape, c.detail);
            }
            println!("{} passed, {} failed", checks.len() - failed, failed);
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Ptx { out } => {
            if !ptx::available() {
                bail!("this build embeds no PTX (built without a kernel toolchain; see README)");
            }
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for m in ptx::modules() {
                let path = out.join(format!("trinity_{}.ptx", m.arch));
                std::fs::write(&path, m.text).with_context(|| format!("writing {}", path.display()))?;
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

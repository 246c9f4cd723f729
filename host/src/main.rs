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
    /// TriHash (IOTA Curl-P-81): hash trytes, or search a proof-of-work nonce.
    Trihash {
        #[command(subcommand)]
        command: TrihashCommand,
    },
    /// Write the embedded PTX modules to a directory.
    Ptx {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum TrihashCommand {
    /// Print the Curl-P-81 hash of a tryte string (a multiple of 81 trytes, or --pad).
    Hash {
        /// The input trytes (alphabet 9A-Z).
        trytes: String,
        /// Trits to squeeze (a multiple of 243).
        #[arg(long, default_value_t = 243)]
        squeeze: usize,
        /// Pad the input with '9' to a multiple of 81 trytes.
        #[arg(long)]
        pad: bool,
    },
    /// Find a nonce whose transaction hash ends in `mwm` zero trits.
    Pow {
        /// A file holding the 2673 transaction trytes.
        #[arg(long, conflicts_with = "random", required_unless_present = "random")]
        tx: Option<PathBuf>,
        /// Use a random transaction.
        #[arg(long)]
        random: bool,
        /// Trailing zero trits required.
        #[arg(long)]
        mwm: usize,
        /// Backend (default: cuda when a GPU is present, else cpu).
        #[arg(long, value_enum)]
        backend: Option<BackendKind>,
        /// Give up after this many 128-nonce batches.
        #[arg(long, default_value_t = 1 << 40)]
        max_batches: u64,
        /// Seed of the random transaction.
        #[arg(long)]
        seed: Option<u64>,
    },
}

fn trihash_pow(
    tx: Option<PathBuf>,
    mwm: usize,
    backend: Option<BackendKind>,
    max_batches: u64,
    seed: Option<u64>,
) -> Result<ExitCode> {
    use rand::SeedableRng;
    use trinity::trihash::{self, Pow};
    trihash::check_mwm(mwm)?;
    let pow = match &tx {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Pow::from_trytes(text.trim()).with_context(|| format!("parsing the transaction in {}", path.display()))?
        }
        None => {
            let seed = seed.unwrap_or_else(rand::random);
            eprintln!("random transaction, seed {seed}");
            Pow::random(&mut rand::rngs::StdRng::seed_from_u64(seed))
        }
    };
    let backend: Box<dyn Backend> = match backend {
        None => match cuda::CudaBackend::new(0) {
            Ok(gpu) => Box::new(gpu),
            Err(_) => Box::new(cpu::CpuBackend),
        },
        some => open_backend(some)?,
    };
    let step: u64 = match backend.kind() {
        BackendKind::Emu => 2,
        BackendKind::Cpu => (rayon::current_num_threads() * 4 * trihash::sliced::BATCHES_PER_UNIT) as u64,
        BackendKind::Cuda => 1 << 16,
    };
    eprintln!("searching on {} for mwm {mwm}", backend.describe());
    let start = std::time::Instant::now();
    let mut done = 0u64;
    let found = loop {
        if done >= max_batches {
            break None;
        }
        let n = step.min(max_batches - done);
        let hits = backend.trihash_search(pow.base(), done, n, mwm)?;
        done += n;
        if let Some(&v) = hits.first() {
            break Some(v);
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let tried = done * kernels_gpu::curl::LANES_PER_BATCH as u64;
    eprintln!("{tried} hashes in {secs:.3} s ({:.2} MH/s)", tried as f64 / secs / 1e6);
    let Some(v) = found else {
        bail!("no nonce with {mwm} trailing zero trits in {max_batches} batches");
    };
    if !pow.verify_nonce(v, mwm) {
        bail!("the {} backend reported nonce index {v}, which the independent re-hash rejects", backend.kind());
    }
    let tx = pow.transaction_with_nonce(v);
    let hash = trihash::hash_trytes(&tx, 243, false)?;
    println!("nonce index: {v}");
    println!("nonce: {}", &tx[tx.len() - 27..]);
    println!("hash: {hash}");
    println!("trailing zero trits: {}", trihash::trailing_zeros(&trihash::trytes_to_trits(&hash)?));
    println!("transaction: {tx}");
    Ok(ExitCode::SUCCESS)
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
            let plan =
                if large || backend.kind() != BackendKind::Emu { verify::Plan::full() } else { verify::Plan::small() };
            let checks = verify::verify(backend.as_ref(), &plan, seed);
            let failed = checks.iter().filter(|c| !c.passed).count();
            for c in &checks {
                let status = if c.passed { "ok  " } else { "FAIL" };
                println!("{status} {:<14} {:<12} {}", c.kernel, c.shape, c.detail);
            }
            println!("{} passed, {} failed", checks.len() - failed, failed);
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Trihash { command: TrihashCommand::Hash { trytes, squeeze, pad } } => {
            println!("{}", trinity::trihash::hash_trytes(&trytes, squeeze, pad)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Trihash { command: TrihashCommand::Pow { tx, random: _, mwm, backend, max_batches, seed } } => {
            trihash_pow(tx, mwm, backend, max_batches, seed)
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

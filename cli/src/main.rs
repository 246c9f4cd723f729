//! `trinity`: a thin command line over the runtime (`trinity`), the measurement
//! system (`trinity-measure`) and the TriHash search (`trinity-trihash`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use trinity::cpu::on_pool_thread;
use trinity::{BackendChoice, BackendKind, Device, info, ptx, verify};

/// `print!` for a command's output, as an `io::Result` (`print!` panics on a
/// failed write); see [`to_stdout`] for a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        crate::to_stdout(write!(std::io::stdout().lock(), $($arg)*))
    }};
}

/// [`out!`] with a newline, as `println!`.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        crate::to_stdout(writeln!(std::io::stdout().lock(), $($arg)*))
    }};
}

mod model_cmds;
mod serve_cmds;

#[derive(Parser, Debug)]
#[command(
    name = "trinity",
    version,
    about = "Ternary (BitNet b1.58) kernels and inference on NVIDIA GPUs and the CPU: verify, measure, generate, serve"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Threads of the CPU backend (default: RAYON_NUM_THREADS, else every core), as llama-bench's `-t`.
    #[arg(short = 't', long, global = true)]
    threads: Option<std::num::NonZeroUsize>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print device, driver, compute capability, memory and NVML facts.
    Info,
    /// Run every kernel against the CPU reference on fresh random inputs.
    Verify {
        /// Backend to check: auto (cuda when a GPU starts, else cpu), cpu, emu or cuda.
        #[arg(long, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        /// Seed of the random inputs (default: fresh; printed for reproduction).
        #[arg(long)]
        seed: Option<u64>,
        /// Also run the large shapes (default on cuda and cpu; slow on emu).
        #[arg(long, conflicts_with = "small")]
        large: bool,
        /// Only the small shapes (e.g. under compute-sanitizer).
        #[arg(long)]
        small: bool,
    },
    /// The whole GPU report in one command: verify every kernel, then measure
    /// and write JSON under results/ and Markdown on stdout.
    Run {
        /// Backend: auto (cuda when a GPU starts, else cpu), cpu or cuda (emu is refused).
        #[arg(long, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        /// Price of the machine per hour, for cost per run and per million tokens.
        #[arg(long)]
        cost_per_hour: Option<f64>,
        /// Directory for the results.
        #[arg(long, default_value = "results")]
        results_dir: PathBuf,
        /// Smaller shapes and fewer samples (a smoke test; the report says so).
        #[arg(long)]
        quick: bool,
        /// Seed of the random inputs (default: fresh).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Tables across result files (Markdown) and SVG charts.
    Report {
        /// Result files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write throughput.svg and noise.svg here.
        #[arg(long)]
        charts: Option<PathBuf>,
    },
    /// Per-benchmark FASTER / SLOWER / SAME / UNSURE between two result files;
    /// exits 1 when anything is SLOWER.
    Compare {
        /// The baseline results.
        base: PathBuf,
        /// The new results.
        new: PathBuf,
        /// Relative change of the median time that counts, e.g. 0.05.
        #[arg(long, default_value_t = 0.05)]
        threshold: f64,
        /// Compare runs from different devices.
        #[arg(long)]
        allow_different_devices: bool,
    },
    /// TriHash (IOTA Curl-P-81): hash trytes, or search a proof-of-work nonce.
    Trihash {
        #[command(subcommand)]
        command: TrihashCommand,
    },
    /// The logits of every prompt position, as one JSON object on stdout.
    Logits {
        #[command(flatten)]
        model: model_cmds::ModelArgs,
        /// The prompt as token ids, e.g. 1,2,3.
        #[arg(long)]
        prompt_ids: String,
    },
    /// Generate text (streamed to stdout), then prefill and decode tokens/s on stderr.
    Generate(model_cmds::GenerateArgs),
    /// llama-bench-style prefill (ppN) and decode (tgN) tokens/s with their spread.
    BenchModel(model_cmds::BenchArgs),
    /// An OpenAI-compatible server (completions and chat, streaming, continuous batching).
    Serve(serve_cmds::ServeArgs),
    /// Drive an in-process server at several concurrency levels: aggregate
    /// tokens/s, time to first token, per-token latency.
    BenchServe(serve_cmds::BenchServeArgs),
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
        /// Backend: auto (cuda when a GPU starts, else cpu), cpu, emu or cuda.
        #[arg(long, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
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
    backend: BackendChoice,
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
    let device = open_device(backend)?;
    eprintln!("searching for mwm {mwm}");
    let out = trinity_trihash::search(&device, &pow, mwm, max_batches)?;
    eprintln!("{} hashes in {:.3} s ({:.2} MH/s)", out.hashes, out.seconds, out.mhash_per_s());
    let Some(v) = out.nonce else {
        bail!("no nonce with {mwm} trailing zero trits in {max_batches} batches");
    };
    let tx = pow.transaction_with_nonce(v);
    let hash = trihash::hash_trytes(&tx, 243, false)?;
    outln!("nonce index: {v}")?;
    outln!("nonce: {}", &tx[tx.len() - 27..])?;
    outln!("hash: {hash}")?;
    outln!("trailing zero trits: {}", trihash::trailing_zeros(&trihash::trytes_to_trits(&hash)?))?;
    outln!("transaction: {tx}")?;
    Ok(ExitCode::SUCCESS)
}

/// Opens the backend and says on stderr which one and why.
fn open_device(choice: BackendChoice) -> Result<Device> {
    open_device_why(choice).map(|(d, _)| d)
}

/// [`open_device`], also returning why that backend.
fn open_device_why(choice: BackendChoice) -> Result<(Device, String)> {
    let (device, why) = Device::open(choice).with_context(|| match choice {
        BackendChoice::Cuda => "opening the CUDA backend".to_owned(),
        other => format!("opening the backend ({other})"),
    })?;
    eprintln!("backend: {why}");
    Ok((device, why))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Info => {
            let info = info::gather(0);
            out!("{info}")?;
            match ptx::toolchain() {
                Some(tc) => outln!(
                    "{:>20}: {} (built by {tc})",
                    "embedded PTX",
                    ptx::modules().iter().map(|m| m.arch).collect::<Vec<_>>().join(", ")
                )?,
                None => outln!("{:>20}: none (built without a kernel toolchain)", "embedded PTX")?,
            }
            // The CPU backend's threads and ternary matmul path (`TRINITY_CPU_PATH` picks another).
            outln!("{:>20}: {}", "CPU backend", Device::Cpu.describe())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { backend, seed, large, small } => {
            let device = open_device(backend)?;
            let seed = seed.unwrap_or_else(rand::random);
            outln!("verifying on {} ({}), seed {seed}", device.kind(), device.describe())?;
            let full = !small && (large || device.kind() != BackendKind::Emu);
            let plan = if full { verify::Plan::full() } else { verify::Plan::small() };
            let mut checks = verify::verify(&device, &plan, seed);
            checks.extend(verify::verify_layer_ops(&device, &plan, seed));
            if let Some(gpu) = device.cuda() {
                checks.extend(verify::verify_baselines(gpu, seed));
            }
            let failed = checks.iter().filter(|c| !c.passed).count();
            for c in &checks {
                let status = if c.passed { "ok  " } else { "FAIL" };
                outln!("{status} {:<18} {:<16} {}", c.kernel, c.shape, c.detail)?;
            }
            outln!("{} passed, {} failed", checks.len() - failed, failed)?;
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Trihash { command: TrihashCommand::Hash { trytes, squeeze, pad } } => {
            outln!("{}", trinity::trihash::hash_trytes(&trytes, squeeze, pad)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Trihash { command: TrihashCommand::Pow { tx, random: _, mwm, backend, max_batches, seed } } => {
            trihash_pow(tx, mwm, backend, max_batches, seed)
        }
        Command::Run { backend, cost_per_hour, results_dir, quick, seed } => {
            use trinity_measure::run::{RunOptions, run};
            let opts =
                RunOptions { backend, cost_per_hour, results_dir, quick, seed: seed.unwrap_or_else(rand::random) };
            let progress = BarProgress::new();
            let out = run(&opts, &progress).context("trinity run")?;
            progress.finish();
            out!("{}", trinity_measure::report::run_markdown(&out.results))?;
            eprintln!("results: {}\nreport:  {}", out.json.display(), out.markdown.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { files, charts } => {
            use trinity_measure::{report, results::RunResults};
            let runs = files.iter().map(|f| RunResults::load(f)).collect::<Result<Vec<_>, _>>()?;
            outln!("{}", report::runs_markdown(&runs))?;
            for r in &runs {
                outln!("{}", report::run_markdown(r))?;
            }
            if let Some(dir) = charts {
                std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                report::throughput_svg(&runs, &dir.join("throughput.svg"))?;
                report::noise_svg(&runs, &dir.join("noise.svg"))?;
                eprintln!("charts: {}/throughput.svg, {}/noise.svg", dir.display(), dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare { base, new, threshold, allow_different_devices } => {
            use trinity_measure::{report, results::RunResults};
            let (b, n) = (RunResults::load(&base)?, RunResults::load(&new)?);
            let comparison = report::compare(&b, &n, threshold, allow_different_devices)?;
            out!("{}", report::compare_markdown(&comparison))?;
            let slower = comparison.slower();
            outln!("\n{} benchmarks: {} slower (threshold {:.1} %)", comparison.rows.len(), slower, threshold * 100.0)?;
            Ok(if slower > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        // The model commands run on a pool thread: see `on_pool_thread`.
        Command::Logits { model, prompt_ids } => {
            on_pool_thread(|| model_cmds::logits(&model, &prompt_ids))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate(args) => {
            on_pool_thread(|| model_cmds::generate_cmd(&args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchModel(args) => {
            on_pool_thread(|| model_cmds::bench_model(&args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            serve_cmds::serve(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchServe(args) => {
            serve_cmds::bench_serve(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ptx { out } => {
            if !ptx::available() {
                bail!("this build embeds no PTX (built without a kernel toolchain; see README)");
            }
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for m in ptx::modules() {
                let path = out.join(format!("trinity_{}.ptx", m.arch));
                std::fs::write(&path, m.text).with_context(|| format!("writing {}", path.display()))?;
                outln!("{}", path.display())?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Progress on stderr with indicatif.
struct BarProgress(indicatif::ProgressBar);

impl BarProgress {
    fn new() -> Self {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        BarProgress(bar)
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl trinity_measure::progress::Progress for BarProgress {
    fn step(&self, message: &str) {
        // indicatif draws nothing when stderr is not a terminal (CI, logs): print plainly there.
        if self.0.is_hidden() {
            eprintln!("trinity run: {message}");
        } else {
            self.0.println(format!("trinity run: {message}"));
            self.0.set_message(message.to_owned());
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The model commands run on a pool thread (`on_pool_thread`): give the
    // pool's threads the main thread's usual 8 MiB of stack. Building it can
    // only fail if something built it before, which leaves rayon's default.
    let pool = rayon::ThreadPoolBuilder::new().stack_size(8 << 20);
    let _ = pool.num_threads(cli.threads.map_or(0, |t| t.get())).build_global();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain_once(&e));
            ExitCode::FAILURE
        }
    }
}

/// A write of a command's output, with a closed pipe (`trinity logits … |
/// head`) taken as written: the reader has what it wanted, and the command
/// still ends with its own exit status (`compare`'s SLOWER, `verify`'s
/// failures), which ending on the error would lose.
fn to_stdout(written: std::io::Result<()>) -> std::io::Result<()> {
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// The error and its causes on one line, each said once ([`trinity::chain_once`]).
fn chain_once(e: &anyhow::Error) -> String {
    trinity::chain_once(e.as_ref())
}

#[cfg(test)]
mod tests {
    use super::chain_once;

    /// Like the library errors: names its source in its message and keeps it as the source.
    #[derive(Debug)]
    struct Wrapper {
        source: std::io::Error,
    }
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "launch failed: {}", self.source)
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let inner = std::io::Error::other("device lost");
        let e = anyhow::Error::new(Wrapper { source: inner }).context("trinity run");
        assert_eq!(chain_once(&e), "trinity run: launch failed: device lost");
        let plain = anyhow::Error::new(std::io::Error::other("no file")).context("reading config.json");
        assert_eq!(chain_once(&plain), "reading config.json: no file");
    }
}

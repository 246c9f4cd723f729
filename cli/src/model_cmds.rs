//! `trinity logits`, `trinity generate`, `trinity bench-model`: stdout carries the data, stderr the progress.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use trinity::{BackendChoice, Device};
use trinity_measure::model_bench::{self, DenseBaseline, EnergyTally, HeadError, ModelBench, TestFigures, mean_sd};
use trinity_model::generate::{Sampling, Tokenizer, generate};
use trinity_model::{BitNet, HeadPrecision, Linears, config};

/// Which model to run.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// A model directory (config.json, safetensors, tokenizer.json) or a Hugging Face id in the local cache.
    #[arg(long)]
    pub model: String,
    /// Backend: auto (cuda when a GPU starts, else cpu), cpu, emu or cuda.
    #[arg(long, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Precision of the lm_head: f32 (default; the reference's logits), f16 or int8 (per-row scales).
    #[arg(long, default_value_t = HeadPrecision::F32)]
    pub lm_head: HeadPrecision,
    /// The linears: ternary (the model) or dense-f16 (the cuBLAS FP16 baseline
    /// bench-model times: f16 weights over f16-rounded activations).
    #[arg(long, default_value_t = Linears::Ternary)]
    pub linears: Linears,
}

fn load(args: &ModelArgs) -> Result<(BitNet, PathBuf)> {
    let dir = trinity_model::hub::resolve(&args.model)?;
    let device = crate::open_device(args.backend)?;
    let t = Instant::now();
    let mut model = BitNet::load(&dir, &device).with_context(|| format!("loading {}", dir.display()))?;
    model.set_head_precision(args.lm_head).with_context(|| format!("--lm-head {}", args.lm_head))?;
    model.set_linears(args.linears).with_context(|| format!("--linears {}", args.linears))?;
    eprintln!(
        "loaded {} in {:.2} s ({} layers, hidden {})",
        dir.display(),
        t.elapsed().as_secs_f64(),
        model.config.layers,
        model.config.hidden
    );
    Ok((model, dir))
}

/// Parses `1,2,3`.
pub fn parse_ids(s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .map(|t| t.trim().parse::<u32>().with_context(|| format!("--prompt-ids: `{t}` is not a token id")))
        .collect()
}

/// `trinity logits`.
pub fn logits(args: &ModelArgs, prompt_ids: &str) -> Result<()> {
    let ids = parse_ids(prompt_ids)?;
    let (model, _) = load(args)?;
    let mut cache = model.new_cache(ids.len().max(1))?;
    let logits = model.forward(&ids, &mut cache, true)?;
    let out = serde_json::json!({ "prompt_ids": ids, "logits": logits });
    outln!("{out}")?;
    Ok(())
}

/// Output format of `generate`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GenerateFormat {
    /// The text, streamed.
    Text,
    /// One JSON object at the end.
    Json,
}

/// Options of `generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text (through the checkpoint's tokenizer.json).
    #[arg(long, conflicts_with = "prompt_ids", required_unless_present = "prompt_ids")]
    pub prompt: Option<String>,
    /// The prompt as token ids, e.g. 1,2,3.
    #[arg(long)]
    pub prompt_ids: Option<String>,
    /// Frame --prompt as a user message with the checkpoint's chat template (tokenizer_config.json).
    #[arg(long, requires = "prompt")]
    pub chat: bool,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling threshold (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// text (streamed) or json.
    #[arg(long, value_enum, default_value_t = GenerateFormat::Text)]
    pub format: GenerateFormat,
}

/// `trinity generate`.
pub fn generate_cmd(a: &GenerateArgs) -> Result<()> {
    if !(a.temperature >= 0.0 && a.temperature.is_finite()) {
        bail!("--temperature {} must be a number ≥ 0", a.temperature);
    }
    if !(a.top_p > 0.0 && a.top_p <= 1.0) {
        bail!("--top-p {} must be in (0, 1]", a.top_p);
    }
    let (model, dir) = load(&a.model)?;
    let tokenizer = match Tokenizer::load(&dir) {
        Ok(t) => Some(t),
        Err(e) if a.prompt.is_none() => {
            eprintln!("no tokenizer ({e}); printing token ids");
            None
        }
        Err(e) => return Err(e.into()),
    };
    let prompt_ids = match (&a.prompt, &a.prompt_ids) {
        (Some(text), _) if a.chat => {
            let t = tokenizer.as_ref().expect("loaded above");
            let framed = t.apply_chat_template(text)?;
            eprintln!("chat template: {framed:?}");
            t.encode_plain(&framed)?
        }
        (Some(text), _) => tokenizer.as_ref().expect("loaded above").encode(text)?,
        (None, Some(ids)) => parse_ids(ids)?,
        (None, None) => bail!("give --prompt or --prompt-ids"),
    };
    let eos = match &tokenizer {
        Some(t) => t.eos_ids(&model.config),
        None => model.config.eos_token_ids.clone(),
    };
    let sampling = Sampling { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: a.seed };
    let streaming = matches!(a.format, GenerateFormat::Text);
    let mut so_far: Vec<u32> = Vec::new();
    let mut printed = String::new();
    let mut stdout = std::io::stdout();
    // The first failed write (a closed pipe is none: `crate::to_stdout`):
    // streaming stops, and the command ends on it once the generation returns.
    let mut write_error: Option<std::io::Error> = None;
    let g = generate(&model, &prompt_ids, a.max_tokens, sampling, &eos, |id| {
        if !streaming || write_error.is_some() {
            return;
        }
        so_far.push(id);
        let written = match &tokenizer {
            Some(t) => match t.decode(&so_far) {
                Ok(text) => match text.strip_prefix(printed.as_str()) {
                    Some(new) => {
                        let w = write!(stdout, "{new}");
                        printed = text;
                        w
                    }
                    None => Ok(()),
                },
                Err(_) => Ok(()),
            },
            None => write!(stdout, "{id} "),
        };
        write_error = crate::to_stdout(written.and_then(|()| stdout.flush())).err();
    })?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let text = match &tokenizer {
        Some(t) => t.decode(&g.new_ids)?,
        None => String::new(),
    };
    match a.format {
        GenerateFormat::Text => outln!()?,
        GenerateFormat::Json => outln!(
            "{}",
            serde_json::json!({
                "prompt_ids": prompt_ids,
                "new_ids": g.new_ids,
                "text": text,
                "stop": g.stop,
                "prefill_tokens_per_s": g.prefill_tokens_per_s,
                "decode_tokens_per_s": g.decode_tokens_per_s,
            })
        )?,
    }
    let decode = match g.decode_tokens_per_s {
        Some(rate) => format!("at {rate:.1} tok/s"),
        None => "(no decode step)".to_owned(),
    };
    eprintln!(
        "{} prompt tokens at {:.1} tok/s, {} new {decode} (stop: {})",
        prompt_ids.len(),
        g.prefill_tokens_per_s,
        g.new_ids.len(),
        g.stop
    );
    Ok(())
}

/// Output format of `bench-model`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BenchFormat {
    /// A Markdown table.
    Md,
    /// JSON.
    Json,
    /// CSV.
    Csv,
}

/// When `bench-model` also runs the dense f16 baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BaselineChoice {
    /// On cuda (the cuBLAS FP16 baseline), not elsewhere.
    Auto,
    /// On every backend (cpu and emu run the same sums through the f16 head GEMV).
    On,
    /// Never.
    Off,
}

/// Options of `bench-model`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A model directory or Hugging Face id.
    #[arg(long, conflicts_with = "shape", required_unless_present = "shape")]
    pub model: Option<String>,
    /// A published shape with random weights: bitnet-b1.58-2B-4T, bitnet_b1_58-large, bitnet_b1_58-3B.
    #[arg(long)]
    pub shape: Option<String>,
    /// Prompt tokens of the prefill test (ppN); 0 skips it (as llama-bench's `-p 0`).
    #[arg(short = 'p', long, default_value_t = 512)]
    pub prompt: usize,
    /// Generated tokens of the decode test (tgN); 0 skips it (as llama-bench's `-n 0`).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Repetitions.
    #[arg(short = 'r', long, default_value_t = 5)]
    pub reps: usize,
    /// Tokens in the cache before the decode test (llama-bench's `-d`): tgN
    /// runs at contexts d+1 … d+N (the test is named `tgN@dD`), and its bound
    /// adds the KV cache each step reads.
    #[arg(short = 'd', long, default_value_t = 0)]
    pub depth: usize,
    /// Backend: auto, cpu, emu or cuda.
    #[arg(long, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// md, json or csv.
    #[arg(short = 'o', long, value_enum, default_value_t = BenchFormat::Md)]
    pub output: BenchFormat,
    /// Also write the figures in the results schema (for `trinity report` / `compare`) here.
    #[arg(long, default_value = "results")]
    pub results_dir: PathBuf,
    /// Do not write a results file.
    #[arg(long)]
    pub no_results: bool,
    /// Precision of the lm_head: f32 (default; the reference's logits), f16
    /// or int8 (per-row scales). A reduced head also reports its
    /// logit error against the f32 head.
    #[arg(long, default_value_t = HeadPrecision::F32)]
    pub lm_head: HeadPrecision,
    /// Also time the prefill of the same model with dense f16 linears (cuBLAS
    /// `GemmEx` on cuda; norms, attention and head identical): the ppN ratio
    /// the ternary GEMM is judged by. Needs 2 bytes per weight more device memory.
    #[arg(long, value_enum, default_value_t = BaselineChoice::Auto)]
    pub f16_baseline: BaselineChoice,
}

/// Peak resident set size of this process, bytes (Linux), when known.
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 =
        s.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// `--model DIR|ID` loaded, or `--shape NAME` built with random weights; with the name to report.
pub fn model_or_shape(model: Option<&str>, shape: Option<&str>, device: &Device) -> Result<(BitNet, String)> {
    match (model, shape) {
        (Some(m), _) => {
            let dir = trinity_model::hub::resolve(m)?;
            Ok((BitNet::load(&dir, device).with_context(|| format!("loading {}", dir.display()))?, m.to_owned()))
        }
        (None, Some(s)) => {
            let cfg = config::shape(s)
                .with_context(|| format!("--shape {s}: unknown (one of {})", config::SHAPES.join(", ")))?;
            eprintln!("building {s} with random weights");
            Ok((BitNet::random(cfg, device, 1)?, s.to_owned()))
        }
        (None, None) => bail!("give --model or --shape"),
    }
}

/// `trinity bench-model`: llama-bench-style prefill and decode tokens/s with their spread.
pub fn bench_model(a: &BenchArgs) -> Result<()> {
    if a.reps == 0 {
        bail!("-r must be at least 1");
    }
    // As llama-bench: a test of 0 tokens is skipped.
    let (run_pp, run_tg) = (a.prompt > 0, a.n_gen > 0);
    if !run_pp && !run_tg {
        bail!("-p 0 and -n 0 leave no test to run");
    }
    if !run_tg && a.depth > 0 {
        bail!("-d {} sets the decode test's depth, and -n 0 skips that test", a.depth);
    }
    if !run_pp && a.f16_baseline == BaselineChoice::On {
        bail!("--f16-baseline on times the prefill test, and -p 0 skips it");
    }
    let (device, why): (Device, String) = crate::open_device_why(a.backend)?;
    let (mut model, name) = model_or_shape(a.model.as_deref(), a.shape.as_deref(), &device)?;
    let head_error = match a.lm_head {
        HeadPrecision::F32 => None,
        p => Some(head_error(&mut model, p).with_context(|| format!("--lm-head {p}"))?),
    };
    let c = &model.config;
    let (max, n) = (c.max_position_embeddings, a.n_gen);
    // Name the sum that is too long: the prefill test's, or the decode test's after its depth.
    if a.prompt + n > max {
        bail!("-p {} + -n {n} = {} tokens exceeds the model's context of {max}", a.prompt, a.prompt + n);
    }
    if a.depth + n > max {
        bail!("-d {} + -n {n} = {} tokens exceeds the model's context of {max}", a.depth, a.depth + n);
    }
    let context = (a.prompt + n).max(a.depth + n);
    let tokens: Vec<u32> = (0..a.prompt).map(|i| (i * 7919 % c.vocab) as u32).collect();
    let filler: Vec<u32> = (0..a.depth).map(|i| ((i * 104_729 + 3) % c.vocab) as u32).collect();
    let tg_name = match a.depth {
        0 => format!("tg{}", a.n_gen),
        d => format!("tg{}@d{d}", a.n_gen),
    };
    let (mut pp_secs, mut tg_secs) = (Vec::new(), Vec::new());
    // The bandwidth ceiling right after each decode repetition: on a shared
    // machine it moves by half within minutes, so each repetition is divided
    // by its own.
    let mut tg_bandwidth: Vec<f64> = Vec::new();
    let mut bandwidth_what = None;
    // The board's energy counter around each timed repetition (a GPU with NVML).
    let mut sensor = match &device {
        Device::Cuda(g) => trinity_measure::sensor::NvmlSensor::open(g.uuid()),
        _ => None,
    };
    let mut energy_mj = || {
        use trinity_measure::sensor::Sensor;
        sensor.as_mut().and_then(|s| s.energy_mj())
    };
    let (mut pp_energy, mut tg_energy) = (EnergyTally::default(), EnergyTally::default());
    // One cache per test, emptied before each repetition (as llama-bench keeps
    // one context and clears its memory): a fresh cache per repetition put the
    // first touch of its pages, and of the pass's buffers it keeps, inside the
    // timing. One untimed prefill first (llama-bench's warm-up run): module
    // loading, those page faults and allocator growth stay out of the figures.
    let (mut pp_cache, mut tg_cache) = (model.new_cache(context)?, model.new_cache(context)?);
    if run_pp {
        eprintln!("warm-up: pp{} …", a.prompt);
        model.forward(&tokens, &mut pp_cache, false)?;
    }
    if run_tg {
        // The decode test's cache pages too: a prefill over the positions it fills.
        let span: Vec<u32> = (0..a.depth + a.n_gen).map(|i| ((i * 7919 + 1) % c.vocab) as u32).collect();
        model.forward(&span, &mut tg_cache, false)?;
    }
    for rep in 0..a.reps {
        if run_pp {
            eprintln!("rep {}/{}: pp{} …", rep + 1, a.reps, a.prompt);
            let cache = &mut pp_cache;
            cache.clear(0);
            let e0 = energy_mj();
            let t = Instant::now();
            // The logits come back to the host: the work is done when it returns.
            model.forward(&tokens, cache, false)?;
            let secs = t.elapsed().as_secs_f64();
            pp_energy.add(e0, energy_mj(), secs, a.prompt);
            pp_secs.push(secs);
        }
        if run_tg {
            eprintln!("rep {}/{}: {tg_name} …", rep + 1, a.reps);
            // tg: decode steps from an empty cache (or one holding `depth` tokens,
            // prefilled untimed), as llama-bench's tgN (tgN @ dD).
            let cache = &mut tg_cache;
            cache.clear(0);
            if !filler.is_empty() {
                model.forward(&filler, cache, false)?;
            }
            let e0 = energy_mj();
            let t = Instant::now();
            let mut next = 1u32;
            for _ in 0..a.n_gen {
                // Greedy on the device, as `generate` and `serve` decode.
                let chunk = trinity_model::SeqChunk { slot: 0, tokens: &[next] };
                next = model.step(cache, &[chunk], false)?.greedy[0];
            }
            let secs = t.elapsed().as_secs_f64();
            tg_energy.add(e0, energy_mj(), secs, a.n_gen);
            tg_secs.push(secs);
            if let Some((bw, what)) = bandwidth_ceiling(&device)? {
                tg_bandwidth.push(bw);
                bandwidth_what = Some(what);
            }
        }
    }
    // The pool every CPU op splits its work across (`--threads`), as llama-bench reports `n_threads`.
    let threads = (device.kind() == trinity::BackendKind::Cpu).then(rayon::current_num_threads);
    let run_baseline = match a.f16_baseline {
        BaselineChoice::Auto => run_pp && device.kind() == trinity::BackendKind::Cuda,
        BaselineChoice::On => true,
        BaselineChoice::Off => false,
    };
    // The same prompt through the dense f16 baseline, after the ternary runs
    // (it needs 8× the linears' memory). A failure (out of memory, no cuBLAS)
    // is reported and leaves the ternary figures standing.
    let baseline = match run_baseline {
        false => None,
        true => match dense_f16_prefill(&mut model, &tokens, context, a.reps) {
            Ok(secs) => Some(secs),
            Err(e) => {
                eprintln!("warning: the dense f16 baseline did not run: {e:#}");
                None
            }
        },
    };
    // Bytes a decode step reads: the weights, and the KV cache at the test's mean context.
    let decode_bytes = model.decode_bytes();
    let kv_bytes = match run_tg {
        true => (model.kv_bytes_per_position() as f64 * (a.depth as f64 + (a.n_gen as f64 + 1.0) / 2.0)) as usize,
        false => 0,
    };
    let int8_macs = match run_pp {
        true => {
            eprintln!("ceiling: int8 peak …");
            int8_ceiling(&device)
        }
        false => None,
    };
    let pp = run_pp.then(|| {
        let mut f = TestFigures::new(format!("pp{}", a.prompt), a.prompt, pp_secs, pp_energy.window());
        // Prefill does one int8 multiply-add per ternary weight per token.
        f.fraction_of_bound = int8_macs.map(|(p, _)| f.tokens_per_s * model.linear_weights() as f64 / p);
        f
    });
    let tg = run_tg.then(|| {
        let mut f = TestFigures::new(tg_name, a.n_gen, tg_secs, tg_energy.window());
        f.depth = Some(a.depth);
        // Decode reads every weight once per token: each repetition against
        // the bandwidth measured right after it, then the mean.
        let fracs: Vec<f64> =
            f.samples.iter().zip(&tg_bandwidth).map(|(t, bw)| t * (decode_bytes + kv_bytes) as f64 / bw).collect();
        f.fraction_of_bound = (!fracs.is_empty()).then(|| mean_sd(&fracs).0);
        f
    });
    let pp_dense_f16 = baseline.zip(pp.as_ref()).map(|(secs, ternary)| {
        let figures = TestFigures::new(format!("pp{}-dense-f16", a.prompt), a.prompt, secs, None);
        DenseBaseline {
            linears: match device.kind() {
                trinity::BackendKind::Cuda => "cuBLAS FP16 linears",
                _ => "dense f16 linears",
            }
            .into(),
            ternary_speedup: ternary.tokens_per_s / figures.tokens_per_s,
            figures,
        }
    });
    let report = ModelBench {
        model: name,
        random_weights: a.shape.is_some(),
        backend: device.kind(),
        threads,
        reps: a.reps,
        lm_head: a.lm_head.name().into(),
        pp,
        tg,
        pp_dense_f16,
        decode_bytes_per_token: decode_bytes,
        kv_bytes_per_token: kv_bytes,
        linear_weights: model.linear_weights(),
        bandwidth_bytes_per_s: bandwidth_what.map(|_| mean_sd(&tg_bandwidth).0),
        bandwidth_ceiling: bandwidth_what.map(str::to_owned),
        bandwidth_samples: bandwidth_what.map(|_| tg_bandwidth),
        int8_macs_per_s: int8_macs.map(|(p, _)| p),
        int8_peak_instruction: int8_macs.map(|(_, instruction)| instruction.to_owned()),
        int8_ceiling: int8_macs.map(|(_, instruction)| match device.kind() {
            trinity::BackendKind::Cuda => format!("{instruction} at 8192³"),
            _ => format!("{instruction} peak, all threads"),
        }),
        peak_rss_bytes: peak_rss(),
        gpu_memory_used_bytes: device.cuda().and_then(|g| trinity_measure::sensor::gpu_memory_used(g.uuid())),
        head_error,
    };
    if !a.no_results {
        let path = report.results_file(&device, &why).write_new(&a.results_dir)?;
        eprintln!("results: {}", path.display());
    }
    match a.output {
        BenchFormat::Md => out!("{}", model_bench::markdown::render(&report))?,
        BenchFormat::Json => outln!("{}", serde_json::to_string(&report)?)?,
        BenchFormat::Csv => out!("{}", model_bench::csv::render(&report))?,
    }
    Ok(())
}

/// Seconds of `reps` prefills of `tokens` with the model's linears as dense
/// f16 (after one untimed warm-up); the model's ternary linears are restored.
fn dense_f16_prefill(model: &mut BitNet, tokens: &[u32], context: usize, reps: usize) -> Result<Vec<f64>> {
    eprintln!("dense f16 baseline: converting the linears …");
    model.set_linears(Linears::DenseF16)?;
    let timed = (|| -> Result<Vec<f64>> {
        model.forward(tokens, &mut model.new_cache(context)?, false)?;
        let mut secs = Vec::with_capacity(reps);
        for rep in 0..reps {
            eprintln!("rep {}/{reps}: pp{} with dense f16 linears …", rep + 1, tokens.len());
            let mut cache = model.new_cache(context)?;
            let t = Instant::now();
            model.forward(tokens, &mut cache, false)?;
            secs.push(t.elapsed().as_secs_f64());
        }
        Ok(secs)
    })();
    model.set_linears(Linears::Ternary)?;
    timed
}

/// The bandwidth a decode repetition is divided by, measured right after
/// it, and what was measured (`None` on the emulator, which has none).
fn bandwidth_ceiling(device: &Device) -> Result<Option<(f64, &'static str)>> {
    Ok(match device.kind() {
        trinity::BackendKind::Cpu => {
            Some((trinity::ceilings::read_bandwidth(512 << 20, 5), "read bandwidth (all threads)"))
        }
        // Read + write of a device-to-device copy: the bandwidth the GPU bound is quoted in.
        trinity::BackendKind::Cuda => match device.cuda() {
            Some(g) => Some((trinity::ceilings::gpu_copy_bandwidth(g, 512 << 20, 5)?, "device copy, read + write")),
            None => None,
        },
        trinity::BackendKind::Emu => None,
    })
}

/// Prefill's compute ceiling, int8 multiply-adds per second, and what it is
/// the peak of: the CPU's byte dot-product instruction, or cuBLASLt's INT8
/// tensor-core GEMM at 8192³ on a GPU.
fn int8_ceiling(device: &Device) -> Option<(f64, &'static str)> {
    match device.kind() {
        trinity::BackendKind::Cpu => {
            trinity::ceilings::int8_macs_per_s(5).zip(trinity::ceilings::int8_peak_instruction())
        }
        trinity::BackendKind::Cuda => {
            device.cuda().and_then(|g| match trinity::ceilings::gpu_int8_macs_per_s(g, 8192, 5) {
                Ok(p) => Some((p, "cuBLASLt INT8 GEMM")),
                Err(e) => {
                    eprintln!("warning: no int8 tensor-core ceiling: {e}");
                    None
                }
            })
        }
        trinity::BackendKind::Emu => None,
    }
}

/// Switches `model`'s head to `precision` and measures its logits against
/// the f32 head's over a 16-token prompt (every position).
fn head_error(model: &mut BitNet, precision: HeadPrecision) -> Result<HeadError> {
    let v = model.config.vocab;
    let prompt: Vec<u32> = (0..16).map(|i| ((i * 104_729 + 11) % v) as u32).collect();
    let mut cache = model.new_cache(prompt.len())?;
    let want = model.forward(&prompt, &mut cache, true)?;
    model.set_head_precision(precision)?;
    let mut cache = model.new_cache(prompt.len())?;
    let got = model.forward(&prompt, &mut cache, true)?;
    let mut e = HeadError { positions: want.len(), max_abs_logit_diff: 0.0, logit_sd: 0.0, same_top1: 0 };
    let mut sd_sum = 0.0f64;
    for (w, g) in want.iter().zip(&got) {
        e.max_abs_logit_diff = w.iter().zip(g).map(|(a, b)| (a - b).abs()).fold(e.max_abs_logit_diff, f32::max);
        let mean = w.iter().map(|&x| x as f64).sum::<f64>() / w.len() as f64;
        sd_sum += (w.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        e.same_top1 += usize::from(trinity_model::generate::argmax(w) == trinity_model::generate::argmax(g));
    }
    e.logit_sd = (sd_sum / want.len().max(1) as f64) as f32;
    Ok(e)
}

//! `trinity logits`, `trinity generate`, `trinity bench-model`: stdout carries the data, stderr the progress.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use trinity::{BackendChoice, Device};
use trinity_measure::model_bench::{self, BenchPlan};
use trinity_measure::progress::Progress;
use trinity_model::generate::{Sampling, Stop, TextStream, Tokenizer, generate};
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
    let mut stream = TextStream::default();
    let mut stdout = std::io::stdout();
    // A failed write ends the generation: a closed pipe (`| head`) quietly,
    // as `crate::to_stdout` takes it; any other failure, a write's or the
    // tokenizer's, also ends the command, once the generation returns.
    let mut failed: Option<anyhow::Error> = None;
    let g = generate(&model, &prompt_ids, a.max_tokens, sampling, &eos, |id| {
        if !streaming {
            return ControlFlow::Continue(());
        }
        let piece = match &tokenizer {
            Some(t) => match stream.push(t, id) {
                Ok(new) => new,
                Err(e) => {
                    failed = Some(e.into());
                    return ControlFlow::Break(());
                }
            },
            None => format!("{id} "),
        };
        match write!(stdout, "{piece}").and_then(|()| stdout.flush()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = crate::to_stdout(Err(e)).err().map(Into::into);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    match a.format {
        // The newline ends the streamed text, after what still waited in the stream.
        GenerateFormat::Text => match &tokenizer {
            Some(t) => outln!("{}", stream.finish(t)?)?,
            None => outln!()?,
        },
        GenerateFormat::Json => outln!(
            "{}",
            serde_json::json!({
                "prompt_ids": prompt_ids,
                "new_ids": g.new_ids,
                "text": match &tokenizer {
                    Some(t) => t.decode(&g.new_ids)?,
                    None => String::new(),
                },
                "stop": g.stop.name(),
                "prefill_tokens_per_s": g.prefill_tokens_per_s,
                "decode_tokens_per_s": g.decode_tokens_per_s,
            })
        )?,
    }
    let decode = match g.decode_tokens_per_s {
        Some(rate) => format!("at {rate:.1} tok/s"),
        None => "(no decode step)".to_owned(),
    };
    // Only a failed write or decode breaks the generation here, and only a closed pipe gets this far.
    let stop = match g.stop {
        Stop::Caller => "output closed",
        other => other.name(),
    };
    eprintln!(
        "{} prompt tokens at {:.1} tok/s, {} new {decode} (stop: {stop})",
        prompt_ids.len(),
        g.prefill_tokens_per_s,
        g.new_ids.len(),
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
    let mut plan = BenchPlan {
        prompt: a.prompt,
        n_gen: a.n_gen,
        reps: a.reps,
        depth: a.depth,
        lm_head: a.lm_head,
        f16_baseline: a.f16_baseline == BaselineChoice::On,
    };
    // The options' contradictions before a device opens or a model is built.
    plan.check()?;
    let (device, why): (Device, String) = crate::open_device_why(a.backend)?;
    plan.f16_baseline = match a.f16_baseline {
        BaselineChoice::Auto => a.prompt > 0 && device.kind() == trinity::BackendKind::Cuda,
        BaselineChoice::On => true,
        BaselineChoice::Off => false,
    };
    let (mut model, name) = model_or_shape(a.model.as_deref(), a.shape.as_deref(), &device)?;
    let report = plan.run(&mut model, &device, name, a.shape.is_some(), &StderrSteps)?;
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

/// `bench-model`'s progress: a line per step on stderr.
struct StderrSteps;

impl Progress for StderrSteps {
    fn step(&self, message: &str) {
        eprintln!("{message} …");
    }
    fn warning(&self, message: &str) {
        eprintln!("warning: {message}");
    }
}

//! `trinity logits`, `trinity generate`, `trinity bench-model`: stdout carries the data, stderr the progress.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use trinity::{BackendChoice, Device};
use trinity_model::generate::{Sampling, Tokenizer, generate};
use trinity_model::{BitNet, config};

/// Which model to run.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// A model directory (config.json, safetensors, tokenizer.json) or a Hugging Face id in the local cache.
    #[arg(long)]
    pub model: String,
    /// Backend: auto (cuda when a GPU starts, else cpu), cpu, emu or cuda.
    #[arg(long, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
}

fn load(args: &ModelArgs) -> Result<(BitNet, PathBuf)> {
    let dir = trinity_model::hub::resolve(&args.model)?;
    let device = crate::open_device(args.backend)?;
    let t = Instant::now();
    let model = BitNet::load(&dir, &device).with_context(|| format!("loading {}", dir.display()))?;
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
    println!("{out}");
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
    let g = generate(&model, &prompt_ids, a.max_tokens, sampling, &eos, |id| {
        if !streaming {
            return;
        }
        so_far.push(id);
        match &tokenizer {
            Some(t) => {
                if let Ok(text) = t.decode(&so_far)
                    && let Some(new) = text.strip_prefix(printed.as_str())
                {
                    let _ = write!(stdout, "{new}");
                    printed = text;
                }
            }
            None => {
                let _ = write!(stdout, "{id} ");
            }
        }
        let _ = stdout.flush();
    })?;
    let text = match &tokenizer {
        Some(t) => t.decode(&g.new_ids)?,
        None => String::new(),
    };
    match a.format {
        GenerateFormat::Text => println!(),
        GenerateFormat::Json => println!(
            "{}",
            serde_json::json!({
                "prompt_ids": prompt_ids,
                "new_ids": g.new_ids,
                "text": text,
                "stop": g.stop,
                "prefill_tokens_per_s": g.prefill_tokens_per_s,
                "decode_tokens_per_s": g.decode_tokens_per_s,
            })
        ),
    }
    eprintln!(
        "{} prompt tokens at {:.1} tok/s, {} new at {:.1} tok/s (stop: {})",
        prompt_ids.len(),
        g.prefill_tokens_per_s,
        g.new_ids.len(),
        g.decode_tokens_per_s,
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

/// Options of `bench-model`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A model directory or Hugging Face id.
    #[arg(long, conflicts_with = "shape", required_unless_present = "shape")]
    pub model: Option<String>,
    /// A published shape with random weights: bitnet-b1.58-2B-4T, bitnet_b1_58-large, bitnet_b1_58-3B.
    #[arg(long)]
    pub shape: Option<String>,
    /// Prompt tokens of the prefill test (ppN).
    #[arg(short = 'p', long, default_value_t = 512)]
    pub prompt: usize,
    /// Generated tokens of the decode test (tgN).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Repetitions.
    #[arg(short = 'r', long, default_value_t = 5)]
    pub reps: usize,
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
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
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
    if a.reps == 0 || a.prompt == 0 || a.n_gen == 0 {
        bail!("-p, -n and -r must be at least 1");
    }
    let (device, why): (Device, String) = crate::open_device_why(a.backend)?;
    let (model, name) = model_or_shape(a.model.as_deref(), a.shape.as_deref(), &device)?;
    let c = &model.config;
    let context = (a.prompt + a.n_gen).min(c.max_position_embeddings);
    if a.prompt + a.n_gen > c.max_position_embeddings {
        bail!("-p {} + -n {} exceeds the context of {}", a.prompt, a.n_gen, c.max_position_embeddings);
    }
    let tokens: Vec<u32> = (0..a.prompt).map(|i| (i * 7919 % c.vocab) as u32).collect();
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    let (mut pp_s, mut tg_s) = (Vec::new(), Vec::new());
    for rep in 0..a.reps {
        eprintln!("rep {}/{}: pp{} …", rep + 1, a.reps, a.prompt);
        let mut cache = model.new_cache(context)?;
        let t = Instant::now();
        model.forward(&tokens, &mut cache, false)?;
        pp_s.push(t.elapsed().as_secs_f64());
        pp.push(a.prompt as f64 / t.elapsed().as_secs_f64());
        eprintln!("rep {}/{}: tg{} …", rep + 1, a.reps, a.n_gen);
        // tg: decode steps from an empty cache, as llama-bench's tgN.
        let mut cache = model.new_cache(context)?;
        let t = Instant::now();
        let mut next = 1u32;
        for _ in 0..a.n_gen {
            // Greedy on the device, as `generate` and `serve` decode.
            let chunk = trinity_model::SeqChunk { slot: 0, tokens: &[next] };
            next = model.step(&mut cache, &[chunk], false)?.greedy[0];
        }
        tg_s.push(t.elapsed().as_secs_f64());
        tg.push(a.n_gen as f64 / t.elapsed().as_secs_f64());
    }
    if !a.no_results {
        use trinity_measure::model_bench::{ModelTest, model_bench_results};
        let tests = [
            ModelTest { test: format!("pp{}", a.prompt), mode: "prefill", tokens: a.prompt, seconds: pp_s },
            ModelTest { test: format!("tg{}", a.n_gen), mode: "decode", tokens: a.n_gen, seconds: tg_s },
        ];
        let mut notes = vec![format!("{} repetitions; tg from an empty cache, as llama-bench's tgN.", a.reps)];
        if a.shape.is_some() {
            notes.push("Random weights of the published shape (--shape).".into());
        }
        let results = model_bench_results(&device, &why, &name, &tests, notes);
        let path = results.write_new(&a.results_dir)?;
        eprintln!("results: {}", path.display());
    }
    let (pp_m, pp_s) = mean_sd(&pp);
    let (tg_m, tg_s) = mean_sd(&tg);
    let rss = peak_rss();
    let backend = device.kind().name();
    let decode_gb = model.decode_bytes() as f64 / 1e9;
    match a.output {
        BenchFormat::Md => {
            println!("| model | backend | test | tokens/s |");
            println!("|---|---|---|---|");
            println!("| {name} | {backend} | pp{} | {pp_m:.2} ± {pp_s:.2} |", a.prompt);
            println!("| {name} | {backend} | tg{} | {tg_m:.2} ± {tg_s:.2} |", a.n_gen);
            println!();
            println!(
                "{} repetitions; decode reads {decode_gb:.3} GB of weights per token (2-bit linears + f32 lm_head); peak RSS {}",
                a.reps,
                rss.map_or("unknown".into(), |b| format!("{:.2} GB", b as f64 / 1e9))
            );
        }
        BenchFormat::Json => println!(
            "{}",
            serde_json::json!({
                "model": name, "backend": backend, "reps": a.reps,
                "pp": {"tokens": a.prompt, "tokens_per_s": pp_m, "sd": pp_s, "samples": pp},
                "tg": {"tokens": a.n_gen, "tokens_per_s": tg_m, "sd": tg_s, "samples": tg},
                "decode_bytes_per_token": model.decode_bytes(),
                "peak_rss_bytes": rss,
            })
        ),
        BenchFormat::Csv => {
            println!("model,backend,test,tokens_per_s,sd,reps,peak_rss_bytes");
            let r = rss.map_or(String::new(), |b| b.to_string());
            println!("{name},{backend},pp{},{pp_m},{pp_s},{},{r}", a.prompt, a.reps);
            println!("{name},{backend},tg{},{tg_m},{tg_s},{},{r}", a.n_gen, a.reps);
        }
    }
    Ok(())
}

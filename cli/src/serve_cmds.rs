//! `trinity serve` and `trinity bench-serve`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use trinity::BackendChoice;
use trinity_measure::serve_bench::{self, Level, RequestTiming, ServeBench};
use trinity_model::BitNet;
use trinity_model::generate::Tokenizer;
use trinity_serve::{ServeOptions, Server};

use crate::model_cmds::BenchFormat;

/// `trinity serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A model directory or a Hugging Face id in the local cache.
    #[arg(long)]
    pub model: String,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Backend: auto (cuda when a GPU starts, else cpu), cpu or cuda.
    #[arg(long, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Sequences decoding together (KV-cache slots).
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// Tokens per sequence (prompt and generation; capped at the model's).
    #[arg(long, default_value_t = 2048)]
    pub ctx: usize,
    /// Requests that may wait for a slot before new ones get 429.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Prompt tokens per batched step (bounds how long a new prompt stalls running sequences); each prompt goes in pieces of this size.
    #[arg(long, default_value_t = 128)]
    pub prefill_chunk: usize,
    /// Bearer token required on /v1/* (default: none).
    #[arg(long)]
    pub api_key: Option<String>,
    /// The model id clients name (default: the --model argument).
    #[arg(long)]
    pub served_name: Option<String>,
}

/// `trinity serve`: loads the model and serves until killed.
pub fn serve(a: &ServeArgs) -> Result<()> {
    if a.backend == BackendChoice::Emu {
        bail!("--backend emu is a test device, far too slow to serve; use cpu or cuda");
    }
    let dir = trinity_model::hub::resolve(&a.model)?;
    let device = crate::open_device(a.backend)?;
    let model = BitNet::load(&dir, &device).with_context(|| format!("loading {}", dir.display()))?;
    let tokenizer = match Tokenizer::load(&dir) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("no tokenizer ({e}): prompts must be token ids, and replies carry no text");
            None
        }
    };
    let mut opts = ServeOptions::new(a.served_name.clone().unwrap_or_else(|| a.model.clone()));
    opts.host = a.host.clone();
    opts.port = a.port;
    opts.max_batch = a.max_batch;
    opts.context = a.ctx;
    opts.max_queue = a.max_queue;
    opts.prefill_chunk = a.prefill_chunk;
    opts.api_key = a.api_key.clone();
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let server = Server::start(model, tokenizer, opts).await?;
        eprintln!("serving {} on http://{} (OpenAI API under /v1)", a.model, server.local_addr());
        server.run().await
    })?;
    Ok(())
}

/// `trinity bench-serve`.
#[derive(Args, Debug)]
pub struct BenchServeArgs {
    /// A model directory or Hugging Face id.
    #[arg(long, conflicts_with = "shape", required_unless_present = "shape")]
    pub model: Option<String>,
    /// A published shape with random weights: bitnet-b1.58-2B-4T, bitnet_b1_58-large, bitnet_b1_58-3B.
    #[arg(long)]
    pub shape: Option<String>,
    /// Backend: auto, cpu or cuda.
    #[arg(long, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Concurrency levels, comma-separated.
    #[arg(long, default_value = "1,4,8,16")]
    pub concurrency: String,
    /// Requests per client at each level.
    #[arg(long, default_value_t = 2)]
    pub requests_per_client: usize,
    /// Prompt tokens per request.
    #[arg(short = 'p', long, default_value_t = 32)]
    pub prompt: usize,
    /// Tokens generated per request.
    #[arg(short = 'n', long = "n-gen", default_value_t = 32)]
    pub n_gen: usize,
    /// md, json or csv.
    #[arg(short = 'o', long, value_enum, default_value_t = BenchFormat::Md)]
    pub output: BenchFormat,
}

/// `trinity bench-serve`: starts the server in this process on a free port and
/// drives it with streaming clients at each concurrency level.
pub fn bench_serve(a: &BenchServeArgs) -> Result<()> {
    let levels: Vec<usize> = a
        .concurrency
        .split(',')
        .map(|s| s.trim().parse::<usize>().with_context(|| format!("--concurrency: `{s}` is not a number")))
        .collect::<Result<_>>()?;
    if levels.contains(&0) || a.prompt == 0 || a.n_gen == 0 || a.requests_per_client == 0 {
        bail!("--concurrency levels, -p, -n and --requests-per-client must be at least 1");
    }
    let device = crate::open_device(a.backend)?;
    let (model, name) = crate::model_cmds::model_or_shape(a.model.as_deref(), a.shape.as_deref(), &device)?;
    let vocab = model.config.vocab;
    let mut opts = ServeOptions::new(name.clone());
    opts.port = 0;
    opts.max_batch = levels.iter().copied().max().unwrap_or(1);
    opts.context = a.prompt + a.n_gen + 1;
    opts.max_queue = 1024;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let levels: Vec<Level> = rt.block_on(async {
        let server = Server::start(model, None, opts).await?;
        let url = format!("http://{}/v1/completions", server.local_addr());
        tokio::spawn(server.run());
        let client = reqwest::Client::new();
        let mut out = Vec::new();
        for &c in &levels {
            eprintln!("concurrency {c}: {} requests of {} + {} tokens …", c * a.requests_per_client, a.prompt, a.n_gen);
            let t0 = Instant::now();
            let mut tasks = Vec::new();
            for client_no in 0..c {
                let (client, url) = (client.clone(), url.clone());
                let (p, n, r) = (a.prompt, a.n_gen, a.requests_per_client);
                tasks.push(tokio::spawn(async move {
                    let mut timings = Vec::new();
                    for i in 0..r {
                        let prompt: Vec<u32> =
                            (0..p).map(|j| ((client_no * 131 + i * 17 + j * 7919) % vocab) as u32).collect();
                        timings.push(one_request(&client, &url, &prompt, n).await?);
                    }
                    anyhow::Ok(timings)
                }));
            }
            let mut timings = Vec::new();
            for t in tasks {
                timings.extend(t.await.context("a client task panicked")??);
            }
            let wall = t0.elapsed().as_secs_f64();
            out.push(Level::of(c, wall, &timings).context("a level with no request or an empty stream")?);
        }
        anyhow::Ok(out)
    })?;
    let report =
        ServeBench { model: name, backend: device.kind(), prompt_tokens: a.prompt, generated_tokens: a.n_gen, levels };
    match a.output {
        BenchFormat::Md => out!("{}", serve_bench::markdown::render(&report))?,
        BenchFormat::Json => outln!("{}", serde_json::to_string(&report)?)?,
        BenchFormat::Csv => out!("{}", serve_bench::csv::render(&report))?,
    }
    Ok(())
}

/// One streamed greedy completion of `prompt`, timed token by token.
async fn one_request(client: &reqwest::Client, url: &str, prompt: &[u32], n: usize) -> Result<RequestTiming> {
    use futures_util::StreamExt;
    let body = serde_json::json!({
        "prompt": prompt, "max_tokens": n, "temperature": 0, "stream": true, "return_token_ids": true
    });
    let t0 = Instant::now();
    let resp = client.post(url).json(&body).timeout(Duration::from_secs(3600)).send().await?;
    if !resp.status().is_success() {
        bail!("{} from the server: {}", resp.status(), resp.text().await.unwrap_or_default());
    }
    let mut stream = resp.bytes_stream();
    let (mut buf, mut stamps) = (String::new(), Vec::new());
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else { continue };
            if data == "[DONE]" {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(data).context("a chunk that is not JSON")?;
            let ids = v["choices"][0]["token_ids"].as_array().map_or(0, |a| a.len());
            for _ in 0..ids {
                stamps.push(t0.elapsed().as_secs_f64());
            }
        }
    }
    if stamps.is_empty() {
        bail!("the stream carried no tokens");
    }
    Ok(RequestTiming { token_times: stamps })
}

//! `trinity bench-model`'s figures: one [`ModelBench`] per run, which is the
//! JSON it prints field for field, and from which the other outputs are
//! written, one module per format, as hyperfine's exports:
//!
//! - [`markdown`]: llama-bench's table (`| model | backend | lm_head | test |
//!   tokens/s | of bound |`) and a line per bound, energy and error figure;
//! - [`csv`]: one row per test;
//! - [`ModelBench::results_file`]: the results schema, so `trinity report` and
//!   `trinity compare` read whole-model throughput like any other run.
//!
//! [`BenchPlan::run`] times a loaded model and returns it.
//!
//! A test that did not run (`-p 0`, `-n 0`, no baseline) is `None`: null in the
//! JSON and absent from every other output.

pub mod csv;
pub mod markdown;
mod plan;

pub use plan::{BenchModelError, BenchPlan};

use serde::Serialize;
use trinity::{BackendKind, Device};

use crate::results::{BenchmarkResult, Headline, Ratio, RunResults, SCHEMA_VERSION};
use crate::sensor::EnergyWindow;
use crate::stats::Summary;
use crate::timing::StopReason;

/// Everything one `bench-model` run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelBench {
    /// The model directory or hub id (`--model`), or the published shape (`--shape`).
    pub model: String,
    /// True for a `--shape` run: random weights of the published shape.
    pub random_weights: bool,
    /// The backend that ran it.
    pub backend: BackendKind,
    /// The CPU threads every op splits its work across (as llama-bench's
    /// `n_threads`); `None` off the CPU.
    pub threads: Option<usize>,
    /// Timed repetitions of each test.
    pub reps: usize,
    /// The lm_head's precision: `f32`, `f16` or `int8`.
    pub lm_head: String,
    /// The prefill test (`ppN`); `None` when skipped (`-p 0`).
    pub pp: Option<TestFigures>,
    /// The decode test (`tgN`, or `tgN@dD` after `D` tokens); `None` when skipped (`-n 0`).
    pub tg: Option<TestFigures>,
    /// The prefill test again with dense f16 linears; `None` when it did not run.
    pub pp_dense_f16: Option<DenseBaseline>,
    /// Bytes of weights a decode step reads (2-bit linears and the lm_head).
    pub decode_bytes_per_token: usize,
    /// Bytes of KV cache a decode step reads at the decode test's mean context (0 without one).
    pub kv_bytes_per_token: usize,
    /// Ternary weights of the linears: int8 multiply-adds per prefill token.
    pub linear_weights: usize,
    /// The mean of [`Self::bandwidth_samples`], bytes/s; `None` without a decode test or a probe.
    pub bandwidth_bytes_per_s: Option<f64>,
    /// The bandwidth measured right after each decode repetition, bytes/s.
    pub bandwidth_samples: Option<Vec<f64>>,
    /// What the bandwidth probe measures (`read bandwidth (all threads)`, `device copy, read + write`).
    pub bandwidth_ceiling: Option<String>,
    /// The int8 multiply-add peak measured after the runs, per second; `None` without a prefill test or a probe.
    pub int8_macs_per_s: Option<f64>,
    /// The instruction or library call that peak is of (`AVX2 vpmaddubsw`, `cuBLASLt INT8 GEMM`).
    pub int8_peak_instruction: Option<String>,
    /// How that peak was measured (`AVX2 vpmaddubsw peak, all threads`, `cuBLASLt INT8 GEMM at 8192³`).
    pub int8_ceiling: Option<String>,
    /// This process's peak resident set size, bytes (Linux).
    pub peak_rss_bytes: Option<u64>,
    /// Device memory in use after the runs (NVML, whole device), bytes.
    pub gpu_memory_used_bytes: Option<u64>,
    /// A reduced lm_head's logits against the f32 head's; `None` with the f32 head.
    pub head_error: Option<HeadError>,
}

/// One timed test: its repetitions and what they come to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestFigures {
    /// The test's name, as llama-bench's: `pp512`, `tg128`, `tg128@d2048`.
    pub test: String,
    /// Tokens per repetition: the prompt (`ppN`) or the generated tokens (`tgN`).
    pub tokens: usize,
    /// Tokens in the cache before each decode repetition; `None` for prefill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    /// Mean tokens/s of the repetitions.
    pub tokens_per_s: f64,
    /// Their sample standard deviation.
    pub sd: f64,
    /// Tokens/s of each repetition.
    pub samples: Vec<f64>,
    /// Seconds of each repetition.
    pub seconds: Vec<f64>,
    /// The mean fraction of the test's bound (each decode repetition against
    /// the bandwidth measured right after it; prefill against the int8 peak);
    /// `None` where no bound was measured.
    pub fraction_of_bound: Option<f64>,
    /// Board energy per token over the timed repetitions (a GPU with an energy counter).
    pub joules_per_token: Option<f64>,
    /// Mean board power over the timed repetitions, watts.
    pub mean_power_w: Option<f64>,
    /// The energy window the two figures above come from.
    #[serde(skip)]
    pub energy: Option<EnergyWindow>,
}

impl TestFigures {
    /// `test`'s figures from the seconds of each repetition of `tokens` tokens
    /// (`energy`: the board's counter over them); no fraction of a bound yet.
    pub fn new(test: String, tokens: usize, seconds: Vec<f64>, energy: Option<EnergyWindow>) -> Self {
        let samples: Vec<f64> = seconds.iter().map(|s| tokens as f64 / s).collect();
        let (tokens_per_s, sd) = mean_sd(&samples);
        TestFigures {
            test,
            tokens,
            depth: None,
            tokens_per_s,
            sd,
            samples,
            seconds,
            fraction_of_bound: None,
            joules_per_token: energy.map(|e| e.joules_per_iteration()),
            mean_power_w: energy.map(|e| e.mean_power_w()),
            energy,
        }
    }
}

/// The prefill test with the model's linears as dense f16: the figure the
/// ternary GEMM is judged by.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DenseBaseline {
    /// What ran the linears: `cuBLAS FP16 linears` on cuda, `dense f16 linears` elsewhere.
    pub linears: String,
    /// Its repetitions (named `ppN-dense-f16`).
    #[serde(flatten)]
    pub figures: TestFigures,
    /// The ternary prefill's mean tokens/s over this one's.
    pub ternary_speedup: f64,
}

/// How far a reduced lm_head's logits are from the f32 head's over one prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeadError {
    /// Positions compared (every position of the prompt).
    pub positions: usize,
    /// The largest |Δlogit| over every position and token.
    pub max_abs_logit_diff: f32,
    /// The f32 logits' standard deviation, averaged over positions: the scale of that error.
    pub logit_sd: f32,
    /// Positions whose top-1 token is the same under both heads.
    pub same_top1: usize,
}

/// Mean and sample standard deviation (0 for one sample).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

impl ModelBench {
    /// The tests that ran, in output order: prefill, decode, the dense baseline.
    pub fn tests(&self) -> impl Iterator<Item = &TestFigures> {
        self.pp.iter().chain(&self.tg).chain(self.pp_dense_f16.as_ref().map(|b| &b.figures))
    }

    /// The results-schema file of this run on `device` (`why`: how the backend was chosen).
    pub fn results_file(&self, device: &Device, why: &str) -> RunResults {
        model_bench_results(device, why, &self.model, self.benchmarks(), self.notes())
    }

    /// Each test as a results-schema benchmark (`model/{model}/{test}`, its
    /// repetitions the samples, its fraction of a bound the ratio): the
    /// entries `trinity compare` matches between runs.
    pub fn benchmarks(&self) -> Vec<BenchmarkResult> {
        let pp_bound = |f: &TestFigures| {
            f.fraction_of_bound.map(|value| Ratio { to: "int8 multiply-add peak (same run)".into(), value })
        };
        let tg_bound = |f: &TestFigures| {
            f.fraction_of_bound
                .zip(self.bandwidth_ceiling.as_ref())
                .map(|(value, what)| Ratio { to: format!("{what} (after each repetition)"), value })
        };
        let benchmark = |f: &TestFigures, mode: &str, ratio: Option<Ratio>| {
            let time = Summary::of(&f.seconds)?;
            Some(BenchmarkResult {
                name: format!("model/{}/{}", self.model, f.test),
                kernel: "bitnet_forward".into(),
                backend: self.backend,
                shape: f.test.clone(),
                mode: mode.into(),
                unit: "token".into(),
                work_per_iteration: f.tokens as f64,
                throughput: f.tokens as f64 / time.median,
                time,
                samples: f.seconds.clone(),
                iterations_per_sample: 1,
                stopped_by: StopReason::MaxSamples,
                ratio,
                sensors: None,
                energy: f.energy,
            })
        };
        let mut out = Vec::new();
        out.extend(self.pp.as_ref().and_then(|f| benchmark(f, "prefill", pp_bound(f))));
        out.extend(self.tg.as_ref().and_then(|f| benchmark(f, "decode", tg_bound(f))));
        out.extend(self.pp_dense_f16.as_ref().and_then(|b| benchmark(&b.figures, "prefill", None)));
        out
    }

    /// The results file's notes: how the run was set up, and the figures
    /// that are not a test's (the head's error, the baseline's ratio).
    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(t) = self.threads {
            notes.push(format!("{t} CPU threads."));
        }
        notes.push(match self.tg.as_ref().and_then(|t| t.depth) {
            None => format!("{} repetitions; no decode test (-n 0).", self.reps),
            Some(0) => format!("{} repetitions; tg from an empty cache, as llama-bench's tgN.", self.reps),
            Some(d) => format!(
                "{} repetitions; tg after {d} tokens prefilled untimed, as llama-bench's tgN @ d{d}.",
                self.reps
            ),
        });
        notes.push(format!(
            "lm_head in {}; decode reads {} bytes of weights per token and {} bytes of KV cache at the test's mean context (both in its bound).",
            self.lm_head, self.decode_bytes_per_token, self.kv_bytes_per_token
        ));
        if let Some(e) = &self.head_error {
            notes.push(format!("{}.", e.describe(&self.lm_head)));
        }
        if let Some(b) = &self.pp_dense_f16 {
            notes.push(format!(
                "{}: the same model with {} (weights trit·scale in f16, activations rounded to f16; norms, attention and head the same kernels), timed after the ternary runs; ternary pp{} is {:.2}× it.",
                b.figures.test, b.linears, b.figures.tokens, b.ternary_speedup
            ));
        }
        if self.random_weights {
            notes.push("Random weights of the published shape (--shape).".into());
        }
        if let Some(b) = self.gpu_memory_used_bytes {
            notes.push(format!("GPU memory in use after the runs (NVML, whole device): {b} bytes."));
        }
        notes
    }
}

impl HeadError {
    /// `int8 lm_head vs f32 over 16 positions: max |Δlogit| …, same top-1 at 16/16`.
    pub fn describe(&self, head: &str) -> String {
        format!(
            "{head} lm_head vs f32 over {} positions: max |Δlogit| {:.4} (logits' sd {:.3}), same top-1 at {}/{}",
            self.positions, self.max_abs_logit_diff, self.logit_sd, self.same_top1, self.positions
        )
    }
}

/// The board's energy counter read around each timed repetition of a test,
/// summed: joules per token over exactly the timed work.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnergyTally {
    millijoules: u64,
    seconds: f64,
    tokens: u64,
    incomplete: bool,
}

impl EnergyTally {
    /// One repetition of `tokens` tokens in `seconds`, between counter reads
    /// `before` and `after` (millijoules; `None`: no counter, and the tally has no result).
    pub fn add(&mut self, before: Option<u64>, after: Option<u64>, seconds: f64, tokens: usize) {
        match (before, after) {
            (Some(b), Some(a)) if a >= b => self.millijoules += a - b,
            _ => self.incomplete = true,
        }
        self.seconds += seconds;
        self.tokens += tokens as u64;
    }

    /// The window of every repetition (`iterations`: tokens), unless a read was missing.
    pub fn window(&self) -> Option<EnergyWindow> {
        (!self.incomplete && self.tokens > 0).then(|| EnergyWindow {
            seconds: self.seconds,
            joules: self.millijoules as f64 / 1e3,
            iterations: self.tokens,
        })
    }
}

/// A results file for `model`'s tests on `device` (`why`: how the backend was chosen).
fn model_bench_results(
    device: &Device,
    why: &str,
    model: &str,
    benchmarks: Vec<BenchmarkResult>,
    notes: Vec<String>,
) -> RunResults {
    let duration_s = benchmarks.iter().flat_map(|b| &b.samples).sum();
    let mut all_notes = vec![
        format!("Backend: {why}."),
        format!(
            "trinity bench-model: whole-model throughput of {model} (attention and lm_head included); no kernel verification in this run."
        ),
    ];
    all_notes.extend(notes);
    RunResults {
        schema_version: SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        git_commit: trinity::GIT_COMMIT.map(str::to_owned),
        git_dirty: trinity::GIT_DIRTY.map(|d| d == "1"),
        date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        duration_s,
        host: crate::run::host_info(),
        backend: device.kind(),
        device: trinity::info::gather(0),
        cost_per_hour: None,
        verification_passed: true,
        verification: vec![],
        benchmarks,
        sensors: None,
        noise_robustness: None,
        models: vec![],
        headline: Headline::default(),
        notes: all_notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tests_become_benchmarks_that_round_trip() {
        let mut run = full_run();
        run.model = "tiny".into();
        let mut pp = TestFigures::new("pp4".into(), 4, vec![0.5, 0.4, 0.6], None);
        pp.fraction_of_bound = Some(0.25);
        run.pp = Some(pp);
        let energy = EnergyWindow { seconds: 1.0, joules: 3.0, iterations: 2 };
        run.tg = Some(TestFigures::new("tg2".into(), 2, vec![1.0], Some(energy)));
        run.pp_dense_f16 = None;
        let r = run.results_file(&Device::Cpu, "cpu requested");
        assert_eq!(r.benchmarks, run.benchmarks());
        let pp = r.benchmark("model/tiny/pp4").unwrap();
        assert_eq!((pp.throughput, pp.unit.as_str(), pp.mode.as_str()), (8.0, "token", "prefill"));
        assert_eq!(pp.ratio.as_ref().map(|r| r.value), Some(0.25));
        let tg = r.benchmark("model/tiny/tg2").unwrap();
        assert_eq!((tg.throughput, tg.mode.as_str(), tg.ratio.as_ref()), (2.0, "decode", None));
        assert_eq!(tg.energy.map(|e| e.joules_per_iteration()), Some(1.5));
        assert_eq!(r.duration_s, 2.5);
        let text = serde_json::to_string(&r).unwrap();
        let back = RunResults::parse(&text, std::path::Path::new("x.json")).unwrap();
        assert_eq!(back.benchmarks, r.benchmarks);
    }

    /// A run with every figure: pp4, tg2@d3 with board energy, the dense baseline, an int8 head.
    fn full_run() -> ModelBench {
        let mut pp = TestFigures::new("pp4".into(), 4, vec![1.0, 0.5], None);
        pp.fraction_of_bound = Some(0.25);
        let energy = EnergyWindow { seconds: 2.0, joules: 6.0, iterations: 4 };
        let mut tg = TestFigures::new("tg2@d3".into(), 2, vec![1.0, 1.0], Some(energy));
        tg.depth = Some(3);
        tg.fraction_of_bound = Some(0.5);
        let base = TestFigures::new("pp4-dense-f16".into(), 4, vec![2.0, 2.0], None);
        ModelBench {
            model: "dir,with \"comma\"".into(),
            random_weights: true,
            backend: BackendKind::Cpu,
            threads: Some(2),
            reps: 2,
            lm_head: "int8".into(),
            pp: Some(pp),
            tg: Some(tg),
            pp_dense_f16: Some(DenseBaseline {
                linears: "dense f16 linears".into(),
                figures: base,
                ternary_speedup: 3.0,
            }),
            decode_bytes_per_token: 1_500_000_000,
            kv_bytes_per_token: 250_000_000,
            linear_weights: 1000,
            bandwidth_bytes_per_s: Some(20e9),
            bandwidth_samples: Some(vec![15e9, 25e9]),
            bandwidth_ceiling: Some("read bandwidth (all threads)".into()),
            int8_macs_per_s: Some(200e9),
            int8_peak_instruction: Some("AVX2 vpmaddubsw".into()),
            int8_ceiling: Some("AVX2 vpmaddubsw peak, all threads".into()),
            peak_rss_bytes: Some(2_500_000_000),
            gpu_memory_used_bytes: None,
            head_error: Some(HeadError { positions: 16, max_abs_logit_diff: 0.125, logit_sd: 2.5, same_top1: 15 }),
        }
    }

    #[test]
    fn test_figures_are_rates_of_the_repetitions_with_their_spread() {
        let f = TestFigures::new("pp10".into(), 10, vec![1.0, 0.5], None);
        assert_eq!(f.samples, vec![10.0, 20.0]);
        assert_eq!(f.tokens_per_s, 15.0);
        assert!((f.sd - 50f64.sqrt()).abs() < 1e-12, "{}", f.sd);
        assert_eq!((f.joules_per_token, f.mean_power_w), (None, None));
        let one = TestFigures::new(
            "tg1".into(),
            1,
            vec![0.25],
            Some(EnergyWindow { seconds: 0.25, joules: 1.0, iterations: 1 }),
        );
        assert_eq!((one.tokens_per_s, one.sd), (4.0, 0.0));
        assert_eq!((one.joules_per_token, one.mean_power_w), (Some(1.0), Some(4.0)));
    }

    #[test]
    fn json_keeps_the_keys_scripts_read_and_nulls_a_skipped_test() {
        let v = serde_json::to_value(full_run()).unwrap();
        // scripts/llama-cpp-summary.py reads these.
        assert_eq!(v["pp"]["tokens"], 4);
        assert_eq!(v["pp"]["samples"], serde_json::json!([4.0, 8.0]));
        assert_eq!((&v["tg"]["tokens"], &v["tg"]["depth"]), (&2.into(), &3.into()));
        assert_eq!(v["tg"]["fraction_of_bound"], 0.5);
        assert_eq!((&v["threads"], &v["lm_head"], &v["backend"]), (&2.into(), &"int8".into(), &"cpu".into()));
        assert_eq!(v["int8_peak_instruction"], "AVX2 vpmaddubsw");
        assert_eq!(v["bandwidth_samples"], serde_json::json!([15e9, 25e9]));
        // Prefill has no depth; energy comes per token and as power, the window itself stays out.
        assert!(v["pp"].get("depth").is_none() && v["tg"].get("energy").is_none(), "{v}");
        assert_eq!((&v["tg"]["joules_per_token"], &v["tg"]["mean_power_w"]), (&1.5.into(), &3.0.into()));
        // The baseline's figures sit beside its ratio, as before the struct.
        let b = &v["pp_dense_f16"];
        assert_eq!(
            (&b["tokens_per_s"], &b["ternary_speedup"], &b["linears"]),
            (&2.0.into(), &3.0.into(), &"dense f16 linears".into())
        );
        assert_eq!(v["head_error"]["max_abs_logit_diff"], 0.125);
        let mut decode_only = full_run();
        (decode_only.pp, decode_only.pp_dense_f16) = (None, None);
        let v = serde_json::to_value(decode_only).unwrap();
        assert!(v["pp"].is_null() && v["pp_dense_f16"].is_null() && v["tg"].is_object(), "{v}");
    }

    #[test]
    fn markdown_has_a_row_per_test_and_a_line_per_bound() {
        let md = markdown::render(&full_run());
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines[0], "| model | backend | lm_head | test | tokens/s | of bound |");
        assert_eq!(lines[2], "| dir,with \"comma\" | cpu | int8 | pp4 | 6.00 ± 2.83 | 25.0 % |");
        assert_eq!(lines[3], "| dir,with \"comma\" | cpu | int8 | tg2@d3 | 2.00 ± 0.00 | 50.0 % |");
        assert_eq!(lines[4], "| dir,with \"comma\" | cpu | int8 | pp4 (dense f16 linears) | 2.00 ± 0.00 | – |");
        assert_eq!(lines[5], "");
        for want in [
            "2 repetitions on 2 CPU threads; decode reads 1.500 GB of weights per token (2-bit linears + int8 lm_head) and 0.250 GB of KV cache at the mean context; peak RSS 2.50 GB",
            "decode bound: read bandwidth (all threads) 20.0 GB/s (mean; 15.0–25.0), measured after each repetition",
            "prefill bound: 200.0 G int8 multiply-adds/s (AVX2 vpmaddubsw peak, all threads) over 1000 ternary weights per token",
            "prefill vs the same model with dense f16 linears: 3.00× (ternary pp4 / dense pp4, same run)",
            "int8 lm_head vs f32 over 16 positions: max |Δlogit| 0.1250 (logits' sd 2.500), same top-1 at 15/16",
            "energy tg2@d3: 1.5000 J/token at 3 W mean (board counter over the timed runs)",
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{md}");
        }
        assert!(!md.contains("energy pp4") && !md.contains("GPU memory"), "{md}");
        // Prefill only: no decode row, no decode bound; a decode test with no probe says so.
        let mut prefill_only = full_run();
        prefill_only.tg = None;
        let md = markdown::render(&prefill_only);
        assert!(!md.contains("| tg") && !md.contains("decode bound") && md.contains("prefill bound: 200.0"), "{md}");
        let mut no_probe = full_run();
        (no_probe.pp, no_probe.pp_dense_f16, no_probe.bandwidth_bytes_per_s) = (None, None, None);
        let md = markdown::render(&no_probe);
        assert!(md.contains("decode bound: no bandwidth ceiling") && !md.contains("prefill"), "{md}");
    }

    #[test]
    fn csv_has_a_row_per_test_and_quotes_the_model() {
        let text = csv::render(&full_run());
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows[0], csv::HEADER);
        let rss = 2_500_000_000u64;
        assert_eq!(rows[1], format!("\"dir,with \"\"comma\"\"\",cpu,int8,pp4,6,{},2,0.25,{rss}", 8f64.sqrt()));
        assert_eq!(rows[2], format!("\"dir,with \"\"comma\"\"\",cpu,int8,tg2@d3,2,0,2,0.5,{rss}"));
        assert_eq!(rows[3], format!("\"dir,with \"\"comma\"\"\",cpu,int8,pp4-dense-f16,2,0,2,,{rss}"));
        assert_eq!(rows.len(), 4);
        let mut decode_only = full_run();
        (decode_only.pp, decode_only.pp_dense_f16, decode_only.model) = (None, None, "m".into());
        assert_eq!(
            csv::render(&decode_only).lines().skip(1).collect::<Vec<_>>(),
            vec![format!("m,cpu,int8,tg2@d3,2,0,2,0.5,{rss}")]
        );
    }

    #[test]
    fn the_results_file_holds_each_test_with_its_bound() {
        let r = full_run().results_file(&Device::Cpu, "cpu requested");
        let names: Vec<&str> = r.benchmarks.iter().map(|b| b.name.as_str()).collect();
        let m = "model/dir,with \"comma\"";
        assert_eq!(names, [format!("{m}/pp4"), format!("{m}/tg2@d3"), format!("{m}/pp4-dense-f16")]);
        let (pp, tg, base) = (&r.benchmarks[0], &r.benchmarks[1], &r.benchmarks[2]);
        assert_eq!((pp.mode.as_str(), tg.mode.as_str(), base.mode.as_str()), ("prefill", "decode", "prefill"));
        assert_eq!(pp.samples, vec![1.0, 0.5]);
        assert_eq!(pp.ratio, Some(Ratio { to: "int8 multiply-add peak (same run)".into(), value: 0.25 }));
        let to = "read bandwidth (all threads) (after each repetition)";
        assert_eq!(tg.ratio, Some(Ratio { to: to.into(), value: 0.5 }));
        assert_eq!(
            (tg.energy, base.ratio.as_ref()),
            (Some(EnergyWindow { seconds: 2.0, joules: 6.0, iterations: 4 }), None)
        );
        for want in [
            "2 CPU threads.",
            "2 repetitions; tg after 3 tokens prefilled untimed, as llama-bench's tgN @ d3.",
            "Random weights of the published shape (--shape).",
        ] {
            assert!(r.notes.iter().any(|n| n == want), "missing {want:?} in {:?}", r.notes);
        }
        assert!(r.notes.iter().any(|n| n.contains("ternary pp4 is 3.00× it")), "{:?}", r.notes);
        let mut prefill_only = full_run();
        prefill_only.tg = None;
        let r = prefill_only.results_file(&Device::Cpu, "cpu requested");
        assert_eq!(r.benchmarks.len(), 2);
        assert!(r.notes.iter().any(|n| n == "2 repetitions; no decode test (-n 0)."), "{:?}", r.notes);
    }

    #[test]
    fn energy_tallies_sum_the_timed_repetitions_only() {
        let mut t = EnergyTally::default();
        t.add(Some(1_000), Some(4_000), 0.5, 10);
        t.add(Some(10_000), Some(12_000), 0.5, 10);
        let w = t.window().unwrap();
        assert_eq!((w.joules, w.seconds, w.iterations), (5.0, 1.0, 20));
        assert_eq!(w.joules_per_iteration(), 0.25);
        assert_eq!(w.mean_power_w(), 5.0);
        // One missing read (no counter, or a counter that went back) and there is no figure.
        t.add(None, Some(1), 0.1, 1);
        assert_eq!(t.window(), None);
        let mut back = EnergyTally::default();
        back.add(Some(5), Some(4), 0.1, 1);
        assert_eq!(back.window(), None);
        assert_eq!(EnergyTally::default().window(), None);
    }
}

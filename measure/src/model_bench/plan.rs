//! The timed runs behind `trinity bench-model`: a [`BenchPlan`] (llama-bench's
//! `-p`, `-n`, `-r`, `-d`) run on a loaded model gives a [`ModelBench`].
//!
//! The order of work, and why:
//! 1. a reduced lm_head's logit error against the f32 head (before the head is switched);
//! 2. one untimed prefill per test (llama-bench's warm-up run), so module
//!    loading, the caches' first page touches and allocator growth stay out of
//!    the figures;
//! 3. each repetition: the prefill test, then the decode test, each on its own
//!    cache emptied first (as llama-bench keeps one context and clears its
//!    memory; a fresh cache per repetition put the first touch of its pages,
//!    and of the buffers a pass keeps, inside the timing), the board's energy
//!    counter read around each; after each decode
//!    repetition, the bandwidth ceiling it is divided by (a shared machine's
//!    moves by half within minutes);
//! 4. the dense f16 baseline's prefill, when asked for, after the ternary runs
//!    (it needs 8× the linears' memory); its failure leaves the ternary figures standing;
//! 5. the int8 peak, prefill's ceiling.

use std::time::Instant;

use trinity::{BackendKind, Device, KernelError};
use trinity_model::{BitNet, HeadPrecision, Linears, ModelError, SeqChunk};

use super::{DenseBaseline, EnergyTally, HeadError, ModelBench, TestFigures, mean_sd};
use crate::progress::Progress;
use crate::sensor::{NvmlSensor, Sensor};

/// What one `bench-model` run times.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchPlan {
    /// Prompt tokens of the prefill test (`ppN`); 0 skips it.
    pub prompt: usize,
    /// Generated tokens of the decode test (`tgN`); 0 skips it.
    pub n_gen: usize,
    /// Timed repetitions of each test.
    pub reps: usize,
    /// Tokens in the cache before each decode repetition (`tgN@dD`).
    pub depth: usize,
    /// The lm_head's precision for the timed runs.
    pub lm_head: HeadPrecision,
    /// Also time the prefill test with dense f16 linears.
    pub f16_baseline: bool,
}

/// Why a `bench-model` run could not be made. The messages name the options
/// of `trinity bench-model`, the one front end of this module.
#[derive(Debug, thiserror::Error)]
pub enum BenchModelError {
    /// No repetition asked for.
    #[error("-r must be at least 1")]
    NoRepetitions,
    /// Both tests skipped.
    #[error("-p 0 and -n 0 leave no test to run")]
    NoTest,
    /// A depth for a decode test that does not run.
    #[error("-d {0} sets the decode test's depth, and -n 0 skips that test")]
    DepthWithoutDecode(usize),
    /// The baseline of a prefill test that does not run.
    #[error("--f16-baseline on times the prefill test, and -p 0 skips it")]
    BaselineWithoutPrefill,
    /// A test longer than the model's context.
    #[error("{sum} tokens exceeds the model's context of {max}")]
    TooLong {
        /// The options and their sum, as `-p 512 + -n 128 = 640`.
        sum: String,
        /// The model's context (`max_position_embeddings`).
        max: usize,
    },
    /// The reduced lm_head could not be built or compared.
    #[error("--lm-head {precision}")]
    Head {
        /// The precision asked for.
        precision: HeadPrecision,
        /// What failed.
        #[source]
        source: ModelError,
    },
    /// The model failed during a timed run.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A ceiling's kernel or driver call failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

impl BenchPlan {
    /// The plan's own contradictions, before any model is built.
    pub fn check(&self) -> Result<(), BenchModelError> {
        let (run_pp, run_tg) = (self.prompt > 0, self.n_gen > 0);
        match () {
            _ if self.reps == 0 => Err(BenchModelError::NoRepetitions),
            _ if !run_pp && !run_tg => Err(BenchModelError::NoTest),
            _ if !run_tg && self.depth > 0 => Err(BenchModelError::DepthWithoutDecode(self.depth)),
            _ if !run_pp && self.f16_baseline => Err(BenchModelError::BaselineWithoutPrefill),
            _ => Ok(()),
        }
    }

    /// The tokens the tests' caches must hold, or the test that does not fit in
    /// `max` (the prefill test's sum, or the decode test's after its depth).
    pub fn context(&self, max: usize) -> Result<usize, BenchModelError> {
        let n = self.n_gen;
        let too_long = |flag: &str, first: usize| BenchModelError::TooLong {
            sum: format!("{flag} {first} + -n {n} = {}", first + n),
            max,
        };
        if self.prompt + n > max {
            return Err(too_long("-p", self.prompt));
        }
        if self.depth + n > max {
            return Err(too_long("-d", self.depth));
        }
        Ok((self.prompt + n).max(self.depth + n))
    }

    /// The decode test's name, as llama-bench's: `tg128`, or `tg128@d2048` after a depth.
    pub fn decode_test_name(&self) -> String {
        match self.depth {
            0 => format!("tg{}", self.n_gen),
            d => format!("tg{}@d{d}", self.n_gen),
        }
    }

    /// Times the plan on `model` on `device`, which it was built on. `name`
    /// and `random_weights` are reported as given. Whatever head and linears
    /// the model had, it is timed, and left, with the plan's head over its
    /// ternary linears.
    pub fn run(
        &self,
        model: &mut BitNet,
        device: &Device,
        name: String,
        random_weights: bool,
        progress: &dyn Progress,
    ) -> Result<ModelBench, BenchModelError> {
        self.check()?;
        let context = self.context(model.config.max_position_embeddings)?;
        let (run_pp, run_tg) = (self.prompt > 0, self.n_gen > 0);
        // The f32 head first: the reduced head's error is against its logits.
        model.set_linears(Linears::Ternary)?;
        model.set_head_precision(HeadPrecision::F32)?;
        let head_error = match self.lm_head {
            HeadPrecision::F32 => None,
            p => Some(head_error(model, p).map_err(|source| BenchModelError::Head { precision: p, source })?),
        };
        let vocab = model.config.vocab;
        let tokens: Vec<u32> = (0..self.prompt).map(|i| (i * 7919 % vocab) as u32).collect();
        let filler: Vec<u32> = (0..self.depth).map(|i| ((i * 104_729 + 3) % vocab) as u32).collect();
        let tg_name = self.decode_test_name();
        let mut sensor = match device {
            Device::Cuda(g) => NvmlSensor::open(g.uuid()),
            _ => None,
        };
        let mut energy_mj = || sensor.as_mut().and_then(|s| s.energy_mj());
        let (mut pp_secs, mut tg_secs, mut tg_bandwidth) = (Vec::new(), Vec::new(), Vec::new());
        let mut bandwidth_what = None;
        let (mut pp_energy, mut tg_energy) = (EnergyTally::default(), EnergyTally::default());
        let (mut pp_cache, mut tg_cache) = (model.new_cache(context)?, model.new_cache(context)?);
        if run_pp {
            progress.step(&format!("warm-up: pp{}", self.prompt));
            model.forward(&tokens, &mut pp_cache, false)?;
        }
        if run_tg {
            // The decode test's cache pages too: a prefill over the positions it fills.
            let span: Vec<u32> = (0..self.depth + self.n_gen).map(|i| ((i * 7919 + 1) % vocab) as u32).collect();
            model.forward(&span, &mut tg_cache, false)?;
        }
        for rep in 0..self.reps {
            if run_pp {
                progress.step(&format!("rep {}/{}: pp{}", rep + 1, self.reps, self.prompt));
                pp_cache.clear(0);
                let e0 = energy_mj();
                let t = Instant::now();
                // The logits come back to the host: the work is done when it returns.
                model.forward(&tokens, &mut pp_cache, false)?;
                let secs = t.elapsed().as_secs_f64();
                pp_energy.add(e0, energy_mj(), secs, self.prompt);
                pp_secs.push(secs);
            }
            if run_tg {
                progress.step(&format!("rep {}/{}: {tg_name}", rep + 1, self.reps));
                tg_cache.clear(0);
                if !filler.is_empty() {
                    model.forward(&filler, &mut tg_cache, false)?;
                }
                let e0 = energy_mj();
                let t = Instant::now();
                let mut next = 1u32;
                for _ in 0..self.n_gen {
                    // Greedy on the device, as `generate` and `serve` decode.
                    next = model.step(&mut tg_cache, &[SeqChunk { slot: 0, tokens: &[next] }], false)?.greedy[0];
                }
                let secs = t.elapsed().as_secs_f64();
                tg_energy.add(e0, energy_mj(), secs, self.n_gen);
                tg_secs.push(secs);
                if let Some((bw, what)) = bandwidth_ceiling(device)? {
                    tg_bandwidth.push(bw);
                    bandwidth_what = Some(what);
                }
            }
        }
        let baseline = match self.f16_baseline {
            false => None,
            true => match dense_f16_prefill(model, &tokens, context, self.reps, progress) {
                Ok(secs) => Some(secs),
                Err(e) => {
                    progress.warning(&format!("the dense f16 baseline did not run: {}", trinity::chain_once(&e)));
                    None
                }
            },
        };
        let decode_bytes = model.decode_bytes();
        // The KV cache a decode step reads at the test's mean context.
        let kv_bytes = match run_tg {
            true => {
                let mean_context = self.depth as f64 + (self.n_gen as f64 + 1.0) / 2.0;
                (model.kv_bytes_per_position() as f64 * mean_context) as usize
            }
            false => 0,
        };
        let int8_macs = match run_pp {
            true => {
                progress.step("ceiling: int8 peak");
                int8_ceiling(device, progress)
            }
            false => None,
        };
        let pp = run_pp.then(|| {
            let mut f = TestFigures::new(format!("pp{}", self.prompt), self.prompt, pp_secs, pp_energy.window());
            // Prefill does one int8 multiply-add per ternary weight per token.
            f.fraction_of_bound = int8_macs.map(|(p, _)| f.tokens_per_s * model.linear_weights() as f64 / p);
            f
        });
        let tg = run_tg.then(|| {
            let mut f = TestFigures::new(tg_name, self.n_gen, tg_secs, tg_energy.window());
            f.depth = Some(self.depth);
            // Each repetition against the bandwidth measured right after it, then the mean.
            let fracs: Vec<f64> =
                f.samples.iter().zip(&tg_bandwidth).map(|(t, bw)| t * (decode_bytes + kv_bytes) as f64 / bw).collect();
            f.fraction_of_bound = (!fracs.is_empty()).then(|| mean_sd(&fracs).0);
            f
        });
        let pp_dense_f16 = baseline.zip(pp.as_ref()).map(|(secs, ternary)| {
            let figures = TestFigures::new(format!("pp{}-dense-f16", self.prompt), self.prompt, secs, None);
            DenseBaseline {
                linears: match device.kind() {
                    BackendKind::Cuda => "cuBLAS FP16 linears",
                    _ => "dense f16 linears",
                }
                .into(),
                ternary_speedup: ternary.tokens_per_s / figures.tokens_per_s,
                figures,
            }
        });
        Ok(ModelBench {
            model: name,
            random_weights,
            backend: device.kind(),
            // The pool every CPU op splits its work across, as llama-bench reports `n_threads`.
            threads: (device.kind() == BackendKind::Cpu).then(rayon::current_num_threads),
            reps: self.reps,
            lm_head: self.lm_head.name().into(),
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
                BackendKind::Cuda => format!("{instruction} at 8192³"),
                _ => format!("{instruction} peak, all threads"),
            }),
            peak_rss_bytes: peak_rss(),
            gpu_memory_used_bytes: device.cuda().and_then(|g| crate::sensor::gpu_memory_used(g.uuid())),
            head_error,
        })
    }
}

/// Peak resident set size of this process, bytes (Linux), when known.
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&s)
}

/// `VmHWM` of a `/proc/PID/status` text, bytes.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Seconds of `reps` prefills of `tokens` with the model's linears as dense
/// f16 (after one untimed warm-up); the model's ternary linears are restored.
fn dense_f16_prefill(
    model: &mut BitNet,
    tokens: &[u32],
    context: usize,
    reps: usize,
    progress: &dyn Progress,
) -> Result<Vec<f64>, ModelError> {
    progress.step("dense f16 baseline: converting the linears");
    model.set_linears(Linears::DenseF16)?;
    let timed = (|| {
        model.forward(tokens, &mut model.new_cache(context)?, false)?;
        let mut secs = Vec::with_capacity(reps);
        for rep in 0..reps {
            progress.step(&format!("rep {}/{reps}: pp{} with dense f16 linears", rep + 1, tokens.len()));
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
fn bandwidth_ceiling(device: &Device) -> Result<Option<(f64, &'static str)>, KernelError> {
    Ok(match device.kind() {
        BackendKind::Cpu => Some((trinity::ceilings::read_bandwidth(512 << 20, 5), "read bandwidth (all threads)")),
        // Read + write of a device-to-device copy: the bandwidth the GPU bound is quoted in.
        BackendKind::Cuda => match device.cuda() {
            Some(g) => Some((trinity::ceilings::gpu_copy_bandwidth(g, 512 << 20, 5)?, "device copy, read + write")),
            None => None,
        },
        BackendKind::Emu => None,
    })
}

/// Prefill's compute ceiling, int8 multiply-adds per second, and what it is
/// the peak of: the CPU's byte dot-product instruction, or cuBLASLt's INT8
/// tensor-core GEMM at 8192³ on a GPU.
fn int8_ceiling(device: &Device, progress: &dyn Progress) -> Option<(f64, &'static str)> {
    match device.kind() {
        BackendKind::Cpu => trinity::ceilings::int8_macs_per_s(5).zip(trinity::ceilings::int8_peak_instruction()),
        BackendKind::Cuda => device.cuda().and_then(|g| match trinity::ceilings::gpu_int8_macs_per_s(g, 8192, 5) {
            Ok(p) => Some((p, "cuBLASLt INT8 GEMM")),
            Err(e) => {
                progress.warning(&format!("no int8 tensor-core ceiling: {}", trinity::chain_once(&e)));
                None
            }
        }),
        BackendKind::Emu => None,
    }
}

/// Switches `model`'s head to `precision` and measures its logits against
/// the f32 head's over a 16-token prompt (every position).
fn head_error(model: &mut BitNet, precision: HeadPrecision) -> Result<HeadError, ModelError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use trinity_model::ModelConfig;

    fn plan(prompt: usize, n_gen: usize, depth: usize) -> BenchPlan {
        BenchPlan { prompt, n_gen, reps: 2, depth, lm_head: HeadPrecision::F32, f16_baseline: false }
    }

    /// A random model small enough to time in milliseconds, with a context of 24.
    fn tiny_model() -> BitNet {
        let mut c: ModelConfig = trinity_model::config::shape("bitnet_b1_58-large").unwrap();
        (c.hidden, c.intermediate, c.layers, c.heads, c.kv_heads, c.head_dim, c.vocab) = (64, 128, 2, 2, 2, 32, 50);
        c.max_position_embeddings = 24;
        BitNet::random(c, &Device::Cpu, 9).unwrap()
    }

    #[test]
    fn a_plan_that_contradicts_itself_is_refused_before_any_work() {
        let cases: [(BenchPlan, &str); 4] = [
            (BenchPlan { reps: 0, ..plan(4, 4, 0) }, "-r must be at least 1"),
            (plan(0, 0, 0), "-p 0 and -n 0 leave no test to run"),
            (plan(4, 0, 3), "-d 3 sets the decode test's depth, and -n 0 skips that test"),
            (
                BenchPlan { f16_baseline: true, ..plan(0, 4, 0) },
                "--f16-baseline on times the prefill test, and -p 0 skips it",
            ),
        ];
        for (p, want) in cases {
            assert_eq!(p.check().unwrap_err().to_string(), want, "{p:?}");
        }
        for p in [plan(4, 0, 0), plan(0, 4, 3), BenchPlan { f16_baseline: true, ..plan(4, 0, 0) }] {
            assert!(p.check().is_ok(), "{p:?}");
        }
    }

    #[test]
    fn the_context_is_the_longer_test_and_the_one_too_long_is_named() {
        assert_eq!(plan(10, 4, 0).context(24).unwrap(), 14);
        assert_eq!(plan(2, 4, 20).context(24).unwrap(), 24);
        let err = |p: BenchPlan| p.context(24).unwrap_err().to_string();
        assert_eq!(err(plan(21, 4, 0)), "-p 21 + -n 4 = 25 tokens exceeds the model's context of 24");
        assert_eq!(err(plan(2, 4, 21)), "-d 21 + -n 4 = 25 tokens exceeds the model's context of 24");
        assert_eq!(plan(2, 128, 0).decode_test_name(), "tg128");
        assert_eq!(plan(2, 128, 2048).decode_test_name(), "tg128@d2048");
    }

    #[test]
    fn peak_rss_is_read_from_vm_hwm_in_kib() {
        let status = "Name:\ttrinity\nVmPeak:\t  900 kB\nVmHWM:\t    1234 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(1234 * 1024));
        assert_eq!(parse_vm_hwm("VmRSS:\t 1000 kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\t lots kB\n"), None);
    }

    #[test]
    fn a_run_times_each_test_reps_times_against_its_bounds() {
        let mut model = tiny_model();
        let kv_per_position = model.kv_bytes_per_position();
        let p = BenchPlan { lm_head: HeadPrecision::Int8, f16_baseline: true, ..plan(6, 5, 3) };
        let report = p.run(&mut model, &Device::Cpu, "tiny".into(), true, &Silent).unwrap();
        assert_eq!(model.head_precision(), HeadPrecision::Int8);
        assert_eq!((report.model.as_str(), report.random_weights, report.reps), ("tiny", true, 2));
        let (pp, tg) = (report.pp.as_ref().unwrap(), report.tg.as_ref().unwrap());
        assert_eq!((pp.test.as_str(), pp.tokens, pp.samples.len()), ("pp6", 6, 2));
        assert_eq!((tg.test.as_str(), tg.tokens, tg.depth, tg.samples.len()), ("tg5@d3", 5, Some(3), 2));
        // Decode at contexts 4 … 8: a mean of 3 + (5 + 1) / 2 = 6 positions of KV cache per step.
        assert_eq!(report.kv_bytes_per_token, 6 * kv_per_position);
        assert_eq!(report.decode_bytes_per_token, model.decode_bytes());
        // One bandwidth sample per decode repetition, each repetition's fraction against its own.
        let bw = report.bandwidth_samples.as_ref().unwrap();
        assert_eq!(bw.len(), 2);
        let bytes = (report.decode_bytes_per_token + report.kv_bytes_per_token) as f64;
        let want = (tg.samples[0] * bytes / bw[0] + tg.samples[1] * bytes / bw[1]) / 2.0;
        assert!((tg.fraction_of_bound.unwrap() - want).abs() <= 1e-12 * want, "{tg:?}");
        if let Some(peak) = report.int8_macs_per_s {
            let want = pp.tokens_per_s * model.linear_weights() as f64 / peak;
            assert!((pp.fraction_of_bound.unwrap() - want).abs() <= 1e-12 * want);
        }
        let base = report.pp_dense_f16.as_ref().unwrap();
        assert_eq!((base.figures.test.as_str(), base.figures.samples.len()), ("pp6-dense-f16", 2));
        assert!((base.ternary_speedup - pp.tokens_per_s / base.figures.tokens_per_s).abs() <= 1e-12);
        let head = report.head_error.as_ref().unwrap();
        assert_eq!(head.positions, 16);
        assert!(head.max_abs_logit_diff > 0.0 && head.same_top1 <= 16, "{head:?}");
        assert_eq!(report.threads, Some(rayon::current_num_threads()));
    }

    #[test]
    fn a_run_sets_the_plans_head_and_ternary_linears_whatever_the_model_had() {
        let mut model = tiny_model();
        let f32_bytes = model.decode_bytes();
        model.set_head_precision(HeadPrecision::Int8).unwrap();
        model.set_linears(Linears::DenseF16).unwrap();
        let report = plan(0, 2, 0).run(&mut model, &Device::Cpu, "tiny".into(), false, &Silent).unwrap();
        assert_eq!((model.head_precision(), model.linears()), (HeadPrecision::F32, Linears::Ternary));
        assert_eq!((report.lm_head.as_str(), report.decode_bytes_per_token), ("f32", f32_bytes));
        // A reduced head's error is against the f32 head, even from a model left in another precision.
        model.set_head_precision(HeadPrecision::F16).unwrap();
        let p = BenchPlan { lm_head: HeadPrecision::Int8, ..plan(0, 2, 0) };
        let report = p.run(&mut model, &Device::Cpu, "tiny".into(), false, &Silent).unwrap();
        let mut fresh = tiny_model();
        let want = head_error(&mut fresh, HeadPrecision::Int8).unwrap();
        assert_eq!(report.head_error.as_ref(), Some(&want));
    }

    #[test]
    fn a_skipped_test_leaves_no_figures_and_no_bound() {
        let mut model = tiny_model();
        let report = plan(4, 0, 0).run(&mut model, &Device::Cpu, "tiny".into(), false, &Silent).unwrap();
        assert!(report.tg.is_none() && report.pp_dense_f16.is_none() && report.head_error.is_none());
        assert_eq!((report.kv_bytes_per_token, report.bandwidth_samples.as_ref()), (0, None));
        let report = plan(0, 3, 0).run(&mut model, &Device::Cpu, "tiny".into(), false, &Silent).unwrap();
        assert!(report.pp.is_none() && report.int8_macs_per_s.is_none());
        assert_eq!(report.tg.unwrap().samples.len(), 2);
        let err = plan(20, 5, 0).run(&mut model, &Device::Cpu, "tiny".into(), false, &Silent).unwrap_err();
        assert!(matches!(err, BenchModelError::TooLong { max: 24, .. }), "{err}");
    }
}

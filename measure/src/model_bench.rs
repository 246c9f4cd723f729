//! `trinity bench-model`'s figures in the results schema, so `trinity report`
//! and `trinity compare` read whole-model throughput like any other run.

use trinity::Device;

use crate::results::{BenchmarkResult, Headline, Ratio, RunResults, SCHEMA_VERSION};
use crate::sensor::EnergyWindow;
use crate::stats::Summary;
use crate::timing::StopReason;

/// One whole-model test (`pp512`, `tg128`): seconds per repetition.
#[derive(Debug, Clone)]
pub struct ModelTest {
    /// `pp512`, `tg128`, ...
    pub test: String,
    /// `prefill` or `decode`.
    pub mode: &'static str,
    /// Tokens per repetition.
    pub tokens: usize,
    /// Seconds of each repetition.
    pub seconds: Vec<f64>,
    /// Its fraction of a bound measured in the same run (bandwidth for decode,
    /// the int8 peak for prefill), and what that bound is.
    pub of_bound: Option<Ratio>,
    /// The board's energy over the timed repetitions (a GPU with an energy counter).
    pub energy: Option<EnergyWindow>,
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
pub fn model_bench_results(
    device: &Device,
    why: &str,
    model: &str,
    tests: &[ModelTest],
    notes: Vec<String>,
) -> RunResults {
    let benchmarks = tests
        .iter()
        .filter_map(|t| {
            let time = Summary::of(&t.seconds)?;
            Some(BenchmarkResult {
                name: format!("model/{model}/{}", t.test),
                kernel: "bitnet_forward".into(),
                backend: device.kind(),
                shape: t.test.clone(),
                mode: t.mode.into(),
                unit: "token".into(),
                work_per_iteration: t.tokens as f64,
                throughput: t.tokens as f64 / time.median,
                time,
                samples: t.seconds.clone(),
                iterations_per_sample: 1,
                stopped_by: StopReason::MaxSamples,
                ratio: t.of_bound.clone(),
                sensors: None,
                energy: t.energy,
            })
        })
        .collect();
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
        duration_s: tests.iter().flat_map(|t| &t.seconds).sum(),
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
        let tests = [
            ModelTest {
                test: "pp4".into(),
                mode: "prefill",
                tokens: 4,
                seconds: vec![0.5, 0.4, 0.6],
                of_bound: Some(Ratio { to: "int8 peak".into(), value: 0.25 }),
                energy: None,
            },
            ModelTest {
                test: "tg2".into(),
                mode: "decode",
                tokens: 2,
                seconds: vec![1.0],
                of_bound: None,
                energy: Some(EnergyWindow { seconds: 1.0, joules: 3.0, iterations: 2 }),
            },
        ];
        let r = model_bench_results(&Device::Cpu, "cpu requested", "tiny", &tests, vec![]);
        let pp = r.benchmark("model/tiny/pp4").unwrap();
        assert_eq!((pp.throughput, pp.unit.as_str(), pp.mode.as_str()), (8.0, "token", "prefill"));
        assert_eq!(pp.ratio.as_ref().map(|r| r.value), Some(0.25));
        let tg = r.benchmark("model/tiny/tg2").unwrap();
        assert_eq!(tg.throughput, 2.0);
        assert_eq!(tg.energy.map(|e| e.joules_per_iteration()), Some(1.5));
        let text = serde_json::to_string(&r).unwrap();
        let back = RunResults::parse(&text, std::path::Path::new("x.json")).unwrap();
        assert_eq!(back.benchmarks, r.benchmarks);
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

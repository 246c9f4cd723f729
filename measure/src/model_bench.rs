//! `trinity bench-model`'s figures in the results schema, so `trinity report`
//! and `trinity compare` read whole-model throughput like any other run.

use trinity::Device;

use crate::results::{BenchmarkResult, Headline, Ratio, RunResults, SCHEMA_VERSION};
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
                energy: None,
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
            },
            ModelTest { test: "tg2".into(), mode: "decode", tokens: 2, seconds: vec![1.0], of_bound: None },
        ];
        let r = model_bench_results(&Device::Cpu, "cpu requested", "tiny", &tests, vec![]);
        let pp = r.benchmark("model/tiny/pp4").unwrap();
        assert_eq!((pp.throughput, pp.unit.as_str(), pp.mode.as_str()), (8.0, "token", "prefill"));
        assert_eq!(pp.ratio.as_ref().map(|r| r.value), Some(0.25));
        assert_eq!(r.benchmark("model/tiny/tg2").unwrap().throughput, 2.0);
        let text = serde_json::to_string(&r).unwrap();
        let back = RunResults::parse(&text, std::path::Path::new("x.json")).unwrap();
        assert_eq!(back.benchmarks, r.benchmarks);
    }
}

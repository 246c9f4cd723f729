//! # Reports: Markdown tables, SVG charts, and `trinity compare`
//!
//! - [`run_markdown`]: one run as the original report's tables, done right.
//! - [`runs_markdown`]: several runs side by side (devices, commits).
//! - [`throughput_svg`] / [`noise_svg`]: charts with plotters.
//! - [`compare`]: per-benchmark verdicts between two runs (the rule is in
//!   [`super::stats`]).

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::results::RunResults;
use crate::stats::{Verdict, verdict};

/// Engineering notation with a unit: `1.23 G` + unit.
pub fn si(v: f64, unit: &str) -> String {
    let (scale, prefix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, "")]
        .into_iter()
        .find(|(s, _)| v.abs() >= *s)
        .unwrap_or((1.0, ""));
    format!("{:.3} {prefix}{unit}", v / scale)
}

/// Seconds in a readable unit.
pub fn duration(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{:.2} µs", s * 1e6)
    }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".to_owned())
}

/// The device label of a run.
pub fn device_label(r: &RunResults) -> String {
    match &r.device.name {
        Some(n) if r.backend == trinity::BackendKind::Cuda => n.clone(),
        _ => format!("CPU ({}, {} threads)", r.host.cpu, r.host.cpu_threads),
    }
}

/// One run as Markdown.
pub fn run_markdown(r: &RunResults) -> String {
    let mut s = String::new();
    let h = &r.headline;
    let _ = writeln!(s, "# Trinity run: {}\n", device_label(r));
    for note in &r.notes {
        let _ = writeln!(s, "> {note}\n");
    }
    let _ = writeln!(
        s,
        "Date {} · commit {}{} · backend {} · driver {} · CUDA {} · run took {:.0} s · verification: {}\n",
        r.date,
        r.git_commit.as_deref().unwrap_or("unknown"),
        if r.git_dirty == Some(true) { " (dirty)" } else { "" },
        r.backend,
        r.device.driver_version.as_deref().unwrap_or("–"),
        r.device.cuda_driver_version.as_deref().unwrap_or("–"),
        r.duration_s,
        if r.verification_passed {
            format!("all {} checks passed", r.verification.len())
        } else {
            format!("{} of {} checks FAILED", r.verification.iter().filter(|c| !c.passed).count(), r.verification.len())
        }
    );
    let _ = writeln!(s, "## Headline\n\n| Metric | Value | What it is |\n|---|---|---|");
    let rows: Vec<(&str, String, &str)> = vec![
        ("Matrix mult (ours)", opt(h.sgemm_tflops, |v| format!("{v:.2} TFLOPS")), "our FP32 SGEMM, 4096³"),
        (
            "Matrix mult (reference)",
            opt(h.reference_sgemm_tflops, |v| format!("{v:.2} TFLOPS")),
            "cuBLAS SGEMM on a GPU, matrixmultiply on the CPU",
        ),
        (
            "Ternary tokens",
            opt(h.ternary_tokens_per_s, |v| si(v, "tokens/s")),
            "quantize + ternary GEMM, 32×512 tokens × 4096×4096",
        ),
        ("Latency", opt(h.ternary_batch_latency_ms, |v| format!("{v:.3} ms")), "per 32×512 batch"),
        (
            "cuBLAS FP16, same shape",
            opt(h.cublas_fp16_tokens_per_s, |v| si(v, "tokens/s")),
            "what the original report measured",
        ),
        (
            "GEMV decode bandwidth",
            opt(h.gemv_bandwidth_gb_s, |v| format!("{v:.1} GB/s")),
            "packed weights streamed, M = 1, 4096², cold",
        ),
        (
            "Copy bandwidth",
            opt(h.copy_bandwidth_gb_s, |v| format!("{v:.1} GB/s")),
            "device-to-device copy, read + write (a GPU's decode ceiling)",
        ),
        (
            "Read bandwidth",
            opt(h.read_bandwidth_gb_s, |v| format!("{v:.1} GB/s")),
            "all CPU threads reading host memory (the CPU's decode ceiling)",
        ),
        ("Unpack bandwidth", opt(h.unpack_bandwidth_gb_s, |v| format!("{v:.1} GB/s")), "packed → int8, read + write"),
        (
            "TriHash",
            opt(h.trihash_mh_s, |v| format!("{v:.2} MH/s")),
            "Curl-P-81 proof-of-work hashes (the original's 92.74 was not a hash)",
        ),
        (
            "Memory used / total",
            format!(
                "{} / {}",
                opt(h.memory_used_bytes, |b| si(b as f64, "B")),
                opt(h.memory_total_bytes, |b| si(b as f64, "B"))
            ),
            "device memory",
        ),
        (
            "Power mean / peak",
            format!(
                "{} / {}",
                opt(h.mean_power_w, |v| format!("{v:.0} W")),
                opt(h.peak_power_w, |v| format!("{v:.0} W"))
            ),
            "NVML, sampled through the benchmarks",
        ),
        ("Temperature peak", opt(h.peak_temperature_c, |v| format!("{v} °C")), "NVML"),
        (
            "Energy per token",
            opt(h.joules_per_token, |v| format!("{:.3} mJ", v * 1e3)),
            "energy counter over a window of seconds",
        ),
        (
            "Energy per hash",
            opt(h.joules_per_hash, |v| format!("{:.3} nJ", v * 1e9)),
            "energy counter over a window of seconds",
        ),
        ("Cost per run", opt(h.cost_per_run, |v| format!("${v:.4}")), "at --cost-per-hour"),
        (
            "Cost per million tokens",
            opt(h.cost_per_million_tokens, |v| format!("${v:.6}")),
            "at the measured ternary rate",
        ),
    ];
    for (k, v, what) in rows {
        let _ = writeln!(s, "| {k} | {v} | {what} |");
    }
    let _ = writeln!(
        s,
        "\n## Benchmarks\n\n| Benchmark | Shape | Mode | Median | Spread (IQR/median) | Samples | Throughput | Ratio | Throttled |\n|---|---|---|---|---|---|---|---|---|"
    );
    for b in &r.benchmarks {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} % | {} | {} | {} | {} |",
            b.name,
            b.shape,
            b.mode,
            duration(b.time.median),
            100.0 * b.time.rel_spread,
            b.time.samples,
            si(b.throughput, &format!("{}/s", b.unit)),
            opt(b.ratio.as_ref(), |r| format!("{:.2}× {}", r.value, r.to)),
            match &b.sensors {
                Some(sn) if sn.throttled() => format!("yes: {}", sn.throttle_reasons.join(", ")),
                Some(_) => "no".to_owned(),
                None => "–".to_owned(),
            }
        );
    }
    if let Some(n) = &r.noise_robustness {
        let _ = writeln!(
            s,
            "\n## Noise robustness\n\n{}\n\n| Noise | Retention (trit replacement) | Expected |\n|---|---|---|",
            n.description
        );
        for p in &n.trit_replacement {
            let _ =
                writeln!(s, "| {:.0} % | {:.1} % | {:.1} % |", 100.0 * p.probability, p.retention_pct, p.expected_pct);
        }
        let _ = writeln!(s, "\n| Bit-flip probability | Retention | Expected |\n|---|---|---|");
        for p in &n.bit_flips {
            let _ =
                writeln!(s, "| {:.1} % | {:.1} % | {:.1} % |", 100.0 * p.probability, p.retention_pct, p.expected_pct);
        }
    }
    if !r.models.is_empty() {
        let _ = writeln!(
            s,
            "\n## BitNet linear stack (attention excluded), and the whole model\n\n| Model | Prefill tokens/s (batch) | Decode tokens/s | Packed weights | Decode vs bandwidth bound | Whole model: prefill tokens/s (prompt) | Whole model: decode tokens/s | Whole model: decode vs bound |\n|---|---|---|---|---|---|---|---|"
        );
        for m in &r.models {
            let _ = writeln!(
                s,
                "| {} | {} ({}) | {} | {} | {} | {} | {} | {} |",
                m.model,
                si(m.prefill_tokens_per_s, "tokens/s"),
                m.prefill_tokens,
                si(m.decode_tokens_per_s, "tokens/s"),
                si(m.weight_bytes as f64, "B"),
                opt(m.decode_fraction_of_bandwidth_bound, |f| format!("{:.0} %", 100.0 * f)),
                opt(m.end_to_end_prefill_tokens_per_s, |t| format!(
                    "{} ({})",
                    si(t, "tokens/s"),
                    m.end_to_end_prefill_tokens.unwrap_or(0)
                )),
                opt(m.end_to_end_decode_tokens_per_s, |t| si(t, "tokens/s")),
                opt(m.end_to_end_decode_fraction_of_bound, |f| format!("{:.0} %", 100.0 * f))
            );
        }
    }
    if let Some(sn) = &r.sensors {
        let _ = writeln!(
            s,
            "\n## Sensors (whole run)\n\n{} readings, power source {:?}, mean SM clock {}, min {}, throttled readings {}{}\n",
            sn.samples,
            sn.power_source,
            opt(sn.mean_sm_clock_mhz, |c| format!("{c:.0} MHz")),
            opt(sn.min_sm_clock_mhz, |c| format!("{c} MHz")),
            sn.throttled_samples,
            if sn.throttle_reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", sn.throttle_reasons.join(", "))
            }
        );
    }
    s
}

/// Several runs side by side.
pub fn runs_markdown(runs: &[RunResults]) -> String {
    let mut s = String::from(
        "| Run | Device | Ternary tokens/s | SGEMM TFLOPS | TriHash MH/s | Power W (mean) | Peak °C | J/token | Cost/hr | Tokens per $ |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let h = &r.headline;
        let per_dollar = match (h.ternary_tokens_per_s, r.cost_per_hour) {
            (Some(t), Some(c)) if c > 0.0 => si(t * 3600.0 / c, ""),
            _ => "–".to_owned(),
        };
        let _ = writeln!(
            s,
            "| {} {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.date.get(..10).unwrap_or(&r.date),
            r.git_commit.as_deref().unwrap_or("?"),
            device_label(r),
            opt(h.ternary_tokens_per_s, |v| si(v, "")),
            opt(h.sgemm_tflops, |v| format!("{v:.2}")),
            opt(h.trihash_mh_s, |v| format!("{v:.2}")),
            opt(h.mean_power_w, |v| format!("{v:.0}")),
            opt(h.peak_temperature_c, |v| v.to_string()),
            opt(h.joules_per_token, |v| format!("{v:.2e}")),
            opt(r.cost_per_hour, |v| format!("${v:.2}")),
            per_dollar
        );
    }
    s
}

/// Errors drawing a chart.
#[derive(Debug, thiserror::Error)]
#[error("drawing {path}: {message}")]
pub struct ChartError {
    /// The chart file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

fn chart_err(path: &Path) -> impl Fn(String) -> ChartError + '_ {
    move |message| ChartError { path: path.display().to_string(), message }
}

/// A bar chart of ternary tokens/s per run.
pub fn throughput_svg(runs: &[RunResults], path: &Path) -> Result<(), ChartError> {
    let err = chart_err(path);
    let bars: Vec<(String, f64)> =
        runs.iter().filter_map(|r| r.headline.ternary_tokens_per_s.map(|t| (device_label(r), t / 1e6))).collect();
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let top = bars.iter().map(|b| b.1).fold(1e-9, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption("Ternary tokens/s (32×512 × 4096²), millions", ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..bars.len().max(1) as f64, 0f64..top)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len().max(1))
        .x_label_formatter(&|x| bars.get(x.floor() as usize).map(|b| b.0.clone()).unwrap_or_default())
        .y_desc("M tokens/s")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(
            bars.iter().enumerate().map(|(i, (_, v))| {
                Rectangle::new([(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)], BLUE.mix(0.7).filled())
            }),
        )
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}

/// The noise-robustness curves of every run, with the expectation.
pub fn noise_svg(runs: &[RunResults], path: &Path) -> Result<(), ChartError> {
    let err = chart_err(path);
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Noise robustness: retention vs trit replacement", ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..30f64, 60f64..101f64)
        .map_err(|e| err(e.to_string()))?;
    chart.configure_mesh().x_desc("noise %").y_desc("retention %").draw().map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(LineSeries::new((0..=30).map(|p| (p as f64, 100.0 - p as f64)), BLACK.mix(0.4)))
        .map_err(|e| err(e.to_string()))?
        .label("expected 100·(1 − p)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.4)));
    for (i, r) in runs.iter().enumerate() {
        let Some(n) = &r.noise_robustness else { continue };
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> =
            n.trit_replacement.iter().map(|p| (100.0 * p.probability, p.retention_pct)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color))
            .map_err(|e| err(e.to_string()))?
            .label(device_label(r))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(|e| err(e.to_string()))?;
    }
    chart.configure_series_labels().border_style(BLACK).draw().map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}

/// One benchmark in a comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareRow {
    /// Benchmark name.
    pub name: String,
    /// Base median, seconds.
    pub base: f64,
    /// New median, seconds.
    pub new: f64,
    /// Relative change of the median time.
    pub gap: f64,
    /// The verdict.
    pub verdict: Verdict,
}

/// Why two runs cannot be compared.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompareError {
    /// Different devices or backends.
    #[error("the runs are on different devices ({base} vs {new}); pass --allow-different-devices to compare anyway")]
    DifferentDevices {
        /// Base device.
        base: String,
        /// New device.
        new: String,
    },
    /// No benchmark name in common.
    #[error("the runs have no benchmark in common")]
    NothingInCommon,
}

/// Two runs compared: a row per benchmark in both, and the benchmarks of
/// one run only, named so that one dropped from a suite cannot hide a
/// regression by its absence.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The benchmarks of both runs, in the base run's order.
    pub rows: Vec<CompareRow>,
    /// Benchmarks of the base run that the new run lacks.
    pub only_in_base: Vec<String>,
    /// Benchmarks of the new run that the base run lacks.
    pub only_in_new: Vec<String>,
}

impl Comparison {
    /// How many benchmarks got slower.
    pub fn slower(&self) -> usize {
        self.rows.iter().filter(|r| r.verdict == Verdict::Slower).count()
    }
}

/// Compares every benchmark present in both runs.
pub fn compare(
    base: &RunResults,
    new: &RunResults,
    threshold: f64,
    allow_different_devices: bool,
) -> Result<Comparison, CompareError> {
    let (bd, nd) = (device_label(base), device_label(new));
    if !allow_different_devices && (bd != nd || base.backend != new.backend) {
        return Err(CompareError::DifferentDevices { base: bd, new: nd });
    }
    let rows: Vec<CompareRow> = base
        .benchmarks
        .iter()
        .filter_map(|b| {
            let n = new.benchmark(&b.name)?;
            let (v, gap) = verdict(&b.time, &n.time, threshold);
            Some(CompareRow { name: b.name.clone(), base: b.time.median, new: n.time.median, gap, verdict: v })
        })
        .collect();
    if rows.is_empty() {
        return Err(CompareError::NothingInCommon);
    }
    let missing_from = |a: &RunResults, b: &RunResults| {
        a.benchmarks.iter().filter(|x| b.benchmark(&x.name).is_none()).map(|x| x.name.clone()).collect()
    };
    Ok(Comparison { rows, only_in_base: missing_from(base, new), only_in_new: missing_from(new, base) })
}

/// A comparison as a Markdown table, then the benchmarks of one run only.
pub fn compare_markdown(c: &Comparison) -> String {
    let mut s = String::from("| Benchmark | Base | New | Change | Verdict |\n|---|---|---|---|---|\n");
    for r in &c.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:+.1} % | {} |",
            r.name,
            duration(r.base),
            duration(r.new),
            100.0 * r.gap,
            r.verdict
        );
    }
    for (names, run) in [(&c.only_in_base, "base"), (&c.only_in_new, "new")] {
        if !names.is_empty() {
            let _ = writeln!(s, "\nOnly in the {run} run (not compared): {}", names.join(", "));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::sample;
    use crate::stats::Summary;

    #[test]
    fn the_models_table_puts_each_figure_under_its_column() {
        let mut r = sample();
        r.models = vec![crate::results::ModelThroughput {
            model: "bitnet_b1_58-large".into(),
            prefill_tokens: 512,
            prefill_tokens_per_s: 221.0,
            decode_tokens_per_s: 58.9,
            weight_bytes: 169_869_312,
            decode_fraction_of_bandwidth_bound: Some(0.46),
            end_to_end_prefill_tokens: Some(128),
            end_to_end_prefill_tokens_per_s: Some(168.0),
            end_to_end_decode_tokens_per_s: Some(40.8),
            end_to_end_decode_fraction_of_bound: Some(0.7049),
        }];
        let md = run_markdown(&r);
        let header = md.lines().find(|l| l.starts_with("| Model |")).unwrap();
        let row = md.lines().find(|l| l.starts_with("| bitnet_b1_58-large |")).unwrap();
        let cells =
            |l: &str| l.split('|').map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect::<Vec<_>>();
        let table: Vec<(String, String)> = cells(header).into_iter().zip(cells(row)).collect();
        let want = [
            ("Prefill tokens/s (batch)", "221.000 tokens/s (512)"),
            ("Decode tokens/s", "58.900 tokens/s"),
            ("Decode vs bandwidth bound", "46 %"),
            ("Whole model: prefill tokens/s (prompt)", "168.000 tokens/s (128)"),
            ("Whole model: decode tokens/s", "40.800 tokens/s"),
            ("Whole model: decode vs bound", "70 %"),
        ];
        for (column, value) in want {
            assert!(table.contains(&(column.to_owned(), value.to_owned())), "{column}: {table:?}");
        }
        assert_eq!(cells(header).len(), cells(row).len(), "{md}");
    }

    #[test]
    fn a_run_compared_with_itself_is_the_same() {
        let r = sample();
        let c = compare(&r, &r, 0.05, false).unwrap();
        assert!(c.rows.iter().all(|row| row.verdict == Verdict::Same), "{c:?}");
        assert!(c.only_in_base.is_empty() && c.only_in_new.is_empty() && c.slower() == 0);
        assert!(!compare_markdown(&c).contains("Only in"));
    }

    #[test]
    fn a_run_thirty_percent_slower_is_slower() {
        let base = sample();
        let mut slow = sample();
        for b in &mut slow.benchmarks {
            b.samples.iter_mut().for_each(|s| *s *= 1.3);
            b.time = Summary::of(&b.samples).unwrap();
        }
        let c = compare(&base, &slow, 0.05, false).unwrap();
        assert!(c.rows.iter().all(|row| row.verdict == Verdict::Slower), "{c:?}");
        assert_eq!(c.slower(), c.rows.len());
        assert!(compare_markdown(&c).contains("+30.0 % | SLOWER"));
    }

    #[test]
    fn benchmarks_of_one_run_only_are_named() {
        let with = |name: &str| {
            let mut r = sample();
            let mut extra = r.benchmarks[0].clone();
            extra.name = name.into();
            r.benchmarks.push(extra);
            r
        };
        let (base, new) = (with("dropped/bench"), with("read/host-memory"));
        let c = compare(&base, &new, 0.05, false).unwrap();
        assert_eq!(c.rows.len(), 1, "the sample's benchmark, in both");
        assert_eq!(c.only_in_base, ["dropped/bench"]);
        assert_eq!(c.only_in_new, ["read/host-memory"]);
        let md = compare_markdown(&c);
        assert!(md.contains("Only in the base run (not compared): dropped/bench"), "{md}");
        assert!(md.contains("Only in the new run (not compared): read/host-memory"), "{md}");
    }

    #[test]
    fn different_devices_are_refused_unless_allowed() {
        let base = sample();
        let mut other = sample();
        other.host.cpu = "Xeon".into();
        let err = compare(&base, &other, 0.05, false).unwrap_err();
        assert!(err.to_string().contains("--allow-different-devices"), "{err}");
        assert!(compare(&base, &other, 0.05, true).is_ok());
    }

    #[test]
    fn reports_and_charts_render() {
        let r = sample();
        let md = run_markdown(&r);
        assert!(md.contains("| Ternary tokens | 512.000 ktokens/s |"), "{md}");
        assert!(md.contains("| 10 % | 90.1 % | 90.0 % |"), "{md}");
        assert!(runs_markdown(&[r.clone(), r.clone()]).lines().count() == 4);
        let dir = std::env::temp_dir().join(format!("trinity-charts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        throughput_svg(std::slice::from_ref(&r), &dir.join("t.svg")).unwrap();
        noise_svg(&[r], &dir.join("n.svg")).unwrap();
        let svg = std::fs::read_to_string(dir.join("n.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{}", &svg[..200.min(svg.len())]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

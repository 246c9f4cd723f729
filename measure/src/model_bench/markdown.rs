//! `bench-model -o md`: llama-bench's table, one row per test that ran, then
//! one line per bound and per figure that is not a test's.

use std::fmt::Write;

use super::{ModelBench, TestFigures};

/// The run as Markdown: the table, a blank line, then the summary lines.
pub fn render(r: &ModelBench) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_to(&mut out, r);
    out
}

fn write_to(out: &mut String, r: &ModelBench) -> std::fmt::Result {
    writeln!(out, "| model | backend | lm_head | test | tokens/s | of bound |")?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    let row = |out: &mut String, test: &str, f: &TestFigures| {
        let bound = f.fraction_of_bound.map_or("–".to_owned(), |f| format!("{:.1} %", 100.0 * f));
        writeln!(
            out,
            "| {} | {} | {} | {test} | {:.2} ± {:.2} | {bound} |",
            r.model, r.backend, r.lm_head, f.tokens_per_s, f.sd
        )
    };
    for f in r.pp.iter().chain(&r.tg) {
        row(out, &f.test, f)?;
    }
    if let Some(b) = &r.pp_dense_f16 {
        row(out, &format!("pp{} ({})", b.figures.tokens, b.linears), &b.figures)?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{} repetitions{}; decode reads {:.3} GB of weights per token (2-bit linears + {} lm_head) and {:.3} GB of KV cache at the mean context; peak RSS {}",
        r.reps,
        r.threads.map_or(String::new(), |t| format!(" on {t} CPU threads")),
        r.decode_bytes_per_token as f64 / 1e9,
        r.lm_head,
        r.kv_bytes_per_token as f64 / 1e9,
        r.peak_rss_bytes.map_or("unknown".into(), |b| format!("{:.2} GB", b as f64 / 1e9))
    )?;
    if r.tg.is_some() {
        match (r.bandwidth_bytes_per_s, &r.bandwidth_samples, &r.bandwidth_ceiling) {
            (Some(bw), Some(samples), Some(what)) => {
                let (lo, hi) = samples.iter().fold((f64::INFINITY, 0f64), |(l, h), &b| (l.min(b), h.max(b)));
                writeln!(
                    out,
                    "decode bound: {what} {:.1} GB/s (mean; {:.1}–{:.1}), measured after each repetition",
                    bw / 1e9,
                    lo / 1e9,
                    hi / 1e9
                )?;
            }
            _ => writeln!(out, "decode bound: no bandwidth ceiling on this backend")?,
        }
    }
    if r.pp.is_some() {
        match (r.int8_macs_per_s, &r.int8_ceiling) {
            (Some(p), Some(how)) => writeln!(
                out,
                "prefill bound: {:.1} G int8 multiply-adds/s ({how}) over {} ternary weights per token",
                p / 1e9,
                r.linear_weights
            )?,
            _ => writeln!(out, "prefill bound: no int8 peak measured on this backend")?,
        }
    }
    if let Some(b) = &r.pp_dense_f16 {
        writeln!(
            out,
            "prefill vs the same model with {}: {:.2}× (ternary pp{p} / dense pp{p}, same run)",
            b.linears,
            b.ternary_speedup,
            p = b.figures.tokens
        )?;
    }
    if let Some(e) = &r.head_error {
        writeln!(out, "{}", e.describe(&r.lm_head))?;
    }
    for f in r.pp.iter().chain(&r.tg) {
        if let (Some(j), Some(w)) = (f.joules_per_token, f.mean_power_w) {
            writeln!(out, "energy {}: {j:.4} J/token at {w:.0} W mean (board counter over the timed runs)", f.test)?;
        }
    }
    if let Some(b) = r.gpu_memory_used_bytes {
        writeln!(out, "GPU memory in use after the runs: {:.2} GB (NVML, whole device)", b as f64 / 1e9)?;
    }
    Ok(())
}

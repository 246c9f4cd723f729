//! `bench-model -o csv`: a header, then one row per test that ran.

use super::{ModelBench, TestFigures};

/// The columns, in order.
pub const HEADER: &str = "model,backend,lm_head,test,tokens_per_s,sd,reps,fraction_of_bound,peak_rss_bytes";

/// The run as CSV: [`HEADER`], then prefill, decode and the dense baseline's
/// rows (an unknown figure is an empty field).
pub fn render(r: &ModelBench) -> String {
    let field = |x: Option<String>| x.unwrap_or_default();
    let rss = field(r.peak_rss_bytes.map(|b| b.to_string()));
    let row = |f: &TestFigures| {
        format!(
            "{},{},{},{},{},{},{},{},{rss}\n",
            quote(&r.model),
            r.backend,
            r.lm_head,
            f.test,
            f.tokens_per_s,
            f.sd,
            r.reps,
            field(f.fraction_of_bound.map(|v| v.to_string()))
        )
    };
    let mut out = format!("{HEADER}\n");
    out.extend(r.tests().map(row));
    out
}

/// A field as RFC 4180 wants it: quoted, its quotes doubled, when it holds a
/// comma, a quote or a line break (a model path may).
pub fn quote(field: &str) -> String {
    match field.contains([',', '"', '\n', '\r']) {
        true => format!("\"{}\"", field.replace('"', "\"\"")),
        false => field.to_owned(),
    }
}

//! `bench-serve -o csv`: a header, then one row per concurrency level.

use super::ServeBench;
use crate::model_bench::csv::quote;

/// The columns, in order.
pub const HEADER: &str = "model,backend,concurrency,requests,aggregate_tokens_per_s,per_stream_decode_tokens_per_s,ttft_p50_s,ttft_p90_s,token_latency_p50_s,token_latency_p90_s,token_latency_p99_s";

/// The run as CSV: [`HEADER`], then a row per level (an unknown figure is an empty field).
pub fn render(r: &ServeBench) -> String {
    let field = |x: Option<f64>| x.map_or(String::new(), |v| v.to_string());
    let mut out = format!("{HEADER}\n");
    for l in &r.levels {
        out += &format!(
            "{},{},{},{},{},{},{},{},{},{},{}\n",
            quote(&r.model),
            r.backend,
            l.concurrency,
            l.requests,
            l.aggregate_tokens_per_s,
            field(l.per_stream_decode_tokens_per_s),
            l.ttft_p50_s,
            l.ttft_p90_s,
            field(l.token_latency_p50_s),
            field(l.token_latency_p90_s),
            field(l.token_latency_p99_s)
        );
    }
    out
}

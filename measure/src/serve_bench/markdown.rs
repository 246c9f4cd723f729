//! `bench-serve -o md`: one row per concurrency level, its aggregate rate
//! beside the single stream's, then a line on what each request was.

use super::ServeBench;

/// The run as Markdown.
pub fn render(r: &ServeBench) -> String {
    let ms = |s: Option<f64>, digits: usize| s.map_or("–".to_owned(), |s| format!("{:.digits$}", s * 1e3));
    let mut out = String::from(
        "| model | backend | concurrency | requests | aggregate tok/s | vs 1 stream | per-stream decode tok/s | TTFT p50 / p90 ms | token latency p50 / p90 / p99 ms |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let single = r.levels.iter().find(|l| l.concurrency == 1).map(|l| l.aggregate_tokens_per_s);
    for l in &r.levels {
        let ratio = single.map_or("–".into(), |s| format!("{:.2}×", l.aggregate_tokens_per_s / s));
        let latency = match (l.token_latency_p50_s, l.token_latency_p90_s, l.token_latency_p99_s) {
            (None, None, None) => "–".to_owned(),
            (p50, p90, p99) => format!("{} / {} / {}", ms(p50, 1), ms(p90, 1), ms(p99, 1)),
        };
        out += &format!(
            "| {} | {} | {} | {} | {:.2} | {ratio} | {} | {} / {} | {latency} |\n",
            r.model,
            r.backend,
            l.concurrency,
            l.requests,
            l.aggregate_tokens_per_s,
            l.per_stream_decode_tokens_per_s.map_or("–".to_owned(), |t| format!("{t:.2}")),
            ms(Some(l.ttft_p50_s), 0),
            ms(Some(l.ttft_p90_s), 0),
        );
    }
    out += &format!(
        "\nprompt {} tokens, {} generated per request, greedy, streamed; server and clients in one process\n",
        r.prompt_tokens, r.generated_tokens
    );
    out
}

//! `trinity bench-serve`'s figures: one [`ServeBench`] per run, which is the
//! JSON it prints field for field; [`markdown`] and [`csv`] write the other
//! two outputs from it.
//!
//! Each concurrency level is summed up from what every streamed request saw
//! ([`RequestTiming`]: when each token arrived) by [`Level::of`].

pub mod csv;
pub mod markdown;

use serde::Serialize;
use trinity::BackendKind;

/// Everything one `bench-serve` run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServeBench {
    /// The model directory or hub id (`--model`), or the published shape (`--shape`).
    pub model: String,
    /// The backend the server ran on.
    pub backend: BackendKind,
    /// Prompt tokens of every request.
    pub prompt_tokens: usize,
    /// Tokens each request asked to generate.
    pub generated_tokens: usize,
    /// One entry per concurrency level, in the order they ran.
    pub levels: Vec<Level>,
}

/// One concurrency level: every client sends its requests one after another,
/// all clients at once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Level {
    /// Clients sending at once.
    pub concurrency: usize,
    /// Requests completed.
    pub requests: usize,
    /// Tokens streamed over all requests / the level's wall time.
    pub aggregate_tokens_per_s: f64,
    /// Mean over requests of (tokens − 1) / (last token's arrival − first's);
    /// `None` when no request streamed two tokens.
    pub per_stream_decode_tokens_per_s: Option<f64>,
    /// Time to first token, seconds: the median over requests.
    pub ttft_p50_s: f64,
    /// Time to first token, seconds: the 90th percentile.
    pub ttft_p90_s: f64,
    /// Gaps between a stream's successive tokens, seconds, over all
    /// requests: the median; `None` with no gap (one token a request).
    pub token_latency_p50_s: Option<f64>,
    /// Those gaps' 90th percentile.
    pub token_latency_p90_s: Option<f64>,
    /// Those gaps' 99th percentile.
    pub token_latency_p99_s: Option<f64>,
}

/// What one streamed request saw: when each of its tokens arrived, seconds
/// after the request was sent (in order, at least one).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestTiming {
    /// Arrival of each token, seconds after sending.
    pub token_times: Vec<f64>,
}

impl Level {
    /// The level's figures from its requests (`wall_s`: the level's wall time);
    /// `None` when there is no request or one carried no token.
    pub fn of(concurrency: usize, wall_s: f64, requests: &[RequestTiming]) -> Option<Level> {
        if requests.is_empty() || requests.iter().any(|r| r.token_times.is_empty()) {
            return None;
        }
        let tokens: usize = requests.iter().map(|r| r.token_times.len()).sum();
        let mut ttft: Vec<f64> = requests.iter().map(|r| r.token_times[0]).collect();
        let mut gaps: Vec<f64> = requests.iter().flat_map(|r| r.token_times.windows(2).map(|w| w[1] - w[0])).collect();
        let streams: Vec<f64> = requests
            .iter()
            .filter_map(|r| {
                let (n, span) = (r.token_times.len(), r.token_times[r.token_times.len() - 1] - r.token_times[0]);
                (n > 1 && span > 0.0).then(|| (n - 1) as f64 / span)
            })
            .collect();
        Some(Level {
            concurrency,
            requests: requests.len(),
            aggregate_tokens_per_s: tokens as f64 / wall_s,
            per_stream_decode_tokens_per_s: (!streams.is_empty())
                .then(|| streams.iter().sum::<f64>() / streams.len() as f64),
            ttft_p50_s: nearest_rank(&mut ttft, 0.5)?,
            ttft_p90_s: nearest_rank(&mut ttft, 0.9)?,
            token_latency_p50_s: nearest_rank(&mut gaps, 0.5),
            token_latency_p90_s: nearest_rank(&mut gaps, 0.9),
            token_latency_p99_s: nearest_rank(&mut gaps, 0.99),
        })
    }
}

/// The `q` quantile of `v` as one of its values: the `round((n − 1)·q)`-th
/// smallest (`v` is sorted in place); `None` when `v` is empty.
pub fn nearest_rank(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[((v.len() - 1) as f64 * q).round() as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(token_times: &[f64]) -> RequestTiming {
        RequestTiming { token_times: token_times.to_vec() }
    }

    /// Two levels: one stream of three tokens, then two streams, one of a single token.
    fn run() -> ServeBench {
        let one = Level::of(1, 0.5, &[timing(&[0.1, 0.3, 0.5])]).unwrap();
        let two = Level::of(2, 2.0, &[timing(&[0.2, 0.25, 0.35, 0.4]), timing(&[0.6])]).unwrap();
        ServeBench {
            model: "m,1".into(),
            backend: BackendKind::Cpu,
            prompt_tokens: 4,
            generated_tokens: 3,
            levels: vec![one, two],
        }
    }

    #[test]
    fn nearest_rank_picks_a_sample_by_rounded_rank() {
        let mut v = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        for (q, want) in [(0.0, 1.0), (0.5, 3.0), (0.9, 5.0), (0.6, 3.0), (0.63, 4.0), (1.0, 5.0)] {
            assert_eq!(nearest_rank(&mut v, q), Some(want), "q = {q}");
        }
        assert_eq!(nearest_rank(&mut [2.0, 1.0], 0.5), Some(2.0), "a rank of 0.5 rounds away from zero");
        assert_eq!(nearest_rank(&mut [], 0.5), None);
    }

    #[test]
    fn a_level_sums_up_its_requests() {
        let r = run();
        let one = &r.levels[0];
        assert_eq!((one.requests, one.aggregate_tokens_per_s), (1, 6.0));
        assert_eq!(one.per_stream_decode_tokens_per_s, Some(5.0));
        assert_eq!((one.ttft_p50_s, one.ttft_p90_s), (0.1, 0.1));
        assert_eq!(one.token_latency_p99_s, Some(0.2));
        let two = &r.levels[1];
        assert_eq!((two.requests, two.aggregate_tokens_per_s), (2, 2.5));
        // The single-token request has no decode rate and no gap; the other's three gaps are 0.05, 0.1, 0.05.
        assert!((two.per_stream_decode_tokens_per_s.unwrap() - 15.0).abs() < 1e-12, "{two:?}");
        assert_eq!((two.ttft_p50_s, two.ttft_p90_s), (0.6, 0.6));
        assert!((two.token_latency_p50_s.unwrap() - 0.05).abs() < 1e-12, "{two:?}");
        assert!((two.token_latency_p90_s.unwrap() - 0.1).abs() < 1e-12, "{two:?}");
        // One token a request: no stream rate, no latency; no request or an empty one: no level.
        let single = Level::of(1, 1.0, &[timing(&[0.3])]).unwrap();
        assert_eq!((single.per_stream_decode_tokens_per_s, single.token_latency_p50_s), (None, None));
        assert_eq!(Level::of(1, 1.0, &[]), None);
        assert_eq!(Level::of(1, 1.0, &[timing(&[0.3]), timing(&[])]), None);
    }

    #[test]
    fn json_markdown_and_csv_carry_each_level() {
        let r = run();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!((&v["backend"], &v["prompt_tokens"], &v["generated_tokens"]), (&"cpu".into(), &4.into(), &3.into()));
        assert_eq!(v["levels"][1]["concurrency"], 2);
        assert_eq!(v["levels"][0]["per_stream_decode_tokens_per_s"], 5.0);
        let md = markdown::render(&r);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines[2], "| m,1 | cpu | 1 | 1 | 6.00 | 1.00× | 5.00 | 100 / 100 | 200.0 / 200.0 / 200.0 |");
        assert_eq!(lines[3], "| m,1 | cpu | 2 | 2 | 2.50 | 0.42× | 15.00 | 600 / 600 | 50.0 / 100.0 / 100.0 |");
        assert_eq!(
            lines[5],
            "prompt 4 tokens, 3 generated per request, greedy, streamed; server and clients in one process"
        );
        let text = csv::render(&r);
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows[0], csv::HEADER);
        assert_eq!(rows[1], "\"m,1\",cpu,1,1,6,5,0.1,0.1,0.2,0.2,0.2");
        assert_eq!(rows.len(), 3);
        // A level with no stream rate or gap: a dash in md, an empty field in csv.
        let mut sparse = run();
        sparse.levels = vec![Level::of(1, 1.0, &[timing(&[0.3])]).unwrap()];
        assert!(
            markdown::render(&sparse).contains("| 1.00 | 1.00× | – | 300 / 300 | – |"),
            "{}",
            markdown::render(&sparse)
        );
        assert!(csv::render(&sparse).ends_with(",1,,0.3,0.3,,,\n"), "{}", csv::render(&sparse));
    }
}

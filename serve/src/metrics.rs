//! Counters the engine and the HTTP side update, rendered as Prometheus text
//! for `GET /metrics`.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Upper bounds (seconds) of the time-to-first-token histogram's buckets.
const TTFT_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The server's counters and gauges; shared by the HTTP handlers and the engine.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// Requests accepted into the queue.
    pub requests: AtomicU64,
    /// Requests refused (full queue: 429).
    pub rejected: AtomicU64,
    /// Requests that ended with an error response (4xx other than 429, 5xx).
    pub bad_requests: AtomicU64,
    /// Requests finished by the engine.
    pub finished: AtomicU64,
    /// Requests dropped because their client went away.
    pub cancelled: AtomicU64,
    /// Requests waiting for a slot.
    pub queued: AtomicU64,
    /// Sequences in the running batch.
    pub running: AtomicU64,
    /// Rows of the last batched step.
    pub last_step_rows: AtomicU64,
    /// Batched steps run.
    pub steps: AtomicU64,
    /// Prompt tokens run through the model.
    pub prompt_tokens: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    /// Nanoseconds the engine spent in forward passes.
    pub busy_ns: AtomicU64,
    ttft: Mutex<Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; TTFT_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            requests: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            running: AtomicU64::new(0),
            last_step_rows: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            ttft: Mutex::new(Histogram::default()),
        }
    }
}

impl Metrics {
    /// Records one request's time to first token.
    pub fn observe_ttft(&self, seconds: f64) {
        let mut h = self.ttft.lock().unwrap_or_else(|e| e.into_inner());
        for (c, &le) in h.counts.iter_mut().zip(&TTFT_BUCKETS) {
            if seconds <= le {
                *c += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let uptime = self.started.elapsed().as_secs_f64().max(1e-9);
        let busy = get(&self.busy_ns) as f64 / 1e9;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        metric(
            "trinity_requests_total",
            "counter",
            "Requests accepted into the queue.",
            get(&self.requests).to_string(),
        );
        metric("trinity_requests_rejected_total", "counter", "Requests refused with 429 (queue full).", {
            get(&self.rejected).to_string()
        });
        metric("trinity_requests_invalid_total", "counter", "Requests answered with another error.", {
            get(&self.bad_requests).to_string()
        });
        metric("trinity_requests_finished_total", "counter", "Requests the engine finished.", {
            get(&self.finished).to_string()
        });
        metric("trinity_requests_cancelled_total", "counter", "Requests whose client went away.", {
            get(&self.cancelled).to_string()
        });
        metric("trinity_queue_depth", "gauge", "Requests waiting for a batch slot.", get(&self.queued).to_string());
        metric("trinity_batch_sequences", "gauge", "Sequences in the running batch.", get(&self.running).to_string());
        metric("trinity_batch_rows", "gauge", "Rows (tokens) of the last batched step.", {
            get(&self.last_step_rows).to_string()
        });
        metric("trinity_steps_total", "counter", "Batched forward steps.", get(&self.steps).to_string());
        metric("trinity_prompt_tokens_total", "counter", "Prompt tokens processed.", {
            get(&self.prompt_tokens).to_string()
        });
        metric("trinity_generated_tokens_total", "counter", "Tokens generated.", {
            get(&self.generated_tokens).to_string()
        });
        metric("trinity_engine_busy_seconds_total", "counter", "Seconds spent in forward passes.", busy.to_string());
        metric("trinity_prompt_tokens_per_second", "gauge", "Prompt tokens per second of engine time.", {
            (get(&self.prompt_tokens) as f64 / busy.max(1e-9)).to_string()
        });
        metric("trinity_generated_tokens_per_second", "gauge", "Generated tokens per second of engine time.", {
            (get(&self.generated_tokens) as f64 / busy.max(1e-9)).to_string()
        });
        metric("trinity_uptime_seconds", "gauge", "Seconds since the server started.", uptime.to_string());
        let h = self.ttft.lock().unwrap_or_else(|e| e.into_inner());
        let name = "trinity_time_to_first_token_seconds";
        let _ = writeln!(out, "# HELP {name} From arrival to the first generated token.\n# TYPE {name} histogram");
        for (c, le) in h.counts.iter().zip(TTFT_BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {c}");
        }
        let _ =
            writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}", h.count, h.sum, h.count);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttft_lands_in_cumulative_buckets() {
        let m = Metrics::default();
        m.observe_ttft(0.03);
        m.observe_ttft(3.0);
        let text = m.render();
        assert!(text.contains("trinity_time_to_first_token_seconds_bucket{le=\"0.025\"} 0"), "{text}");
        assert!(text.contains("trinity_time_to_first_token_seconds_bucket{le=\"0.05\"} 1"), "{text}");
        assert!(text.contains("trinity_time_to_first_token_seconds_bucket{le=\"5\"} 2"), "{text}");
        assert!(text.contains("trinity_time_to_first_token_seconds_count 2"), "{text}");
        assert!(text.contains("# TYPE trinity_queue_depth gauge\ntrinity_queue_depth 0"), "{text}");
    }
}

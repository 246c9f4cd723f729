//! # Sample statistics and the compare rule
//!
//! A benchmark keeps its per-sample times (seconds per iteration). Its
//! [`Summary`] has the median, mean, min, max, quartiles, a relative spread
//! (interquartile range / median), and a distribution-free 95 % confidence
//! interval of the median from order statistics (ranks `n/2 ∓ 0.98·√n`).
//!
//! ## The compare rule ([`verdict`])
//! With `gap = (new − base) / base` of the medians and `t` the threshold
//! (default 5 %):
//! - **SLOWER** / **FASTER**: the two confidence intervals do not overlap and
//!   `|gap| > t` (slower when the new time is larger);
//! - **SAME**: `|gap| ≤ t / 2` and both medians are known to within `t`
//!   (their confidence intervals' half-widths relative to the median are
//!   `≤ t`); a measurement compared with itself (identical summaries) is
//!   always SAME;
//! - **UNSURE**: anything else (overlapping intervals with a large gap, or a
//!   small gap measured with too much noise to call it the same).

use serde::{Deserialize, Serialize};

/// Summary of one benchmark's samples (seconds per iteration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub samples: usize,
    /// Median.
    pub median: f64,
    /// Mean.
    pub mean: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// First quartile.
    pub q1: f64,
    /// Third quartile.
    pub q3: f64,
    /// Interquartile range / median.
    pub rel_spread: f64,
    /// Lower end of the 95 % confidence interval of the median.
    pub ci_low: f64,
    /// Upper end of the 95 % confidence interval of the median.
    pub ci_high: f64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl Summary {
    /// Half the confidence interval of the median, relative to the median.
    pub fn ci_rel_half_width(&self) -> f64 {
        if self.median > 0.0 { (self.ci_high - self.ci_low) / (2.0 * self.median) } else { f64::INFINITY }
    }

    /// Summarizes samples; `None` when there are none or any is not finite.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = quantile(&s, 0.5);
        let half = 0.98 * (n as f64).sqrt();
        let lo = ((n as f64 / 2.0 - half).floor().max(0.0)) as usize;
        let hi = ((n as f64 / 2.0 + half).ceil() as usize).min(n - 1);
        let (q1, q3) = (quantile(&s, 0.25), quantile(&s, 0.75));
        Some(Summary {
            samples: n,
            median,
            mean: s.iter().sum::<f64>() / n as f64,
            min: s[0],
            max: s[n - 1],
            q1,
            q3,
            rel_spread: if median > 0.0 { (q3 - q1) / median } else { 0.0 },
            ci_low: s[lo],
            ci_high: s[hi],
        })
    }
}

/// The outcome of comparing two benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// The new run is faster.
    Faster,
    /// The new run is slower (a regression).
    Slower,
    /// No meaningful difference.
    Same,
    /// The data cannot decide.
    Unsure,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Faster => "FASTER",
            Verdict::Slower => "SLOWER",
            Verdict::Same => "SAME",
            Verdict::Unsure => "UNSURE",
        })
    }
}

/// Compares two summaries of time per iteration (see the module docs);
/// returns the verdict and the relative gap of the medians.
pub fn verdict(base: &Summary, new: &Summary, threshold: f64) -> (Verdict, f64) {
    let gap = (new.median - base.median) / base.median;
    let disjoint = new.ci_low > base.ci_high || new.ci_high < base.ci_low;
    let v = if disjoint && gap.abs() > threshold {
        if gap > 0.0 { Verdict::Slower } else { Verdict::Faster }
    } else if base == new
        || (gap.abs() <= threshold / 2.0
            && base.ci_rel_half_width() <= threshold
            && new.ci_rel_half_width() <= threshold)
    {
        Verdict::Same
    } else {
        Verdict::Unsure
    };
    (v, gap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn around(center: f64, jitter: f64, n: usize) -> Vec<f64> {
        (0..n).map(|i| center * (1.0 + jitter * ((i % 5) as f64 - 2.0) / 2.0)).collect()
    }

    #[test]
    fn summary_of_known_samples() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((s.samples, s.median, s.min, s.max, s.mean), (5, 3.0, 1.0, 5.0, 3.0));
        assert_eq!((s.q1, s.q3), (2.0, 4.0));
        assert!((s.rel_spread - 2.0 / 3.0).abs() < 1e-12);
        assert!(s.ci_low <= s.median && s.median <= s.ci_high);
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn thirty_percent_slower_with_tight_samples_is_slower() {
        let base = Summary::of(&around(1.0, 0.01, 30)).unwrap();
        let new = Summary::of(&around(1.3, 0.01, 30)).unwrap();
        assert_eq!(verdict(&base, &new, 0.05).0, Verdict::Slower);
        assert_eq!(verdict(&new, &base, 0.05).0, Verdict::Faster);
    }

    #[test]
    fn identical_tight_samples_are_the_same() {
        let s = Summary::of(&around(2e-3, 0.01, 20)).unwrap();
        assert_eq!(verdict(&s, &s, 0.05), (Verdict::Same, 0.0));
    }

    #[test]
    fn a_small_gap_measured_noisily_is_unsure() {
        let base = Summary::of(&around(1.0, 0.4, 20)).unwrap();
        let new = Summary::of(&around(1.01, 0.4, 20)).unwrap();
        assert_eq!(verdict(&base, &new, 0.05).0, Verdict::Unsure);
        // The same noisy measurement against itself is still the same.
        assert_eq!(verdict(&base, &base, 0.05).0, Verdict::Same);
    }

    #[test]
    fn a_large_gap_with_overlapping_intervals_is_unsure() {
        let base = Summary::of(&around(1.0, 0.8, 10)).unwrap();
        let new = Summary::of(&around(1.2, 0.8, 10)).unwrap();
        assert_eq!(verdict(&base, &new, 0.05).0, Verdict::Unsure);
    }

    #[test]
    fn a_tiny_but_certain_gap_is_not_called_slower() {
        // Disjoint intervals, but below the threshold: not a regression worth failing CI.
        let base = Summary::of(&around(1.0, 0.001, 50)).unwrap();
        let new = Summary::of(&around(1.02, 0.001, 50)).unwrap();
        assert_eq!(verdict(&base, &new, 0.05).0, Verdict::Same);
    }
}

//! Small statistics over samples: percentiles (nearest rank) and a summary.

use serde_json::{Value, json};

/// The `p`-th percentile (0–100) of `samples` by the nearest-rank method: the
/// smallest sample such that at least `p`% of the samples are at most it. `None`
/// for no samples.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A summary of samples (milliseconds, bytes, ...).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// How many samples.
    pub count: usize,
    /// The smallest.
    pub min: f64,
    /// The median (nearest rank).
    pub p50: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The largest.
    pub max: f64,
    /// The arithmetic mean.
    pub mean: f64,
}

impl Summary {
    /// Summarises `samples`; `None` for no samples.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let pct = |p| percentile(samples, p);
        Some(Summary {
            count: samples.len(),
            min: pct(0.0)?,
            p50: pct(50.0)?,
            p90: pct(90.0)?,
            p99: pct(99.0)?,
            max: pct(100.0)?,
            mean: samples.iter().sum::<f64>() / samples.len() as f64,
        })
    }

    /// As a JSON object with figures rounded to 3 decimals.
    pub fn json(&self) -> Value {
        json!({
            "count": self.count, "min": round3(self.min), "p50": round3(self.p50), "p90": round3(self.p90),
            "p99": round3(self.p99), "max": round3(self.max), "mean": round3(self.mean),
        })
    }
}

/// Rounds to 3 decimals (for JSON output).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The least-squares slope and intercept of `y` against `x`; `None` for fewer than
/// two distinct `x`.
pub fn linear_fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    if points.len() < 2 || sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let slope = sxy / sxx;
    Some((slope, my - slope * mx))
}

/// The coefficient of determination of the fit `(slope, intercept)` over `points`
/// (1 for a perfect line).
pub fn r_squared(points: &[(f64, f64)], (slope, intercept): (f64, f64)) -> f64 {
    let my = points.iter().map(|(_, y)| y).sum::<f64>() / points.len() as f64;
    let ss_tot: f64 = points.iter().map(|(_, y)| (y - my).powi(2)).sum();
    let ss_res: f64 = points.iter().map(|(x, y)| (y - (slope * x + intercept)).powi(2)).sum();
    if ss_tot == 0.0 { 1.0 } else { 1.0 - ss_res / ss_tot }
}

/// The rate of a counter sampled as `(seconds, value)` points in time order: the
/// peak rate between two consecutive samples and the mean rate from the first
/// sample to the last, per second. `None` for fewer than two samples or no time.
pub fn rates(samples: &[(f64, f64)]) -> Option<(f64, f64)> {
    let (first, last) = (samples.first()?, samples.last()?);
    let span = last.0 - first.0;
    if samples.len() < 2 || span <= 0.0 {
        return None;
    }
    let peak = samples
        .windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| (w[1].1 - w[0].1) / (w[1].0 - w[0].0))
        .fold(0.0, f64::max);
    Some((peak, (last.1 - first.1) / span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), Some(50.0));
        assert_eq!(percentile(&s, 99.0), Some(99.0));
        assert_eq!(percentile(&s, 100.0), Some(100.0));
        assert_eq!(percentile(&s, 0.0), Some(1.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn p99_of_few_samples_is_the_max() {
        let s = [5.0, 1.0, 9.0, 2.0];
        assert_eq!(percentile(&s, 99.0), Some(9.0));
    }

    #[test]
    fn summary_of_samples() {
        let s = Summary::of(&[4.0, 2.0, 6.0, 8.0]).unwrap();
        assert_eq!((s.count, s.min, s.p50, s.max, s.mean), (4, 2.0, 4.0, 8.0, 5.0));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn peak_and_mean_rates() {
        let s = [(0.0, 0.0), (0.1, 10.0), (0.2, 40.0), (0.4, 50.0)];
        let (peak, mean) = rates(&s).unwrap();
        assert!((peak - 300.0).abs() < 1e-9 && (mean - 125.0).abs() < 1e-9, "{peak} {mean}");
        assert!(rates(&[(0.0, 1.0)]).is_none());
        assert!(rates(&[(1.0, 1.0), (1.0, 5.0)]).is_none());
    }

    #[test]
    fn fits_a_line() {
        let pts = [(10.0, 21.0), (20.0, 41.0), (40.0, 81.0)];
        let (m, b) = linear_fit(&pts).unwrap();
        assert!((m - 2.0).abs() < 1e-9 && (b - 1.0).abs() < 1e-9);
        assert!((r_squared(&pts, (m, b)) - 1.0).abs() < 1e-9);
        assert!(linear_fit(&[(1.0, 1.0)]).is_none());
        assert!(linear_fit(&[(1.0, 1.0), (1.0, 2.0)]).is_none());
    }
}

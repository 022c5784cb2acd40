//! The timeline of one rollout: when each host committed its fence and when it
//! registered at the new version, and the handoffs between consecutive hosts.
//!
//! Times are milliseconds on one clock (the machine's wall clock for sidecar
//! processes, which all run here; a monotonic clock for in-process agents), taken
//! by the sidecar code right after the reply to its transaction arrived.

use crate::stats::Summary;

/// A moment in a host's step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The fence transaction committed ("fenced: starting the step").
    Fenced,
    /// The success transaction committed: registered at the new version ("host upgraded").
    Upgraded,
    /// This host completed the rollout ("rollout completed").
    Completed,
    /// A fence transaction lost a race ("fence lost; re-reading"): someone moved
    /// between the host's read and its commit (BadVersion etc.).
    FenceLost,
}

impl Mark {
    /// The mark a sidecar log message stands for.
    pub fn from_message(message: &str) -> Option<Mark> {
        match message {
            "fenced: starting the step" => Some(Mark::Fenced),
            "host upgraded" => Some(Mark::Upgraded),
            "rollout completed" => Some(Mark::Completed),
            "fence lost; re-reading" => Some(Mark::FenceLost),
            _ => None,
        }
    }
}

/// One recorded mark.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The host.
    pub host: String,
    /// What happened.
    pub mark: Mark,
    /// When, in milliseconds on the common clock.
    pub at_ms: f64,
}

/// What a rollout's marks show.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// Hosts in fence order, with their fence and registration times.
    pub steps: Vec<(String, f64, f64)>,
    /// Handoffs: host i registered → host i+1 fenced, ms.
    pub handoffs: Vec<f64>,
    /// Steps: host fenced → host registered, ms.
    pub step_ms: Vec<f64>,
    /// When the rollout completed, if seen.
    pub completed_ms: Option<f64>,
    /// Handoffs where the next fence came before the previous registration (should
    /// not happen with `max_parallel = 1`).
    pub overlaps: usize,
    /// Fence transactions that lost a race ([`Mark::FenceLost`]).
    pub conflicts: usize,
}

impl Timeline {
    /// Builds the timeline from the marks of one rollout (in any order).
    pub fn build(events: &[Event]) -> Timeline {
        let mut steps: Vec<(String, f64, f64)> = Vec::new();
        for e in events.iter().filter(|e| e.mark == Mark::Fenced) {
            let up = events
                .iter()
                .filter(|u| u.mark == Mark::Upgraded && u.host == e.host && u.at_ms >= e.at_ms)
                .map(|u| u.at_ms)
                .fold(f64::NAN, f64::min);
            steps.push((e.host.clone(), e.at_ms, up));
        }
        steps.sort_by(|a, b| a.1.total_cmp(&b.1));
        let step_ms = steps.iter().filter(|s| s.2.is_finite()).map(|s| s.2 - s.1).collect();
        let mut handoffs = Vec::new();
        let mut overlaps = 0;
        for w in steps.windows(2) {
            let (prev_up, next_fence) = (w[0].2, w[1].1);
            if !prev_up.is_finite() {
                continue;
            }
            if next_fence < prev_up {
                overlaps += 1;
            } else {
                handoffs.push(next_fence - prev_up);
            }
        }
        let completed_ms = events.iter().filter(|e| e.mark == Mark::Completed).map(|e| e.at_ms).reduce(f64::min);
        let conflicts = events.iter().filter(|e| e.mark == Mark::FenceLost).count();
        Timeline { steps, handoffs, step_ms, completed_ms, overlaps, conflicts }
    }

    /// Lost fences per won fence (0 without fences).
    pub fn conflicts_per_fence(&self) -> f64 {
        match self.steps.len() {
            0 => 0.0,
            fences => self.conflicts as f64 / fences as f64,
        }
    }

    /// The slot refill latencies with `k` slots ([`refills`]) of this rollout.
    pub fn refills(&self, k: usize) -> Refills {
        let fences: Vec<f64> = self.steps.iter().map(|s| s.1).collect();
        let successes: Vec<f64> = self.steps.iter().map(|s| s.2).filter(|t| t.is_finite()).collect();
        refills(&successes, &fences, k)
    }

    /// The first fence and the last success, if any.
    pub fn span(&self) -> Option<(f64, f64)> {
        let first = self.steps.first()?.1;
        let last = self.steps.iter().map(|s| s.2).filter(|t| t.is_finite()).reduce(f64::max)?;
        Some((first, last))
    }

    /// The handoff latencies summarised.
    pub fn handoff(&self) -> Option<Summary> {
        Summary::of(&self.handoffs)
    }

    /// The step durations summarised.
    pub fn step(&self) -> Option<Summary> {
        Summary::of(&self.step_ms)
    }
}

/// Slot refill latencies of a rollout with `max_parallel` `k`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Refills {
    /// One latency per refilled slot, ms.
    pub ms: Vec<f64>,
    /// Pairs whose fence came before the success that freed its slot (client-side
    /// timing: both are reply arrival times), left out of `ms`.
    pub inverted: usize,
}

/// The slot refill latency with `k` slots: for each success (a host registered at
/// the new version, which frees its slot), the time until the fence that takes the
/// freed slot.
///
/// With at most `k` hosts between fence and success, the fence that comes `k`-th
/// after the `i`-th success's slot was taken is the `(i + k)`-th fence (0-based, in
/// time order): the `(i + k)`-th fence needs `i + 1` successes before it. So the
/// `i`-th success (in time order) is paired with the `(i + k)`-th fence, and the last
/// `k` successes, which free a slot nobody needs, have no pair. For `k = 1` this is
/// the handoff: host i registered → host i+1 fenced.
pub fn refills(successes: &[f64], fences: &[f64], k: usize) -> Refills {
    let sort = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v
    };
    let (successes, fences) = (sort(successes), sort(fences));
    let mut out = Refills::default();
    for (s, f) in successes.iter().zip(fences.iter().skip(k.max(1))) {
        match f - s {
            d if d < 0.0 => out.inverted += 1,
            d => out.ms.push(d),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(host: &str, mark: Mark, at_ms: f64) -> Event {
        Event { host: host.into(), mark, at_ms }
    }

    #[test]
    fn handoffs_between_consecutive_hosts() {
        let events = [
            ev("b", Mark::Fenced, 20.0),
            ev("a", Mark::Upgraded, 15.0),
            ev("a", Mark::Fenced, 10.0),
            ev("b", Mark::Upgraded, 26.0),
            ev("c", Mark::Fenced, 29.0),
            ev("c", Mark::Upgraded, 33.0),
            ev("c", Mark::Completed, 35.0),
        ];
        let t = Timeline::build(&events);
        assert_eq!(t.steps.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(t.handoffs, vec![5.0, 3.0]);
        assert_eq!(t.step_ms, vec![5.0, 6.0, 4.0]);
        assert_eq!(t.completed_ms, Some(35.0));
        assert_eq!(t.overlaps, 0);
    }

    #[test]
    fn overlapping_steps_are_counted_not_measured() {
        let events = [
            ev("a", Mark::Fenced, 0.0),
            ev("b", Mark::Fenced, 1.0),
            ev("a", Mark::Upgraded, 2.0),
            ev("b", Mark::Upgraded, 3.0),
        ];
        let t = Timeline::build(&events);
        assert_eq!((t.handoffs.len(), t.overlaps), (0, 1));
    }

    #[test]
    fn refills_pair_the_ith_success_with_the_fence_k_later() {
        // k = 2: fences at 0 and 1 fill both slots; success 10 frees one, fenced 12;
        // success 11 frees the other, fenced 15; the last two successes free nothing.
        let r = refills(&[11.0, 10.0, 20.0, 22.0], &[0.0, 1.0, 12.0, 15.0], 2);
        assert_eq!(r, Refills { ms: vec![2.0, 4.0], inverted: 0 });
        // k = 1 is the handoff.
        let r = refills(&[5.0, 9.0, 14.0], &[0.0, 6.0, 10.0], 1);
        assert_eq!(r.ms, vec![1.0, 1.0]);
        // A fence logged before the success that freed its slot is counted, not measured.
        assert_eq!(refills(&[5.0], &[0.0, 4.0], 1), Refills { ms: vec![], inverted: 1 });
        assert_eq!(refills(&[], &[], 3), Refills::default());
    }

    #[test]
    fn conflicts_are_counted_per_fence() {
        let events = [
            ev("a", Mark::Fenced, 0.0),
            ev("b", Mark::FenceLost, 0.5),
            ev("b", Mark::Fenced, 1.0),
            ev("c", Mark::FenceLost, 1.2),
            ev("c", Mark::FenceLost, 1.4),
            ev("a", Mark::Upgraded, 2.0),
            ev("b", Mark::Upgraded, 3.0),
        ];
        let t = Timeline::build(&events);
        assert_eq!((t.conflicts, t.steps.len()), (3, 2));
        assert_eq!(t.conflicts_per_fence(), 1.5);
        assert_eq!(t.span(), Some((0.0, 3.0)));
        assert_eq!(t.refills(2).ms, Vec::<f64>::new());
    }

    #[test]
    fn messages_map_to_marks() {
        assert_eq!(Mark::from_message("fence lost; re-reading"), Some(Mark::FenceLost));
        assert_eq!(Mark::from_message("host upgraded"), Some(Mark::Upgraded));
        assert_eq!(Mark::from_message("transition"), None);
    }
}

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
}

impl Mark {
    /// The mark a sidecar log message stands for.
    pub fn from_message(message: &str) -> Option<Mark> {
        match message {
            "fenced: starting the step" => Some(Mark::Fenced),
            "host upgraded" => Some(Mark::Upgraded),
            "rollout completed" => Some(Mark::Completed),
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
        Timeline { steps, handoffs, step_ms, completed_ms, overlaps }
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
    fn messages_map_to_marks() {
        assert_eq!(Mark::from_message("host upgraded"), Some(Mark::Upgraded));
        assert_eq!(Mark::from_message("transition"), None);
    }
}

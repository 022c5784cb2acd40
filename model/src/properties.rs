//! The properties the checker verifies, and the [`Model`] implementation.

use crate::actions::{self, Action};
use crate::checks::{self, Violation};
use crate::config::Config;
use crate::rules;
use crate::state::{DeployState, State};
use stateright::{Model, Property};

/// The rollout protocol of one [`Config`], as a stateright model.
#[derive(Clone, Debug)]
pub struct Rollout {
    /// What is explored.
    pub cfg: Config,
}

/// Names of the properties, for tests and reports.
pub mod names {
    /// No fence takes the online count below the quorum (fenced host online),
    /// unless a host vanished on its own after the fence's read.
    pub const QUORUM: &str = "quorum at every fence";
    /// At most `max_parallel` markers under any entry.
    pub const MAX_PARALLEL: &str = "at most max_parallel markers per entry";
    /// Only the head entry fences.
    pub const HEAD: &str = "only the head entry fences";
    /// Paused or halted entries fence nobody.
    pub const INACTIVE: &str = "a paused or halted entry fences nobody";
    /// Halted stays halted unless an operator acts.
    pub const HALTED: &str = "halted stays halted";
    /// One service's step or recovery never touches another service.
    pub const CROSS: &str = "no service touched by another service's step or recovery";
    /// Markers are deleted by their own host or an operator only.
    pub const MARKER: &str = "a marker is deleted only by its host or an operator";
    /// When no protocol action is enabled, the head rollout is paused or halted
    /// (no rollout stuck active with nobody able to move it).
    pub const STUCK: &str = "no rollout stuck active";
    /// When no protocol action is enabled, every online host of a service with
    /// no deploy entry (its rollouts ended) runs the staged version (unless an
    /// operator aborted it).
    pub const CONVERGED: &str = "every online host ends at the staged version";
    /// Hosts of one service mid-step (between fence and commit) are at most its
    /// `max_parallel`, unless an operator deleted the marker of a step still in
    /// flight (unlock, rollback; see [`crate::Config::strict_steps`]).
    pub const STEPS: &str = "at most max_parallel hosts of a service mid-step";
    /// At most the policy's `canary` distinct hosts fence on an entry before it is
    /// promoted (a ghost set, apart from the entry's `canaries`).
    pub const CANARY: &str = "at most canary hosts fence before promotion";
    /// No fence forward on an entry once its `rolling_back_to` is set.
    pub const NO_FORWARD: &str = "no step forward once rolling back";
    /// When no protocol action is enabled, a head entry that rolls back is halted
    /// (or paused by an operator): a rollback ends, completed (rolled back) or
    /// halted.
    pub const ROLLBACK_ENDS: &str = "a rollback ends rolled back or halted";
    /// When no protocol action is enabled, no entry under `auto_promote` awaits
    /// promotion with its canaries healthy (someone promotes it).
    pub const PROMOTED: &str = "healthy canaries are auto-promoted";
    /// Some rollout completes (the model is not vacuous).
    pub const COMPLETES: &str = "a rollout completes";
    /// Some entry pauses after its canaries (with a canary policy).
    pub const CANARY_PAUSES: &str = "a canary phase pauses for promotion";
    /// Some entry is promoted and completes (with a canary policy).
    pub const PROMOTED_COMPLETES: &str = "a promoted rollout completes";
    /// Some entry completes rolled back (with `on_halt = rollback`).
    pub const ROLLED_BACK: &str = "a rollback completes";
    /// Every rollout staged completes, in some run.
    pub const ALL_COMPLETE: &str = "every rollout completes";
}

fn clean(st: &State, v: Violation) -> bool {
    st.violations & v as u16 == 0
}

impl Model for Rollout {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State::initial(&self.cfg)]
    }

    fn actions(&self, st: &State, out: &mut Vec<Action>) {
        actions::all_actions(&self.cfg, st, out);
    }

    fn next_state(&self, st: &State, action: Action) -> Option<State> {
        let after = crate::apply::apply(&self.cfg, st, &action);
        Some(checks::record(&self.cfg, st, &action, after))
    }

    fn properties(&self) -> Vec<Property<Self>> {
        use names::*;
        let mut props = vec![
            Property::always(QUORUM, |m: &Rollout, st: &State| {
                clean(st, if m.cfg.strict_quorum { Violation::QuorumStrict } else { Violation::Quorum })
            }),
            Property::always(MAX_PARALLEL, |m: &Rollout, st: &State| {
                st.zk.deploy.iter().all(|e| e.markers.len() <= m.cfg.policy(e.service).max_parallel as usize)
            }),
            Property::always(STEPS, |m: &Rollout, st: &State| {
                let exempt = st.freed_live_slot && !m.cfg.strict_steps;
                exempt
                    || (0..m.cfg.services.len() as u8).all(|s| {
                        let stepping =
                            m.cfg.agents().filter(|&(h, t)| t == s && st.agent(h, s).phase.in_step()).count();
                        stepping <= m.cfg.policy(s).max_parallel as usize
                    })
            }),
            Property::always(HEAD, |_, st: &State| clean(st, Violation::NotHead)),
            Property::always(INACTIVE, |_, st: &State| clean(st, Violation::Inactive)),
            Property::always(HALTED, |_, st: &State| clean(st, Violation::LeftHalted)),
            Property::always(CROSS, |_, st: &State| clean(st, Violation::CrossService)),
            Property::always(MARKER, |_, st: &State| clean(st, Violation::MarkerTheft)),
            Property::always(STUCK, |m: &Rollout, st: &State| {
                let settled = st.zk.deploy.first().is_none_or(|e| e.state != DeployState::Active);
                settled || rules::can_progress(&m.cfg, st)
            }),
            Property::always(CONVERGED, |m: &Rollout, st: &State| {
                rules::converged(&m.cfg, st) || rules::can_progress(&m.cfg, st)
            }),
            Property::always(CANARY, |m: &Rollout, st: &State| {
                st.zk.deploy.iter().all(|e| {
                    let canary = m.cfg.policy(e.service).canary;
                    canary == 0 || e.fenced_unpromoted.count_ones() <= u32::from(canary)
                })
            }),
            Property::always(NO_FORWARD, |_, st: &State| clean(st, Violation::ForwardWhileRollingBack)),
            Property::always(ROLLBACK_ENDS, |m: &Rollout, st: &State| {
                let ended = st.zk.deploy.first().is_none_or(|e| {
                    e.rolling_back_to.is_none()
                        || e.state == DeployState::Halted
                        || (e.state == DeployState::Paused && !e.canary_reason)
                });
                ended || rules::can_progress(&m.cfg, st)
            }),
            Property::always(PROMOTED, |m: &Rollout, st: &State| {
                let waiting = st.zk.deploy.iter().any(|e| rules::auto_promotable(&m.cfg, &st.zk, e));
                !waiting || rules::can_progress(&m.cfg, st)
            }),
            Property::sometimes(COMPLETES, |_, st: &State| st.completed > 0),
            Property::sometimes(ALL_COMPLETE, |_, st: &State| {
                st.completed > 0 && st.zk.deploy.is_empty() && st.stage_left == 0
            }),
        ];
        let canary = self.cfg.services.iter().any(|s| s.policy.canary > 0);
        if canary {
            props.push(Property::sometimes(CANARY_PAUSES, |_, st: &State| {
                st.zk.deploy.iter().any(|e| e.awaits_promotion())
            }));
            props.push(Property::sometimes(PROMOTED_COMPLETES, |_, st: &State| st.promoted_completed));
        }
        if self.cfg.services.iter().any(|s| s.policy.on_halt_rollback) {
            props.push(Property::sometimes(ROLLED_BACK, |_, st: &State| st.rolled_back_to.iter().any(Option::is_some)));
        }
        props
    }
}

//! Exhaustive checks of the rollout model (BFS over every reachable state).
//!
//! The first group checks the protocol as designed and asserts no property is
//! violated (and every `sometimes` property has an example). The second group
//! checks deliberately broken variants and asserts the checker finds the
//! counterexample it should.

use baton_model::actions::Action;
use baton_model::rules::can_progress;
use baton_model::state::{DeployState, State};
use baton_model::{Bug, Config, OpKind, Policy, Rollout, names};
use stateright::{Checker, HasDiscoveries, Model};
use std::collections::BTreeSet;
use std::time::Instant;

const ALL_OPS: [OpKind; 5] = [OpKind::Pause, OpKind::Resume, OpKind::Abort, OpKind::Rollback, OpKind::Unlock];

fn run(label: &str, cfg: Config, stop_at: Option<&'static str>) -> impl Checker<Rollout> {
    let start = Instant::now();
    let mut builder = Rollout { cfg }.checker();
    if let Some(name) = stop_at {
        builder = builder.finish_when(HasDiscoveries::AnyOf(BTreeSet::from([name])));
    }
    let checker = builder.spawn_bfs().join();
    println!(
        "{label}: {} states, {} unique, max depth {}, {:.1?}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        start.elapsed()
    );
    checker
}

fn holds(label: &str, cfg: Config) {
    run(label, cfg, None).assert_properties();
}

/// Asserts a counterexample of `property` is found; prints it.
fn finds(label: &str, cfg: Config, property: &'static str) {
    let checker = run(label, cfg, Some(property));
    let path = checker.discovery(property).unwrap_or_else(|| panic!("{label}: no counterexample of {property:?}"));
    println!("{label}: counterexample of {property:?}:");
    for action in path.into_actions() {
        println!("    {action:?}");
    }
}

#[test]
fn three_hosts_two_services_one_fault() {
    let mut cfg = Config::fleet(3, 2);
    cfg.faults = 1;
    holds("3 hosts x 2 services, 1 fault", cfg);
}

#[test]
fn three_hosts_two_services_one_pause_resume_or_unlock() {
    let mut cfg = Config::fleet(3, 2);
    cfg.ops = 1;
    cfg.op_kinds = vec![OpKind::Pause, OpKind::Resume, OpKind::Unlock];
    holds("3 hosts x 2 services, 1 pause/resume/unlock", cfg);
}

#[test]
fn three_hosts_one_service_one_fault_one_operator_action() {
    let mut cfg = Config::fleet(3, 1);
    cfg.faults = 1;
    cfg.ops = 1;
    cfg.op_kinds = ALL_OPS.to_vec();
    holds("3 hosts x 1 service, 1 fault, 1 operator action", cfg);
}

#[test]
fn two_hosts_two_services_one_fault_one_operator_action() {
    let mut cfg = Config::fleet(2, 2);
    cfg.faults = 1;
    cfg.ops = 1;
    cfg.op_kinds = ALL_OPS.to_vec();
    holds("2 hosts x 2 services, 1 fault, 1 operator action", cfg);
}

#[test]
fn two_hosts_one_service_two_faults_two_operator_actions() {
    let mut cfg = Config::fleet(2, 1);
    cfg.services[0].policy.max_failures = 1;
    cfg.faults = 2;
    cfg.ops = 2;
    cfg.op_kinds = ALL_OPS.to_vec();
    holds("2 hosts x 1 service, 2 faults, 2 operator actions", cfg);
}

#[test]
fn a_fresh_host_installs_directly() {
    let mut cfg = Config::fleet(3, 1);
    cfg.fresh = 0b100;
    cfg.faults = 1;
    holds("3 hosts (one fresh) x 1 service, 1 fault", cfg);
}

/// Service 0 runs nowhere and is at the head: its rollout is vacuous and must not
/// block service 1's behind it.
fn vacuous_head() -> Config {
    let mut cfg = Config::fleet(2, 2);
    cfg.services[0].runs_on = 0;
    cfg.services[1].staged_at_start = true;
    cfg
}

#[test]
fn a_vacuous_rollout_does_not_block_the_queue() {
    holds("vacuous head, 2 hosts x 1 service behind it", vacuous_head());
}

#[test]
fn the_quorum_race_with_a_host_failing_on_its_own_is_real() {
    // docs/guarantees.md: a host that goes offline on its own between another
    // host's read and its fence is not seen by that fence.
    let mut cfg = Config::fleet(3, 1);
    cfg.faults = 1;
    cfg.crash = false;
    cfg.strict_quorum = true;
    finds("strict quorum, 3 hosts, 1 expiry", cfg, names::QUORUM);
}

#[test]
fn a_host_offline_when_its_rollout_completes_is_left_behind() {
    // A host whose session is lost while the others finish comes back at the old
    // version, queues, and finds no entry to step under: it never converges.
    let mut cfg = Config::fleet(3, 1);
    cfg.faults = 1;
    cfg.crash = false;
    cfg.exempt_late_hosts = false;
    finds("late host, 3 hosts, 1 expiry", cfg, names::CONVERGED);
}

#[test]
fn operators_freeing_the_slot_of_a_live_step_exceed_max_parallel() {
    // The ticket window and the markers bound the steps in flight. A stepping
    // host whose session expired holds no ticket, only its marker: an unlock
    // or a rollback (which supersedes the entry with its markers) that deletes
    // that marker lets another host step beside it. (An abort leaves no entry.)
    for kind in [OpKind::Unlock, OpKind::Rollback] {
        let mut cfg = Config::fleet(3, 1);
        cfg.services[0].policy = Policy::new(0, 1, 0);
        cfg.faults = 1;
        cfg.crash = false;
        cfg.ops = 1;
        cfg.op_kinds = vec![kind];
        cfg.strict_steps = true;
        finds(&format!("{kind:?} of a live step"), cfg, names::STEPS);
    }
}

#[test]
fn bug_recovery_ignoring_the_service_is_caught() {
    let mut cfg = Config::fleet(2, 2);
    cfg.services[1].staged_at_start = true;
    cfg.faults = 1;
    cfg.expiry = false;
    cfg.bug = Bug::IgnoreServiceInRecovery;
    finds("bug IgnoreServiceInRecovery", cfg.clone(), names::CROSS);
    finds("bug IgnoreServiceInRecovery", cfg, names::MARKER);
}

#[test]
fn bug_eligibility_behind_the_head_is_caught() {
    let mut cfg = Config::fleet(2, 2);
    cfg.services[1].staged_at_start = true;
    cfg.bug = Bug::EligibleBehindHead;
    finds("bug EligibleBehindHead", cfg, names::HEAD);
}

#[test]
fn bug_pause_without_rewrite_is_caught() {
    let mut cfg = Config::fleet(2, 1);
    cfg.ops = 1;
    cfg.op_kinds = vec![OpKind::Pause];
    cfg.bug = Bug::PauseWithoutRewrite;
    finds("bug PauseWithoutRewrite", cfg, names::INACTIVE);
}

#[test]
fn bug_completing_a_halted_rollout_is_caught() {
    let mut cfg = Config::fleet(2, 1);
    cfg.bug = Bug::CompleteWhileHalted;
    finds("bug CompleteWhileHalted", cfg, names::HALTED);
}

#[test]
fn bug_fence_without_version_check_is_caught() {
    // Two hosts fence on one count: the quorum breaks.
    let mut cfg = Config::fleet(3, 1);
    cfg.services[0].policy.quorum = 2;
    cfg.bug = Bug::FenceWithoutVersionCheck;
    finds("bug FenceWithoutVersionCheck", cfg, names::QUORUM);
    // The ticket window alone keeps markers within max_parallel, until a stepping
    // host's session expires (its ticket vanishes, its marker stays): then two
    // hosts counting the same markers both fence.
    let mut cfg = Config::fleet(3, 1);
    cfg.services[0].policy.quorum = 0;
    cfg.faults = 1;
    cfg.crash = false;
    cfg.bug = Bug::FenceWithoutVersionCheck;
    finds("bug FenceWithoutVersionCheck + expiry", cfg, names::MAX_PARALLEL);
}

#[test]
fn bug_no_completion_after_a_failure_is_caught() {
    let mut cfg = Config::fleet(2, 1);
    cfg.services[0].policy.max_failures = 1;
    cfg.bug = Bug::NoCompletionAfterFailure;
    finds("bug NoCompletionAfterFailure", cfg, names::STUCK);
}

#[test]
fn bug_no_vacuous_completion_is_caught() {
    let mut cfg = vacuous_head();
    cfg.bug = Bug::NoVacuousCompletion;
    finds("bug NoVacuousCompletion", cfg, names::STUCK);
}

// The release lifecycle: canary phase (`canary`, promote, `auto_promote`) and
// `on_halt = rollback`.

const ALL_OPS_AND_PROMOTE: [OpKind; 6] =
    [OpKind::Pause, OpKind::Resume, OpKind::Abort, OpKind::Rollback, OpKind::Unlock, OpKind::Promote];

/// Every operator action but unlock: with crashes, an unlock of a canary's step in
/// flight leaves its canary phase unended (a known case, see
/// `an_unlock_of_a_canarys_live_step_then_a_restart_leaves_its_phase_unended`).
const OPS_BUT_UNLOCK: [OpKind; 5] = [OpKind::Pause, OpKind::Resume, OpKind::Abort, OpKind::Rollback, OpKind::Promote];

/// 3 hosts × 1 service, quorum 1, `canary = 1` with `auto_promote`, `max_failures`
/// 1 (a canary's failure ends its canary step without halting).
fn canary(max_parallel: u8) -> Config {
    let mut cfg = Config::fleet(3, 1);
    cfg.services[0].policy = Policy { canary: 1, auto_promote: true, ..Policy::new(1, max_parallel, 1) };
    cfg
}

/// 3 hosts × 1 service, quorum 1, `max_failures` 0, `on_halt = rollback`.
fn rollback(max_parallel: u8) -> Config {
    let mut cfg = Config::fleet(3, 1);
    cfg.services[0].policy = Policy { on_halt_rollback: true, ..Policy::new(1, max_parallel, 0) };
    cfg
}

#[test]
fn canary_one_max_parallel_one_one_fault() {
    let mut cfg = canary(1);
    cfg.faults = 1;
    holds("canary 1, max_parallel 1, 3 hosts, 1 fault", cfg);
}

#[test]
fn canary_one_max_parallel_two_one_fault() {
    let mut cfg = canary(2);
    cfg.faults = 1;
    holds("canary 1, max_parallel 2, 3 hosts, 1 fault", cfg);
}

#[test]
fn canary_two_max_parallel_two_one_fault() {
    let mut cfg = canary(2);
    cfg.services[0].policy.canary = 2;
    cfg.faults = 1;
    holds("canary 2, max_parallel 2, 3 hosts, 1 fault", cfg);
}

#[test]
fn canary_without_auto_promote_one_operator_action() {
    // Promoted by the operator only (or early, while the canary steps); any other
    // operator action instead.
    let mut cfg = canary(2);
    cfg.services[0].policy.auto_promote = false;
    cfg.faults = 1;
    cfg.crash = false;
    cfg.ops = 1;
    cfg.op_kinds = ALL_OPS_AND_PROMOTE.to_vec();
    holds("canary 1 (no auto_promote), max_parallel 2, 3 hosts, 1 expiry, 1 operator action", cfg.clone());
    cfg.crash = true;
    cfg.op_kinds = OPS_BUT_UNLOCK.to_vec();
    holds("canary 1 (no auto_promote), max_parallel 2, 3 hosts, 1 fault, 1 operator action (not unlock)", cfg);
}

#[test]
fn an_unlock_of_a_canarys_live_step_then_a_restart_leaves_its_phase_unended() {
    // Known, left as is: `deployctl unlock` of the canary's marker while its step
    // runs, then a restart of its sidecar: boot keeps the running release (no
    // marker, no commit), so `canaries_done` never records the canary, the phase
    // never ends, and the entry stays active with nobody else allowed to fence
    // until `deployctl promote` (10 steps).
    let mut cfg = canary(2);
    cfg.services[0].policy.auto_promote = false;
    cfg.faults = 1;
    cfg.expiry = false;
    cfg.ops = 1;
    cfg.op_kinds = vec![OpKind::Unlock];
    finds("canary 1, 1 crash, 1 unlock", cfg, names::STUCK);
}

#[test]
fn canary_two_services() {
    let mut cfg = Config::fleet(2, 2);
    for s in &mut cfg.services {
        s.policy.canary = 1;
        s.policy.auto_promote = true;
    }
    cfg.faults = 1;
    holds("canary 1 on both, 2 hosts x 2 services, 1 fault", cfg);
}

#[test]
fn canary_three_hosts_two_services_one_fault() {
    let mut cfg = Config::fleet(3, 2);
    for s in &mut cfg.services {
        s.policy.canary = 1;
        s.policy.auto_promote = true;
    }
    cfg.faults = 1;
    holds("canary 1 on both, 3 hosts x 2 services, 1 fault", cfg);
}

#[test]
fn canary_one_fault_two_pause_resume_or_promote() {
    // Pause then resume around the canary's end, promote early or late (five
    // operator kinds with a fault: 7.5 M states, over a minute).
    let mut cfg = canary(2);
    cfg.faults = 1;
    cfg.ops = 2;
    cfg.op_kinds = vec![OpKind::Pause, OpKind::Resume, OpKind::Promote];
    holds("canary 1, max_parallel 2, 3 hosts, 1 fault, 2 operator actions (pause, resume, promote)", cfg);
}

#[test]
fn canary_one_expiry_two_operator_actions() {
    let mut cfg = canary(2);
    cfg.faults = 1;
    cfg.crash = false;
    cfg.ops = 2;
    // Resume is in the test above (all six kinds: 6 M states, 47 s).
    cfg.op_kinds = vec![OpKind::Pause, OpKind::Abort, OpKind::Rollback, OpKind::Unlock, OpKind::Promote];
    holds("canary 1, max_parallel 2, 3 hosts, 1 expiry, 2 operator actions (not resume)", cfg);
}

#[test]
fn rollback_max_parallel_one_one_fault() {
    let mut cfg = rollback(1);
    cfg.faults = 1;
    holds("on_halt rollback, max_parallel 1, 3 hosts, 1 fault", cfg);
}

#[test]
fn rollback_max_parallel_two_one_fault() {
    let mut cfg = rollback(2);
    cfg.faults = 1;
    holds("on_halt rollback, max_parallel 2, 3 hosts, 1 fault", cfg);
}

#[test]
fn rollback_max_parallel_two_quorum_two_max_failures_one() {
    let mut cfg = rollback(2);
    cfg.services[0].policy.quorum = 2;
    cfg.services[0].policy.max_failures = 1;
    cfg.faults = 1;
    holds("on_halt rollback, quorum 2, max_parallel 2, max_failures 1, 3 hosts, 1 fault", cfg);
}

#[test]
fn rollback_two_expiries() {
    let mut cfg = rollback(2);
    cfg.faults = 2;
    cfg.crash = false;
    holds("on_halt rollback, max_parallel 2, 3 hosts, 2 expiries", cfg);
}

#[test]
fn rollback_with_a_fresh_host() {
    let mut cfg = rollback(2);
    cfg.fresh = 0b100;
    cfg.faults = 1;
    holds("on_halt rollback, max_parallel 2, 3 hosts (one fresh), 1 fault", cfg);
}

#[test]
fn rollback_one_fault_one_operator_action() {
    let mut cfg = rollback(2);
    cfg.faults = 1;
    cfg.ops = 1;
    cfg.op_kinds = ALL_OPS.to_vec();
    holds("on_halt rollback, max_parallel 2, 3 hosts, 1 fault, 1 operator action", cfg);
}

#[test]
fn rollback_two_hosts_two_faults_two_operator_actions() {
    let mut cfg = Config::fleet(2, 1);
    cfg.services[0].policy = Policy { on_halt_rollback: true, ..Policy::new(1, 1, 0) };
    cfg.faults = 2;
    cfg.ops = 2;
    cfg.op_kinds = ALL_OPS.to_vec();
    holds("on_halt rollback, 2 hosts, 2 faults, 2 operator actions", cfg);
}

#[test]
fn rollback_two_hosts_two_services_one_fault_one_operator_action() {
    // Service 0 rolls back behind nothing, service 1 waits behind it; an operator
    // rollback of either moves the other's entry (since afb8d8e a moved rollback
    // completes without its mark).
    let mut cfg = Config::fleet(2, 2);
    cfg.services[0].policy = Policy { on_halt_rollback: true, ..Policy::new(1, 1, 0) };
    cfg.services[1].staged_at_start = true;
    cfg.faults = 1;
    cfg.ops = 1;
    cfg.op_kinds = ALL_OPS.to_vec();
    holds("on_halt rollback, 2 hosts x 2 services, 1 fault, 1 operator action", cfg);
}

#[test]
fn canary_and_rollback_one_fault() {
    // The canary phase and `on_halt = rollback` together: a canary's failure turns
    // the entry into a rollback (max_failures 0), a later one promoted goes back.
    for (canary, max_parallel) in [(1, 1), (1, 2), (2, 2)] {
        let mut cfg = rollback(max_parallel);
        cfg.services[0].policy.canary = canary;
        cfg.services[0].policy.auto_promote = true;
        cfg.faults = 1;
        holds(&format!("canary {canary}, on_halt rollback, max_parallel {max_parallel}, 3 hosts, 1 fault"), cfg);
    }
}

#[test]
fn canary_and_rollback_one_fault_one_operator_action() {
    let mut cfg = rollback(2);
    cfg.services[0].policy.canary = 1;
    cfg.services[0].policy.auto_promote = true;
    cfg.faults = 1;
    cfg.ops = 1;
    cfg.op_kinds = OPS_BUT_UNLOCK.to_vec();
    holds("canary 1, on_halt rollback, max_parallel 2, 3 hosts, 1 fault, 1 operator action (not unlock)", cfg);
}

#[test]
fn bug_ignoring_the_canary_limit_is_caught() {
    let mut cfg = canary(2);
    cfg.bug = Bug::IgnoreCanaryLimit;
    finds("bug IgnoreCanaryLimit", cfg, names::CANARY);
}

#[test]
fn bug_no_canary_pause_is_caught() {
    let mut cfg = canary(1);
    cfg.bug = Bug::NoCanaryPause;
    finds("bug NoCanaryPause", cfg, names::STUCK);
}

#[test]
fn bug_going_back_ignoring_the_quorum_is_caught() {
    // Two hosts upgraded, the third fails: both go back at once, leaving one online.
    let mut cfg = rollback(2);
    cfg.services[0].policy.quorum = 2;
    cfg.bug = Bug::ReturnIgnoresQuorum;
    finds("bug ReturnIgnoresQuorum", cfg, names::QUORUM);
}

#[test]
fn bug_stepping_forward_while_rolling_back_is_caught() {
    let mut cfg = rollback(1);
    cfg.bug = Bug::ForwardWhileRollingBack;
    finds("bug ForwardWhileRollingBack", cfg, names::NO_FORWARD);
}

// Protocol bugs the model found in the release lifecycle as first implemented
// (commits 19014b1 and 56c3221), fixed in cd77ead and afb8d8e (docs/guarantees.md,
// "What it found"): each scenario now holds, and the variant with the old rule
// (`Bug::CanaryWaitsBehind` and the others) still finds its counterexample.

/// Replays `actions` from the initial state of `cfg`, each of which must be
/// enabled where it is taken; returns the last state.
fn replay(cfg: &Config, actions: &[Action]) -> State {
    let model = Rollout { cfg: cfg.clone() };
    let mut st = model.init_states().remove(0);
    for a in actions {
        let mut enabled = Vec::new();
        model.actions(&st, &mut enabled);
        assert!(enabled.contains(a), "{a:?} is not enabled; enabled: {enabled:?}");
        st = model.next_state(&st, a.clone()).expect("a next state");
    }
    st
}

/// The no-stuck property on one state: the head, if any, is paused or halted, or
/// some protocol action is enabled.
fn not_stuck(cfg: &Config, st: &State) -> bool {
    st.zk.deploy.first().is_none_or(|e| e.state != DeployState::Active) || can_progress(cfg, st)
}

/// Canary 1, `max_parallel` 1, 3 hosts, 1 crash.
fn canary_crash() -> Config {
    let mut cfg = canary(1);
    cfg.faults = 1;
    cfg.expiry = false;
    cfg
}

#[test]
fn a_canary_whose_step_was_undone_steps_again() {
    // The canary fences, its sidecar crashes before the switch and recovery undoes
    // the step (not counted); it queues again, at the back of the ticket queue
    // (the restart deleted its old ticket), behind hosts that wait for the canary
    // phase (`Verdict::Canary`). Since cd77ead a canary of a full phase is let
    // through from behind the window (`canary_behind`); before, it waited for the
    // tickets ahead (`Verdict::Behind`) and nothing moved (9 steps).
    holds("canary 1, max_parallel 1, 3 hosts, 1 crash", canary_crash());
    let mut cfg = canary_crash();
    cfg.bug = Bug::CanaryWaitsBehind;
    finds("bug CanaryWaitsBehind, 1 crash", cfg, names::STUCK);
}

/// Canary 1, `max_failures` 0, 3 hosts, 1 resume.
fn canary_failed_resume() -> Config {
    let mut cfg = canary(1);
    cfg.services[0].policy.max_failures = 0;
    cfg.ops = 1;
    cfg.op_kinds = vec![OpKind::Resume];
    cfg
}

#[test]
fn a_canary_that_failed_steps_again_after_resume() {
    // The same without a crash: the canary's failure halts the rollout
    // (max_failures 0); `deployctl resume` clears it from `canaries_done` and
    // `failed_hosts` so that it steps again, with its new ticket behind those of
    // the hosts that queued while it was halted (11 steps before cd77ead).
    holds("canary 1, max_failures 0, 3 hosts, 1 resume", canary_failed_resume());
    let mut cfg = canary_failed_resume();
    cfg.bug = Bug::CanaryWaitsBehind;
    finds("bug CanaryWaitsBehind, 1 resume", cfg, names::STUCK);
}

#[test]
fn a_canary_phase_ending_while_paused_awaits_promotion_after_resume() {
    // The canary's commit lands while an operator paused the rollout. Since
    // cd77ead `canary_done` records the end of the phase (`canary_paused_at`)
    // whatever the state and keeps the operator's pause; `deployctl resume` then
    // turns it into the canary pause (reason canary), which auto_promote takes.
    // Before, the end was not recorded, resume made it active with the phase full
    // and nobody could move (11 steps).
    let mut cfg = canary(1);
    cfg.ops = 2;
    cfg.op_kinds = vec![OpKind::Pause, OpKind::Resume];
    let steps = [
        Action::Queue(2, 0),
        Action::Queue(1, 0),
        Action::Queue(0, 0),
        Action::Read(2, 0),
        Action::Fence(2, 0),
        Action::Switch(2, 0),
        Action::Outcome(2, 0, true),
        Action::Op(OpKind::Pause, 0),
        Action::Commit(2, 0),
        Action::Check(2, 0),
        Action::Op(OpKind::Resume, 0),
    ];
    let st = replay(&cfg, &steps);
    let e = &st.zk.deploy[0];
    assert!(e.awaits_promotion(), "not awaiting promotion: {e:?}");
    assert!(not_stuck(&cfg, &st) && can_progress(&cfg, &st), "nobody auto-promotes: {:?}", st.zk.deploy);
    holds("canary 1, max_parallel 1, 3 hosts, pause and resume", cfg.clone());
    cfg.bug = Bug::CanaryEndOnlyWhenActive;
    let st = replay(&cfg, &steps);
    assert!(!not_stuck(&cfg, &st), "bug CanaryEndOnlyWhenActive: not stuck: {:?}", st.zk.deploy);
    finds("bug CanaryEndOnlyWhenActive", cfg, names::STUCK);
}

/// Canary 1, `auto_promote`, `on_halt = rollback`, `max_parallel` 1, 3 hosts.
fn canary_rollback() -> Config {
    let mut cfg = rollback(1);
    cfg.services[0].policy.canary = 1;
    cfg.services[0].policy.auto_promote = true;
    cfg
}

#[test]
fn a_rollback_started_in_the_canary_phase_ends() {
    // canary 1, max_failures 0: the canary fails; its failure commit sets
    // `rolling_back_to`. Since cd77ead `canary_done` leaves the pause of a
    // rolling-back entry alone; before, it paused the rollback with reason canary,
    // which nothing but `deployctl promote` moved (7 steps). With canary 2 a second
    // canary still stepping forward paused it the same way.
    holds("canary 1, on_halt rollback, 3 hosts", canary_rollback());
    let mut cfg = canary_rollback();
    cfg.services[0].policy.canary = 2;
    cfg.services[0].policy.max_parallel = 2;
    holds("canary 2, on_halt rollback, max_parallel 2, 3 hosts", cfg);
    let mut cfg = canary_rollback();
    cfg.bug = Bug::CanaryPausesRollback;
    finds("bug CanaryPausesRollback", cfg, names::ROLLBACK_ENDS);
}

/// 2 hosts, canary 2, `max_failures` 1.
fn canary_of_two() -> Config {
    let mut cfg = Config::fleet(2, 1);
    cfg.services[0].policy = Policy { canary: 2, ..Policy::new(1, 1, 1) };
    cfg
}

#[test]
fn healthy_canaries_are_auto_promoted_when_the_smallest_host_failed() {
    // Host 0's canary step fails (counted, no halt), host 1's succeeds and pauses
    // the entry for promotion. Auto-promotion is tried by queued front hosts
    // (none: everyone stepped) and by the designated idle host, the smallest
    // online one (host 0). Since cd77ead a host whose step failed acts as the
    // designated host too; before, it skipped the rollout and it stayed paused
    // with healthy canaries (14 steps).
    let mut cfg = canary_of_two();
    cfg.services[0].policy.auto_promote = true;
    holds("canary 2 of 2 hosts, auto_promote, max_failures 1", cfg.clone());
    cfg.bug = Bug::FailedHostNotDesignated;
    finds("bug FailedHostNotDesignated, auto_promote", cfg, names::PROMOTED);
}

#[test]
fn a_promoted_rollout_whose_smallest_host_failed_completes() {
    // As above with the operator promoting: the entry is active, every host that
    // did not fail runs the version, no step is left to end (whose commit would run
    // the decider), and the designated decider is the smallest online host, whose
    // step failed: before cd77ead it never completed, and every rollout behind it
    // waited (15 steps).
    let mut cfg = canary_of_two();
    cfg.ops = 1;
    cfg.op_kinds = vec![OpKind::Promote];
    holds("canary 2 of 2 hosts, max_failures 1, 1 promote", cfg.clone());
    cfg.bug = Bug::FailedHostNotDesignated;
    finds("bug FailedHostNotDesignated, promote", cfg, names::STUCK);
}

/// Service 0 `on_halt = rollback`, 2 hosts x 2 services, 1 operator rollback.
fn moved_rollback() -> Config {
    let mut cfg = Config::fleet(2, 2);
    cfg.services[0].policy = Policy { on_halt_rollback: true, ..Policy::new(1, 1, 0) };
    cfg.services[1].staged_at_start = true;
    cfg.ops = 1;
    cfg.op_kinds = vec![OpKind::Rollback];
    cfg
}

#[test]
fn a_rolling_back_entry_moved_by_another_rollback_completes() {
    // Service 0's rollout fails and rolls back (its `rollback` mark created);
    // between steps (no marker) an operator rolls back service 1, whose entry goes
    // to the front: `deployctl rollback` re-creates service 0's entry behind it
    // with the same payload, `rolling_back_to` set, without the mark. Since
    // afb8d8e completion deletes the mark only if it exists; before, its multi
    // failed with NoNode every time and every rollout behind waited (21 steps).
    holds("on_halt rollback, 2 hosts x 2 services, 1 operator rollback", moved_rollback());
    let mut cfg = moved_rollback();
    cfg.bug = Bug::CompletionNeedsMark;
    finds("bug CompletionNeedsMark", cfg, names::STUCK);
}

#[test]
fn an_operators_rollback_that_rolls_back_moves_a_host_onto_the_release_it_failed_on() {
    // Observed, not a property violation (docs/guarantees.md, "What it found"):
    // canary 1 and `on_halt = rollback`. Host 1 is the canary of version 1 and
    // succeeds; host 0 steps after the auto-promotion and fails (the entry rolls
    // back to 0). The operator rolls back: a new entry to 0, with the service's
    // policy. Host 1's step to 0 fails there, which rolls that entry back to 1, and
    // host 0, which never left 0 and whose step to 1 failed in the superseded entry,
    // "goes back" to 1, outside any canary phase.
    let mut cfg = rollback(2);
    cfg.services[0].policy.canary = 1;
    cfg.services[0].policy.auto_promote = true;
    cfg.ops = 1;
    cfg.op_kinds = vec![OpKind::Rollback];
    let steps = [
        Action::Queue(1, 0),
        Action::Read(1, 0),
        Action::Fence(1, 0),
        Action::Switch(1, 0),
        Action::Outcome(1, 0, true),
        Action::Commit(1, 0),
        Action::Queue(0, 0),
        Action::AutoPromote(0, 0),
        Action::Read(0, 0),
        Action::Fence(0, 0),
        Action::Switch(0, 0),
        Action::Outcome(0, 0, false),
        Action::Commit(0, 0),
        Action::Op(OpKind::Rollback, 0),
        Action::Queue(1, 0),
        Action::Read(1, 0),
        Action::Fence(1, 0),
        Action::Switch(1, 0),
        Action::Outcome(1, 0, false),
        Action::Commit(1, 0),
        Action::Read(0, 0),
        Action::Fence(0, 0),
    ];
    let st = replay(&cfg, &steps);
    let e = &st.zk.deploy[0];
    assert_eq!((e.version, e.rolling_back_to), (0, Some(1)), "{e:?}");
    let m = e.markers.iter().find(|m| m.host == 0).expect("host 0 fenced back");
    assert_eq!((m.from, m.to), (Some(0), 1), "{m:?}");
}

/// The parallel fence (issue 16): a rewriting fence that does not check the
/// `upgrading/` directory's version commits on a count that a parallel fence
/// changed after its read, and the quorum breaks (a fresh host makes one read
/// rewriting while the other's is parallel).
#[test]
fn bug_a_rewrite_ignoring_parallel_fences_is_caught() {
    let mut cfg = Config::fleet(3, 1);
    cfg.fresh = 0b100;
    cfg.faults = 1;
    cfg.bug = Bug::RewriteIgnoresParallel;
    finds("bug RewriteIgnoresParallel", cfg, names::QUORUM);
}

/// Every fence rewriting the entry (the protocol before the parallel fence)
/// still holds where the parallel one does.
#[test]
fn without_the_parallel_fence_the_protocol_holds() {
    let mut cfg = Config::fleet(3, 1);
    cfg.fresh = 0b100;
    cfg.faults = 1;
    cfg.bug = Bug::NoParallelFence;
    holds("no parallel fence, 3 hosts (one fresh), 1 fault", cfg);
}

/// The parallel fence beside a marker whose host left the ticket window (its
/// session expired mid-step): the window's hosts fence in parallel on a count
/// that misses that slot, and the markers exceed `max_parallel`.
#[test]
fn bug_a_parallel_fence_beside_a_ticketless_marker_is_caught() {
    let mut cfg = Config::fleet(3, 1);
    cfg.services[0].policy.quorum = 0;
    cfg.faults = 1;
    cfg.crash = false;
    cfg.bug = Bug::ParallelBesideTicketlessMarker;
    finds("bug ParallelBesideTicketlessMarker + expiry", cfg, names::MAX_PARALLEL);
}

/// Four hosts with `max_parallel` 3 (three parallel fences at once) and a
/// session expiry, with the quorum loose (0) and binding (1: the parallel fence
/// only while every front host may go).
#[test]
fn four_hosts_max_parallel_three_one_expiry() {
    for quorum in [0, 1] {
        let mut cfg = Config::fleet(4, 1);
        cfg.services[0].policy = Policy::new(quorum, 3, 0);
        cfg.faults = 1;
        cfg.crash = false;
        holds(&format!("4 hosts, max_parallel 3, quorum {quorum}, 1 expiry"), cfg);
    }
}

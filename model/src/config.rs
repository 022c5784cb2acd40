//! What one check explores: the fleet, the policies, the bounds on faults and on
//! operator actions, and an optional deliberately broken variant ([`Bug`]).

/// A host id: an index into the fleet (`0..hosts`). The smallest id matters: it is
/// the host that runs the periodic no-op completion check.
pub type Host = u8;
/// A service: an index into [`Config::services`].
pub type Svc = u8;
/// A release version. Hosts start at 0, rollouts go to 1, a rollback goes back.
pub type Ver = u8;

/// A staged release's rollout policy (`staging/<svc>` → `policy`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Policy {
    /// Online hosts that must stay up while hosts step (an absolute count).
    pub quorum: u8,
    /// Hosts stepping at once: markers under one entry, and the ticket window.
    pub max_parallel: u8,
    /// Failures tolerated before the entry halts.
    pub max_failures: u8,
    /// `canary = N`: while the entry is not promoted, the first N hosts fenced
    /// (recorded in the entry's `canaries`) are the only ones that step; the commit
    /// ending the last of them pauses the entry for promotion. 0: no canary phase.
    pub canary: u8,
    /// `auto_promote`: a host promotes an entry paused after its canaries once
    /// every canary that did not fail is online at the version (time abstracted:
    /// "once the duration passed" is "eventually").
    pub auto_promote: bool,
    /// `on_halt = rollback`: the failure that would halt the entry sets its
    /// `rolling_back_to` instead, and the hosts that stepped go back.
    pub on_halt_rollback: bool,
}

impl Policy {
    /// `quorum`, `max_parallel`, `max_failures`; no canary phase, `on_halt = stay`.
    pub fn new(quorum: u8, max_parallel: u8, max_failures: u8) -> Policy {
        Policy { quorum, max_parallel, max_failures, canary: 0, auto_promote: false, on_halt_rollback: false }
    }
}

/// One service of the fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Its policy (the same for every release of it).
    pub policy: Policy,
    /// Bit `h` set: host `h` runs this service (has an agent for it).
    pub runs_on: u8,
    /// Staged at the start with a deploy entry (version 1), in service order.
    /// Otherwise the model may stage version 1 once, at any point (a new entry at
    /// the back of the deploy queue).
    pub staged_at_start: bool,
}

/// Operator actions the model may take (each use spends one of [`Config::ops`]).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum OpKind {
    /// `deployctl pause`: an active entry becomes paused (a rewrite).
    Pause,
    /// `deployctl resume`: a paused or halted entry (or one with failures) becomes
    /// active, with its failures and failed hosts cleared; refused on an entry
    /// awaiting promotion. An operator's pause of an entry whose canary phase ended
    /// becomes the canary pause (reason `canary`); a resumed entry whose canary
    /// phase ended and that dropped no failed canary lands in the canary pause.
    Resume,
    /// `deployctl abort`: the service's entries and their markers are deleted and
    /// the staged release goes back to what most online hosts run.
    Abort,
    /// `deployctl rollback`: the previous version is staged as a new entry that
    /// supersedes the service's entries (deleted with their markers) and goes to the
    /// front of the queue, behind a head whose hosts are mid-step (as
    /// `deployctl/src/rollback.rs` does it: the other movable entries are re-created
    /// behind it).
    Rollback,
    /// `deployctl unlock`: deletes one host's marker.
    Unlock,
    /// `deployctl promote`: ends the canary phase of the service's first entry
    /// (sets `promoted_by`); a paused entry whose canary phase ended (either
    /// reason) becomes active. Enabled while a canary phase is on (the policy has
    /// one, not promoted yet), also early (canaries still stepping).
    Promote,
}

/// A deliberately broken variant, to show the checker finds what it should.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Bug {
    /// The protocol as designed.
    None,
    /// Recovery takes this host's marker in any deploy entry, whatever its service
    /// (what `fence::find_marker` does today): one service's recovery acts on
    /// another service's step.
    IgnoreServiceInRecovery,
    /// Completion does not require the entry to be active: a halted rollout is
    /// deleted as if it had completed.
    CompleteWhileHalted,
    /// The fence does not check the entry's data version: two hosts act on one count.
    FenceWithoutVersionCheck,
    /// No parallel fence (before issue 16): every fence rewrites the entry.
    NoParallelFence,
    /// The parallel fence also when a marker's host holds no ticket of the window
    /// (a stepping host whose session expired keeps its marker and leaves the
    /// ticket window, and a new host enters it).
    ParallelBesideTicketlessMarker,
    /// A rewriting fence does not check the `upgrading/` directory's version: it
    /// commits on a count a parallel fence changed after its read.
    RewriteIgnoresParallel,
    /// A failure commit does not run the completion check (today's `reverted`), and
    /// only the periodic no-op check by the smallest online host at the staged
    /// version can complete the rollout (a host whose step failed is not the
    /// designated host, as in [`Bug::FailedHostNotDesignated`]).
    NoCompletionAfterFailure,
    /// Eligibility looks at the service's own first entry instead of the head of
    /// `deploy/`: services no longer roll in deploy order.
    EligibleBehindHead,
    /// Pause sets the state without bumping the entry's data version: a fence
    /// read before the pause still commits after it.
    PauseWithoutRewrite,
    /// Nobody completes a head entry whose service has no online host.
    NoVacuousCompletion,
    /// Eligibility ignores the canary limit (`turn::decide` without its
    /// `Verdict::Canary`): any host may fence in the canary phase.
    IgnoreCanaryLimit,
    /// The last canary's commit records it without pausing the entry: the
    /// rollout runs through its canary phase unpromoted.
    NoCanaryPause,
    /// Going back (`turn::decide_return`) ignores the quorum.
    ReturnIgnoresQuorum,
    /// A host queued for the release keeps its ticket and may still fence forward
    /// on an entry that rolls back (`turn::decide` without its `rolling_back_to`
    /// check).
    ForwardWhileRollingBack,
    /// Before cd77ead: a canary queued again behind the ticket window waits for
    /// the tickets ahead (`Verdict::Behind`), whose hosts wait for the canaries.
    CanaryWaitsBehind,
    /// Before cd77ead: `canary_done` records the end of the canary phase
    /// (`canary_paused_at`) only when it pauses an active entry.
    CanaryEndOnlyWhenActive,
    /// Before cd77ead: `canary_done` pauses an active entry for promotion even
    /// when it rolls back.
    CanaryPausesRollback,
    /// Before cd77ead: an idle host in the rollout's `failed_hosts` never acts as
    /// the designated host (completion, auto_promote).
    FailedHostNotDesignated,
    /// Before afb8d8e: the completion of a rolling-back entry deletes its
    /// `rollback` mark unconditionally (NoNode when it is missing).
    CompletionNeedsMark,
}

/// The model's parameters.
#[derive(Clone, Debug)]
pub struct Config {
    /// Hosts in the fleet (at most 8).
    pub hosts: u8,
    /// The services (at most 8).
    pub services: Vec<Service>,
    /// Faults (session expiries, sidecar crashes) allowed per run.
    pub faults: u8,
    /// Which faults may happen.
    pub expiry: bool,
    /// Whether sidecar crashes (with restart) may happen.
    pub crash: bool,
    /// Operator actions allowed per run.
    pub ops: u8,
    /// Which operator actions may happen.
    pub op_kinds: Vec<OpKind>,
    /// Bit `h` set: host `h` starts with nothing installed for service 0 (it boots
    /// and installs directly, unfenced).
    pub fresh: u8,
    /// The broken variant, if any.
    pub bug: Bug,
    /// Check the quorum at every fence without exempting a host that went offline
    /// on its own between the fence's read and its commit (expected to fail with
    /// faults: the race docs/guarantees.md describes).
    pub strict_quorum: bool,
    /// The convergence property exempts hosts that were offline (session lost,
    /// sidecar restarting) when their service's rollout completed. Without the
    /// exemption it fails with faults: such a host comes back at the old version,
    /// queues, and no entry exists to step under.
    pub exempt_late_hosts: bool,
    /// Check the steps-in-flight bound even after an operator freed the slot of
    /// a step still running (expected to fail then).
    pub strict_steps: bool,
}

impl Config {
    /// `hosts` hosts each running `services` services, all staged at the start,
    /// quorum 1, `max_parallel` 1 (service 0: 2 when there are 3+ hosts),
    /// `max_failures` 0 for service 0 and 1 for the others; no faults or operator
    /// actions (add them with the fields).
    pub fn fleet(hosts: u8, services: u8) -> Config {
        let all = (1u16 << hosts) as u8;
        let all = all.wrapping_sub(1);
        let services = (0..services)
            .map(|s| Service {
                policy: Policy::new(1, if s == 0 && hosts >= 3 { 2 } else { 1 }, u8::from(s != 0)),
                runs_on: all,
                staged_at_start: s == 0,
            })
            .collect();
        Config {
            hosts,
            services,
            faults: 0,
            expiry: true,
            crash: true,
            ops: 0,
            op_kinds: vec![],
            fresh: 0,
            bug: Bug::None,
            strict_quorum: false,
            exempt_late_hosts: true,
            strict_steps: false,
        }
    }

    /// Whether host `h` runs service `s`.
    pub fn runs(&self, h: Host, s: Svc) -> bool {
        self.services[s as usize].runs_on & (1 << h) != 0
    }

    /// The policy of service `s`.
    pub fn policy(&self, s: Svc) -> &Policy {
        &self.services[s as usize].policy
    }

    /// Every (host, service) pair that has an agent.
    pub fn agents(&self) -> impl Iterator<Item = (Host, Svc)> + '_ {
        (0..self.hosts)
            .flat_map(move |h| (0..self.services.len() as Svc).map(move |s| (h, s)))
            .filter(|&(h, s)| self.runs(h, s))
    }
}

//! The model's state: ZooKeeper's tree (the shared state) and each agent's local
//! state (its phase and the release it runs).

use crate::config::{Config, Host, Svc, Ver};

/// A deploy entry's `state`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DeployState {
    /// Hosts may fence.
    Active,
    /// An operator paused it: nobody fences.
    Paused,
    /// Failures passed `max_failures`: nobody fences until an operator acts.
    Halted,
}

/// `deploy/deploy-<seq>/upgrading/<host>`: persistent, survives sessions.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Marker {
    /// The host stepping.
    pub host: Host,
    /// The service it steps (always the entry's service).
    pub service: Svc,
    /// The version it steps from (`None`: nothing was running).
    pub from: Option<Ver>,
    /// The version it steps to.
    pub to: Ver,
}

/// `deploy/deploy-<seq>`: one rollout, persistent, in queue order.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Entry {
    /// The sequence number (unique for the run; a re-created entry gets a new one).
    pub id: u8,
    /// The service it rolls out.
    pub service: Svc,
    /// The version it rolls out.
    pub version: Ver,
    /// active, paused or halted.
    pub state: DeployState,
    /// Failures counted on it.
    pub failures: u8,
    /// Bit `h`: host `h` failed its step in this rollout (does not queue again).
    pub failed_hosts: u8,
    /// ZooKeeper's data version: bumped by every rewrite (fence, failure, pause,
    /// resume); a fence checks the version it read.
    pub data_version: u8,
    /// Its `upgrading/` directory's data version: bumped by every parallel fence
    /// (which leaves `data_version` alone); a rewriting fence checks the one it read.
    pub slots_version: u8,
    /// Its `upgrading/` children, in creation order.
    pub markers: Vec<Marker>,
    /// Bit `h`: host `h` fenced in the canary phase (`canaries`).
    pub canaries: u8,
    /// Bit `h`: canary `h`'s step ended, upgraded or failed (`canaries_done`).
    pub canaries_done: u8,
    /// The last canary's step ended (`canary_paused_at` is set): written whatever
    /// the state, unless the entry rolls back; resume after dropping a failed
    /// canary clears it.
    pub canary_paused: bool,
    /// Its `reason` is `canary` (paused for promotion, not by an operator);
    /// false whenever another write sets the state or reason.
    pub canary_reason: bool,
    /// Promoted past its canary phase (`promoted_by` is set).
    pub promoted: bool,
    /// `on_halt = rollback`: the version the hosts that stepped go back to.
    pub rolling_back_to: Option<Ver>,
    /// Its `rollback` child (`deploy/<e>/rollback`), created with
    /// `rolling_back_to`; completion deletes it with the entry (so needs it).
    pub rollback_mark: bool,
    /// Ghost: bit `h`, host `h` fenced forward on this entry while it was not
    /// promoted under a canary policy (what the canary limit bounds, kept apart from the
    /// `canaries` field the protocol maintains).
    pub fenced_unpromoted: u8,
}

impl Entry {
    /// The version its hosts move to: its own, or the one it rolls back to.
    pub fn target(&self) -> Ver {
        self.rolling_back_to.unwrap_or(self.version)
    }

    /// In its canary phase under a policy of `canary` hosts (`canary_phase`).
    pub fn canary_phase(&self, canary: u8) -> bool {
        canary > 0 && !self.promoted
    }

    /// Its canary phase ended, not promoted, not rolling back (`canary_ended`).
    pub fn canary_ended(&self) -> bool {
        self.canary_paused && !self.promoted && self.rolling_back_to.is_none()
    }

    /// Paused after its canaries with reason `canary`, waiting for promotion
    /// (`awaits_promotion`; an operator's pause is not one).
    pub fn awaits_promotion(&self) -> bool {
        self.canary_ended() && self.state == DeployState::Paused && self.canary_reason
    }
}

/// `staging/<svc>/<host>-<seq>`: ephemeral-sequential, owned by the host's session.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Ticket {
    /// Whose ticket.
    pub host: Host,
    /// The staged version it was created for.
    pub version: Ver,
}

/// ZooKeeper's nodes of one service.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ServiceZk {
    /// `staging/<svc>`: the staged version (the policy is in the config).
    pub staged: Ver,
    /// The tickets, in sequence order.
    pub tickets: Vec<Ticket>,
    /// `current/<svc>/<host>` (ephemeral): index `h` is host `h`'s registration.
    pub current: Vec<Option<Ver>>,
}

/// The whole ZooKeeper tree the protocol uses.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Zk {
    /// Per service.
    pub services: Vec<ServiceZk>,
    /// `deploy/`, in sequence order (the head first).
    pub deploy: Vec<Entry>,
    /// The next deploy sequence number.
    pub next_seq: u8,
    /// Index `h`: host `h` has a live session (a crash is followed by a restart
    /// with a new session at once; an expiry leaves it without one until it
    /// reconnects).
    pub session: Vec<bool>,
}

/// Where an agent is in its lifecycle (`sidecar/src/lifecycle.rs`, coarsened:
/// downloading is folded into queueing).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Phase {
    /// Just (re)started: recovers its marker or boots, then registers.
    Booting,
    /// Registered (when something runs), not queued.
    Idle,
    /// Has a ticket (downloaded, verified), waits for its turn.
    Queued,
    /// Read the front (eligible) and will commit the fence in a later step.
    Read {
        /// The head entry read.
        entry: u8,
        /// Its data version at the read: the fence checks it.
        seen: u8,
        /// Its `upgrading/` directory's data version at the read: a rewriting fence
        /// checks it (no parallel fence committed since the read).
        seen_slots: u8,
        /// `faults_left` at the read (for the quorum check's exemption of hosts
        /// that went offline on their own since).
        faults_at_read: u8,
        /// Bit `h`: host `h` was online (registered) for the service at the read.
        online: u8,
        /// Whether this host was online at the read (its fence deletes its
        /// registration then).
        self_online: bool,
        /// A step back (`on_halt = rollback`, `turn::decide_return`): read from
        /// idle, fenced without a ticket, to the entry's `rolling_back_to`.
        back: bool,
        /// The parallel fence (`turn::parallel`, issue 16): the fence checks the
        /// entry's version without rewriting it, and bumps `slots_version`.
        parallel: bool,
    },
    /// Fenced: marker created, registration deleted; the local step runs.
    Fenced {
        /// The entry fenced on.
        entry: u8,
        /// Stepping from.
        from: Option<Ver>,
        /// Stepping to.
        to: Ver,
    },
    /// The new release is active locally; health check and bake run.
    Switched {
        /// The entry fenced on.
        entry: u8,
        /// Stepping from.
        from: Option<Ver>,
        /// Stepping to.
        to: Ver,
    },
    /// Healthy and baked: the success transaction is pending.
    Succeeded {
        /// The entry fenced on.
        entry: u8,
        /// Stepped to.
        to: Ver,
    },
    /// Failed and switched back locally: the failure transaction is pending.
    Failed {
        /// The entry fenced on.
        entry: u8,
        /// The version the step failed to reach.
        to: Ver,
    },
}

impl Phase {
    /// Between the fence and its commit (a step in flight survives session loss).
    pub fn in_step(&self) -> bool {
        matches!(self, Phase::Fenced { .. } | Phase::Switched { .. } | Phase::Succeeded { .. } | Phase::Failed { .. })
    }
}

/// One sidecar agent: one (host, service). Its fields are the sidecar's memory,
/// except `running`, which is the local release store and process (survives a
/// sidecar crash: the service is adopted).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Agent {
    /// The release active and running locally (`None`: nothing installed).
    pub running: Option<Ver>,
    /// Its lifecycle phase.
    pub phase: Phase,
    /// A completion check is due (after a success, failure, recovery, boot,
    /// reconnect or a staging change observed). Lost in a crash.
    pub check: bool,
}

/// A whole state of the model.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct State {
    /// ZooKeeper.
    pub zk: Zk,
    /// Agents, indexed `host * services + service` (`None`: not run there).
    pub agents: Vec<Option<Agent>>,
    /// Faults left to inject.
    pub faults_left: u8,
    /// Operator actions left.
    pub ops_left: u8,
    /// Bit `s`: service `s` may still be staged (version 1, a new entry).
    pub stage_left: u8,
    /// Rollouts completed so far (entries deleted by the decider).
    pub completed: u8,
    /// Bit `s`: an operator aborted service `s`'s rollout (ghost state for the
    /// convergence property: an abort leaves hosts where they are).
    pub aborted: u8,
    /// Index `s`: hosts service `s`'s last completed rollout left behind (its
    /// failed hosts, and with [`Config::exempt_late_hosts`] the hosts that were
    /// offline when it completed); ghost state for the convergence property.
    pub left_behind: Vec<u8>,
    /// An operator deleted the marker of a step still in flight (unlock, or a
    /// rollback superseding its entry): ghost state, the steps-in-flight bound
    /// no longer applies.
    pub freed_live_slot: bool,
    /// Index `s`: service `s`'s last completed entry rolled back to this version
    /// (`rolled_back`): ghost state for the convergence property, whose target it
    /// is then (the staged release stays the failed one).
    pub rolled_back_to: Vec<Option<Ver>>,
    /// Some promoted entry completed (ghost state for a `sometimes` property).
    pub promoted_completed: bool,
    /// Bits of [`crate::checks::Violation`]s some transition so far committed.
    pub violations: u16,
}

impl State {
    /// The initial state of `cfg`.
    pub fn initial(cfg: &Config) -> State {
        let n = cfg.services.len();
        let mut zk = Zk { services: vec![], deploy: vec![], next_seq: 0, session: vec![true; cfg.hosts as usize] };
        let mut stage_left = 0;
        for (s, svc) in cfg.services.iter().enumerate() {
            let fresh = |h: Host| s == 0 && cfg.fresh & (1 << h) != 0;
            let current = (0..cfg.hosts).map(|h| (cfg.runs(h, s as Svc) && !fresh(h)).then_some(0)).collect();
            zk.services.push(ServiceZk { staged: 0, tickets: vec![], current });
            if svc.staged_at_start {
                zk.services[s].staged = 1;
                zk.push_entry(s as Svc, 1);
            } else {
                stage_left |= 1 << s;
            }
        }
        let mut agents = vec![None; cfg.hosts as usize * n];
        for (h, s) in cfg.agents() {
            let fresh = s == 0 && cfg.fresh & (1 << h) != 0;
            agents[h as usize * n + s as usize] = Some(if fresh {
                Agent { running: None, phase: Phase::Booting, check: false }
            } else {
                Agent { running: Some(0), phase: Phase::Idle, check: false }
            });
        }
        State {
            zk,
            agents,
            faults_left: cfg.faults,
            ops_left: cfg.ops,
            stage_left,
            completed: 0,
            aborted: 0,
            left_behind: vec![0; n],
            freed_live_slot: false,
            rolled_back_to: vec![None; n],
            promoted_completed: false,
            violations: 0,
        }
    }

    /// Agent (h, s), which must exist.
    pub fn agent(&self, h: Host, s: Svc) -> &Agent {
        let n = self.zk.services.len();
        self.agents[h as usize * n + s as usize].as_ref().expect("no such agent")
    }

    /// Agent (h, s), mutably.
    pub fn agent_mut(&mut self, h: Host, s: Svc) -> &mut Agent {
        let n = self.zk.services.len();
        self.agents[h as usize * n + s as usize].as_mut().expect("no such agent")
    }
}

impl Zk {
    /// Creates a new active entry at the back of `deploy/`.
    pub fn push_entry(&mut self, service: Svc, version: Ver) {
        let e = self.new_entry(service, version);
        self.deploy.push(e);
    }

    /// A new active entry with the next sequence number.
    pub fn new_entry(&mut self, service: Svc, version: Ver) -> Entry {
        let id = self.next_seq;
        self.next_seq += 1;
        Entry {
            id,
            service,
            version,
            state: DeployState::Active,
            failures: 0,
            failed_hosts: 0,
            data_version: 0,
            slots_version: 0,
            markers: vec![],
            canaries: 0,
            canaries_done: 0,
            canary_paused: false,
            canary_reason: false,
            promoted: false,
            rolling_back_to: None,
            rollback_mark: false,
            fenced_unpromoted: 0,
        }
    }

    /// The entry with sequence `id`, if it still exists.
    pub fn entry(&self, id: u8) -> Option<&Entry> {
        self.deploy.iter().find(|e| e.id == id)
    }

    /// The entry with sequence `id`, mutably.
    pub fn entry_mut(&mut self, id: u8) -> Option<&mut Entry> {
        self.deploy.iter_mut().find(|e| e.id == id)
    }

    /// The first entry of service `s` in queue order.
    pub fn entry_of(&self, s: Svc) -> Option<&Entry> {
        self.deploy.iter().find(|e| e.service == s)
    }

    /// Online hosts of `s` (registrations).
    pub fn online(&self, s: Svc) -> u8 {
        self.services[s as usize].current.iter().filter(|c| c.is_some()).count() as u8
    }

    /// Online hosts of `s`, as a bit set.
    pub fn online_set(&self, s: Svc) -> u8 {
        let cur = &self.services[s as usize].current;
        cur.iter().enumerate().filter(|(_, c)| c.is_some()).fold(0, |m, (h, _)| m | 1 << h)
    }

    /// Removes every ephemeral node of host `h`'s session (all services).
    pub fn drop_session(&mut self, h: Host) {
        for svc in &mut self.services {
            svc.current[h as usize] = None;
            svc.tickets.retain(|t| t.host != h);
        }
    }

    /// Deletes host `h`'s ticket for `s`, if any.
    pub fn delete_ticket(&mut self, h: Host, s: Svc) {
        self.services[s as usize].tickets.retain(|t| t.host != h);
    }

    /// Deletes host `h`'s marker under entry `id`, if both exist.
    pub fn delete_marker(&mut self, id: u8, h: Host) {
        if let Some(e) = self.entry_mut(id) {
            e.markers.retain(|m| m.host != h);
        }
    }
}

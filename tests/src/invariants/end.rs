//! The end state of a scenario.

use super::State;
use znode_schema::{DeployState, Layout};

/// The end state: for each of `services`, every online host runs the staged
/// version with no marker left, or the rollout is halted with a reason (or
/// paused, when `paused_ok`). Returns the violations.
pub fn end(state: &State, l: &Layout, services: &[&str], paused_ok: bool) -> Vec<String> {
    end_with(state, l, services, paused_ok, &Default::default()).0
}

/// [`end`], where a host listed in `completed` (from
/// [`Report::completed_with_failures`]) for the staged version may run another:
/// its step failed and the rollout completed without it. A host absent from
/// `online_at_end` (from [`Report::completed_online`]) when the staged version's
/// rollout ended was dark then and is left behind: a known gap, returned as a note.
/// Returns the violations and the notes.
pub fn end_with(
    state: &State,
    l: &Layout,
    services: &[&str],
    paused_ok: bool,
    report: &crate::invariants::Report,
) -> (Vec<String>, Vec<String>) {
    let (completed, online_at_end) = (&report.completed_with_failures, &report.completed_online);
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let deploys = state.deploys(l);
    for svc in services {
        let Some(st) = state.staging(l, svc) else { continue };
        let entry = deploys.iter().find(|(_, e)| e.as_ref().is_some_and(|e| e.service == *svc));
        if let Some((name, Some(e))) = entry {
            let stopped = match e.state {
                DeployState::Halted => e.reason.as_deref().is_some_and(|r| !r.is_empty()),
                DeployState::Paused => paused_ok,
                DeployState::Active => false,
            };
            if stopped {
                continue;
            }
            out.push(format!("{svc}: rollout {name} of {} still {} at the end", e.version, e.state));
        }
        let failed = completed.get(*svc).filter(|(v, _)| *v == st.version).map(|(_, h)| h.as_slice()).unwrap_or(&[]);
        // A rollout that rolled back on its own (`on_halt = rollback`) leaves the
        // hosts on the version it went back to, the staged one unchanged.
        let want = match report.rolled_back.get(*svc).filter(|(v, _)| *v == st.version) {
            Some((_, to)) => to.as_str(),
            None => st.version.as_str(),
        };
        let ended = online_at_end.get(*svc).filter(|(v, _)| *v == st.version).map(|(_, h)| h.as_slice());
        for (h, v) in state.online(l, svc) {
            if v.as_deref() == Some(want) || failed.contains(&h) {
                continue;
            }
            match ended {
                Some(online) if !online.contains(&h) => notes.push(format!(
                    "{svc}: {h} runs {v:?}, staged {}: it was not online when the rollout ended (left behind, \
                     a known gap: docs/guarantees.md)",
                    st.version
                )),
                _ => out.push(format!("{svc}: {h} runs {v:?}, staged {}, and no halt says why", st.version)),
            }
        }
    }
    (out, notes)
}

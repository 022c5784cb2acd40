//! What a stage would do, worked out before writing: the hosts online, the quorum
//! arithmetic (SPEC "Turn": online hosts minus one must be at least the quorum of
//! online plus upgrading hosts), the batches of `max_parallel`, the place in the
//! queue, warnings and the refusal `--force` overrides. `stage` refuses from it and
//! `stage --dry-run` prints it.

use crate::Ctx;
use crate::error::Refusal;
use crate::model::{describe, queue_item};
use crate::output::{Table, print_json};
use crate::stage::Before;
use serde_json::json;
use znode_schema::Staging;

/// The plan of one stage.
#[derive(Debug)]
pub struct Preflight {
    /// Online hosts and the version each runs.
    pub online: Vec<(String, String)>,
    /// Hosts mid-step in the service's unfinished rollouts.
    pub upgrading: u32,
    /// Hosts that must stay online (the quorum of online plus upgrading hosts).
    pub required: u32,
    /// Hosts that may step at once: `max_parallel`, capped by what the quorum leaves.
    pub parallel: u32,
    /// Hosts not at the target, in batches of `parallel` (host name order: the real
    /// order is the order their downloads finish).
    pub batches: Vec<Vec<String>>,
    /// The entry's place in the queue (1-based): last, after the other services' entries.
    pub position: usize,
    /// Indices in the queue of the entries that would stay ahead.
    pub ahead: Vec<usize>,
    /// Things the operator should know; the stage goes on.
    pub warnings: Vec<String>,
    /// Why the stage is refused unless `--force`.
    pub refusal: Option<Refusal>,
}

impl Preflight {
    /// Works out the plan of staging `staging` given what was read.
    pub fn assess(staging: &Staging, before: &Before) -> Preflight {
        let service = &staging.service;
        let online: Vec<(String, String)> =
            before.view.host_versions().map(|(h, v)| (h.to_string(), v.to_string())).collect();
        let mine: Vec<_> = before.queue.of_service(service).map(|(_, e)| e).collect();
        let upgrading = mine.iter().map(|e| e.markers.len() as u32).sum::<u32>();
        let n = online.len() as u32;
        let total = n + upgrading;
        let q = staging.policy.quorum;
        let required = q.required(total);
        let spare = total.saturating_sub(required);
        let parallel = spare.min(staging.policy.max_parallel);
        let todo: Vec<String> = online.iter().filter(|(_, v)| *v != staging.version).map(|(h, _)| h.clone()).collect();
        let batches =
            if parallel == 0 { Vec::new() } else { todo.chunks(parallel as usize).map(<[_]>::to_vec).collect() };
        let ahead: Vec<usize> =
            (0..before.queue.entries.len()).filter(|i| before.queue.entries[*i].service() != Some(service)).collect();
        let mut warnings = Vec::new();
        let mut refusal = None;
        if total == 0 {
            warnings.push(format!("no host of {service} is online now; no host will step until hosts register"));
        } else if parallel == 0 {
            refusal = Some(Refusal::QuorumUnreachable {
                service: service.clone(),
                quorum: q.to_string(),
                required,
                online: n,
                upgrading,
            });
        }
        if total > 0 && todo.is_empty() && upgrading == 0 {
            warnings.push(format!("every online host of {service} already runs {}", staging.version));
        }
        if let Some(staged) = before.view.staging.as_ref().and_then(|s| s.ok()).filter(|s| s.version == staging.version)
        {
            warnings.push(format!(
                "{service} {} is already the staged release (staged by {})",
                staged.version, staged.staged_by
            ));
        }
        Preflight {
            online,
            upgrading,
            required,
            parallel,
            batches,
            position: ahead.len() + 1,
            ahead,
            warnings,
            refusal,
        }
    }

    /// Prints the plan (`stage --dry-run`); `err` is why the stage would be refused.
    pub fn print(&self, ctx: &Ctx, staging: &Staging, fetched: bool, err: Option<&anyhow::Error>, before: &Before) {
        let q = &staging.policy;
        let total = self.online.len() as u32 + self.upgrading;
        let ahead: Vec<&crate::model::Entry> = self.ahead.iter().map(|i| &before.queue.entries[*i]).collect();
        let refused = err.map(|e| format!("{e:#}"));
        if ctx.json {
            print_json(&json!({
                "dry_run": true, "service": staging.service, "version": staging.version,
                "staging": staging, "artifact_checked": fetched,
                "hosts_online": self.online.iter().map(|(h, v)| json!({"host": h, "version": v})).collect::<Vec<_>>(),
                "upgrading": self.upgrading,
                "quorum": {"policy": q.quorum, "of": total, "required": self.required, "parallel": self.parallel,
                           "max_parallel": q.max_parallel, "can_step": self.parallel > 0},
                "batches": self.batches,
                "deploy": {"position": self.position, "queue_length": self.position,
                           "ahead": ahead.iter().enumerate().map(|(i, e)| queue_item(i, e)).collect::<Vec<_>>()},
                "warnings": self.warnings, "refused": refused,
            }));
            return;
        }
        let a = &staging.artifact;
        let mut t = Table::default();
        let check = if fetched { "fetched: sha256 and size verified" } else { "not fetched" };
        t.row(vec!["artifact".into(), format!("{} ({} bytes, sha256 {}, {check})", a.url, a.size, a.sha256)]);
        let hosts: Vec<String> = self.online.iter().map(|(h, v)| format!("{h} {v}")).collect();
        let hosts = if hosts.is_empty() { "none".into() } else { hosts.join(", ") };
        t.row(vec!["online".into(), format!("{} host(s): {hosts}; {} upgrading", self.online.len(), self.upgrading)]);
        t.row(vec![
            "quorum".into(),
            format!(
                "{} of {total} = {} must stay online; {total} - {} = {} may step, max_parallel {}: {} at a time",
                q.quorum,
                self.required,
                self.required,
                total.saturating_sub(self.required),
                q.max_parallel,
                self.parallel
            ),
        ]);
        for (i, b) in self.batches.iter().enumerate() {
            t.row(vec![format!("batch {}", i + 1), b.join(", ")]);
        }
        let behind = if ahead.is_empty() {
            "at the head: hosts start once downloaded".to_string()
        } else {
            format!("behind {}", ahead.iter().map(|e| describe(e)).collect::<Vec<_>>().join(", "))
        };
        t.row(vec!["queue".into(), format!("position {}: {behind}", self.position)]);
        for w in &self.warnings {
            t.row(vec!["warning".into(), w.clone()]);
        }
        if let Some(r) = &refused {
            t.row(vec!["refused".into(), r.clone()]);
        }
        outln!("plan for {} {} (dry run: nothing written)", staging.service, staging.version);
        out!("{}", t.render("  "));
    }
}

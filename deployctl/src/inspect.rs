//! `deployctl check`, the payload half: every znode under the root read as the
//! sidecars read it. A payload that does not decode (naming its path and field), a
//! policy key nobody reads (`max_paralell`: serde ignores unknown fields, so a typo
//! by hand with zkCli silently means the default), a name that is not what its
//! path says, and a staged release that no deploy entry rolls out (sidecars move
//! only for a deploy entry) are findings.

use crate::model::{Queue, ServiceView};
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use znode_schema::acl::Node;
use znode_schema::layout::EVENT_PREFIX;
use znode_schema::{
    Current, DeployEntry, DeployName, HistoryEvent, Layout, Release, Security, SeqName, Staging, Ticket, TicketName,
    Upgrading, decode,
};

/// One problem found at a path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The znode.
    pub path: String,
    /// What is wrong, naming the field.
    pub problem: String,
}

/// Checks the payload of the node at `path` (of kind `node`); findings appended to `out`.
pub fn payload(node: Node, path: &str, raw: &[u8], out: &mut Vec<Finding>) {
    let mut push = |problem: String| out.push(Finding { path: path.into(), problem });
    let name = path.rsplit('/').next().unwrap_or_default();
    // Names that readers skip (not `deploy-<seq>`, `event-<seq>`, `<host>-<seq>`) are not read.
    let read = match node {
        Node::DeployEntry => DeployName::parse(name).is_some(),
        Node::Event => SeqName::parse(name, EVENT_PREFIX).is_some(),
        Node::Ticket => TicketName::parse(name).is_some(),
        _ => true,
    };
    if !read {
        return;
    }
    let result = match node {
        Node::Registration => decode::<Current>(path, raw).map(|c| (c.host != name).then(|| host_mismatch(&c.host))),
        Node::Staging => policy_keys::<Staging>(path, raw),
        Node::Ticket => decode::<Ticket>(path, raw)
            .map(|t| TicketName::parse(name).filter(|n| n.host != t.host).map(|_| host_mismatch(&t.host))),
        Node::DeployEntry => decode::<DeployEntry>(path, raw)
            .map(|d| znode_schema::validate_service(&d.service).err().map(|e| format!("field `service`: {e}"))),
        Node::Marker => decode::<Upgrading>(path, raw).map(|u| (u.host != name).then(|| host_mismatch(&u.host))),
        Node::Release => policy_keys::<Release>(path, raw).and_then(|found| {
            let r = decode::<Release>(path, raw)?;
            Ok(found.or_else(|| {
                (r.version != name).then(|| format!("field `version` is {:?} but the path names {name:?}", r.version))
            }))
        }),
        Node::Event => decode::<HistoryEvent>(path, raw).map(|_| None),
        Node::Security => decode::<Security>(path, raw).map(|_| None),
        _ => Ok(None),
    };
    match result {
        Ok(Some(problem)) => push(problem),
        Ok(None) => {}
        Err(e) => push(e.kind.to_string()),
    }
}

fn host_mismatch(host: &str) -> String {
    format!("field `host` is {host:?}, which is not the host its path names")
}

/// Decodes `raw` as `T` and reports the first `policy` key the decoder ignored.
fn policy_keys<T: DeserializeOwned>(path: &str, raw: &[u8]) -> Result<Option<String>, znode_schema::DecodeError> {
    decode::<T>(path, raw)?;
    let mut unknown = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(raw);
    let _: Result<T, _> = serde_ignored::deserialize(&mut de, |p| {
        let p = p.to_string();
        if p.starts_with("policy.") {
            unknown.push(p);
        }
    });
    Ok((!unknown.is_empty()).then(|| {
        let known = "quorum, max_parallel, bake, health_deadline, max_failures";
        format!(
            "unknown policy key(s) {} (ignored by sidecars, which use the default; known: {known})",
            unknown.join(", ")
        )
    }))
}

/// Staged releases of services with hosts that do not run them and no deploy entry
/// to move them: hosts act only on a deploy entry.
pub fn unrolled(layout: &Layout, queue: &Queue, views: &[ServiceView]) -> Vec<Finding> {
    let queued: BTreeSet<&str> = queue.entries.iter().filter_map(|e| e.service()).collect();
    let mut out = Vec::new();
    for v in views {
        let Some(staged) = v.staged_version() else { continue };
        if queued.contains(v.name.as_str()) {
            continue;
        }
        let behind: Vec<String> =
            v.host_versions().filter(|(_, hv)| *hv != staged).map(|(h, hv)| format!("{h} ({hv})")).collect();
        if !behind.is_empty() {
            out.push(Finding {
                path: layout.staging(&v.name),
                problem: format!(
                    "{staged} is staged but no deploy entry rolls it out, and {} online host(s) run another version: {}; \
                     stage it with deployctl (which creates the entry) or roll back",
                    behind.len(),
                    behind.join(", ")
                ),
            });
        }
    }
    out
}

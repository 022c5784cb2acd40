//! The release catalog (`releases/<service>/<version>`): reading it, choosing the
//! release most online hosts run, and `deployctl releases`.

use crate::Ctx;
use crate::model::{Node, ServiceView, read};
use crate::output::{Table, print_json, short_sha};
use serde_json::json;
use znode_schema::{Release, Staging};

/// Every release of `service`, oldest staged first; `None` when the service has no catalog.
pub async fn read_all(ctx: &Ctx, service: &str) -> anyhow::Result<Option<Vec<Node<Release>>>> {
    let Some(names) = ctx.zk.children(&ctx.layout.releases(service)).await? else { return Ok(None) };
    let mut out = Vec::new();
    for v in names {
        if let Some(node) = read::<Release>(&ctx.zk, &ctx.layout.release(service, &v)).await? {
            out.push(node);
        }
    }
    out.sort_by_key(sort_key);
    Ok(Some(out))
}

/// Order by `staged_at` (RFC 3339 UTC strings sort in time order), then path.
fn sort_key(n: &Node<Release>) -> (String, String) {
    (n.ok().map(|r| r.staged_at.clone()).unwrap_or_default(), n.path.clone())
}

/// The version most online hosts run, ties broken by the most recently staged
/// release in `catalog`; `None` when no host is online.
pub fn most_popular(view: &ServiceView, catalog: &[Node<Release>], except: Option<&str>) -> Option<String> {
    let staged_at = |v: &str| {
        catalog.iter().filter_map(|n| n.ok()).find(|r| r.version == v).map(|r| r.staged_at.clone()).unwrap_or_default()
    };
    view.by_version()
        .into_iter()
        .filter(|(v, _)| Some(v.as_str()) != except)
        .max_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| staged_at(&a.0).cmp(&staged_at(&b.0))))
        .map(|(v, _)| v)
}

/// A staging payload for a catalog release with the release's own policy (the one
/// it was first staged with), or the defaults when the catalog entry predates
/// recorded policies; never the policy of the release being left.
pub fn staging_for(ctx: &Ctx, release: &Release) -> Staging {
    Staging {
        service: release.service.clone(),
        version: release.version.clone(),
        artifact: release.artifact.clone(),
        policy: release.policy.clone().unwrap_or_default(),
        staged_at: znode_schema::time::now(),
        staged_by: ctx.by.clone(),
    }
}

/// Where the policy of [`staging_for`] comes from, in words.
pub fn policy_source(release: &Release) -> String {
    match &release.policy {
        Some(_) => format!("{}'s own policy from the catalog", release.version),
        None => format!("the default policy (the catalog entry of {} records none)", release.version),
    }
}

/// A policy in one line: `quorum 2, max_parallel 1, bake 10s, health_deadline 60s, max_failures 0`.
pub fn policy_line(p: &znode_schema::Policy) -> String {
    format!(
        "quorum {}, max_parallel {}, bake {}, health_deadline {}, max_failures {}",
        p.quorum, p.max_parallel, p.bake, p.health_deadline, p.max_failures
    )
}

/// `deployctl releases SERVICE`.
pub async fn show(ctx: &Ctx, service: &str) -> anyhow::Result<()> {
    let releases = read_all(ctx, service).await?.unwrap_or_default();
    let view = ServiceView::read(&ctx.zk, &ctx.layout, service).await?;
    let staged = view.staged_version().map(String::from);
    let hosts_on = |v: &str| view.host_versions().filter(|(_, hv)| *hv == v).count();
    if ctx.json {
        let rows: Vec<_> = releases
            .iter()
            .rev()
            .map(|n| match &n.value {
                Ok(r) => json!({
                    "path": n.path, "version": r.version, "artifact": r.artifact, "staged_at": r.staged_at,
                    "staged_by": r.staged_by, "staged": staged.as_deref() == Some(r.version.as_str()),
                    "hosts_online": hosts_on(&r.version),
                }),
                Err(m) => json!(m),
            })
            .collect();
        print_json(&json!({ "service": service, "releases": rows }));
        return Ok(());
    }
    let mut t = Table::new(&["VERSION", "STAGED", "HOSTS", "STAGED_AT", "STAGED_BY", "SHA256", "SIZE", "URL"]);
    for n in releases.iter().rev() {
        match &n.value {
            Ok(r) => t.row(vec![
                r.version.clone(),
                if staged.as_deref() == Some(r.version.as_str()) { "*".into() } else { String::new() },
                hosts_on(&r.version).to_string(),
                r.staged_at.clone(),
                r.staged_by.clone(),
                short_sha(&r.artifact.sha256),
                r.artifact.size.to_string(),
                r.artifact.url.clone(),
            ]),
            Err(m) => t.row(vec!["MALFORMED".into(), String::new(), String::new(), m.to_string()]),
        }
    }
    if t.is_empty() {
        outln!("no releases of {service}");
    } else {
        out!("{}", t.render(""));
    }
    Ok(())
}

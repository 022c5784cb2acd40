//! Securing a tree and checking it: `deployctl init --deployer ID --sidecar ID
//! [--reader ID|world]` and `deployctl check`.
//!
//! # Expected flow
//! `init` with roles creates the tree as without them, writes the roles to
//! `<root>/security` (the sidecars and later deployctl runs read them to give every
//! node they create its ACL), then walks every node under the root and sets the
//! ACL the layout gives it ([`znode_schema::acl`]). An open tree is so upgraded in
//! place, live: nodes created meanwhile by clients that have not read the roles yet
//! keep an open ACL, which `check` reports (run `init` again).
//!
//! # Guarantees
//! `init` refuses roles that would lock out the deployctl running it (it must be one
//! of the deployers, with the right password for a digest id), before writing.

use crate::Ctx;
use crate::cli::InitArgs;
use crate::error::{Invalid, Refusal};
use crate::output::print_json;
use serde_json::json;
use znode_schema::acl::{Grant, Node, WORLD};
use znode_schema::{Security, encode};

/// The roles given to `init`, checked; `None` when none is given (an open `init`).
pub fn roles(args: &InitArgs) -> Result<Option<Security>, Invalid> {
    if args.deployer.is_empty() && args.sidecar.is_empty() && args.reader.is_empty() {
        return Ok(None);
    }
    let reader = args.reader.iter().map(|r| if r == "world" { WORLD.to_string() } else { r.clone() }).collect();
    let s = Security { deployer: args.deployer.clone(), sidecar: args.sidecar.clone(), reader };
    s.validate().map_err(|e| Invalid::Flag(format!("init --deployer/--sidecar/--reader: {e}")))?;
    Ok(Some(s))
}

/// Whether this session is one of `roles`' deployers (exactly: a digest id needs
/// the password that makes its hash).
fn is_deployer(ctx: &Ctx, roles: &Security) -> bool {
    let digest = ctx.zk.digest_id();
    roles.deployer.iter().any(|d| digest.as_deref() == Some(d.as_str()) || ctx.zk.ids().iter().any(|i| i == d))
}

/// Every node under the root, parents first.
async fn walk(ctx: &Ctx) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut todo = vec![ctx.layout.root().to_string()];
    while let Some(p) = todo.pop() {
        let Some(children) = ctx.zk.children(&p).await? else { continue };
        for c in children {
            todo.push(if p == "/" { format!("/{c}") } else { format!("{p}/{c}") });
        }
        out.push(p);
    }
    Ok(out)
}

fn same(a: &[Grant], b: &[Grant]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    a == b
}

/// `init` with roles: record them and set every node's ACL.
pub async fn secure(ctx: &mut Ctx, roles: Security) -> anyhow::Result<()> {
    if !is_deployer(ctx, &roles) {
        let who = if ctx.zk.ids().is_empty() { "nobody".to_string() } else { ctx.zk.ids().join(", ") };
        return Err(Refusal::NotDeployer { who, deployers: roles.deployer.join(", ") }.into());
    }
    let path = ctx.layout.security();
    let version = ctx.zk.stat(&path).await?.map(|st| st.version);
    ctx.zk.set_security(&ctx.layout, roles.clone());
    ctx.zk.put(&path, &encode(&roles), version).await?;
    let (mut changed, mut kept) = (0, 0);
    for p in walk(ctx).await? {
        let node = ctx.layout.classify(&p).unwrap_or(Node::Other);
        let want = roles.acl(node, &[]);
        let Some(have) = ctx.zk.get_acl(&p).await? else { continue };
        // A host's own node may be tighter than the layout (only its own ids): keep it.
        let keep = same(&have, &want) || (node.is_per_host() && roles.looser(node, &have).is_empty());
        if keep {
            kept += 1;
        } else {
            ctx.zk.set_acl(&p, &want).await?;
            changed += 1;
        }
    }
    let root = ctx.layout.root();
    if ctx.json {
        print_json(&json!({"root": root, "security": roles, "acl_set": changed, "acl_kept": kept}));
    } else {
        outln!(
            "secured the tree under {root}: roles in {path}; set the ACL of {changed} node(s), {kept} already right"
        );
    }
    Ok(())
}

/// `deployctl check`: every payload as the sidecars read it ([`crate::inspect`]),
/// then every node whose ACL grants more than the layout's. Exit 3 on any finding,
/// or when the tree is open.
pub async fn check(ctx: &Ctx) -> anyhow::Result<()> {
    let root = ctx.layout.root().to_string();
    crate::model::require_tree(&ctx.zk, &ctx.layout).await?;
    let paths = walk(ctx).await?;
    let mut invalid = Vec::new();
    for p in &paths {
        let node = ctx.layout.classify(p).unwrap_or(Node::Other);
        if let Some((raw, _)) = ctx.zk.get(p).await? {
            crate::inspect::payload(node, p, &raw, &mut invalid);
        }
    }
    let queue = crate::model::Queue::read(&ctx.zk, &ctx.layout).await?;
    let mut views = Vec::new();
    for s in ctx.zk.children(&ctx.layout.staging_dir()).await?.unwrap_or_default() {
        views.push(crate::model::ServiceView::read(&ctx.zk, &ctx.layout, &s).await?);
    }
    invalid.extend(crate::inspect::unrolled(&ctx.layout, &queue, &views));
    let roles = match ctx.zk.get(&ctx.layout.security()).await? {
        Some((raw, _)) => znode_schema::decode::<Security>(&ctx.layout.security(), &raw).ok(),
        None => None,
    };
    let mut loose = Vec::new();
    for p in paths.iter().filter(|_| roles.is_some()) {
        let roles = roles.as_ref().expect("filtered");
        let node = ctx.layout.classify(p).unwrap_or(Node::Other);
        let Some(have) = ctx.zk.get_acl(p).await? else { continue };
        let extra = roles.looser(node, &have);
        if !extra.is_empty() {
            let want: Vec<String> = roles.acl(node, &[]).iter().map(ToString::to_string).collect();
            loose.push((p.clone(), extra.iter().map(ToString::to_string).collect::<Vec<_>>(), want));
        }
    }
    let checked = paths.len();
    if ctx.json {
        let nodes: Vec<_> = loose.iter().map(|(p, e, w)| json!({"path": p, "extra": e, "expected": w})).collect();
        print_json(&json!({"root": root, "checked": checked, "open": roles.is_none(), "invalid": invalid,
                           "loose": nodes}));
    } else {
        for f in &invalid {
            outln!("INVALID {}: {}", f.path, f.problem);
        }
        for (p, extra, want) in &loose {
            outln!("LOOSE {p}: grants {} (the layout's ACL: {})", extra.join(", "), want.join(", "));
        }
        outln!(
            "checked {checked} node(s) under {root}: {} invalid, {} looser than the layout{}",
            invalid.len(),
            loose.len(),
            if roles.is_none() { " (open tree: ACLs not checked)" } else { "" }
        );
    }
    if !invalid.is_empty() {
        return Err(Refusal::InvalidNodes { root, count: invalid.len() }.into());
    }
    if roles.is_none() {
        return Err(Refusal::OpenTree { root }.into());
    }
    match loose.len() {
        0 => Ok(()),
        n => Err(Refusal::LooseAcls { root, count: n }.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(deployer: &[&str], sidecar: &[&str], reader: &[&str]) -> InitArgs {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        InitArgs { deployer: v(deployer), sidecar: v(sidecar), reader: v(reader) }
    }

    #[test]
    fn no_roles_is_an_open_init() {
        assert_eq!(roles(&args(&[], &[], &[])).unwrap(), None);
    }

    #[test]
    fn world_reads_and_ids_are_checked() {
        let r = roles(&args(&["digest:d:h="], &["x509:CN=web-01,O=baton"], &["world"])).unwrap().unwrap();
        assert_eq!(r.reader, vec![WORLD.to_string()]);
        assert!(roles(&args(&["deployer"], &["x509:CN=a"], &[])).is_err(), "no scheme");
        assert!(roles(&args(&["digest:d:h="], &[], &[])).is_err(), "no sidecar");
        assert!(roles(&args(&[], &["x509:CN=a"], &[])).is_err(), "no deployer");
    }
}

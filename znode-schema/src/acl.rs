//! Who may do what in the tree: the ACL of every znode, computed from its path and
//! the roles `deployctl init` recorded in `<root>/security` ([`Security`]).
//!
//! This is the one place that decides an ACL. The sidecar and deployctl call
//! [`Security::acl`] for every node they create, and `deployctl init` / `check` use
//! it to set and verify the ACLs of an existing tree. Without a security node the
//! tree is open (`world:anyone` may do anything), as it always was.
//!
//! | node | deployer | sidecar | reader |
//! |---|---|---|---|
//! | root, `security`, `staging`, `releases`, `releases/<s>`, `releases/<s>/<v>`, events, `deploy/<e>/rollback`, other | all | r | r |
//! | `current`, `history` | all | rc | r |
//! | `deploy` | all | rd | r |
//! | `current/<s>`, `staging/<s>`, `history/<s>`, `deploy/<e>/upgrading` | all | rcd | r |
//! | `deploy/<e>` | all | rwcd | r |
//! | registration, ticket, marker (named for a host) | all | rw (the creating host's own ids) | r |
//!
//! `r` read, `w` write (set data), `c` create children, `d` delete children, all also
//! `a` (set ACLs). ZooKeeper checks create and delete on the parent: see
//! docs/security.md for what this does and does not prevent.

use crate::layout::{Layout, ORIGIN_PREFIX, SOURCE_PREFIX, UPGRADING};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

/// ZooKeeper permission bits.
pub mod perm {
    /// Read data, list children.
    pub const READ: u32 = 1;
    /// Set data.
    pub const WRITE: u32 = 2;
    /// Create children.
    pub const CREATE: u32 = 4;
    /// Delete children.
    pub const DELETE: u32 = 8;
    /// Set ACLs.
    pub const ADMIN: u32 = 16;
    /// Everything.
    pub const ALL: u32 = 31;
}

/// The id that stands for every client, authenticated or not.
pub const WORLD: &str = "world:anyone";

/// `<root>/security`: the roles of the tree, written by `deployctl init --deployer …
/// --sidecar …`. Ids are ZooKeeper ACL ids, `scheme:id` (`digest:deployer:<hash>`,
/// `x509:CN=web-01,O=baton`, `world:anyone`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    /// Who may do everything deployctl does (and set ACLs).
    pub deployer: Vec<String>,
    /// The sidecars' ids: one shared id, or one per host.
    pub sidecar: Vec<String>,
    /// Who may read everything; empty: nobody beyond the two roles.
    #[serde(default)]
    pub reader: Vec<String>,
}

/// One ACL entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    /// Permission bits ([`perm`]).
    pub perms: u32,
    /// The scheme (`digest`, `x509`, `world`, ...).
    pub scheme: String,
    /// The id within the scheme.
    pub id: String,
}

impl Grant {
    /// A grant of `perms` to `id` written `scheme:id`.
    pub fn new(perms: u32, id: &str) -> Result<Grant, AclError> {
        let (scheme, rest) = split_id(id)?;
        Ok(Grant { perms, scheme: scheme.into(), id: rest.into() })
    }

    /// `scheme:id`.
    pub fn full_id(&self) -> String {
        format!("{}:{}", self.scheme, self.id)
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.scheme, self.id, perms_text(self.perms))
    }
}

/// `rwcda`-style text of permission bits (`-` for none).
pub fn perms_text(perms: u32) -> String {
    let s: String =
        [(perm::READ, 'r'), (perm::WRITE, 'w'), (perm::CREATE, 'c'), (perm::DELETE, 'd'), (perm::ADMIN, 'a')]
            .iter()
            .filter(|(bit, _)| perms & bit != 0)
            .map(|(_, c)| *c)
            .collect();
    if s.is_empty() { "-".into() } else { s }
}

/// An ACL id that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ZooKeeper ACL id {id:?}: {reason}")]
pub struct AclError {
    /// The id as given.
    pub id: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn split_id(id: &str) -> Result<(&str, &str), AclError> {
    let err = |reason| AclError { id: id.into(), reason };
    let (scheme, rest) =
        id.split_once(':').ok_or_else(|| err("expected scheme:id, e.g. digest:USER:HASH or x509:CN=…"))?;
    if scheme.is_empty() || rest.is_empty() || id.chars().any(char::is_control) {
        return Err(err("expected scheme:id with both parts non-empty"));
    }
    if scheme == "digest" && !rest.contains(':') {
        return Err(err("a digest id is digest:USER:BASE64(SHA1(USER:PASSWORD))"));
    }
    if scheme == "world" && rest != "anyone" {
        return Err(err("the only world id is world:anyone"));
    }
    Ok((scheme, rest))
}

/// Checks an ACL id (`scheme:id`).
pub fn validate_id(id: &str) -> Result<(), AclError> {
    split_id(id).map(|_| ())
}

/// The digest ACL id of `user` with `password`: `digest:USER:base64(sha1(USER:PASSWORD))`.
pub fn digest_id(user: &str, password: &str) -> String {
    let hash = Sha1::digest(format!("{user}:{password}").as_bytes());
    format!("digest:{user}:{}", base64::engine::general_purpose::STANDARD.encode(hash))
}

/// What a node is, as far as its ACL goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// The root.
    Root,
    /// `<root>/security`.
    Security,
    /// `current`.
    CurrentDir,
    /// `staging`.
    StagingDir,
    /// `deploy`.
    DeployDir,
    /// `releases`.
    ReleasesDir,
    /// `history`.
    HistoryDir,
    /// `current/<service>`.
    CurrentService,
    /// `current/<service>/<host>`.
    Registration,
    /// `staging/<service>`.
    Staging,
    /// `staging/<service>/<host>-<seq>`.
    Ticket,
    /// `deploy/deploy-<seq>`.
    DeployEntry,
    /// `deploy/<entry>/upgrading`.
    UpgradingDir,
    /// `deploy/<entry>/upgrading/<host>`.
    Marker,
    /// `deploy/<entry>/rollback`.
    RollbackMark,
    /// `releases/<service>`.
    ReleasesService,
    /// `releases/<service>/<version>`.
    Release,
    /// `history/<service>`.
    HistoryService,
    /// `history/<service>/event-<seq>`.
    Event,
    /// `peers`.
    PeersDir,
    /// `peers/<service>`.
    PeersService,
    /// `peers/<service>/<version>`.
    PeersRelease,
    /// `peers/<service>/<version>/source-<host>`.
    Source,
    /// `peers/<service>/<version>/origin-<slot>`.
    OriginSlot,
    /// Anything else under the root (deployer only).
    Other,
}

impl Node {
    /// Whether the node is named for one host (its sidecar's own ids get its write).
    pub fn is_per_host(self) -> bool {
        matches!(self, Node::Registration | Node::Ticket | Node::Marker | Node::Source)
    }

    /// What the sidecar role may do on this node.
    pub fn sidecar_perms(self) -> u32 {
        use perm::*;
        match self {
            Node::CurrentDir | Node::HistoryDir | Node::PeersDir => READ | CREATE,
            // A release's directory is created by its first source or origin fetcher
            // and removed by whoever leaves it empty.
            Node::PeersService | Node::PeersRelease => READ | CREATE | DELETE,
            // Ephemeral: the owner's session removes it; any sidecar reads it.
            Node::OriginSlot => READ,
            Node::DeployDir => READ | DELETE,
            Node::CurrentService | Node::Staging | Node::HistoryService | Node::UpgradingDir => READ | CREATE | DELETE,
            Node::DeployEntry => READ | WRITE | CREATE | DELETE,
            Node::Registration | Node::Ticket | Node::Marker | Node::Source => READ | WRITE,
            _ => READ,
        }
    }
}

impl Layout {
    /// What the node at `path` is (sequential prefixes such as `…/deploy/deploy-`
    /// classify as the node they create); `None` outside the root.
    pub fn classify(&self, path: &str) -> Option<Node> {
        let rest = if self.root() == "/" { path } else { path.strip_prefix(self.root())? };
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        Some(match segs.as_slice() {
            [] => Node::Root,
            ["security"] => Node::Security,
            ["current"] => Node::CurrentDir,
            ["staging"] => Node::StagingDir,
            ["deploy"] => Node::DeployDir,
            ["releases"] => Node::ReleasesDir,
            ["history"] => Node::HistoryDir,
            ["current", _] => Node::CurrentService,
            ["current", _, _] => Node::Registration,
            ["staging", _] => Node::Staging,
            ["staging", _, _] => Node::Ticket,
            ["deploy", _] => Node::DeployEntry,
            ["deploy", _, u] if *u == UPGRADING => Node::UpgradingDir,
            ["deploy", _, r] if *r == crate::layout::ROLLBACK_MARK => Node::RollbackMark,
            ["deploy", _, u, _] if *u == UPGRADING => Node::Marker,
            ["releases", _] => Node::ReleasesService,
            ["releases", _, _] => Node::Release,
            ["history", _] => Node::HistoryService,
            ["history", _, _] => Node::Event,
            ["peers"] => Node::PeersDir,
            ["peers", _] => Node::PeersService,
            ["peers", _, _] => Node::PeersRelease,
            ["peers", _, _, n] if n.starts_with(SOURCE_PREFIX) => Node::Source,
            ["peers", _, _, n] if n.starts_with(ORIGIN_PREFIX) => Node::OriginSlot,
            _ => Node::Other,
        })
    }
}

impl Security {
    /// Checks every id.
    pub fn validate(&self) -> Result<(), AclError> {
        for id in self.deployer.iter().chain(&self.sidecar).chain(&self.reader) {
            validate_id(id)?;
        }
        if self.deployer.is_empty() {
            return Err(AclError { id: String::new(), reason: "at least one deployer id is required" });
        }
        if self.sidecar.is_empty() {
            return Err(AclError { id: String::new(), reason: "at least one sidecar id is required" });
        }
        Ok(())
    }

    /// The ACL of `node`. `creator` holds the ids of the session creating it: for a
    /// node named for a host, the sidecar ids among them get the sidecar's rights
    /// (its own nodes); when none is given, every sidecar id does (`init`, `check`).
    pub fn acl(&self, node: Node, creator: &[String]) -> Vec<Grant> {
        let mut out: Vec<Grant> = Vec::new();
        let mut add = |perms: u32, id: &str| {
            let Ok(g) = Grant::new(perms, id) else { return };
            match out.iter_mut().find(|o| o.scheme == g.scheme && o.id == g.id) {
                Some(o) => o.perms |= g.perms,
                None => out.push(g),
            }
        };
        for id in &self.deployer {
            add(perm::ALL, id);
        }
        let own: Vec<&String> = self.sidecar.iter().filter(|id| creator.contains(id)).collect();
        let sidecars: Vec<&String> =
            if node.is_per_host() && !own.is_empty() { own } else { self.sidecar.iter().collect() };
        for id in sidecars {
            add(node.sidecar_perms(), id);
        }
        for id in &self.reader {
            add(perm::READ, id);
        }
        out
    }

    /// The entries of `actual` (the ACL found on `node`) that grant more than the
    /// layout's ACL of that node: empty when it is as tight or tighter.
    pub fn looser(&self, node: Node, actual: &[Grant]) -> Vec<Grant> {
        let expected = self.acl(node, &[]);
        actual
            .iter()
            .filter(|a| {
                let allowed =
                    expected.iter().filter(|e| e.scheme == a.scheme && e.id == a.id).fold(0, |p, e| p | e.perms);
                a.perms & !allowed != 0
            })
            .cloned()
            .collect()
    }

    /// The ids among `ids` (a session's authenticated identities, as ZooKeeper's
    /// whoami reports them: `digest:USER`, `x509:CN=…`) that match a sidecar id.
    pub fn sidecar_ids(&self, ids: &[String]) -> Vec<String> {
        self.sidecar.iter().filter(|s| ids.iter().any(|i| matches_id(i, s))).cloned().collect()
    }

    /// Whether one of `ids` (whoami form) is a deployer.
    pub fn is_deployer(&self, ids: &[String]) -> bool {
        self.deployer.iter().any(|d| ids.iter().any(|i| matches_id(i, d)))
    }
}

/// Whether the authenticated identity `who` (whoami form: `digest:USER`,
/// `x509:CN=…`) is the ACL id `acl_id` (`digest:USER:HASH`, `x509:CN=…`). A digest
/// identity matches by user name: whoami does not tell the password's hash.
pub fn matches_id(who: &str, acl_id: &str) -> bool {
    match (who.split_once(':'), acl_id.split_once(':')) {
        (Some(("digest", user)), Some(("digest", rest))) => rest.split_once(':').is_some_and(|(u, _)| u == user),
        _ => who == acl_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn sec() -> Security {
        Security {
            deployer: vec!["digest:deployer:abc=".into()],
            sidecar: vec!["x509:CN=web-01,O=baton".into(), "x509:CN=web-02,O=baton".into()],
            reader: vec![WORLD.into()],
        }
    }

    #[test_case("/dc" => Some(Node::Root))]
    #[test_case("/dc/security" => Some(Node::Security))]
    #[test_case("/dc/current/api" => Some(Node::CurrentService))]
    #[test_case("/dc/current/api/web-01" => Some(Node::Registration))]
    #[test_case("/dc/staging/api" => Some(Node::Staging))]
    #[test_case("/dc/staging/api/web-01-" => Some(Node::Ticket))]
    #[test_case("/dc/deploy/deploy-" => Some(Node::DeployEntry))]
    #[test_case("/dc/deploy/deploy-0000000001/upgrading" => Some(Node::UpgradingDir))]
    #[test_case("/dc/deploy/deploy-0000000001/rollback" => Some(Node::RollbackMark))]
    #[test_case("/dc/deploy/deploy-0000000001/upgrading/web-01" => Some(Node::Marker))]
    #[test_case("/dc/releases/api/1.0" => Some(Node::Release))]
    #[test_case("/dc/history/api/event-" => Some(Node::Event))]
    #[test_case("/dc/peers" => Some(Node::PeersDir))]
    #[test_case("/dc/peers/api" => Some(Node::PeersService))]
    #[test_case("/dc/peers/api/1.0" => Some(Node::PeersRelease))]
    #[test_case("/dc/peers/api/1.0/source-web-01" => Some(Node::Source))]
    #[test_case("/dc/peers/api/1.0/origin-0" => Some(Node::OriginSlot))]
    #[test_case("/dc/peers/api/1.0/other" => Some(Node::Other))]
    #[test_case("/dc/odd/thing" => Some(Node::Other))]
    #[test_case("/dcx" => None)]
    #[test_case("/other" => None)]
    fn classify(path: &str) -> Option<Node> {
        Layout::default().classify(path)
    }

    #[test]
    fn slash_root_classifies_too() {
        let l = Layout::new("/").unwrap();
        assert_eq!(l.classify("/"), Some(Node::Root));
        assert_eq!(l.classify("/staging/api"), Some(Node::Staging));
        assert_eq!(l.security(), "/security");
    }

    #[test]
    fn the_sidecar_cannot_stage() {
        let s = sec();
        let sidecar = |node| s.acl(node, &[]).into_iter().find(|g| g.scheme == "x509").unwrap().perms;
        assert_eq!(sidecar(Node::Staging) & perm::WRITE, 0, "staging data");
        assert_eq!(sidecar(Node::ReleasesService) & perm::CREATE, 0, "releases");
        assert_eq!(sidecar(Node::DeployDir) & perm::CREATE, 0, "deploy entries");
        assert_eq!(sidecar(Node::Security), perm::READ);
        assert_ne!(sidecar(Node::DeployEntry) & perm::WRITE, 0, "the fence rewrites the entry");
        assert!(s.acl(Node::Staging, &[]).iter().any(|g| g.scheme == "digest" && g.perms == perm::ALL));
        assert!(s.acl(Node::Staging, &[]).iter().any(|g| g.full_id() == WORLD && g.perms == perm::READ));
    }

    #[test]
    fn sidecars_can_record_and_remove_peer_sources() {
        let s = sec();
        let sidecar = |node| s.acl(node, &[]).into_iter().find(|g| g.scheme == "x509").unwrap().perms;
        use perm::*;
        assert_eq!(sidecar(Node::PeersDir), READ | CREATE, "a service's directory under peers");
        for dir in [Node::PeersService, Node::PeersRelease] {
            assert_eq!(sidecar(dir), READ | CREATE | DELETE, "{dir:?}: created by a first source, removed when empty");
        }
        assert_eq!(sidecar(Node::Source), READ | WRITE, "a source rewrites its node when complete");
        assert_eq!(sidecar(Node::OriginSlot), READ);
        assert!(Node::Source.is_per_host() && !Node::OriginSlot.is_per_host());
    }

    #[test]
    fn a_hosts_own_nodes_name_only_its_ids() {
        let s = sec();
        let me = vec!["x509:CN=web-01,O=baton".to_string()];
        let acl = s.acl(Node::Registration, &me);
        assert!(acl.iter().any(|g| g.id == "CN=web-01,O=baton"));
        assert!(!acl.iter().any(|g| g.id == "CN=web-02,O=baton"));
        // Directories grant every sidecar id.
        assert_eq!(s.acl(Node::CurrentService, &me).len(), 4);
    }

    #[test]
    fn looser_finds_extra_rights() {
        let s = sec();
        let open = vec![Grant::new(perm::ALL, WORLD).unwrap()];
        assert_eq!(s.looser(Node::Staging, &open).len(), 1);
        assert!(s.looser(Node::Staging, &s.acl(Node::Staging, &[])).is_empty());
        let tighter = vec![Grant::new(perm::READ, "x509:CN=web-01,O=baton").unwrap()];
        assert!(s.looser(Node::Staging, &tighter).is_empty());
        let sidecar_writes = vec![Grant::new(perm::READ | perm::WRITE, "x509:CN=web-01,O=baton").unwrap()];
        assert_eq!(s.looser(Node::Staging, &sidecar_writes).len(), 1);
    }

    #[test_case("digest:deployer:abc=" => true)]
    #[test_case("x509:CN=a,O=b" => true)]
    #[test_case("world:anyone" => true)]
    #[test_case("digest:deployer" => false)]
    #[test_case("world:everyone" => false)]
    #[test_case("nocolon" => false)]
    #[test_case(":x" => false)]
    fn ids(id: &str) -> bool {
        validate_id(id).is_ok()
    }

    #[test]
    fn digest_ids_are_zookeepers() {
        // From ZooKeeper's docs: DigestAuthenticationProvider.generateDigest("super:test").
        assert_eq!(digest_id("super", "test"), "digest:super:D/InIHSb7yEEbrWz8b9l71RjZJU=");
        assert!(matches_id("digest:deployer", "digest:deployer:abc="));
        assert!(!matches_id("digest:deploy", "digest:deployer:abc="));
        assert!(matches_id("x509:CN=a,O=b", "x509:CN=a,O=b"));
    }
}

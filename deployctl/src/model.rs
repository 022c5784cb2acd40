//! What deployctl reads: the deploy queue with its markers, and one service's staged
//! release, online hosts and tickets. A node that vanishes between the listing and
//! the read is skipped; a node whose payload is malformed is kept as a [`Malformed`]
//! with its path, never an error.

use crate::zk::{Zk, ZkError};
use serde::{Serialize, de::DeserializeOwned};
use znode_schema::{
    Current, DeployEntry, DeployName, Layout, Staging, Ticket, TicketName, Upgrading, decode,
    seq::{sorted_deploys, sorted_tickets},
};

/// A znode whose payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Malformed {
    /// The znode path.
    pub path: String,
    /// What is wrong with it.
    pub error: String,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.error)
    }
}

/// One znode read and decoded.
#[derive(Debug, Clone)]
pub struct Node<T> {
    /// Its path.
    pub path: String,
    /// Its data version, for conditional writes.
    pub version: i32,
    /// The raw bytes (to re-create the node unchanged).
    pub raw: Vec<u8>,
    /// The decoded payload, or what is wrong with it.
    pub value: Result<T, Malformed>,
}

impl<T> Node<T> {
    /// The payload when it decoded.
    pub fn ok(&self) -> Option<&T> {
        self.value.as_ref().ok()
    }
}

/// Reads and decodes `path`; `None` when it does not exist. Control characters in the
/// payload's strings (an ESC sequence, a newline forging a line) are replaced by their
/// escapes before decoding, so nothing read from ZooKeeper reaches the terminal raw;
/// `raw` keeps the bytes as read.
pub async fn read<T: DeserializeOwned>(zk: &Zk, path: &str) -> Result<Option<Node<T>>, ZkError> {
    let Some((raw, stat)) = zk.get(path).await? else { return Ok(None) };
    let value = decode(path, &defanged(&raw)).map_err(|e| Malformed { path: path.into(), error: e.kind.to_string() });
    Ok(Some(Node { path: path.into(), version: stat.version, raw, value }))
}

/// `raw` with every control character inside a JSON string escaped (`\u{1b}`); the
/// bytes unchanged when it is not JSON or holds none.
pub fn defanged(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) if s.chars().any(char::is_control) => *s = escape(s),
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            serde_json::Value::Object(map) => map.values_mut().for_each(walk),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(raw) else { return raw.into() };
    walk(&mut value);
    match serde_json::to_vec(&value) {
        Ok(bytes) if bytes != raw => bytes.into(),
        _ => raw.into(),
    }
}

/// `text` with control characters replaced by their Rust escapes.
pub fn escape(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// A deploy entry with its upgrading markers.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its name (sequence).
    pub name: DeployName,
    /// The entry node.
    pub node: Node<DeployEntry>,
    /// Whether `upgrading/` exists under it.
    pub has_upgrading_dir: bool,
    /// The markers, by host name.
    pub markers: Vec<(String, Node<Upgrading>)>,
}

impl Entry {
    /// The service this entry rolls out, when its payload decoded.
    pub fn service(&self) -> Option<&str> {
        self.node.ok().map(|e| e.service.as_str())
    }
}

/// The deploy order queue, head first.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    /// Every entry, head first.
    pub entries: Vec<Entry>,
}

impl Queue {
    /// Reads the queue and every entry's markers.
    pub async fn read(zk: &Zk, layout: &Layout) -> Result<Queue, ZkError> {
        let names = zk.children(&layout.deploy_dir()).await?.unwrap_or_default();
        let mut entries = Vec::new();
        for name in sorted_deploys(&names) {
            let Some(node) = read::<DeployEntry>(zk, &layout.deploy_entry(&name)).await? else { continue };
            let dir = layout.upgrading_dir(&name);
            let hosts = zk.children(&dir).await?;
            let has_upgrading_dir = hosts.is_some();
            let mut hosts = hosts.unwrap_or_default();
            hosts.sort();
            let mut markers = Vec::new();
            for host in hosts {
                if let Some(m) = read::<Upgrading>(zk, &layout.upgrading(&name, &host)).await? {
                    markers.push((host, m));
                }
            }
            entries.push(Entry { name, node, has_upgrading_dir, markers });
        }
        Ok(Queue { entries })
    }

    /// The entries of `service`, head first (normally at most one).
    pub fn of_service<'a>(&'a self, service: &'a str) -> impl Iterator<Item = (usize, &'a Entry)> + 'a {
        self.entries.iter().enumerate().filter(move |(_, e)| e.service() == Some(service))
    }

    /// The first entry of `service` and its 0-based position in the queue.
    pub fn first_of(&self, service: &str) -> Option<(usize, &Entry)> {
        self.entries.iter().enumerate().find(|(_, e)| e.service() == Some(service))
    }

    /// Entries whose payload is malformed.
    pub fn malformed(&self) -> Vec<Malformed> {
        self.entries.iter().filter_map(|e| e.node.value.as_ref().err().cloned()).collect()
    }
}

/// One online host: `current/<service>/<host>`.
pub type HostNode = (String, Node<Current>);

/// What one service looks like: staged release, online hosts, tickets.
#[derive(Debug, Clone)]
pub struct ServiceView {
    /// The service name.
    pub name: String,
    /// `staging/<service>`, when it exists.
    pub staging: Option<Node<Staging>>,
    /// Online hosts, by host name.
    pub hosts: Vec<HostNode>,
    /// Tickets in queue order.
    pub tickets: Vec<(TicketName, Node<Ticket>)>,
}

impl ServiceView {
    /// Reads one service.
    pub async fn read(zk: &Zk, layout: &Layout, service: &str) -> Result<ServiceView, ZkError> {
        let staging = read::<Staging>(zk, &layout.staging(service)).await?;
        let mut names = zk.children(&layout.current_service(service)).await?.unwrap_or_default();
        names.sort();
        let mut hosts = Vec::new();
        for host in names {
            if let Some(node) = read::<Current>(zk, &layout.current_host(service, &host)).await? {
                hosts.push((host, node));
            }
        }
        let ticket_names = zk.children(&layout.staging(service)).await?.unwrap_or_default();
        let mut tickets = Vec::new();
        for t in sorted_tickets(&ticket_names) {
            if let Some(node) = read::<Ticket>(zk, &layout.ticket(service, &t)).await? {
                tickets.push((t, node));
            }
        }
        Ok(ServiceView { name: service.into(), staging, hosts, tickets })
    }

    /// The staged version, when the staging node decoded.
    pub fn staged_version(&self) -> Option<&str> {
        self.staging.as_ref().and_then(|s| s.ok()).map(|s| s.version.as_str())
    }

    /// The version each online host runs (hosts with a malformed node are left out).
    pub fn host_versions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.hosts.iter().filter_map(|(h, n)| n.ok().map(|c| (h.as_str(), c.version.as_str())))
    }

    /// Malformed nodes of this service.
    pub fn malformed(&self) -> Vec<Malformed> {
        let staging = self.staging.iter().filter_map(|n| n.value.as_ref().err().cloned());
        let hosts = self.hosts.iter().filter_map(|(_, n)| n.value.as_ref().err().cloned());
        let tickets = self.tickets.iter().filter_map(|(_, n)| n.value.as_ref().err().cloned());
        staging.chain(hosts).chain(tickets).collect()
    }

    /// Versions with their online hosts, most hosts first (ties: version order).
    pub fn by_version(&self) -> Vec<(String, Vec<String>)> {
        let mut map: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for (h, v) in self.host_versions() {
            map.entry(v).or_default().push(h.to_string());
        }
        let mut out: Vec<_> = map.into_iter().map(|(v, hs)| (v.to_string(), hs)).collect();
        out.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
        out
    }
}

/// Every service that appears under current/, staging/, releases/ or in the queue.
pub async fn service_names(zk: &Zk, layout: &Layout, queue: &Queue) -> Result<Vec<String>, ZkError> {
    let mut all = std::collections::BTreeSet::new();
    for dir in [layout.current_dir(), layout.staging_dir(), layout.releases_dir()] {
        all.extend(zk.children(&dir).await?.unwrap_or_default());
    }
    all.extend(queue.entries.iter().filter_map(|e| e.service().map(String::from)));
    Ok(all.into_iter().collect())
}

/// Refuses to go on when the tree has not been created (`deployctl init`).
pub async fn require_tree(zk: &Zk, layout: &Layout) -> anyhow::Result<()> {
    for dir in layout.top_dirs() {
        if zk.stat(&dir).await?.is_none() {
            return Err(crate::error::Refusal::NoTree { root: layout.root().into(), missing: dir }.into());
        }
    }
    Ok(())
}

impl Entry {
    /// Adds to `txn` the removal of this entry: each marker (at its version), the
    /// `upgrading` directory (it fails with NotEmpty if a marker appeared since the
    /// read), then the entry at its version, so a concurrent fence fails it.
    pub fn remove_into(&self, layout: &Layout, txn: &mut crate::zk::Txn) {
        use crate::zk::Op;
        for (host, m) in &self.markers {
            txn.push(Op::Delete { path: layout.upgrading(&self.name, host), version: Some(m.version) });
        }
        if self.has_upgrading_dir {
            txn.push(Op::Delete { path: layout.upgrading_dir(&self.name), version: None });
        }
        // A rollout that rolls back on its own (`on_halt = rollback`) has its mark,
        // created with `rolling_back_to`.
        if self.node.ok().is_some_and(|d| d.rolling_back_to.is_some()) {
            txn.push(Op::Delete { path: layout.rollback_mark(&self.name), version: None });
        }
        txn.push(Op::Delete { path: self.node.path.clone(), version: Some(self.node.version) });
    }
}

/// A one-line description of an entry: `deploy-0000000003 api 1.4.0 (active)`.
pub fn describe(e: &Entry) -> String {
    match &e.node.value {
        Ok(d) => format!("{} {} {} ({})", e.name, d.service, d.version, d.state),
        Err(m) => format!("{} (malformed: {})", e.name, m.error),
    }
}

/// One queue entry as JSON, the one shape every command prints (`queue`, `ahead`):
/// `{"position", "path", "service", "version", "state", "reason", "markers"}`, or
/// `{"position", "path", "error"}` for a malformed entry. `index` is 0-based.
pub fn queue_item(index: usize, e: &Entry) -> serde_json::Value {
    match &e.node.value {
        Ok(d) => serde_json::json!({"position": index + 1, "path": e.node.path, "service": d.service,
            "version": d.version, "state": d.state, "reason": d.reason, "markers": e.markers.len()}),
        Err(m) => serde_json::json!({"position": index + 1, "path": m.path, "error": m.error}),
    }
}

/// Refuses a service of which nothing is known: no `current/`, `staging/`,
/// `releases/` or `history/` node and no deploy entry. Every command that names a
/// service (except `stage`, which has `--force`) refuses it alike (exit 3).
pub async fn require_service(zk: &Zk, layout: &Layout, service: &str) -> anyhow::Result<()> {
    let dirs =
        [layout.current_service(service), layout.staging(service), layout.releases(service), layout.history(service)];
    for d in &dirs {
        if zk.stat(d).await?.is_some() {
            return Ok(());
        }
    }
    if Queue::read(zk, layout).await?.first_of(service).is_some() {
        return Ok(());
    }
    Err(crate::error::Refusal::UnknownService { service: service.into(), root: layout.root().into() }.into())
}

/// Hosts with a live `current/<service>/<host>` node of any service: only a live
/// session keeps one (a live sidecar registers `baton-sidecar` at least).
pub async fn live_hosts(zk: &Zk, layout: &Layout) -> Result<std::collections::BTreeSet<String>, ZkError> {
    let mut out = std::collections::BTreeSet::new();
    for service in zk.children(&layout.current_dir()).await?.unwrap_or_default() {
        out.extend(zk.children(&layout.current_service(&service)).await?.unwrap_or_default());
    }
    Ok(out)
}

//! The network scenarios' bed (`tests/tests/net_*.rs`): every ZooKeeper member and
//! every sidecar host (with its services) in its own namespace of a [`Net`], and
//! the partitions the scenarios cut between them.
//!
//! The test itself stays in its own namespace, on the bridge: its ZooKeeper client
//! reaches every member that is not isolated (partitions between nodes never cut
//! it off), and it probes a host's services from inside that host's namespace
//! ([`NetBed::served_version`]). Fields drop in order: the sidecars, then
//! ZooKeeper, then the namespaces (which kills whatever is left in them).

use crate::fleet::Fleet;
use crate::netns::{Net, NodeId};
use crate::txnlog::{Op, Txn};
use crate::zk::{Placement, ZkCluster};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// ZooKeeper and a fleet, each node in its own namespace.
#[derive(Debug)]
pub struct NetBed {
    /// The sidecars (hosts `host-1`…), each started in its host's namespace.
    pub fleet: Fleet,
    /// The ZooKeeper members, each in its member's namespace.
    pub zk: ZkCluster,
    /// The members' nodes, in member order.
    pub members: Vec<NodeId>,
    /// The hosts' nodes, in host order.
    pub hosts: Vec<NodeId>,
    /// The network (dropped last).
    pub net: Net,
}

impl NetBed {
    /// `members` ZooKeeper servers (1 or 3) and `hosts` hosts running `services`
    /// with session timeout `session`, under a fresh root named after `name`. The
    /// sidecars are not started; their configs are written (rewrite them for hooks).
    pub fn new(net: Net, name: &str, members: usize, services: &[&str], hosts: usize, session: Duration) -> Self {
        let member_nodes: Vec<NodeId> = (1..=members).map(|i| net.add(&format!("zk{i}"))).collect();
        let placements = member_nodes
            .iter()
            .map(|&n| Placement { address: net.ip(n).to_string(), prefix: net.exec_prefix(n) })
            .collect();
        let zk = ZkCluster::placed(placements);
        let root = crate::unique_root(name);
        let mut fleet = Fleet::multi(&zk.connect_string(), &root, services, hosts);
        fleet.session_timeout = session;
        let mut host_nodes = Vec::new();
        for h in &mut fleet.hosts {
            let node = net.add(&h.id);
            h.exec_prefix = net.exec_prefix(node);
            host_nodes.push(node);
        }
        for h in &fleet.hosts {
            fleet.write_config_services(h, &[]);
        }
        NetBed { fleet, zk, members: member_nodes, hosts: host_nodes, net }
    }

    /// Takes host `i`'s link down: it reaches no ZooKeeper member (nor anything else).
    pub fn isolate_host(&self, i: usize) {
        self.net.isolate(self.hosts[i]);
    }

    /// Cuts host `i` from the members `members` (indices) only.
    pub fn cut_host_from(&self, i: usize, members: &[usize]) {
        for &m in members {
            self.net.cut(self.hosts[i], self.members[m]);
        }
    }

    /// Splits the ensemble: member `m` with `hosts` on one side, every other member
    /// and host on the other. The test's own namespace still reaches both sides.
    pub fn isolate_member_with(&self, m: usize, hosts: &[usize]) {
        let mut minority = vec![self.members[m]];
        minority.extend(hosts.iter().map(|&h| self.hosts[h]));
        let mut majority: Vec<NodeId> =
            self.members.iter().enumerate().filter(|(i, _)| *i != m).map(|(_, &n)| n).collect();
        majority.extend(self.hosts.iter().enumerate().filter(|(i, _)| !hosts.contains(i)).map(|(_, &n)| n));
        self.net.partition(&[&minority, &majority]);
    }

    /// Undoes every partition.
    pub fn heal(&self) {
        self.net.heal();
    }

    /// What host `i`'s `service` answers at `/version`, asked from inside its namespace.
    pub fn served_version(&self, i: usize, service: &str) -> Option<String> {
        let port = self.fleet.port_of(i, service);
        self.net.in_ns(self.hosts[i], move || crate::chaos::served_version(port))
    }

    /// A test client of every member (10 s session) from the test's namespace.
    pub async fn client(&self) -> zookeeper_client::Client {
        crate::chaos::client(&self.zk.connect_string()).await
    }
}

/// Rewrites the quorum of `service`'s staged policy in place (as an operator could
/// with zkCli): queued hosts re-read it when their staging watch fires.
pub async fn set_quorum(client: &zookeeper_client::Client, layout: &znode_schema::Layout, service: &str, quorum: u32) {
    let path = layout.staging(service);
    let (data, stat) = client.get_data(&path).await.unwrap();
    let mut st: znode_schema::Staging = znode_schema::decode(&path, &data).unwrap();
    st.policy.quorum = znode_schema::Quorum::Count(quorum);
    client.set_data(&path, &znode_schema::encode(&st), Some(stat.version)).await.unwrap();
}

/// Every fence of `host` on `service` in `history` that was not made by the session
/// holding the host's ticket at that moment (a decision taken on a dead or stale
/// session would show up here), described; empty when all were.
pub fn fences_off_their_session(
    history: &[Txn],
    layout: &znode_schema::Layout,
    service: &str,
    host: &str,
) -> Vec<String> {
    let fences: Vec<i64> = crate::multi::fences(history, layout, service, host).iter().map(|t| t.zxid).collect();
    let prefix = format!("{}/{host}-", layout.staging(service));
    let mut owners: BTreeMap<String, i64> = BTreeMap::new();
    let mut out = Vec::new();
    for t in history {
        if fences.contains(&t.zxid) {
            let held: Vec<i64> = owners.iter().filter(|(p, _)| p.starts_with(&prefix)).map(|(_, s)| *s).collect();
            if !held.contains(&t.session) {
                out.push(format!(
                    "zxid {:#x}: {host} fenced on session {:#x}, its ticket(s) belong to {held:x?}",
                    t.zxid, t.session
                ));
            }
        }
        for op in &t.ops {
            match op {
                Op::Create { path, ephemeral: true, .. } => {
                    owners.insert(path.clone(), t.session);
                }
                Op::Delete { path, .. } => {
                    owners.remove(path);
                }
                _ => {}
            }
        }
    }
    out
}

/// The sessions that ever registered `host` (any service) in `history`.
pub fn sessions_of(history: &[Txn], layout: &znode_schema::Layout, host: &str) -> BTreeSet<i64> {
    let current = format!("{}/", layout.current_dir());
    let suffix = format!("/{host}");
    history
        .iter()
        .filter(|t| {
            t.ops.iter().any(|op| {
                matches!(op, Op::Create { path, ephemeral: true, .. } if path.starts_with(&current) && path.ends_with(&suffix))
            })
        })
        .map(|t| t.session)
        .collect()
}

/// Transactions after zxid `from` and up to `to` made by one of `sessions`, other
/// than the expiry of a session (which the leader logs in the session's name).
pub fn writes_by(history: &[Txn], sessions: &BTreeSet<i64>, from: i64, to: i64) -> Vec<String> {
    history
        .iter()
        .filter(|t| t.zxid > from && t.zxid <= to && sessions.contains(&t.session))
        .filter(|t| !t.ops.iter().all(|op| matches!(op, Op::Delete { by_session: true, .. })))
        .map(|t| format!("zxid {:#x} by session {:#x}: {:?}", t.zxid, t.session, t.ops))
        .collect()
}

//! A network the test owns: one Linux network namespace per node (a sidecar host
//! with its services, a ZooKeeper member, an artifact server), joined by a bridge in
//! the test's own namespace, and faults cut into it while both ends keep running.
//!
//! - [`Net::isolate`] takes a node's link down (its veth on the bridge): packets
//!   vanish in both directions without a reset, exactly like a switch port dying.
//!   [`Net::reconnect`] brings it back.
//! - [`Net::cut`] separates two nodes only, silently: each gets a permanent
//!   neighbour entry for the other pointing at a MAC address nobody owns, so frames
//!   leave and are dropped by the bridge's other ports (this machine's kernel has
//!   neither netfilter nor tc classifiers). [`Net::partition`] cuts every pair
//!   across groups; [`Net::heal`] undoes every cut and isolation.
//!
//! The test's own namespace holds the bridge's address (`.1`), so the test's
//! clients reach every node unless that node is isolated; cuts never involve it
//! unless a test cuts [`Net::GATEWAY`].
//!
//! Names: `bt<pid>x<n>` prefixes every namespace and link (`<n>` counts nets in this
//! process), so links stay within the 15-byte interface-name limit. Dropping the
//! [`Net`] kills every process left in its namespaces and deletes them with their
//! links, also when the test panicked; [`Net::new`] first removes what crashed runs
//! (whose pid is gone) left behind. A machine where namespaces cannot be created
//! (not root, no `ip`) gets an `Err` naming why: tests skip with [`net_or_skip!`].

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// A node of a [`Net`]: an index handed out by [`Net::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub usize);

/// The MAC address nobody owns that cut neighbours point at.
const NOWHERE: &str = "02:00:00:00:00:01";

#[derive(Debug)]
struct Node {
    name: String,
    ns: String,
    veth: String,
    ip: Ipv4Addr,
}

/// A bridge and the namespaces on it; everything is removed on drop.
#[derive(Debug)]
pub struct Net {
    prefix: String,
    bridge: String,
    subnet: [u8; 3],
    nodes: Mutex<Vec<Node>>,
    cuts: Mutex<Vec<(NodeId, NodeId)>>,
}

/// Runs `ip args…`, returning its stderr on failure.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("failed to run ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

/// The pid in a `bt<pid>x<n>…` name, if it is one of ours.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("bt")?;
    let (pid, _) = rest.split_once('x')?;
    pid.parse().ok()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits (5 s at most) until link `dev` reports carrier (`LOWER_UP`) after `up`.
fn wait_carrier(dev: &str) {
    crate::eventually(&format!("link {dev} to have carrier"), std::time::Duration::from_secs(5), || {
        ip(&["link", "show", dev]).ok().filter(|l| l.contains("LOWER_UP")).map(|_| ())
    });
}

/// Kills every process in namespace `ns` and deletes it.
fn remove_ns(ns: &str) {
    if let Ok(pids) = ip(&["netns", "pids", ns]) {
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _ = ip(&["netns", "del", ns]);
}

/// Removes namespaces and links left by runs whose process is gone.
fn clean_stale() {
    let netns = ip(&["netns", "list"]).unwrap_or_default();
    for ns in netns.lines().filter_map(|l| l.split_whitespace().next()) {
        if owner_pid(ns).is_some_and(|p| !alive(p)) {
            remove_ns(ns);
        }
    }
    let links = ip(&["-o", "link", "show"]).unwrap_or_default();
    for l in links.lines() {
        let Some(name) = l.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) else { continue };
        if owner_pid(name).is_some_and(|p| !alive(p)) {
            let _ = ip(&["link", "del", name]);
        }
    }
}

/// A route's destination as (network, prefix length); `None` for `default` and the like.
fn route_prefix(line: &str) -> Option<(u32, u32)> {
    let dest = line.split_whitespace().next()?;
    let (addr, len) = dest.split_once('/').unwrap_or((dest, "32"));
    Some((u32::from(addr.parse::<Ipv4Addr>().ok()?), len.parse().ok().filter(|l| *l <= 32)?))
}

/// Whether two prefixes share an address.
fn overlaps((a, al): (u32, u32), (b, bl): (u32, u32)) -> bool {
    let len = al.min(bl);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    a & mask == b & mask
}

/// A /24 of 10.0.0.0/8 that no route of this namespace overlaps yet.
fn free_subnet(seed: u32) -> Result<[u8; 3], String> {
    let routes: Vec<(u32, u32)> = ip(&["-4", "route", "show"])?.lines().filter_map(route_prefix).collect();
    for k in 0..4096u32 {
        let v = seed.wrapping_mul(2_654_435_761).wrapping_add(k.wrapping_mul(40_503));
        let (a, b) = (16 + (v >> 8) as u8 % 224, v as u8);
        let candidate = (u32::from(Ipv4Addr::new(10, a, b, 0)), 24);
        if !routes.iter().any(|r| overlaps(*r, candidate)) {
            return Ok([10, a, b]);
        }
    }
    Err("no free 10.x.y.0/24 subnet".into())
}

impl Net {
    /// The test's own namespace (the bridge's address), as a node for [`Net::cut`].
    pub const GATEWAY: NodeId = NodeId(usize::MAX);

    /// A new bridge with no nodes, or why namespaces cannot be made here.
    pub fn new() -> Result<Net, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        if !nix::unistd::geteuid().is_root() {
            return Err("network namespaces need root".into());
        }
        clean_stale();
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = format!("bt{pid}x{n}");
        let probe = format!("{prefix}-probe");
        ip(&["netns", "add", &probe]).map_err(|e| format!("cannot create a network namespace: {e}"))?;
        let _ = ip(&["netns", "del", &probe]);
        let subnet = free_subnet(pid.wrapping_mul(31).wrapping_add(n))?;
        let bridge = format!("{prefix}b");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        // From here on, dropping `net` removes the bridge.
        let net = Net { prefix, bridge, subnet, nodes: Mutex::new(Vec::new()), cuts: Mutex::new(Vec::new()) };
        ip(&["addr", "add", &format!("{}/24", net.gateway_ip()), "dev", &net.bridge])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        Ok(net)
    }

    /// The bridge's address in the test's own namespace.
    pub fn gateway_ip(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// Adds a node `name` (a namespace with loopback up and one veth on the bridge).
    pub fn add(&self, name: &str) -> NodeId {
        let mut nodes = self.nodes.lock().unwrap();
        let i = nodes.len();
        assert!(i < 200, "at most 200 nodes");
        let ns = format!("{}-{name}", self.prefix);
        let veth = format!("{}v{i}", self.prefix);
        assert!(veth.len() <= 15, "interface name {veth} is too long");
        let [a, b, c] = self.subnet;
        let addr = Ipv4Addr::new(a, b, c, 10 + i as u8);
        must(&["netns", "add", &ns]);
        must(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        must(&["link", "set", &veth, "master", &self.bridge, "up"]);
        must(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        must(&["-n", &ns, "link", "set", "eth0", "up"]);
        must(&["-n", &ns, "link", "set", "lo", "up"]);
        nodes.push(Node { name: name.into(), ns, veth, ip: addr });
        NodeId(i)
    }

    fn with<T>(&self, id: NodeId, f: impl FnOnce(&Node) -> T) -> T {
        f(&self.nodes.lock().unwrap()[id.0])
    }

    /// The node's address on the bridge.
    pub fn ip(&self, id: NodeId) -> Ipv4Addr {
        if id == Self::GATEWAY { self.gateway_ip() } else { self.with(id, |n| n.ip) }
    }

    /// The node's namespace name.
    pub fn ns(&self, id: NodeId) -> String {
        self.with(id, |n| n.ns.clone())
    }

    /// The node's name as given to [`Net::add`].
    pub fn name(&self, id: NodeId) -> String {
        self.with(id, |n| n.name.clone())
    }

    /// The command prefix that runs a program in the node's namespace.
    pub fn exec_prefix(&self, id: NodeId) -> Vec<String> {
        ["ip", "netns", "exec"].iter().map(|s| s.to_string()).chain([self.ns(id)]).collect()
    }

    /// Takes the node's link down: nothing reaches it or leaves it.
    pub fn isolate(&self, id: NodeId) {
        eprintln!("  net: isolate {}", self.name(id));
        must(&["link", "set", &self.with(id, |n| n.veth.clone()), "down"]);
    }

    /// Brings the node's link up again and waits until it has carrier.
    pub fn reconnect(&self, id: NodeId) {
        eprintln!("  net: reconnect {}", self.name(id));
        let veth = self.with(id, |n| n.veth.clone());
        must(&["link", "set", &veth, "up"]);
        wait_carrier(&veth);
    }

    /// Where `id` sends frames for `peer`: (`ip -n NS` args or the bridge) and the device.
    fn neigh_args(&self, id: NodeId) -> (Vec<String>, String) {
        if id == Self::GATEWAY {
            (vec![], self.bridge.clone())
        } else {
            (vec!["-n".into(), self.ns(id)], "eth0".into())
        }
    }

    fn point_neighbour(&self, from: NodeId, to: NodeId, cut: bool) {
        let (mut args, dev) = self.neigh_args(from);
        let peer = self.ip(to).to_string();
        if cut {
            args.extend(
                ["neigh", "replace", &peer, "lladdr", NOWHERE, "dev", &dev, "nud", "permanent"].map(String::from),
            );
        } else {
            args.extend(["neigh", "del", &peer, "dev", &dev].map(String::from));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = ip(&args);
        if cut {
            r.unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Separates `a` and `b` (both ways, silently); every other path stays.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        self.point_neighbour(a, b, true);
        self.point_neighbour(b, a, true);
        self.cuts.lock().unwrap().push((a, b));
    }

    /// Undoes [`Net::cut`] of `a` and `b`.
    pub fn mend(&self, a: NodeId, b: NodeId) {
        self.point_neighbour(a, b, false);
        self.point_neighbour(b, a, false);
        self.cuts.lock().unwrap().retain(|&(x, y)| (x, y) != (a, b) && (x, y) != (b, a));
    }

    /// Cuts every pair of nodes that sit in different `groups`.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        let names: Vec<Vec<String>> = groups.iter().map(|g| g.iter().map(|&n| self.label(n)).collect()).collect();
        eprintln!("  net: partition {names:?}");
        for (i, g) in groups.iter().enumerate() {
            for h in &groups[i + 1..] {
                for &a in *g {
                    for &b in *h {
                        self.cut(a, b);
                    }
                }
            }
        }
    }

    fn label(&self, id: NodeId) -> String {
        if id == Self::GATEWAY { "gateway".into() } else { self.name(id) }
    }

    /// Undoes every cut and brings every link up.
    pub fn heal(&self) {
        eprintln!("  net: heal");
        let cuts = std::mem::take(&mut *self.cuts.lock().unwrap());
        for (a, b) in cuts {
            self.point_neighbour(a, b, false);
            self.point_neighbour(b, a, false);
        }
        let veths: Vec<String> = self.nodes.lock().unwrap().iter().map(|n| n.veth.clone()).collect();
        for v in &veths {
            must(&["link", "set", v, "up"]);
        }
        for v in &veths {
            wait_carrier(v);
        }
    }

    /// Runs `f` on a thread that lives in the node's namespace: sockets it creates
    /// (a listener, a probe connection) belong to that namespace.
    pub fn in_ns<T: Send + 'static>(&self, id: NodeId, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.ns(id));
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// A listener on `port` (0: any) of the node's address, created in its namespace.
    pub fn listen(&self, id: NodeId, port: u16) -> std::net::TcpListener {
        let addr = (self.ip(id), port);
        self.in_ns(id, move || std::net::TcpListener::bind(addr).expect("bind in a namespace"))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let nodes = std::mem::take(&mut *self.nodes.lock().unwrap_or_else(|e| e.into_inner()));
        for n in &nodes {
            remove_ns(&n.ns);
            let _ = ip(&["link", "del", &n.veth]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// A new [`Net`], or skips the test (returns from it) with a message saying why.
#[macro_export]
macro_rules! net_or_skip {
    () => {
        match $crate::netns::Net::new() {
            Ok(net) => net,
            Err(why) => {
                eprintln!("SKIPPED: this test needs network namespaces: {why}");
                return;
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_that_overlap_a_subnet_are_seen() {
        let net = |s: &str| route_prefix(s).unwrap();
        let candidate = net("10.20.30.0/24");
        assert!(overlaps(net("10.0.0.0/8 via 192.0.2.1 dev eth0"), candidate));
        assert!(overlaps(net("10.20.30.0/24 dev bt1x0b proto kernel"), candidate));
        assert!(overlaps(net("10.20.30.7 dev x"), candidate));
        assert!(!overlaps(net("10.20.31.0/24 dev x"), candidate));
        assert!(!overlaps(net("192.0.2.0/24 dev eth0"), candidate));
        assert_eq!(route_prefix("default via 192.0.2.1 dev eth0"), None);
    }

    #[test]
    fn names_of_ours_carry_their_pid() {
        assert_eq!(owner_pid("bt1234x0-zk1"), Some(1234));
        assert_eq!(owner_pid("bt1234x12b"), Some(1234));
        assert_eq!(owner_pid("bttest"), None);
        assert_eq!(owner_pid("eth0"), None);
    }
}
